import numpy as np
import pytest
from astropy.io import fits
from gammapy.data import DataStore

import bkgxr
from bkgxr.axes import assign_bands
from bkgxr.io.gadf import create_bkg_2d_hdu
from bkgxr.io.write import write_atomic

#: The gammapy tutorial's recipe exactly: zenith bands, no smoothing.
TUTORIAL = bkgxr.Recipe(zenith="bands", smoothing=None, nodes=False)


def _write(cube, path, store, recipe=TUTORIAL, **options):
    return bkgxr.write_models(bkgxr.predict_models(cube, store, recipe), path, store=store, date="2026-01-01", **options)


@pytest.fixture(scope="module")
def written(hess_store, hess_cube, tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "nested" / "bkg.fits"
    return _write(hess_cube, path, hess_store)


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
    again = _write(hess_cube, tmp_path / "nested" / "bkg.fits", hess_store)
    assert again.read_bytes() == written.read_bytes()


def test_rebuilding_gives_identical_file(hess_store, hess_runs, written, tmp_path):
    cube = bkgxr.build_cube(hess_runs).compute()
    again = _write(cube, tmp_path / "nested" / "bkg.fits", hess_store)
    assert again.read_bytes() == written.read_bytes()


def test_outside_none_gives_no_model_with_a_warning(hess_store, hess_runs, tmp_path):
    with pytest.warns(UserWarning, match="outside every zenith band"):
        cube = bkgxr.build_cube(hess_runs, binning=bkgxr.Binning(zenith=[0, 40])).compute()
        path = _write(cube, tmp_path / "bkg.fits", hess_store, TUTORIAL.replace(outside="none"))
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
    import os

    path = tmp_path / "out.fits"
    path.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(b"new" * 1000, path)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


def test_no_overwrite(tmp_path):
    path = tmp_path / "out.fits"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_atomic(b"new", path, overwrite=False)


def test_models_of_some_observations_are_refused_naming_them(sim_store, tmp_path):
    runs = sim_store.select()
    cube = bkgxr.build_cube(runs).compute()
    models = bkgxr.predict_models(cube, runs.iloc[2:], TUTORIAL)  # the first two observations left out
    out = tmp_path / "bkg.fits"
    left_out = ", ".join(str(o) for o in sim_store.obs_table["OBS_ID"][:2])
    with pytest.raises(ValueError, match=rf"lack 2 observation\(s\) of the store .* \({left_out}\)"):
        bkgxr.write_models(models, out, store=sim_store, date="2026-01-01")
    assert not out.exists()


def test_kernel_models_give_every_observation_its_own_bkg(hess_store, hess_cube, tmp_path):
    from bkgxr.zenith import predict_rates

    recipe = bkgxr.Recipe(smoothing=None)
    path = _write(hess_cube, tmp_path / "kernel.fits", hess_store, recipe)
    assert fits.getheader(path, 0)["ZENMODEL"] == "kernel" and fits.getheader(path, 0)["KTSIGMA"] == 1.0
    store = DataStore.from_file(path)
    obs = hess_store.select()
    from bkgxr.nodes import to_node_values

    averages, n_eff = predict_rates(hess_cube, obs["ZEN_PNT"], time=obs["TSTART"], recipe=recipe)
    expected = to_node_values(averages, hess_cube["energy_lo"].values.tolist() + [100.0], np.sqrt(np.linspace(0, 9, 10)))
    for i, observation in enumerate(store.get_observations(obs["OBS_ID"].tolist()[::7])):
        k = i * 7
        np.testing.assert_allclose(observation.bkg.data, expected[k], rtol=1e-12, atol=0)
        header = fits.getheader(path, f"BKG_OBS_{observation.obs_id}")
        assert header["N_EFF"] == n_eff[k]
    assert len(store.hdu_table[store.hdu_table["HDU_TYPE"] == "bkg"]) == 105


def test_smoothed_models_are_stated_and_read_back(hess_store, hess_cube, tmp_path):
    from bkgxr.smooth import smooth_cube

    recipe = TUTORIAL.replace(smoothing=bkgxr.Smoothing(min_counts=80))
    path = _write(hess_cube, tmp_path / "s.fits", hess_store, recipe)
    header = fits.getheader(path, 0)
    assert header["SMOOTH"] and header["SMMINCNT"] == 80 and header["SMDEGREE"] == 3
    assert bkgxr.Recipe.from_header(header) == recipe
    expected = smooth_cube(hess_cube, min_counts=80)
    np.testing.assert_array_equal(fits.getdata(path, "BKG_ZEN_0_20")["BKG"][0].T, expected["rate"].isel(zenith=0).values)
    loaded = bkgxr.read_models(path)
    np.testing.assert_array_equal(loaded["rate"].values, expected["rate"].values)
    np.testing.assert_array_equal(loaded["rate_err"].values, expected["rate_err"].values)
    assert not np.array_equal(expected["rate"].values, hess_cube["rate"].values)
    np.testing.assert_array_equal(loaded["counts"].values, hess_cube["counts"].values)


def test_appended_models_read_back_as_astropy_builds_them(tmp_path):
    import io
    import warnings
    from functools import partial

    from bkgxr.io._checksum import fill_checksums
    from bkgxr.io.gadf import bkg_hdus_bytes

    rng = np.random.default_rng(5)
    energy, offset = np.geomspace(0.1, 100, 20), np.sqrt(np.linspace(0, 9, 10))
    rates = rng.uniform(0, 1e-3, (4, 19, 9))
    metas = [{"EXTNAME": (f"BKG_OBS_{i}", "c"), "OBS_ID": (i, "obs"), "N_EFF": (1.5 * i, "n")} for i in range(4)]
    create = partial(create_bkg_2d_hdu, energy_edges=energy, offset_edges=offset)
    path = tmp_path / "m.fits"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(buffer)
    write_atomic(fill_checksums(buffer.getvalue() + bkg_hdus_bytes(rates, create, metas)), path)
    with warnings.catch_warnings(record=True) as caught, fits.open(path, checksum=True) as hdul:
        warnings.simplefilter("always")
        hdul.verify("exception")
        assert [h.name for h in hdul[1:]] == [f"BKG_OBS_{i}" for i in range(4)]
        for i, hdu in enumerate(hdul[1:]):
            meta = {k: v for k, v in metas[i].items() if k != "EXTNAME"}
            expected = create_bkg_2d_hdu(rates[i], energy, offset, extname=f"BKG_OBS_{i}", meta=meta)
            expected.add_checksum()  # astropy's DATASUM equals ours; CHECKSUM differs as its comment holds a time
            assert [(k, v) for k, v in hdu.header.items() if k != "CHECKSUM"] == [
                (k, v) for k, v in expected.header.items() if k != "CHECKSUM"
            ]
            for name in ("ENERG_LO", "THETA_HI", "BKG"):
                np.testing.assert_array_equal(hdu.data[name], expected.data[name])
    assert not [w for w in caught if "verification failed" in str(w.message)]  # every CHECKSUM verifies
    with pytest.raises(ValueError, match="non-finite"):
        bkg_hdus_bytes(np.full((1, 19, 9), np.nan), create, metas[:1])


@pytest.mark.parametrize("event_zenith", [False, True])
def test_read_models_gives_back_what_was_written_and_refuses_a_changed_file(sim_store, tmp_path, event_zenith):
    """Band counts and each run's share of time per band (event_zenith) come back from COUNTS and BAND_FRACTION."""
    cube = bkgxr.build_cube(sim_store.select(), event_zenith=event_zenith).compute()
    assert (cube["run_band_fraction"].values.max(axis=1) < 1).any() == event_zenith
    models = bkgxr.predict_models(cube, sim_store)  # the default recipe: a model per observation
    path = bkgxr.write_models(models, tmp_path / "m.fits", store=sim_store, date="2026-01-01")
    back = bkgxr.read_models(path)
    assert back.attrs["checksum"] == "verified" and bkgxr.Recipe.from_header(back.attrs) == bkgxr.DEFAULT_RECIPE
    for name in models.data_vars:
        np.testing.assert_array_equal(back[name].values, models[name].values, err_msg=name)
    data = bytearray(path.read_bytes())
    data[len(data) - 2880 + 100] ^= 0x01  # one bit in the data of the last model
    (tmp_path / "changed.fits").write_bytes(bytes(data))
    with pytest.raises(bkgxr.StoreError, match="changed after writing"):
        bkgxr.read_models(tmp_path / "changed.fits")


def test_tutorial_band_model_is_counts_over_ontime_and_ring_solid_angle(sim_store, tmp_path):
    """`--zenith-model bands --no-smooth` against an independent numpy computation from the event files."""
    from bkgxr.cli import main

    out = tmp_path / "bands.fits"
    args = ["build", str(sim_store.root), "--out", str(out), "--quiet", "--zenith-model", "bands", "--no-smooth", "--no-nodes"]
    assert main([*args, "--date", "2026-01-01", "--no-event-zenith"]) == 0  # whole runs in the band of ZEN_PNT, as below
    obs = fits.getdata(sim_store.root / "obs-index.fits.gz")
    energy, offset = np.geomspace(0.1, 100, 20), np.sqrt(np.linspace(0, 9, 10))
    d_omega = 2 * np.pi * (np.cos(np.radians(offset[:-1])) - np.cos(np.radians(offset[1:])))
    for lo, hi, name in ((0, 20, "BKG_ZEN_0_20"), (20, 40, "BKG_ZEN_20_40"), (40, 90, "BKG_ZEN_40_90")):
        counts, ontime = np.zeros((19, 9)), 0.0
        for row in obs[(obs["ZEN_PNT"] >= lo) & (obs["ZEN_PNT"] < hi)]:
            with fits.open(sim_store.root / "data" / f"obs_{row['OBS_ID']:06d}.fits.gz") as hdul:
                ev, header = hdul["EVENTS"].data, hdul["EVENTS"].header
                ra0, dec0 = np.radians(header["RA_PNT"]), np.radians(header["DEC_PNT"])
                ra, dec = np.radians(ev["RA"].astype(float)), np.radians(ev["DEC"].astype(float))
                cos_sep = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
                counts += np.histogram2d(ev["ENERGY"], np.degrees(np.arccos(np.clip(cos_sep, -1, 1))), [energy, offset])[0]
                ontime += header["ONTIME"]
        expected = counts / (ontime * np.diff(energy)[:, None] * 1e6 * d_omega[None, :])
        np.testing.assert_allclose(fits.getdata(out, name)["BKG"][0].T, expected, rtol=1e-9, atol=1e-300)
        assert fits.getheader(out, name)["BKGTIME"] == "ONTIME"


def _bkg_3d_example():
    """A BKG_3D rate with distinct axis lengths and ranges: energy 3, lon 4 over ±3 deg, lat 6 over ±2 deg."""
    energy, lon, lat = np.geomspace(0.5, 50, 4), np.linspace(-3, 3, 5), np.linspace(-2, 2, 7)
    rate = np.random.default_rng(7).uniform(0.5, 2.0, (3, 4, 6)) * 1e-6
    return rate, energy, lon, lat


def test_bkg_3d_hdu_round_trips_through_gammapy(tmp_path):
    from gammapy.irf import Background3D
    from gammapy.maps import MapAxis

    from bkgxr.io.gadf import create_bkg_3d_hdu

    rate, energy, lon, lat = _bkg_3d_example()
    hdu = create_bkg_3d_hdu(rate, energy, lon, lat, extname="BKG_3D_TEST", meta={"OBS_ID": 42})
    assert hdu.header["HDUCLAS4"] == "BKG_3D" and hdu.header["FOVALIGN"] == "ALTAZ"
    assert hdu.header["TDIM7"] == "(3,4,6)"  # FITS order: energy fastest, then DETX (lon), then DETY (lat)
    # the same bytes as gammapy's own writer lays out for this model
    own = Background3D(
        axes=[MapAxis.from_energy_edges(energy, unit="TeV"), MapAxis.from_edges(lon, unit="deg", name="fov_lon"),
              MapAxis.from_edges(lat, unit="deg", name="fov_lat")],
        data=rate, unit="MeV-1 s-1 sr-1", fov_alignment="ALTAZ",
    ).to_table_hdu()
    for name in ("ENERG_LO", "DETX_LO", "DETX_HI", "DETY_HI", "BKG"):
        np.testing.assert_array_equal(hdu.data[name], own.data[name], err_msg=name)
    path = tmp_path / "bkg3d.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    back = Background3D.read(path, hdu="BKG_3D_TEST")
    np.testing.assert_array_equal(back.data, rate)
    assert back.fov_alignment.value == "ALTAZ" and back.unit == "MeV-1 s-1 sr-1"
    np.testing.assert_array_equal(back.axes["fov_lon"].edges.to_value("deg"), lon)
    np.testing.assert_array_equal(back.axes["fov_lat"].edges.to_value("deg"), lat)
    np.testing.assert_allclose(back.axes["energy"].edges.to_value("TeV"), energy, rtol=1e-15)  # gammapy's log nodes


def test_bkg_3d_gradient_in_lat_stays_in_lat():
    import astropy.units as u
    from astropy.table import Table
    from gammapy.irf import Background3D

    from bkgxr.io.gadf import create_bkg_3d_hdu

    _, energy, lon, lat = _bkg_3d_example()
    lat_centres = 0.5 * (lat[1:] + lat[:-1])
    rate = np.broadcast_to(1e-6 * np.exp(0.5 * lat_centres), (3, 4, 6))
    bkg = Background3D.from_table(Table.read(create_bkg_3d_hdu(rate, energy, lon, lat, extname="BKG")))
    at = {"energy": 2 * u.TeV, "fov_lon": [0.0, 0.0, -1.0, 1.0] * u.deg, "fov_lat": [-1.0, 1.0, 0.0, 0.0] * u.deg}
    value = bkg.evaluate(**at).to_value("MeV-1 s-1 sr-1")
    np.testing.assert_allclose(value, 1e-6 * np.exp(0.5 * np.array([-1.0, 1.0, 0.0, 0.0])), rtol=1e-12)


def test_bkg_3d_hdu_refuses_bad_rates():
    from bkgxr.io.gadf import create_bkg_3d_hdu

    rate, energy, lon, lat = _bkg_3d_example()
    with pytest.raises(ValueError, match="does not match"):
        create_bkg_3d_hdu(rate.transpose(0, 2, 1), energy, lon, lat, extname="BKG")
    rate[1, 2, 3] = -1.0
    with pytest.raises(ValueError, match="non-finite or negative"):
        create_bkg_3d_hdu(rate, energy, lon, lat, extname="BKG")


def test_a_model_file_of_bkgxr_0_1_stays_readable():
    """tests/data/bkgxr-0.1-models.fits: written by bkgxr 0.1 (commit a9f3de3, rates per LIVETIME, no checksums)
    from 4 simulated runs: `write_models(cube, path, store=store, smooth={}, date="2026-01-01")`."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "bkgxr-0.1-models.fits"
    with pytest.warns(UserWarning, match="bkgxr 0.1: its rates are per LIVETIME"):
        models = bkgxr.read_models(path)
    assert models.attrs["checksum"] == "absent" and models.attrs["rate_time"].startswith("LIVETIME")
    recipe = bkgxr.Recipe.from_header(models.attrs)
    assert recipe.zenith == "kernel" and recipe.smoothing == bkgxr.Smoothing() and not recipe.nodes
    for i, name in enumerate(("BKG_ZEN_0_20", "BKG_ZEN_20_40")):
        np.testing.assert_array_equal(models["rate"].isel(zenith=i).values, fits.getdata(path, name)["BKG"][0].T)
    for obs_id in models["obs_id"].values:
        stored = fits.getdata(path, f"BKG_OBS_{obs_id}")["BKG"][0].T
        np.testing.assert_array_equal(models["obs_rate"].sel(obs_id=obs_id).values, stored)
    assert int(models["run_counts"].sum()) == sum(fits.getheader(path, n)["NEVENTS"] for n in ("BKG_ZEN_0_20", "BKG_ZEN_20_40"))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask_as_open_would(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        path = write_atomic(b"\0" * 2880, tmp_path / "m.fits")
        with open(tmp_path / "reference", "wb"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode) == 0o666 & ~umask


# --- observations with equal models share one HDU ---------------------------------------------


def test_shared_models_matches_the_pairwise_rule():
    from bkgxr.io.gadf import SHARE_RTOL, shared_models

    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, (6, 40)) * (rng.uniform(size=(6, 40)) > 0.2)  # zeros too
    copies = base[rng.integers(0, 6, 200)] * (1 + rng.uniform(-0.4, 0.4, (200, 40)) * SHARE_RTOL)
    apart = base[:3] * (1 + np.r_[3, -3, 5][:, None] * SHARE_RTOL)  # just beyond the tolerance
    values = np.concatenate([base, copies, apart])
    target = shared_models(values)
    written = np.unique(target)
    assert np.all(target[written] == written)  # a written model is its own
    close = np.abs(values[:, None] - values[None, :]) <= SHARE_RTOL * np.maximum(np.abs(values[:, None]), np.abs(values[None, :]))
    equal = close.all(axis=-1)  # the rule, pair by pair
    assert np.all(equal[np.arange(len(values)), target])  # every model equals the one written for it
    assert not equal[np.ix_(written, written)][~np.eye(written.size, dtype=bool)].any()  # written ones are distinct
    assert written.size == 6 + 3
    with pytest.raises(ValueError, match="finite"):
        shared_models([[np.nan]])


def test_observations_with_equal_models_share_one_hdu_that_gammapy_and_read_models_load(sim_store, tmp_path):
    """Observations 1-3 get observation 0's zenith and time (the same model), 4 and 5 a copy of 0's model
    within and beyond the tolerance: one HDU for 0-4, every observation loading its own model."""
    from bkgxr.io.gadf import SHARE_RTOL

    obs = sim_store.select().reset_index(drop=True)
    obs.loc[1:3, ["ZEN_PNT", "TSTART"]] = obs.loc[0, ["ZEN_PNT", "TSTART"]].to_numpy()
    cube = bkgxr.build_cube(sim_store.select()).compute()
    models = bkgxr.predict_models(cube, obs)
    ids = models["obs_id"].values
    first = int(np.flatnonzero(ids == obs.loc[0, "OBS_ID"])[0])
    within, beyond = (int(np.flatnonzero(ids == obs.loc[k, "OBS_ID"])[0]) for k in (4, 5))
    rate = models["obs_rate"].values.copy()
    rate[within] = rate[first] * (1 + 0.5 * SHARE_RTOL)
    rate[beyond] = rate[first] * (1 + 3 * SHARE_RTOL)
    models["obs_rate"].values[:] = rate
    models["obs_n_eff"].values[[within, beyond]] = models["obs_n_eff"].values[first]
    path = bkgxr.write_models(models, tmp_path / "shared.fits", store=sim_store, date="2026-01-01")

    shared = {int(i) for i in obs.loc[0:4, "OBS_ID"]}
    with fits.open(path) as hdul:
        names = [h.name for h in hdul if h.name.startswith("BKG_OBS_")]
        counts = {h.name: h.header["NOBS"] for h in hdul if h.name.startswith("BKG_OBS_")}
    assert len(names) == len(ids) - 4 and sorted(counts.values()) == [1] * (len(ids) - 5) + [5]
    store = DataStore.from_file(path)
    bkg_rows = store.hdu_table[store.hdu_table["HDU_TYPE"] == "bkg"]
    assert len(bkg_rows) == len(ids)  # one row per observation, several naming the same HDU
    assert len({str(bkg_rows["HDU_NAME"][list(bkg_rows["OBS_ID"]).index(i)]) for i in shared}) == 1
    for observation in store.get_observations(ids.tolist()):
        k = int(np.flatnonzero(ids == observation.obs_id)[0])
        if observation.obs_id in shared:  # the written model is the one of a member
            np.testing.assert_allclose(observation.bkg.data, rate[k], rtol=SHARE_RTOL, atol=0)
        else:
            np.testing.assert_array_equal(observation.bkg.data, rate[k])
    back = bkgxr.read_models(path)
    np.testing.assert_array_equal(back["obs_id"].values, ids)
    np.testing.assert_allclose(back["obs_rate"].values, rate, rtol=SHARE_RTOL, atol=0)
    alone = np.array([i not in shared for i in ids])
    np.testing.assert_array_equal(back["obs_rate"].values[alone], rate[alone])
    for name in ("obs_deadc", "obs_n_eff", "obs_own", "obs_band"):  # zenith and time are the store's, not the faked ones
        np.testing.assert_array_equal(back[name].values, models[name].values, err_msg=name)


@pytest.mark.parametrize("recipe", [bkgxr.DEFAULT_RECIPE, bkgxr.Recipe(zenith="bands", smoothing=None, nodes=False)])
def test_every_card_bkgxr_writes_fits_whole(hess_store, hess_cube, tmp_path, recipe):
    """astropy truncates a comment that leaves no room on its 80-character card, and says so."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fits.verify.VerifyWarning)  # the suite ignores the public files' ones
        path = _write(hess_cube, tmp_path / "cards.fits", hess_store, recipe)
    assert fits.getheader(path, 0).comments["BKGNODES"] == "node values (bkgxr.nodes), else bin averages"
