"""Independent reference computations for the tests: plain numpy and astropy."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time


def pointing_zenith(header, time_s):
    """Zenith (deg) of the header's pointing at times (s since its MJDREF), with astropy's AltAz (no refraction)."""
    location = EarthLocation.from_geodetic(header["GEOLON"] * u.deg, header["GEOLAT"] * u.deg, header.get("ALTITUDE", 0.0) * u.m)
    mjdref = header["MJDREFI"] + header["MJDREFF"]
    obstime = Time(mjdref, format="mjd", scale=header.get("TIMESYS", "tt").lower()) + np.asarray(time_s) * u.s
    pointing = SkyCoord(header["RA_PNT"] * u.deg, header["DEC_PNT"] * u.deg)
    return 90.0 - pointing.transform_to(AltAz(obstime=obstime, location=location)).alt.deg


def band_ontime(runs, zenith_edges, step_s=1.0):
    """ONTIME of the runs shared among zenith bands by the time the pointing spent in each, sampled every ``step_s``."""
    total = np.zeros(len(zenith_edges) - 1)
    for run in runs.itertuples():
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")
        times = np.arange(run.TSTART + step_s / 2, run.TSTOP, step_s)
        hist, _ = np.histogram(pointing_zenith(header, times), bins=zenith_edges)
        total += run.ONTIME * hist / times.size
    return total


def numpy_counts(runs, zenith_edges, energy_edges, offset_edges, *, event_zenith=True):
    """Histogram the runs' events with astropy tables, SkyCoord, AltAz and np.histogramdd.

    ``event_zenith``: each event at the zenith of the pointing at its TIME, else at the run's ZEN_PNT.
    """
    total = np.zeros((len(zenith_edges) - 1, len(energy_edges) - 1, len(offset_edges) - 1))
    for run in runs.itertuples():
        table = Table.read(run.EVENTS_PATH, hdu="EVENTS")
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")  # float64 pointing, as gammapy uses
        energy = table["ENERGY"].quantity.to_value("TeV")
        offset = SkyCoord(table["RA"].quantity.astype(np.float64), table["DEC"].quantity.astype(np.float64)).separation(
            SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
        ).deg
        zenith = pointing_zenith(header, table["TIME"]) if event_zenith else np.full(len(table), run.ZEN_PNT)
        hist, _ = np.histogramdd(
            np.column_stack([zenith, energy, offset]), bins=[zenith_edges, energy_edges, offset_edges]
        )
        total += hist
    return total
