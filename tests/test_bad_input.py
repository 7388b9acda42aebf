"""Bad input: a corpus of broken and unusual stores, mutated from a small simulated one.

Every broken case must raise a bkgxr error whose message names the run and its
file; the CLI must print one line, exit 1 and leave the output alone (absent,
or byte-identical when it existed). With ``skip_bad`` the bad run is left out,
listed in the summary and the RUNS table, and the good runs count exactly as
in a build of the good runs alone. Stores written by other tools (other
compression, FILE_DIR conventions, extra columns, GeV, minimal indexes) must
give the same cube as the pristine store.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import dask
import numpy as np
import pytest
from astropy.coordinates import angular_separation
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bkgxr import (
    Binning,
    BkgxrError,
    EmptySelectionError,
    InvalidRunError,
    Recipe,
    StoreError,
    build_cube,
    open_store,
    predict_models,
    write_models,
)
from bkgxr.cli import main
from bkgxr.simulate import simulate_store

#: The corpus: 3 runs of ~1,000 expected events at zenith 10-35 deg; run BAD is the one broken.
N_RUNS, EVENTS_PER_RUN, SEED, BAD = 3, 1_000, 6, 2
GOOD = [i for i in range(1, N_RUNS + 1) if i != BAD]
#: One zenith band holding every run, so no band is empty unless a case makes it so.
BINNING = Binning(zenith=[0, 45])
DATE = "2026-01-01"
#: The tutorial's recipe (band models, not smoothed) keeps the many CLI runs quick; the default
#: recipe (kernel, smoothed) meets bad input in test_skip_bad_with_the_default_recipe.
RECIPE = ["--zenith-model", "bands", "--no-smooth"]
#: The API user's recipe in the broken cases: the kernel, not smoothed.
API_RECIPE = Recipe(smoothing=None)
#: The off runs, as the API path selects them (the CLI's default takes every run).
CLI_ARGS = ["--runs", "off", "--zenith-edges", "0,45", "--date", DATE, "--quiet"]


# --------------------------------------------------------------------------- corpus helpers


def run_file(root: Path, obs_id: int = BAD) -> Path:
    return root / "data" / f"obs_{obs_id:06d}.fits.gz"


def load_fits(path: Path) -> fits.HDUList:
    """Read a (gzipped) FITS file wholly into memory."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    hdul = fits.open(io.BytesIO(raw), memmap=False)
    hdul.readall()
    return hdul


def save_fits(hdul: fits.HDUList, path: Path) -> None:
    buffer = io.BytesIO()
    hdul.writeto(buffer, checksum=False)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def edit_run(root: Path, edit: Callable[[fits.HDUList], fits.HDUList | None], obs_id: int = BAD) -> None:
    """Rewrite one run file through ``edit`` (which changes the HDUList in place or returns a new one)."""
    path = run_file(root, obs_id)
    hdul = load_fits(path)
    save_fits(edit(hdul) or hdul, path)


def edit_events(root: Path, edit: Callable[[Table], Table | None], obs_id: int = BAD) -> None:
    """Rewrite the EVENTS table of one run through ``edit`` (on an astropy Table; header kept in meta)."""

    def table_edit(hdul: fits.HDUList) -> None:
        table = Table.read(hdul["EVENTS"])
        table = edit(table) or table
        hdul["EVENTS"] = fits.table_to_hdu(table)

    edit_run(root, table_edit, obs_id)


def edit_header(root: Path, obs_id: int = BAD, **cards: object) -> None:
    """Set (value) or delete (None) keywords of one run's EVENTS header."""

    def header_edit(hdul: fits.HDUList) -> None:
        for key, value in cards.items():
            if value is None:
                del hdul["EVENTS"].header[key]
            else:
                hdul["EVENTS"].header[key] = value

    edit_run(root, header_edit, obs_id)


def set_tunit(name: str, unit: str) -> Callable[[fits.HDUList], None]:
    def edit(hdul: fits.HDUList) -> None:
        header = hdul["EVENTS"].header
        i = [header[f"TTYPE{k}"] for k in range(1, header["TFIELDS"] + 1)].index(name) + 1
        header[f"TUNIT{i}"] = unit

    return edit


def index_path(root: Path, kind: str) -> Path:
    return next(p for p in (root / f"{kind}-index.fits.gz", root / f"{kind}-index.fits") if p.exists())


def edit_index(root: Path, kind: str, edit: Callable[[Table], Table | None]) -> None:
    path = index_path(root, kind)
    table = Table.read(path)
    table = edit(table) or table
    table.write(path, overwrite=True)


def set_obs(obs_id: int, **values: object) -> Callable[[Table], None]:
    def edit(table: Table) -> None:
        row = int(np.flatnonzero(table["OBS_ID"] == obs_id)[0])
        for key, value in values.items():
            table[key][row] = value

    return edit


def drop_obs_columns(*names: str) -> Callable[[Table], None]:
    def edit(table: Table) -> None:
        table.remove_columns(list(names))

    return edit


MINIMAL_OBS = ["OBS_ID", "RA_PNT", "DEC_PNT", "TSTART", "TSTOP"]


def minimal_obs(table: Table) -> Table:
    return table[MINIMAL_OBS]


def set_event(column: str, value: float, rows: slice = slice(3, 6)) -> Callable[[Table], None]:
    def edit(table: Table) -> None:
        table[column][rows] = value

    return edit


def remove_hdu(name: str) -> Callable[[fits.HDUList], fits.HDUList]:
    return lambda hdul: fits.HDUList([h for h in hdul if h.name != name])


# --------------------------------------------------------------------------- broken cases


