"""The pointing's zenith over a run: the track a recipe with ``track=True`` follows.

A run lasts ~28 min and its zenith moves by up to several degrees. :func:`zenith_tracks`
returns each run's pointing zenith at :data:`TRACK_NODES` times, the midpoints of equal
slices of [TSTART, TSTOP], from one astropy evaluation for all runs
(:func:`bkgxr.io.events.index_node_maps`, shared with the 3D event reads) and numpy for the rest. A run without the times or the
observatory (obs-index header GEOLON/GEOLAT, MJDREF) keeps its ``ZEN_PNT`` at every node.

:func:`slice_tracks` gives the zenith at the bounds of finer equal slices, linear
in time between them: each event takes the zenith there at its TIME, and
:func:`band_fractions` shares each run's time among the zenith bands the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .altaz_maps import location_of, merged_node_maps, reference_time
from .exceptions import InvalidRunError
from .fov import az_alt_deg
from .geometry import segment_shares
from .io.events import index_node_maps
from .io.gti import has_gaps, read_gti

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import pandas as pd

    from .altaz_maps import NodeMaps

#: Times per run at which the track is sampled (equal slices of the run, at their midpoints).
TRACK_NODES = 7
#: Equal slices of a run between whose bounds an event's pointing zenith is interpolated.
EVENT_SLICES = 32


def track_times(tstart_s: npt.ArrayLike, tstop_s: npt.ArrayLike, n_nodes: int = TRACK_NODES) -> npt.NDArray[np.float64]:
    """Return the midpoints of ``n_nodes`` equal slices of each run (s). Shape: (n_runs, n_nodes)."""
    start, stop = np.asarray(tstart_s, dtype=np.float64), np.asarray(tstop_s, dtype=np.float64)
    fraction = (np.arange(n_nodes) + 0.5) / n_nodes
    return np.asarray(start[:, None] + fraction[None, :] * (stop - start)[:, None], dtype=np.float64)


def zenith_tracks(
    runs: pd.DataFrame, *, n_nodes: int = TRACK_NODES, nodes: Sequence[NodeMaps | None] | None = None,
    pieces: dict[int, npt.NDArray[np.float64]] | None = None,
) -> npt.NDArray[np.float64]:
    """Return each run's pointing zenith (deg) at its track times (:func:`track_times`).

    A run with GTI gaps is sampled at the midpoints of equal slices of its
    good time instead (:func:`good_time_nodes`), so that the mean over the
    nodes is a mean over the time it observed.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table of :meth:`bkgxr.Store.select` (RA_PNT, DEC_PNT, ZEN_PNT, TSTART,
        TSTOP; the obs-index header in ``attrs["OBS_META"]``).
    n_nodes : int
        Times per run.
    nodes : sequence of NodeMaps or None, optional
        Each run's node maps (:func:`bkgxr.io.events.index_node_maps`); computed
        here, in one astropy call, if omitted.
    pieces : dict, optional
        The GTIs of the runs with gaps (:func:`gti_pieces`); read here, leaving
        out runs whose GTI cannot be used, if omitted.

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, n_nodes); ``ZEN_PNT`` at every node of a run without
        finite TSTART <= TSTOP, or of every run when the header lacks MJDREF or
        the observatory.
    """
    if "TSTART" not in runs or "TSTOP" not in runs:
        return np.repeat(runs["ZEN_PNT"].to_numpy(np.float64)[:, None], n_nodes, axis=1)
    times = track_times(runs["TSTART"].to_numpy(np.float64), runs["TSTOP"].to_numpy(np.float64), n_nodes)
    for i, good in (gti_pieces(runs, skip_bad=True) if pieces is None else pieces).items():
        times[i] = good_time_nodes(good, n_nodes)
    return _zenith_at(runs, times, nodes)[0]


def slice_tracks(
    runs: pd.DataFrame, *, n_slices: int = EVENT_SLICES, nodes: Sequence[NodeMaps | None] | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return each run's pointing zenith at the bounds of ``n_slices`` equal slices of [TSTART, TSTOP].

    Between bounds the zenith is taken as linear in time: what
    :func:`bkgxr.io.events.iter_run_rows` interpolates at each event's TIME,
    and what :func:`band_fractions` shares among zenith bands.

    Returns
    -------
    times : numpy.ndarray
        Bounds, s since MJDREF. Shape: (n_runs, n_slices + 1).
    zenith : numpy.ndarray
        Pointing zenith at the bounds, deg; ``ZEN_PNT`` throughout for a run
        whose track is unknown. Shape: (n_runs, n_slices + 1).
    known : numpy.ndarray
        Whether the run's track is known (finite TSTART <= TSTOP, MJDREF and
        observatory in the obs-index header). Shape: (n_runs,).
    """
    fraction = np.arange(n_slices + 1) / n_slices
    if "TSTART" not in runs or "TSTOP" not in runs:
        zenith = np.repeat(runs["ZEN_PNT"].to_numpy(np.float64)[:, None], n_slices + 1, axis=1)
        return np.full(zenith.shape, np.nan), zenith, np.zeros(len(runs), dtype=bool)
    start, stop = runs["TSTART"].to_numpy(np.float64), runs["TSTOP"].to_numpy(np.float64)
    times = start[:, None] + fraction[None, :] * (stop - start)[:, None]
    zenith, known = _zenith_at(runs, times, nodes)
    return times, zenith, known


