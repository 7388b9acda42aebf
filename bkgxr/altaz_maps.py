"""astropy's ICRS → AltAz transformation at a few node times, as affine maps numpy applies.

astropy computes the full transformation (precession, nutation, aberration,
light deflection, Earth rotation, polar motion; no refraction) only at node
times, multiples of a step; each node's transformation is fitted by an affine
map of ICRS unit vectors (:class:`NodeMaps`), and a time between nodes is
served by its nearest node turned by the Earth's rotation since it
(:func:`node_frames`, used by :mod:`bkgxr.fov`). The node maps of many runs
are computed in one astropy call (:func:`run_node_maps`), merged
(:func:`merged_node_maps`) and checked against the times, reference and site
they must serve (:func:`nodes_serve`). :func:`location_of` and
:func:`reference_time` read the observatory and time origin of an EVENTS or
obs-index header.
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

from .earth_orientation import installed_tables

if TYPE_CHECKING:
    import numpy.typing as npt

#: Earth rotation rate (rad per second), 2π × 1.00273781191135448 / 86400 (IAU 2000 Earth rotation angle).
EARTH_ROTATION_RAD_S = 2.0 * np.pi * 1.00273781191135448 / 86400.0

#: Default spacing of the astropy nodes (s); events use their nearest node, turned by the Earth's
#: rotation since it. Against astropy at each time: 1.5e-5 deg in Alt/Az over 2004-2008 (8.5e-6
#: with 600 s), 8e-7 deg in FoV lon/lat; a third of the nodes of 600 s, each ~0.15 ms of astropy.
NODE_STEP_S = 1800.0

#: Probe directions (unit vectors, 32 points of a Fibonacci sphere) used to fit each node's map.
_PROBES = np.stack(
    [
        np.sqrt(1.0 - (1.0 - (2.0 * np.arange(32) + 1.0) / 32) ** 2) * np.cos(np.pi * (3.0 - np.sqrt(5.0)) * np.arange(32)),
        np.sqrt(1.0 - (1.0 - (2.0 * np.arange(32) + 1.0) / 32) ** 2) * np.sin(np.pi * (3.0 - np.sqrt(5.0)) * np.arange(32)),
        1.0 - (2.0 * np.arange(32) + 1.0) / 32,
    ],
    axis=-1,
)


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
    with installed_tables():
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
    :func:`bkgxr.fov.event_fov_deg` computes for that node time on its own.

    Parameters
    ----------
    node_times_s : array-like
        Node times, s since ``reference``; multiples of the ``node_step_s``
        that the maps will serve (see :func:`bkgxr.fov.event_fov_deg`). Shape: (n_nodes,).
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
        As in :func:`bkgxr.fov.az_alt_deg`.

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


def node_frames(
    time_s: npt.ArrayLike, reference: Time, location: EarthLocation, node_step_s: float, nodes: NodeMaps | None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return what maps directions at times: node index and rotation since the node of each time.

    Parameters
    ----------
    time_s, reference, location, node_step_s, nodes
        As in :func:`bkgxr.fov.az_alt_deg`; ``nodes`` serve when they hold
        every node needed (else astropy computes them).

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


def nodes_serve(
    nodes: NodeMaps, time_s: npt.ArrayLike, *, reference: Time, location: EarthLocation, node_step_s: float = NODE_STEP_S
) -> bool:
    """Return whether ``nodes`` hold the node of every time and were made for ``reference`` and ``location``.

    Then :func:`bkgxr.fov.az_alt_deg`, :func:`bkgxr.fov.ra_dec_deg` and
    :func:`bkgxr.fov.event_fov_deg` given these ``nodes`` do not call astropy
    (same tolerances: 1 µs, 1 mm).
    """
    node_s, _ = _nodes(np.asarray(time_s, dtype=np.float64), node_step_s)
    return _maps_from(nodes, node_s, reference, location) is not None
