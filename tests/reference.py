"""Independent reference computations for the tests: plain numpy and astropy."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time


def pointing_zenith(headers, times, grid_s=5.0):
    """Zenith (deg) of each header's pointing at its times (s since its MJDREF), with astropy's AltAz (no refraction).

    astropy transforms the pointing every ``grid_s`` seconds over each run, in one call for all runs
    (they share one observatory), and numpy interpolates linearly in between: the zenith's curvature
    over 5 s moves it by < 1e-6 deg. Returns one array per header.
    """
    grids = [np.arange(np.min(t) - grid_s, np.max(t) + 2 * grid_s, grid_s) if len(t) else np.zeros(0) for t in times]
    on_grid = _astropy_zenith(headers, grids)
    return [np.interp(np.asarray(t, dtype=np.float64), g, z) for t, g, z in zip(times, grids, on_grid)]


def _astropy_zenith(headers, times):
    """astropy's AltAz zenith of each header's pointing at its times, one transformation for all."""
    sites = {(h["GEOLON"], h["GEOLAT"], h.get("ALTITUDE", 0.0)) for h in headers}
    assert len(sites) == 1, sites
    ((lon, lat, height),) = sites
    location = EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, height * u.m)
    scales = {h.get("TIMESYS", "tt").lower() for h in headers}
    assert len(scales) == 1, scales
    sizes = [len(t) for t in times]
    mjd = np.concatenate([np.full(n, h["MJDREFI"] + h["MJDREFF"]) for h, n in zip(headers, sizes)])
    seconds = np.concatenate([np.asarray(t, dtype=np.float64) for t in times])
    obstime = Time(mjd, format="mjd", scale=scales.pop()) + seconds * u.s
    ra = np.concatenate([np.full(n, h["RA_PNT"]) for h, n in zip(headers, sizes)])
    dec = np.concatenate([np.full(n, h["DEC_PNT"]) for h, n in zip(headers, sizes)])
    zenith = 90.0 - SkyCoord(ra * u.deg, dec * u.deg).transform_to(AltAz(obstime=obstime, location=location)).alt.deg
    return np.split(zenith, np.cumsum(sizes)[:-1])


def band_ontime(runs, zenith_edges, step_s=1.0):
    """ONTIME of the runs shared among zenith bands by the time the pointing spent in each, sampled every ``step_s``."""
    headers = [fits.getheader(path, "EVENTS") for path in runs["EVENTS_PATH"]]
    times = [np.arange(run.TSTART + step_s / 2, run.TSTOP, step_s) for run in runs.itertuples()]
    total = np.zeros(len(zenith_edges) - 1)
    for run, zenith in zip(runs.itertuples(), pointing_zenith(headers, times)):
        hist, _ = np.histogram(zenith, bins=zenith_edges)
        total += run.ONTIME * hist / zenith.size
    return total


def numpy_counts(runs, zenith_edges, energy_edges, offset_edges, *, event_zenith=True):
    """Histogram the runs' events with astropy tables, SkyCoord, AltAz and np.histogramdd.

    ``event_zenith``: each event at the zenith of the pointing at its TIME, else at the run's ZEN_PNT.
    """
    columns, headers = [], []
    for run in runs.itertuples():
        table = Table.read(run.EVENTS_PATH, hdu="EVENTS")
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")  # float64 pointing, as gammapy uses
        offset = SkyCoord(table["RA"].quantity.astype(np.float64), table["DEC"].quantity.astype(np.float64)).separation(
            SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
        ).deg
        columns.append((table["ENERGY"].quantity.to_value("TeV"), offset, np.asarray(table["TIME"]), run.ZEN_PNT))
        headers.append(header)
    if event_zenith:
        zeniths = pointing_zenith(headers, [c[2] for c in columns])
    else:
        zeniths = [np.full(c[0].size, c[3]) for c in columns]
    total = np.zeros((len(zenith_edges) - 1, len(energy_edges) - 1, len(offset_edges) - 1))
    for (energy, offset, _, _), zenith in zip(columns, zeniths):
        hist, _ = np.histogramdd(np.column_stack([zenith, energy, offset]), bins=[zenith_edges, energy_edges, offset_edges])
        total += hist
    return total
