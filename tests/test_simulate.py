"""Simulator: GADF validity through gammapy, truth recovery, exact bookkeeping, seeds, CLI."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import stats

import bkgxr
from bkgxr.cli import main
from bkgxr.geometry import offset_deg
from bkgxr.rate_model import RateModel
from bkgxr.simulate import (
    _draw_run_params,
    destination,
    draw_events,
    simulate_store,
)
from bkgxr.truth import bin_integrals, truth_cube
from bkgxr.zenith import predict_rates

#: Recovery binning: about 1,100 bins of the tiny store expect more than 50 events.
RECOVERY = bkgxr.Binning(zenith=[0, 30, 45, 60], energy=np.geomspace(0.1, 10, 41), offset=np.linspace(0, 3, 16))
#: Columns of the H.E.S.S. DR1 obs index the simulated one must have.
OBS_COLUMNS = ("OBS_ID", "TARGET_NAME", "ZEN_PNT", "ALT_PNT", "AZ_PNT", "RA_PNT", "DEC_PNT", "ONTIME", "LIVETIME",
               "DEADC", "TSTART", "TSTOP", "EVENT_COUNT", "SAFE_ENERGY_LO", "SAFE_ENERGY_HI")


def _tiny(path, **kwargs):
    return simulate_store(path, **{"n_runs": 3, "events_per_run": 500, "seed": 7, "date": "2026-01-01", **kwargs})


def _events(path):
    with fits.open(path) as hdul:
        return {name: np.array(hdul["EVENTS"].data[name]) for name in hdul["EVENTS"].columns.names}


# --- the model ---------------------------------------------------------------------------------


def test_rate_broadcasts_and_vanishes_outside_the_support():
    model = RateModel()
    rate = model.rate(np.geomspace(0.01, 200, 7)[:, None, None], np.linspace(0, 4, 5)[None, :, None], np.array([0.0, 50.0]))
    assert rate.shape == (7, 5, 2)
    inside = model.rate(1.0, 0.5, 20.0)
    assert inside > 0
    assert model.rate(0.01, 0.5, 20.0) == 0 and model.rate(200.0, 0.5, 20.0) == 0 and model.rate(1.0, 3.1, 20.0) == 0
    assert model.energy_threshold(60.0) == pytest.approx(0.2 * 2**2.5)
    # the turn-on moves to higher energy with zenith: far below it the rate drops
    assert model.rate(0.15, 0.5, 50.0) / model.rate(0.15, 0.5, 0.0) < 0.05
    with pytest.raises(ValueError, match="zenith"):
        model.rate(1.0, 0.5, 95.0)
    with pytest.raises(ValueError, match="energy_max > energy_min"):
        RateModel(energy_min=10.0, energy_max=1.0)
    assert RateModel.from_meta(model.to_meta()) == model


@pytest.mark.parametrize("max_offset", [2.5, 3.0])
@pytest.mark.parametrize("zenith", [0.0, 35.0, 59.0])
def test_expected_rate_of_a_run_agrees_between_sampling_grid_and_quadrature(zenith, max_offset):
    model = RateModel(max_offset=max_offset)
    # Gauss-Legendre over bins covering the support vs the trapezoid grid the sampler uses
    full = bkgxr.Binning(energy=np.geomspace(0.05, 100, 60), offset=np.linspace(0, max_offset, 40))
    assert bin_integrals(model, zenith, full).sum() == pytest.approx(model.counts_per_second(zenith), rel=1e-6)


def test_destination_is_exact_on_the_sphere():
    rng = np.random.default_rng(1)
    offset, angle = rng.uniform(0, 10, 1000), rng.uniform(0, 2 * np.pi, 1000)
    for ra0, dec0 in [(10.0, -80.0), (359.9, 0.0), (200.0, 89.0)]:
        ra, dec = destination(ra0, dec0, offset, angle)
        np.testing.assert_allclose(offset_deg(ra, dec, ra0, dec0), offset, atol=1e-9)


# --- the store ---------------------------------------------------------------------------------


def test_gammapy_loads_the_store_its_events_and_gtis(simulation):
    from gammapy.data import DataStore

    data_store = DataStore.from_dir(simulation.path)
    runs = simulation.runs
    observations = data_store.get_observations(list(runs["OBS_ID"][:4]), required_irf=[])
    for obs, (_, run) in zip(observations, runs.iloc[:4].iterrows(), strict=True):
        assert len(obs.events.table) == run["EVENT_COUNT"] > 0
        assert obs.gti.time_sum.to_value("s") == pytest.approx(run["ONTIME"])
        assert obs.gti.met_start.to_value("s")[0] == run["TSTART"]
        altaz = obs.get_pointing_altaz(obs.tmid)
        assert altaz.alt.deg == pytest.approx(run["ALT_PNT"], abs=1e-4)
        assert altaz.az.deg == pytest.approx(run["AZ_PNT"], abs=1e-4)
        times = obs.events.table["TIME"]
        assert (obs.gti.time_start[0] <= times.min()) and (times.max() <= obs.gti.time_stop[0])


def test_files_have_the_keywords_and_columns_of_real_runs(simulation, sim_store):
    path = sim_store.select(obs_ids=[simulation.runs["OBS_ID"][0]])["EVENTS_PATH"][0]
    with fits.open(path) as hdul:
        header = hdul["EVENTS"].header
        for key in ("OBS_ID", "RA_PNT", "DEC_PNT", "ALT_PNT", "AZ_PNT", "ONTIME", "LIVETIME", "DEADC", "TSTART",
                    "TSTOP", "MJDREFI", "MJDREFF", "TIMESYS", "GEOLON", "GEOLAT", "ALTITUDE", "HDUCLASS", "HDUCLAS1"):
            assert key in header, key
        assert header["LIVETIME"] == pytest.approx(header["ONTIME"] * header["DEADC"], rel=1e-6)
        units = {hdul["EVENTS"].columns[n].name: hdul["EVENTS"].columns[n].unit for n in ("TIME", "RA", "DEC", "ENERGY")}
        assert units == {"TIME": "s", "RA": "deg", "DEC": "deg", "ENERGY": "TeV"}
        assert hdul["GTI"].header["HDUCLAS1"] == "GTI"
    obs = sim_store.obs_table
    assert set(OBS_COLUMNS) <= set(obs.colnames)
    assert set(np.char.strip(obs["TARGET_NAME"].astype(str))) == {"Off data"}


def test_obs_index_columns_match_the_hess_release(sim_store, hess_dir):
    hess = Table.read(hess_dir / "obs-index.fits.gz")
    ours = sim_store.obs_table
    for name in set(hess.colnames) & set(ours.colnames):
        assert ours[name].unit == hess[name].unit, name
        assert ours[name].dtype.kind == hess[name].dtype.kind, name


def test_events_lie_on_the_model_support_and_match_the_draw(simulation, sim_store):
    model, run = simulation.model, simulation.runs.iloc[5]
    path = sim_store.select(obs_ids=[run["OBS_ID"]])["EVENTS_PATH"][0]
    events = _events(path)
    assert events["ENERGY"].size == run["EVENT_COUNT"]
    offset = offset_deg(events["RA"], events["DEC"], run["RA_PNT"], run["DEC_PNT"])
    assert offset.max() <= model.max_offset + 1e-4
    assert model.energy_min * (1 - 1e-6) <= events["ENERGY"].min() and events["ENERGY"].max() <= model.energy_max * (1 + 1e-6)
    assert np.all(np.diff(events["TIME"]) >= 0)
    np.testing.assert_array_equal(events["EVENT_ID"], np.arange(1, events["ENERGY"].size + 1))
    # replaying the run's generator gives the offsets the file's RA/DEC encode (float32 storage)
    rng = np.random.default_rng([sim_store.obs_table.meta["SIMSEED"], 5])
    assert _draw_run_params(rng, (0.5, 1.0))[0] == pytest.approx(run["ZEN_PNT"], abs=1e-5)
    drawn, expected = draw_events(model, run.to_dict(), rng)
    assert expected == pytest.approx(run["EXPECTED_COUNT"])
    np.testing.assert_allclose(offset, drawn["OFFSET"], atol=2e-4)


# --- truth recovery ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recovered(sim_store):
    runs = sim_store.select(bkgxr.OFF_QUERY)
    # the simulator draws a run's events at the rate of its ZEN_PNT: its truth puts whole runs in that band
    return bkgxr.build_cube(runs, binning=RECOVERY, event_zenith=False).compute(), truth_cube(sim_store, binning=RECOVERY)


def _pulls(cube, truth, scale=1.0):
    populated = truth["counts"].values > 50
    pulls = ((cube["rate"] - scale * truth["rate"]) / truth["rate_err"]).values[populated]
    return pulls, stats.chi2.sf(np.sum(pulls**2), pulls.size)


def test_build_recovers_the_truth_within_poisson_errors(recovered):
    pulls, p_value = _pulls(*recovered)
    assert pulls.size > 1000
    assert abs(pulls.mean()) < 0.1
    assert 0.9 < pulls.std() < 1.1
    assert p_value > 0.001


@pytest.mark.parametrize("scale", [1.1, 1 / 1.1])
def test_a_truth_off_by_ten_percent_is_rejected(recovered, scale):
    pulls, p_value = _pulls(*recovered, scale=scale)
    assert p_value < 1e-6
    assert abs(pulls.mean()) > 0.5


def test_truth_counts_add_up_to_the_expected_events(simulation, recovered):
    cube, truth = recovered
    # every run's expected count, from the sampler's grid, lands in the bins or outside the binned range
    model = simulation.model
    wide = bkgxr.Binning(zenith=RECOVERY.zenith, energy=np.geomspace(0.05, 100, 60), offset=np.linspace(0, model.max_offset, 40))
    total = truth_cube(simulation.runs, model, wide)["counts"].sum()
    assert float(total) == pytest.approx(simulation.runs["EXPECTED_COUNT"].sum(), rel=1e-6)
    assert truth["counts"].sum() < total
    # and the events in the binned range agree with their expectation
    assert abs(float(cube["counts"].sum() - truth["counts"].sum())) < 4 * np.sqrt(float(truth["counts"].sum()))


# --- exact bookkeeping -------------------------------------------------------------------------


def test_times_bands_and_runs_are_recovered_exactly(simulation, recovered):
    cube, truth = recovered
    runs = simulation.runs
    band = np.digitize(runs["ZEN_PNT"].to_numpy(np.float64), RECOVERY.zenith) - 1
    for name in ("ontime", "livetime"):
        summed = [runs[name.upper()].to_numpy(np.float64)[band == b].sum() for b in range(3)]
        np.testing.assert_array_equal(cube[name].values, summed)
        np.testing.assert_array_equal(truth[name].values, summed)
        np.testing.assert_array_equal(truth[f"run_{name}"].values, cube[f"run_{name}"].values)
    np.testing.assert_array_equal(cube["n_runs"].values, np.bincount(band, minlength=3))
    np.testing.assert_array_equal(cube["obs_id"].values, runs["OBS_ID"].to_numpy())
    np.testing.assert_array_equal(cube["run_zenith"].values, runs["ZEN_PNT"].to_numpy(np.float64))


def test_headers_agree_exactly_with_the_obs_index(sim_store):
    runs = sim_store.select()
    for _, run in runs.iterrows():
        header = fits.getheader(run["EVENTS_PATH"], "EVENTS")
        for key in ("LIVETIME", "ONTIME", "RA_PNT", "DEC_PNT", "TSTART", "TSTOP"):
            assert header[key] == run[key], (run["OBS_ID"], key)
        assert 90.0 - header["ALT_PNT"] == pytest.approx(run["ZEN_PNT"], abs=1e-5)


def test_run_selection_by_query_zenith_and_obs_ids(simulation, sim_store):
    runs = simulation.runs
    low = sorted(runs.loc[runs["ZEN_PNT"] < 30, "OBS_ID"])
    assert sorted(sim_store.select("ZEN_PNT < 30")["OBS_ID"]) == low
    assert sorted(sim_store.select(zenith=(0, 30))["OBS_ID"]) == low
    chosen = [int(runs["OBS_ID"][i]) for i in (0, 3, 7)]
    selected = sim_store.select(bkgxr.OFF_QUERY, obs_ids=chosen)
    assert list(selected["OBS_ID"]) == chosen
    cube = bkgxr.build_cube(selected, binning=bkgxr.Binning(zenith=[0, 90]))
    assert cube["livetime"].sum() == pytest.approx(runs.set_index("OBS_ID").loc[chosen, "LIVETIME"].astype(float).sum(), rel=1e-12)
    assert int(cube["counts"].sum().compute()) <= int(runs.set_index("OBS_ID").loc[chosen, "EVENT_COUNT"].sum())


# --- time convention: the truth per ONTIME (or LIVETIME), dead time far from 1 --------------------

#: Stores with dead-time fractions from 0.45 to 0.05 (DEADC 0.55-0.95), one per truth convention.
DEAD = {"n_runs": 16, "events_per_run": 15_000, "seed": 11, "deadc_range": (0.55, 0.95), "date": "2026-01-01"}


@pytest.fixture(scope="module", params=["ontime", "livetime"])
def dead(request, tmp_path_factory):
    sim = simulate_store(tmp_path_factory.mktemp(request.param) / "store", truth_time=request.param, **DEAD)
    store = bkgxr.open_store(sim.path)
    cube = bkgxr.build_cube(store.select(), binning=RECOVERY, event_zenith=False).compute()  # as the truth
    return sim, store, cube


def test_ontime_is_tstop_minus_tstart_and_the_gti_sum_exactly(dead):
    sim, store, _ = dead
    runs = store.select()
    np.testing.assert_array_equal(runs["ONTIME"], runs["TSTOP"] - runs["TSTART"])
    for _, run in runs.iterrows():
        with fits.open(run["EVENTS_PATH"]) as hdul:
            gti, header = hdul["GTI"].data, hdul["EVENTS"].header
            assert np.sum(gti["STOP"] - gti["START"]) == run["ONTIME"] == header["ONTIME"] == header["TSTOP"] - header["TSTART"]
            assert header["LIVETIME"] == pytest.approx(header["ONTIME"] * header["DEADC"], rel=1e-6)
    deadc = sim.runs["DEADC"].to_numpy(np.float64)
    assert 0.55 <= deadc.min() < 0.65 and 0.85 < deadc.max() <= 0.95


def test_expected_counts_follow_the_truth_time(dead):
    sim, store, _ = dead
    runs, model = sim.runs, sim.model
    time = runs["ONTIME" if sim.truth_time == "ontime" else "LIVETIME"].to_numpy(np.float64)
    per_s = np.array([model.counts_per_second(z) for z in runs["ZEN_PNT"].to_numpy(np.float64)])
    np.testing.assert_allclose(runs["EXPECTED_COUNT"], time * per_s, rtol=1e-12)
    assert store.obs_table.meta["SIMTIME"] == sim.truth_time
    # the drawn counts follow their expectation, which differs between conventions by DEADC (0.55-0.95)
    pulls = (runs["EVENT_COUNT"] - runs["EXPECTED_COUNT"]) / np.sqrt(runs["EXPECTED_COUNT"])
    assert np.all(np.abs(pulls) < 5) and np.sum(pulls**2) < stats.chi2.ppf(0.9999, pulls.size)
    other = runs["ONTIME" if sim.truth_time == "livetime" else "LIVETIME"].to_numpy(np.float64) * per_s
    assert stats.chi2.sf(np.sum((runs["EVENT_COUNT"] - other) ** 2 / other), other.size) < 1e-10


def test_truth_cube_counts_are_truth_time_and_its_rate_is_per_ontime(dead):
    sim, store, cube = dead
    truth = truth_cube(store, binning=RECOVERY)
    assert truth.attrs["truth_time"] == sim.truth_time
    runs = sim.runs
    time = runs["ONTIME" if sim.truth_time == "ontime" else "LIVETIME"].to_numpy(np.float64)
    band = np.digitize(runs["ZEN_PNT"].to_numpy(np.float64), RECOVERY.zenith) - 1
    volume = np.diff(RECOVERY.energy)[:, None] * 1e6 * 2 * np.pi * -np.diff(np.cos(np.radians(RECOVERY.offset)))[None, :]
    for b in range(3):
        inside = band == b
        counts = sum(t * bin_integrals(sim.model, z, RECOVERY) for t, z in zip(time[inside], runs["ZEN_PNT"][inside], strict=True))
        np.testing.assert_allclose(truth["counts"].values[b], counts, rtol=1e-12)
        rate = counts / (runs["ONTIME"].to_numpy(np.float64)[inside].sum() * volume)
        np.testing.assert_allclose(truth["rate"].values[b], rate, rtol=1e-12)
    np.testing.assert_allclose(truth["exposure"].values, cube["exposure"].values, rtol=1e-12)
    with pytest.raises(ValueError, match="SIMTIME"):
        truth_cube(store, binning=RECOVERY, truth_time="livetime" if sim.truth_time == "ontime" else "ontime")


def test_build_recovers_the_truth_per_ontime_whatever_the_dead_time(dead):
    """Pulls of unit width with DEADC 0.55-0.95; the truth read with the other convention is rejected."""
    sim, store, cube = dead
    pulls, p_value = _pulls(cube, truth_cube(store, binning=RECOVERY))
    assert pulls.size > 500 and abs(pulls.mean()) < 0.1 and 0.9 < pulls.std() < 1.1 and p_value > 0.001
    other = "livetime" if sim.truth_time == "ontime" else "ontime"
    pulls, p_value = _pulls(cube, truth_cube(sim.runs, sim.model, RECOVERY, truth_time=other))
    assert p_value < 1e-6 and abs(pulls.mean()) > 1


def test_truth_arguments_are_checked(tmp_path, simulation):
    with pytest.raises(ValueError, match="deadc_range"):
        _tiny(tmp_path / "a", deadc_range=(0.0, 0.9))
    with pytest.raises(ValueError, match="deadc_range"):
        _tiny(tmp_path / "b", deadc_range=(0.9, 1.2))
    with pytest.raises(ValueError, match="truth_time"):
        _tiny(tmp_path / "c", truth_time="exposure")
    with pytest.raises(ValueError, match="ONTIME"):
        truth_cube(simulation.runs.drop(columns="ONTIME"), simulation.model)
    with pytest.raises(ValueError, match="truth_time"):
        truth_cube(simulation.runs, simulation.model, truth_time="exposure")


# --- seeds, workers, overwrite -------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events(tmp_path):
    first, again, other = (_tiny(tmp_path / name, seed=seed) for name, seed in (("a", 7), ("b", 7), ("c", 8)))
    for name in ("obs_000001.fits.gz", "obs_000003.fits.gz"):
        a, b, c = (_events(sim.path / "data" / name) for sim in (first, again, other))
        for column in a:
            np.testing.assert_array_equal(a[column], b[column])
        assert a["ENERGY"].size != c["ENERGY"].size or not np.array_equal(a["ENERGY"], c["ENERGY"])
        assert (first.path / "data" / name).read_bytes() == (again.path / "data" / name).read_bytes()
    assert (first.path / "obs-index.fits.gz").read_bytes() == (again.path / "obs-index.fits.gz").read_bytes()
    # run i depends on (seed, i) only: a shorter store holds the same first runs
    shorter = _tiny(tmp_path / "d", n_runs=2)
    assert (shorter.path / "data" / "obs_000002.fits.gz").read_bytes() == (first.path / "data" / "obs_000002.fits.gz").read_bytes()


def test_worker_processes_write_the_same_files(tmp_path):
    serial, parallel = _tiny(tmp_path / "serial"), _tiny(tmp_path / "parallel", workers=2)
    for name in ("obs_000001.fits.gz", "obs_000002.fits.gz", "obs_000003.fits.gz"):
        assert (serial.path / "data" / name).read_bytes() == (parallel.path / "data" / name).read_bytes()


def test_events_per_run_is_the_mean_and_an_existing_store_is_kept(tmp_path, simulation):
    mean = simulation.runs["EXPECTED_COUNT"].mean()
    spread = simulation.runs["EXPECTED_COUNT"].std() / np.sqrt(len(simulation.runs))
    assert abs(mean - 15_000) < 4 * spread
    _tiny(tmp_path / "s")
    with pytest.raises(FileExistsError):
        _tiny(tmp_path / "s")
    with pytest.raises(ValueError, match="zenith_range"):
        _tiny(tmp_path / "t", zenith_range=(10, 95))


# --- command line ------------------------------------------------------------------------------


def test_simulate_command_writes_a_store(tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["simulate", str(out), "--runs", "3", "--events-per-run", "400", "--seed", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "written:" in text and "runs/s" in text
    assert len(bkgxr.open_store(out).select(bkgxr.OFF_QUERY)) == 3
    assert main(["simulate", str(out), "--runs", "3", "--events-per-run", "400", "--quiet"]) == 1


def test_demo_writes_models_gammapy_loads_and_a_png(tmp_path, capsys):
    from gammapy.data import DataStore

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--runs", "10", "--events-per-run", "2000"]) == 0
    text = capsys.readouterr().out
    for name in ("bkg-models.fits", "overview.png", "store"):
        assert str((out / name).resolve()) in text
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = bkgxr.open_store(out / "store")
    cube = bkgxr.build_cube(store.select(bkgxr.OFF_QUERY)).compute()
    data_store = DataStore.from_file(out / "bkg-models.fits")
    # the demo writes the default recipe: each observation's smoothed kernel model at its zenith and time
    from bkgxr.nodes import to_node_values

    averages, _ = predict_rates(cube, cube["run_zenith"].values, recipe=bkgxr.DEFAULT_RECIPE, time=cube["run_tstart"].values)
    expected = to_node_values(averages, np.geomspace(0.1, 100, 20), np.sqrt(np.linspace(0, 9, 10)))  # written for gammapy
    for obs_id, rate in zip(cube["obs_id"].values, expected, strict=True):
        obs = data_store.obs(int(obs_id))  # a whole DL3 observation: events, GTI, aeff, edisp, psf and bkg
        np.testing.assert_allclose(obs.bkg.quantity.to_value("MeV-1 s-1 sr-1"), rate, rtol=1e-10)
        assert obs.aeff.data.max() > 0 and obs.edisp.data.max() > 0 and obs.psf.data.max() > 0
