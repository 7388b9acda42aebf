"""Kept fractions: the share of each bin's solid angle a run keeps outside the exclusion regions.

:func:`kept_fraction_rings` (2D, offset rings around the pointing) and
:func:`kept_fraction_pixels` (3D, pixels of a field-of-view frame that turns on the sky
during the run) give the fraction of each bin's solid angle outside the regions of
:class:`bkgxr.exclusion.ExclusionRegions`.

For circles the fractions are exact up to quadrature: along a circle of constant
colatitude θ about a pole, a cap of radius ρ whose centre lies at colatitude θc covers the
azimuths within ``arccos((cos ρ − cos θ cos θc) / (sin θ sin θc))`` of the centre's azimuth;
the union of these arcs over all caps is measured exactly, and θ is integrated by
Gauss–Legendre quadrature (:mod:`bkgxr.cap_quadrature`). Masks are sampled on a grid
finer than their pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from .cap_quadrature import (
    covered_solid_angle,
    crossings,
    meridian_crossings,
    position_angle,
    tangencies,
)
from .exclusion import ExclusionRegions, _lon_lat, _unit, excluded
from .geometry import offset_deg

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "SkyOfFov",
    "SkyOfFovTimes",
    "kept_fraction_pixels",
    "kept_fraction_pixels_times",
    "kept_fraction_rings",
]

#: Largest distance (deg) tolerated between ``sky_of_fov`` and the rotation fitted to it.
RIGID_TOL_DEG = 0.01

#: Gauss–Legendre nodes per smooth piece of an offset ring (2D, circles).
RING_NODES = 32

#: Largest sampling step (deg) of a ring for masks; a quarter of the mask's pixel if finer.
RING_STEP_DEG = 0.01

#: A field-of-view → sky mapping at one time: ``(lon_deg, lat_deg, time) -> (ra_deg, dec_deg)``,
#: arrays of shape (n_points,) in and out.
SkyOfFov = Callable[["FloatArray", "FloatArray", float], tuple["npt.ArrayLike", "npt.ArrayLike"]]

#: The same mapping at all times in one call: ``(lon_deg, lat_deg, times) -> (ra_deg, dec_deg)``,
#: lon and lat of shape (n_points,), times (n_times,); ra and dec of shape (n_times, n_points).
SkyOfFovTimes = Callable[["FloatArray", "FloatArray", "FloatArray"], tuple["npt.ArrayLike", "npt.ArrayLike"]]


def kept_fraction_rings(
    offset_edges_deg: npt.ArrayLike,
    ra_pnt_deg: float,
    dec_pnt_deg: float,
    regions: ExclusionRegions,
    *,
    nodes: int = RING_NODES,
) -> FloatArray:
    """Return the fraction of each offset ring's solid angle outside every region.

    The pointing is fixed on the sky, so the fraction holds for the whole run. For
    circles only, exact up to Gauss–Legendre quadrature in offset (``nodes`` nodes between
    consecutive offsets where a circle's boundary touches the ring); with a mask, from
    samples on an equal-area polar grid of step ``min(RING_STEP_DEG, pixel / 4)``.

    Parameters
    ----------
    offset_edges_deg : array-like
        Increasing ring edges in deg, within [0, 180]. Shape: (n_offset + 1,).
    ra_pnt_deg, dec_pnt_deg : float
        Pointing position (``RA_PNT``/``DEC_PNT``), ICRS deg.
    regions : ExclusionRegions
    nodes : int
        Quadrature nodes per smooth piece (circles).

    Returns
    -------
    numpy.ndarray
        Kept fraction in [0, 1]. Shape: (n_offset,).
    """
    edges = _edges(offset_edges_deg, "offset_edges_deg", 0.0, 180.0)
    if regions.masks:
        return _sampled_rings(edges, ra_pnt_deg, dec_pnt_deg, regions)
    if not regions.circles:
        return np.ones(edges.size - 1)
    ra_c = np.array([c.ra_deg for c in regions.circles])
    dec_c = np.array([c.dec_deg for c in regions.circles])
    rho = np.radians([c.radius_deg for c in regions.circles])
    theta_c = np.radians(offset_deg(ra_c, dec_c, ra_pnt_deg, dec_pnt_deg))
    phi_c = position_angle(np.radians(ra_pnt_deg), np.radians(dec_pnt_deg), np.radians(ra_c), np.radians(dec_c))
    ra_x, dec_x = _lon_lat(crossings(_unit(np.radians(ra_c), np.radians(dec_c)), rho))
    cuts = np.concatenate([
        tangencies(theta_c, rho),
        np.radians(offset_deg(np.degrees(ra_x), np.degrees(dec_x), ra_pnt_deg, dec_pnt_deg)),
    ])
    full = np.array([np.pi])
    removed = covered_solid_angle(np.radians(edges), cuts, theta_c, phi_c, rho, -full, full, nodes)[:, 0]
    out = 1.0 - removed / (2 * np.pi * -np.diff(np.cos(np.radians(edges))))
    return np.clip(out, 0.0, 1.0)


def kept_fraction_pixels(
    lon_edges_deg: npt.ArrayLike,
    lat_edges_deg: npt.ArrayLike,
    sky_of_fov: SkyOfFov,
    times: npt.ArrayLike,
    weights: npt.ArrayLike,
    regions: ExclusionRegions,
    *,
    oversample: int = 8,
) -> FloatArray:
    """Return the time-averaged fraction of each field-of-view pixel outside every region.

    The field-of-view frame (e.g. ALTAZ-aligned) turns on the sky during the run, so the
    regions move across its pixels. At each time the frame is a rotation of the sky:
    it is fitted (least squares) to ``sky_of_fov`` on a 5 × 5 grid spanning the pixels,
    then the kept solid angle of each pixel is computed in the frame. For circles: exact
    in longitude, ``oversample`` Gauss–Legendre nodes in latitude per pixel row; with a
    mask: ``oversample`` × ``oversample`` equal-area samples per pixel.

    Parameters
    ----------
    lon_edges_deg, lat_edges_deg : array-like
        Increasing pixel edges of the frame in deg, longitude within [-180, 180], latitude
        within [-90, 90]; ``(lon, lat)`` are spherical coordinates of the frame.
        Shapes: (n_lon + 1,), (n_lat + 1,).
    sky_of_fov : callable
        ``sky_of_fov(lon_deg, lat_deg, time) -> (ra_deg, dec_deg)``: the ICRS position at
        ``time`` (one element of ``times``) of frame points, arrays of shape (n_points,).
    times : array-like
        Times at which the run is sampled, in whatever unit ``sky_of_fov`` takes.
        Shape: (n_times,).
    weights : array-like
        Non-negative weight of each time (e.g. its live time). Shape: (n_times,).
    regions : ExclusionRegions
    oversample : int
        Latitude nodes per pixel row (circles; 8 gives 1e-7), samples per pixel side
        (mask; choose it so that pixel / oversample is below the mask's pixel).

    Returns
    -------
    numpy.ndarray
        Kept fraction in [0, 1]. Shape: (n_lon, n_lat).

    Raises
    ------
    ValueError
        If the edges, times or weights are invalid, or ``sky_of_fov`` is not a rotation of
        the sphere within ``RIGID_TOL_DEG`` at some time.
    """

    def at_times(lon: FloatArray, lat: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        pairs = [sky_of_fov(lon, lat, float(t_i)) for t_i in t]
        return np.array([p[0] for p in pairs], dtype=np.float64), np.array([p[1] for p in pairs], dtype=np.float64)

    return kept_fraction_pixels_times(lon_edges_deg, lat_edges_deg, at_times, times, weights, regions, oversample=oversample)


def kept_fraction_pixels_times(
    lon_edges_deg: npt.ArrayLike,
    lat_edges_deg: npt.ArrayLike,
    sky_of_fov: SkyOfFovTimes,
    times: npt.ArrayLike,
    weights: npt.ArrayLike,
    regions: ExclusionRegions,
    *,
    oversample: int = 8,
) -> FloatArray:
    """Return the time-averaged fraction of each field-of-view pixel outside every region, all times at once.

    :func:`kept_fraction_pixels` with a mapping that takes the times of positive weight in
    one call: ``sky_of_fov(lon_deg, lat_deg, times) -> (ra_deg, dec_deg)`` of shape
    (n_times, n_points) for ``lon_deg``, ``lat_deg`` of shape (n_points,) and ``times`` of
    shape (n_times,). The rotations of all times are fitted together and the pixels' kept
    solid angles computed together. Parameters, result and errors as there.
    """
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
    if not regions.circles and not regions.masks:
        return np.ones((lon.size - 1, lat.size - 1))
    used = w > 0
    rotations = _fit_rotations(sky_of_fov, lon, lat, t[used])
    kernel = _sampled_pixels if regions.masks else _circle_pixels
    total = np.tensordot(w[used], kernel(lon, lat, regions, oversample, rotations), axes=1)
    return cast("FloatArray", np.clip(total / w.sum(), 0.0, 1.0))


def _edges(values: npt.ArrayLike, name: str, low: float, high: float) -> FloatArray:
    """Return bin edges (deg) as float64 after checking they increase within [low, high]."""
    edges = np.asarray(values, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0) or edges[0] < low or edges[-1] > high:
        raise ValueError(f"{name} must be at least two increasing values within [{low}, {high}] deg, got {edges}")
    return edges


def _fit_rotations(sky_of_fov: SkyOfFovTimes, lon: FloatArray, lat: FloatArray, times: FloatArray) -> FloatArray:
    """Return the orthogonal matrices R (sky = R @ fov) closest to ``sky_of_fov`` at ``times``. Shape: (n_times, 3, 3).

    Fitted (least squares, one SVD per time) on a 5 × 5 grid spanning the pixel edges
    ``lon`` × ``lat`` (rad).
    """
    grid_lon, grid_lat = (g.ravel() for g in np.meshgrid(np.linspace(lon[0], lon[-1], 5), np.linspace(lat[0], lat[-1], 5)))
    ra, dec = sky_of_fov(np.degrees(grid_lon), np.degrees(grid_lat), times)
    fov = _unit(grid_lon, grid_lat)
    sky = _unit(np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64)))
    if sky.shape != (times.size, *fov.shape):
        raise ValueError(f"sky_of_fov must return (ra, dec) of shape {(times.size, grid_lon.size)}, got {sky.shape[:-1]}")
    u, _, vt = np.linalg.svd(np.swapaxes(sky, -1, -2) @ fov)
    rotations = u @ vt
    residual = np.degrees(np.max(np.linalg.norm(fov @ np.swapaxes(rotations, -1, -2) - sky, axis=-1), axis=-1))
    bad = np.flatnonzero(~(residual <= RIGID_TOL_DEG))
    if bad.size:
        raise ValueError(
            f"sky_of_fov at time {float(times[bad[0]])}: not a rotation of the sphere "
            f"(off by {residual[bad[0]]:.3g} deg > {RIGID_TOL_DEG})"
        )
    return cast("FloatArray", rotations)


def _circle_pixels(lon: FloatArray, lat: FloatArray, regions: ExclusionRegions, nodes: int, rotations: FloatArray) -> FloatArray:
    """Return the kept fraction of each pixel at each rotation (circles, exact in longitude). Shape: (n_rot, n_lon, n_lat)."""
    centres = _unit(np.radians([c.ra_deg for c in regions.circles]), np.radians([c.dec_deg for c in regions.circles]))
    rho = np.radians([c.radius_deg for c in regions.circles])
    fov = centres @ rotations  # rows: Rᵀ c, the centres in the frame at each time
    lon_c, lat_c = _lon_lat(fov)
    theta_c = np.pi / 2 - lat_c
    cuts = np.concatenate([
        tangencies(theta_c, rho),
        np.pi / 2 - _lon_lat(crossings(centres, rho) @ rotations)[1],
        np.pi / 2 - meridian_crossings(lon_c, lat_c, rho, lon),
    ], axis=-1)
    colat = np.pi / 2 - lat[::-1]  # colatitude about the frame's pole, increasing
    removed = np.swapaxes(covered_solid_angle(colat, cuts, theta_c, lon_c, rho, lon[:-1], lon[1:], nodes)[:, ::-1], -1, -2)
    return 1.0 - removed / (np.diff(lon)[:, None] * np.diff(np.sin(lat))[None, :])


def _sampled_pixels(lon: FloatArray, lat: FloatArray, regions: ExclusionRegions, samples: int, rotations: FloatArray) -> FloatArray:
    """Return the kept fraction of each pixel at each rotation from equal-area samples. Shape: (n_rot, n_lon, n_lat)."""
    step = (np.arange(samples) + 0.5) / samples
    lon_s = (lon[:-1, None] + np.diff(lon)[:, None] * step).ravel()
    sin_lat = np.sin(lat)
    lat_s = np.arcsin((sin_lat[:-1, None] + np.diff(sin_lat)[:, None] * step).ravel())
    fov = _unit(*np.meshgrid(lon_s, lat_s, indexing="ij"))  # (n_lon * s, n_lat * s, 3)
    ra, dec = (np.degrees(a) for a in _lon_lat(fov @ np.swapaxes(rotations, -1, -2)[:, None]))
    shape = (len(rotations), lon.size - 1, samples, lat.size - 1, samples)
    return cast("FloatArray", 1.0 - excluded(ra, dec, regions).reshape(shape).mean(axis=(2, 4)))


def _sampled_rings(edges: FloatArray, ra_pnt: float, dec_pnt: float, regions: ExclusionRegions) -> FloatArray:
    """Return each ring's kept fraction from samples on an equal-area polar grid."""
    pixel = min(float(np.min(m.geom.pixel_scales.deg)) for m in regions.masks)
    step = np.radians(min(RING_STEP_DEG, pixel / 4))
    lo, hi = np.radians(edges[:-1]), np.radians(edges[1:])
    pole = _unit(np.radians(np.array(ra_pnt)), np.radians(np.array(dec_pnt)))
    east = np.array([-np.sin(np.radians(ra_pnt)), np.cos(np.radians(ra_pnt)), 0.0])
    north = np.cross(pole, east)
    out = np.empty(edges.size - 1)
    for i in range(out.size):
        n_r = int(np.ceil((hi[i] - lo[i]) / step))
        n_phi = int(np.ceil(2 * np.pi * np.sin(hi[i]) / step)) + 8
        cos_r = np.cos(lo[i]) + (np.cos(hi[i]) - np.cos(lo[i])) * (np.arange(n_r) + 0.5) / n_r
        sin_r = np.sqrt(1.0 - cos_r**2)
        phi = 2 * np.pi * (np.arange(n_phi) + 0.5) / n_phi
        direction = np.cos(phi)[:, None] * north + np.sin(phi)[:, None] * east  # (n_phi, 3)
        vec = cos_r[:, None, None] * pole + sin_r[:, None, None] * direction
        ra, dec = (np.degrees(a) for a in _lon_lat(vec))
        out[i] = 1.0 - np.mean(excluded(ra, dec, regions))
    return out
