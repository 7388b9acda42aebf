"""Zenith models: the background rate at any zenith angle from the cube's runs.

Three recipes, each a pure function of the cube's per-run counts and exposures:

``bands``
    The tutorial's: the rate of the band containing the zenith (the nearest
    band outside them all).
``interpolate``
    Band rates interpolated in cos(zenith), quadratically through the three
    nearest bands, each placed at the livetime-weighted mean cos(zenith) of
    its runs; constant beyond the outermost bands.
``kernel``
    Every run weighted by a Gaussian in cos(zenith) distance,
    ``w = exp(-(cos z_run - cos z) ** 2 / (2 sigma ** 2))``, optionally times
    a Gaussian in time, ``exp(-(t_run - t) ** 2 / (2 time_sigma ** 2))``
    (detectors age: H.E.S.S. DR1 runs predict each other better within a year):
    ``rate = sum(w * counts) / sum(w * exposure)``, with the effective number of
    runs ``(sum w) ** 2 / sum(w ** 2)``.

``leave_out`` drops one run per target, for leave-one-run-out validation.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from .axes import assign_bands, binning_of, exposure_s_mev_sr

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy.typing as npt
    import xarray as xr

    from .axes import Binning

ZenithModel = Literal["bands", "interpolate", "kernel"]
#: Recipes :func:`predict_rates` knows, in the order the CLI lists them.
ZENITH_MODELS: tuple[str, ...] = ("bands", "interpolate", "kernel")
#: Default width of the kernel in cos(zenith).
KERNEL_SIGMA = 0.03
#: Default width of the kernel in time, years (None: no time kernel).
KERNEL_TIME_SIGMA = 1.0
#: Recipe used when none is given: the one that validates best on H.E.S.S. DR1.
DEFAULT_ZENITH_MODEL: ZenithModel = "kernel"
#: Julian year in s, the unit of ``time_sigma``.
SECONDS_PER_YEAR = 365.25 * 86400.0


def run_exposures(cube: xr.Dataset) -> npt.NDArray[np.float64]:
    """Return each run's exposure (s MeV sr) where it counts in the model, 0 elsewhere.

    Shape: (n_runs, n_energy, n_offset): livetime x safe bins x dE x dOmega,
    zero for runs not used.
    """
    binning = binning_of(cube)
    unit = exposure_s_mev_sr(np.ones(1), binning)[0]  # dE x dOmega, (energy, offset)
    livetime = np.where(cube["run_used"].values, cube["run_livetime"].values, 0.0)  # a bad run's is NaN
    exposure = livetime[:, None, None] * cube["run_safe"].values[:, :, None] * unit[None]
    return cast("npt.NDArray[np.float64]", exposure)  # xarray's .values is untyped


def _ratio(counts: npt.NDArray[np.float64], exposure: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(counts, dtype=np.float64)
    np.divide(counts, exposure, out=out, where=exposure > 0)
    return out


def _rate(
    counts: npt.NDArray[np.float64],
    exposure: npt.NDArray[np.float64],
    binning: Binning,
    smooth: Mapping[str, Any] | None,
) -> npt.NDArray[np.float64]:
    """Return counts / exposure, or its smoothed version (:func:`bkgxr.smooth.smooth_rate`)."""
    if smooth is None:
        return _ratio(counts, exposure)
    from .smooth import smooth_rate

    rate, _ = smooth_rate(counts, exposure, offset_edges=binning.offset, energy_edges=binning.energy, **smooth)
    return np.asarray(rate, dtype=np.float64)


def kernel_weights(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    *,
    sigma: float,
    time: npt.NDArray[np.float64] | None = None,
    time_sigma: float | None = None,
) -> npt.NDArray[np.float64]:
    """Return Gaussian kernel weights of the used runs per target, (n_targets, n_runs).

    Computed in log space and scaled to a maximum of 1 per target, so that a
    target far from every run still gets the nearest runs' model.
    """
    cos_run = np.cos(np.radians(cube["run_zenith"].values))
    log_w = -0.5 * ((cos_run[None, :] - np.cos(np.radians(zenith))[:, None]) / sigma) ** 2
    if time_sigma is not None:
        run_time = cube["run_tstart"].values
        if time is None or not np.all(np.isfinite(run_time[cube["run_used"].values])) or not np.all(np.isfinite(time)):
            warnings.warn("no TSTART for every run and target: the kernel weighs zenith only", stacklevel=4)
            time_sigma = None
    if time_sigma is not None:
        time = cast("npt.NDArray[np.float64]", time)  # not None: time_sigma would be None
        log_w = log_w - 0.5 * ((run_time[None, :] - time[:, None]) / (time_sigma * SECONDS_PER_YEAR)) ** 2
    used = cube["run_used"].values
    log_w = np.where(used[None, :], log_w, -np.inf)
    peak = log_w.max(axis=1, keepdims=True)
    return np.asarray(np.exp(log_w - np.where(np.isfinite(peak), peak, 0.0)), dtype=np.float64)


def _weights(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    model: str,
    sigma: float,
    time: npt.NDArray[np.float64] | None,
    time_sigma: float | None,
) -> npt.NDArray[np.float64]:
    """Return run weights per target (n_targets, n_runs) for ``bands`` and ``kernel``."""
    used = cube["run_used"].values
    if model == "kernel":
        return kernel_weights(cube, zenith, sigma=sigma, time=time, time_sigma=time_sigma)
    band = assign_bands(zenith, binning_of(cube).zenith, outside="nearest")
    return np.asarray((cube["run_band"].values[None, :] == band[:, None]) & used[None, :], dtype=np.float64)


def predict_rates(
    cube: xr.Dataset,
    zenith: npt.ArrayLike,
    *,
    model: ZenithModel = "kernel",
    sigma: float = KERNEL_SIGMA,
    time: npt.ArrayLike | None = None,
    time_sigma: float | None = None,
    leave_out: npt.ArrayLike | None = None,
    smooth: Mapping[str, Any] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return the background rate at each target zenith.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube of :func:`bkgxr.build_cube` (or :func:`bkgxr.load_models`).
    zenith : array-like
        Target zenith angles, deg. Shape: (n_targets,).
    model : {"bands", "interpolate", "kernel"}
        Recipe; see the module docstring.
    sigma : float
        Kernel width in cos(zenith) (``kernel`` only).
    time : array-like, optional
        Target times (TSTART, s, same reference as the runs'). Shape: (n_targets,).
    time_sigma : float, optional
        Kernel width in time, years (``kernel`` only); None for no time kernel.
        Without TSTART of every run and target it is dropped, with a warning.
    leave_out : array-like of int, optional
        Index along ``obs_id`` of a run to leave out per target, -1 for none.
    smooth : mapping, optional
        Options of :func:`bkgxr.smooth.smooth_rate`: each model (each band
        before ``interpolate``) is smoothed from its (weighted) counts and
        exposure. None for the raw ratio.

    Returns
    -------
    rate : numpy.ndarray
        MeV-1 s-1 sr-1. Shape: (n_targets, n_energy, n_offset); 0 where no run
        gives exposure.
    n_eff : numpy.ndarray
        Effective number of runs behind each target's model. Shape: (n_targets,).

    Raises
    ------
    ValueError
        For an unknown model or a non-positive sigma.
    """
    if model not in ZENITH_MODELS:
        raise ValueError(f"unknown zenith model {model!r}; choose from {ZENITH_MODELS}")
    if not sigma > 0 or (time_sigma is not None and not time_sigma > 0):
        raise ValueError(f"kernel widths must be positive, got sigma={sigma}, time_sigma={time_sigma}")
    zenith = np.atleast_1d(np.asarray(zenith, dtype=np.float64))
    counts = cube["run_counts"].values.astype(np.float64)
    exposure = run_exposures(cube)
    n_runs = counts.shape[0]
    drop = np.full(zenith.size, -1) if leave_out is None else np.asarray(leave_out, dtype=np.int64)
    keep = np.ones((zenith.size, n_runs))
    keep[np.flatnonzero(drop >= 0), drop[drop >= 0]] = 0.0
    binning = binning_of(cube)
    if model == "interpolate":
        return _interpolate(cube, zenith, counts, exposure, keep, lambda c, x: _rate(c, x, binning, smooth))
    times = None if time is None else np.atleast_1d(np.asarray(time, dtype=np.float64))
    weights = _weights(cube, zenith, model, sigma, times, time_sigma) * keep
    shape = (zenith.size, *counts.shape[1:])
    flat = (counts.reshape(n_runs, -1), exposure.reshape(n_runs, -1))
    rate = _rate((weights @ flat[0]).reshape(shape), (weights @ flat[1]).reshape(shape), binning, smooth)
    n_eff = _ratio(weights.sum(axis=1) ** 2, (weights**2).sum(axis=1))
    return rate, n_eff


