import numpy as np
import pytest

import bkgxr
from bkgxr.axes import binning_of, exposure_s_mev_sr
from bkgxr.simulate import simulate_store
from bkgxr.truth import bin_integrals
from bkgxr.zenith import predict_rates, run_exposures

#: The raw recipes: no smoothing, no time kernel (each test adds what it checks).
RAW = bkgxr.Recipe(smoothing=None, time_sigma=None)
BANDS = RAW.replace(zenith="bands")


def _per_run(cube):
    unit = exposure_s_mev_sr(np.ones(1), binning_of(cube))[0]
    exposure = cube["run_ontime"].values[:, None, None] * unit[None]
    return cube["run_counts"].values.astype(float), exposure


def test_bands_model_is_the_band_rate(hess_cube):
    rate, n_eff = predict_rates(hess_cube, [10, 30, 65, 0, 89.9], recipe=BANDS)
    expected = hess_cube["rate"].values[[0, 1, 2, 0, 2]]
    np.testing.assert_allclose(rate, expected, rtol=1e-14, atol=0)
    share = hess_cube["run_band_fraction"].values  # a run crossing an edge counts by its share of time
    np.testing.assert_allclose(n_eff, (share.sum(0) ** 2 / (share**2).sum(0))[[0, 1, 2, 0, 2]], rtol=1e-12)
    assert np.all(n_eff <= hess_cube["n_runs"].values[[0, 1, 2, 0, 2]])


def test_bands_of_an_event_zenith_cube_are_its_band_rates_and_leave_one_out_is_the_cube_without_the_run(hess_runs):
    """Runs crossing a band edge count in each band with their events there and their share of time."""
    cube = bkgxr.build_cube(hess_runs).compute()
    rate, _ = predict_rates(cube, [10, 30, 65], recipe=BANDS)
    np.testing.assert_allclose(rate, cube["rate"].values, rtol=1e-12, atol=0)
    crossing = int(np.flatnonzero((cube["run_band_fraction"].values > 0).sum(axis=1) == 2)[0])
    without = bkgxr.build_cube(hess_runs.drop(index=hess_runs.index[crossing]), event_zenith=True).compute()
    held, _ = predict_rates(cube, [10, 30, 65], recipe=BANDS, leave_out=[crossing] * 3)
    np.testing.assert_allclose(held, without["rate"].values, rtol=1e-12, atol=0)
    assert not np.allclose(held, rate)


def test_wide_kernel_is_the_all_run_average_and_narrow_is_the_nearest_run(hess_cube):
    counts, exposure = _per_run(hess_cube)
    wide, n_eff = predict_rates(hess_cube, [30.0], recipe=RAW.replace(kernel_sigma=1e5))
    np.testing.assert_allclose(wide[0], counts.sum(0) / exposure.sum(0), rtol=1e-9)
    assert n_eff[0] == pytest.approx(45, rel=1e-6)
    i = 7
    narrow, n_eff = predict_rates(hess_cube, [hess_cube["run_zenith"].values[i]], recipe=RAW.replace(kernel_sigma=1e-7))
    np.testing.assert_allclose(narrow[0], counts[i] / exposure[i], rtol=1e-12)
    assert n_eff[0] == pytest.approx(1.0)


def test_leave_out_drops_exactly_that_run(hess_cube):
    counts, exposure = _per_run(hess_cube)
    zen = hess_cube["run_zenith"].values
    w = np.exp(-0.5 * ((np.cos(np.radians(zen)) - np.cos(np.radians(zen[3]))) / 0.03) ** 2)
    w[3] = 0
    expected = np.tensordot(w, counts, 1) / np.tensordot(w, exposure, 1)
    rate, _ = predict_rates(hess_cube, [zen[3]], recipe=RAW, leave_out=[3])
    np.testing.assert_allclose(rate[0], expected, rtol=1e-12)


def test_time_kernel_weights_runs_by_time_and_needs_times(hess_cube):
    counts, exposure = _per_run(hess_cube)
    zen, t = hess_cube["run_zenith"].values, hess_cube["run_tstart"].values
    year = 365.25 * 86400
    w = np.exp(-0.5 * ((np.cos(np.radians(zen)) - np.cos(np.radians(25.0))) / 0.03) ** 2 - 0.5 * ((t - t[0]) / year) ** 2)
    rate, _ = predict_rates(hess_cube, [25.0], time=[t[0]], recipe=RAW.replace(time_sigma=1.0))
    np.testing.assert_allclose(rate[0], np.tensordot(w, counts, 1) / np.tensordot(w, exposure, 1), rtol=1e-10)
    with pytest.warns(UserWarning, match="TSTART"):
        no_time, _ = predict_rates(hess_cube, [25.0], recipe=RAW.replace(time_sigma=1.0))
    np.testing.assert_array_equal(no_time, predict_rates(hess_cube, [25.0], recipe=RAW)[0])


