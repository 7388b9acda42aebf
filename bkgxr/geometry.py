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
