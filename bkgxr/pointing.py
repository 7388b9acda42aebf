"""Pointing zenith from sky position, run times and observatory location (astropy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, SkyCoord

from .altaz_maps import location_of, reference_time
from .earth_orientation import installed_tables


def mean_zenith(header: Mapping[str, Any], ra_deg: float, dec_deg: float) -> float:
    """Return the mean zenith angle (deg) of (RA, Dec) over the run.

    The zenith is averaged over 11 times spread evenly from TSTART to TSTOP,
    as ``ZEN_PNT`` of real DL3 files is a run average.

    Parameters
    ----------
    header : mapping
        EVENTS header with TSTART, TSTOP (s since MJDREF), MJDREFI and MJDREFF
        (or MJDREF), optional TIMESYS (default TT), and the observatory
        location GEOLON, GEOLAT (deg) and optional ALTITUDE (m).
    ra_deg, dec_deg : float
        Pointing position (ICRS), deg.

    Raises
    ------
    KeyError
        Naming the first keyword that is missing.

    Notes
    -----
    Uses only the Earth-orientation tables installed with astropy (no
    download); precision is far better than a zenith band needs.
    """
    for key in ("TSTART", "TSTOP"):
        if key not in header:
            raise KeyError(key)
    location = location_of(header)
    seconds = np.linspace(float(header["TSTART"]), float(header["TSTOP"]), 11)
    times = reference_time(header) + seconds * u.s
    with installed_tables():
        altaz = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs").transform_to(
            AltAz(obstime=times, location=location)
        )
    return float(np.mean(90.0 - altaz.alt.to_value(u.deg)))
