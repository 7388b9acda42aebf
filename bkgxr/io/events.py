"""Event columns of runs, read in bounded blocks.

:func:`iter_run_rows` yields a run's events a block of rows at a time, as
columns in :data:`bkgxr.axes.DIMS` (zenith, energy, offset) or
:data:`bkgxr.axes.DIMS_3D` order: what :mod:`bkgxr.fill` histograms and
:func:`bkgxr.io.lazy_events.open_events` stacks into one dask chunk per run.
Only ENERGY, RA, DEC (and TIME) are read, converted once to canonical units
and checked (:mod:`bkgxr.io.checks`); FoV coordinates are measured from the
EVENTS header's RA_PNT/DEC_PNT (float64, what gammapy uses) when present,
else from the run table's (the obs-index, float32 in H.E.S.S. DR1).
"""
from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from ..altaz_maps import NodeMaps, location_of, reference_time, run_node_maps
from ..axes import DIMS, DIMS_3D
from ..exceptions import InvalidRunError, UnitError
from ..exclusion import ExclusionRegions, excluded
from ..fov import event_fov_deg
from ..geometry import offset_deg
from ..units import ANGLE_UNIT, ENERGY_UNIT, TIME_UNIT, parse_unit, scale_to
from ._rawfits import BLOCK_BYTES, Unsupported, iter_table_blocks
from .checks import check_event_columns

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt
    import pandas as pd

#: EVENTS columns read, with the canonical unit each is converted to.
EVENT_COLUMNS = {"ENERGY": ENERGY_UNIT, "RA": ANGLE_UNIT, "DEC": ANGLE_UNIT}
#: Columns read for 3D (ALTAZ-aligned FoV) cubes: the event time as well.
EVENT_COLUMNS_3D = {**EVENT_COLUMNS, "TIME": TIME_UNIT}

#: Where a run's pointing comes from (the run table's ``PNT_SOURCE``): the EVENTS
#: header when it has RA_PNT and DEC_PNT, else the obs-index.
PNT_HEADER, PNT_HEADER_ELSE_INDEX = "EVENTS header", "EVENTS header, else obs-index"

#: Valued keywords of a FITS header, as :func:`bkgxr.io._rawfits.iter_table_blocks` yields them.
Header = Mapping[str, str | int | float | bool]


def _read_with_astropy(
    path: Path, hdu: str, also: tuple[str, ...], wanted: dict[str, Any]
) -> tuple[Header, dict[str, npt.NDArray[np.float64]], dict[str, str]]:
    with fits.open(path, memmap=False) as hdul:
        for name in also:
            hdul[name]  # raises KeyError when missing
        table = hdul[hdu]
        if not isinstance(table, (fits.BinTableHDU, fits.TableHDU)):
            raise TypeError(f"the {hdu} HDU is not a table but {type(table).__name__}")
        names = {n.upper(): n for n in table.columns.names}
        columns = {n: np.asarray(table.data[names[n]], dtype=np.float64) for n in wanted if n in names}
        units = {n: str(table.columns[names[n]].unit or "") for n in columns}
        header = {key: value for key, value in table.header.items() if isinstance(value, (str, int, float, bool))}
    return header, columns, units