@dataclass(frozen=True)
class Bad:
    """A corpus case that cannot be built as it is."""

    mutate: Callable[[Path], None]
    error: type[BkgxrError]
    #: Where the error appears: open_store, Store.select, build_cube or computing the (lazy) cube.
    stage: str
    #: Regex the message must match after the prefix.
    reason: str
    #: Strings the message must hold: by default the run and its file.
    names: tuple[str, ...] = (f"run {BAD} (obs_{BAD:06d}.fits.gz)",)
    query: str | None = None
    zenith_edges: tuple[float, ...] = (0, 45)
    #: A warning that comes before the error.
    warns: str | None = None

    @property
    def skippable(self) -> bool:
        return self.error is InvalidRunError

    def warnings(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext() if self.warns is None else pytest.warns(UserWarning, match=self.warns)


#: Steps of a build, in order.
STAGES = ("open", "select", "build", "compute")


def _truncate(root: Path) -> None:
    path = run_file(root)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text_file(root: Path) -> None:
    run_file(root).write_text("OBS_ID,ENERGY,RA,DEC\n" + "2,1.0,83.6,22.0\n" * 400)


def _gzipped_text(root: Path) -> None:
    run_file(root).write_bytes(gzip.compress(("OBS_ID,ENERGY,RA,DEC\n" + "2,1.0,83.6,22.0\n" * 400).encode()))


def _events_as_image(hdul: fits.HDUList) -> None:
    hdul["EVENTS"] = fits.ImageHDU(np.zeros((3, 3), dtype=np.float32), name="EVENTS")


def _keyword_gone(name: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit_index(root, "obs", drop_obs_columns(name))
        edit_header(root, **{name: None})

    return mutate


def _header_livetime(value: object) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit_index(root, "obs", drop_obs_columns("LIVETIME"))
        edit_header(root, LIVETIME=value)

    return mutate


def _missing_file_row(root: Path) -> None:
    def edit(table: Table) -> None:
        rows = table["OBS_ID"] == BAD
        table["FILE_NAME"] = table["FILE_NAME"].astype("U32")
        table["FILE_NAME"][rows] = "obs_999999.fits.gz"

    edit_index(root, "hdu", edit)


def _no_zenith_source(root: Path) -> None:
    edit_index(root, "obs", minimal_obs)
    for obs_id in range(1, N_RUNS + 1):
        edit_header(root, obs_id, ALT_PNT=None, **({"GEOLON": None} if obs_id == BAD else {}))


def _duplicate_obs_row(root: Path) -> None:
    def edit(table: Table) -> Table:
        table.add_row(table[int(np.flatnonzero(table["OBS_ID"] == BAD)[0])])
        return table

    edit_index(root, "obs", edit)


def _duplicate_hdu_row(root: Path) -> None:
    def edit(table: Table) -> Table:
        table.add_row(table[int(np.flatnonzero(table["OBS_ID"] == BAD)[0])])
        return table

    edit_index(root, "hdu", edit)


def _swap_times(root: Path) -> None:
    def edit(table: Table) -> None:
        row = int(np.flatnonzero(table["OBS_ID"] == BAD)[0])
        table["TSTART"][row], table["TSTOP"][row] = table["TSTOP"][row], table["TSTART"][row]

    edit_index(root, "obs", edit)


def _ontime_twice_the_run(root: Path) -> None:
    def edit(table: Table) -> None:
        row = int(np.flatnonzero(table["OBS_ID"] == BAD)[0])
        table["ONTIME"][row] = 2 * (table["TSTOP"][row] - table["TSTART"][row])

    edit_index(root, "obs", edit)


def _header_read(**cards: object) -> Callable[[Path], None]:
    """The obs-index without LIVETIME, so every run's EVENTS header is read at selection; ``cards`` set in run BAD's."""

    def mutate(root: Path) -> None:
        edit_index(root, "obs", drop_obs_columns("LIVETIME"))
        edit_header(root, **cards)

    return mutate


def _header_times_only(**cards: object) -> Callable[[Path], None]:
    """The obs-index without ONTIME, LIVETIME, TSTART, TSTOP, DEADC: they come from the headers; ``cards`` set in run BAD's."""

    def mutate(root: Path) -> None:
        edit_index(root, "obs", drop_obs_columns("ONTIME", "LIVETIME", "TSTART", "TSTOP", "DEADC"))
        edit_header(root, **cards)

    return mutate


def _header_value(name: str, change: Callable[[float], float]) -> Callable[[Path], None]:
    """Like :func:`_header_read`, with keyword ``name`` of run BAD's header changed by ``change``."""

    def mutate(root: Path) -> None:
        value = float(fits.getheader(run_file(root), "EVENTS")[name])
        _header_read(**{name: change(value)})(root)

    return mutate


def _events_row_to(file_name: str) -> Callable[[Path], None]:
    """Point run BAD's events row of the hdu-index at ``file_name`` (FILE_DIR kept)."""

    def mutate(root: Path) -> None:
        def edit(table: Table) -> None:
            rows = (table["OBS_ID"] == BAD) & (np.char.strip(table["HDU_TYPE"].astype(str)) == "events")
            table["FILE_NAME"] = table["FILE_NAME"].astype("U64")
            table["FILE_NAME"][rows] = file_name

        edit_index(root, "hdu", edit)

    return mutate


def _symlink_to_run_1(root: Path) -> None:
    run_file(root).unlink()
    run_file(root).symlink_to(run_file(root, 1).name)


def _dir_of_bad_run(file_dir: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        def edit(table: Table) -> None:
            table["FILE_DIR"] = table["FILE_DIR"].astype("U64")
            table["FILE_DIR"][table["OBS_ID"] == BAD] = file_dir

        edit_index(root, "hdu", edit)

    return mutate


def _second_events_row_to_run_3(root: Path) -> None:
    def edit(table: Table) -> Table:
        table.add_row(table[int(np.flatnonzero((table["OBS_ID"] == BAD) & (table["HDU_TYPE"] == "events"))[0])])
        table["FILE_NAME"] = table["FILE_NAME"].astype("U32")
        table["FILE_NAME"][-1] = run_file(root, 3).name
        return table

    edit_index(root, "hdu", edit)


def _declare_rows(kind: str, rows: int) -> Callable[[Path], None]:
    """Rewrite the NAXIS2 card of an index table's header (its data left as it is)."""

    def mutate(root: Path) -> None:
        path = index_path(root, kind)
        data = bytearray(gzip.decompress(path.read_bytes()))
        card = data.index(b"NAXIS2  =", 2880)
        data[card : card + 80] = f"NAXIS2  = {rows:20d}".ljust(80).encode()
        path.write_bytes(gzip.compress(bytes(data)))

    return mutate


def _obs_id_as(dtype: str, masked: bool = False) -> Callable[[Table], None]:
    def edit(table: Table) -> None:
        values = np.asarray(table["OBS_ID"]).astype(dtype)
        table.replace_column("OBS_ID", MaskedColumn(values, mask=table["OBS_ID"] == BAD) if masked else values)

    return edit


def _shift_time(seconds: float, rows: slice = slice(3, 6)) -> Callable[[Table], None]:
    def edit(table: Table) -> None:
        table["TIME"][rows] = table["TIME"][rows] + seconds

    return edit


def _time_in_mjd(table: Table) -> None:
    """TIME written as MJD (days), the unit left as seconds."""
    table["TIME"] = (np.asarray(table["TIME"]) / 86400.0 + 51910.0) * u.s


def _header_tstart_shift(seconds: float) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit_header(root, TSTART=float(fits.getheader(run_file(root), "EVENTS")["TSTART"]) + seconds)

    return mutate


BAD_CASES: dict[str, Bad] = {
    # the file itself
    "truncated_gzip": Bad(_truncate, InvalidRunError, "compute", r"cannot read the file"),
    "not_fits_text": Bad(_text_file, InvalidRunError, "compute", r"cannot read the file: not a FITS file"),
    "not_fits_gzipped_text": Bad(_gzipped_text, InvalidRunError, "compute", r"cannot read the file: .*FITS"),
    "hdu_row_to_missing_file": Bad(_missing_file_row, InvalidRunError, "select", r"not found",
                                   names=(f"run {BAD} (obs_999999.fits.gz)",)),
    # HDUs and columns
    "no_events_hdu": Bad(lambda r: edit_run(r, remove_hdu("EVENTS")), InvalidRunError, "compute", r"no EVENTS HDU"),
    "no_gti_hdu": Bad(lambda r: edit_run(r, remove_hdu("GTI")), InvalidRunError, "compute", r"no GTI HDU"),
    "events_hdu_is_an_image": Bad(lambda r: edit_run(r, _events_as_image), InvalidRunError, "compute",
                                  r"cannot read the file: the EVENTS HDU is not a table but ImageHDU"),
    **{
        f"no_{name.lower()}_column": Bad(
            lambda r, name=name: edit_events(r, lambda t: t.remove_column(name)), InvalidRunError, "compute",
            rf"EVENTS lacks column {name}",
        )
        for name in ("ENERGY", "RA", "DEC")
    },
    # keywords and obs-index values
    **{
        f"no_{name.lower()}_keyword": Bad(
            _keyword_gone(name), InvalidRunError, "select", rf"neither the obs-index nor the EVENTS header gives {name}"
        )
        for name in ("LIVETIME", "ONTIME", "RA_PNT", "DEC_PNT")
    },
    "livetime_zero": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, LIVETIME=0.0)), InvalidRunError, "select",
                         r"LIVETIME is 0.0 s; it must be positive"),
    "livetime_negative": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, LIVETIME=-1500.0)), InvalidRunError,
                             "select", r"LIVETIME is -1500.0 s"),
    "livetime_negative_in_header": Bad(_header_livetime(-3.0), InvalidRunError, "select", r"LIVETIME is -3.0 s"),
    "livetime_not_a_number_in_header": Bad(_header_livetime("unknown"), InvalidRunError, "select",
                                           r"LIVETIME.*'unknown'.*not a number"),
    "ontime_zero": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, ONTIME=0.0)), InvalidRunError, "select",
                       r"ONTIME is 0.0 s; it must be positive"),
    "livetime_exceeds_ontime": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, ONTIME=1000.0)), InvalidRunError,
                                   "select", r"LIVETIME [0-9.]+ s exceeds ONTIME 1000.0 s"),
    "no_zenith_source": Bad(_no_zenith_source, InvalidRunError, "select", r"no ZEN_PNT or ALT_PNT, and no GEOLON"),
    # values
    "nan_energy": Bad(lambda r: edit_events(r, set_event("ENERGY", np.nan)), InvalidRunError, "compute",
                      r"EVENTS ENERGY has 3 non-finite value\(s\)"),
    "inf_energy": Bad(lambda r: edit_events(r, set_event("ENERGY", np.inf, slice(0, 1))), InvalidRunError, "compute",
                      r"EVENTS ENERGY has 1 non-finite"),
    "nan_ra": Bad(lambda r: edit_events(r, set_event("RA", np.nan)), InvalidRunError, "compute", r"EVENTS RA has 3 non-finite"),
    "inf_dec": Bad(lambda r: edit_events(r, set_event("DEC", -np.inf)), InvalidRunError, "compute", r"EVENTS DEC has 3 non-finite"),
    "dec_beyond_pole": Bad(lambda r: edit_events(r, set_event("DEC", 95.0)), InvalidRunError, "compute",
                           r"EVENTS DEC has 3 value\(s\) outside \[-90, 90\] deg"),
    # units
    "unknown_energy_unit": Bad(lambda r: edit_run(r, set_tunit("ENERGY", "blarg")), InvalidRunError, "compute",
                               r"EVENTS ENERGY: unknown unit 'blarg'"),
    "energy_unit_of_wrong_kind": Bad(lambda r: edit_run(r, set_tunit("ENERGY", "deg")), InvalidRunError, "compute",
                                     r"EVENTS ENERGY: unit 'deg' is not convertible to TeV"),
    "ra_unit_of_wrong_kind": Bad(lambda r: edit_run(r, set_tunit("RA", "TeV")), InvalidRunError, "compute",
                                 r"EVENTS RA: unit 'TeV' is not convertible to deg"),
    # impossible values in the obs-index (issue 14, item 10)
    "dec_pnt_beyond_a_pole": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, DEC_PNT=95.0)), InvalidRunError, "select",
                                 r"DEC_PNT = 95 deg lies beyond a pole"),
    "zen_pnt_below_the_horizon": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, ZEN_PNT=120.0, ALT_PNT=-30.0)),
                                     InvalidRunError, "select", r"ZEN_PNT = 120 deg lies outside \[0, 90\] deg"),
    "zen_pnt_negative": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, ZEN_PNT=-5.0, ALT_PNT=95.0)), InvalidRunError,
                            "select", r"ZEN_PNT = -5 deg lies outside \[0, 90\] deg"),
    "zen_pnt_from_alt_pnt_beyond_the_zenith": Bad(
        lambda r: edit_index(r, "obs", lambda t: set_obs(BAD, ALT_PNT=91.0)(t) or t[[c for c in t.colnames if c != "ZEN_PNT"]]),
        InvalidRunError, "select", r"ZEN_PNT = -1 deg lies outside"),
    "tstart_after_tstop": Bad(_swap_times, InvalidRunError, "select", r"TSTART [0-9.e+]+ s is after TSTOP"),
    "tstart_infinite": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, TSTART=np.inf)), InvalidRunError, "select",
                           r"TSTART is inf s; it must be finite"),
    "ontime_twice_tstop_minus_tstart": Bad(_ontime_twice_the_run, InvalidRunError, "select",
                                           r"ONTIME [0-9.]+ s exceeds TSTOP - TSTART = [0-9.]+ s"),
    "deadc_above_one": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, DEADC=1.5)), InvalidRunError, "select",
                           r"DEADC = 1.5 lies outside \(0, 1\]"),
    "deadc_zero": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, DEADC=0.0)), InvalidRunError, "select",
                      r"DEADC = 0 lies outside \(0, 1\]"),
    "deadc_negative": Bad(lambda r: edit_index(r, "obs", set_obs(BAD, DEADC=-0.9)), InvalidRunError, "select",
                          r"DEADC = -0.9 lies outside"),
    # impossible values in the EVENTS header, read at selection where the obs-index lacks a value
    "ontime_above_header_run_length": Bad(_header_times_only(ONTIME=5000.0, LIVETIME=4000.0), InvalidRunError, "select",
                                          r"ONTIME 5000.0 s exceeds TSTOP - TSTART"),
    "header_tstart_after_tstop": Bad(_header_times_only(TSTART=2e9), InvalidRunError, "select",
                                     r"TSTART 2000000000.0 s is after TSTOP"),
    "header_deadc_above_one": Bad(_header_times_only(DEADC=1.2), InvalidRunError, "select", r"DEADC = 1.2 lies outside"),
    "header_obs_id_of_another_run": Bad(_header_read(OBS_ID=7), InvalidRunError, "select",
                                        r"EVENTS keyword OBS_ID = 7 disagrees with the index's OBS_ID 2"),
    "header_tstart_an_hour_off": Bad(_header_value("TSTART", lambda t: t - 3600.0), InvalidRunError, "select",
                                     r"EVENTS keyword TSTART = [0-9.e+]+ s disagrees with the run table's"),
    # impossible events, found by the read task (issue 14, item 10)
    "negative_energy": Bad(lambda r: edit_events(r, set_event("ENERGY", -1.0)), InvalidRunError, "compute",
                           r"EVENTS ENERGY has 3 value\(s\) <= 0 TeV"),
    "zero_energy": Bad(lambda r: edit_events(r, set_event("ENERGY", 0.0, slice(0, 1))), InvalidRunError, "compute",
                       r"EVENTS ENERGY has 1 value\(s\) <= 0 TeV"),
    "events_of_another_run_by_obs_id": Bad(lambda r: edit_header(r, OBS_ID=3), InvalidRunError, "compute",
                                           r"EVENTS keyword OBS_ID = 3 disagrees with the index's OBS_ID 2"),
    "header_tstart_a_day_off": Bad(_header_tstart_shift(86400.0), InvalidRunError, "compute",
                                   r"EVENTS keyword TSTART = [0-9.]+ s disagrees with the run table's [0-9.]+ s"),
    "time_of_the_next_run": Bad(lambda r: edit_events(r, _shift_time(3600.0)), InvalidRunError, "compute",
                                r"EVENTS TIME has 3 value\(s\) outside the run's \[TSTART, TSTOP\] = \[[0-9.]+, [0-9.]+\] s"),
    "time_in_mjd_not_seconds": Bad(lambda r: edit_events(r, _time_in_mjd), InvalidRunError, "compute",
                                   r"EVENTS TIME has \d+ value\(s\) outside the run's"),
    # index rows pointing where they must not
    "two_runs_share_one_events_file": Bad(
        _events_row_to(run_file(Path("."), 1).name), InvalidRunError, "select",
        r"its EVENTS HDU is also that of run\(s\) \[1\] in the hdu-index; its OBS_ID keyword is 1",
        names=(f"run {BAD} (obs_000001.fits.gz)",)),
    "events_file_a_symlink_to_another_run": Bad(_symlink_to_run_1, InvalidRunError, "select",
                                                r"its EVENTS HDU is also that of run\(s\) \[1\]"),
    "events_file_the_same_through_dotdot": Bad(
        _events_row_to(f"../data/{run_file(Path('.'), 1).name}"), InvalidRunError, "select",
        r"also that of run\(s\) \[1\]", names=(f"run {BAD} (obs_000001.fits.gz)",)),
    "file_dir_escaping_the_store_to_nothing": Bad(_dir_of_bad_run("../../nowhere"), InvalidRunError, "select",
                                                  r"events file /\S+/nowhere/obs_000002.fits.gz not found"),
    "hdu_index_two_events_files_for_one_run": Bad(
        _second_events_row_to_run_3, StoreError, "select", r"hdu-index has several events rows for OBS_ID \[2\]",
        names=("hdu-index.fits.gz: hdu-index has several events rows", "[2]")),
    # hostile index files: one error naming the file, before anything is allocated
    "obs_index_declares_1e10_rows": Bad(_declare_rows("obs", 10**10), StoreError, "open",
                                        r"declares 1[0-9]{12} bytes \(10000000000 rows\), more than the 1073741824",
                                        names=("obs-index.fits.gz",)),
    "hdu_index_declares_1e10_rows": Bad(_declare_rows("hdu", 10**10), StoreError, "open", r"10000000000 rows",
                                        names=("hdu-index.fits.gz",)),
    "hdu_index_declares_more_rows_than_it_holds": Bad(_declare_rows("hdu", 1000), StoreError, "open",
                                                      r"\(1000 rows\), but the file ends before them",
                                                      names=("hdu-index.fits.gz",)),
    "obs_index_obs_id_as_float": Bad(lambda r: edit_index(r, "obs", _obs_id_as("f8")), StoreError, "open",
                                     r"OBS_ID column holds float64, not one integer per row",
                                     names=("obs-index.fits.gz",)),
    "hdu_index_obs_id_masked": Bad(lambda r: edit_index(r, "hdu", _obs_id_as("i8", masked=True)), StoreError, "open",
                                   r"OBS_ID column has 5 empty \(masked\) cell\(s\)", names=("hdu-index.fits.gz",)),
    # the store as a whole
    "duplicate_obs_id": Bad(_duplicate_obs_row, StoreError, "open", r"duplicate OBS_ID in the obs-index: \[2\]",
                            names=("obs-index.fits.gz", "[2]")),
    "duplicate_hdu_rows": Bad(_duplicate_hdu_row, StoreError, "select", r"hdu-index has several events rows for OBS_ID \[2\]",
                              names=("hdu-index.fits.gz: hdu-index has several events rows", "[2]")),
    "selection_matches_no_run": Bad(lambda r: None, EmptySelectionError, "select", r"no run of .* matches",
                                    names=("OBS_ID > 100",), query="OBS_ID > 100"),
    "every_run_outside_the_bands": Bad(lambda r: None, EmptySelectionError, "build", r"no usable run falls in any zenith band",
                                       names=("run 1 (obs_000001.fits.gz)", "run 3 (obs_000003.fits.gz)"),
                                       zenith_edges=(40, 90), warns="outside every zenith band"),
}
SKIPPABLE = [name for name, case in BAD_CASES.items() if case.skippable]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    """The pristine simulated store."""
    return simulate_store(
        tmp_path_factory.mktemp("corpus") / "base", n_runs=N_RUNS, events_per_run=EVENTS_PER_RUN, seed=SEED,
        zenith_range=(10.0, 35.0), date=DATE,
    )


