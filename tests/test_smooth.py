"""Smoothing of sparse bins, against the simulated truth: counts kept, scatter reduced, no holes or spikes."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from smooth_reference import reference_smooth_rate

import bkgxr
from bkgxr.geometry import ring_solid_angle_sr
from bkgxr.rate_model import RateModel
from bkgxr.simulate import simulate_store
from bkgxr.smooth import smooth_cube, smooth_rate
from bkgxr.truth import truth_cube
from bkgxr.units import RATE_UNIT
from bkgxr.zenith import kernel_weights, run_exposures

#: At seed 4 the six runs fall two by two in the bands 0-30-45-60 deg; 60-90 has none (zero exposure).
BINNING = bkgxr.Binning(zenith=[0, 30, 45, 60, 90])
FILLED = [0, 1, 2]
MIN_COUNTS = 50  # the default of smooth_rate


def _edges(cube):
    return {
        "offset_edges": np.append(cube["offset_lo"].values, cube["offset_hi"].values[-1]),
        "energy_edges": np.append(cube["energy_lo"].values, cube["energy_hi"].values[-1]),
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Six runs of ~3,000 events, their cube (tutorial energy and offset bins), its smoothing and the truth."""
    simulation = simulate_store(
        tmp_path_factory.mktemp("smooth") / "store", n_runs=6, events_per_run=3000, seed=4, date="2026-01-01"
    )
    store = bkgxr.open_store(simulation.path)
    runs = store.select(bkgxr.OFF_QUERY)
    with pytest.warns(UserWarning, match="no run"):
        cube = bkgxr.build_cube(runs, binning=BINNING).compute()
    with pytest.warns(UserWarning, match="no run"):
        safe = bkgxr.build_cube(runs, binning=BINNING, safe_energy=True).compute()
    assert cube["n_runs"].values.tolist() == [2, 2, 2, 0]
    return SimpleNamespace(
        store=store, model=simulation.model, cube=cube, safe=safe, smoothed=smooth_cube(cube),
        truth=truth_cube(store, binning=BINNING),
    )


def _pulls(rate, truth, cut):
    """(rate - truth) / expected Poisson error of the truth, in bins expecting more than ``cut`` events."""
    sel = truth["counts"].values > cut
    return ((rate - truth["rate"].values) / np.where(sel, truth["rate_err"].values, 1.0))[sel]


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{}, {"degree": 1}, {"min_counts": 10, "n_tail": 2}, {"degree": 5, "min_counts": 200, "shape_counts": 1}]
)
def test_populated_energy_bins_keep_their_counts(sim, options):
    cube = sim.cube
    rate, _ = smooth_rate(cube["counts"].values, cube["exposure"].values, **_edges(cube), **options)
    counts = cube["counts"].values.sum(axis=-1)
    populated = counts >= options.get("min_counts", MIN_COUNTS)
    assert populated.sum() > 15
    kept = (rate * cube["exposure"].values).sum(axis=-1)
    np.testing.assert_allclose(kept[populated], counts[populated], rtol=1e-9, atol=0)
    # the shape did change: not the raw rate
    assert np.abs(rate - cube["rate"].values)[populated].max() > 0


# --- against the truth ---------------------------------------------------------------------------


def test_smoothing_reduces_the_scatter_against_the_truth(sim):
    raw = _pulls(sim.cube["rate"].values, sim.truth, cut=1)
    smooth = _pulls(sim.smoothed["rate"].values, sim.truth, cut=1)
    rms_raw, rms_smooth = np.sqrt(np.mean(raw**2)), np.sqrt(np.mean(smooth**2))
    assert raw.size > 300
    assert 0.9 < rms_raw < 1.2  # the raw rate scatters by its Poisson errors
    assert rms_smooth < 0.6 * rms_raw, (rms_raw, rms_smooth)  # measured: 1.06 -> 0.40 (0.30 to 0.46 over 15 seeds)
    assert abs(smooth.mean()) < 0.2
    # rate_err is a fair error of the smoothed rate
    sel = sim.truth["counts"].values > 1
    own = (sim.smoothed["rate"].values - sim.truth["rate"].values)[sel] / sim.smoothed["rate_err"].values[sel]
    assert 0.6 < np.sqrt(np.mean(own**2)) < 1.5  # measured 1.03 (0.84 to 1.30 over 15 seeds)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"offset_sigma": 1.3 * 1.1}, id="radial width +10%"),
        pytest.param({"offset_sigma": 1.3 / 1.1}, id="radial width -10%"),
        pytest.param({"index": 2.8}, id="spectral index +0.1"),
        pytest.param({"scale": 1.1}, id="normalisation +10%"),
    ],
)
def test_the_right_truth_is_accepted_and_a_wrong_one_rejected(sim, wrong):
    def mean_square(truth):
        sel = sim.truth["counts"].values > 100  # 66 bins
        pulls = (sim.smoothed["rate"].values - truth["rate"].values)[sel] / sim.truth["rate_err"].values[sel]
        return float(np.mean(pulls**2))

    scale = wrong.pop("scale", 1.0)
    false = truth_cube(sim.store, model=dataclasses.replace(sim.model, **wrong), binning=BINNING)
    false["rate"] = false["rate"] * scale
    assert mean_square(sim.truth) < 0.6  # measured 0.22 (raw rate: 1.06)
    assert mean_square(false) > 1.5  # measured 2.3 to 5.4 (raw rate: 3.3 to 6.0)


