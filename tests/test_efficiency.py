"""The optical-efficiency scaling (bkgxr.efficiency): its regression against truth and scipy, its use in the kernel."""

import numpy as np
import pytest
from scipy.optimize import minimize

import bkgxr
from bkgxr.efficiency import INDEX_PRIOR_SIGMA, cube_indices, fit_indices
from bkgxr.zenith import kernel_weights, predict_rates, run_exposures

RAW = bkgxr.Recipe(smoothing=None, time_sigma=None)
SCALED = RAW.replace(efficiency_scaling=True)


def _simulated_runs(rng, index, n_runs=300, base=(2000.0, 600.0, 150.0, 40.0)):
    """Counts of runs whose rate is ``base * (1 + 0.8 u - 2 u**2) * m ** index`` per energy bin, u = cos z - 0.8."""
    zenith = rng.uniform(5, 55, n_runs)
    m = rng.uniform(0.8, 1.25, n_runs)
    exposure = rng.uniform(0.5, 1.5, n_runs)[:, None] * np.ones(len(base))
    u = np.cos(np.radians(zenith)) - 0.8
    mean = exposure * np.asarray(base)[None, :] * np.exp(0.8 * u - 2 * u**2)[:, None] * m[:, None] ** np.asarray(index)[None, :]
    return rng.poisson(mean).astype(float), exposure, zenith, m


def test_fitted_indices_recover_the_simulated_powers_within_their_errors():
    truth = np.array([0.0, 1.0, 2.0, -0.5])
    pulls = []
    for seed in range(20):
        counts, exposure, zenith, m = _simulated_runs(np.random.default_rng(seed), truth)
        index, error = fit_indices(counts, exposure, zenith, m, max_error=np.inf)
        pulls.append((index - truth) / error)
    pulls = np.array(pulls)
    assert np.abs(pulls.mean(axis=0)).max() < 0.8, pulls.mean(axis=0)  # 20 fits: mean pull within ~3.5 sigma of 0
    assert 0.6 < pulls.std() < 1.4, pulls.std()


def test_fitted_index_is_the_likelihood_maximum_that_scipy_finds():
    counts, exposure, zenith, m = _simulated_runs(np.random.default_rng(3), [1.3, 0.7, 0.2, 2.0], n_runs=60)
    index, _ = fit_indices(counts, exposure, zenith, m, max_error=np.inf)
    u = np.cos(np.radians(zenith)) - np.cos(np.radians(zenith)).mean()
    x = np.log(m) - np.log(m).mean()
    for k in range(counts.shape[1]):
        def minus_log_l(p, k=k):
            eta = p[0] + p[1] * u + p[2] * u**2 + p[3] * x
            return -np.sum(counts[:, k] * eta - exposure[:, k] * np.exp(eta)) + 0.5 * p[3] ** 2 / INDEX_PRIOR_SIGMA**2

        start = [np.log(counts[:, k].sum() / exposure[:, k].sum()), 0, 0, 0]
        best = minimize(minus_log_l, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000})
        assert index[k] == pytest.approx(best.x[3], abs=2e-4)


def test_sparse_bins_borrow_the_nearest_well_measured_index_and_empty_ones_have_no_error():
    counts, exposure, zenith, m = _simulated_runs(np.random.default_rng(5), [0.5, 1.0, 1.5, 1.5], base=(3000, 3000, 3, 0))
    index, error = fit_indices(counts, exposure, zenith, m)
    assert error[0] < 0.1 and error[1] < 0.1 and error[2] > 0.25 and np.isnan(error[3])
    assert index[2] == index[1] == index[3]
    assert index[0] == pytest.approx(0.5, abs=0.2) and index[1] == pytest.approx(1.0, abs=0.2)


def test_runs_of_one_efficiency_give_no_index():
    counts, exposure, zenith, _ = _simulated_runs(np.random.default_rng(1), [1.0] * 4)
    index, _ = fit_indices(counts, exposure, zenith, np.full(zenith.size, 0.95))
    np.testing.assert_allclose(index, 0.0, atol=1e-9)  # the prior alone: nothing tells the index


