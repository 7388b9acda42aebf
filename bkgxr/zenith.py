"""Zenith models: the background rate at any zenith angle from the cube's runs.

Three recipes, each a pure function of the cube's per-run counts and exposures:

``bands``
    The tutorial's: the rate of the band containing the zenith (the nearest
    band outside them all).
``interpolate``
    Band rates interpolated in cos(zenith), quadratically through the three
    nearest bands, each placed at the time-weighted mean cos(zenith) of
    its runs; constant beyond the outermost bands.
``kernel``
    Every run weighted by a Gaussian in cos(zenith) distance,
    ``w = exp(-(cos z_run - cos z) ** 2 / (2 sigma ** 2))``, optionally times
    a Gaussian in time, ``exp(-(t_run - t) ** 2 / (2 time_sigma ** 2))``
    (detectors age: H.E.S.S. DR1 runs predict each other better within a year),
    and optionally in optical efficiency, ``exp(-ln(m_run / m) ** 2 / (2
    efficiency_sigma ** 2))`` with ``m`` the MUONEFF of the obs-index:
    ``rate = sum(w * counts) / sum(w * exposure)``, with the effective number of
    runs ``(sum w) ** 2 / sum(w ** 2)``.

``leave_out`` drops one run per target, for leave-one-run-out validation.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .axes import assign_bands, binning_of, exposure_s_mev_sr
from .recipe import DEFAULT_RECIPE

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt
    import xarray as xr

    from .axes import Binning
    from .recipe import DeadTime, Recipe, Smoothing

#: Julian year in s, the unit of ``time_sigma``.
SECONDS_PER_YEAR = 365.25 * 86400.0


def run_times(cube: xr.Dataset, deadtime: DeadTime = "ontime") -> npt.NDArray[np.float64]:
    """Return each run's ONTIME (``"ontime"``) or LIVETIME (``"livetime"``) in s, 0 for runs not used."""
    name = {"ontime": "run_ontime", "livetime": "run_livetime"}[deadtime]
    return np.where(cube["run_used"].values, cube[name].values, 0.0)  # a bad run's is NaN


def run_exposures(cube: xr.Dataset, deadtime: DeadTime = "ontime") -> npt.NDArray[np.float64]:
    """Return each run's exposure (s MeV sr) where it counts in the model, 0 elsewhere.

    Shape: (n_runs, n_energy, *fov shape): time x safe bins x kept FoV
    fraction (outside exclusion regions) x dE x dOmega, with the run's ONTIME
    or LIVETIME (``deadtime``), zero for runs not used.
    """
    binning = binning_of(cube)
    unit = exposure_s_mev_sr(np.ones(1), binning)[0]  # dE x dOmega, (energy, *fov)
    time = run_times(cube, deadtime)
    n_fov = unit.ndim - 1
    safe = cube["run_safe"].values.reshape(*cube["run_safe"].shape, *([1] * n_fov))
    kept = cube["run_kept"].values[:, None] if "run_kept" in cube else 1.0  # files of bkgxr 0.1 have none
    exposure = time.reshape(-1, *([1] * (n_fov + 1))) * safe * kept * unit[None]
    return cast("npt.NDArray[np.float64]", exposure)  # xarray's .values is untyped