@pytest.fixture(scope="module")
def reference(base):
    """Cubes of the pristine store: every run, and the good runs alone."""
    store = open_store(base.path)
    with dask.config.set(scheduler="synchronous"):
        return {
            "all": build_cube(store.select(), binning=BINNING).compute(),
            "good": build_cube(store.select(obs_ids=GOOD), binning=BINNING).compute(),
        }


@pytest.fixture(scope="module")
def cli_models(base, tmp_path_factory: pytest.TempPathFactory):
    """BKG of the band the CLI writes for the pristine store, every run and the good runs alone, by its default recipe."""
    models = {}
    for key, query in (("all", []), ("good", ["--query", f"OBS_ID != {BAD}"])):
        out = tmp_path_factory.mktemp("reference") / "bkg.fits"
        assert main(["build", str(base.path), "--out", str(out), *CLI_ARGS, *RECIPE, *query]) == 0
        models[key] = fits.getdata(out, "BKG_ZEN_0_45")["BKG"][0]
    return models


@pytest.fixture(scope="module")
def corpus(base, tmp_path_factory: pytest.TempPathFactory):
    """Return the store of a corpus case, made once per module: ``corpus(name, mutate)``."""
    made: dict[str, Path] = {}

    def make(name: str, mutate: Callable[[Path], Path | None]) -> Path:
        if name not in made:
            root = tmp_path_factory.mktemp("case") / name
            shutil.copytree(base.path, root)
            made[name] = mutate(root) or root  # a mutation may move the index files
        return made[name]

    return make


