"""Independent reference computations for the tests: plain numpy and astropy."""

from __future__ import annotations

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table


def numpy_counts(runs, zenith_edges, energy_edges, offset_edges):
    """Histogram the runs' events with astropy tables, SkyCoord and np.histogramdd."""
    total = np.zeros((len(zenith_edges) - 1, len(energy_edges) - 1, len(offset_edges) - 1))
    for run in runs.itertuples():
        table = Table.read(run.EVENTS_PATH, hdu="EVENTS")
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")  # float64 pointing, as gammapy uses
        energy = table["ENERGY"].quantity.to_value("TeV")
        offset = SkyCoord(table["RA"].quantity.astype(np.float64), table["DEC"].quantity.astype(np.float64)).separation(
            SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
        ).deg
        zenith = np.full(len(table), run.ZEN_PNT)
        hist, _ = np.histogramdd(
            np.column_stack([zenith, energy, offset]), bins=[zenith_edges, energy_edges, offset_edges]
        )
        total += hist
    return total
