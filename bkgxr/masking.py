"""Runs with sources: the exclusion regions each run applies and the FoV fraction it keeps.

A run contributes outside its exclusion regions only: its events inside them
are dropped (:func:`bkgxr.io.events.read_run`) and the exposure of each FoV bin
is reduced by the fraction of the bin's solid angle the regions cover,
averaged over the run (:func:`run_kept_fraction`, in each run's read task). The regions of a run are the
regions given for every run, plus, for a run that is not an off run
(``TARGET_NAME`` other than ``"Off data"``), a circle around its target
(``RA_OBJ``, ``DEC_OBJ``) of a stated radius.

In 2D the kept fraction of an offset ring does not change during a run (the
pointing is fixed on the sky). In 3D the regions turn in the ALTAZ-aligned FoV
frame as the sky turns: the fraction is averaged over :data:`TRACK_NODES`
times spread evenly over the run (:func:`header_pixel_fraction`, all times in
one call of the mapping). The FoV → sky mapping at those times comes from node
maps of astropy's transformation (:mod:`bkgxr.fov`), computed for all runs in
one astropy call on the obs-index's MJDREF and site.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from .altaz_maps import location_of, nodes_serve, reference_time, run_node_maps
from .exceptions import InvalidRunError
from .exclusion import ExclusionRegions
from .fov import az_alt_deg, ra_dec_deg
from .io._rawfits import Unsupported, iter_table_blocks
from .io.events import header_pointing, index_node_maps, run_reads
from .kept_fraction import kept_fraction_pixels_times, kept_fraction_rings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy.typing as npt
    import pandas as pd
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    from .altaz_maps import NodeMaps
    from .axes import Binning
    from .io.events import RunRead
    from .kept_fraction import SkyOfFovTimes

#: Target name of off runs (runs without a source), as in :data:`bkgxr.OFF_QUERY`.
OFF_TARGET = "Off data"
#: Times per run at which 3D exclusion fractions are evaluated (midpoints of equal slices of the run).
TRACK_NODES = 7


def run_regions(
    runs: pd.DataFrame, *, exclusion: ExclusionRegions | None = None, target_radius: float | None = None
) -> list[ExclusionRegions | None]:
    """Return the exclusion regions of each run (None for a run without any).

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table of :meth:`bkgxr.Store.select`.
    exclusion : ExclusionRegions, optional
        Regions every run applies.
    target_radius : float, optional
        Radius (deg) of the circle around ``RA_OBJ``/``DEC_OBJ`` of each run
        whose ``TARGET_NAME`` is not ``"Off data"``; None for no such circle.
        A run table without TARGET_NAME gets no such circle.

    Raises
    ------
    ValueError
        If a run with a target lacks RA_OBJ or DEC_OBJ, or a target position
        is not finite.
    """
    regions: list[ExclusionRegions | None] = [exclusion] * len(runs)
    if target_radius is None:
        return regions
    if "TARGET_NAME" not in runs:  # no way to tell off runs from runs with sources
        return regions
    missing = [c for c in ("RA_OBJ", "DEC_OBJ") if c not in runs]
    on = runs["TARGET_NAME"].astype(str).str.strip() != OFF_TARGET
    if missing and on.any():
        raise ValueError(f"a circle around each run's target needs the obs-index columns {missing}")
    for i, row in enumerate(runs.itertuples(index=False)):
        if not on.iloc[i]:
            continue
        around = ExclusionRegions.around_target(float(row.RA_OBJ), float(row.DEC_OBJ), radius_deg=float(target_radius))
        regions[i] = around if exclusion is None else exclusion | around
    return regions


def altaz_of_fov(
    lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike, az_pnt_deg: npt.ArrayLike, alt_pnt_deg: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return azimuth and altitude (deg) of ALTAZ-aligned FoV coordinates: the inverse of :func:`bkgxr.fov.fov_lon_lat_deg`.

    gammapy's convention (:func:`gammapy.utils.coordinates.fov_to_sky`): an
    offset frame centred on the pointing, its longitude reversed.
    """
    lon, lat = np.radians(-np.asarray(lon_deg, dtype=np.float64)), np.radians(np.asarray(lat_deg, dtype=np.float64))
    az0, alt0 = np.radians(np.asarray(az_pnt_deg, dtype=np.float64)), np.radians(np.asarray(alt_pnt_deg, dtype=np.float64))
    x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)
    # rotate the offset frame's origin (1, 0, 0) to (alt0, az0): about y by -alt0, then about z by az0
    x, z = x * np.cos(alt0) - z * np.sin(alt0), x * np.sin(alt0) + z * np.cos(alt0)
    x, y = x * np.cos(az0) - y * np.sin(az0), x * np.sin(az0) + y * np.cos(az0)
    return np.mod(np.degrees(np.arctan2(y, x)), 360.0), np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))


