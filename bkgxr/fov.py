"""Horizontal and field-of-view coordinates of events and of the pointing track.

Float64 numpy kernels over event arrays (deg in, deg out). astropy computes
the full ICRS → AltAz transformation (precession, nutation, aberration, light
deflection, Earth rotation, polar motion; no refraction) only at a few node
times; every event is then mapped by the node's affine map, turned by the
Earth's rotation since the node (see :func:`az_alt_deg`). The node maps of many
runs can be computed in one astropy call (:func:`run_node_maps`) and handed to
:func:`event_fov_deg`, which then maps a run's events with numpy only.

FoV coordinates follow gammapy's ``FoVAltAzFrame`` (``FOVALIGN = 'ALTAZ'``)
and :func:`gammapy.utils.coordinates.sky_to_fov`: the pointing is at (0, 0),
``fov_lat`` grows with altitude and ``fov_lon`` is the *reversed* offset
longitude, so ``fov_lon > 0`` lies towards *smaller* azimuth.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/general/coordinates.html#coords-fov
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import astropy.units as u
import erfa
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from .geometry import segment_shares

if TYPE_CHECKING:
    import numpy.typing as npt

    #: North, east and up components of directions (not normalised), each of the shape of the times.
    Vectors = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]

#: Earth rotation rate (rad per second), 2π × 1.00273781191135448 / 86400 (IAU 2000 Earth rotation angle).
EARTH_ROTATION_RAD_S = 2.0 * np.pi * 1.00273781191135448 / 86400.0

#: Default spacing of the astropy nodes (s); events use their nearest node.
NODE_STEP_S = 600.0

#: Probe directions (unit vectors, 32 points of a Fibonacci sphere) used to fit each node's map.
_PROBES = np.stack(
    [
        np.sqrt(1.0 - (1.0 - (2.0 * np.arange(32) + 1.0) / 32) ** 2) * np.cos(np.pi * (3.0 - np.sqrt(5.0)) * np.arange(32)),
        np.sqrt(1.0 - (1.0 - (2.0 * np.arange(32) + 1.0) / 32) ** 2) * np.sin(np.pi * (3.0 - np.sqrt(5.0)) * np.arange(32)),
        1.0 - (2.0 * np.arange(32) + 1.0) / 32,
    ],
    axis=-1,
)


class EventFoV(NamedTuple):
    """Per-event FoV coordinates (ALTAZ-aligned) and pointing zenith, all in deg, shape of the events."""

    fov_lon: npt.NDArray[np.float64]
    fov_lat: npt.NDArray[np.float64]
    zenith_pnt: npt.NDArray[np.float64]


class NodeMaps(NamedTuple):
    """astropy's ICRS → AltAz transformation at node times, as affine maps (see :func:`node_maps_for`).

    Plain numbers only, so that a dask task carrying one is cheap to hash and send.
    """

    #: Node times, s since the reference, increasing. Shape: (n_nodes,).
    time_s: npt.NDArray[np.float64]
    #: Affine map ICRS unit vector → north, east, up at each node. Shape: (n_nodes, 3, 4).
    maps: npt.NDArray[np.float64]
    #: The reference time as TT Julian date in two parts (jd1, jd2).
    reference_jd_tt: tuple[float, float]
    #: The observatory, geocentric x, y, z in m.
    location_m: tuple[float, float, float]


def location_of(header: Mapping[str, Any]) -> EarthLocation:
    """Return the observatory of an EVENTS header (GEOLON, GEOLAT in deg, optional ALTITUDE in m).

    Raises
    ------
    KeyError
        Naming the first keyword that is missing.
    """
    for key in ("GEOLON", "GEOLAT"):
        if key not in header:
            raise KeyError(key)
    lon, lat = np.radians(float(header["GEOLON"])), np.radians(float(header["GEOLAT"]))
    # what EarthLocation.from_geodetic computes, without its ~1 ms of overhead per run
    return EarthLocation.from_geocentric(*erfa.gd2gc(1, lon, lat, float(header.get("ALTITUDE", 0.0))), unit=u.m)


def reference_time(header: Mapping[str, Any]) -> Time:
    """Return the time origin of an EVENTS header: MJDREFI + MJDREFF (or MJDREF) in TIMESYS (default TT).

    Raises
    ------
    KeyError
        If neither MJDREFI nor MJDREF is present.
    """
    if "MJDREFI" in header:
        mjdref = float(header["MJDREFI"]) + float(header.get("MJDREFF", 0.0))
    elif "MJDREF" in header:
        mjdref = float(header["MJDREF"])
    else:
        raise KeyError("MJDREFI")
    scale = str(header.get("TIMESYS", "TT")).strip().lower() or "tt"
    return Time(mjdref, format="mjd", scale=scale)


def _unit_vectors(lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return unit vectors (..., 3) of spherical coordinates in deg."""
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack(np.broadcast_arrays(cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)), axis=-1)