@pytest.fixture(autouse=True)
def _synchronous():
    """Tiny cubes: the synchronous scheduler is faster than threads and gives plain tracebacks."""
    with dask.config.set(scheduler="synchronous"):
        yield


def cli(
    capsys: pytest.CaptureFixture[str], root: Path, out: Path, *extra: str, recipe: list[str] = RECIPE
) -> tuple[int, str, str]:
    code = main(["build", str(root), "--out", str(out), *CLI_ARGS, *recipe, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def case_args(case: Bad) -> list[str]:
    args = [] if case.query is None else ["--query", case.query]
    return [*args, "--zenith-edges", ",".join(f"{e:g}" for e in case.zenith_edges)]


def attempt(root: Path, case: Bad, *, skip_bad: bool = False):
    """Open, select and build (eagerly) as the API user would; return the cube."""
    store = open_store(root)
    runs = store.select(case.query, skip_bad=skip_bad)
    cube = build_cube(runs, binning=Binning(zenith=list(case.zenith_edges)), skip_bad=skip_bad)
    return store, cube.compute()


# --------------------------------------------------------------------------- broken: API


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_api_raises_a_bkgxr_error_naming_run_and_file(name, corpus, tmp_path):
    case = BAD_CASES[name]
    root = corpus(name, case.mutate)
    done = []
    with case.warnings(), pytest.raises(case.error) as info:
        store = open_store(root)
        done.append("open")
        runs = store.select(case.query)
        done.append("select")
        cube = build_cube(runs, binning=Binning(zenith=list(case.zenith_edges)))
        done.append("build")  # lazy: reading errors appear only at compute time
        write_models(predict_models(cube, store, API_RECIPE), tmp_path / "bkg.fits", store=store, date=DATE)
    assert tuple(done) == STAGES[: STAGES.index(case.stage)]
    err = info.value
    assert isinstance(err, BkgxrError) and isinstance(err, ValueError)
    message = str(err)
    assert "\n" not in message
    for text in case.names:
        assert text in message, message
    assert re.search(case.reason, message), message
    if isinstance(err, InvalidRunError):
        assert err.obs_id == BAD and err.path is not None and err.path.name in message
        assert message.startswith(f"run {BAD} ({err.path.name}): ")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- broken: CLI


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_cli_prints_one_line_exits_1_and_leaves_the_output_alone(name, corpus, tmp_path, capsys):
    """Every other case starts with an output file from an earlier build, which must survive byte for byte."""
    case = BAD_CASES[name]
    existing = list(BAD_CASES).index(name) % 2 == 1
    root = corpus(name, case.mutate)
    out = tmp_path / "bkg.fits"
    before = b"SIMPLE  = T / a model from an earlier build".ljust(2880)
    if existing:
        out.write_bytes(before)
    with case.warnings():
        code, stdout, stderr = cli(capsys, root, out, *case_args(case))
    assert code == 1
    assert stdout == ""
    assert stderr.startswith("bkgxr: error: ") and stderr.count("\n") == 1, stderr
    for text in case.names:
        assert text in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bkg.fits"] if existing else [])
    if existing:
        assert out.read_bytes() == before


def test_cli_output_that_cannot_be_written_is_one_line_not_a_traceback(base, tmp_path, capsys):
    folder = tmp_path / "bkg.fits"
    (folder / "inside").mkdir(parents=True)
    code, stdout, stderr = cli(capsys, base.path, folder)
    assert code == 1 and stdout == ""
    assert stderr == f"bkgxr: error: {folder} is a folder; give the name of the output file\n"
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    code, _, stderr = cli(capsys, base.path, blocked / "bkg.fits")
    assert code == 1 and stderr.startswith("bkgxr: error: ") and str(blocked) in stderr and stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "bkg.fits"]
    assert [p.name for p in folder.iterdir()] == ["inside"] and blocked.read_text() == "not a folder"


# --------------------------------------------------------------------------- broken, skipped


def no_bkg_model_warning(case: Bad) -> contextlib.AbstractContextManager[object]:
    """A run the selection finds bad has no zenith: write_models gives it no bkg model, and says so."""
    if case.stage == "select":
        return pytest.warns(UserWarning, match=rf"no bkg model: \[{BAD}\]")
    return contextlib.nullcontext()


def assert_good_runs_count(cube, reference, reason: str) -> None:
    """The bad run is left out with its reason; counts, times and rates are those of the good runs alone."""
    error = dict(zip(cube["obs_id"].values.tolist(), cube["run_error"].values.tolist(), strict=True))
    used = dict(zip(cube["obs_id"].values.tolist(), cube["run_used"].values.tolist(), strict=True))
    assert not used[BAD] and re.search(reason, error[BAD]), error[BAD]
    assert all(used[i] and error[i] == "" for i in GOOD)
    good = reference["good"]
    np.testing.assert_array_equal(cube["counts"].values, good["counts"].values)
    for name in ("ontime", "livetime", "exposed_ontime", "rate"):
        np.testing.assert_allclose(cube[name].values, good[name].values, rtol=1e-6, err_msg=name)
    assert int(cube["n_runs"].sum()) == len(GOOD)
    assert np.isfinite(cube["rate"].values).all()


@pytest.mark.parametrize("name", SKIPPABLE)
def test_skip_bad_api_leaves_the_run_out_and_counts_the_good_runs(name, corpus, reference):
    case = BAD_CASES[name]
    root = corpus(name, case.mutate)
    _, cube = attempt(root, case, skip_bad=True)
    assert_good_runs_count(cube, reference, case.reason)


@pytest.mark.parametrize("name", SKIPPABLE)
def test_skip_bad_cli_lists_the_run_and_records_it_in_the_output(name, corpus, cli_models, tmp_path, capsys):
    case = BAD_CASES[name]
    root = corpus(name, case.mutate)
    out = tmp_path / "bkg.fits"
    with no_bkg_model_warning(case):
        code, stdout, stderr = cli(capsys, root, out, "--skip-bad")
    assert code == 0, stderr
    left_out = [line for line in stdout.splitlines() if line.startswith("left out:")]
    assert len(left_out) == 1 and left_out[0].startswith(f"left out: run {BAD}: ")
    assert re.search(case.reason, left_out[0])
    with fits.open(out) as hdul:
        runs = Table.read(hdul["RUNS"])
        assert hdul[0].header["NSKIPPED"] == 1 and hdul[0].header["NRUNS"] == len(GOOD)
        bkg = hdul["BKG_ZEN_0_45"].data["BKG"][0]
    row = runs[runs["OBS_ID"] == BAD][0]
    assert not row["USED"] and re.search(case.reason, row["ERROR"])
    assert all(runs["USED"][runs["OBS_ID"] != BAD])
    np.testing.assert_allclose(bkg, cli_models["good"], rtol=1e-6)


@pytest.mark.parametrize("name", ["livetime_zero", "truncated_gzip"])
def test_skip_bad_with_the_default_recipe(name, corpus, base, tmp_path, capsys):
    """Kernel and smoothing see the bad run too: every model equals that of the good runs alone."""
    case = BAD_CASES[name]
    root = corpus(name, case.mutate)
    with no_bkg_model_warning(case):
        code, stdout, stderr = cli(capsys, root, tmp_path / "skip.fits", "--skip-bad", recipe=[])
    assert code == 0, stderr
    assert any(line.startswith(f"left out: run {BAD}: ") for line in stdout.splitlines())
    code, _, stderr = cli(capsys, base.path, tmp_path / "good.fits", "--query", f"OBS_ID != {BAD}", recipe=[])
    assert code == 0, stderr
    with fits.open(tmp_path / "skip.fits") as skip, fits.open(tmp_path / "good.fits") as good:
        names = [h.name for h in skip if h.name.startswith("BKG_")]
        assert "BKG_ZEN_0_45" in names and len(names) > 1
        for hdu in names:
            bkg = skip[hdu].data["BKG"]
            assert np.isfinite(bkg).all()
            np.testing.assert_allclose(bkg, good[hdu].data["BKG"], rtol=1e-6, err_msg=hdu)


# --------------------------------------------------------------------------- stores written by other tools


def _all_runs(root: Path) -> list[Path]:
    return [run_file(root, obs_id) for obs_id in range(1, N_RUNS + 1)]


def _set_hdu_column(root: Path, name: str, values: Callable[[Table], list[object]]) -> None:
    def edit(table: Table) -> None:
        new = values(table)
        table.remove_column(name)
        table[name] = new

    edit_index(root, "hdu", edit)


def _gunzip_runs(root: Path) -> None:
    for path in _all_runs(root):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    _set_hdu_column(root, "FILE_NAME", lambda t: [str(n).removesuffix(".gz") for n in t["FILE_NAME"]])


def _gunzip_indexes(root: Path) -> None:
    for kind in ("hdu", "obs"):
        path = root / f"{kind}-index.fits.gz"
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()


def _runs_beside_index(root: Path, obs_ids: list[int]) -> None:
    for obs_id in obs_ids:
        run_file(root, obs_id).rename(root / run_file(root, obs_id).name)


def _file_dir_empty(root: Path) -> None:
    _runs_beside_index(root, list(range(1, N_RUNS + 1)))
    _set_hdu_column(root, "FILE_DIR", lambda t: [""] * len(t))


def _file_dir_masked(root: Path) -> None:
    """Runs 1 and 2 beside the index with FILE_DIR masked (as astropy writes a masked string: blank)."""
    _runs_beside_index(root, [1, 2])
    _set_hdu_column(
        root, "FILE_DIR",
        lambda t: MaskedColumn(["data"] * len(t), mask=np.isin(t["OBS_ID"], [1, 2]), dtype="U8"),
    )


def _file_dir_outside(root: Path) -> Path:
    """Index files in root/index, run files in root/data: FILE_DIR = '../data'."""
    (root / "index").mkdir()
    for kind in ("hdu", "obs"):
        (root / f"{kind}-index.fits.gz").rename(root / "index" / f"{kind}-index.fits.gz")
    _set_hdu_column(root / "index", "FILE_DIR", lambda t: ["../data"] * len(t))
    return root / "index"


def _file_dir_absolute(root: Path) -> None:
    _set_hdu_column(root, "FILE_DIR", lambda t: [str((root / "data").resolve())] * len(t))


def _extra_event_columns(root: Path) -> None:
    """Bit, logical, string, vector, scaled and variable-length columns before and after the ones read."""

    def edit(hdul: fits.HDUList) -> None:
        events = hdul["EVENTS"]
        n = len(events.data)
        rng = np.random.default_rng(1)
        front = [
            fits.Column("FLAGS", "3X", array=rng.integers(0, 2, (n, 3)).astype(bool)),
            fits.Column("TELMASK", "4L", array=rng.integers(0, 2, (n, 4)).astype(bool)),
            fits.Column("MULTIP", "I", array=rng.integers(2, 5, n).astype(np.int16)),
            fits.Column("TAG", "7A", array=np.array(["abc"] * n)),
        ]
        back = [
            fits.Column("ALT", "E", unit="deg", array=rng.uniform(30, 80, n).astype(np.float32)),
            fits.Column("SHAPE", "3D", array=rng.normal(size=(n, 3))),
            fits.Column("COUNTER", "J", bzero=2**31, array=np.arange(n, dtype=np.uint32)),
            fits.Column("IMAGES", "PE()", array=[np.arange(i % 4, dtype=np.float32) for i in range(n)]),
        ]
        hdul["EVENTS"] = fits.BinTableHDU.from_columns(front + list(events.columns) + back, header=events.header)

    for obs_id in range(1, N_RUNS + 1):
        edit_run(root, edit, obs_id)


def _energy_in_gev(root: Path) -> None:
    def edit(table: Table) -> None:
        table["ENERGY"] = (np.asarray(table["ENERGY"], dtype=np.float64) * 1e3).astype(np.float32) * u.GeV

    for obs_id in range(1, N_RUNS + 1):
        edit_events(root, edit, obs_id)


def _lowercase_column_names(root: Path) -> None:
    def edit(hdul: fits.HDUList) -> None:
        header = hdul["EVENTS"].header
        for i in range(1, header["TFIELDS"] + 1):
            header[f"TTYPE{i}"] = header[f"TTYPE{i}"].lower()

    for obs_id in range(1, N_RUNS + 1):
        edit_run(root, edit, obs_id)


def _gti_in_own_file(root: Path) -> None:
    for obs_id in range(1, N_RUNS + 1):
        hdul = load_fits(run_file(root, obs_id))
        save_fits(fits.HDUList([fits.PrimaryHDU(), hdul["GTI"]]), root / "data" / f"gti_{obs_id:06d}.fits.gz")
        save_fits(fits.HDUList([h for h in hdul if h.name != "GTI"]), run_file(root, obs_id))

    def edit(table: Table) -> None:
        names = table["FILE_NAME"].astype("U32")
        gti = np.char.strip(table["HDU_TYPE"].astype(str)) == "gti"
        names[gti] = [f"gti_{int(o):06d}.fits.gz" for o in table["OBS_ID"][gti]]
        table["FILE_NAME"] = names

    edit_index(root, "hdu", edit)


def _minimal_obs_index(root: Path) -> None:
    edit_index(root, "obs", minimal_obs)


def _minimal_obs_index_computed_zenith(root: Path) -> None:
    edit_index(root, "obs", minimal_obs)
    for obs_id in range(1, N_RUNS + 1):
        edit_header(root, obs_id, ALT_PNT=None)


@dataclass(frozen=True)
class Works:
    """A corpus case written differently from bkgxr's simulator that must give the pristine cube."""

    mutate: Callable[[Path], Path | None]
    #: The obs index keeps TARGET_NAME: the CLI selects the off runs by it.
    target_name: bool = True
    #: How far ZEN_PNT may stray from the obs index's (deg): from ALT_PNT in float32, or computed.
    zenith_atol: float = 0.0


WORKS: dict[str, Works] = {
    "uncompressed_run_files": Works(_gunzip_runs),
    "uncompressed_index_files": Works(_gunzip_indexes),
    "file_dir_empty": Works(_file_dir_empty),
    "file_dir_masked": Works(_file_dir_masked),
    "file_dir_outside_the_index_folder": Works(_file_dir_outside),
    "file_dir_absolute": Works(_file_dir_absolute),
    "hdu_index_without_hdu_class_and_name": Works(
        lambda r: edit_index(r, "hdu", lambda t: t[["OBS_ID", "HDU_TYPE", "FILE_DIR", "FILE_NAME"]])
    ),
    "obs_index_without_target_name": Works(lambda r: edit_index(r, "obs", drop_obs_columns("TARGET_NAME")), target_name=False),
    "extra_event_columns": Works(_extra_event_columns),
    "energy_in_gev": Works(_energy_in_gev),
    "lowercase_column_names": Works(_lowercase_column_names),
    "gti_in_its_own_file": Works(_gti_in_own_file),
    "minimal_obs_index": Works(_minimal_obs_index, target_name=False, zenith_atol=1e-5),
    # The simulator writes the mid-run zenith, mean_zenith the run mean: the zenith track's
    # curvature separates them (0.17 deg for the run at 11 deg, 0.02 deg at 24 deg).
    "minimal_obs_index_zenith_computed": Works(_minimal_obs_index_computed_zenith, target_name=False, zenith_atol=0.3),
}


@pytest.mark.parametrize("name", list(WORKS))
def test_stores_written_by_other_tools_give_the_same_models(name, corpus, reference, cli_models, base, tmp_path, capsys):
    case = WORKS[name]
    root = corpus(name, case.mutate)
    out = tmp_path / "bkg.fits"
    code, stdout, stderr = cli(capsys, root, out)
    assert code == 0, stderr
    assert stderr == ""
    selection = stdout.splitlines()[0]
    if case.target_name:
        assert selection == 'selection: TARGET_NAME == "Off data"'
    else:
        assert selection == "selection: every run (no query)"
    assert "left out" not in stdout
    full = reference["all"]
    with fits.open(out) as hdul:
        runs = Table.read(hdul["RUNS"])
        bkg = hdul["BKG_ZEN_0_45"].data["BKG"][0]
    assert runs["OBS_ID"].tolist() == full["obs_id"].values.tolist() and all(runs["USED"])
    np.testing.assert_array_equal(np.asarray(runs["COUNTS"]).transpose(0, 2, 1), full["run_counts"].values)
    for column in ("ONTIME", "LIVETIME"):
        np.testing.assert_allclose(runs[column], base.runs[column], rtol=1e-7, err_msg=column)
    np.testing.assert_allclose(runs["ZEN_PNT"], base.runs["ZEN_PNT"], rtol=0, atol=case.zenith_atol)
    np.testing.assert_allclose(bkg, cli_models["all"], rtol=1e-6)


# --------------------------------------------------------------------------- zenith bands


def _bad_zenith(root: Path) -> None:
    edit_index(root, "obs", set_obs(BAD, ZEN_PNT=50.0, ALT_PNT=40.0))


def test_a_run_outside_every_band_is_left_out_with_a_warning(corpus, reference, tmp_path, capsys):
    root = corpus("run_outside_every_band", _bad_zenith)
    with pytest.warns(UserWarning, match=rf"1 run\(s\) outside every zenith band \[0.0, 45.0\] deg are left out: \[{BAD}\]"):
        cube = build_cube(open_store(root).select(), binning=BINNING)
    assert_good_runs_count(cube.compute(), reference, "outside every zenith band")
    out = tmp_path / "bkg.fits"
    with pytest.warns(UserWarning, match="outside every zenith band"):
        code, stdout, stderr = cli(capsys, root, out)
    assert code == 0, stderr
    assert f"left out: run {BAD}: outside every zenith band" in stdout.splitlines()
    runs = Table.read(out, hdu="RUNS")
    assert runs["USED"].tolist() == [i != BAD for i in runs["OBS_ID"]]


def test_empty_and_all_zero_bands_are_written_as_zeros_with_a_warning(base, tmp_path, capsys):
    out = tmp_path / "bkg.fits"
    # band 45-60 has no run; with energies of 200-300 TeV no band has an event
    args = ["--zenith-edges", "0,45,60", "--energy-edges", "200,300"]
    for skip in ([], ["--skip-bad"]):
        with pytest.warns(UserWarning) as record:
            code, _, stderr = cli(capsys, base.path, out, *args, *skip)
        assert code == 0, stderr
        assert any("45-60" in str(w.message) for w in record)
        assert any("no event" in str(w.message) and "0-45" in str(w.message) for w in record), [str(w.message) for w in record]
        with fits.open(out) as hdul:
            for name in ("BKG_ZEN_0_45", "BKG_ZEN_45_60"):
                bkg = hdul[name].data["BKG"]
                assert np.isfinite(bkg).all() and not bkg.any()


# --------------------------------------------------------------------------- property: any values, never garbage

#: TUNIT variants and the factor to TeV / deg (astropy directly, not bkgxr.units); None: must be refused.
ENERGY_TUNITS = {"TeV": u.TeV, "GeV": u.GeV, "MeV": u.MeV, "": u.TeV, "erg": u.erg, "TEV": None, "deg": None, "blarg": None}
ANGLE_TUNITS = {"deg": u.deg, "": u.deg, "rad": u.rad, "arcmin": u.arcmin, "TeV": None, "dgr": None}
PNT = (83.6, -5.4)  # pointing RA, Dec (deg)
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, -1e30]


