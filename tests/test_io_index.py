"""Index tables of a model file: the store's rows round-trip, FILE_DIR re-based whatever its form, gammapy opens every HDU."""

import gzip
import io
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from gammapy.data import DataStore

import bkgxr
from bkgxr.cli import main
from bkgxr.exceptions import StoreError
from bkgxr.io import index as index_module
from bkgxr.io.index import (
    MAX_INDEX_BYTES,
    hdu_index_table,
    obs_index_table,
    read_index,
    rebase_dir,
)
from bkgxr.simulate import simulate_store

#: FILE_DIR forms of a store's hdu-index: each gives (folder of the run files relative to the store, FILE_DIR cell).
FORMS = {
    "masked": (".", np.ma.masked),
    "empty": (".", ""),
    "dot": (".", "."),
    "relative": ("data", "data"),
    "dotdot": ("data", "../x/../{store}/data"),
    "absolute": ("data", "{root}/data"),
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulate_store(tmp_path_factory.mktemp("sim") / "store", n_runs=3, events_per_run=200, seed=7, date="2026-01-01").path


def _store(simulated: Path, root: Path, form: str) -> Path:
    """Copy the simulated runs under ``root`` and write index tables whose FILE_DIR has the given form.

    The hdu-index also gets an MD5SUM column (one cell masked) and a masked SIZE;
    the obs-index a NaN, a masked integer and an empty string.
    """
    folder, cell = FORMS[form]
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root.parent / "x").mkdir(exist_ok=True)
    for path in (simulated / "data").iterdir():
        shutil.copy(path, root / folder / path.name)
    hdu = Table.read(simulated / "hdu-index.fits.gz")
    if cell is np.ma.masked:
        hdu["FILE_DIR"] = MaskedColumn(["data"] * len(hdu), mask=True)
    else:
        hdu["FILE_DIR"] = [cell.format(store=root.name, root=root.as_posix())] * len(hdu)
    hdu["MD5SUM"] = MaskedColumn([f"{i:032x}" for i in range(len(hdu))], mask=np.arange(len(hdu)) == 1)
    hdu["SIZE"] = MaskedColumn(hdu["SIZE"], mask=np.arange(len(hdu)) == 2)
    hdu.write(root / "hdu-index.fits.gz", overwrite=True)
    obs = Table.read(simulated / "obs-index.fits.gz")
    obs["DEADC"][0] = np.nan
    obs["N_TELS"] = MaskedColumn(obs["N_TELS"], mask=[False, True, False])
    obs["TARGET_TAG"][2] = ""
    obs.write(root / "obs-index.fits.gz", overwrite=True)
    return root


def _build(store: Path, out: Path) -> None:
    main(["build", str(store), "--out", str(out), "--quiet", "--zenith-model", "bands", "--no-smooth",
          "--date", "2026-01-01", "--zenith-edges", "0,90"])  # one band: no empty-band warning for 3 runs


def _same_cells(written: Table, given: Table, name: str) -> None:
    """Assert that a column's mask and unmasked values are the same in both tables."""
    mask = np.ma.getmaskarray(given[name])
    np.testing.assert_array_equal(np.ma.getmaskarray(written[name]), mask, err_msg=name)
    values = [np.asarray(t[name])[~mask] for t in (written, given)]
    if values[1].dtype.kind == "f":
        np.testing.assert_array_equal(values[0], values[1], err_msg=name)  # NaN equals NaN here
    else:
        assert values[0].tolist() == values[1].tolist(), name