def _local_axes(location: EarthLocation) -> npt.NDArray[np.float64]:
    """Return the rows north, east, up (3, 3) in an Earth-fixed frame whose z is the rotation axis.

    The frame's x lies in the observatory's meridian: only the axis matters,
    the node maps carry the longitude.
    """
    phi = float(erfa.gc2gd(1, np.array(_location_m(location)))[1])  # WGS84 latitude, as location.to_geodetic()
    return np.array(
        [[-np.sin(phi), 0.0, np.cos(phi)], [0.0, 1.0, 0.0], [np.cos(phi), 0.0, np.sin(phi)]]
    )


def _node_maps(
    node_s: npt.NDArray[np.float64], reference: Time, location: EarthLocation
) -> npt.NDArray[np.float64]:
    """Return, per node time, the affine map (n_nodes, 3, 4) ICRS unit vector → AltAz direction.

    The map ``f(u) = normalize(M u + c)`` is exact to first order in the
    aberration (|c| ≈ 1e-4): fitted to astropy's transformation of
    :data:`_PROBES` by requiring ``M u + c`` parallel to astropy's direction
    (homogeneous least squares: the eigenvector of the normal matrix with the
    smallest eigenvalue), then scaled so
    that |det M| = 1 and ``M u + c`` points along astropy's direction (det M
    is -1: north, east, up is a left-handed triad).
    """
    times = reference + node_s[:, None] * u.s
    probes = SkyCoord(_PROBES[:, 0], _PROBES[:, 1], _PROBES[:, 2], representation_type="cartesian", frame="icrs")
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        altaz = probes[None, :].transform_to(AltAz(obstime=times, location=location, pressure=0 * u.hPa))
    seen = _unit_vectors(altaz.az.to_value(u.deg), altaz.alt.to_value(u.deg))  # (n_nodes, n_probes, 3)
    # (I - f fᵀ)(M u + c) = 0 for every probe: 3 rows per probe, unknowns M (row-major) and c
    perp = np.eye(3) - seen[..., :, None] * seen[..., None, :]  # (n_nodes, n_probes, 3, 3)
    homog = np.concatenate([_PROBES, np.ones((len(_PROBES), 1))], axis=-1)  # (n_probes, 4)
    design = (perp[..., :, :, None] * homog[None, :, None, None, :]).reshape(len(node_s), 3 * len(_PROBES), 12)
    normal = np.einsum("nri,nrj->nij", design, design)
    maps = np.linalg.eigh(normal)[1][:, :, 0].reshape(-1, 3, 4)
    along = np.einsum("nij,pj,npi->n", maps, homog, seen)
    scale = np.sign(along) / np.cbrt(np.abs(np.linalg.det(maps[:, :, :3])))
    return np.asarray(maps * scale[:, None, None], dtype=np.float64)


#: Nodes per astropy call in :func:`node_maps_for`: bounds the memory of the fit (~16 kB per node, 32 MiB a call).
_NODE_BATCH = 2048


