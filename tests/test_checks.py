"""Checks of run values and event columns (bkgxr.io.checks): real data passes, impossible values are refused.

Real stores (H.E.S.S. DR1, the simulator's) are read here with astropy, not
bkgxr's reader, and must pass every check unchanged; the measured margins
that set the tolerances are asserted beside them. Each impossible value is an
InvalidRunError whose message starts with the run and its file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr import InvalidRunError
from bkgxr.io.checks import (
    WHOLE_SECOND_S,
    check_event_columns,
    check_run_values,
    time_slack,
)

PATH = Path("obs_000007.fits.gz")
PREFIX = "run 7 (obs_000007.fits.gz): "
#: A plausible run: times as in H.E.S.S. DR1 (s since 2001), float32 DEADC.
T0 = 94_672_800.0
RUN = {"RA_PNT": 83.6, "DEC_PNT": 22.0, "ZEN_PNT": 30.0, "LIVETIME": 1500.0, "ONTIME": 1600.0,
       "TSTART": T0, "TSTOP": T0 + 1600.0, "DEADC": 0.9375}


def _events() -> dict[str, np.ndarray]:
    return {"ENERGY": np.array([0.2, 1.0, 30.0]), "RA": np.array([83.0, 84.0, 85.0]),
            "DEC": np.array([21.0, 22.0, 23.0]), "TIME": T0 + np.array([0.5, 800.0, 1599.9])}


HEADER = {"OBS_ID": 7, "TSTART": T0, "TSTOP": T0 + 1600.0}


def _store_events(root: Path):
    """Yield (OBS_ID, obs-index row, EVENTS columns in TeV/deg/s, EVENTS header) of every run, read with astropy."""
    obs = Table.read(root / "obs-index.fits.gz")
    hdus = Table.read(root / "hdu-index.fits.gz")
    for row in hdus[np.char.strip(hdus["HDU_TYPE"].astype(str)) == "events"]:
        path = root / str(row["FILE_DIR"]).strip() / str(row["FILE_NAME"]).strip()
        table = Table.read(path, hdu=str(row["HDU_NAME"]).strip())
        columns = {"ENERGY": table["ENERGY"].quantity.to_value("TeV").astype(np.float64)}
        columns |= {name: table[name].quantity.to_value("deg").astype(np.float64) for name in ("RA", "DEC")}
        columns["TIME"] = table["TIME"].quantity.to_value("s").astype(np.float64)
        header = {k: v for k, v in fits.getheader(path, str(row["HDU_NAME"]).strip()).items() if isinstance(v, (int, float, str))}
        yield int(row["OBS_ID"]), obs[obs["OBS_ID"] == row["OBS_ID"]][0], columns, header, path


def _check_store(root: Path) -> dict[str, float]:
    """Run both checks on every run of a store; return the measured margins."""
    after, before, ontime_excess, ratio = [], [], [], []
    for obs_id, row, columns, header, path in _store_events(root):
        values = {name: float(row[name]) for name in (*RUN, "ZEN_PNT")}
        check_run_values(values, obs_id=obs_id, path=path)
        check_event_columns(columns, header, obs_id=obs_id, path=path, hdu="EVENTS",
                            tstart=float(row["TSTART"]), tstop=float(row["TSTOP"]))
        after.append(columns["TIME"].max() - values["TSTOP"])
        before.append(values["TSTART"] - columns["TIME"].min())
        ontime_excess.append(values["ONTIME"] - (values["TSTOP"] - values["TSTART"]))
        ratio.append(values["LIVETIME"] / values["ONTIME"])
    return {"after": max(after), "before": max(before), "ontime_excess": max(ontime_excess), "ratio": max(ratio)}


def test_hess_dr1_passes_every_check_and_needs_the_whole_second(hess_dir):
    margins = _check_store(hess_dir)
    # TSTART/TSTOP are whole seconds: events up to 0.93 s after TSTOP, so the slack is needed and enough
    assert 0.9 < margins["after"] < WHOLE_SECOND_S
    assert margins["before"] < 0  # every event after TSTART
    assert margins["ontime_excess"] == 0.0  # ONTIME = TSTOP - TSTART exactly
    assert margins["ratio"] < 0.98
    runs = bkgxr.open_store(hess_dir).select(skip_bad=True)
    assert len(runs) == 105 and (runs["ERROR"] == "").all()


def test_simulated_store_passes_every_check(simulation):
    margins = _check_store(simulation.path)
    assert margins["after"] < 0 and margins["before"] < 0 and margins["ontime_excess"] == 0.0
    runs = bkgxr.open_store(simulation.path).select(skip_bad=True)
    assert (runs["ERROR"] == "").all()


def test_time_slack_is_a_second_plus_the_float32_spacing():
    assert time_slack(0.0, 1000.0) == pytest.approx(1.0 + 2.0**-14)
    assert time_slack(T0, T0 + 1600.0) == 9.0  # float32 spacing at 9.5e7 s: 8 s
    assert time_slack() == 1.0


def _events_with(name: str, index: int, value: float) -> dict[str, np.ndarray]:
    columns = _events()
    columns[name][index] = value
    return columns


#: name -> (columns, header, keyword arguments, reason regex).
REFUSED_EVENTS = {
    "negative_energy": (_events_with("ENERGY", 1, -1.0), HEADER, {}, r"EVENTS ENERGY has 1 value\(s\) <= 0 TeV"),
    "zero_energy": (_events_with("ENERGY", 0, 0.0), HEADER, {}, r"EVENTS ENERGY has 1 value\(s\) <= 0 TeV"),
    "nan_energy": (_events_with("ENERGY", 0, np.nan), HEADER, {}, r"EVENTS ENERGY has 1 non-finite value\(s\)"),
    "inf_time": (_events_with("TIME", 2, np.inf), HEADER, {}, r"EVENTS TIME has 1 non-finite"),
    "dec_beyond_a_pole": (_events_with("DEC", 2, -90.001), HEADER, {}, r"EVENTS DEC has 1 value\(s\) outside \[-90, 90\] deg"),
    "time_after_tstop": (_events_with("TIME", 2, T0 + 1610.0), HEADER, {},
                         r"EVENTS TIME has 1 value\(s\) outside the run's \[TSTART, TSTOP\] = \[94672800.0, 94674400.0\] s \(by up to 10 s\)"),
    "time_of_the_next_run": (_events_with("TIME", 0, T0 + 3600.0), HEADER, {}, r"EVENTS TIME has 1 value"),
    "time_before_tstart": (_events_with("TIME", 0, T0 - 9.5), HEADER, {}, r"by up to 9.5 s"),
    "time_outside_the_run_tables_times": (_events(), {}, {"tstart": T0 + 100.0, "tstop": T0 + 200.0},
                                          r"EVENTS TIME has 3 value\(s\) outside .* \(by up to 1399.9 s\)"),
    "header_obs_id_of_another_run": (_events(), {**HEADER, "OBS_ID": 8}, {},
                                     r"EVENTS keyword OBS_ID = 8 disagrees with the index's OBS_ID 7"),
    "header_obs_id_text": (_events(), {**HEADER, "OBS_ID": "7"}, {}, r"EVENTS keyword OBS_ID = '7' disagrees"),
    "header_tstart_off_the_run_tables": (_events(), HEADER, {"tstart": T0 - 60.0, "tstop": T0 + 1600.0},
                                         r"EVENTS keyword TSTART = 94672800.0 s disagrees with the run table's 94672740.0 s"),
}


@pytest.mark.parametrize("name", list(REFUSED_EVENTS))
def test_impossible_events_are_refused_naming_run_and_file(name):
    columns, header, kwargs, reason = REFUSED_EVENTS[name]
    with pytest.raises(InvalidRunError) as info:
        check_event_columns(columns, header, obs_id=7, path=PATH, hdu="EVENTS", **kwargs)
    message = str(info.value)
    assert message.startswith(PREFIX) and info.value.obs_id == 7 and info.value.path == PATH
    assert re.search(reason, message), message


#: name -> (columns, header, keyword arguments): possible, at the edge of a tolerance, or unchecked.
ACCEPTED_EVENTS = {
    "plausible": (_events(), HEADER, {}),
    "no_events": ({name: values[:0] for name, values in _events().items()}, HEADER, {}),
    "tiny_energy": (_events_with("ENERGY", 0, 1e-30), HEADER, {}),
    "pole_as_float32_radians": (_events_with("DEC", 0, float(np.degrees(np.float32(np.pi / 2)))), HEADER, {}),
    "time_within_the_slack_after_tstop": (_events_with("TIME", 2, T0 + 1600.0 + 8.9), HEADER, {}),
    "time_unchecked_without_tstart": (_events_with("TIME", 2, 1e12), {"OBS_ID": 7}, {}),
    "nan_run_table_times_fall_back_to_the_header": (_events(), HEADER, {"tstart": np.nan, "tstop": np.nan}),
    "run_table_times_within_the_slack_of_the_header": (_events(), HEADER, {"tstart": T0 + 0.5, "tstop": T0 + 1600.0}),
    "obs_id_as_float": (_events(), {**HEADER, "OBS_ID": 7.0}, {}),
    "no_time_column": ({k: v for k, v in _events().items() if k != "TIME"}, HEADER, {}),
}


@pytest.mark.parametrize("name", list(ACCEPTED_EVENTS))
def test_possible_events_pass(name):
    columns, header, kwargs = ACCEPTED_EVENTS[name]
    check_event_columns(columns, header, obs_id=7, path=PATH, hdu="EVENTS", **kwargs)


#: name -> (changed values, reason regex).
REFUSED_RUNS = {
    "livetime_above_ontime": ({"LIVETIME": 1600.1}, r"LIVETIME 1600.1 s exceeds ONTIME 1600.0 s"),
    "ontime_nan": ({"ONTIME": np.nan}, r"ONTIME is nan s; it must be positive"),
    "livetime_negative": ({"LIVETIME": -1.0}, r"LIVETIME is -1.0 s; it must be positive"),
    "ra_infinite": ({"RA_PNT": np.inf}, r"RA_PNT is not finite"),
    "dec_pnt_beyond_a_pole": ({"DEC_PNT": 90.001}, r"DEC_PNT = 90.001 deg lies beyond a pole"),
    "dec_pnt_below_the_south_pole": ({"DEC_PNT": -95.0}, r"DEC_PNT = -95 deg lies beyond a pole"),
    "zen_pnt_below_the_horizon": ({"ZEN_PNT": 90.5}, r"ZEN_PNT = 90.5 deg lies outside \[0, 90\] deg"),
    "zen_pnt_negative": ({"ZEN_PNT": -0.5}, r"ZEN_PNT = -0.5 deg lies outside \[0, 90\] deg"),
    "tstart_after_tstop": ({"TSTART": T0 + 1601.0}, r"TSTART 94674401.0 s is after TSTOP 94674400.0 s"),
    "tstop_infinite": ({"TSTOP": np.inf}, r"TSTOP is inf s; it must be finite"),
    "tstart_minus_infinite": ({"TSTART": -np.inf}, r"TSTART is -inf s; it must be finite"),
    "ontime_beyond_the_run": ({"ONTIME": 1609.5}, r"ONTIME 1609.5 s exceeds TSTOP - TSTART = 1600.0 s"),
    "ontime_twice_the_run": ({"ONTIME": 3200.0}, r"ONTIME 3200.0 s exceeds TSTOP - TSTART"),
    "deadc_above_one": ({"DEADC": 1.01}, r"DEADC = 1.01 lies outside \(0, 1\]"),
    "deadc_zero": ({"DEADC": 0.0}, r"DEADC = 0 lies outside \(0, 1\]"),
    "deadc_infinite": ({"DEADC": np.inf}, r"DEADC = inf lies outside"),
}


@pytest.mark.parametrize("name", list(REFUSED_RUNS))
def test_impossible_run_values_are_refused_naming_run_and_file(name):
    changes, reason = REFUSED_RUNS[name]
    with pytest.raises(InvalidRunError) as info:
        check_run_values({**RUN, **changes}, obs_id=7, path=PATH)
    message = str(info.value)
    assert message.startswith(PREFIX) and "\n" not in message
    assert re.search(reason, message), message


ACCEPTED_RUNS = {
    "plausible": {},
    "livetime_equal_to_ontime_in_float32": {"LIVETIME": float(np.float32(1600.0 * (1 + 5e-7)))},
    "pole_in_float32": {"DEC_PNT": float(np.degrees(np.float32(np.pi / 2)))},
    "zenith_from_float32_altitude": {"ZEN_PNT": 90.0 - float(np.float32(90.0000005))},
    "horizon": {"ZEN_PNT": 90.0},
    "whole_second_times": {"ONTIME": 1600.9, "LIVETIME": 1500.0},
    "float32_times_at_1e8_s": {"ONTIME": 1608.9},
    "empty_run": {"TSTOP": T0, "ONTIME": 0.5, "LIVETIME": 0.4},
    "times_not_given": {"TSTART": np.nan, "TSTOP": np.nan, "ONTIME": 1e5, "LIVETIME": 9e4},
    "one_time_not_given": {"TSTOP": np.nan, "ONTIME": 1e5, "LIVETIME": 9e4},
    "deadc_not_given": {"DEADC": np.nan},
    "deadc_one": {"DEADC": 1.0},
}


@pytest.mark.parametrize("name", list(ACCEPTED_RUNS))
def test_possible_run_values_pass(name):
    check_run_values({**RUN, **ACCEPTED_RUNS[name]}, obs_id=7, path=PATH)


def test_run_values_without_the_optional_keys_pass():
    check_run_values({k: v for k, v in RUN.items() if k not in ("TSTART", "TSTOP", "DEADC")}, obs_id=7, path=PATH)
