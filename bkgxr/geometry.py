"""Pure geometric kernels over float arrays (degrees in, degrees or sr out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from astropy.coordinates import angular_separation

if TYPE_CHECKING:
    import numpy.typing as npt


def offset_deg(
    ra: npt.ArrayLike, dec: npt.ArrayLike, ra_pnt: float, dec_pnt: float
) -> npt.NDArray[np.float64]:
    """Return the true angular separation (deg) of events from the pointing.

    Uses the Vincenty formula of :func:`astropy.coordinates.angular_separation`,
    exact on the sphere at all separations.

    Parameters
    ----------
    ra, dec : array-like
        Event coordinates in deg. Shape: (n_events,).
    ra_pnt, dec_pnt : float
        Pointing position in deg.
    """
    sep = angular_separation(
        np.radians(np.asarray(ra, dtype=np.float64)),
        np.radians(np.asarray(dec, dtype=np.float64)),
        np.radians(ra_pnt),
        np.radians(dec_pnt),
    )
    return cast("npt.NDArray[np.float64]", np.degrees(sep))  # astropy is untyped


def ring_solid_angle_sr(offset_edges_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the exact solid angle (sr) of each offset ring, 2π(cos r1 − cos r2).

    Parameters
    ----------
    offset_edges_deg : array-like
        Ring edges in deg. Shape: (n_offset + 1,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_offset,).
    """
    cos = np.cos(np.radians(np.asarray(offset_edges_deg, dtype=np.float64)))
    return 2.0 * np.pi * (cos[:-1] - cos[1:])


def segment_shares(start: npt.ArrayLike, stop: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the share of each linear segment that lies in each bin.

    A quantity moving linearly from ``start`` to ``stop`` over a segment (a
    zenith over a slice of time) spends in each bin the fraction of the
    segment its range overlaps; a segment without extent goes whole to the
    bin holding it (``lo <= x < hi``). Parts beyond the edges, and segments
    with a non-finite end (an unknown value), are in no bin.

    Parameters
    ----------
    start, stop : array-like
        Values at the segment's ends. Shape: (n_segments,).
    edges : array-like
        Increasing bin edges. Shape: (n_bins + 1,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_segments, n_bins); each row sums to at most 1.
    """
    start, stop = np.asarray(start, dtype=np.float64), np.asarray(stop, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    low, high = np.minimum(start, stop)[:, None], np.maximum(start, stop)[:, None]
    overlap = np.clip(np.minimum(high, edges[None, 1:]) - np.maximum(low, edges[None, :-1]), 0.0, None)
    span = high - low
    flat = span[:, 0] == 0
    share = np.where(flat[:, None] | ~np.isfinite(span), 0.0, overlap / np.where(span > 0, span, 1.0))
    bin_of_flat = np.searchsorted(edges, low[flat, 0], side="right") - 1
    inside = (bin_of_flat >= 0) & (bin_of_flat < edges.size - 1)
    share[np.flatnonzero(flat)[inside], bin_of_flat[inside]] = 1.0
    return share