def _reference_jd_tt(reference: Time) -> tuple[float, float]:
    """Return a time as TT Julian date (jd1, jd2)."""
    tt = reference.tt
    return float(tt.jd1), float(tt.jd2)


def _location_m(location: EarthLocation) -> tuple[float, float, float]:
    """Return a location's geocentric x, y, z in m."""
    x, y, z = (float(c.to_value(u.m)) for c in location.geocentric)
    return x, y, z


def node_maps_for(node_times_s: npt.ArrayLike, *, reference: Time, location: EarthLocation) -> NodeMaps:
    """Return the node maps of astropy's ICRS → AltAz transformation at given node times.

    One astropy call per 2048 nodes; each node's map is the one that
    :func:`event_fov_deg` computes for that node time on its own.

    Parameters
    ----------
    node_times_s : array-like
        Node times, s since ``reference``; multiples of the ``node_step_s``
        that the maps will serve (see :func:`event_fov_deg`). Shape: (n_nodes,).
    reference : astropy.time.Time
        Time origin (see :func:`reference_time`).
    location : astropy.coordinates.EarthLocation
        Observatory (see :func:`location_of`).

    Returns
    -------
    NodeMaps
        The maps at the sorted, distinct node times.

    Raises
    ------
    ValueError
        If a node time is not finite.
    """
    times = np.unique(np.asarray(node_times_s, dtype=np.float64).ravel())
    if not np.all(np.isfinite(times)):
        raise ValueError("node times must be finite")
    maps = np.empty((times.size, 3, 4), dtype=np.float64)
    for first in range(0, times.size, _NODE_BATCH):
        maps[first:first + _NODE_BATCH] = _node_maps(times[first:first + _NODE_BATCH], reference, location)
    return NodeMaps(times, maps, _reference_jd_tt(reference), _location_m(location))


def run_node_maps(
    tstart_s: npt.ArrayLike,
    tstop_s: npt.ArrayLike,
    *,
    reference: Time,
    location: EarthLocation,
    node_step_s: float = NODE_STEP_S,
) -> list[NodeMaps]:
    """Return each run's node maps, all computed together (:func:`node_maps_for`).

    A run gets the multiples of ``node_step_s`` from ``tstart - node_step_s``
    to ``tstop + node_step_s``: the nearest node of every time in
    [tstart, tstop] and of times up to half a step beyond. Runs sharing a
    node time share its astropy evaluation.

    Parameters
    ----------
    tstart_s, tstop_s : array-like
        Run start and stop, s since ``reference``. Shape: (n_runs,).
    reference, location, node_step_s
        As in :func:`az_alt_deg`.

    Returns
    -------
    list of NodeMaps
        One per run, in input order.

    Raises
    ------
    ValueError
        If a time is not finite, a run stops before it starts or ``node_step_s`` is not positive.
    """
    start = np.atleast_1d(np.asarray(tstart_s, dtype=np.float64))
    stop = np.atleast_1d(np.asarray(tstop_s, dtype=np.float64))
    if start.shape != stop.shape or start.ndim != 1:
        raise ValueError(f"tstart {start.shape} and tstop {stop.shape} must be 1-d of one shape")
    if not (np.all(np.isfinite(start)) and np.all(np.isfinite(stop))):
        raise ValueError("run start and stop times must be finite")
    if np.any(stop < start):
        raise ValueError("a run stops before it starts")
    if not node_step_s > 0:
        raise ValueError(f"node_step_s must be positive, got {node_step_s}")
    first = np.ceil(start / node_step_s - 1.0).astype(np.int64)
    last = np.floor(stop / node_step_s + 1.0).astype(np.int64)
    steps = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in zip(first, last, strict=True)])
    # node times as _nodes makes them, so that an event's node is found by equality
    nodes = node_maps_for(steps * float(node_step_s), reference=reference, location=location)
    lo = np.searchsorted(nodes.time_s, first * float(node_step_s))
    hi = np.searchsorted(nodes.time_s, last * float(node_step_s), side="right")
    return [nodes._replace(time_s=nodes.time_s[a:b], maps=nodes.maps[a:b]) for a, b in zip(lo, hi, strict=True)]


