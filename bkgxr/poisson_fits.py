"""Poisson maximum-likelihood fits, many independent ones in one batch (:mod:`bkgxr.smooth`, :mod:`bkgxr.efficiency`).

:func:`select_degree` fits the radial shape ``exp(polynomial(u))`` of each row of counts
over offset rings (log-polynomial in ``u = (1 - cos r) / (1 - cos r_max)``, every degree up
to a maximum, the one of lowest BIC kept); :func:`power_law` fits ``A (E / E_p)**-index``,
averaged over each energy bin (nodes and weights of :func:`bin_average_power`), to counts in
energy. Both maximise by batched Fisher scoring with step halving (:func:`fisher_scoring`), solving
the small normal equations of all fits at once (``_solve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .geometry import ring_solid_angle_sr

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

#: Precision of the Gaussian prior on the non-constant coefficients of the radial shape.
RIDGE = 0.01
_NODES = 8  # Gauss-Legendre nodes per bin, in u (offset) and ln E (energy)
_MAX_ITER, _TOL, _MAX_STEP = 100, 1e-10, 5.0
_CHUNK_VALUES = 2**17  # values of exp(polynomial) at the nodes of one block of fits (in cache, one OpenBLAS thread)


def safe_div(num: Array, den: Array) -> Array:
    """Return ``num / den`` (broadcast), 0 where ``den`` is 0."""
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _solve(info: Array, rhs: Array) -> Array:
    """Return ``info^-1 rhs`` per fit: ``info`` (R, P, P) symmetric positive definite, ``rhs`` (R, P, M).

    Gaussian elimination without pivoting (stable on such matrices, as Cholesky), vectorised over the
    fits; a fit whose pivot is not positive and finite is solved by ``np.linalg.solve`` instead.
    """
    n_p = info.shape[-1]
    a = info.transpose(1, 2, 0).copy()  # (P, P, R): one entry of every fit per row
    x = rhs.transpose(1, 2, 0).copy()  # (P, M, R)
    ok = np.ones(info.shape[0], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(n_p):
            pivot = a[k, k]
            ok &= (pivot > 0) & np.isfinite(pivot)
            for i in range(k + 1, n_p):
                factor = a[i, k] / pivot
                a[i, k + 1 :] -= factor * a[k, k + 1 :]
                x[i] -= factor * x[k]
        for k in range(n_p - 1, -1, -1):
            x[k] = (x[k] - np.einsum("jr,jmr->mr", a[k, k + 1 :], x[k + 1 :])) / a[k, k]
    out = x.transpose(2, 0, 1)
    if not ok.all():
        out[~ok] = np.linalg.solve(info[~ok], rhs[~ok])
    return out


def fisher_scoring(theta: Array, evaluate: Callable[[Array, npt.NDArray[np.intp]], tuple[Array, Array, Array]]) -> tuple[Array, Array]:
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
        step = _solve(info if active.size == theta.shape[0] else info[active], score[active][..., None])[..., 0]
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
            if rows.size == theta.shape[0] and good.all():  # every fit moves: no copies
                theta, obj, score, info = trial, new_obj, new_score, new_info
                break
            kept = rows[good]
            theta[kept], obj[kept], score[kept], info[kept] = trial[good], new_obj[good], new_score[good], new_info[good]
            pending = pending[~good]
            if pending.size == 0:
                break
            t[pending] *= 0.5
    return theta, _solve(info, np.broadcast_to(np.eye(theta.shape[1]), info.shape))


def select_degree(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array]:
    """Fit degrees 1..``degree`` per row and keep, per row, the one of lowest BIC, ``(d + 1) ln N - 2 ln L``.

    Rows are fitted in blocks whose arrays stay in the CPU's cache (and whose matrix products
    are small enough for OpenBLAS to keep to one thread); each row's fit is independent of the others.
    Returns ring means (F, O) and the variance of log(shape) (F, O).
    """
    block = max(1, _CHUNK_VALUES // ((offset.size - 1) * _NODES))
    avg, var_shape = np.empty(n.shape), np.empty(n.shape)
    for i in range(0, n.shape[0], block):
        avg[i : i + block], var_shape[i : i + block] = _select_block(n[i : i + block], e[i : i + block], offset, degree)
    return avg, var_shape


def _select_block(n: Array, e: Array, offset: Array, degree: int) -> tuple[Array, Array]:
    """:func:`select_degree` of one block of rows.

    Degree 1 starts from the flat shape at the row's mean rate, each higher degree from the
    maximum of the one below (its new coefficient 0): the same maxima, reached in fewer steps.
    """
    flat = np.zeros((n.shape[0], 2))
    flat[:, 0] = np.log(n.sum(axis=-1) / e.sum(axis=-1))
    start, fits = flat, []
    for d in range(1, degree + 1):
        avg, var_shape, log_like, beta = _fit_shapes(n, e, offset, d, start)
        fits.append((avg, var_shape, log_like))
        start = np.zeros((n.shape[0], d + 2))
        start[:, : d + 1] = beta
        failed = ~np.all(np.isfinite(beta), axis=-1)  # never seen: such a row starts flat again
        start[failed] = 0.0
        start[failed, 0] = flat[failed, 0]
    log_n = np.log(np.maximum(n.sum(axis=-1), 1.0))
    bic = np.stack([(d + 1) * log_n - 2.0 * fit[2] for d, fit in enumerate(fits, start=1)])
    best = np.argmin(bic, axis=0)
    rows = np.arange(n.shape[0])
    avg, var_shape = (np.stack([fit[k] for fit in fits])[best, rows] for k in range(2))
    return avg, var_shape


def _fit_shapes(n: Array, e: Array, offset: Array, degree: int, start: Array) -> tuple[Array, Array, Array, Array]:
    """Fit ``exp(polynomial(u))`` per row from ``start`` (F, P).

    Returns ring means (F, O), variance of log(shape) (F, O), ln L (F,) and the coefficients (F, P).
    Inside, arrays run over the fits last, (O, P, F), so that each sum over rings is a few long
    vector operations.
    """
    t = 1.0 - np.cos(np.radians(offset))
    u = t / t[-1]
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    u_nodes = 0.5 * (u[:-1] + u[1:])[:, None] + 0.5 * np.diff(u)[:, None] * nodes  # (O, K)
    basis = np.polynomial.legendre.legvander(2.0 * u_nodes - 1.0, degree)  # (O, K, P), P_0 = 1
    weighted = np.ascontiguousarray((0.5 * weights[None, :, None] * basis).transpose(0, 2, 1))  # (O, P, K)
    penalty = RIDGE * np.r_[0.0, np.ones(degree)]
    counts_t, exposure_t = np.ascontiguousarray(n.T), np.ascontiguousarray(e.T)  # (O, F)
    pairs = [(p, q) for p in range(degree + 1) for q in range(p, degree + 1)]
    diagonal = np.arange(degree + 1)

    def ring_means(beta: Array) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            ex = np.exp(basis @ beta.T)  # (O, K, F): one small matrix product per ring
        moments = weighted @ ex  # ring means of exp(poly) x P_p, (O, P, F)
        avg = moments[:, 0]  # P_0 = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            h = moments / avg[:, None]  # d log avg / d beta
        zero = avg == 0
        if zero.any():
            h[np.broadcast_to(zero[:, None], h.shape)] = 0.0
        return avg, h

    def evaluate(beta: Array, rows: npt.NDArray[np.intp]) -> tuple[Array, Array, Array]:
        avg, h = ring_means(beta)
        every = rows.size == counts_t.shape[1]
        counts = counts_t if every else counts_t[:, rows]
        with np.errstate(invalid="ignore", over="ignore"):
            mu = (exposure_t if every else exposure_t[:, rows]) * avg
            log_mu = np.log(np.where(mu > 0, mu, 1.0))  # an empty ring's 0 x log mu is 0; mu = inf makes obj -inf
            obj = np.einsum("of,of->f", counts, log_mu) - mu.sum(axis=0) - 0.5 * (penalty * beta**2).sum(axis=-1)
            score = np.einsum("of,opf->fp", counts - mu, h) - penalty * beta
            weighted_h = h * mu[:, None]
            info = np.empty((rows.size, degree + 1, degree + 1))
            for p, q in pairs:
                info[:, p, q] = np.einsum("of,of->f", weighted_h[:, p], h[:, q])
                info[:, q, p] = info[:, p, q]
        info[:, diagonal, diagonal] += penalty
        bad = ~np.isfinite(obj)
        obj[bad], score[bad], info[bad] = -np.inf, 0.0, np.eye(degree + 1)
        return obj, score, info

    beta, cov = fisher_scoring(start, evaluate)
    avg, h = ring_means(beta)
    omega = ring_solid_angle_sr(offset)
    mean_h = np.einsum("o,of,opf->pf", omega, avg, h) / (omega @ avg)
    g = h - mean_h  # d log(shape normalised to unit mean) / d beta, (O, P, F)
    var_shape = np.einsum("opf,fpq,oqf->fo", g, cov, g, optimize=True)
    mu = exposure_t * avg
    log_like = np.sum(np.where(counts_t > 0, counts_t * np.log(np.where(mu > 0, mu, 1.0)), 0.0) - mu, axis=0)
    return np.ascontiguousarray(avg.T), var_shape, log_like, beta


def bin_average_power(lo: Array, hi: Array) -> tuple[Array, Array]:
    """Return Gauss-Legendre nodes ``ln E`` (J, K) and weights averaging over each bin [lo, hi] in E."""
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    log_lo, log_hi = np.log(lo), np.log(hi)
    log_e = 0.5 * (log_lo + log_hi)[:, None] + 0.5 * (log_hi - log_lo)[:, None] * nodes
    v = 0.5 * (log_hi - log_lo)[:, None] * weights * np.exp(log_e) / (hi - lo)[:, None]
    return log_e, v


def power_law(counts: Array, weight: Array, log_e: Array, v: Array, slope0: Array) -> tuple[Array, Array]:
    """Fit ``counts ~ Poisson(weight x A <(E/E_p)^-index>)`` per row; return log a per bin and its variance.

    ``counts``, ``weight``: (R, J), zero weight outside a row's fitted bins; ``log_e``:
    nodes ``ln(E / E_p)`` of :func:`bin_average_power` with each row's pivot, (R, J, K);
    ``v``: their weights, (J, K); ``slope0``: starting indices, (R,).
    """

    def mean_power(index: Array, rows: npt.NDArray[np.intp] | slice) -> tuple[Array, Array]:
        with np.errstate(over="ignore"):
            terms = v * np.exp(-index[:, None, None] * log_e[rows])  # (R, J, K)
        f = terms.sum(axis=-1)
        return f, safe_div(-(terms * log_e[rows]).sum(axis=-1), f)  # f and d log f / d index

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

    theta, cov = fisher_scoring(start(np.maximum(slope0, 0.0)), evaluate)
    rising = theta[:, 1] < 0  # a rising tail would be a spike at the top: flat instead
    theta[rising] = start(np.zeros(theta.shape[0]))[rising]
    cov[rising] = 0.0
    cov[rising, 0, 0] = 1.0 / total[rising]
    f, m = mean_power(theta[:, 1], every)
    grad = np.stack([np.ones_like(m), m], axis=-1)
    return theta[:, :1] + np.log(f), np.einsum("rjp,rpq,rjq->rj", grad, cov, grad)