@pytest.mark.parametrize("form", list(FORMS))
def test_gammapy_opens_events_and_bkg_of_every_observation(simulated, tmp_path, form):
    store = _store(simulated, tmp_path / "stores" / "here", form)
    out = tmp_path / "models" / "deeper" / "bkg.fits"
    _build(store, out)
    data = DataStore.from_file(out)
    given = bkgxr.open_store(store)
    runs = given.select()
    written_hdu = Table.read(out, hdu="HDU_INDEX")
    with fits.open(out) as hdul:
        models = {hdu.name: hdu.data["BKG"][0] for hdu in hdul if hdu.name.startswith("BKG_")}
    assert "--" not in [str(v).strip() for v in written_hdu["FILE_DIR"]]
    assert not np.ma.getmaskarray(written_hdu["FILE_DIR"]).any()
    for run in runs.itertuples():
        observation = data.obs(run.OBS_ID)
        with fits.open(run.EVENTS_PATH) as hdul:
            np.testing.assert_array_equal(observation.events.energy.to_value("TeV"), hdul["EVENTS"].data["ENERGY"])
        row = written_hdu[(written_hdu["OBS_ID"] == run.OBS_ID) & (written_hdu["HDU_TYPE"] == "bkg")]
        # FITS stores BKG with TDIM (n_energy, n_offset): numpy reads it as (offset, energy)
        expected = models[str(row["HDU_NAME"][0]).strip()].T
        np.testing.assert_array_equal(observation.bkg.quantity.to_value("MeV-1 s-1 sr-1"), expected)
    written_obs = Table.read(out, hdu="OBS_INDEX")
    for name in given.obs_table.colnames:
        _same_cells(written_obs, given.obs_table, name)


def test_index_cells_and_extra_columns_round_trip(simulated, tmp_path):
    store = _store(simulated, tmp_path / "stores" / "here", "masked")
    out = tmp_path / "elsewhere" / "bkg.fits"
    _build(store, out)
    given = Table.read(store / "hdu-index.fits.gz")
    written = Table.read(out, hdu="HDU_INDEX")
    assert np.ma.getmaskarray(given["FILE_DIR"]).all()
    kept = written[written["HDU_TYPE"] != "bkg"]
    assert len(kept) == len(given)
    for name in given.colnames:
        if name != "FILE_DIR":
            _same_cells(kept, given, name)
    assert set(kept["FILE_DIR"]) == {"../stores/here"}
    bkg = written[written["HDU_TYPE"] == "bkg"]
    assert sorted(bkg["OBS_ID"]) == sorted(given["OBS_ID"][given["HDU_TYPE"] == "events"])
    assert set(bkg["FILE_NAME"]) == {"bkg.fits"} and set(bkg["FILE_DIR"]) == {"."}
    assert np.ma.getmaskarray(bkg["SIZE"]).all() and np.ma.getmaskarray(bkg["MD5SUM"]).all()


@pytest.mark.parametrize(
    ("file_dir", "expected"),
    [("", "../store"), (".", "../store"), ("data", "../store/data"), ("../x/../store/data", "../store/data"),
     ("/elsewhere/data", "/elsewhere/data"), ("  data ", "../store/data")],
)
def test_rebase_dir_resolves_against_the_store_and_relates_to_the_output(file_dir, expected):
    root, out_dir = Path("/a/b/store"), Path("/a/b/models")
    assert rebase_dir(file_dir, root, out_dir) == expected
    resolved = os.path.normpath(os.path.join(out_dir, expected))
    assert resolved == os.path.normpath(os.path.join(root, file_dir.strip()))


def test_bkg_rows_name_their_class_and_skip_observations_without_model(simulated, tmp_path):
    sim_store = bkgxr.open_store(simulated)
    ids = sim_store.obs_table["OBS_ID"][:3]
    table = hdu_index_table(sim_store, tmp_path / "m.fits", ids, ["BKG_A", "", "BKG_C"], hdu_class="bkg_3d")
    bkg = table[table["HDU_TYPE"] == "bkg"]
    assert bkg["OBS_ID"].tolist() == [ids[0], ids[2]]
    assert bkg["HDU_CLASS"].tolist() == ["bkg_3d"] * 2 and bkg["HDU_NAME"].tolist() == ["BKG_A", "BKG_C"]
    with pytest.raises(ValueError, match="3 obs_ids for 2 hdu_names"):
        hdu_index_table(sim_store, tmp_path / "m.fits", ids, ["BKG_A", ""])