def merged_node_maps(nodes: Sequence[NodeMaps]) -> NodeMaps | None:
    """Return one NodeMaps holding the nodes of all ``nodes`` (e.g. every run's, to map all runs in one call).

    None if ``nodes`` is empty or its members differ in reference time or observatory.
    A node time held by several members keeps the first one's map (those of
    :func:`run_node_maps` share one evaluation).
    """
    if not nodes:
        return None
    first = nodes[0]
    if any(n.reference_jd_tt != first.reference_jd_tt or n.location_m != first.location_m for n in nodes):
        return None
    times, index = np.unique(np.concatenate([n.time_s for n in nodes]), return_index=True)
    maps = np.concatenate([n.maps for n in nodes])[index]
    return NodeMaps(times, maps, first.reference_jd_tt, first.location_m)


def _maps_from(
    nodes: NodeMaps, node_s: npt.NDArray[np.float64], reference: Time, location: EarthLocation
) -> npt.NDArray[np.float64] | None:
    """Return the maps of ``nodes`` at the times ``node_s``; None if one is missing or the site differs.

    The reference must agree within 1 µs and the location within 1 mm.
    """
    jd1, jd2 = _reference_jd_tt(reference)
    if abs((jd1 - nodes.reference_jd_tt[0]) + (jd2 - nodes.reference_jd_tt[1])) * 86400.0 > 1e-6:
        return None
    if math.dist(_location_m(location), nodes.location_m) > 1e-3:
        return None
    if node_s.size == 0:
        return np.zeros((0, 3, 4), dtype=np.float64)
    if nodes.time_s.size == 0:
        return None
    index = np.minimum(np.searchsorted(nodes.time_s, node_s), nodes.time_s.size - 1)
    return nodes.maps[index] if np.array_equal(nodes.time_s[index], node_s) else None


