"""The 3D kept fractions of bkgxr 2a2a501 (one time at a time), kept as an independent reference.

:func:`reference_kept_fraction_pixels` is :func:`bkgxr.kept_fraction.kept_fraction_pixels`
as it was: ``sky_of_fov`` called, a rotation fitted and the kept solid angle of the pixels
computed once per time in a Python loop. :func:`reference_kept_fractions` is
:func:`bkgxr.masking.kept_fractions` in 3D as it was: each run's EVENTS header read with
astropy, its pointing mapped to the sky one time at a time. The tests compare the batched
fractions with these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from bkgxr.altaz_maps import location_of, nodes_serve, reference_time, run_node_maps
from bkgxr.exclusion import ExclusionRegions, _lon_lat, _unit, excluded
from bkgxr.fov import az_alt_deg, ra_dec_deg
from bkgxr.masking import TRACK_NODES, altaz_of_fov

FloatArray = npt.NDArray[np.float64]
RIGID_TOL_DEG = 0.01
SkyOfFov = Callable[[FloatArray, FloatArray, float], tuple[npt.ArrayLike, npt.ArrayLike]]


def reference_kept_fractions(runs, binning, regions, nodes):
    """Return each run's kept pixel fractions (n_runs, n_lon, n_lat) as bkgxr 2a2a501 computed them in 3D."""
    kept = np.ones((len(runs), *binning.shape[2:]))
    for i, region in enumerate(regions):
        if region is None or not (region.circles or region.masks):
            continue
        row = runs.iloc[i]
        header = fits.getheader(str(row["EVENTS_PATH"]), str(row["EVENTS_HDU"]))
        reference, location = reference_time(header), location_of(header)
        start, stop = float(header["TSTART"]), float(header["TSTOP"])
        times = start + (np.arange(TRACK_NODES) + 0.5) * (stop - start) / TRACK_NODES
        run_nodes = nodes[i]
        if run_nodes is None or not nodes_serve(run_nodes, times, reference=reference, location=location):
            [run_nodes] = run_node_maps([start], [stop], reference=reference, location=location)
        ra_pnt, dec_pnt = float(row["RA_PNT"]), float(row["DEC_PNT"])

        def mapping(lon, lat, time, ra_pnt=ra_pnt, dec_pnt=dec_pnt, reference=reference, location=location, nodes=run_nodes):
            az_pnt, alt_pnt = az_alt_deg(ra_pnt, dec_pnt, np.array([time]), reference=reference, location=location, nodes=nodes)
            az, alt = altaz_of_fov(lon, lat, az_pnt[0], alt_pnt[0])
            return ra_dec_deg(az, alt, time, reference=reference, location=location, nodes=nodes)

        weights = np.full(TRACK_NODES, 1.0 / TRACK_NODES)
        kept[i] = reference_kept_fraction_pixels(binning.fov_lon, binning.fov_lat, mapping, times, weights, region)
    return kept


def reference_kept_fraction_pixels(
    lon_edges_deg: npt.ArrayLike,
    lat_edges_deg: npt.ArrayLike,
    sky_of_fov: SkyOfFov,
    times: npt.ArrayLike,
    weights: npt.ArrayLike,
    regions: ExclusionRegions,
    *,
    oversample: int = 8,
) -> FloatArray:
    """Return the time-averaged kept fraction of each FoV pixel, one fit and one kernel call per time."""
    lon = np.radians(_edges(lon_edges_deg, "lon_edges_deg", -180.0, 180.0))
    lat = np.radians(_edges(lat_edges_deg, "lat_edges_deg", -90.0, 90.0))
    t = np.asarray(times, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if t.size == 0 or w.shape != t.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"times and weights must be non-empty, of one shape, weights finite, >= 0 and not all 0; "
            f"got {t.size} times and weights {w}"
        )
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    shape = (lon.size - 1, lat.size - 1)
    if not regions.circles and not regions.masks:
        return np.ones(shape)
    grid_lon, grid_lat = (g.ravel() for g in np.meshgrid(np.linspace(lon[0], lon[-1], 5), np.linspace(lat[0], lat[-1], 5)))
    if regions.masks:
        kept_of = _sampled_pixels(lon, lat, regions, oversample)
    else:
        kept_of = _circle_pixels(lon, lat, regions, oversample)
    total = np.zeros(shape)
    for t_i, w_i in zip(t, w, strict=True):
        if w_i > 0:
            total += w_i * kept_of(_fit_rotation(sky_of_fov, grid_lon, grid_lat, float(t_i)))
    return cast("FloatArray", np.clip(total / w.sum(), 0.0, 1.0))


