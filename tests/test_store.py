import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr.exceptions import EmptySelectionError, InvalidRunError, StoreError


def _variant(hess_dir: Path, root: Path, *, obs_columns=None, file_dir=None, gzip=True, obs_ids=None):
    """Write index tables in ``root`` that point to (a subset of) the H.E.S.S. runs."""
    root.mkdir(parents=True, exist_ok=True)
    hdu = Table.read(hess_dir / "hdu-index.fits.gz")
    obs = Table.read(hess_dir / "obs-index.fits.gz")
    if obs_ids is not None:
        hdu = hdu[np.isin(hdu["OBS_ID"], obs_ids)]
        obs = obs[np.isin(obs["OBS_ID"], obs_ids)]
    hdu["FILE_DIR"] = (
        [os.path.relpath(hess_dir / "data", root)] * len(hdu) if file_dir is None else [file_dir] * len(hdu)
    )
    if obs_columns is not None:
        obs = obs[obs_columns]
    suffix = ".fits.gz" if gzip else ".fits"
    hdu.write(root / f"hdu-index{suffix}")
    obs.write(root / f"obs-index{suffix}")
    return root


def test_hess_store_has_105_observations_and_45_off_runs(hess_store):
    assert len(hess_store.obs_table) == 105
    runs = hess_store.select(bkgxr.OFF_QUERY)
    assert len(runs) == 45
    assert runs["OBS_ID"].is_monotonic_increasing
    assert all(Path(p).is_file() for p in runs["EVENTS_PATH"])


def test_selection_by_ids_and_zenith(hess_store):
    runs = hess_store.select(bkgxr.OFF_QUERY, zenith=(20, 40))
    assert len(runs) == 25 and runs["ZEN_PNT"].between(20, 40).all()
    some = hess_store.select(obs_ids=[23523, 20136, 999999])
    assert some["OBS_ID"].tolist() == [20136, 23523]
    assert len(hess_store.select("ZEN_PNT < 30 and LIVETIME > 1000")) > 0


def test_empty_selection_and_bad_query(hess_store):
    with pytest.raises(EmptySelectionError, match="no run"):
        hess_store.select('TARGET_NAME == "nothing"')
    with pytest.raises(ValueError, match="NOT_A_COLUMN"):
        hess_store.select("NOT_A_COLUMN > 1")


def test_uncompressed_indexes_with_dotdot_file_dir(hess_dir, tmp_path):
    root = _variant(hess_dir, tmp_path / "a" / "b", gzip=False, obs_ids=[20136, 20137])
    assert (root / "hdu-index.fits").is_file()
    runs = bkgxr.open_store(root).select()
    assert runs["OBS_ID"].tolist() == [20136, 20137]
    assert all(Path(p).is_file() for p in runs["EVENTS_PATH"])


def test_empty_file_dir_and_uncompressed_run_files(hess_dir, tmp_path):
    import gzip

    for obs_id in (20136, 20137):
        name = f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"
        with gzip.open(hess_dir / "data" / name) as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)  # gzip-named but plain: astropy detects by content
    _variant(hess_dir, tmp_path, file_dir="", obs_ids=[20136, 20137])
    runs = bkgxr.open_store(tmp_path).select()
    cube = bkgxr.build_cube(runs, binning=bkgxr.Binning(zenith=[0, 90])).compute()
    reference = bkgxr.build_cube(
        bkgxr.open_store(hess_dir).select(obs_ids=[20136, 20137]), binning=bkgxr.Binning(zenith=[0, 90])
    ).compute()
    np.testing.assert_array_equal(cube["counts"].values, reference["counts"].values)


def test_minimal_obs_index_is_completed_from_event_headers(hess_dir, tmp_path):
    ids = [20136, 23523, 33787]
    root = _variant(hess_dir, tmp_path, obs_columns=["OBS_ID", "TSTART", "TSTOP"], obs_ids=ids)
    runs = bkgxr.open_store(root).select()
    full = bkgxr.open_store(hess_dir).select(obs_ids=ids)
    np.testing.assert_allclose(runs["LIVETIME"], full["LIVETIME"], rtol=1e-6)
    np.testing.assert_allclose(runs["RA_PNT"], full["RA_PNT"], rtol=1e-6)
    np.testing.assert_allclose(runs["ZEN_PNT"], full["ZEN_PNT"], atol=1e-3)


