"""A run's good time intervals, read only where they leave gaps in [TSTART, TSTOP].

GADF's ONTIME is the sum of a run's GTIs. When it equals ``TSTOP - TSTART``
(within :func:`bkgxr.io.checks.time_slack`) the GTIs cover the whole run and
need not be read: every H.E.S.S. DR1 run and every simulated run is such. A
run whose ONTIME is shorter has gaps, and :func:`read_gti` gives its pieces, so
that its time is shared among zenith bands where it was observed
(:func:`bkgxr.track.gti_band_fractions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from ..exceptions import InvalidRunError
from ._rawfits import Unsupported, read_table_columns
from .checks import time_slack

if TYPE_CHECKING:
    import numpy.typing as npt

#: Most GTI rows a run may have: a 28-min run cut into 1-s pieces has ~1700.
MAX_GTI_ROWS = 100_000


def has_gaps(tstart_s: npt.ArrayLike, tstop_s: npt.ArrayLike, ontime_s: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Return whether each run's ONTIME falls short of ``TSTOP - TSTART`` by more than :func:`time_slack`.

    Parameters
    ----------
    tstart_s, tstop_s, ontime_s : array-like
        The runs' TSTART, TSTOP and ONTIME (s). Shape: (n_runs,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs,); False where a value is not finite.
    """
    start, stop, on = (np.asarray(a, dtype=np.float64) for a in (tstart_s, tstop_s, ontime_s))
    slack = np.array([time_slack(a, b) if np.isfinite(a) and np.isfinite(b) else np.inf for a, b in zip(start, stop, strict=True)])
    with np.errstate(invalid="ignore"):
        return np.asarray((stop - start) - on > slack, dtype=bool)


def read_gti(path: str | Path, hdu: str, *, obs_id: int, tstart: float, tstop: float) -> npt.NDArray[np.float64]:
    """Return a run's good time intervals, sorted and clipped to [TSTART, TSTOP].

    Parameters
    ----------
    path : str or pathlib.Path
        The file holding the GTI table (FITS, gzipped or not).
    hdu : str
        Its EXTNAME.
    obs_id : int
        The run, for error messages.
    tstart, tstop : float
        The run's TSTART and TSTOP (s, the events' time reference).

    Returns
    -------
    numpy.ndarray
        START, STOP (s) of each interval, overlapping ones joined. Shape: (n_intervals, 2).

    Raises
    ------
    InvalidRunError
        If the table cannot be read, lacks START or STOP, has more than
        :data:`MAX_GTI_ROWS` rows, times in a unit other than s, a non-finite
        time, an interval that stops before it starts, or one beyond the run by
        more than :func:`bkgxr.io.checks.time_slack`.
    """
    path = Path(path)
    try:
        try:
            header, columns, units = read_table_columns(path, hdu, ["START", "STOP"])
        except Unsupported:
            with fits.open(path, memmap=False) as hdul:
                table = hdul[hdu]
                names = {n.upper(): n for n in table.columns.names}
                columns = {n: np.asarray(table.data[names[n]], dtype=np.float64) for n in ("START", "STOP") if n in names}
                units = {n: str(table.columns[names[n]].unit or "") for n in columns}
    except KeyError as err:
        raise InvalidRunError(obs_id, path, f"no {err.args[0]} HDU") from err
    except (OSError, EOFError, ValueError, TypeError, IndexError) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the {hdu} table: {err}") from err
    del header
    for name in ("START", "STOP"):
        if name not in columns:
            raise InvalidRunError(obs_id, path, f"{hdu} lacks column {name}")
        if units[name].strip().lower() not in ("", "s"):
            raise InvalidRunError(obs_id, path, f"{hdu} {name} is in {units[name]!r}, not s")
    pieces = np.column_stack([columns["START"], columns["STOP"]])
    slack = time_slack(tstart, tstop)
    if len(pieces) > MAX_GTI_ROWS:
        raise InvalidRunError(obs_id, path, f"{hdu} has {len(pieces)} rows, more than {MAX_GTI_ROWS}")
    if not np.all(np.isfinite(pieces)):
        raise InvalidRunError(obs_id, path, f"{hdu} holds a non-finite time")
    if np.any(pieces[:, 1] < pieces[:, 0]):
        raise InvalidRunError(obs_id, path, f"{hdu} has an interval that stops before it starts")
    if np.any(pieces[:, 0] < tstart - slack) or np.any(pieces[:, 1] > tstop + slack):
        raise InvalidRunError(obs_id, path, f"{hdu} has an interval outside the run's [{tstart}, {tstop}] s")
    pieces = np.clip(pieces[np.argsort(pieces[:, 0], kind="stable")], tstart, tstop)
    # overlapping or touching intervals join, so that no time counts twice
    first = np.concatenate([[True], pieces[1:, 0] > np.maximum.accumulate(pieces[:, 1])[:-1]]) if len(pieces) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    return np.column_stack([pieces[starts, 0], np.maximum.reduceat(pieces[:, 1], starts)]) if len(pieces) else pieces