def _ratio(counts: npt.NDArray[np.float64], exposure: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(counts, dtype=np.float64)
    np.divide(counts, exposure, out=out, where=exposure > 0)
    return out


def _rate(
    counts: npt.NDArray[np.float64],
    exposure: npt.NDArray[np.float64],
    binning: Binning,
    smoothing: Smoothing | None,
) -> npt.NDArray[np.float64]:
    """Return counts / exposure, or its smoothed version (:func:`bkgxr.smooth.smooth_rate`)."""
    if smoothing is None:
        return _ratio(counts, exposure)
    from .smooth import smooth_rate

    rate, _ = smooth_rate(counts, exposure, offset_edges=binning.offset, energy_edges=binning.energy, **smoothing.options())
    return np.asarray(rate, dtype=np.float64)


def _log_gaussian(
    run: npt.NDArray[np.float64],
    target: npt.ArrayLike | None,
    sigma: float | None,
    used: npt.NDArray[np.bool_],
    what: str,
) -> npt.NDArray[np.float64] | float:
    """Return the log of a Gaussian kernel term (n_targets, n_runs), 0 when ``sigma`` is None.

    Without a finite value for every used run and target the term is dropped, with a warning.
    """
    if sigma is None:
        return 0.0
    values = None if target is None else np.atleast_1d(np.asarray(target, dtype=np.float64))
    if values is None or not np.all(np.isfinite(run[used])) or not np.all(np.isfinite(values)):
        warnings.warn(f"no {what} for every run and target: the kernel leaves it out", stacklevel=5)
        return 0.0
    return np.asarray(-0.5 * ((run[None, :] - values[:, None]) / sigma) ** 2, dtype=np.float64)


def kernel_weights(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    *,
    sigma: float,
    time: npt.NDArray[np.float64] | None = None,
    time_sigma: float | None = None,
    efficiency: npt.ArrayLike | None = None,
    efficiency_sigma: float | None = None,
    track: bool = False,
) -> npt.NDArray[np.float64]:
    """Return Gaussian kernel weights of the used runs per target, (n_targets, n_runs).

    The product of Gaussians in cos(zenith) (width ``sigma``), in time (TSTART,
    width ``time_sigma`` in years) and in optical efficiency (MUONEFF, relative
    width ``efficiency_sigma``), the last two when their widths are given. With
    ``track``, a run's zenith term is its Gaussian averaged over the run's
    track (``run_track``: the pointing's zenith at equal-time nodes).
    Computed in log space and scaled to a maximum of 1 per target, so that a
    target far from every run still gets the nearest runs' model.
    """
    used = cube["run_used"].values
    run_zenith = cube["run_track"].values if track and "run_track" in cube else cube["run_zenith"].values[:, None]
    cos_run = np.cos(np.radians(run_zenith))  # (n_runs, n_nodes)
    terms = -0.5 * ((cos_run[None, :, :] - np.cos(np.radians(zenith))[:, None, None]) / sigma) ** 2
    top = terms.max(axis=2, keepdims=True)
    log_w = (top + np.log(np.mean(np.exp(terms - top), axis=2, keepdims=True)))[:, :, 0]  # log of the mean over the track
    log_w = log_w + _log_gaussian(
        cube["run_tstart"].values / SECONDS_PER_YEAR, None if time is None else np.asarray(time) / SECONDS_PER_YEAR,
        time_sigma, used, "TSTART",
    )
    run_efficiency = cube["run_muoneff"].values if "run_muoneff" in cube else np.full(used.size, np.nan)
    log_w = log_w + _log_gaussian(np.log(run_efficiency), None if efficiency is None else np.log(efficiency),
                                  efficiency_sigma, used, "MUONEFF")
    log_w = np.where(used[None, :], log_w, -np.inf)
    peak = log_w.max(axis=1, keepdims=True)
    return np.asarray(np.exp(log_w - np.where(np.isfinite(peak), peak, 0.0)), dtype=np.float64)


def _weights(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    recipe: Recipe,
    time: npt.NDArray[np.float64] | None,
    efficiency: npt.ArrayLike | None,
) -> npt.NDArray[np.float64]:
    """Return run weights per target (n_targets, n_runs) of the ``kernel``."""
    return kernel_weights(cube, zenith, sigma=recipe.kernel_sigma, time=time, time_sigma=recipe.time_sigma,
                          efficiency=efficiency, efficiency_sigma=recipe.efficiency_sigma, track=recipe.track)


def band_shares(cube: xr.Dataset) -> npt.NDArray[np.float64]:
    """Return the share of each used run's time in each zenith band, shape (n_runs, n_bands).

    ``run_band_fraction`` of a cube built with ``event_zenith=True``, else 1 in the band of ``ZEN_PNT``.
    """
    if "run_band_fraction" in cube:
        share = np.asarray(cube["run_band_fraction"].values, dtype=np.float64)
    else:
        share = (cube["run_band"].values[:, None] == np.arange(cube.sizes["zenith"])[None, :]).astype(np.float64)
    return np.asarray(share * cube["run_used"].values[:, None], dtype=np.float64)


def _band_sums(
    cube: xr.Dataset, weights: npt.NDArray[np.float64], counts: npt.NDArray[np.float64], exposure: npt.NDArray[np.float64], band: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return the weighted counts and exposure of zenith band ``band``, and the weights of the runs' shares.

    ``weights``: (n_targets, n_runs); each run counts with its events and its
    share of time in the band (``run_band_counts`` and ``run_band_fraction``
    when the cube has them, else all or nothing by ``run_band``).
    Shapes: (n_targets, n_bins) twice, (n_targets, n_runs).
    """
    n_runs = counts.shape[0]
    shared = weights * band_shares(cube)[None, :, band]
    in_band = cube["run_band_counts"].values[:, band].reshape(n_runs, -1) if "run_band_counts" in cube else None
    band_counts = shared @ counts.reshape(n_runs, -1) if in_band is None else weights @ in_band
    return band_counts, shared @ exposure.reshape(n_runs, -1), shared


def predict_rates(
    cube: xr.Dataset,
    zenith: npt.ArrayLike,
    *,
    recipe: Recipe = DEFAULT_RECIPE,
    time: npt.ArrayLike | None = None,
    leave_out: npt.ArrayLike | None = None,
    efficiency: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return the background rate at each target zenith, per the recipe's run time.

    The rate is ``counts / (time x dE x dOmega)`` summed (weighted) over the
    runs, with each run's ONTIME (``recipe.deadtime == "ontime"``: the rate
    per observation time of GADF files) or LIVETIME (``"livetime"``: a rate
    per live time, which :func:`bkgxr.predict_models` scales by each
    observation's DEADC).

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube of :func:`bkgxr.build_cube`.
    zenith : array-like
        Target zenith angles, deg. Shape: (n_targets,), or (n_targets,
        n_nodes) for targets' tracks: each target's rate is then the mean of
        the rates at its track's zeniths.
    recipe : Recipe
        Zenith model, kernel widths, smoothing (each model, each band before
        ``interpolate``, is smoothed from its weighted counts and exposure)
        and time convention. Without TSTART of every run and target the time
        kernel is dropped, with a warning.
    time : array-like, optional
        Target times (TSTART, s, same reference as the runs'). Shape: (n_targets,).
    leave_out : array-like of int, optional
        Index along ``obs_id`` of a run to leave out per target, -1 for none.
    efficiency : array-like, optional
        Target optical efficiencies (MUONEFF), for the recipe's
        ``efficiency_sigma`` and ``efficiency_scaling`` (whose indices are
        fitted on every used run, the left-out ones included). Without a
        positive one for every target and run, those terms are left out,
        with a warning. Shape: (n_targets,).

    Returns
    -------
    rate : numpy.ndarray
        MeV-1 s-1 sr-1. Shape: (n_targets, n_energy, n_offset); 0 where no run
        gives exposure.
    n_eff : numpy.ndarray
        Effective number of runs behind each target's model. Shape: (n_targets,).

    """
    zenith = np.atleast_1d(np.asarray(zenith, dtype=np.float64))
    if zenith.ndim == 2:  # a track per target: the mean of the models along it
        n_targets, n_nodes = zenith.shape

        def per_node(values: npt.ArrayLike | None) -> npt.NDArray[Any] | None:
            return None if values is None else np.repeat(np.broadcast_to(np.asarray(values), (n_targets,)), n_nodes)

        rate, n_eff = predict_rates(
            cube, zenith.ravel(), recipe=recipe, time=per_node(time), leave_out=per_node(leave_out),
            efficiency=per_node(efficiency),
        )
        return rate.reshape(n_targets, n_nodes, *rate.shape[1:]).mean(axis=1), n_eff.reshape(n_targets, n_nodes).mean(axis=1)
    counts = cube["run_counts"].values.astype(np.float64)
    exposure = run_exposures(cube, recipe.deadtime)
    target_scale = None
    if recipe.efficiency_scaling:
        cube, counts, target_scale = _efficiency_scaled(cube, counts, efficiency, zenith.size, recipe.deadtime)
    n_runs = counts.shape[0]
    drop = np.full(zenith.size, -1) if leave_out is None else np.asarray(leave_out, dtype=np.int64)
    keep = np.ones((zenith.size, n_runs))
    keep[np.flatnonzero(drop >= 0), drop[drop >= 0]] = 0.0
    binning = binning_of(cube)
    if recipe.zenith == "interpolate":
        times_run = run_times(cube, recipe.deadtime)
        rate, n_eff = _interpolate(cube, zenith, counts, exposure, times_run, keep, lambda c, x: _rate(c, x, binning, recipe.smoothing))
        return (rate if target_scale is None else rate * target_scale), n_eff
    shape = (zenith.size, *counts.shape[1:])
    if recipe.zenith == "bands":
        band = assign_bands(zenith, binning.zenith, outside="nearest")
        summed, exposed, weights = np.zeros((zenith.size, counts[0].size)), np.zeros((zenith.size, counts[0].size)), keep.copy()
        for b in np.unique(band):
            at = band == b
            summed[at], exposed[at], weights[at] = _band_sums(cube, keep[at], counts, exposure, int(b))
    else:
        times = None if time is None else np.atleast_1d(np.asarray(time, dtype=np.float64))
        weights = _weights(cube, zenith, recipe, times, efficiency) * keep
        summed, exposed = weights @ counts.reshape(n_runs, -1), weights @ exposure.reshape(n_runs, -1)
    rate = _rate(summed.reshape(shape), exposed.reshape(shape), binning, recipe.smoothing)
    n_eff = _ratio(weights.sum(axis=1) ** 2, (weights**2).sum(axis=1))
    return (rate if target_scale is None else rate * target_scale), n_eff


def _efficiency_scaled(
    cube: xr.Dataset, counts: npt.NDArray[np.float64], efficiency: npt.ArrayLike | None, n_targets: int, deadtime: DeadTime
) -> tuple[xr.Dataset, npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """Return the cube and runs' counts times ``m_run ** -index``, and each target's ``m ** index`` (n_targets, n_energy, 1...).

    :mod:`bkgxr.efficiency`. The cube's ``run_band_counts`` (the bands' own counts) are scaled as
    the counts. Cube and counts unchanged and None when a run or target has no positive MUONEFF.
    """
    from .efficiency import cube_indices, known

    target = np.full(n_targets, np.nan) if efficiency is None else np.broadcast_to(np.asarray(efficiency, np.float64), (n_targets,))
    if not known(target):
        warnings.warn("no positive MUONEFF for every target: the efficiency scaling is left out", stacklevel=4)
        return cube, counts, None
    fitted = cube_indices(cube, deadtime)
    if fitted is None:
        return cube, counts, None
    index = fitted[0]
    fov = (1,) * (counts.ndim - 2)
    run_m = np.where(cube["run_used"].values, cube["run_muoneff"].values, 1.0)  # unused runs weigh nothing anyway
    factor = (run_m[:, None] ** -index[None, :]).reshape(*counts.shape[:2], *fov)  # (run, energy, 1...)
    if "run_band_counts" in cube:  # (run, zenith, energy, fov...)
        band_counts = cube["run_band_counts"]
        cube = cube.assign(run_band_counts=(band_counts.dims, band_counts.values * factor[:, None]))
    return cube, counts * factor, (target[:, None] ** index[None, :]).reshape(n_targets, index.size, *fov)


def _interpolate(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    exposure: npt.NDArray[np.float64],
    run_time: npt.NDArray[np.float64],
    keep: npt.NDArray[np.float64],
    rate_of: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], npt.NDArray[np.float64]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Band rates (``rate_of(counts, exposure)``, without the left-out run) interpolated in cos(zenith).

    Quadratic (Lagrange) through the three band centroids nearest the target,
    linear with two bands, constant with one; clamped to the outermost
    centroids and to non-negative rates. Band centroids are weighted by the
    runs' times ``run_time`` (their share in the band, :func:`band_shares`).
    """
    n_bands = cube.sizes["zenith"]
    cos_run = np.cos(np.radians(cube["run_zenith"].values))
    rates = np.zeros((zenith.size, *counts.shape[1:]))
    n_eff = np.zeros(zenith.size)
    for t in range(zenith.size):
        sums = [_band_sums(cube, keep[t][None, :], counts, exposure, b) for b in range(n_bands)]
        w = np.concatenate([shared for _, _, shared in sums])  # (band, run): each run's share of time
        filled = w.sum(axis=1) > 0
        band_counts = np.concatenate([c for c, _, _ in sums]).reshape(n_bands, *counts.shape[1:])
        band_exposure = np.concatenate([x for _, x, _ in sums]).reshape(n_bands, *counts.shape[1:])
        band_rate = rate_of(band_counts[filled], band_exposure[filled])
        centre = _ratio((w * run_time * cos_run).sum(axis=1), (w * run_time).sum(axis=1))[filled]
        x = np.clip(np.cos(np.radians(zenith[t])), centre.min(), centre.max())
        nodes = np.argsort(np.abs(centre - x), kind="stable")[: min(3, centre.size)]
        for i in nodes:
            others = centre[nodes[nodes != i]]
            rates[t] += np.prod((x - others) / (centre[i] - others)) * band_rate[i]
        n_eff[t] = w[filled][nodes].sum()
    return np.maximum(rates, 0.0), n_eff


