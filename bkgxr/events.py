"""Lazy event columns: one dask chunk per run, only the needed columns.

:func:`open_events` returns an ``(n_events, 3)`` float64 dask array whose
columns follow :data:`bkgxr.axes.DIMS` (zenith, energy, offset) and whose row
chunks are the runs, in run-table order. Nothing is read before compute; each
chunk's task opens one file, reads ENERGY, RA and DEC from its EVENTS HDU,
converts them to canonical units and computes the offset from the pointing.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
from astropy.io import fits
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .axes import DIMS
from .exceptions import InvalidRunError, UnitError
from .geometry import offset_deg
from .rawfits import Unsupported, read_table_columns
from .units import ANGLE_UNIT, ENERGY_UNIT, parse_unit, scale_to

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

#: EVENTS columns read, with the canonical unit each is converted to.
EVENT_COLUMNS = {"ENERGY": ENERGY_UNIT, "RA": ANGLE_UNIT, "DEC": ANGLE_UNIT}


def _read_with_astropy(path: Path, hdu: str) -> tuple[dict[str, npt.NDArray[np.float64]], dict[str, str]]:
    with fits.open(path, memmap=False) as hdul:
        table = hdul[hdu]
        names = {n.upper(): n for n in table.columns.names}
        columns = {n: np.asarray(table.data[names[n]], dtype=np.float64) for n in EVENT_COLUMNS if n in names}
        units = {n: str(table.columns[names[n]].unit or "") for n in columns}
    return columns, units


def read_columns(path: str | Path, hdu: str, obs_id: int) -> dict[str, npt.NDArray[np.float64]]:
    """Read :data:`EVENT_COLUMNS` of one run in canonical units.

    The fast path (:mod:`bkgxr.rawfits`) decompresses only up to the end of
    the EVENTS table; tables it does not handle are read with astropy.

    Parameters
    ----------
    path : str or pathlib.Path
        Run file (FITS, gzipped or not).
    hdu : str
        Name of the EVENTS HDU.
    obs_id : int
        Observation ID, for error messages.

    Returns
    -------
    dict of str to numpy.ndarray
        Float64 columns, shape (n_events,).

    Raises
    ------
    InvalidRunError
        If the file is unreadable, lacks the HDU or a column, has an unknown
        unit, or holds non-finite values.
    """
    path = Path(path)
    try:
        try:
            _, columns, units = read_table_columns(path, hdu, list(EVENT_COLUMNS))
        except Unsupported:
            columns, units = _read_with_astropy(path, hdu)
    except KeyError as err:
        raise InvalidRunError(obs_id, path, f"no {hdu} HDU") from err
    except (OSError, EOFError, ValueError, TypeError, IndexError, zlib.error) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the file: {err}") from err
    for name, unit in EVENT_COLUMNS.items():
        if name not in columns:
            raise InvalidRunError(obs_id, path, f"{hdu} lacks column {name}")
        try:
            factor = scale_to(parse_unit(units[name], default=unit, what=f"{hdu} {name}"), unit)
        except UnitError as err:
            raise InvalidRunError(obs_id, path, str(err)) from err
        if factor != 1.0:
            columns[name] = columns[name] * factor
        bad = ~np.isfinite(columns[name])
        if bad.any():
            raise InvalidRunError(obs_id, path, f"{hdu} {name} has {int(bad.sum())} non-finite value(s)")
    return columns


def read_run(
    path: str | Path, hdu: str, obs_id: int, ra_pnt: float, dec_pnt: float, zenith: float
) -> npt.NDArray[np.float64]:
    """Read one run and return its events as rows of (zenith, energy, offset).

    The zenith of every event is the run's pointing zenith; this is the seam
    where a per-event zenith (from ALT/AZ columns) can replace it.

    Returns
    -------
    numpy.ndarray
        Shape: (n_events, 3), columns in :data:`bkgxr.axes.DIMS` order, in deg,
        TeV, deg.
    """
    columns = read_columns(path, hdu, obs_id)
    out = np.empty((columns["ENERGY"].size, len(DIMS)), dtype=np.float64)
    out[:, DIMS.index("zenith")] = zenith
    out[:, DIMS.index("energy")] = columns["ENERGY"]
    out[:, DIMS.index("offset")] = offset_deg(columns["RA"], columns["DEC"], ra_pnt, dec_pnt)
    return out


def open_events(runs: pd.DataFrame) -> da.Array:
    """Return the events of ``runs`` as a lazy dask array, one chunk per run.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table from :meth:`bkgxr.Store.select`.

    Returns
    -------
    dask.array.Array
        Shape: (n_events, 3) with unknown row chunk sizes; columns in
        :data:`bkgxr.axes.DIMS` order.
    """
    args = [
        (str(r.EVENTS_PATH), str(r.EVENTS_HDU), int(r.OBS_ID), float(r.RA_PNT), float(r.DEC_PNT), float(r.ZEN_PNT))
        for r in runs.itertuples(index=False)
    ]
    if not args:
        raise ValueError("open_events needs at least one run")
    name = "bkgxr-read-run-" + tokenize(args)
    layer = {(name, i, 0): (read_run, *arg) for i, arg in enumerate(args)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    chunks = ((np.nan,) * len(args), (len(DIMS),))
    return da.Array(graph, name, chunks=chunks, dtype=np.float64)
