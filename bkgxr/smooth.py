"""Smoothing of sparse background bins that keeps the normalisation of each energy bin.

:func:`smooth_rate` works on plain arrays of shape (..., n_energy, n_offset);
:func:`smooth_cube` applies it to a cube. The rule, per leading index (zenith
band, observation) and energy bin ``j``, with ``N_j`` the counts of its
exposed offset bins:

1. **Radial shape.** ``log rate`` is a polynomial in ``u = (1 - cos r) /
   (1 - cos r_max)`` (proportional to solid angle and to ``r**2`` at small
   ``r``; degree 1 is a Gaussian acceptance), fitted by Poisson maximum
   likelihood, ``counts_i ~ Poisson(exposure_i x mean of the rate over ring i)``;
   the ring mean is a Gauss-Legendre average in ``u``, so the result is a bin
   average like the raw rate. The counts and exposure fitted for bin ``j`` are
   summed over the energy window ``|k - j| <= h`` of exposed bins with the
   smallest ``h`` whose counts reach ``shape_counts`` (all exposed bins if none
   does): a rich bin has its own shape, a sparse one the shape of its
   neighbours. Every degree from 1 to ``degree`` is fitted and the one of lowest
   BIC, ``(degree + 1) ln N - 2 ln L`` with ``N`` the window's counts, is kept.
   A weak Gaussian prior (precision :data:`bkgxr.poisson_fits.RIDGE`) on the non-constant
   coefficients keeps degenerate fits finite.
2. **Normalisation.** With the shape scaled to a solid-angle mean of 1, the rate
   is ``a_j x shape``. An energy bin is *populated* when ``N_j >= min_counts``;
   there ``a_j = N_j / sum_i exposure_ij shape_ij``, so ``sum_i exposure_ij
   rate_ij = N_j`` exactly (up to rounding). A sparse bin gets ``a_j``

   - *above the last populated bin*: from a power law ``A (E / E_p)**-index``,
     averaged over each bin in energy, fitted by Poisson likelihood to the last
     ``n_tail`` populated bins and every exposed bin above them (their zeros
     included); ``E_p`` is the centre of the last populated bin. A fitted index
     below 0 is set to 0 (no rising tail). With fewer than two populated bins it
     keeps its own counts, as below;
   - *between populated bins*: ``log a`` linear in ``log E`` (bin centres)
     between its two populated neighbours;
   - *below the first populated bin*: from its own counts (0 if it has none).
3. **No exposure.** Offset bins of zero exposure get rate and error 0; their counts
   (none, from :func:`bkgxr.build_cube`) are ignored. A slice without a populated
   bin is returned unsmoothed (``counts / exposure``).

``rate_err`` propagates the statistical errors to first order, neglecting
correlations: the relative variance is that of the shape (from the fit's
covariance, with the normalisation projected out) plus that of ``a_j``: ``1 /
N_j`` where it keeps its counts, the power law's covariance in the tail, the
neighbours' ``1 / N`` between populated bins.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np

from .axes import to_edges
from .geometry import ring_solid_angle_sr
from .poisson_fits import bin_average_power, power_law, safe_div, select_degree
from .recipe import Smoothing

if TYPE_CHECKING:
    import numpy.typing as npt
    import xarray as xr

    Array = npt.NDArray[np.float64]


def smooth_rate(
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
    """Return a smoothed background rate that keeps each energy bin's total counts.

    The rule is stated exactly in the module docstring of :mod:`bkgxr.smooth`.

    Parameters
    ----------
    counts : array-like
        Counts per bin (integer or weighted). Shape: (..., n_energy, n_offset).
    exposure : array-like
        Livetime x dE x dOmega per bin, s MeV sr; broadcast with ``counts``.
    offset_edges : array-like or Quantity
        Deg. Shape: (n_offset + 1,).
    energy_edges : array-like or Quantity
        TeV. Shape: (n_energy + 1,).
    degree : int
        Highest degree of the log-polynomial radial shape, >= 1.
    min_counts : float
        Counts from which an energy bin keeps its own normalisation, >= 1.
    shape_counts : float
        Counts the energy window fitted for a bin's radial shape must hold, > 0.
    n_tail : int
        Populated bins, counted from the highest, that fix the power law of the
        sparse bins above them, >= 2.

    Returns
    -------
    rate, rate_err : numpy.ndarray
        MeV-1 s-1 sr-1. Shape: the broadcast shape of ``counts`` and ``exposure``.

    Raises
    ------
    ValueError
        For a bad option, negative or non-finite input or shapes that disagree
        with the edges.

    See Also
    --------
    smooth_cube

    Examples
    --------
    >>> counts = np.array([[400, 300, 150], [40, 20, 2], [3, 0, 1]])
    >>> exposure = np.ones((3, 3))
    >>> rate, err = smooth_rate(counts, exposure, offset_edges=[0, 1, 2, 3],
    ...                         energy_edges=[1, 2, 4, 8], min_counts=50)
    >>> round(float((rate[0] * exposure[0]).sum()), 9)  # counts kept
    850.0
    >>> bool(np.all(rate[2] > 0))  # the sparse bin's zero is no hole
    True
    """
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
    pools = _pools(total, exposed, shape_counts)  # (L, E, E)
    fitted = pools.any(axis=-1) & populated.any(axis=-1, keepdims=True)
    pooled_n = np.einsum("kje,keo->kjo", pools, n)[fitted]
    pooled_e = np.einsum("kje,keo->kjo", pools, e)[fitted]
    avg, var_shape = select_degree(pooled_n, pooled_e, offset, int(degree))
    omega = ring_solid_angle_sr(offset)
    shapes, var_s = np.zeros(n.shape), np.zeros(n.shape)
    shapes[fitted] = avg / (avg @ (omega / omega.sum()))[:, None]
    var_s[fitted] = var_shape
    rate, rate_err = _normalise(n, e, shapes, var_s, populated, energy, int(n_tail))
    return rate.reshape(shape), rate_err.reshape(shape)


def _pools(total: Array, exposed: npt.NDArray[np.bool_], shape_counts: float) -> npt.NDArray[np.bool_]:
    """Return the energy window pooled for the shape of each exposed bin (rule 1): (n_slices, n_energy, n_energy).

    ``total``, ``exposed``: (n_slices, n_energy). Window ``[centre, half]`` holds the exposed bins
    ``|j - centre| <= half``; each centre takes the smallest half whose counts reach ``shape_counts``,
    all bins (``half = n_energy - 1``) if none does.
    """
    n_e = total.shape[-1]
    distance = np.abs(np.arange(n_e)[:, None] - np.arange(n_e)[None, :])  # (centre, j)
    within = distance[:, None, :] <= np.arange(n_e)[None, :, None]  # (centre, half, j)
    sums = (np.where(exposed, total, 0.0) @ within.reshape(-1, n_e).T).reshape(-1, n_e, n_e)  # (L, centre, half)
    enough = sums >= shape_counts
    half = np.where(enough.any(axis=-1), enough.argmax(axis=-1), n_e - 1)  # (L, centre)
    pools: npt.NDArray[np.bool_] = exposed[:, :, None] & exposed[:, None, :] & (distance[None] <= half[..., None])
    return pools


#: Keyword options of :func:`smooth_rate` and :func:`smooth_cube`, with their defaults.
OPTIONS: dict[str, Any] = {
    name: p.default
    for name, p in inspect.signature(smooth_rate).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
}



def _normalise(
    n: Array, e: Array, shapes: Array, var_shape: Array, populated: npt.NDArray[np.bool_],
    energy: Array, n_tail: int,
) -> tuple[Array, Array]:
    """Apply steps 1-3 of the module rule to every slice (n_slices, n_energy, n_offset) at once."""
    n_e = n.shape[1]
    weight = (e * shapes).sum(axis=-1)  # W_j: expected counts per unit mean rate, (L, E)
    total = n.sum(axis=-1)
    own = weight > 0
    log_a = np.full(total.shape, -np.inf)
    kept = own & (total > 0)
    log_a[kept] = np.log(total[kept] / weight[kept])
    var_a = np.where(own, safe_div(np.ones(total.shape), total), 0.0)
    log_e = np.log(np.sqrt(energy[:-1] * energy[1:]))
    j = np.arange(n_e)
    lo = np.maximum.accumulate(np.where(populated, j, -1), axis=-1)  # nearest populated bin <= j
    hi = np.flip(np.minimum.accumulate(np.flip(np.where(populated, j, n_e), axis=-1), axis=-1), axis=-1)  # >= j
    between = (lo >= 0) & (hi < n_e) & ~populated & own
    slices, bins = np.nonzero(between)
    if slices.size:
        below, above = lo[slices, bins], hi[slices, bins]
        t = (log_e[bins] - log_e[below]) / (log_e[above] - log_e[below])
        log_a[slices, bins] = (1 - t) * log_a[slices, below] + t * log_a[slices, above]
        var_a[slices, bins] = (1 - t) ** 2 / total[slices, below] + t**2 / total[slices, above]
    last = lo[:, -1]  # the last populated bin, -1 for none
    up = (j[None, :] > last[:, None]) & own & (last[:, None] >= 0)
    rank = np.flip(np.cumsum(np.flip(populated, axis=-1), axis=-1), axis=-1)  # populated bins at or above j
    tail = np.flatnonzero(up.any(axis=-1) & (populated.sum(axis=-1) >= 2))
    if tail.size:
        ref = populated[tail] & (rank[tail] <= n_tail)  # the last n_tail populated bins
        log_a[tail], var_a[tail] = _fit_tail(total[tail], weight[tail], log_a[tail], var_a[tail], ref, up[tail],
                                             energy, log_e[last[tail]])
    rate = np.where(e > 0, np.exp(log_a)[..., None] * shapes, 0.0)
    rel_var = var_shape + var_a[..., None]
    rate_err = rate * np.sqrt(np.maximum(rel_var, 0.0))
    raw = ~populated.any(axis=-1)  # no populated bin: counts / exposure
    rate[raw], rate_err[raw] = safe_div(n[raw], e[raw]), safe_div(np.sqrt(n[raw]), e[raw])
    return rate, rate_err


def _fit_tail(
    total: Array, weight: Array, log_a: Array, var_a: Array, ref: npt.NDArray[np.bool_], up: npt.NDArray[np.bool_],
    energy: Array, log_pivot: Array,
) -> tuple[Array, Array]:
    """Return ``log_a`` and ``var_a`` (R, E) with the sparse bins ``up`` above the last populated one from the power law.

    Each row's index starts at the slope of ``log a`` against ``log E`` over its bins ``ref``,
    least squares weighted by their counts (``np.polyfit`` with ``w = sqrt(counts)``).
    """
    log_e = np.log(np.sqrt(energy[:-1] * energy[1:]))
    w = np.where(ref, total, 0.0)
    x_mean = (w * log_e).sum(axis=-1) / w.sum(axis=-1)
    dx = np.where(ref, log_e - x_mean[:, None], 0.0)
    y = np.where(ref, log_a, 0.0)
    slope = -(w * dx * y).sum(axis=-1) / (w * dx**2).sum(axis=-1)
    in_fit = ref | up
    nodes, v = bin_average_power(energy[:-1], energy[1:])
    fitted, var_fit = power_law(np.where(in_fit, total, 0.0), np.where(in_fit, weight, 0.0),
                                 nodes[None] - log_pivot[:, None, None], v, slope)
    return np.where(up, fitted, log_a), np.where(up, var_fit, var_a)


def describe(**options: Any) -> str:
    """Return the one-line description of a smoothing (options of :func:`smooth_rate`) that :func:`smooth_cube` stores."""
    o = {**OPTIONS, **options}
    return (
        f"bkgxr.smooth: radial shape per energy bin a Poisson fit of a log-polynomial in offset^2 "
        f"(degree <= {o['degree']} by BIC) to an energy window of >= {o['shape_counts']:g} counts; scaled to the "
        f"bin's counts (kept) where it has >= {o['min_counts']:g}, else interpolated in log E, or above the last "
        f"such bin a power law fitted to the last {o['n_tail']} of them and the sparse ones"
    )


def smooth_cube(cube: xr.Dataset, **options: Any) -> xr.Dataset:
    """Return a copy of a computed cube whose ``rate`` and ``rate_err`` are smoothed.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube of :func:`bkgxr.build_cube` (computed here if lazy) with ``counts``,
        ``exposure`` and the ``energy``/``offset`` edge coordinates.
    **options
        Keyword options of :func:`smooth_rate` (:data:`OPTIONS`).

    Returns
    -------
    xarray.Dataset
        The cube with smoothed ``rate``/``rate_err`` (same dims, units and
        order) and the attribute ``smoothing`` saying how; counts, exposure and
        the per-run values are unchanged.

    Raises
    ------
    ValueError
        If the cube lacks counts, exposure or an edge coordinate, or for a bad option.
    TypeError
        For an unknown option.

    See Also
    --------
    smooth_rate
    """
    known = set(OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown smoothing option(s) {unknown}; expected some of {sorted(known)}")
    needed = ["counts", "exposure", "rate", "rate_err", "energy_lo", "energy_hi", "offset_lo", "offset_hi"]
    missing = [name for name in needed if name not in cube.variables]
    if missing:
        raise ValueError(f"cube lacks {missing}: smoothing needs the counts and exposure of bkgxr.build_cube")
    cube = cube.compute()
    counts = cube["counts"].transpose(..., "energy", "offset")
    exposure = cube["exposure"].transpose(*counts.dims)
    rate, rate_err = smooth_rate(
        counts.values,
        exposure.values,
        offset_edges=np.append(cube["offset_lo"].values, cube["offset_hi"].values[-1]),
        energy_edges=np.append(cube["energy_lo"].values, cube["energy_hi"].values[-1]),
        **options,
    )
    text = describe(**options)
    out = cube.copy()
    for name, values, long_name in (
        ("rate", rate, "smoothed background rate dN/(dt dE dOmega)"),
        ("rate_err", rate_err, "statistical error of the smoothed rate"),
    ):
        attrs = {**cube[name].attrs, "long_name": long_name, "smoothing": text}
        out[name] = counts.copy(data=values).transpose(*cube[name].dims).assign_attrs(attrs)
    out.attrs["smoothing"] = text
    return out