def sky_of_fov(
    ra_pnt: float, dec_pnt: float, *, reference: Time, location: EarthLocation, nodes: NodeMaps | None = None
) -> SkyOfFovTimes:
    """Return ``f(lon, lat, t) -> (ra, dec)``: ICRS of ALTAZ-aligned FoV coordinates (deg) at times ``t`` (s since ``reference``).

    ``lon``, ``lat`` of shape (n_points,) and ``t`` of shape (n_times,) give
    ``ra``, ``dec`` of shape (n_times, n_points). The pointing's alt/az at
    ``t`` (:func:`bkgxr.fov.az_alt_deg`) places the FoV points in the
    horizontal system (:func:`altaz_of_fov`), which :func:`bkgxr.fov.ra_dec_deg`
    takes back to ICRS. With ``nodes`` that serve ``t``
    (:func:`bkgxr.altaz_maps.nodes_serve`) ``f`` is numpy only; without, each call
    of ``f`` computes its nodes with astropy.
    """

    def mapping(
        lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64], times: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        az_pnt, alt_pnt = az_alt_deg(ra_pnt, dec_pnt, times, reference=reference, location=location, nodes=nodes)
        az, alt = altaz_of_fov(lon, lat, az_pnt[:, None], alt_pnt[:, None])
        return ra_dec_deg(az, alt, times[:, None], reference=reference, location=location, nodes=nodes)

    return mapping


def _events_header(path: str, hdu: str) -> Mapping[str, Any]:
    """Return the valued keywords of HDU ``hdu`` of a run file, from the fast reader, else astropy.

    The fast reader (:func:`bkgxr.io._rawfits.iter_table_blocks`) stops after
    the table's first row; tables it leaves to astropy are read with
    :func:`astropy.io.fits.getheader`.

    Raises
    ------
    ValueError
        If the file has no HDU ``hdu``.
    """
    try:  # the reader, dropped after its first block, closes the file
        return next(iter_table_blocks(path, hdu, [], block_bytes=1))[0]
    except KeyError as err:
        raise ValueError(f"no {hdu} HDU") from err
    except Unsupported:
        header: Mapping[str, Any] = fits.getheader(path, hdu)
        return header


def header_pixel_fraction(
    header: Mapping[str, Any],
    ra_pnt: float,
    dec_pnt: float,
    binning: Binning,
    regions: ExclusionRegions,
    *,
    nodes: NodeMaps | None = None,
) -> npt.NDArray[np.float64]:
    """Return one run's time-averaged kept fraction of each FoV pixel (3D), from its EVENTS header.

    The fraction is averaged over :data:`TRACK_NODES` times spread evenly over
    the header's TSTART–TSTOP; the time origin (MJDREF) and the site
    (GEOLON, GEOLAT) come from the header too.

    Parameters
    ----------
    header : Mapping
        Keywords of the run's EVENTS header.
    ra_pnt, dec_pnt : float
        Pointing (ICRS, deg).
    binning : Binning
        ALTAZ-aligned FoV binning (``fov_lon``, ``fov_lat`` edges).
    regions : ExclusionRegions
    nodes : NodeMaps, optional
        Used when made for the header's MJDREF and site and holding the node
        of every time (e.g. from the obs-index, :func:`bkgxr.io.events.index_node_maps`);
        else the run's nodes are computed here, in one astropy call.

    Returns
    -------
    numpy.ndarray
        Kept fraction in [0, 1]. Shape: (n_lon, n_lat).

    Raises
    ------
    KeyError
        Naming a missing keyword.
    ValueError, TypeError
        If a keyword's value is not a number or a time.
    """
    reference, location = reference_time(header), location_of(header)
    start, stop = float(header["TSTART"]), float(header["TSTOP"])
    times = start + (np.arange(TRACK_NODES) + 0.5) * (stop - start) / TRACK_NODES
    if nodes is None or not nodes_serve(nodes, times, reference=reference, location=location):
        [nodes] = run_node_maps([start], [stop], reference=reference, location=location)
    mapping = sky_of_fov(ra_pnt, dec_pnt, reference=reference, location=location, nodes=nodes)
    weights = np.full(TRACK_NODES, 1.0 / TRACK_NODES)
    return kept_fraction_pixels_times(binning.fov_lon, binning.fov_lat, mapping, times, weights, regions)