def test_far_targets_still_get_the_nearest_runs(hess_cube):
    rate, n_eff = predict_rates(hess_cube, [89.0], recipe=RAW.replace(kernel_sigma=1e-4))
    assert np.all(np.isfinite(rate)) and rate.sum() > 0 and n_eff[0] >= 1


def test_unknown_model_and_bad_sigma():
    with pytest.raises(ValueError, match="unknown zenith model"):
        bkgxr.Recipe(zenith="splines")
    with pytest.raises(ValueError, match="positive"):
        bkgxr.Recipe(kernel_sigma=0)
    with pytest.raises(ValueError, match="deadtime"):
        bkgxr.Recipe(deadtime="wall")


def test_livetime_convention_divides_by_livetime(hess_cube):
    counts = hess_cube["run_counts"].values.astype(float)
    unit = exposure_s_mev_sr(np.ones(1), binning_of(hess_cube))[0]
    live = hess_cube["run_livetime"].values[:, None, None] * unit[None]
    rate, _ = predict_rates(hess_cube, [30.0], recipe=RAW.replace(kernel_sigma=1e5, deadtime="livetime"))
    np.testing.assert_allclose(rate[0], counts.sum(0) / live.sum(0), rtol=1e-9)


def test_run_exposures_follow_safe_bins_and_used_runs(hess_runs):
    with pytest.warns(UserWarning, match="outside every zenith band"):
        cube = bkgxr.build_cube(hess_runs, safe_energy=True, binning=bkgxr.Binning(zenith=[0, 40]), event_zenith=False).compute()
    exposure = run_exposures(cube)
    unused = ~cube["run_used"].values
    assert unused.any() and np.all(exposure[unused] == 0)
    np.testing.assert_array_equal(exposure[:, :, 0] > 0, cube["run_safe"].values & cube["run_used"].values[:, None])
    band_exposure = exposure.sum(0)
    np.testing.assert_allclose(band_exposure, cube["exposure"].values[0], rtol=1e-12)


@pytest.fixture(scope="module")
def trend(tmp_path_factory):
    """Many simulated runs over 0-60 deg: the rate changes smoothly with zenith."""
    sim = simulate_store(tmp_path_factory.mktemp("trend"), n_runs=90, events_per_run=6000, seed=7, date="2026-01-01")
    runs = bkgxr.open_store(sim.path).select()
    binning = bkgxr.Binning(zenith=np.arange(0, 61, 10), energy=np.geomspace(0.3, 30, 9), offset=[0, 0.5, 1, 1.5, 2])
    # the simulator draws a run's events at the rate of its ZEN_PNT: whole runs, as its truth
    return sim, bkgxr.build_cube(runs, binning=binning, event_zenith=False).compute()


#: Zeniths between the centres of the 10-deg bands of ``trend``.
TARGETS = np.array([12.0, 18.0, 22.0, 28.0, 33.0, 38.0, 42.0, 47.0])


def _asimov(sim, cube):
    """The cube with each run's counts replaced by their expectation: no Poisson noise."""
    binning = binning_of(cube)
    expected = [bin_integrals(sim.model, z, binning) * t for z, t in zip(cube["run_zenith"].values, cube["run_ontime"].values)]
    return cube.assign(run_counts=(cube["run_counts"].dims, np.stack(expected)))


def _truth(sim, cube, zenith):
    binning = binning_of(cube)
    unit = exposure_s_mev_sr(np.ones(1), binning)[0]
    return np.stack([bin_integrals(sim.model, z, binning) / unit for z in zenith])