def header_pointing(header: Header, obs_id: int, path: Path, hdu: str) -> tuple[float, float] | None:
    """Return the pointing (RA_PNT, DEC_PNT) in deg of an EVENTS header, None if it lacks either.

    Parameters
    ----------
    header : dict
        Keywords of the EVENTS header.
    obs_id, path, hdu : int, pathlib.Path, str
        The run, its file and the HDU name, for error messages.

    Raises
    ------
    InvalidRunError
        If a keyword is present but not a finite number, or DEC_PNT lies
        beyond a pole.
    """
    if "RA_PNT" not in header or "DEC_PNT" not in header:
        return None
    values = []
    for name in ("RA_PNT", "DEC_PNT"):
        value = header[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InvalidRunError(obs_id, path, f"{hdu} keyword {name} = {value!r} is not a finite number")
        values.append(float(value))
    if abs(values[1]) > 90.0:
        raise InvalidRunError(obs_id, path, f"{hdu} keyword DEC_PNT = {values[1]} lies outside [-90, 90] deg")
    return values[0], values[1]


def iter_event_blocks(
    path: str | Path,
    hdu: str,
    obs_id: int,
    *,
    gti_hdu: str = "",
    wanted: dict[str, Any] = EVENT_COLUMNS,
    block_bytes: int = BLOCK_BYTES,
    tstart: float | None = None,
    tstop: float | None = None,
    optional: tuple[str, ...] = (),
) -> Iterator[tuple[dict[str, npt.NDArray[np.float64]], Header]]:
    """Yield the ``wanted`` EVENTS columns of one run in canonical units, a block of rows at a time.

    The fast path (:func:`bkgxr.io._rawfits.iter_table_blocks`) decompresses
    only up to the end of the EVENTS table and holds one block of rows at a
    time; tables it does not handle are read whole with astropy.

    Parameters
    ----------
    path : str or pathlib.Path
        Run file (FITS, gzipped or not).
    hdu : str
        Name of the EVENTS HDU.
    obs_id : int
        Observation ID, for error messages.
    gti_hdu : str
        Name of the GTI HDU when it lives in the same file (checked to exist);
        '' to skip the check.
    wanted : dict
        Column name -> canonical unit (:data:`EVENT_COLUMNS` or :data:`EVENT_COLUMNS_3D`).
    block_bytes : int
        Bytes of table rows per block.
    tstart, tstop : float, optional
        The run's TSTART and TSTOP (s) in the run table, checked against the
        header's and the events' TIME (:func:`bkgxr.io.checks.check_event_columns`).
    optional : tuple of str
        Names of ``wanted`` that may be absent (then absent from the blocks too).

    Yields
    ------
    columns : dict of str to numpy.ndarray
        Float64 columns of the block, shape (n_block_events,).
    header : Mapping
        Valued keywords of the EVENTS header.

    Raises
    ------
    InvalidRunError
        If the file is unreadable, lacks the HDU or a column, has an unknown
        unit, or holds impossible values (see :func:`bkgxr.io.checks.check_event_columns`).
    """
    path = Path(path)
    also = (gti_hdu,) if gti_hdu else ()
    factors: dict[str, float] = {}
    try:
        blocks: Iterator[tuple[Header, dict[str, npt.NDArray[np.float64]], dict[str, str]]]
        blocks = iter_table_blocks(path, hdu, list(wanted), also=also, block_bytes=block_bytes)
        try:
            blocks = itertools.chain([next(blocks)], blocks)
        except Unsupported:
            blocks = iter([_read_with_astropy(path, hdu, also, wanted)])
        for header, columns, units in blocks:
            if not factors:
                factors = _unit_factors(columns, units, wanted, optional, obs_id=obs_id, path=path, hdu=hdu)
            block = _canonical(columns, factors)
            check_event_columns(block, header, obs_id=obs_id, path=path, hdu=hdu, tstart=tstart, tstop=tstop)
            yield block, header
    except KeyError as err:
        raise InvalidRunError(obs_id, path, f"no {err.args[0]} HDU") from err
    except (OSError, EOFError, ValueError, TypeError, IndexError, zlib.error) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the file: {err}") from err


def _unit_factors(
    columns: dict[str, npt.NDArray[np.float64]],
    units: dict[str, str],
    wanted: dict[str, Any],
    optional: tuple[str, ...],
    *,
    obs_id: int,
    path: Path,
    hdu: str,
) -> dict[str, float]:
    """Return the factor from each wanted column's TUNIT to its canonical unit (optional ones absent: none)."""
    factors = {}
    for name, unit in wanted.items():
        if name not in columns and name in optional:
            continue
        if name not in columns:
            raise InvalidRunError(obs_id, path, f"{hdu} lacks column {name}")
        try:
            factors[name] = _unit_factor(units[name], unit, f"{hdu} {name}")
        except UnitError as err:
            raise InvalidRunError(obs_id, path, str(err)) from err
    return factors


@functools.lru_cache(maxsize=256)
def _unit_factor(text: str, unit: Any, what: str) -> float:
    """Return the factor from the unit ``text`` to ``unit`` (astropy parses each text once per process)."""
    return scale_to(parse_unit(text, default=unit, what=what), unit)


def _canonical(columns: dict[str, npt.NDArray[np.float64]], factors: dict[str, float]) -> dict[str, npt.NDArray[np.float64]]:
    """Return the wanted columns in canonical units."""
    return {name: columns[name] if factor == 1.0 else columns[name] * factor for name, factor in factors.items()}


def read_event_table(
    path: str | Path, hdu: str, obs_id: int, *, gti_hdu: str = "", wanted: dict[str, Any] = EVENT_COLUMNS
) -> tuple[dict[str, npt.NDArray[np.float64]], Header]:
    """Read the ``wanted`` EVENTS columns of one run in canonical units, whole, and the EVENTS header.

    The blocks of :func:`iter_event_blocks`, joined; see there.
    """
    blocks = list(iter_event_blocks(path, hdu, obs_id, gti_hdu=gti_hdu, wanted=wanted))
    columns = {name: np.concatenate([block[name] for block, _ in blocks]) for name in blocks[0][0]}
    return columns, blocks[0][1]


@dataclass(frozen=True)
class RunRead:
    """What reading one run needs: its file, pointing, energy range, FoV frame, regions and node maps.

    ``ra_pnt``/``dec_pnt`` (deg, from the run table) are used only when the
    EVENTS header lacks RA_PNT/DEC_PNT; ``zenith`` (deg) is the run's pointing
    zenith; events outside ``[e_min, e_max)`` TeV and inside ``exclude`` are dropped.
    ``tstart``/``tstop`` (s, NaN if unknown): the run table's, checked against the file.
    ``track_time``/``track_zenith`` (s since MJDREF, deg; :func:`bkgxr.track.slice_tracks`):
    the pointing's zenith at increasing times, linear between them; each event
    then takes the zenith at its TIME instead of ``zenith``.
    """

    path: str
    hdu: str
    gti_hdu: str
    obs_id: int
    ra_pnt: float
    dec_pnt: float
    zenith: float
    e_min: float = -np.inf
    e_max: float = np.inf
    fov: str = "offset"
    exclude: ExclusionRegions | None = None
    nodes: NodeMaps | None = None
    tstart: float = np.nan
    tstop: float = np.nan
    track_time: npt.NDArray[np.float64] | None = None
    track_zenith: npt.NDArray[np.float64] | None = None

    @property
    def n_dims(self) -> int:
        """Columns of an event row: :data:`bkgxr.axes.DIMS` or :data:`bkgxr.axes.DIMS_3D`."""
        return len(DIMS_3D if self.fov == "altaz" else DIMS)


def iter_run_rows(
    run: RunRead, *, block_bytes: int = BLOCK_BYTES, headers: list[Mapping[str, Any]] | None = None
) -> Iterator[tuple[npt.NDArray[np.float64], ...]]:
    """Yield one run's events, a block at a time, as columns (zenith, energy, FoV coordinates).

    The FoV coordinates are measured from the EVENTS header's RA_PNT/DEC_PNT,
    as gammapy does (the run table's when the header lacks them).
    ``fov="offset"``: the offset (2D); ``fov="altaz"``: FoV longitude and
    latitude in the frame aligned with the horizontal system at each event's
    time (3D, :func:`bkgxr.fov.event_fov_deg`, from TIME, the header's MJDREF
    and observatory location GEOLON/GEOLAT/ALTITUDE). The zenith of every event
    is the run's pointing zenith. ``run.nodes``: the run's precomputed node maps
    (:func:`bkgxr.altaz_maps.run_node_maps`), used when made for the header's MJDREF
    and location and holding every event's node, else astropy computes them here.
    ``headers``: a list the EVENTS header is appended to once read, for a
    caller that needs more of it (e.g. :func:`bkgxr.masking.run_kept_fraction`).

    Yields
    ------
    tuple of numpy.ndarray
        Float64 columns in :data:`bkgxr.axes.DIMS` order (deg, TeV, deg), or
        :data:`bkgxr.axes.DIMS_3D` order; shape (n_block_events,) each.

    Raises
    ------
    InvalidRunError
        See :func:`iter_event_blocks`; also for a 3D read without the keywords it needs.
    """
    path = Path(run.path)
    # TIME: for the FoV frame or the zenith at each event; else read when present, to check it
    optional = () if run.fov == "altaz" or run.track_zenith is not None else ("TIME",)
    pointing: tuple[float, float] | None = None
    blocks = iter_event_blocks(
        path, run.hdu, run.obs_id, gti_hdu=run.gti_hdu, wanted=EVENT_COLUMNS_3D, block_bytes=block_bytes,
        tstart=run.tstart, tstop=run.tstop, optional=optional,
    )
    for columns, header in blocks:
        if pointing is None:
            pointing = header_pointing(header, run.obs_id, path, run.hdu) or (run.ra_pnt, run.dec_pnt)
            if headers is not None:
                headers.append(header)
        keep = (columns["ENERGY"] >= run.e_min) & (columns["ENERGY"] < run.e_max)
        if run.exclude is not None:
            keep &= ~excluded(columns["RA"], columns["DEC"], run.exclude)
        if not keep.all():
            columns = {name: values[keep] for name, values in columns.items()}
        if run.track_time is None or run.track_zenith is None:
            zenith = np.full(columns["ENERGY"].size, run.zenith)
        else:
            zenith = np.interp(columns["TIME"], run.track_time, run.track_zenith)
        if run.fov != "altaz":
            yield zenith, columns["ENERGY"], offset_deg(columns["RA"], columns["DEC"], *pointing)
            continue
        try:
            reference, location = reference_time(header), location_of(header)
        except KeyError as err:
            raise InvalidRunError(run.obs_id, path, f"{run.hdu} lacks {err.args[0]}, needed for FoV coordinates") from err
        lon, lat, _ = event_fov_deg(
            columns["RA"], columns["DEC"], columns["TIME"], *pointing, reference=reference, location=location, nodes=run.nodes
        )
        yield zenith, columns["ENERGY"], lon, lat


def read_run(run: RunRead) -> npt.NDArray[np.float64]:
    """Read one run whole and return its events as rows of (zenith, energy, FoV coordinates).

    The blocks of :func:`iter_run_rows`, stacked.

    Returns
    -------
    numpy.ndarray
        Shape: (n_events, 3) in :data:`bkgxr.axes.DIMS` order (deg, TeV, deg),
        or (n_events, 4) in :data:`bkgxr.axes.DIMS_3D` order.
    """
    blocks = [np.column_stack(columns) for columns in iter_run_rows(run)]
    return np.concatenate(blocks) if blocks else np.empty((0, run.n_dims))


def index_node_maps(runs: pd.DataFrame) -> list[NodeMaps | None]:
    """Return each run's node maps from one astropy call, on the obs-index's MJDREF and site.

    These come from ``runs.attrs["OBS_META"]`` (the obs-index header, set by
    :meth:`bkgxr.Store.select`) and the runs' TSTART/TSTOP (s since that
    MJDREF); None for every run when the header lacks them, for a run
    without finite TSTART <= TSTOP.
    """
    meta = runs.attrs.get("OBS_META", {})
    out: list[NodeMaps | None] = [None] * len(runs)
    try:
        reference, location = reference_time(meta), location_of(meta)
    except (KeyError, ValueError, TypeError):  # no usable header: each task computes its nodes
        return out
    if "TSTART" not in runs or "TSTOP" not in runs:
        return out
    start, stop = runs["TSTART"].to_numpy(np.float64), runs["TSTOP"].to_numpy(np.float64)
    good = np.flatnonzero(np.isfinite(start) & np.isfinite(stop) & (start <= stop))
    if good.size:
        for i, maps in zip(good, run_node_maps(start[good], stop[good], reference=reference, location=location), strict=True):
            out[i] = maps
    return out


def run_reads(
    runs: pd.DataFrame,
    *,
    fov: str = "offset",
    exclude: Sequence[ExclusionRegions | None] | None = None,
    nodes: Sequence[NodeMaps | None] | None = None,
    tracks: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
) -> list[RunRead]:
    """Return what reading each run of ``runs`` needs, in run-table order.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table from :meth:`bkgxr.Store.select`; optional columns ``E_MIN``
        and ``E_MAX`` (TeV) limit each run's energies.
    fov : {"offset", "altaz"}
        FoV coordinates of the events (see :func:`iter_run_rows`). For "altaz",
        astropy computes the node maps of all runs here, in one call (see
        :func:`index_node_maps`), unless ``nodes`` are given.
    exclude : sequence of ExclusionRegions or None, optional
        Regions whose events each run drops, one entry per run (None: none).
    nodes : sequence of NodeMaps or None, optional
        Each run's node maps (:func:`index_node_maps`), when the caller has them already.
    tracks : tuple of numpy.ndarray, optional
        Times (s) and pointing zenith (deg) along each run, shape (n_runs,
        n_times) each (:func:`bkgxr.track.slice_tracks`; a row of NaN times:
        track unknown): events take the zenith at their TIME.
    """
    limits = runs.reindex(columns=["E_MIN", "E_MAX"]).fillna({"E_MIN": -np.inf, "E_MAX": np.inf})
    times = runs.reindex(columns=["TSTART", "TSTOP"]).astype(np.float64)
    regions = [None] * len(runs) if exclude is None else list(exclude)
    if fov != "altaz":
        nodes = [None] * len(runs)
    elif nodes is None:
        nodes = index_node_maps(runs)
    track_times, track_zenith = (np.full((len(runs), 1), np.nan),) * 2 if tracks is None else tracks
    return [
        RunRead(str(r.EVENTS_PATH), str(r.EVENTS_HDU), str(getattr(r, "GTI_HDU", "")), int(r.OBS_ID),
                float(r.RA_PNT), float(r.DEC_PNT), float(r.ZEN_PNT), float(lo), float(hi), fov, region, node, float(t0), float(t1),
                *((track_t, track_z) if np.isfinite(track_t).all() else (None, None)))
        for r, lo, hi, region, node, t0, t1, track_t, track_z in zip(
            runs.itertuples(index=False), limits["E_MIN"], limits["E_MAX"], regions, nodes, times["TSTART"], times["TSTOP"],
            track_times, track_zenith, strict=True
        )
    ]
