"""Simulated stores drawn along each run's zenith track: the truth of the default cube (event_zenith=True)."""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time
from scipy import stats

import bkgxr
from bkgxr.simulate import MJDREF, SITE, TRACK_SLICES, simulate_store
from bkgxr.track import EVENT_SLICES
from bkgxr.truth import truth_cube

#: 3-deg bands between 24 and 45 deg: runs at 20-50 deg move 1-7 deg during their ~28 min and most cross an edge.
TRACKED = bkgxr.Binning(zenith=[0, 24, 27, 30, 33, 36, 39, 42, 45, 90], energy=np.geomspace(0.1, 10, 11),
                        offset=np.linspace(0, 3, 7))
STORE = {"n_runs": 60, "events_per_run": 4000, "seed": 5, "zenith_range": (20.0, 50.0), "date": "2026-01-01"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    sim = simulate_store(tmp_path_factory.mktemp("tracked") / "store", track=True, **STORE)
    store = bkgxr.open_store(sim.path)
    runs = store.select()
    with warnings.catch_warnings():  # a run's track may dip below 20 deg: those events are outside, as in the truth
        warnings.simplefilter("ignore", UserWarning)
        by_event = bkgxr.build_cube(runs, binning=TRACKED).compute()
        by_run = bkgxr.build_cube(runs, binning=TRACKED, event_zenith=False).compute()
    return sim, store, truth_cube(store, binning=TRACKED), by_event, by_run


def _astropy_zenith(run, times_s):
    """The pointing's zenith at some times, from astropy's exact transformation for this run alone."""
    location = EarthLocation.from_geodetic(SITE["GEOLON"] * u.deg, SITE["GEOLAT"] * u.deg, SITE["ALTITUDE"] * u.m)
    frame = AltAz(obstime=Time(MJDREF[0], MJDREF[1] + np.asarray(times_s) / 86400.0, format="mjd", scale="tt"), location=location)
    return 90.0 - SkyCoord(ra=float(run["RA_PNT"]) * u.deg, dec=float(run["DEC_PNT"]) * u.deg).transform_to(frame).alt.deg


def _pulls(observed, expected, minimum=20.0):
    populated = expected > minimum
    pulls = (observed - expected)[populated] / np.sqrt(expected[populated])
    return pulls, stats.chi2.sf(np.sum(pulls**2), pulls.size)


def test_each_slice_is_drawn_at_its_zenith_on_the_astropy_track(tracked):
    sim, store, truth, _, _ = tracked
    assert sim.track_slices == store.obs_table.meta["SIMTRACK"] == TRACK_SLICES == EVENT_SLICES
    runs, width = sim.runs, sim.runs["ONTIME"].to_numpy(np.float64)[:, None] / TRACK_SLICES
    expected = np.empty((len(runs), TRACK_SLICES))
    for i, run in runs.iterrows():
        midpoints = run["TSTART"] + (np.arange(TRACK_SLICES) + 0.5) * width[i]
        expected[i] = width[i] * np.array([sim.model.counts_per_second(z) for z in _astropy_zenith(run, midpoints)])
        # ZEN_PNT stays the zenith at mid-run (float32 RA/Dec)
        assert _astropy_zenith(run, [run["TSTART"] + 0.5 * run["ONTIME"]])[0] == pytest.approx(run["ZEN_PNT"], abs=3e-5)
    np.testing.assert_allclose(runs["EXPECTED_COUNT"], expected.sum(1), rtol=1e-9)
    # each slice's events follow its own expectation: 60 runs x 32 slices
    drawn = np.array([np.bincount(((fits.getdata(path, "EVENTS")["TIME"] - tstart) // w).astype(int), minlength=TRACK_SLICES)
                      for path, tstart, w in zip(store.select()["EVENTS_PATH"], runs["TSTART"], width[:, 0], strict=True)])
    assert drawn.shape == expected.shape and drawn.sum() == runs["EVENT_COUNT"].sum()
    _, p_value = _pulls(drawn, expected)
    assert p_value > 1e-3
    # the expected counts change along a run by more than Poisson: a constant rate per run is rejected
    flat = np.repeat(expected.mean(1, keepdims=True), TRACK_SLICES, axis=1)
    assert _pulls(drawn, flat)[1] < 1e-10
    # and most runs cross a band edge
    assert np.sum((truth["run_band_fraction"].values > 0).sum(1) > 1) > 0.6 * len(runs)


def test_default_cube_recovers_the_tracked_truth_per_band(tracked):
    sim, _, truth, cube, _ = tracked
    # times per band: the same linear tracks between the same 33 bounds (the cube's from node maps,
    # within 1e-5 deg of astropy's zenith: a track that crosses an edge slowly makes that 2.4e-5 of a run)
    np.testing.assert_allclose(cube["run_band_fraction"].values, truth["run_band_fraction"].values, atol=5e-5)
    np.testing.assert_allclose(cube["ontime"].values, truth["ontime"].values, rtol=1e-5)
    np.testing.assert_allclose(cube["exposure"].values, truth["exposure"].values, rtol=1e-5)
    pulls, p_value = _pulls(cube["counts"].values, truth["counts"].values)
    assert pulls.size > 400 and abs(pulls.mean()) < 0.15 and 0.85 < pulls.std() < 1.15 and p_value > 1e-3
    band, _ = _pulls(cube["counts"].values.sum((1, 2)), truth["counts"].values.sum((1, 2)))
    assert np.all(np.abs(band) < 4)
    rate = ((cube["rate"] - truth["rate"]) / truth["rate_err"]).values[truth["counts"].values > 20]
    assert stats.chi2.sf(np.sum(rate**2), rate.size) > 1e-3
    # the run table with Simulation.track_slices gives the store's truth (its norm went through a FITS card)
    again = truth_cube(sim.runs, sim.model, TRACKED, track_slices=sim.track_slices)
    np.testing.assert_allclose(again["counts"].values, truth["counts"].values, rtol=1e-13)


def test_whole_runs_at_zen_pnt_miss_the_tracked_truth_near_band_edges(tracked):
    sim, _, truth, _, cube = tracked
    pulls, p_value = _pulls(cube["counts"].values, truth["counts"].values)
    assert p_value < 1e-10 and pulls.std() > 3
    band, _ = _pulls(cube["counts"].values.sum((1, 2)), truth["counts"].values.sum((1, 2)))
    assert np.max(np.abs(band)) > 10
    # whole runs put time in the wrong bands too
    assert np.max(np.abs(cube["ontime"].values / truth["ontime"].values - 1)) > 0.05
    # what is wrong is only where the events go: the truth of whole runs at ZEN_PNT fits this cube
    _, p_value = _pulls(cube["counts"].values, truth_cube(sim.runs, sim.model, TRACKED, track_slices=0)["counts"].values)
    assert p_value > 1e-3


def test_tracked_stores_are_reproducible_and_their_truth_checked(tmp_path, simulation):
    tiny = {"n_runs": 3, "events_per_run": 300, "seed": 9, "zenith_range": (20.0, 50.0), "date": "2026-01-01", "track": True}
    first, again = simulate_store(tmp_path / "a", **tiny), simulate_store(tmp_path / "b", **tiny)
    shorter = simulate_store(tmp_path / "c", **{**tiny, "n_runs": 2})
    for name in ("obs_000001.fits.gz", "obs_000002.fits.gz"):
        data = (first.path / "data" / name).read_bytes()
        assert data == (again.path / "data" / name).read_bytes() == (shorter.path / "data" / name).read_bytes()
    with pytest.raises(ValueError, match="SIMTRACK"):
        truth_cube(bkgxr.open_store(first.path), binning=TRACKED, track_slices=0)
    with pytest.raises(ValueError, match="RA_PNT"):
        truth_cube(first.runs.drop(columns="RA_PNT"), first.model, TRACKED, track_slices=TRACK_SLICES)
    # runs near the horizon: one sets during its run
    with pytest.raises(ValueError, match="horizon"):
        simulate_store(tmp_path / "d", **{**tiny, "n_runs": 8, "zenith_range": (87.0, 89.9)})
    # an untracked store says so
    assert simulation.track_slices == 0 and "SIMTRACK" not in bkgxr.open_store(simulation.path).obs_table.meta
