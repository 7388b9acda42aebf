"""Solid angle that spherical caps cover in bins of colatitude and azimuth about a pole, by quadrature.

Along a circle of constant colatitude θ about a pole, a cap of radius ρ whose centre lies at
colatitude θc covers the azimuths within ``arccos((cos ρ − cos θ cos θc) / (sin θ sin θc))``
of the centre's azimuth. :func:`covered_solid_angle` measures the union of these arcs
exactly in each azimuth window and integrates over θ by Gauss–Legendre quadrature between
the colatitudes where the integrand is not smooth: where a cap's boundary touches a circle
of constant colatitude (:func:`tangencies`), crosses a meridian (:func:`meridian_crossings`)
or another cap's boundary (:func:`crossings`). :func:`position_angle` gives the caps'
azimuths about a pointing. :mod:`bkgxr.kept_fraction` builds the kept fractions of bins
from these.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]


def position_angle(lon0: float, lat0: float, lon: FloatArray, lat: FloatArray) -> FloatArray:
    """Return the position angle (rad, east of north) of points as seen from (lon0, lat0)."""
    dlon = lon - lon0
    north = np.cos(lat0) * np.sin(lat) - np.sin(lat0) * np.cos(lat) * np.cos(dlon)
    return cast("FloatArray", np.arctan2(np.sin(dlon) * np.cos(lat), north))


def _covered_azimuth(
    theta: FloatArray, theta_c: FloatArray, phi_c: FloatArray, rho: FloatArray, lo: FloatArray, hi: FloatArray
) -> FloatArray:
    """Return the azimuth measure (rad) within [lo, hi] of a circle of colatitude θ covered by caps.

    Parameters
    ----------
    theta : numpy.ndarray
        Colatitudes (rad) about the pole. Shape: (..., n_rows, 1).
    theta_c, phi_c : numpy.ndarray
        Colatitude and azimuth (rad) of the caps' centres. Shape: (..., n_caps), broadcast with ``theta``.
    rho : numpy.ndarray
        Cap radii (rad). Shape: (n_caps,).
    lo, hi : numpy.ndarray
        Azimuth windows within [-π, π], lo < hi. Shape: (n_windows,).

    Returns
    -------
    numpy.ndarray
        Measure of the union of the caps' arcs in each window. Shape: (..., n_rows, n_windows).
    """
    num = np.cos(rho) - np.cos(theta) * np.cos(theta_c)
    den = np.sin(theta) * np.sin(theta_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num <= 0, -np.inf, np.inf))
    half = np.arccos(np.clip(ratio, -1.0, 1.0))
    # Each arc [φc − w, φc + w], started in [−π, π), splits at π into at most two arcs.
    start = np.mod(phi_c - half + np.pi, 2 * np.pi) - np.pi
    end = start + 2 * half
    starts = np.concatenate([start, np.full_like(start, -np.pi)], axis=-1)
    ends = np.concatenate([np.minimum(end, np.pi), -np.pi + np.maximum(end - np.pi, 0.0)], axis=-1)
    order = np.argsort(starts, axis=-1)
    starts = np.take_along_axis(starts, order, axis=-1)
    reach = np.maximum.accumulate(np.take_along_axis(ends, order, axis=-1), axis=-1)
    # Disjoint pieces of the union: each arc adds [max(start, reach so far), new reach].
    before = np.concatenate([np.full_like(reach[..., :1], -np.pi), reach[..., :-1]], axis=-1)
    piece_lo = np.maximum(starts, before)[..., None, :]
    piece_hi = reach[..., None, :]
    inside = np.minimum(piece_hi, hi[:, None]) - np.maximum(piece_lo, lo[:, None])
    return cast("FloatArray", np.sum(np.maximum(inside, 0.0), axis=-1))


def covered_solid_angle(
    edges: FloatArray,
    cuts: FloatArray,
    theta_c: FloatArray,
    phi_c: FloatArray,
    rho: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    nodes: int,
) -> FloatArray:
    """Return the solid angle (sr) covered by caps in each (colatitude bin, azimuth window).

    ∫ sin θ · covered(θ) dθ by Gauss–Legendre quadrature, ``nodes`` nodes between
    consecutive bin edges and ``cuts``, the colatitudes where the integrand is not smooth.
    Leading dimensions of ``cuts`` and the caps' centres (e.g. times) are computed together.

    Parameters
    ----------
    edges : numpy.ndarray
        Increasing colatitude edges (rad) about the pole. Shape: (n_bins + 1,).
    cuts : numpy.ndarray
        Colatitudes (rad) where a cap's boundary is tangent to, or crosses a window edge
        or another boundary on, a circle of constant colatitude; NaN for none.
        Shape: (..., n_cuts).
    theta_c, phi_c : numpy.ndarray
        Colatitude and azimuth (rad) of the caps' centres. Shape: (..., n_caps).
    rho : numpy.ndarray
        Cap radii (rad). Shape: (n_caps,).
    lo, hi : numpy.ndarray
        Azimuth windows (rad), see :func:`_covered_azimuth`. Shape: (n_windows,).
    nodes : int

    Returns
    -------
    numpy.ndarray
        Shape: (..., n_bins, n_windows).
    """
    lead = cuts.shape[:-1]
    # cuts outside the bins (and NaN) become empty pieces at the last edge, which add nothing
    inner = np.where((cuts > edges[0]) & (cuts < edges[-1]), cuts, edges[-1])
    cuts = np.sort(np.concatenate([np.broadcast_to(edges, (*lead, edges.size)), inner], axis=-1), axis=-1)
    x, w = _smooth_gauss_legendre(nodes)
    half = np.diff(cuts, axis=-1)[..., None] / 2  # (..., n_pieces, 1)
    mid = (cuts[..., :-1, None] + cuts[..., 1:, None]) / 2
    theta = mid + half * x  # (..., n_pieces, nodes)
    weight = half * w * np.sin(theta)
    # only pieces within some cap's colatitudes are covered at all
    reach = (cuts[..., :-1, None] <= (theta_c + rho)[..., None, :]) & (cuts[..., 1:, None] >= (theta_c - rho)[..., None, :])
    near = np.any(reach, axis=-1)  # (..., n_pieces)
    row = np.broadcast_to(np.arange(near.size // near.shape[-1]).reshape(*lead, 1), near.shape)[near]
    theta_c, phi_c = (np.reshape(a, (-1, rho.size))[row][:, None, :] for a in (theta_c, phi_c))  # (n_near, 1, n_caps)
    per_piece = np.zeros((*near.shape, lo.size))
    per_piece[near] = np.sum(weight[near][..., None] * _covered_azimuth(theta[near][..., None], theta_c, phi_c, rho, lo, hi), axis=-2)
    per_piece = per_piece.reshape(-1, lo.size)  # (n_lead * n_pieces, n_windows)
    # each bin's pieces follow each other: sum runs of the bin index, counted over the leading dimensions
    n_bins = edges.size - 1
    bins = np.minimum(np.searchsorted(edges, mid[..., 0], side="right") - 1, n_bins - 1).reshape(-1, mid.shape[-2])
    flat = (bins + n_bins * np.arange(bins.shape[0])[:, None]).ravel()
    out = np.add.reduceat(per_piece, np.searchsorted(flat, np.arange(bins.shape[0] * n_bins)), axis=0)
    return cast("FloatArray", out.reshape(*lead, n_bins, lo.size))


@functools.cache
def _smooth_gauss_legendre(nodes: int) -> tuple[FloatArray, FloatArray]:
    """Return Gauss–Legendre nodes and weights on [-1, 1] through θ(s) = (3s − s³)/2 (read-only).

    θ(s) has dθ/ds = 0 at both ends: √(θ − cut) becomes smooth in s.
    """
    s, w = np.polynomial.legendre.leggauss(nodes)
    x, w = (3 * s - s**3) / 2, w * 1.5 * (1 - s**2)
    x.flags.writeable = w.flags.writeable = False
    return x, w


def tangencies(theta_c: FloatArray, rho: FloatArray) -> FloatArray:
    """Return the colatitudes (rad) where circles of constant colatitude touch the caps. Shape: (..., 2 n_caps)."""
    return np.concatenate([np.abs(theta_c - rho), np.minimum(theta_c + rho, 2 * np.pi - theta_c - rho)], axis=-1)


def meridian_crossings(lon_c: FloatArray, lat_c: FloatArray, rho: FloatArray, lon: FloatArray) -> FloatArray:
    """Return the latitudes (rad) where caps' boundaries cross the meridians ``lon`` (rad); NaN where none.

    On the meridian λ, sin φ sin φc + cos φ cos φc cos(λ − λc) = cos ρ, i.e.
    A sin φ + B cos φ = cos ρ, solved as φ = ±arccos(cos ρ / √(A² + B²)) + atan2(A, B).
    ``lon_c``, ``lat_c``: shape (..., n_caps); result: shape (..., 2 n_caps n_meridians).
    """
    a = np.sin(lat_c)[..., None] * np.ones_like(lon)
    b = np.cos(lat_c)[..., None] * np.cos(lon - lon_c[..., None])
    ratio = np.cos(rho)[:, None] / np.hypot(a, b)
    angle = np.arccos(np.where(np.abs(ratio) <= 1, ratio, np.nan))
    shift = np.arctan2(a, b)
    lat = np.mod(np.concatenate([shift + angle, shift - angle], axis=-1) + np.pi, 2 * np.pi) - np.pi
    return np.where(np.abs(lat) <= np.pi / 2, lat, np.nan).reshape(*lat.shape[:-2], -1)


def crossings(centres: FloatArray, rho: FloatArray) -> FloatArray:
    """Return the points where boundaries of two caps cross (unit vectors). Shape: (n_points, 3).

    For centres a, b (a·b = k) the crossings are α a + β b ± γ a×b, with α + β k = cos ρa,
    α k + β = cos ρb and unit length.
    """
    i, j = np.triu_indices(len(rho), k=1)
    a, b = centres[i], centres[j]
    k = np.sum(a * b, axis=-1)
    sin2 = 1.0 - k**2
    ok = sin2 > 1e-12
    sin2 = np.where(ok, sin2, 1.0)
    alpha = (np.cos(rho[i]) - k * np.cos(rho[j])) / sin2
    beta = (np.cos(rho[j]) - k * np.cos(rho[i])) / sin2
    gamma2 = (1.0 - alpha**2 - beta**2 - 2 * alpha * beta * k) / sin2
    ok &= gamma2 >= 0
    base = alpha[:, None] * a + beta[:, None] * b
    normal = np.sqrt(np.maximum(gamma2, 0.0))[:, None] * np.cross(a, b)
    return cast("FloatArray", np.concatenate([base + normal, base - normal])[np.concatenate([ok, ok])])