def test_obs_index_keeps_every_column_and_adds_the_given_ones(simulated, tmp_path):
    sim_store = bkgxr.open_store(_store(simulated, tmp_path / "store", "relative"))
    n = len(sim_store.obs_table)
    table = obs_index_table(sim_store, {"BKG_HDU": [f"B{i}" for i in range(n)]})
    assert table.colnames == [*sim_store.obs_table.colnames, "BKG_HDU"]
    for name in sim_store.obs_table.colnames:
        _same_cells(table, sim_store.obs_table, name)
    assert table.meta["EXTNAME"] == "OBS_INDEX"
    with pytest.raises(ValueError, match="BKG_HDU has 1 values"):
        obs_index_table(sim_store, {"BKG_HDU": ["x"]})


# --------------------------------------------------------------------------- reading: hostile index files


def _hostile(source: Path, out: Path, *, rows: int | None = None, gz: bool = True, edit=None) -> Path:
    """Copy an index file (as plain or gzipped FITS), its NAXIS2 card set to ``rows``, its table through ``edit``."""
    table = Table.read(source)
    if edit is not None:
        table = edit(table)
    buffer = io.BytesIO()
    table.write(buffer, format="fits")
    data = bytearray(buffer.getvalue())
    if rows is not None:
        card = data.index(b"NAXIS2  =", 2880)
        data[card : card + 80] = f"NAXIS2  = {rows:20d}".ljust(80).encode()
    out.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    return out


def test_read_index_gives_the_table_as_astropy_reads_it(hess_dir):
    for kind in ("hdu", "obs"):
        path = hess_dir / f"{kind}-index.fits.gz"
        read, given = read_index(path, kind), Table.read(path)
        assert read.colnames == given.colnames and len(read) == len(given) and read.meta == given.meta
        for name in given.colnames:
            _same_cells(read, given, name)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("kind", ["hdu", "obs"])
def test_an_index_declaring_1e10_rows_is_refused_before_allocating(simulated, tmp_path, kind, gz):
    path = _hostile(simulated / f"{kind}-index.fits.gz", tmp_path / f"{kind}-index.fits", rows=10**10, gz=gz)
    row_bytes = fits.getheader(simulated / f"{kind}-index.fits.gz", 1)["NAXIS1"]
    tracemalloc.start()
    try:
        with pytest.raises(StoreError) as info:
            read_index(path, kind)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"{path}: the index table declares {row_bytes * 10**10} bytes (10000000000 rows), "
        f"more than the {MAX_INDEX_BYTES} an index may hold: not read"
    )
    assert peak < 2**20  # headers only: under a MiB


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_an_index_declaring_more_rows_than_it_holds_is_refused(simulated, tmp_path, gz):
    path = _hostile(simulated / "obs-index.fits.gz", tmp_path / "obs-index.fits", rows=1000, gz=gz)
    row_bytes = fits.getheader(simulated / "obs-index.fits.gz", 1)["NAXIS1"]
    with pytest.raises(StoreError, match=rf"declares {row_bytes * 1000} bytes \(1000 rows\), but the file ends before them"):
        read_index(path, "obs")


def test_a_real_index_larger_than_the_limit_is_refused(hess_dir, monkeypatch):
    """A gzip bomb holds every row it declares: the limit, not the file's length, refuses it."""
    header = fits.getheader(hess_dir / "hdu-index.fits.gz", 1)
    declared = header["NAXIS1"] * header["NAXIS2"]
    monkeypatch.setattr(index_module, "MAX_INDEX_BYTES", declared - 1)
    with pytest.raises(StoreError, match=rf"declares {declared} bytes \(630 rows\), more than the {declared - 1}"):
        read_index(hess_dir / "hdu-index.fits.gz", "hdu")
    monkeypatch.setattr(index_module, "MAX_INDEX_BYTES", declared)
    assert len(read_index(hess_dir / "hdu-index.fits.gz", "hdu")) == 630