def test_no_holes_inside_the_populated_range_and_no_spikes(sim):
    rate, raw, truth = sim.smoothed["rate"].values, sim.cube["rate"].values, sim.truth["rate"].values
    counts = sim.cube["counts"].values.sum(axis=-1)
    for band in FILLED:
        populated = np.flatnonzero(counts[band] >= MIN_COUNTS)
        inside = slice(populated[0], None)  # up to 100 TeV, the end of the simulated spectrum
        assert np.all(rate[band, inside] > 0)
        assert np.sum(raw[band, inside] == 0) > 20  # where the raw rate had holes
        # falling in energy above the peak, in every offset bin (the truth falls by ~2.7 a bin)
        peak = int(np.argmax(counts[band]))
        assert np.all(np.diff(rate[band, peak:], axis=0) <= 0)
        assert np.any(np.diff(raw[band, peak:], axis=0) > 0)
        # the power-law tail, where bins hold fewer than MIN_COUNTS events, follows the truth
        tail = slice(populated[-1] + 1, None)
        ratio = rate[band, tail] / truth[band, tail]
        assert ratio.size > 20 and np.all((1 / 3 < ratio) & (ratio < 3)), ratio  # 0.52 to 2.07 over 15 seeds


# --- zero exposure -------------------------------------------------------------------------------


def test_bins_without_exposure_stay_zero(sim):
    empty = sim.smoothed.isel(zenith=3)
    assert float(np.abs(empty["exposure"]).max()) == 0
    assert float(np.abs(empty["rate"]).max()) == 0 and float(np.abs(empty["rate_err"]).max()) == 0
    # below the safe energy thresholds: no exposure, no rate; above it, no holes
    safe = smooth_cube(sim.safe)
    no_exposure = sim.safe["exposure"].values == 0
    assert no_exposure[FILLED].sum() > 0
    assert np.all(safe["rate"].values[no_exposure] == 0) and np.all(safe["rate_err"].values[no_exposure] == 0)
    counts = sim.safe["counts"].values.sum(axis=-1)
    for band in FILLED:
        first = np.flatnonzero(counts[band] >= MIN_COUNTS)[0]
        assert np.all(safe["rate"].values[band, first:] > 0)


def test_offset_bins_without_exposure_stay_zero_and_the_rest_keeps_its_counts(sim):
    counts, exposure = sim.cube["counts"].values[1], sim.cube["exposure"].values[1].copy()
    holes = np.random.default_rng(3).random(exposure.shape) < 0.2
    exposure[holes] = 0.0
    rate, err = smooth_rate(counts, exposure, **_edges(sim.cube))
    assert np.all(rate[holes] == 0) and np.all(err[holes] == 0)
    kept_counts = np.where(holes, 0, counts).sum(axis=-1)
    populated = kept_counts >= MIN_COUNTS
    np.testing.assert_allclose((rate * exposure).sum(axis=-1)[populated], kept_counts[populated], rtol=1e-9)


# --- noise-free input: the rule, bin by bin ------------------------------------------------------


