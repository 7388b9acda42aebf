"""Checks of a run's values against what is possible: pure functions, no I/O.

A value no instrument can produce (a negative energy, a DEC beyond a pole, a
LIVETIME above the ONTIME, a run that ends before it starts) would not stop
the histogramming: it would bias the model with no warning. Each check here
raises :class:`~bkgxr.InvalidRunError` naming the run, its file and the value,
so that the run is refused, or left out with its reason under ``skip_bad``.

:func:`check_run_values` checks the per-run values of a run table (obs-index,
else EVENTS header; called by :meth:`bkgxr.Store.select`);
:func:`check_event_columns` checks the EVENTS columns and header one read task
sees (called by :mod:`bkgxr.io.events`).

Tolerances, measured on the H.E.S.S. DR1 release (105 runs) and on stores of
:mod:`bkgxr.simulate` (both pass every check with the margins below):

- Times. H.E.S.S. DR1 writes TSTART/TSTOP in whole seconds, truncated: its
  events lie 0.05-1.46 s after TSTART and up to 0.93 s *after* TSTOP (89 of
  105 runs have events after TSTOP); ONTIME = TSTOP - TSTART exactly, in both
  the release and the simulator. A time may therefore stray
  :func:`time_slack` = 1 s plus the float32 spacing at its magnitude (8 s at
  1e8 s: a time written as float32 by another tool) beyond [TSTART, TSTOP];
  runs are minutes apart, so an event of another run still lies outside.
- LIVETIME <= ONTIME x (1 + 1e-6): float32 rounding of each is 6e-8
  relative (H.E.S.S. DR1: LIVETIME/ONTIME 0.825-0.977).
- DEADC in (0, 1 + 1e-6] (float32 of LIVETIME/ONTIME; H.E.S.S. DR1:
  0.825-0.977); NaN means "not given" (a masked cell) and is not checked.
- DEC and DEC_PNT within 90 + 1e-5 deg of the equator and ZEN_PNT in
  [-1e-5, 90 + 1e-5] deg: a pole or the zenith written as float32 radians or
  as 90 - ALT_PNT in float32 (90.0000025 deg) stays valid.
- ENERGY > 0: no event has zero or negative energy (H.E.S.S. DR1 minimum
  0.15 TeV, simulator 0.05 TeV).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import InvalidRunError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import numpy.typing as npt

#: Slack (deg) of a DEC, DEC_PNT or ZEN_PNT beyond its range: a pole or the zenith as float32 (90.0000025 deg).
ANGLE_SLACK_DEG = 1e-5
#: Relative slack of LIVETIME over ONTIME and of DEADC over 1: float32 rounding (6e-8) of each.
RATIO_SLACK = 1e-6
#: Whole-second rounding of TSTART/TSTOP (H.E.S.S. DR1: events up to 0.93 s after TSTOP).
WHOLE_SECOND_S = 1.0


def time_slack(*times: float) -> float:
    """Return how far (s) a time may stray beyond a run's [TSTART, TSTOP].

    Parameters
    ----------
    *times : float
        The run's TSTART and TSTOP (s).

    Returns
    -------
    float
        :data:`WHOLE_SECOND_S` plus the float32 spacing at the largest
        ``|time|`` (8 s at 1e8 s), so that whole-second or float32 times pass.

    Examples
    --------
    >>> time_slack(94672800.0, 94674383.0)
    9.0
    """
    largest = max((abs(t) for t in times), default=0.0)
    return WHOLE_SECOND_S + float(np.spacing(np.float32(largest)))


def _known(value: float | None) -> bool:
    """Whether ``value`` is given: not None and not NaN (a masked or absent cell)."""
    return value is not None and not np.isnan(value)


def check_run_values(values: Mapping[str, float], *, obs_id: int, path: Path) -> None:
    """Check the per-run values of one run against what is possible.

    Parameters
    ----------
    values : mapping of str to float
        ``RA_PNT``, ``DEC_PNT``, ``ZEN_PNT`` (deg), ``LIVETIME``, ``ONTIME``
        (s), all required; ``TSTART``, ``TSTOP`` (s) and ``DEADC``, each
        optional (absent or NaN: not given).
    obs_id : int
        The run, for the message.
    path : pathlib.Path
        Its events file, for the message.

    Raises
    ------
    InvalidRunError
        If LIVETIME or ONTIME is not positive and finite; LIVETIME exceeds
        ONTIME; a pointing value is not finite; DEC_PNT lies beyond a pole;
        ZEN_PNT lies outside [0, 90] deg; TSTART or TSTOP is infinite, TSTART
        is after TSTOP or ONTIME exceeds TSTOP - TSTART; DEADC lies outside
        (0, 1]. Tolerances: see the module docstring.

    Examples
    --------
    >>> from pathlib import Path
    >>> values = {"RA_PNT": 83.6, "DEC_PNT": 22.0, "ZEN_PNT": 30.0, "LIVETIME": 1500.0, "ONTIME": 1600.0}
    >>> check_run_values({**values, "TSTART": 0.0, "TSTOP": 1200.0}, obs_id=7, path=Path("obs_7.fits"))
    Traceback (most recent call last):
    ...
    bkgxr.exceptions.InvalidRunError: run 7 (obs_7.fits): ONTIME 1600.0 s exceeds TSTOP - TSTART = 1200.0 s
    """

    def bad(reason: str) -> InvalidRunError:
        return InvalidRunError(obs_id, path, reason)

    live, on = values["LIVETIME"], values["ONTIME"]
    for name, value in (("LIVETIME", live), ("ONTIME", on)):
        if not (np.isfinite(value) and value > 0):
            raise bad(f"{name} is {value} s; it must be positive")
    if live > on * (1 + RATIO_SLACK):
        raise bad(f"LIVETIME {live} s exceeds ONTIME {on} s")
    for name in ("RA_PNT", "DEC_PNT", "ZEN_PNT"):
        if not np.isfinite(values[name]):
            raise bad(f"{name} is not finite")
    if abs(values["DEC_PNT"]) > 90.0 + ANGLE_SLACK_DEG:
        raise bad(f"DEC_PNT = {values['DEC_PNT']:.7g} deg lies beyond a pole (outside [-90, 90] deg)")
    if not -ANGLE_SLACK_DEG <= values["ZEN_PNT"] <= 90.0 + ANGLE_SLACK_DEG:
        raise bad(f"ZEN_PNT = {values['ZEN_PNT']:.7g} deg lies outside [0, 90] deg: the pointing is not above the horizon")
    start, stop = values.get("TSTART", np.nan), values.get("TSTOP", np.nan)
    for name, time in (("TSTART", start), ("TSTOP", stop)):
        if np.isinf(time):
            raise bad(f"{name} is {time} s; it must be finite")
    if _known(start) and _known(stop):
        if start > stop:
            raise bad(f"TSTART {start} s is after TSTOP {stop} s")
        if on > stop - start + time_slack(start, stop):
            raise bad(f"ONTIME {on} s exceeds TSTOP - TSTART = {stop - start} s")
    deadc = values.get("DEADC", np.nan)
    if _known(deadc) and not 0.0 < deadc <= 1.0 + RATIO_SLACK:
        raise bad(f"DEADC = {deadc:.7g} lies outside (0, 1]")


def _header_number(header: Mapping[str, object], name: str) -> float | None:
    """Return keyword ``name`` as a float, None when absent or not a number."""
    value = header.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_event_columns(
    columns: Mapping[str, npt.NDArray[np.float64]],
    header: Mapping[str, object],
    *,
    obs_id: int,
    path: Path,
    hdu: str,
    tstart: float | None = None,
    tstop: float | None = None,
) -> None:
    """Check the EVENTS columns and header of one run against what is possible.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        Event columns in canonical units, each shape (n_events,): ``ENERGY``
        (TeV), ``RA``, ``DEC`` (deg) and, when read, ``TIME`` (s). A column
        that is absent is not checked.
    header : mapping
        Valued keywords of the EVENTS header.
    obs_id : int
        The run's OBS_ID in the index.
    path : pathlib.Path
        Its events file, for the message.
    hdu : str
        Name of the EVENTS HDU, for the message.
    tstart, tstop : float, optional
        The run's TSTART and TSTOP (s) from the run table; None or NaN: the
        header's TSTART/TSTOP are used, and TIME is not checked without them.

    Raises
    ------
    InvalidRunError
        If the header's OBS_ID differs from ``obs_id`` or its TSTART/TSTOP
        from the run table's; a column holds a non-finite value; a DEC lies
        beyond a pole; an ENERGY is zero or negative; or a TIME lies outside
        [TSTART, TSTOP] by more than :func:`time_slack`.

    Examples
    --------
    >>> from pathlib import Path
    >>> columns = {"ENERGY": np.array([1.0, -0.5]), "RA": np.zeros(2), "DEC": np.zeros(2)}
    >>> check_event_columns(columns, {}, obs_id=7, path=Path("obs_7.fits"), hdu="EVENTS")
    Traceback (most recent call last):
    ...
    bkgxr.exceptions.InvalidRunError: run 7 (obs_7.fits): EVENTS ENERGY has 1 value(s) <= 0 TeV
    """

    def bad(reason: str) -> InvalidRunError:
        return InvalidRunError(obs_id, path, reason)

    if "OBS_ID" in header:
        given = header["OBS_ID"]
        if isinstance(given, bool) or not isinstance(given, (int, float)) or given != obs_id:
            raise bad(f"{hdu} keyword OBS_ID = {given!r} disagrees with the index's OBS_ID {obs_id}: the file of another run?")
    times: dict[str, float | None] = {}
    for name, indexed in (("TSTART", tstart), ("TSTOP", tstop)):
        written = _header_number(header, name)
        if indexed is not None and _known(indexed):
            if written is not None and abs(written - indexed) > time_slack(written, indexed):
                raise bad(f"{hdu} keyword {name} = {written} s disagrees with the run table's {indexed} s")
            times[name] = float(indexed)
        else:
            times[name] = written
    for name, values in columns.items():
        count = int(np.count_nonzero(~np.isfinite(values)))
        if count:
            raise bad(f"{hdu} {name} has {count} non-finite value(s)")
    # A DEC beyond a pole would still give an offset, and a wrong count.
    if "DEC" in columns:
        count = int(np.count_nonzero(np.abs(columns["DEC"]) > 90.0 + ANGLE_SLACK_DEG))
        if count:
            raise bad(f"{hdu} DEC has {count} value(s) outside [-90, 90] deg")
    if "ENERGY" in columns:
        count = int(np.count_nonzero(columns["ENERGY"] <= 0.0))
        if count:
            raise bad(f"{hdu} ENERGY has {count} value(s) <= 0 TeV")
    start, stop = times["TSTART"], times["TSTOP"]
    if "TIME" in columns and start is not None and stop is not None and columns["TIME"].size:
        slack = time_slack(start, stop)
        time = columns["TIME"]
        outside = (time < start - slack) | (time > stop + slack)
        count = int(np.count_nonzero(outside))
        if count:
            beyond = float(max(start - time.min(), time.max() - stop))
            raise bad(
                f"{hdu} TIME has {count} value(s) outside the run's [TSTART, TSTOP] = [{start}, {stop}] s "
                f"(by up to {beyond:.6g} s)"
            )