def _nodes(time: npt.NDArray[np.float64], node_step_s: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Return the node times (s) nearest to some time, and each time's node index (shape of ``time``)."""
    step = np.rint(time / node_step_s).astype(np.int64)
    if step.size == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(step.shape, dtype=np.intp)
    first = int(step.min())
    span = int(step.max()) - first + 1
    if span > 4 * step.size:  # sparse times (many runs): sort
        node_index, inverse = np.unique(step, return_inverse=True)
        which = inverse.reshape(step.shape)
    else:  # times of a few runs: a table of the steps in between, no sort
        used = np.zeros(span, dtype=bool)
        used[step - first] = True
        node_index = np.flatnonzero(used) + first
        which = (np.cumsum(used) - 1)[step - first]
    return np.asarray(node_index * float(node_step_s), dtype=np.float64), np.asarray(which, dtype=np.intp)


def _node_frames(
    time_s: npt.ArrayLike, reference: Time, location: EarthLocation, node_step_s: float, nodes: NodeMaps | None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return what maps directions at times: node index and rotation since the node of each time.

    Returns
    -------
    which : numpy.ndarray
        Each time's node, shape of the times.
    fixed : numpy.ndarray
        Node maps ICRS unit vector → Earth-fixed frame of :func:`_local_axes`. Shape: (n_nodes, 3, 4).
    axes : numpy.ndarray
        Rows north, east, up in the Earth-fixed frame. Shape: (3, 3).
    cos, sin : numpy.ndarray
        Of the Earth's rotation angle since each time's node, shape of the times.
    """
    if not node_step_s > 0:
        raise ValueError(f"node_step_s must be positive, got {node_step_s}")
    time = np.asarray(time_s, dtype=np.float64)
    if not np.all(np.isfinite(time)):
        raise ValueError("times must be finite")
    node_s, which = _nodes(time, node_step_s)
    maps = None if nodes is None else _maps_from(nodes, node_s, reference, location)
    if maps is None:
        maps = _node_maps(node_s, reference, location)
    axes = _local_axes(location)
    # node maps in the Earth-fixed frame, where the rotation since the node is about z
    fixed = np.einsum("ji,njk->nik", axes, maps)
    # a fixed sky direction moves west: its Earth-fixed longitude drops by the rotation angle
    angle = EARTH_ROTATION_RAD_S * (time - node_s[which])
    return which, fixed, axes, np.cos(angle), np.sin(angle)


def _affine(coefficients: Sequence[npt.NDArray[np.float64]], u: Vectors) -> Vectors:
    """Return ``M u + c`` of maps given as 12 arrays (rows of M and c: m00, m01, m02, c0, m10, ...)."""
    x, y, z = (
        coefficients[4 * i] * u[0] + coefficients[4 * i + 1] * u[1] + coefficients[4 * i + 2] * u[2] + coefficients[4 * i + 3]
        for i in range(3)
    )
    return x, y, z


def _horizontal_vectors(
    directions: list[tuple[npt.ArrayLike, npt.ArrayLike]], time_s: npt.ArrayLike,
    *, reference: Time, location: EarthLocation, node_step_s: float, nodes: NodeMaps | None = None,
) -> list[Vectors]:
    """Return north, east, up of ICRS directions (RA, Dec in deg) at times; see :func:`az_alt_deg`.

    The node maps and the Earth rotation since each node are computed once
    for all ``directions`` (e.g. the events and the pointing); taken from
    ``nodes`` when it holds every node needed, for the same reference and location.
    """
    which, frames, axes, cos, sin = _node_frames(time_s, reference, location, node_step_s, nodes)
    fixed = list(frames.reshape(-1, 12).T)  # the 12 coefficients, each over the nodes
    # each time's coefficients, for directions given per time (one direction is mapped once per node)
    per_time = [coefficient[which] for coefficient in fixed] if any(np.ndim(d[0]) or np.ndim(d[1]) for d in directions) else []
    out = []
    for lon_deg, lat_deg in directions:
        lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
        lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
        cos_lat = np.cos(lat)
        u = (cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat))
        if lon.ndim == 0 and lat.ndim == 0:
            x, y, z = (row[which] for row in _affine(fixed, u))
        else:
            x, y, z = _affine(per_time, u)
        x, y = x * cos + y * sin, y * cos - x * sin
        # back to north, east, up: the local axes have no y in north and up, east is y
        out.append((axes[0, 0] * x + axes[0, 2] * z, y, axes[2, 0] * x + axes[2, 2] * z))
    return out


def _altitude_deg(vectors: Vectors) -> npt.NDArray[np.float64]:
    north, east, up = vectors
    return np.asarray(np.degrees(np.arctan2(up, np.hypot(north, east))), dtype=np.float64)


def _fov_of_vectors(event: Vectors, pointing: Vectors) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return gammapy's ALTAZ FoV lon, lat (deg) of horizontal vectors (north, east, up; any length).

    Components along the pointing, along increasing azimuth and along
    increasing altitude at the pointing; the longitude is reversed.
    """
    north, east, up = event
    p_north, p_east, p_up = pointing
    horizontal = np.hypot(p_north, p_east)
    length = np.hypot(horizontal, p_up)
    cos_az, sin_az = p_north / horizontal, p_east / horizontal
    cos_alt, sin_alt = horizontal / length, p_up / length
    level = north * cos_az + east * sin_az
    along = cos_alt * level + sin_alt * up
    across = east * cos_az - north * sin_az
    above = cos_alt * up - sin_alt * level
    return np.degrees(np.arctan2(-across, along)), np.degrees(np.arctan2(above, np.hypot(along, across)))


def az_alt_deg(
    ra_deg: npt.ArrayLike,
    dec_deg: npt.ArrayLike,
    time_s: npt.ArrayLike,
    *,
    reference: Time,
    location: EarthLocation,
    node_step_s: float = NODE_STEP_S,
    nodes: NodeMaps | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return azimuth (east of north, [0, 360)) and altitude (deg) of ICRS directions at times.

    No refraction (pressure 0), as GADF's Alt/Az. Agrees with astropy's
    ``SkyCoord(ra, dec).transform_to(AltAz(obstime, location))`` to better
    than 1e-5 deg (tests/test_fov.py measures it).

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS position, deg. Broadcast with ``time_s``: scalars give the track
        of one position (the pointing), arrays one position per event.
    time_s : array-like
        Times, s since ``reference``. Shape: (n_events,) or any.
    reference : astropy.time.Time
        Time origin (see :func:`reference_time`).
    location : astropy.coordinates.EarthLocation
        Observatory (see :func:`location_of`).
    node_step_s : float
        astropy evaluates the transformation at multiples of this step that
        are nearest to some time; each time is then mapped by its nearest
        node, turned by the Earth's rotation angle since that node.
    nodes : NodeMaps, optional
        Precomputed node maps, used as in :func:`event_fov_deg` (then astropy is not called).

    Returns
    -------
    az, alt : numpy.ndarray
        deg, shape of the broadcast inputs.

    Raises
    ------
    ValueError
        If a time is not finite or ``node_step_s`` is not positive.

    Notes
    -----
    Between nodes only the Earth rotation is followed; the neglected
    changes of precession-nutation and aberration over half a step (the
    fastest, the annual aberration, moves by < 0.02 arcsec per hour) and the
    polar-motion tilt of the rotation axis (< 0.5 arcsec) are far below
    1e-4 deg at the default step.
    """
    [vectors] = _horizontal_vectors(
        [(ra_deg, dec_deg)], time_s, reference=reference, location=location, node_step_s=node_step_s, nodes=nodes
    )
    north, east, _ = vectors
    return np.degrees(np.arctan2(east, north)) % 360.0, _altitude_deg(vectors)


def ra_dec_deg(
    az_deg: npt.ArrayLike,
    alt_deg: npt.ArrayLike,
    time_s: npt.ArrayLike,
    *,
    reference: Time,
    location: EarthLocation,
    node_step_s: float = NODE_STEP_S,
    nodes: NodeMaps | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return RA ([0, 360)) and Dec (deg, ICRS) of horizontal directions at times: the inverse of :func:`az_alt_deg`.

    The Earth's rotation since each time's node is undone, then the node's
    map ``normalize(M u + c)`` is inverted: the unit vector ``u`` with
    ``M u + c = λ v`` (``λ > 0``) for the direction ``v`` is
    ``λ M⁻¹v − M⁻¹c``, and ``|u| = 1`` is a quadratic in ``λ`` with one
    positive root (``|M⁻¹c| < 1``). Agrees with astropy's
    ``SkyCoord(az, alt, frame=AltAz(obstime, location)).icrs`` to better than
    1e-5 deg (tests/test_fov.py measures it).

    Parameters
    ----------
    az_deg, alt_deg : array-like
        Horizontal direction (azimuth east of north, altitude; no refraction), deg.
    time_s : array-like
        Times, s since ``reference``; broadcast with the directions.
    reference, location, node_step_s, nodes
        As in :func:`az_alt_deg`.

    Returns
    -------
    ra, dec : numpy.ndarray
        deg, shape of the broadcast inputs.

    Raises
    ------
    ValueError
        If a time is not finite or ``node_step_s`` is not positive.
    """
    az, alt, time = np.broadcast_arrays(
        np.radians(np.asarray(az_deg, dtype=np.float64)),
        np.radians(np.asarray(alt_deg, dtype=np.float64)),
        np.asarray(time_s, dtype=np.float64),
    )
    which, fixed, axes, cos, sin = _node_frames(time, reference, location, node_step_s, nodes)
    north, east, up = np.cos(alt) * np.cos(az), np.cos(alt) * np.sin(az), np.sin(alt)
    # to the Earth-fixed frame (the transposed local axes), then back by the rotation since the node
    x, y, z = axes[0, 0] * north + axes[2, 0] * up, east, axes[0, 2] * north + axes[2, 2] * up
    x, y = x * cos - y * sin, y * cos + x * sin
    inverse = np.linalg.inv(fixed[:, :, :3])  # (n_nodes, 3, 3)
    shift = np.einsum("nij,nj->ni", inverse, fixed[:, :, 3])  # M⁻¹c per node
    a = np.einsum("...ij,...j->...i", inverse[which], np.stack([x, y, z], axis=-1))
    b = shift[which]
    ab, aa, bb = (np.sum(p * q, axis=-1) for p, q in ((a, b), (a, a), (b, b)))
    lam = (ab + np.sqrt(ab**2 - aa * (bb - 1.0))) / aa
    vec = lam[..., None] * a - b
    ra = np.degrees(np.arctan2(vec[..., 1], vec[..., 0])) % 360.0
    dec = np.degrees(np.arctan2(vec[..., 2], np.hypot(vec[..., 0], vec[..., 1])))
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)


def nodes_serve(
    nodes: NodeMaps, time_s: npt.ArrayLike, *, reference: Time, location: EarthLocation, node_step_s: float = NODE_STEP_S
) -> bool:
    """Return whether ``nodes`` hold the node of every time and were made for ``reference`` and ``location``.

    Then :func:`az_alt_deg`, :func:`ra_dec_deg` and :func:`event_fov_deg`
    given these ``nodes`` do not call astropy (same tolerances: 1 µs, 1 mm).
    """
    node_s, _ = _nodes(np.asarray(time_s, dtype=np.float64), node_step_s)
    return _maps_from(nodes, node_s, reference, location) is not None


def fov_lon_lat_deg(
    az_deg: npt.ArrayLike, alt_deg: npt.ArrayLike, az_pnt_deg: npt.ArrayLike, alt_pnt_deg: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return ALTAZ-aligned FoV longitude and latitude (deg) of horizontal directions.

    Exactly gammapy's ``sky_to_fov(az, alt, az_pnt, alt_pnt)`` and
    ``FoVAltAzFrame``: rotate the pointing to (0, 0), then reverse the
    longitude. ``fov_lat > 0`` is above the pointing (higher altitude),
    ``fov_lon > 0`` towards smaller azimuth.

    Parameters
    ----------
    az_deg, alt_deg : array-like
        Direction, deg. Shape: (n_events,) or any.
    az_pnt_deg, alt_pnt_deg : array-like
        Pointing, deg; broadcast with the directions.

    Returns
    -------
    fov_lon, fov_lat : numpy.ndarray
        deg, fov_lon in (-180, 180], shape of the broadcast inputs.
    """
    az, alt = np.radians(np.asarray(az_deg, dtype=np.float64)), np.radians(np.asarray(alt_deg, dtype=np.float64))
    az_pnt = np.radians(np.asarray(az_pnt_deg, dtype=np.float64))
    alt_pnt = np.radians(np.asarray(alt_pnt_deg, dtype=np.float64))
    return _fov_of_vectors(
        (np.cos(alt) * np.cos(az), np.cos(alt) * np.sin(az), np.sin(alt)),
        (np.cos(alt_pnt) * np.cos(az_pnt), np.cos(alt_pnt) * np.sin(az_pnt), np.sin(alt_pnt)),
    )


def event_fov_deg(
    ra_deg: npt.ArrayLike,
    dec_deg: npt.ArrayLike,
    time_s: npt.ArrayLike,
    ra_pnt_deg: float,
    dec_pnt_deg: float,
    *,
    reference: Time,
    location: EarthLocation,
    node_step_s: float = NODE_STEP_S,
    nodes: NodeMaps | None = None,
) -> EventFoV:
    """Return each event's ALTAZ-aligned FoV coordinates and the pointing's zenith at its time.

    The pointing (RA_PNT, DEC_PNT) is fixed in ICRS and tracked: its
    alt/az is evaluated at every event time with :func:`az_alt_deg`.

    Parameters
    ----------
    ra_deg, dec_deg, time_s : array-like
        Event ICRS positions (deg) and times (s since ``reference``). Shape: (n_events,).
    ra_pnt_deg, dec_pnt_deg : float
        Pointing position (ICRS), deg.
    reference, location, node_step_s
        As in :func:`az_alt_deg`.
    nodes : NodeMaps, optional
        Precomputed node maps (:func:`run_node_maps`), used when they hold
        the node of every event and were made for ``reference`` and
        ``location`` (within 1 µs and 1 mm): astropy is then not called.
        Otherwise, and when omitted, astropy computes the nodes. The result
        is the same either way, bit for bit when ``nodes`` were made for
        this very reference and location (a node's map does not depend on
        the other nodes computed with it).

    Returns
    -------
    EventFoV
        fov_lon, fov_lat and zenith_pnt in deg, shape (n_events,).
    """
    event, pointing = _horizontal_vectors(
        [(ra_deg, dec_deg), (ra_pnt_deg, dec_pnt_deg)], time_s,
        reference=reference, location=location, node_step_s=node_step_s, nodes=nodes,
    )
    lon, lat = _fov_of_vectors(event, pointing)
    return EventFoV(lon, lat, 90.0 - _altitude_deg(pointing))


def zenith_time_s(
    gti_start_s: npt.ArrayLike,
    gti_stop_s: npt.ArrayLike,
    ra_pnt_deg: float,
    dec_pnt_deg: float,
    zenith_edges_deg: npt.ArrayLike,
    *,
    reference: Time,
    location: EarthLocation,
    step_s: float = 10.0,
) -> npt.NDArray[np.float64]:
    """Return the time (s) the pointing spent in each zenith bin during a run's GTIs.

    Each GTI is cut into equal pieces of at most ``step_s``; within a piece
    the zenith is taken as linear in time between its ends, so the time is
    shared exactly among the bins the piece crosses (error second order in
    the piece's zenith change, < 1e-3 s per crossing at 10 s).

    Parameters
    ----------
    gti_start_s, gti_stop_s : array-like
        GTI bounds, s since ``reference``. Shape: (n_gti,).
    ra_pnt_deg, dec_pnt_deg : float
        Pointing position (ICRS), deg.
    zenith_edges_deg : array-like
        Increasing zenith edges, deg. Shape: (n_zenith + 1,).
    reference, location
        As in :func:`az_alt_deg`.
    step_s : float
        Longest piece, s.

    Returns
    -------
    numpy.ndarray
        Seconds per zenith bin, shape (n_zenith,); time outside the edges is
        not counted, so the sum is at most the total GTI time.

    Raises
    ------
    ValueError
        If a GTI ends before it starts, the edges do not increase or
        ``step_s`` is not positive.
    """
    start = np.atleast_1d(np.asarray(gti_start_s, dtype=np.float64))
    stop = np.atleast_1d(np.asarray(gti_stop_s, dtype=np.float64))
    edges = np.asarray(zenith_edges_deg, dtype=np.float64)
    if start.shape != stop.shape or start.ndim != 1:
        raise ValueError(f"GTI start {start.shape} and stop {stop.shape} must be 1-d of one shape")
    if np.any(stop < start):
        raise ValueError("a GTI stops before it starts")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("zenith edges must increase, at least two")
    if not step_s > 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    n_pieces = np.maximum(np.ceil((stop - start) / step_s), 1).astype(np.int64)
    gti = np.repeat(np.arange(start.size), n_pieces)
    index = np.arange(gti.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    width = ((stop - start) / n_pieces)[gti]
    t0 = start[gti] + index * width
    _, alt = az_alt_deg(
        ra_pnt_deg, dec_pnt_deg, np.concatenate([t0, t0 + width]), reference=reference, location=location
    )
    zen0, zen1 = np.split(90.0 - alt, 2)
    return np.asarray((segment_shares(zen0, zen1, edges) * width[:, None]).sum(axis=0), dtype=np.float64)
