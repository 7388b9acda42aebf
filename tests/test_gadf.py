import numpy as np
import pytest
from astropy.io import fits
from gammapy.data import DataStore

import bkgxr
from bkgxr.io.gadf import create_bkg_2d_hdu, write_atomic
from bkgxr.axes import assign_bands


@pytest.fixture(scope="module")
def written(hess_store, hess_cube, tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "nested" / "bkg.fits"
    return bkgxr.write_models(hess_cube, path, store=hess_store, zenith_model="bands", date="2026-01-01")


def test_gammapy_loads_every_observation_with_its_band_model(written, hess_store, hess_cube):
    store = DataStore.from_file(written)
    assert len(store.obs_ids) == 105
    zenith = dict(zip(hess_store.obs_table["OBS_ID"], hess_store.obs_table["ZEN_PNT"]))
    n_events = dict(zip(hess_store.obs_table["OBS_ID"], hess_store.obs_table["EVENT_COUNT"]))
    for obs in store.get_observations():
        band = int(np.searchsorted([0, 20, 40, 90], zenith[obs.obs_id], side="right") - 1)
        expected = hess_cube["rate"].isel(zenith=band).transpose("energy", "offset").values
        np.testing.assert_array_equal(obs.bkg.data, expected)
        assert obs.bkg.unit == "MeV-1 s-1 sr-1"
        np.testing.assert_allclose(obs.bkg.axes["energy"].edges.to_value("TeV"), np.geomspace(0.1, 100, 20))
        assert len(obs.events.table) == n_events[obs.obs_id]
        assert obs.gti is not None and obs.aeff is not None


def test_obs_index_states_the_assignment(written):
    obs = fits.getdata(written, "OBS_INDEX")
    labels = np.array(["0-20", "20-40", "40-90"])
    expected = labels[np.searchsorted([20, 40], obs["ZEN_PNT"], side="right")]
    np.testing.assert_array_equal(obs["BKG_ZEN_BAND"], expected)
    assert set(obs["BKG_ZEN_BAND"]) == set(labels)
    assert fits.getheader(written, 0)["ZENRULE"] == "nearest"
    runs = fits.getdata(written, "RUNS")
    assert len(runs) == 45


def test_writing_twice_gives_identical_bytes(written, hess_store, hess_cube, tmp_path):
    again = bkgxr.write_models(hess_cube, tmp_path / "nested" / "bkg.fits", store=hess_store, zenith_model="bands", date="2026-01-01")
    assert again.read_bytes() == written.read_bytes()


def test_rebuilding_gives_identical_file(hess_store, hess_runs, written, tmp_path):
    cube = bkgxr.build_cube(hess_runs).compute()
    again = bkgxr.write_models(cube, tmp_path / "nested" / "bkg.fits", store=hess_store, zenith_model="bands", date="2026-01-01")
    assert again.read_bytes() == written.read_bytes()


def test_outside_none_gives_no_model_with_a_warning(hess_store, hess_runs, tmp_path):
    with pytest.warns(UserWarning, match="outside every zenith band"):
        cube = bkgxr.build_cube(hess_runs, binning=bkgxr.Binning(zenith=[0, 40])).compute()
        path = bkgxr.write_models(cube, tmp_path / "bkg.fits", store=hess_store, zenith_model="bands", outside="none")
    store = DataStore.from_file(path)
    high = hess_store.obs_table["OBS_ID"][hess_store.obs_table["ZEN_PNT"] >= 40]
    assert len(high) > 0
    bkg_ids = store.hdu_table["OBS_ID"][store.hdu_table["HDU_TYPE"] == "bkg"]
    assert not set(high) & set(bkg_ids)
    assert len(bkg_ids) == 105 - len(high)


def test_assign_bands_nearest_and_none():
    edges = [10, 20, 40]
    np.testing.assert_array_equal(assign_bands([5, 15, 25, 50, np.nan], edges), [0, 0, 1, 1, -1])
    np.testing.assert_array_equal(assign_bands([5, 15, 50], edges, outside="none"), [-1, 0, -1])
    with pytest.raises(ValueError, match="outside"):
        assign_bands([5], edges, outside="closest")


def test_bkg_hdu_refuses_non_finite_rate():
    rate = np.ones((2, 3))
    rate[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        create_bkg_2d_hdu(rate, [1, 2, 3], [0, 1, 2, 3], extname="BKG")


def test_failed_write_leaves_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "out.fits"
    path.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(fits.HDUList([fits.PrimaryHDU()]), path)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


def test_no_overwrite(tmp_path):
    path = tmp_path / "out.fits"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_atomic(fits.HDUList([fits.PrimaryHDU()]), path, overwrite=False)


def test_kernel_models_give_every_observation_its_own_bkg(hess_store, hess_cube, tmp_path):
    from bkgxr.zenith import predict_rates

    path = bkgxr.write_models(hess_cube, tmp_path / "kernel.fits", store=hess_store, date="2026-01-01")
    assert fits.getheader(path, 0)["ZENMODEL"] == "kernel" and fits.getheader(path, 0)["KTSIGMA"] == 1.0
    store = DataStore.from_file(path)
    obs = hess_store.select()
    expected, n_eff = predict_rates(hess_cube, obs["ZEN_PNT"], time=obs["TSTART"], time_sigma=1.0)
    for i, observation in enumerate(store.get_observations(obs["OBS_ID"].tolist()[::7])):
        k = i * 7
        np.testing.assert_allclose(observation.bkg.data, expected[k], rtol=1e-12, atol=0)
        header = fits.getheader(path, f"BKG_OBS_{observation.obs_id}")
        assert header["N_EFF"] == pytest.approx(n_eff[k], rel=1e-5)
    assert len(store.hdu_table[store.hdu_table["HDU_TYPE"] == "bkg"]) == 105


def test_smoothed_models_are_stated_and_read_back(hess_store, hess_cube, tmp_path):
    from bkgxr.io.load import load_models
    from bkgxr.smooth import smooth_cube

    path = bkgxr.write_models(
        hess_cube, tmp_path / "s.fits", store=hess_store, zenith_model="bands", smooth={"min_counts": 80}, date="2026-01-01"
    )
    header = fits.getheader(path, 0)
    assert header["SMOOTH"] and header["SMMINCNT"] == 80 and header["SMDEGREE"] == 3
    expected = smooth_cube(hess_cube, min_counts=80)["rate"]
    np.testing.assert_array_equal(fits.getdata(path, "BKG_ZEN_0_20")["BKG"][0].T, expected.isel(zenith=0).values)
    loaded = load_models(path)
    np.testing.assert_allclose(loaded["rate"].values, expected.values, rtol=1e-12)
    assert not np.array_equal(expected.values, hess_cube["rate"].values)
    np.testing.assert_array_equal(loaded["counts"].values, hess_cube["counts"].values)


def test_appended_models_read_back_as_astropy_builds_them(tmp_path):
    from bkgxr.io.gadf import bkg_2d_hdus_bytes

    rng = np.random.default_rng(5)
    energy, offset = np.geomspace(0.1, 100, 20), np.sqrt(np.linspace(0, 9, 10))
    rates = rng.uniform(0, 1e-3, (4, 19, 9))
    metas = [{"EXTNAME": (f"BKG_OBS_{i}", "c"), "OBS_ID": (i, "obs"), "N_EFF": (1.5 * i, "n")} for i in range(4)]
    path = tmp_path / "m.fits"
    write_atomic(fits.HDUList([fits.PrimaryHDU()]), path, tail=bkg_2d_hdus_bytes(rates, energy, offset, metas))
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert [h.name for h in hdul[1:]] == [f"BKG_OBS_{i}" for i in range(4)]
        for i, hdu in enumerate(hdul[1:]):
            meta = {k: v for k, v in metas[i].items() if k != "EXTNAME"}
            expected = create_bkg_2d_hdu(rates[i], energy, offset, extname=f"BKG_OBS_{i}", meta=meta)
            assert list(hdu.header.items()) == list(expected.header.items())  # keywords and values, in order
            for name in ("ENERG_LO", "THETA_HI", "BKG"):
                np.testing.assert_array_equal(hdu.data[name], expected.data[name])
    with pytest.raises(ValueError, match="non-finite"):
        bkg_2d_hdus_bytes(np.full((1, 19, 9), np.nan), energy, offset, metas[:1])