def run_kept_fraction(read: RunRead, binning: Binning, header: Mapping[str, Any] | None = None) -> npt.NDArray[np.float64]:
    """Return the fraction of each FoV bin one run keeps outside its regions (``read.exclude``), averaged over the run.

    The pointing is the EVENTS header's RA_PNT/DEC_PNT, from which the events'
    FoV coordinates are measured too (the run table's when the header lacks
    them); ``header``: that header if already read, else it is read here. 2D:
    :func:`bkgxr.kept_fraction.kept_fraction_rings`; 3D:
    :func:`header_pixel_fraction` with ``read.nodes``.

    Returns
    -------
    numpy.ndarray
        Shape: the FoV shape of ``binning``; 1 for a run without regions.

    Raises
    ------
    InvalidRunError
        If the header cannot be read or lacks what placing the regions needs.
    """
    regions = read.exclude
    if regions is None or not (regions.circles or regions.masks):
        return np.ones(binning.shape[2:])
    try:
        header = _events_header(read.path, read.hdu) if header is None else header
        pointing = header_pointing(header, read.obs_id, Path(read.path), read.hdu) or (read.ra_pnt, read.dec_pnt)
        if binning.fov == "offset":
            return kept_fraction_rings(binning.offset, *pointing, regions)
        return header_pixel_fraction(header, *pointing, binning, regions, nodes=read.nodes)
    except KeyError as err:
        reason = f"cannot place the exclusion regions in the FoV: {read.hdu} lacks {err.args[0]}"
        raise InvalidRunError(read.obs_id, read.path, reason) from err
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as err:
        raise InvalidRunError(read.obs_id, read.path, f"cannot place the exclusion regions in the FoV: {err}") from err


def kept_fractions(
    runs: pd.DataFrame,
    binning: Binning,
    regions: Sequence[ExclusionRegions | None],
    *,
    nodes: Sequence[NodeMaps | None] | None = None,
) -> npt.NDArray[np.float64]:
    """Return the fraction of each run's FoV bins outside its regions, averaged over the run.

    :func:`run_kept_fraction` of each run, here in one process; a cube
    computes it in each run's read task (:func:`bkgxr.fill.fill_runs`).

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table of :meth:`bkgxr.Store.select` (EVENTS_PATH, EVENTS_HDU, whose
        header gives the pointing, the times and the observatory).
    binning : Binning
    regions : sequence of ExclusionRegions or None
        One entry per run, as :func:`run_regions` returns.
    nodes : sequence of NodeMaps or None, optional
        Each run's node maps (:func:`bkgxr.io.events.index_node_maps`), computed
        here, in one astropy call, if omitted in 3D.

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, *fov shape); 1 for runs without regions.
    """
    if nodes is None and binning.fov != "offset" and any(r is not None for r in regions):
        nodes = index_node_maps(runs)
    reads = run_reads(runs, fov=binning.fov, exclude=regions, nodes=nodes)
    return np.stack([run_kept_fraction(read, binning) for read in reads]) if reads else np.ones((0, *binning.shape[2:]))
