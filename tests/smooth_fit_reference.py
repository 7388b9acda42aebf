"""bkgxr.smooth's batched fits as they were before the speed-up of issue 15 (item 3), now in bkgxr.poisson_fits.

A copy of ``_newton`` (Fisher scoring with ``np.linalg.solve``), ``select_degree`` (every degree
started from a flat shape), ``_fit_shapes`` (fits in rows, (F, O, P) layout) and ``power_law``.
tests/test_smooth_fits.py checks that the rewritten fits give these results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bkgxr.geometry import ring_solid_angle_sr
from bkgxr.poisson_fits import _MAX_ITER, _MAX_STEP, _NODES, _TOL, RIDGE

Array = npt.NDArray[np.float64]


def _safe_div(num: Array, den: Array) -> Array:
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den != 0)
    return out


def reference_newton(theta: Array, evaluate: Callable[[Array, npt.NDArray[np.intp]], tuple[Array, Array, Array]]) -> tuple[Array, Array]:
    """Maximise independent objectives by Fisher scoring with step halving, all fits in one batch.

    ``evaluate(theta, rows)`` returns, for the fits ``rows`` (R,) at ``theta`` (R, P), the
    objective (R,), score (R, P) and information (R, P, P). A fit stops moving once its
    step is below :data:`_TOL` and only fits still moving are evaluated, so each fit's
    result is the one it would have alone. Returns the maxima (F, P) and the inverse
    information there (the covariance, (F, P, P)).
    """
    theta = np.array(theta, dtype=np.float64)
    obj, score, info = evaluate(theta, np.arange(theta.shape[0]))
    active = np.arange(theta.shape[0])
    for _ in range(_MAX_ITER):
        step = np.linalg.solve(info[active], score[active][..., None])[..., 0]
        biggest = np.abs(step).max(axis=-1, initial=0.0)
        moving = biggest > _TOL
        active, step = active[moving], step[moving] * np.minimum(1.0, _MAX_STEP / biggest[moving])[:, None]
        if active.size == 0:
            break
        t = np.ones(active.size)
        pending = np.arange(active.size)  # fits whose trial step has not raised the objective yet
        for _ in range(40):  # halve each fit's step until its objective does not drop
            rows = active[pending]
            trial = theta[rows] + t[pending, None] * step[pending]
            new_obj, new_score, new_info = evaluate(trial, rows)
            good = new_obj >= obj[rows] - 1e-12 * np.abs(obj[rows])
            kept = rows[good]
            theta[kept], obj[kept], score[kept], info[kept] = trial[good], new_obj[good], new_score[good], new_info[good]
            pending = pending[~good]
            if pending.size == 0:
                break
            t[pending] *= 0.5
    return theta, np.asarray(np.linalg.inv(info), dtype=np.float64)


def reference_select_degree(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array]:
    """Fit degrees 1..``degree`` per row and keep, per row, the one of lowest BIC, ``(d + 1) ln N - 2 ln L``."""
    fits = [reference_fit_shapes(n, e, offset, d) for d in range(1, degree + 1)]
    log_n = np.log(np.maximum(n.sum(axis=-1), 1.0))
    bic = np.stack([(d + 1) * log_n - 2.0 * fit[2] for d, fit in enumerate(fits, start=1)])
    best = np.argmin(bic, axis=0)
    rows = np.arange(n.shape[0])
    avg, var_shape = (np.stack([fit[k] for fit in fits])[best, rows] for k in range(2))
    return avg, var_shape


def reference_fit_shapes(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array, Array]:
    """Fit ``exp(polynomial(u))`` per row; return ring means (F, O), variance of log(shape) (F, O) and ln L (F,)."""
    t = 1.0 - np.cos(np.radians(offset))
    u = t / t[-1]
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    u_nodes = 0.5 * (u[:-1] + u[1:])[:, None] + 0.5 * np.diff(u)[:, None] * nodes  # (O, K)
    basis = np.polynomial.legendre.legvander(2.0 * u_nodes - 1.0, degree)  # (O, K, P), P_0 = 1
    flat_basis = basis.reshape(-1, degree + 1)  # (O K, P)
    weighted = np.ascontiguousarray((0.5 * weights[None, :, None] * basis).transpose(0, 2, 1))  # (O, P, K)
    penalty = RIDGE * np.r_[0.0, np.ones(degree)]

    def ring_means(beta: Array) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            ex = np.exp(flat_basis @ beta.T).reshape(*basis.shape[:2], -1)  # (O, K, F): one matmul per ring below
        moments = (weighted @ ex).transpose(2, 0, 1)  # ring means of exp(poly) x P_p, (F, O, P)
        avg = np.ascontiguousarray(moments[..., 0])  # P_0 = 1
        return avg, _safe_div(moments, avg[..., None])  # and d log avg / d beta

    def evaluate(beta: Array, rows: npt.NDArray[np.intp]) -> tuple[Array, Array, Array]:
        avg, h = ring_means(beta)
        counts = n[rows]
        with np.errstate(invalid="ignore", over="ignore"):
            mu = e[rows] * avg
            log_mu = np.log(np.where(mu > 0, mu, 1.0))
            obj = np.sum(np.where(counts > 0, counts * log_mu, 0.0) - mu, axis=-1) - 0.5 * (penalty * beta**2).sum(axis=-1)
            obj = np.where(np.isfinite(obj), obj, -np.inf)
            score = ((counts - mu)[:, None, :] @ h)[:, 0, :] - penalty * beta
            info = (h.transpose(0, 2, 1) * mu[:, None, :]) @ h + np.diag(penalty)
        bad = ~np.isfinite(obj)
        score[bad], info[bad] = 0.0, np.eye(degree + 1)
        return obj, score, info

    beta = np.zeros((n.shape[0], degree + 1))
    beta[:, 0] = np.log(n.sum(axis=-1) / e.sum(axis=-1))
    beta, cov = reference_newton(beta, evaluate)
    avg, h = ring_means(beta)
    omega = ring_solid_angle_sr(offset)
    mean_h = np.einsum("o,fo,fop->fp", omega, avg, h) / (avg @ omega)[:, None]
    g = h - mean_h[:, None, :]  # d log(shape normalised to unit mean) / d beta
    mu = e * avg
    log_like = np.sum(np.where(n > 0, n * np.log(np.where(mu > 0, mu, 1.0)), 0.0) - mu, axis=-1)
    return avg, np.einsum("fop,fpq,foq->fo", g, cov, g), log_like


def reference_power_law(counts: Array, weight: Array, log_e: Array, v: Array, slope0: Array) -> tuple[Array, Array]:
    """Fit ``counts ~ Poisson(weight x A <(E/E_p)^-index>)`` per row; return log a per bin and its variance.

    ``counts``, ``weight``: (R, J), zero weight outside a row's fitted bins; ``log_e``:
    nodes ``ln(E / E_p)`` of :func:`bkgxr.poisson_fits.bin_average_power` with each row's pivot, (R, J, K);
    ``v``: their weights, (J, K); ``slope0``: starting indices, (R,).
    """

    def mean_power(index: Array, rows: npt.NDArray[np.intp] | slice) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            terms = v * np.exp(-index[:, None, None] * log_e[rows])  # (R, J, K)
        f = terms.sum(axis=-1)
        return f, _safe_div(-(terms * log_e[rows]).sum(axis=-1), f)  # f and d log f / d index

    def evaluate(theta: Array, rows: npt.NDArray[np.intp]) -> tuple[Array, Array, Array]:
        f, m = mean_power(theta[:, 1], rows)
        n = counts[rows]
        with np.errstate(over="ignore", invalid="ignore"):
            mu = weight[rows] * np.exp(theta[:, :1]) * f
            obj = np.sum(np.where(n > 0, n * np.log(np.where(mu > 0, mu, 1.0)), 0.0) - mu, axis=-1)
        grad = np.stack([np.ones_like(m), m], axis=-1)  # d log mu / d theta, (R, J, 2)
        score = ((n - mu)[:, None, :] @ grad)[:, 0, :]
        info = (grad.transpose(0, 2, 1) * mu[:, None, :]) @ grad
        bad = ~np.isfinite(obj)
        obj[bad], score[bad], info[bad] = -np.inf, 0.0, np.eye(2)
        return obj, score, info

    every = slice(None)
    total = counts.sum(axis=-1)

    def start(index: Array) -> Array:  # the normalisation that matches the counts at this index
        return np.column_stack([np.log(total / (weight * mean_power(index, every)[0]).sum(axis=-1)), index])

    theta, cov = reference_newton(start(np.maximum(slope0, 0.0)), evaluate)
    rising = theta[:, 1] < 0  # a rising tail would be a spike at the top: flat instead
    theta[rising] = start(np.zeros(theta.shape[0]))[rising]
    cov[rising] = 0.0
    cov[rising, 0, 0] = 1.0 / total[rising]
    f, m = mean_power(theta[:, 1], every)
    grad = np.stack([np.ones_like(m), m], axis=-1)
    return theta[:, :1] + np.log(f), np.einsum("rjp,rpq,rjq->rj", grad, cov, grad)