def _values(centre: float, spread: float, special: list[float]) -> st.SearchStrategy[float]:
    """A plausible value three times in four, else a special one."""
    plausible = st.floats(centre - spread, centre + spread)
    return st.one_of(plausible, plausible, plausible, st.sampled_from(special))


_clean = st.tuples(st.floats(0.06, 90.0), st.floats(PNT[0] - 4, PNT[0] + 4), st.floats(PNT[1] - 4, PNT[1] + 4))
#: Mostly plausible events, plus at most two where any value may be special.
_events = st.tuples(
    st.lists(_clean, max_size=25),
    st.lists(
        st.tuples(
            _values(3.0, 2.95, [*SPECIAL, 0.1, 100.0, 1e-30]),  # energy, TeV
            _values(PNT[0], 4.0, [*SPECIAL, 370.0, -200.0]),  # RA, deg
            _values(PNT[1], 4.0, [*SPECIAL, 90.0, -90.0, 95.0]),  # Dec, deg
        ),
        max_size=2,
    ),
).map(lambda parts: parts[0] + parts[1])
#: LIVETIME in the obs index (None: no column; NaN: read the header) and in the EVENTS header (None: absent).
_livetime = st.one_of(st.floats(1.0, 1e5), st.floats(1.0, 1e5), st.none(), st.sampled_from([0.0, -5.0, np.nan, np.inf]))
_header_livetime = st.one_of(st.floats(1.0, 1e5), st.none(), st.sampled_from([0.0, -5.0, "n/a"]))
#: ONTIME / LIVETIME, written as ONTIME in the EVENTS header (None: absent; 0.5: ONTIME below LIVETIME;
#: 0 and -1: ONTIME 0 and negative; "n/a": not a number).
_ontime_ratio = st.one_of(st.floats(1.0, 1.5), st.floats(1.0, 1.5), st.sampled_from([None, 0.5, 0.0, -1.0, "n/a"]))