def test_expected_counts_give_back_the_truth_in_every_rule():
    """Counts equal to their expectation (x 1000): the fit, the power-law tail and the interpolation are exact."""
    model = RateModel(norm=1e-3)
    runs = {"OBS_ID": [1, 2], "ZEN_PNT": [10.0, 30.0], "ONTIME": [1750.0, 1800.0], "LIVETIME": [1600.0, 1700.0]}
    truth = truth_cube(pd.DataFrame(runs), model, bkgxr.Binning(zenith=[0, 60]))
    counts, exposure = 1000 * truth["counts"].values[0], 1000 * truth["exposure"].values[0]
    total = counts.sum(axis=-1)
    energy = truth["energy"].values
    # sparse: a bin at ~5 TeV (between), the bins above ~20 TeV (tail) and the lowest (below)
    middle, top = int(np.searchsorted(energy, 5.0)), int(np.searchsorted(energy, 20.0))
    thinned = counts.copy()
    thinned[middle] *= 1e-4
    thinned[0] *= 1e-4
    min_counts = 1.001 * total[top]
    assert total[top - 1] > min_counts and thinned[middle].sum() < min_counts and thinned[0].sum() < min_counts
    rate, _ = smooth_rate(thinned, exposure, **_edges(truth), min_counts=min_counts)
    ratio = rate / truth["rate"].values[0]
    populated = np.ones(energy.size, dtype=bool)
    populated[[0, middle]], populated[top:] = False, False
    np.testing.assert_allclose(ratio[populated], 1.0, atol=1e-3)  # radial fit
    np.testing.assert_allclose(ratio[middle], 1.0, atol=2e-3)  # log-linear between neighbours
    np.testing.assert_allclose(ratio[top:], 1.0, atol=5e-3)  # power law over 0.7 decades
    # below the first populated bin the bin keeps its own (thinned) counts
    np.testing.assert_allclose((rate[0] * exposure[0]).sum(), thinned[0].sum(), rtol=1e-9)


def test_a_radial_shape_that_changes_with_energy_is_followed_where_bins_are_rich():
    """Expected counts of a Gaussian acceptance widening with energy: each rich bin keeps its own width."""
    energy, offset = np.geomspace(0.5, 50, 11), np.sqrt(np.linspace(0, 9, 10))
    centre = np.sqrt(energy[:-1] * energy[1:])
    sigma = 0.9 + 0.3 * np.log10(centre / 0.5)  # 0.9 to 1.5 deg
    nodes = np.linspace(offset[:-1], offset[1:], 201)  # (201, n_offset): ring means on a fine grid, in solid angle
    weights = np.sin(np.radians(nodes))
    truth = np.einsum("kj,kej->ej", weights, np.exp(-0.5 * (nodes[:, None, :] / sigma[None, :, None]) ** 2)) / weights.sum(0)
    truth = truth * (centre / 0.5)[:, None] ** -2.7
    exposure = 1e10 * np.diff(energy)[:, None] * ring_solid_angle_sr(offset)[None, :]
    counts = truth * exposure  # 2.6e6 events in the lowest energy bin, 5e3 in the highest
    rate, _ = smooth_rate(counts, exposure, offset_edges=offset, energy_edges=energy)
    np.testing.assert_allclose(rate / truth, 1.0, atol=2e-3)


# --- against the slice-by-slice reference ----------------------------------------------------------

#: Batched and slice-by-slice smoothing agree to this relative tolerance (fits converge to ~1e-10 in
#: their parameters; in practice they agree to ~1e-14), and have their zeros in the same bins.
REFERENCE_RTOL = 1e-9


def _kernel_slices(cube, scale):
    """Kernel-weighted counts and exposures of one model per run (the default recipe's widths), scaled."""
    weights = kernel_weights(cube, cube["run_zenith"].values, sigma=0.03, time=cube["run_tstart"].values, time_sigma=1.0)
    counts = np.tensordot(weights, cube["run_counts"].values.astype(float), 1)
    return scale * counts, scale * np.tensordot(weights, run_exposures(cube), 1)


def _assert_as_reference(counts, exposure, edges, **options):
    rate, err = smooth_rate(counts, exposure, **edges, **options)
    ref_rate, ref_err = reference_smooth_rate(counts, exposure, **edges, **options)
    np.testing.assert_array_equal(rate == 0, ref_rate == 0)
    np.testing.assert_allclose(rate, ref_rate, rtol=REFERENCE_RTOL, atol=0)
    np.testing.assert_allclose(err, ref_err, rtol=REFERENCE_RTOL, atol=0)


@pytest.mark.parametrize("options", [{}, {"degree": 1}, {"min_counts": 10, "n_tail": 2}, {"degree": 5, "shape_counts": 1}])
@pytest.mark.parametrize("scale", [1.0, 0.05, 0.002])
def test_batched_smoothing_is_the_slice_by_slice_reference_on_simulated_models(sim, options, scale):
    counts, exposure = _kernel_slices(sim.cube, scale)
    total = counts.sum(axis=-1)
    populated = total >= options.get("min_counts", MIN_COUNTS)
    if scale == 0.05:  # sparse bins above the last populated one: the power-law tails are fitted
        last = np.where(populated, np.arange(total.shape[1]), -1).max(axis=1)
        assert ((total > 0) & (np.arange(total.shape[1]) > last[:, None])).any(axis=1).sum() >= 3
    _assert_as_reference(counts, exposure, _edges(sim.cube), **options)
    _assert_as_reference(sim.cube["counts"].values * scale, sim.cube["exposure"].values * scale, _edges(sim.cube), **options)