def band_fractions(zenith: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the fraction of each run's time its pointing spent in each zenith band.

    Parameters
    ----------
    zenith : array-like
        Pointing zenith (deg) at the bounds of equal slices of each run
        (:func:`slice_tracks`), linear in time between them. Shape: (n_runs, n_slices + 1).
    edges : array-like
        Zenith band edges, deg. Shape: (n_bands + 1,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, n_bands); a row sums to less than 1 where the track leaves the edges.
    """
    zenith = np.atleast_2d(np.asarray(zenith, dtype=np.float64))
    n_runs, n_bounds = zenith.shape
    shares = segment_shares(zenith[:, :-1].ravel(), zenith[:, 1:].ravel(), edges)
    return np.asarray(shares.reshape(n_runs, n_bounds - 1, -1).mean(axis=1), dtype=np.float64)


def gti_band_fractions(
    times: npt.ArrayLike, zenith: npt.ArrayLike, pieces: npt.ArrayLike, edges: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Return the fraction of one run's good time its pointing spent in each zenith band.

    Parameters
    ----------
    times, zenith : array-like
        The run's track (:func:`slice_tracks`): bounds (s) and the zenith (deg)
        there, linear in time between them. Shape: (n_bounds,).
    pieces : array-like
        Good time intervals (s), START and STOP (:func:`bkgxr.io.gti.read_gti`);
        overlaps count once. Shape: (n_intervals, 2).
    edges : array-like
        Zenith band edges, deg. Shape: (n_bands + 1,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_bands,); :func:`band_fractions` of the track when one
        interval covers it, zeros when the intervals hold no time.
    """
    t, z = np.asarray(times, dtype=np.float64), np.asarray(zenith, dtype=np.float64)
    gti = np.asarray(pieces, dtype=np.float64).reshape(-1, 2)
    cuts = np.unique(np.clip(np.concatenate([t, gti.ravel()]), t[0], t[-1]))
    middle = 0.5 * (cuts[:-1] + cuts[1:])
    good = np.any((middle[:, None] >= gti[None, :, 0]) & (middle[:, None] < gti[None, :, 1]), axis=1)
    duration = np.diff(cuts) * good
    if not duration.sum() > 0:
        return np.zeros(np.asarray(edges).size - 1)
    at_cuts = np.interp(cuts, t, z)
    shares = segment_shares(at_cuts[:-1], at_cuts[1:], edges)
    return np.asarray(duration @ shares / duration.sum(), dtype=np.float64)


def gti_pieces(runs: pd.DataFrame, *, skip_bad: bool = False) -> dict[int, npt.NDArray[np.float64]]:
    """Return the good time intervals of each run with gaps, by its row position in ``runs``.

    A run has gaps when its ONTIME falls short of TSTOP - TSTART
    (:func:`bkgxr.io.gti.has_gaps`); only those runs' GTI tables are read
    (GTI_PATH, GTI_HDU of the run table, "GTI" when the HDU index names none).

    Raises
    ------
    InvalidRunError
        If a GTI table cannot be used (see :func:`bkgxr.io.gti.read_gti`);
        with ``skip_bad`` the run is left out instead (its read reports it).
    """
    if not {"GTI_PATH", "ONTIME", "TSTART", "TSTOP"} <= set(runs.columns):
        return {}
    start, stop = runs["TSTART"].to_numpy(np.float64), runs["TSTOP"].to_numpy(np.float64)
    out = {}
    for i in np.flatnonzero(has_gaps(start, stop, runs["ONTIME"].to_numpy(np.float64))).tolist():
        row = runs.iloc[i]
        named = row.get("GTI_HDU")
        hdu = named if isinstance(named, str) and named else "GTI"
        try:
            out[i] = read_gti(row["GTI_PATH"], hdu, obs_id=int(row["OBS_ID"]), tstart=start[i], tstop=stop[i])
        except InvalidRunError:
            if not skip_bad:
                raise
    return out


def gti_fractions(
    times: npt.NDArray[np.float64], zenith: npt.NDArray[np.float64], fractions: npt.NDArray[np.float64],
    edges: npt.ArrayLike, pieces: dict[int, npt.NDArray[np.float64]],
) -> npt.NDArray[np.float64]:
    """Return ``fractions`` (:func:`band_fractions`) with each run of ``pieces`` (:func:`gti_pieces`) shared by its GTIs.

    Runs with a NaN track time (unknown track) keep their row.
    """
    out = fractions.copy()
    for i, good in pieces.items():
        if np.isfinite(times[i, 0]):
            out[i] = gti_band_fractions(times[i], zenith[i], good, edges)
    return out


def good_time_nodes(pieces: npt.ArrayLike, n_nodes: int = TRACK_NODES) -> npt.NDArray[np.float64]:
    """Return the midpoints (s) of ``n_nodes`` equal slices of a run's good time, its GTIs laid end to end.

    For one interval [TSTART, TSTOP] these are :func:`track_times`. Shape: (n_nodes,).
    """
    good = np.asarray(pieces, dtype=np.float64).reshape(-1, 2)
    done = np.concatenate([[0.0], np.cumsum(good[:, 1] - good[:, 0])])
    wanted = (np.arange(n_nodes) + 0.5) / n_nodes * done[-1]
    piece = np.clip(np.searchsorted(done, wanted, side="right") - 1, 0, len(good) - 1)
    return np.asarray(good[piece, 0] + (wanted - done[piece]), dtype=np.float64)


def _zenith_at(
    runs: pd.DataFrame, times: npt.NDArray[np.float64], nodes: Sequence[NodeMaps | None] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return the pointing zenith of each run at ``times`` (n_runs, n_times) and whether it is known."""
    zenith = np.repeat(runs["ZEN_PNT"].to_numpy(np.float64)[:, None], times.shape[1], axis=1)
    known = np.zeros(len(runs), dtype=bool)
    try:
        meta = runs.attrs.get("OBS_META", {})
        reference, location = reference_time(meta), location_of(meta)
    except (KeyError, ValueError, TypeError):
        return zenith, known
    maps = index_node_maps(runs) if nodes is None else nodes  # None for a run without finite times
    ra, dec = runs["RA_PNT"].to_numpy(np.float64), runs["DEC_PNT"].to_numpy(np.float64)
    with_nodes = np.array([i for i, run_nodes in enumerate(maps) if run_nodes is not None], dtype=np.intp)
    merged = merged_node_maps([maps[i] for i in with_nodes])
    if merged is not None:  # every run in one numpy evaluation
        n_times = times.shape[1]
        _, alt = az_alt_deg(
            np.repeat(ra[with_nodes], n_times), np.repeat(dec[with_nodes], n_times), times[with_nodes].ravel(),
            reference=reference, location=location, nodes=merged,
        )
        zenith[with_nodes], known[with_nodes] = 90.0 - alt.reshape(-1, n_times), True
        return zenith, known
    for i in with_nodes:  # nodes made for other references or sites
        _, alt = az_alt_deg(ra[i], dec[i], times[i], reference=reference, location=location, nodes=maps[i])
        zenith[i], known[i] = 90.0 - alt, True
    return zenith, known