def test_scaled_kernel_brings_each_run_to_the_target_efficiency(hess_cube):
    """rate = m ** index * sum(w c m_run ** -index) / sum(w exposure), computed here from the kernel weights."""
    index, _ = cube_indices(hess_cube)
    assert np.all(np.isfinite(index)) and np.ptp(index) > 0
    counts, exposure = hess_cube["run_counts"].values.astype(float), run_exposures(hess_cube)
    m = hess_cube["run_muoneff"].values
    zenith, target = np.array([25.0, 40.0]), np.array([0.9, 1.15])
    w = kernel_weights(hess_cube, zenith, sigma=RAW.kernel_sigma)
    scaled = counts * (m[:, None] ** -index)[:, :, None]
    expected = np.tensordot(w, scaled, 1) / np.tensordot(w, exposure, 1) * (target[:, None] ** index)[:, :, None]
    rate, _ = predict_rates(hess_cube, zenith, recipe=SCALED, efficiency=target)
    np.testing.assert_allclose(rate, np.nan_to_num(expected), rtol=1e-12, atol=0)
    plain, _ = predict_rates(hess_cube, zenith, recipe=RAW, efficiency=target)
    assert not np.allclose(rate, plain)


def test_index_fit_sums_the_cube_runs_over_the_fov(hess_cube):
    used = hess_cube["run_used"].values
    counts = hess_cube["run_counts"].values[used].astype(float).sum(axis=2)
    exposure = run_exposures(hess_cube)[used].sum(axis=2)
    expected = fit_indices(counts, exposure, hess_cube["run_zenith"].values[used], hess_cube["run_muoneff"].values[used])
    for got, want in zip(cube_indices(hess_cube), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_without_target_efficiencies_the_scaling_is_left_out_with_a_warning(hess_cube):
    with pytest.warns(UserWarning, match="MUONEFF for every target"):
        rate, _ = predict_rates(hess_cube, [30.0], recipe=SCALED)
    np.testing.assert_array_equal(rate, predict_rates(hess_cube, [30.0], recipe=RAW)[0])
    no_run_m = hess_cube.drop_vars("run_muoneff")
    with pytest.warns(UserWarning, match="MUONEFF for every run"):
        rate, _ = predict_rates(no_run_m, [30.0], recipe=SCALED, efficiency=[1.0])
    np.testing.assert_array_equal(rate, predict_rates(hess_cube, [30.0], recipe=RAW)[0])


def test_scaling_is_stated_in_the_header_and_read_back():
    recipe = bkgxr.DEFAULT_RECIPE.replace(efficiency_scaling=True)
    header = {key: value for key, (value, _) in recipe.to_header().items()}
    assert header["KESCALE"] is True
    assert bkgxr.Recipe.from_header(header) == recipe
    assert bkgxr.Recipe.from_header({k: v for k, v in header.items() if k != "KESCALE"}).efficiency_scaling is False
    assert recipe.per_observation and bkgxr.Recipe(zenith="bands", efficiency_scaling=True).per_observation


def test_scaled_bands_scale_each_bands_own_counts(hess_cube):
    """Bands of an event-zenith cube sum each run's counts in the band: those are scaled too."""
    from bkgxr.zenith import band_shares

    assert "run_band_counts" in hess_cube
    index, _ = cube_indices(hess_cube)
    m = hess_cube["run_muoneff"].values
    band_counts = hess_cube["run_band_counts"].values  # (run, zenith, energy, offset)
    exposure = run_exposures(hess_cube)
    shares = band_shares(hess_cube)
    zenith, target = np.array([15.0, 30.0]), np.array([0.9, 1.15])
    edges = np.append(hess_cube["zenith_lo"].values, hess_cube["zenith_hi"].values[-1])
    band = np.searchsorted(edges, zenith, side="right") - 1
    expected = []
    for b, t in zip(band, target, strict=True):
        num = np.einsum("re,reo->eo", m[:, None] ** -index, band_counts[:, b])
        den = np.tensordot(shares[:, b], exposure, 1)
        expected.append(np.where(den > 0, num / np.where(den > 0, den, 1), 0) * (t ** index)[:, None])
    rate, _ = predict_rates(hess_cube, zenith, recipe=SCALED.replace(zenith="bands"), efficiency=target)
    np.testing.assert_allclose(rate, np.stack(expected), rtol=1e-12, atol=0)