def _interpolate(
    cube: xr.Dataset,
    zenith: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    exposure: npt.NDArray[np.float64],
    keep: npt.NDArray[np.float64],
    rate_of: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], npt.NDArray[np.float64]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Band rates (``rate_of(counts, exposure)``, without the left-out run) interpolated in cos(zenith).

    Quadratic (Lagrange) through the three band centroids nearest the target,
    linear with two bands, constant with one; clamped to the outermost
    centroids and to non-negative rates.
    """
    n_bands = cube.sizes["zenith"]
    member = (cube["run_band"].values[None, :] == np.arange(n_bands)[:, None]) & cube["run_used"].values[None, :]
    cos_run = np.cos(np.radians(cube["run_zenith"].values))
    live = cube["run_livetime"].values
    rates = np.zeros((zenith.size, *counts.shape[1:]))
    n_eff = np.zeros(zenith.size)
    for t in range(zenith.size):
        w = member * keep[t][None, :]  # (band, run)
        filled = w.sum(axis=1) > 0
        band_rate = rate_of(np.tensordot(w, counts, 1)[filled], np.tensordot(w, exposure, 1)[filled])
        centre = _ratio((w * live * cos_run).sum(axis=1), (w * live).sum(axis=1))[filled]
        x = np.clip(np.cos(np.radians(zenith[t])), centre.min(), centre.max())
        nodes = np.argsort(np.abs(centre - x), kind="stable")[: min(3, centre.size)]
        for i in nodes:
            others = centre[nodes[nodes != i]]
            rates[t] += np.prod((x - others) / (centre[i] - others)) * band_rate[i]
        n_eff[t] = w[filled][nodes].sum()
    return np.maximum(rates, 0.0), n_eff


