"""Index tables of a model file: the store's rows round-trip, FILE_DIR re-based whatever its form, gammapy opens every HDU."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table
from gammapy.data import DataStore

import bkgxr
from bkgxr.cli import main
from bkgxr.io.index import hdu_index_table, obs_index_table, rebase_dir
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