def _edges(values: npt.ArrayLike, name: str, low: float, high: float) -> FloatArray:
    """Return bin edges (deg) as float64 after checking they increase within [low, high]."""
    edges = np.asarray(values, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0) or edges[0] < low or edges[-1] > high:
        raise ValueError(f"{name} must be at least two increasing values within [{low}, {high}] deg, got {edges}")
    return edges


def _covered_azimuth(
    theta: FloatArray, theta_c: FloatArray, phi_c: FloatArray, rho: FloatArray, lo: FloatArray, hi: FloatArray
) -> FloatArray:
    """Return the azimuth measure (rad) within [lo, hi] of a circle of colatitude θ covered by caps.

    Parameters
    ----------
    theta : numpy.ndarray
        Colatitudes (rad) about the pole. Shape: (n_rows, 1).
    theta_c, phi_c : numpy.ndarray
        Colatitude and azimuth (rad) of the caps' centres. Shape: (n_caps,) or (n_rows, n_caps).
    rho : numpy.ndarray
        Cap radii (rad). Shape: (n_caps,).
    lo, hi : numpy.ndarray
        Azimuth windows within [-π, π], lo < hi. Shape: (n_windows,).

    Returns
    -------
    numpy.ndarray
        Measure of the union of the caps' arcs in each window. Shape: (n_rows, n_windows).
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


def _removed(
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

    Parameters
    ----------
    edges : numpy.ndarray
        Increasing colatitude edges (rad) about the pole. Shape: (n_bins + 1,).
    cuts : numpy.ndarray
        Colatitudes (rad) where a cap's boundary is tangent to, or crosses a window edge
        or another boundary on, a circle of constant colatitude. Shape: (n_cuts,).
    theta_c, phi_c, rho : numpy.ndarray
        Colatitude, azimuth and radius (rad) of the caps. Shape: (n_caps,).
    lo, hi : numpy.ndarray
        Azimuth windows (rad), see :func:`_covered_azimuth`. Shape: (n_windows,).
    nodes : int

    Returns
    -------
    numpy.ndarray
        Shape: (n_bins, n_windows).
    """
    cuts = np.unique(np.concatenate([edges, cuts[(cuts > edges[0]) & (cuts < edges[-1])]]))
    s, w = np.polynomial.legendre.leggauss(nodes)
    # θ(s) = mid + half (3s − s³)/2 has dθ/ds = 0 at both ends: √(θ − cut) becomes smooth in s.
    x, w = (3 * s - s**3) / 2, w * 1.5 * (1 - s**2)
    half = np.diff(cuts)[:, None] / 2
    mid = (cuts[:-1, None] + cuts[1:, None]) / 2
    theta = (mid + half * x).ravel()
    weight = (half * w).ravel() * np.sin(theta)
    covered = _covered_azimuth(theta[:, None], theta_c, phi_c, rho, lo, hi)
    per_piece = (weight[:, None] * covered).reshape(mid.size, nodes, lo.size).sum(axis=1)
    return cast("FloatArray", np.add.reduceat(per_piece, np.searchsorted(mid[:, 0], edges[:-1]), axis=0))


def _tangencies(theta_c: FloatArray, rho: FloatArray) -> FloatArray:
    """Return the colatitudes (rad) where circles of constant colatitude touch the caps."""
    return np.concatenate([np.abs(theta_c - rho), np.minimum(theta_c + rho, 2 * np.pi - theta_c - rho)])