def _livetime_of(obs_livetime, header_livetime) -> object:
    """The LIVETIME bkgxr must use: the obs index's unless absent or NaN, else the header's."""
    return obs_livetime if obs_livetime is not None and not np.isnan(obs_livetime) else header_livetime


def _header_ontime(obs_livetime, header_livetime, ontime_ratio) -> object:
    """The EVENTS header's ONTIME: ``ontime_ratio`` x the LIVETIME in use (x 1000 s when that is unusable)."""
    if not isinstance(ontime_ratio, float):
        return ontime_ratio
    livetime = _livetime_of(obs_livetime, header_livetime)
    usable = isinstance(livetime, float) and np.isfinite(livetime) and livetime > 0
    return ontime_ratio * (livetime if usable else 1000.0)


def _write_single_run_store(
    root: Path, events, tform, e_unit, a_unit, obs_livetime, header_livetime, header_ontime
) -> dict[str, np.ndarray]:
    """Write a one-run store; return the columns as stored (after the float32/64 cast)."""
    root.mkdir()
    stored: dict[str, np.ndarray] = {}
    values = np.array(events, dtype=np.float64).reshape(-1, 3)
    with np.errstate(all="ignore"):
        for i, (name, unit) in enumerate((("ENERGY", ENERGY_TUNITS[e_unit] or u.TeV), ("RA", ANGLE_TUNITS[a_unit] or u.deg),
                                          ("DEC", ANGLE_TUNITS[a_unit] or u.deg))):
            canonical = u.TeV if name == "ENERGY" else u.deg
            stored[name] = (values[:, i] * canonical.to(unit)).astype("f4" if tform == "E" else "f8")
    columns = [fits.Column("TIME", "D", unit="s", array=np.zeros(len(values)))]
    columns += [fits.Column(name, tform, unit=unit, array=stored[name])
                for name, unit in (("ENERGY", e_unit), ("RA", a_unit), ("DEC", a_unit))]
    header = fits.Header({"RA_PNT": PNT[0], "DEC_PNT": PNT[1], "ALT_PNT": 70.0})
    if header_livetime is not None:
        header["LIVETIME"] = header_livetime
    if header_ontime is not None:
        header["ONTIME"] = header_ontime
    events_hdu = fits.BinTableHDU.from_columns(columns, header=header, name="EVENTS")
    gti = fits.BinTableHDU.from_columns([fits.Column("START", "D", array=[0.0]), fits.Column("STOP", "D", array=[1.0])], name="GTI")
    fits.HDUList([fits.PrimaryHDU(), events_hdu, gti]).writeto(root / "run.fits")
    obs = Table({"OBS_ID": [1], "RA_PNT": [PNT[0]], "DEC_PNT": [PNT[1]], "ZEN_PNT": [20.0]})
    if obs_livetime is not None:
        obs["LIVETIME"] = [obs_livetime]
    obs.write(root / "obs-index.fits")
    Table({"OBS_ID": [1, 1], "HDU_TYPE": ["events", "gti"], "HDU_CLASS": ["events", "gti"], "FILE_DIR": [".", "."],
           "FILE_NAME": ["run.fits"] * 2, "HDU_NAME": ["EVENTS", "GTI"]}).write(root / "hdu-index.fits")
    return stored