def _obs_id(values: object) -> object:
    def edit(table: Table) -> Table:
        table.replace_column("OBS_ID", values(table) if callable(values) else values)
        return table

    return edit


#: name -> (kind, _hostile keywords, message after the path).
REFUSED_INDEXES = {
    "negative_rows": ("obs", {"rows": -3}, r"the index table declares a negative size \(NAXISn, PCOUNT, GCOUNT = \[\d+, -3, 0, 1\]\)"),
    "obs_id_text": ("obs", {"edit": _obs_id(lambda t: [str(i) for i in t["OBS_ID"]])},
                    r"the OBS_ID column holds bytes\d+, not one integer per row"),
    "obs_id_float": ("hdu", {"edit": _obs_id(lambda t: np.asarray(t["OBS_ID"], dtype=float))},
                     r"the OBS_ID column holds float64, not one integer per row"),
    "obs_id_vector": ("obs", {"edit": _obs_id(lambda t: np.stack([t["OBS_ID"]] * 2, axis=1))},
                      r"the OBS_ID column holds int64\[2\], not one integer per row"),
    "obs_id_masked": ("obs", {"edit": _obs_id(lambda t: MaskedColumn(t["OBS_ID"], mask=np.arange(len(t)) < 2))},
                      r"the OBS_ID column has 2 empty \(masked\) cell\(s\)"),
    "no_hdu_type": ("hdu", {"edit": lambda t: t[["OBS_ID", "FILE_NAME"]]}, r"hdu-index lacks column\(s\) HDU_TYPE"),
}


@pytest.mark.parametrize("name", list(REFUSED_INDEXES))
def test_hostile_index_tables_are_one_store_error_naming_the_file(simulated, tmp_path, name):
    kind, kwargs, reason = REFUSED_INDEXES[name]
    path = _hostile(simulated / f"{kind}-index.fits.gz", tmp_path / f"{kind}-index.fits.gz", **kwargs)
    with pytest.raises(StoreError) as info:
        read_index(path, kind)
    assert re.fullmatch(re.escape(f"{path}: ") + reason, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "the file ends inside a FITS header"), (b"OBS_ID\n1\n", "Header size is not multiple of 2880: 9"),
     (gzip.compress(b"SIMPLE  =                    T" + b" " * 50)[:20], "Compressed file ended before the end-of-stream marker")],
    ids=["empty", "text", "truncated_gzip"],
)
def test_unreadable_index_files_are_one_store_error(tmp_path, content, reason):
    path = tmp_path / "obs-index.fits.gz"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: cannot read index table: {reason}"):
        read_index(path, "obs")


def test_rows_in_several_folders_each_keep_their_own(simulated, tmp_path):
    """FILE_DIR is re-based once per distinct folder: every row must still name its own folder."""
    store = _store(simulated, tmp_path / "stores" / "here", "relative")
    hdu = Table.read(store / "hdu-index.fits.gz")
    moved = hdu["OBS_ID"] == hdu["OBS_ID"][0]
    (store / "more").mkdir()
    for name in set(hdu["FILE_NAME"][moved]):
        shutil.move(store / "data" / name, store / "more" / name)
    hdu["FILE_DIR"] = np.where(moved, "more", "data")
    hdu.write(store / "hdu-index.fits.gz", overwrite=True)
    out = tmp_path / "models" / "bkg.fits"
    _build(store, out)
    written = Table.read(out, hdu="HDU_INDEX")
    kept = written[written["HDU_TYPE"] != "bkg"]
    expected = {(o, t): f"../stores/here/{'more' if m else 'data'}" for o, t, m in zip(hdu["OBS_ID"], hdu["HDU_TYPE"], moved)}
    assert {(o, t): d for o, t, d in zip(kept["OBS_ID"], kept["HDU_TYPE"], kept["FILE_DIR"])} == expected
    data = DataStore.from_file(out)
    for obs_id in set(hdu["OBS_ID"]):
        assert len(data.obs(obs_id).events.table) > 0