def _meridian_crossings(lon_c: FloatArray, lat_c: FloatArray, rho: FloatArray, lon: FloatArray) -> FloatArray:
    """Return the latitudes (rad) where caps' boundaries cross the meridians ``lon`` (rad).

    On the meridian λ, sin φ sin φc + cos φ cos φc cos(λ − λc) = cos ρ, i.e.
    A sin φ + B cos φ = cos ρ, solved as φ = ±arccos(cos ρ / √(A² + B²)) + atan2(A, B).
    """
    a = np.sin(lat_c)[:, None] * np.ones_like(lon)
    b = np.cos(lat_c)[:, None] * np.cos(lon - lon_c[:, None])
    ratio = np.cos(rho)[:, None] / np.hypot(a, b)
    ok = np.abs(ratio) <= 1
    angle = np.arccos(np.clip(ratio, -1.0, 1.0))
    shift = np.arctan2(a, b)
    lat = np.concatenate([(shift + angle)[ok], (shift - angle)[ok]])
    lat = np.mod(lat + np.pi, 2 * np.pi) - np.pi
    return lat[np.abs(lat) <= np.pi / 2]


def _crossings(centres: FloatArray, rho: FloatArray) -> FloatArray:
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


def _fit_rotation(sky_of_fov: SkyOfFov, lon: FloatArray, lat: FloatArray, time: float) -> FloatArray:
    """Return the orthogonal matrix R (sky = R @ fov) closest to ``sky_of_fov`` at ``time``."""
    ra, dec = sky_of_fov(np.degrees(lon), np.degrees(lat), time)
    fov = _unit(lon, lat)
    sky = _unit(np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64)))
    u, _, vt = np.linalg.svd(sky.T @ fov)
    rotation = u @ vt
    residual = np.degrees(np.max(np.linalg.norm(fov @ rotation.T - sky, axis=-1)))
    if not residual <= RIGID_TOL_DEG:
        raise ValueError(
            f"sky_of_fov at time {time}: not a rotation of the sphere (off by {residual:.3g} deg > {RIGID_TOL_DEG})"
        )
    return cast("FloatArray", rotation)


def _circle_pixels(
    lon: FloatArray, lat: FloatArray, regions: ExclusionRegions, nodes: int
) -> Callable[[FloatArray], FloatArray]:
    """Return the kernel: rotation → kept fraction of each pixel (circles, exact in longitude)."""
    centres = _unit(np.radians([c.ra_deg for c in regions.circles]), np.radians([c.dec_deg for c in regions.circles]))
    rho = np.radians([c.radius_deg for c in regions.circles])
    colat = np.pi / 2 - lat[::-1]  # colatitude about the frame's pole, increasing
    pixel = np.diff(lon)[:, None] * np.diff(np.sin(lat))[None, :]

    def kept(rotation: FloatArray) -> FloatArray:
        fov = centres @ rotation  # rows: Rᵀ c, the centres in the frame
        lon_c, lat_c = _lon_lat(fov)
        theta_c = np.pi / 2 - lat_c
        cuts = np.concatenate([
            _tangencies(theta_c, rho),
            np.pi / 2 - _lon_lat(_crossings(fov, rho))[1],
            np.pi / 2 - _meridian_crossings(lon_c, lat_c, rho, lon),
        ])
        removed = _removed(colat, cuts, theta_c, lon_c, rho, lon[:-1], lon[1:], nodes)[::-1].T
        return 1.0 - removed / pixel

    return kept


def _sampled_pixels(
    lon: FloatArray, lat: FloatArray, regions: ExclusionRegions, samples: int
) -> Callable[[FloatArray], FloatArray]:
    """Return the kernel: rotation → kept fraction of each pixel from equal-area samples."""
    step = (np.arange(samples) + 0.5) / samples
    lon_s = (lon[:-1, None] + np.diff(lon)[:, None] * step).ravel()
    sin_lat = np.sin(lat)
    lat_s = np.arcsin((sin_lat[:-1, None] + np.diff(sin_lat)[:, None] * step).ravel())
    fov = _unit(*np.meshgrid(lon_s, lat_s, indexing="ij"))  # (n_lon * s, n_lat * s, 3)
    shape = (lon.size - 1, samples, lat.size - 1, samples)

    def kept(rotation: FloatArray) -> FloatArray:
        ra, dec = (np.degrees(a) for a in _lon_lat(fov @ rotation.T))
        return cast("FloatArray", 1.0 - excluded(ra, dec, regions).reshape(shape).mean(axis=(1, 3)))

    return kept
