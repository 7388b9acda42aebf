"""The smoothing of bkgxr 4b22894 (before it was batched across slices), kept as an independent reference.

:func:`reference_smooth_rate` is :func:`bkgxr.smooth.smooth_rate` as it was: the energy
windows and the normalisation (with its power-law tail, one small Newton fit per slice)
computed slice by slice in Python loops; the radial-shape fits batched over every slice,
a fit moving on until the slowest of its batch converges. The tests compare the batched
smoothing with it, and ``benchmarks/recipe.py`` times it as the "before".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bkgxr.axes import to_edges
from bkgxr.geometry import ring_solid_angle_sr
from bkgxr.recipe import Smoothing

Array = npt.NDArray[np.float64]
RIDGE = 0.01
_NODES = 8
_MAX_ITER, _TOL, _MAX_STEP = 100, 1e-10, 5.0


def reference_smooth_rate(
    counts: npt.ArrayLike,
    exposure: npt.ArrayLike,
    *,
    offset_edges: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    degree: int = 3,
    min_counts: float = 50.0,
    shape_counts: float = 500.0,
    n_tail: int = 4,
) -> tuple[Array, Array]:
    """:func:`bkgxr.smooth.smooth_rate` as bkgxr computed it before batching: slice by slice."""
    Smoothing(degree=degree, min_counts=min_counts, shape_counts=shape_counts, n_tail=n_tail)  # checks the options
    offset = to_edges(offset_edges, "offset")
    energy = to_edges(energy_edges, "energy")
    n, e = np.broadcast_arrays(np.asarray(counts, dtype=np.float64), np.asarray(exposure, dtype=np.float64))
    if n.ndim < 2 or n.shape[-2:] != (energy.size - 1, offset.size - 1):
        raise ValueError(
            f"counts and exposure of shape {n.shape} do not end in (n_energy, n_offset) = "
            f"({energy.size - 1}, {offset.size - 1}) of the edges"
        )
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(e)) and np.all(n >= 0) and np.all(e >= 0)):
        raise ValueError("counts and exposure must be finite and non-negative")
    shape = n.shape
    n_e, n_o = shape[-2:]
    e = e.reshape(-1, n_e, n_o)
    n = np.where(e > 0, n.reshape(-1, n_e, n_o), 0.0)  # counts without exposure are ignored
    total = n.sum(axis=-1)
    populated = (total >= min_counts) & (total > 0)
    exposed = e.sum(axis=-1) > 0
    pools = np.stack([_pools(total[k], exposed[k], shape_counts) for k in range(n.shape[0])])  # (L, E, E)
    fitted = pools.any(axis=-1) & populated.any(axis=-1, keepdims=True)
    pooled_n = np.einsum("kje,keo->kjo", pools, n)[fitted]
    pooled_e = np.einsum("kje,keo->kjo", pools, e)[fitted]
    avg, var_shape = _select_degree(pooled_n, pooled_e, offset, int(degree))
    omega = ring_solid_angle_sr(offset)
    shapes, var_s = np.zeros(n.shape), np.zeros(n.shape)
    shapes[fitted] = avg / (avg @ (omega / omega.sum()))[:, None]
    var_s[fitted] = var_shape
    rate, rate_err = np.zeros(n.shape), np.zeros(n.shape)
    for k in range(n.shape[0]):
        rate[k], rate_err[k] = _normalise(n[k], e[k], shapes[k], var_s[k], populated[k], energy, int(n_tail))
    return rate.reshape(shape), rate_err.reshape(shape)


def _pools(total: Array, exposed: npt.NDArray[np.bool_], shape_counts: float) -> npt.NDArray[np.bool_]:
    """Return the energy window pooled for the shape of each exposed bin (rule 1): (n_energy, n_energy)."""
    n_e = total.size
    j = np.arange(n_e)
    pools = np.zeros((n_e, n_e), dtype=bool)
    if not np.any(total[exposed] > 0):
        return pools
    for centre in np.flatnonzero(exposed):
        for half in range(n_e):
            window = exposed & (np.abs(j - centre) <= half)
            if total[window].sum() >= shape_counts:
                break
        pools[centre] = window
    return pools


def _safe_div(num: Array, den: Array) -> Array:
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _newton(theta: Array, evaluate: Callable[[Array], tuple[Array, Array, Array]]) -> tuple[Array, Array]:
    """Maximise objectives by Fisher scoring with step halving; vectorised over the first axis.

    ``evaluate(theta)`` returns (objective (F,), score (F, P), information (F, P, P)).
    Returns the maximum and the inverse information there (the covariance).
    """
    obj, score, info = evaluate(theta)
    for _ in range(_MAX_ITER):
        step = np.linalg.solve(info, score[..., None])[..., 0]
        biggest = np.abs(step).max(axis=-1, initial=0.0)
        step *= np.minimum(1.0, _MAX_STEP / np.maximum(biggest, 1e-300))[:, None]
        if not np.any(biggest > _TOL):
            break
        t = np.ones(theta.shape[0])
        for _ in range(40):  # halve each fit's step until its objective does not drop
            trial = theta + t[:, None] * step
            new_obj, new_score, new_info = evaluate(trial)
            good = new_obj >= obj - 1e-12 * np.abs(obj)
            if np.all(good):
                break
            t = np.where(good, t, 0.5 * t)
        accept = good
        theta = np.where(accept[:, None], trial, theta)
        obj = np.where(accept, new_obj, obj)
        score = np.where(accept[:, None], new_score, score)
        info = np.where(accept[:, None, None], new_info, info)
    return theta, np.asarray(np.linalg.inv(info), dtype=np.float64)


def _select_degree(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array]:
    """Fit degrees 1..``degree`` per row and keep, per row, the one of lowest BIC, ``(d + 1) ln N - 2 ln L``."""
    fits = [_fit_shapes(n, e, offset, d) for d in range(1, degree + 1)]
    log_n = np.log(np.maximum(n.sum(axis=-1), 1.0))
    bic = np.stack([(d + 1) * log_n - 2.0 * fit[2] for d, fit in enumerate(fits, start=1)])
    best = np.argmin(bic, axis=0)
    rows = np.arange(n.shape[0])
    avg, var_shape = (np.stack([fit[k] for fit in fits])[best, rows] for k in range(2))
    return avg, var_shape


def _fit_shapes(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array, Array]:
    """Fit ``exp(polynomial(u))`` per row; return ring means (F, O), variance of log(shape) (F, O) and ln L (F,)."""
    t = 1.0 - np.cos(np.radians(offset))
    u = t / t[-1]
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    u_nodes = 0.5 * (u[:-1] + u[1:])[:, None] + 0.5 * np.diff(u)[:, None] * nodes  # (O, K)
    basis = np.polynomial.legendre.legvander(2.0 * u_nodes - 1.0, degree)  # (O, K, P), P_0 = 1
    w = 0.5 * weights
    penalty = RIDGE * np.r_[0.0, np.ones(degree)]

    def ring_means(beta: Array) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            ex = np.exp(np.einsum("okp,fp->fok", basis, beta))
        avg = ex @ w
        grad_log = _safe_div(np.einsum("fok,k,okp->fop", ex, w, basis), avg[..., None])  # d log avg / d beta
        return avg, grad_log

    def evaluate(beta: Array) -> tuple[Array, Array, Array]:
        avg, h = ring_means(beta)
        with np.errstate(invalid="ignore", over="ignore"):
            mu = e * avg
            log_mu = np.log(np.where(mu > 0, mu, 1.0))
            obj = np.sum(np.where(n > 0, n * log_mu, 0.0) - mu, axis=-1) - 0.5 * (penalty * beta**2).sum(axis=-1)
            obj = np.where(np.isfinite(obj), obj, -np.inf)
            score = np.einsum("fo,fop->fp", n - mu, h) - penalty * beta
            info = np.einsum("fo,fop,foq->fpq", mu, h, h) + np.diag(penalty)
        bad = ~np.isfinite(obj)
        score[bad], info[bad] = 0.0, np.eye(degree + 1)
        return obj, score, info

    beta = np.zeros((n.shape[0], degree + 1))
    beta[:, 0] = np.log(n.sum(axis=-1) / e.sum(axis=-1))
    beta, cov = _newton(beta, evaluate)
    avg, h = ring_means(beta)
    omega = ring_solid_angle_sr(offset)
    mean_h = np.einsum("o,fo,fop->fp", omega, avg, h) / (avg @ omega)[:, None]
    g = h - mean_h[:, None, :]  # d log(shape normalised to unit mean) / d beta
    mu = e * avg
    log_like = np.sum(np.where(n > 0, n * np.log(np.where(mu > 0, mu, 1.0)), 0.0) - mu, axis=-1)
    return avg, np.einsum("fop,fpq,foq->fo", g, cov, g), log_like


def _bin_average_power(lo: Array, hi: Array, pivot: float) -> tuple[Array, Array]:
    """Return Gauss-Legendre nodes ``ln(E / pivot)`` (J, K) and weights averaging over each bin [lo, hi] in E."""
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    log_lo, log_hi = np.log(lo), np.log(hi)
    log_e = 0.5 * (log_lo + log_hi)[:, None] + 0.5 * (log_hi - log_lo)[:, None] * nodes
    v = 0.5 * (log_hi - log_lo)[:, None] * weights * np.exp(log_e) / (hi - lo)[:, None]
    return log_e - np.log(pivot), v


def _power_law(counts: Array, weight: Array, log_e: Array, v: Array, slope0: float) -> tuple[Array, Array]:
    """Fit ``counts ~ Poisson(weight x A <(E/E_p)^-index>)``; return log a per bin and its variance.

    ``counts``, ``weight``: shape (J,); ``log_e``, ``v``: nodes and weights of
    :func:`_bin_average_power`, (J, K). One fit, so (1, ...) inside for :func:`_newton`.
    """
    counts, weight, log_e, v = counts[None], weight[None], log_e[None], v[None]

    def mean_power(index: Array) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            terms = v * np.exp(-index[:, None, None] * log_e)  # (1, J, K)
        f = terms.sum(axis=-1)
        return f, _safe_div(-(terms * log_e).sum(axis=-1), f)  # f and d log f / d index

    def evaluate(theta: Array) -> tuple[Array, Array, Array]:
        f, m = mean_power(theta[:, 1])
        with np.errstate(over="ignore", invalid="ignore"):
            mu = weight * np.exp(theta[:, :1]) * f
            obj = np.sum(np.where(counts > 0, counts * np.log(np.where(mu > 0, mu, 1.0)), 0.0) - mu, axis=-1)
        grad = np.stack([np.ones_like(m), m], axis=-1)  # d log mu / d theta, (1, J, 2)
        score = np.einsum("fj,fjp->fp", counts - mu, grad)
        info = np.einsum("fj,fjp,fjq->fpq", mu, grad, grad)
        if not np.all(np.isfinite(obj)):
            return np.full(1, -np.inf), np.zeros((1, 2)), np.eye(2)[None]
        return obj, score, info

    index0 = np.array([max(slope0, 0.0)])
    theta0 = np.array([[np.log(counts.sum() / (weight * mean_power(index0)[0][0]).sum()), index0[0]]])
    theta, cov = _newton(theta0, evaluate)
    if theta[0, 1] < 0:  # a rising tail would be a spike at the top: flat instead
        flat = np.zeros(1)
        theta = np.array([[np.log(counts.sum() / (weight * mean_power(flat)[0][0]).sum()), 0.0]])
        cov = np.array([[[1.0 / counts.sum(), 0.0], [0.0, 0.0]]])
    f, m = mean_power(theta[:, 1])
    grad = np.stack([np.ones_like(m[0]), m[0]], axis=-1)
    return theta[0, 0] + np.log(f[0]), np.einsum("jp,pq,jq->j", grad, cov[0], grad)


def _normalise(
    n: Array, e: Array, shapes: Array, var_shape: Array, populated: npt.NDArray[np.bool_],
    energy: Array, n_tail: int,
) -> tuple[Array, Array]:
    """Apply steps 1-3 of the module rule to one slice (n_energy, n_offset)."""
    pop = np.flatnonzero(populated)
    if pop.size == 0:
        return _safe_div(n, e), _safe_div(np.sqrt(n), e)
    n_e = n.shape[0]
    j = np.arange(n_e)
    below = np.searchsorted(pop, j, side="right") - 1  # position in pop of the nearest populated bin <= j
    weight = (e * shapes).sum(axis=-1)  # W_j: expected counts per unit mean rate
    total = n.sum(axis=-1)
    log_a, var_a = np.full(n_e, -np.inf), np.zeros(n_e)
    own = weight > 0
    log_a[own] = np.log(np.where(total[own] > 0, total[own], 1.0) / weight[own])
    log_a[own & (total == 0)] = -np.inf
    var_a[own] = _safe_div(np.ones(int(own.sum())), total[own])
    log_e = np.log(np.sqrt(energy[:-1] * energy[1:]))
    between = (below >= 0) & (below < pop.size - 1) & ~populated & own
    if np.any(between):
        lo, hi = pop[below[between]], pop[below[between] + 1]
        t = (log_e[between] - log_e[lo]) / (log_e[hi] - log_e[lo])
        log_a[between] = (1 - t) * log_a[lo] + t * log_a[hi]
        var_a[between] = (1 - t) ** 2 / total[lo] + t**2 / total[hi]
    above = (j > pop[-1]) & own
    if np.any(above) and pop.size >= 2:
        ref, up = pop[-n_tail:], np.flatnonzero(above)
        tail = np.concatenate([ref, up])
        slope = -np.polyfit(log_e[ref], log_a[ref], 1, w=np.sqrt(total[ref]))[0]
        nodes, v = _bin_average_power(energy[tail], energy[tail + 1], float(np.exp(log_e[pop[-1]])))
        fitted, var_fit = _power_law(total[tail], weight[tail], nodes, v, slope)
        log_a[up], var_a[up] = fitted[ref.size:], var_fit[ref.size:]
    rate = np.where(e > 0, np.exp(log_a)[:, None] * shapes, 0.0)
    rel_var = var_shape + var_a[:, None]
    return rate, rate * np.sqrt(np.maximum(rel_var, 0.0))
