"""Optical-efficiency scaling: each run's counts brought to the observation's MUONEFF.

A telescope of higher optical efficiency (MUONEFF of the obs-index, from muon rings) sees
fainter showers and records more background. Per energy bin the rate is taken to scale as
``MUONEFF ** index``; the index is fitted on the cube's used runs by a Poisson regression of
each run's counts (summed over the field of view) on ``ln MUONEFF``, with the exposure as
offset and a quadratic in cos(zenith) as nuisance:

    counts_i ~ Poisson(exposure_i * exp(a + b u_i + c u_i ** 2 + index * ln m_i)),

``u = cos z - mean``. Energy bins whose index has a standard error above :data:`MAX_ERROR`
(sparse bins, at the highest energies) take the index of the nearest bin measured better.
A recipe with ``efficiency_scaling`` sums ``counts_i * m_i ** -index`` over the runs and
multiplies the model by ``m ** index`` of the observation (:func:`bkgxr.zenith.predict_rates`):
each run counts as if taken at the observation's efficiency, whatever the kernel's weights.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from .poisson_fits import fisher_scoring, safe_div
from .zenith import run_exposures

if TYPE_CHECKING:
    import numpy.typing as npt
    import xarray as xr

    from .recipe import DeadTime

    Array = npt.NDArray[np.float64]

#: Largest standard error of an energy bin's own index; bins measured worse borrow the nearest one's.
MAX_ERROR = 0.25
#: Width of the Gaussian prior on the index, which only matters when the runs' MUONEFF hardly differ.
INDEX_PRIOR_SIGMA = 3.0
_RIDGE = 1e-6  # on the zenith terms: finite when every run has the same zenith


def known(efficiency: npt.ArrayLike) -> bool:
    """Return whether every value is a usable MUONEFF: finite and positive."""
    values = np.asarray(efficiency, dtype=np.float64)
    return bool(np.all(np.isfinite(values) & (values > 0)))


def fit_indices(
    counts: Array, exposure: Array, zenith: Array, efficiency: Array, *, max_error: float = MAX_ERROR
) -> tuple[Array, Array]:
    """Fit the power of MUONEFF per energy bin, from runs' counts and exposures.

    Parameters
    ----------
    counts, exposure : numpy.ndarray
        Each run's counts and exposure (any unit) per energy bin, summed over the
        FoV. Shape: (n_runs, n_energy). Bins of zero exposure are left out.
    zenith : numpy.ndarray
        Runs' zenith angles, deg. Shape: (n_runs,).
    efficiency : numpy.ndarray
        Runs' MUONEFF, positive. Shape: (n_runs,).
    max_error : float
        Largest standard error of an energy bin's own index; the other bins
        take the index of the nearest bin within it (0 without any).

    Returns
    -------
    index, error : numpy.ndarray
        The power and its standard error (NaN for bins without counts).
        Shape: (n_energy,).
    """
    n = np.where(exposure > 0, counts, 0.0).T  # (E, R)
    x = exposure.T
    u = np.cos(np.radians(zenith)) - np.mean(np.cos(np.radians(zenith)))
    log_m = np.log(efficiency)
    design = np.column_stack([np.ones_like(u), u, u**2, log_m - log_m.mean()])  # (R, 4)
    prior = np.array([0.0, _RIDGE, _RIDGE, INDEX_PRIOR_SIGMA**-2])
    fitted = np.flatnonzero(n.sum(axis=1) > 0)

    def evaluate(theta: Array, rows: npt.NDArray[np.intp]) -> tuple[Array, Array, Array]:
        eta = theta @ design.T  # (F, R)
        mu = x[fitted[rows]] * np.exp(eta)
        obs = n[fitted[rows]]
        objective = np.sum(obs * eta - mu, axis=1) - 0.5 * (theta**2 @ prior)
        score = (obs - mu) @ design - theta * prior
        info = np.einsum("fr,ri,rj->fij", mu, design, design) + np.diag(prior)
        return objective, score, info

    index, error = np.zeros(n.shape[0]), np.full(n.shape[0], np.nan)
    if fitted.size:
        start = np.zeros((fitted.size, 4))
        start[:, 0] = np.log(safe_div(n[fitted].sum(axis=1), x[fitted].sum(axis=1)))
        theta, cov = fisher_scoring(start, evaluate)
        index[fitted], error[fitted] = theta[:, 3], np.sqrt(cov[:, 3, 3])
    good = np.flatnonzero(error <= max_error)
    if good.size == 0:
        return np.zeros_like(index), error
    nearest = good[np.argmin(np.abs(np.arange(index.size)[:, None] - good[None, :]), axis=1)]
    return index[nearest], error


def cube_indices(cube: xr.Dataset, deadtime: DeadTime = "ontime") -> tuple[Array, Array] | None:
    """Return :func:`fit_indices` of the cube's used runs, or None without MUONEFF for each (with a warning)."""
    used = cube["run_used"].values
    efficiency = cube["run_muoneff"].values[used] if "run_muoneff" in cube else np.full(used.sum(), np.nan)
    if not known(efficiency):
        warnings.warn("no positive MUONEFF for every run: the efficiency scaling is left out", stacklevel=3)
        return None
    n_fov = cube["run_counts"].ndim - 2
    axes = tuple(range(2, 2 + n_fov))
    counts = cube["run_counts"].values[used].astype(np.float64).sum(axis=axes)
    exposure = run_exposures(cube, deadtime)[used].sum(axis=axes)
    return fit_indices(counts, exposure, cube["run_zenith"].values[used], efficiency)