def test_batched_smoothing_is_the_slice_by_slice_reference_on_hess_models(hess_cube):
    for scale in (1.0, 0.01):
        counts, exposure = _kernel_slices(hess_cube, scale)
        _assert_as_reference(counts, exposure, _edges(hess_cube))
    _assert_as_reference(hess_cube["counts"].values, hess_cube["exposure"].values, _edges(hess_cube))


# --- plumbing ------------------------------------------------------------------------------------


def test_leading_dims_broadcast_and_slices_are_independent(sim):
    counts, exposure = sim.cube["counts"].values, sim.cube["exposure"].values
    rate, err = smooth_rate(counts, exposure, **_edges(sim.cube))
    for band in range(counts.shape[0]):
        alone = smooth_rate(counts[band], exposure[band], **_edges(sim.cube))
        # each fit stops at its own convergence, whatever else is in the batch
        np.testing.assert_allclose(rate[band], alone[0], rtol=1e-9, atol=0)
        np.testing.assert_allclose(err[band], alone[1], rtol=1e-6, atol=0)
    # one exposure for several count arrays (e.g. per-observation models)
    shared = smooth_rate(counts[:3], exposure[1], **_edges(sim.cube))[0]
    np.testing.assert_allclose(shared[1], rate[1], rtol=1e-9, atol=0)


def test_a_slice_without_populated_bins_is_left_raw():
    counts = np.array([[3.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    exposure = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 0.0]])
    rate, err = smooth_rate(counts, exposure, offset_edges=[0, 1, 2, 3], energy_edges=[1, 2, 4])
    np.testing.assert_array_equal(rate, [[3.0, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(err, [[np.sqrt(3.0), 0.5, 0.0], [1.0, 0.0, 0.0]])


def test_smooth_cube_replaces_the_rate_and_says_how(sim):
    cube, smoothed = sim.cube, sim.smoothed
    assert "degree <= 3" in smoothed.attrs["smoothing"] and ">= 50" in smoothed.attrs["smoothing"]
    assert "smoothing" not in cube.attrs and "smoothing" in smoothed["rate"].attrs
    for name in ("rate", "rate_err"):
        assert smoothed[name].dims == cube[name].dims
        assert smoothed[name].attrs["units"] == cube[name].attrs["units"] == str(RATE_UNIT)
    for name in ("counts", "exposure", "run_counts", "ontime", "livetime", "exposed_ontime"):
        assert smoothed[name].equals(cube[name])
    rate, err = smooth_rate(cube["counts"].values, cube["exposure"].values, **_edges(cube))
    np.testing.assert_array_equal(smoothed["rate"].values, rate)
    np.testing.assert_array_equal(smoothed["rate_err"].values, err)
    # any dim order, dask-backed or not
    other = smooth_cube(cube.transpose("offset", "zenith", "energy", ...).chunk(), degree=2)
    np.testing.assert_allclose(
        other["rate"].transpose(*bkgxr.DIMS).values,
        smooth_rate(cube["counts"].values, cube["exposure"].values, **_edges(cube), degree=2)[0],
        rtol=1e-12,
    )
    with pytest.raises(TypeError, match="unknown smoothing option"):
        smooth_cube(cube, method="kernel")
    with pytest.raises(ValueError, match="counts"):
        smooth_cube(cube.drop_vars("counts"))



@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"degree": 0}, "degree"),
        ({"degree": 1.5}, "degree"),
        ({"min_counts": 0}, "min_counts"),
        ({"n_tail": 1}, "n_tail"),
        ({"energy_edges": [1, 2, 4]}, "n_energy"),
        ({"energy_edges": [1, 4, 2, 8]}, "increasing"),
        ({"counts": -np.ones((3, 3))}, "non-negative"),
        ({"exposure": np.full((3, 3), np.nan)}, "finite"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    args = {"counts": np.ones((3, 3)), "exposure": np.ones((3, 3)), "offset_edges": [0, 1, 2, 3],
            "energy_edges": [1, 2, 4, 8], **kwargs}
    with pytest.raises(ValueError, match=match):
        smooth_rate(args.pop("counts"), args.pop("exposure"), **args)


def test_ring_solid_angle_is_the_weight_of_the_unit_mean_shape(sim):
    """The normalisation works on the solid-angle mean: a flat truth gives a flat smoothed rate."""
    edges = _edges(sim.cube)
    omega = ring_solid_angle_sr(edges["offset_edges"])
    exposure = 100.0 * omega[None, :] * np.ones((4, 1))
    rate, _ = smooth_rate(exposure * 3.0, exposure, **edges | {"energy_edges": edges["energy_edges"][:5]})
    np.testing.assert_allclose(rate, 3.0, rtol=1e-6)
