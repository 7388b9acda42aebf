"""Horizontal and field-of-view coordinates of events and of the pointing track.

Float64 numpy kernels over event arrays (deg in, deg out). Every time is
mapped by the affine map of its nearest node, turned by the Earth's rotation
since the node (:mod:`bkgxr.altaz_maps`, where astropy computes the maps at a
few node times; see :func:`az_alt_deg`). The node maps of many runs can be
computed in one astropy call (:func:`bkgxr.altaz_maps.run_node_maps`) and
handed to :func:`event_fov_deg`, which then maps a run's events with numpy only.

FoV coordinates follow gammapy's ``FoVAltAzFrame`` (``FOVALIGN = 'ALTAZ'``)
and :func:`gammapy.utils.coordinates.sky_to_fov`: the pointing is at (0, 0),
``fov_lat`` grows with altitude and ``fov_lon`` is the *reversed* offset
longitude, so ``fov_lon > 0`` lies towards *smaller* azimuth.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/general/coordinates.html#coords-fov
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .altaz_maps import NODE_STEP_S, NodeMaps, node_frames
from .geometry import segment_shares

if TYPE_CHECKING:
    import numpy.typing as npt
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    #: North, east and up components of directions (not normalised), each of the shape of the times.
    Vectors = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]



class EventFoV(NamedTuple):
    """Per-event FoV coordinates (ALTAZ-aligned) and pointing zenith, all in deg, shape of the events."""

    fov_lon: npt.NDArray[np.float64]
    fov_lat: npt.NDArray[np.float64]
    zenith_pnt: npt.NDArray[np.float64]


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
    which, frames, axes, cos, sin = node_frames(time_s, reference, location, node_step_s, nodes)
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
    than 2e-5 deg with the default node step (tests/test_fov.py measures it).

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS position, deg. Broadcast with ``time_s``: scalars give the track
        of one position (the pointing), arrays one position per event.
    time_s : array-like
        Times, s since ``reference``. Shape: (n_events,) or any.
    reference : astropy.time.Time
        Time origin (see :func:`bkgxr.altaz_maps.reference_time`).
    location : astropy.coordinates.EarthLocation
        Observatory (see :func:`bkgxr.altaz_maps.location_of`).
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
    2e-5 deg with the default node step (tests/test_fov.py measures it).

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
    which, fixed, axes, cos, sin = node_frames(time, reference, location, node_step_s, nodes)
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
        Precomputed node maps (:func:`bkgxr.altaz_maps.run_node_maps`), used when they hold
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