def _expected(
    stored, e_unit, a_unit, obs_livetime, header_livetime, ontime
) -> tuple[np.ndarray, float, float] | None:
    """Counts (energy, offset) by plain numpy, the livetime and the ontime, or None where bkgxr must refuse the run."""
    livetime = _livetime_of(obs_livetime, header_livetime)
    if not isinstance(livetime, float) or not (np.isfinite(livetime) and livetime > 0):
        return None
    if not isinstance(ontime, float) or not (np.isfinite(ontime) and ontime > 0) or livetime > ontime * (1 + 1e-6):
        return None
    if ENERGY_TUNITS[e_unit] is None or ANGLE_TUNITS[a_unit] is None:
        return None
    energy = stored["ENERGY"].astype(np.float64) * ENERGY_TUNITS[e_unit].to(u.TeV)
    ra, dec = (stored[n].astype(np.float64) * ANGLE_TUNITS[a_unit].to(u.deg) for n in ("RA", "DEC"))
    if not (np.isfinite(energy).all() and np.isfinite(ra).all() and np.isfinite(dec).all()) or (np.abs(dec) > 90 + 1e-5).any():
        return None
    if (energy <= 0).any():  # no event has zero or negative energy (bkgxr.io.checks)
        return None
    # the offset by astropy's Vincenty formula, as bkgxr (checked against gammapy in test_geometry)
    offset = np.degrees(angular_separation(*np.radians([ra, dec, np.full_like(ra, PNT[0]), np.full_like(dec, PNT[1])])))
    counts = np.zeros(BINNING.shape[1:], dtype=np.int64)
    i = np.searchsorted(BINNING.energy, energy, side="right") - 1  # bins [lo, hi), as boost-histogram
    j = np.searchsorted(BINNING.offset, offset, side="right") - 1
    inside = (i >= 0) & (i < counts.shape[0]) & (j >= 0) & (j < counts.shape[1])
    np.add.at(counts, (i[inside], j[inside]), 1)
    return counts, float(livetime), float(ontime)


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=_events,
    tform=st.sampled_from(["E", "D"]),
    e_unit=st.sampled_from(["TeV", "TeV", *ENERGY_TUNITS]),
    a_unit=st.sampled_from(["deg", "deg", *ANGLE_TUNITS]),
    obs_livetime=_livetime,
    header_livetime=_header_livetime,
    ontime_ratio=_ontime_ratio,
)
def test_any_values_give_finite_models_equal_to_numpy_or_a_bkgxr_error(
    tmp_path_factory, events, tform, e_unit, a_unit, obs_livetime, header_livetime, ontime_ratio
):
    root = tmp_path_factory.mktemp("prop") / "store"
    ontime = _header_ontime(obs_livetime, header_livetime, ontime_ratio)
    stored = _write_single_run_store(root, events, tform, e_unit, a_unit, obs_livetime, header_livetime, ontime)
    expected = _expected(stored, e_unit, a_unit, obs_livetime, header_livetime, ontime)
    try:
        store = open_store(root)
        cube = build_cube(store.select(), binning=BINNING).compute()
    except BkgxrError as err:
        assert expected is None, f"refused a valid run: {err}"
        assert str(err).startswith("run 1 (run.fits): ")
        event(f"refused: {err.reason.split(':')[0].split(' has ')[0]}")
        return
    assert expected is not None, "accepted a run it must refuse"
    counts, livetime, ontime = expected
    np.testing.assert_array_equal(cube["counts"].isel(zenith=0).values, counts)
    np.testing.assert_allclose(cube["livetime"].values, [livetime], rtol=1e-6)
    np.testing.assert_allclose(cube["ontime"].values, [ontime], rtol=1e-6)
    # exposure per ONTIME: ontime x dE (MeV) x 2 pi (cos r1 - cos r2) (sr), by plain numpy
    d_energy = np.diff(BINNING.energy) * 1e6
    d_omega = 2 * np.pi * -np.diff(np.cos(np.radians(BINNING.offset)))
    np.testing.assert_allclose(cube["exposure"].isel(zenith=0).values, ontime * d_energy[:, None] * d_omega[None, :], rtol=1e-6)
    for name in ("rate", "rate_err", "exposure"):  # what write_models turns into BKG_2D
        assert np.isfinite(cube[name].values).all()
    assert (cube["rate"].values >= 0).all()
    event(f"built: {'some' if counts.any() else 'no'} events binned")


def test_skip_bad_with_every_run_unreadable_is_an_error_and_writes_nothing(base, tmp_path, capsys):
    """Issue 14, item 4: all runs skipped must not replace an existing output with all-zero models."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(base.path, root)
    for events in (root / "data").glob("*.fits.gz"):
        events.write_bytes(b"not a FITS file")
    out = tmp_path / "bkg.fits"
    out.write_bytes(b"previous models")
    code, _, stderr = cli(capsys, root, out, "--skip-bad")
    assert code == 1 and stderr.startswith("bkgxr: error:") and "no usable run" in stderr and stderr.count("\n") == 1
    assert out.read_bytes() == b"previous models"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