def _sigma(cube, zenith, model):
    """Statistical error of each recipe's rate, propagated independently of bkgxr.zenith."""
    counts, exposure = cube["run_counts"].values.astype(float), run_exposures(cube)
    cos_run, cos_t = np.cos(np.radians(cube["run_zenith"].values)), np.cos(np.radians(zenith))
    if model == "kernel":
        w = np.exp(-0.5 * ((cos_run[None, :] - cos_t[:, None]) / 0.03) ** 2)
    elif model == "bands":
        w = (cube["run_band"].values[None, :] == np.searchsorted(np.arange(10, 60, 10), zenith, side="right")[:, None]) * 1.0
    else:  # quadratic Lagrange weights L_i on the three band centroids nearest each target
        band, live = cube["run_band"].values, cube["run_ontime"].values
        centre = np.array([np.average(cos_run[band == b], weights=live[band == b]) for b in range(6)])
        band_counts = np.stack([counts[band == b].sum(0) for b in range(6)])
        band_exposure = np.stack([exposure[band == b].sum(0) for b in range(6)])
        variance = np.zeros((zenith.size, *counts.shape[1:]))
        for t, x in enumerate(cos_t):
            nodes = np.argsort(np.abs(centre - x))[:3]
            for i in nodes:
                others = centre[nodes[nodes != i]]
                variance[t] += np.prod((x - others) / (centre[i] - others)) ** 2 * band_counts[i] / band_exposure[i] ** 2
        return np.sqrt(variance)
    return np.sqrt(np.tensordot(w**2, counts, 1)) / np.tensordot(w, exposure, 1)


@pytest.mark.parametrize("model", ["interpolate", "kernel"])
def test_zenith_trend_is_recovered_between_band_centres_where_bands_are_biased(trend, model):
    sim, cube = trend
    truth = _truth(sim, cube, TARGETS)
    sigma = _sigma(cube, TARGETS, model)
    good = sigma > 0
    # deterministic bias: the recipe applied to noise-free expected counts, in units of the statistical error
    exact, _ = predict_rates(_asimov(sim, cube), TARGETS, recipe=RAW.replace(zenith=model))
    bias = ((exact - truth) / np.where(good, sigma, 1))[good]
    assert abs(bias.mean()) < 0.1, bias.mean()
    band_sigma = _sigma(cube, TARGETS, "bands")
    band_exact, _ = predict_rates(_asimov(sim, cube), TARGETS, recipe=BANDS)
    band_bias = ((band_exact - truth) / np.where(band_sigma > 0, band_sigma, 1))[band_sigma > 0]
    assert np.sqrt(np.mean(band_bias**2)) > 1.0 > 3 * abs(bias.mean())  # fixed bands: measurably biased
    # and on the simulated counts themselves: pulls of unit width, centred within their noise
    rate, _ = predict_rates(cube, TARGETS, recipe=RAW.replace(zenith=model))
    pulls = ((rate - truth) / np.where(good, sigma, 1))[good]
    assert 0.8 < pulls.std() < 1.25, pulls.std()
    assert abs(pulls.mean()) < 0.25, pulls.mean()


def test_efficiency_kernel_weights_runs_by_muoneff(hess_cube):
    from bkgxr.zenith import kernel_weights

    zen, m = hess_cube["run_zenith"].values, hess_cube["run_muoneff"].values
    assert np.all(np.isfinite(m)) and m.std() > 0.03  # the DR1 obs index gives MUONEFF
    expected = np.exp(-0.5 * ((np.cos(np.radians(zen)) - np.cos(np.radians(30.0))) / 0.03) ** 2
                      - 0.5 * (np.log(m / 1.1) / 0.05) ** 2)
    got = kernel_weights(hess_cube, np.array([30.0]), sigma=0.03, efficiency=[1.1], efficiency_sigma=0.05)[0]
    np.testing.assert_allclose(got, expected / expected.max(), rtol=1e-10)
    counts, exposure = _per_run(hess_cube)
    rate, _ = predict_rates(hess_cube, [30.0], efficiency=[1.1], recipe=RAW.replace(efficiency_sigma=0.05))
    np.testing.assert_allclose(rate[0], np.tensordot(got, counts, 1) / np.tensordot(got, exposure, 1), rtol=1e-10)
    with pytest.warns(UserWarning, match="MUONEFF"):
        no_target, _ = predict_rates(hess_cube, [30.0], recipe=RAW.replace(efficiency_sigma=0.05))
    np.testing.assert_array_equal(no_target, predict_rates(hess_cube, [30.0], recipe=RAW)[0])


def test_infinite_kernel_widths_are_refused_when_the_recipe_is_made():
    for widths in ({"kernel_sigma": float("inf")}, {"time_sigma": float("inf")}, {"efficiency_sigma": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(widths))} must be a positive finite number"):
            bkgxr.Recipe(**widths)