def test_duplicate_obs_id_is_a_store_error(hess_dir, tmp_path):
    obs = Table.read(hess_dir / "obs-index.fits.gz")
    obs.add_row(obs[0])
    obs.write(tmp_path / "obs-index.fits.gz")
    shutil.copy(hess_dir / "hdu-index.fits.gz", tmp_path / "hdu-index.fits.gz")
    with pytest.raises(StoreError, match="duplicate OBS_ID.*20136"):
        bkgxr.open_store(tmp_path)


def test_missing_index_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="hdu-index"):
        bkgxr.open_store(tmp_path)


def test_an_unset_gammapy_data_gets_a_hint(monkeypatch):
    monkeypatch.delenv("GAMMAPY_DATA", raising=False)
    with pytest.raises(bkgxr.StoreError, match="GAMMAPY_DATA is not set"):
        bkgxr.open_store("/hess-dl3-dr1")


def _sharing_store(root: Path) -> Path:
    """Three simulated runs; run 2's events row points at run 1's file, whose header has no OBS_ID."""
    from bkgxr.simulate import simulate_store

    path = simulate_store(root, n_runs=3, events_per_run=300, seed=3, zenith_range=(10.0, 35.0), date="2026-01-01").path
    run_1 = path / "data" / "obs_000001.fits.gz"
    with fits.open(run_1) as hdul:
        del hdul["EVENTS"].header["OBS_ID"]
        hdul.writeto(run_1, overwrite=True)
    hdu = Table.read(path / "hdu-index.fits.gz")
    hdu["FILE_NAME"] = hdu["FILE_NAME"].astype("U32")
    hdu["FILE_NAME"][(hdu["OBS_ID"] == 2) & (hdu["HDU_TYPE"] == "events")] = run_1.name
    hdu.write(path / "hdu-index.fits.gz", overwrite=True)
    return path


def test_runs_sharing_an_events_file_without_obs_id_keyword_are_all_refused(tmp_path, capsys):
    """Without the keyword no run can claim the file: both are refused, through the API and the CLI."""
    from bkgxr.cli import main

    root = _sharing_store(tmp_path / "store")
    store = bkgxr.open_store(root)
    with pytest.raises(InvalidRunError, match=r"^run 1 \(obs_000001.fits.gz\): its EVENTS HDU is also that of run\(s\) \[2\]"):
        store.select()
    runs = store.select(skip_bad=True)
    errors = dict(zip(runs["OBS_ID"], runs["ERROR"], strict=True))
    assert errors == {1: "its EVENTS HDU is also that of run(s) [2] in the hdu-index",
                      2: "its EVENTS HDU is also that of run(s) [1] in the hdu-index", 3: ""}
    assert runs.loc[runs["ERROR"] != "", ["LIVETIME", "ONTIME", "TSTART", "TSTOP", "DEADC"]].isna().all(axis=None)
    args = ["build", str(root), "--zenith-edges", "0,45", "--date", "2026-01-01", "--quiet", "--zenith-model", "bands", "--no-smooth"]
    assert main([*args, "--out", str(tmp_path / "refused.fits")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error: run 1 (obs_000001.fits.gz): its EVENTS HDU") and err.count("\n") == 1
    assert not (tmp_path / "refused.fits").exists()
    with pytest.warns(UserWarning, match=r"no bkg model: \[1, 2\]"):
        assert main([*args, "--skip-bad", "--out", str(tmp_path / "skip.fits")]) == 0
    left_out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("left out:")]
    assert left_out == [f"left out: run {i}: {errors[i]}" for i in (1, 2)]
    used = Table.read(tmp_path / "skip.fits", hdu="RUNS")
    assert dict(zip(used["OBS_ID"].tolist(), used["USED"].tolist(), strict=True)) == {1: False, 2: False, 3: True}
