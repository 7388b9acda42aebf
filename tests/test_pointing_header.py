"""The events are binned around the EVENTS header's pointing (float64, as gammapy), the obs-index only as a fallback."""

from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import angular_separation
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr.exceptions import InvalidRunError
from bkgxr.io.events import PNT_HEADER, PNT_HEADER_ELSE_INDEX
from bkgxr.simulate import simulate_store

#: Offset edges fine enough that a 0.5 deg pointing error moves many events.
SIM_BINNING = bkgxr.Binning(zenith=[0, 90], offset=np.linspace(0, 2.5, 26))


def _histogram(runs, binning, pointing):
    """Histogram every run's events with astropy FITS, float64 angular_separation and numpy.

    ``pointing(run, header)`` gives the (RA, DEC) in deg the offsets are measured from.
    """
    total = np.zeros(binning.shape)
    for run in runs.itertuples():
        with fits.open(run.EVENTS_PATH) as hdul:
            header, data = hdul["EVENTS"].header, hdul["EVENTS"].data
            ra, dec = (np.radians(np.asarray(data[c], dtype=np.float64)) for c in ("RA", "DEC"))
            energy = np.asarray(data["ENERGY"], dtype=np.float64)  # TeV in both stores
            ra_pnt, dec_pnt = pointing(run, header)
        offset = np.degrees(angular_separation(ra, dec, np.radians(ra_pnt), np.radians(dec_pnt)))
        zenith = np.full(energy.size, run.ZEN_PNT)
        hist, _ = np.histogramdd(
            np.column_stack([zenith, energy, offset]), bins=[binning.zenith, binning.energy, binning.offset]
        )
        total += hist
    return total


def _header(run, header):
    return float(header["RA_PNT"]), float(header["DEC_PNT"])


def _index(run, header):
    return run.RA_PNT, run.DEC_PNT


def test_hess_counts_equal_a_header_pointing_histogram(hess_runs):
    binning = bkgxr.Binning()
    expected = _histogram(hess_runs, binning, _header)  # whole runs in the band of ZEN_PNT
    cube = bkgxr.build_cube(hess_runs, event_zenith=False).compute()
    np.testing.assert_array_equal(cube["counts"].values, expected)
    assert (hess_runs["PNT_SOURCE"] == PNT_HEADER_ELSE_INDEX).all()
    # the float32 obs-index pointing moves events across offset edges: the test tells the two apart
    moved = np.abs(_histogram(hess_runs, binning, _index) - expected).sum() / 2
    assert moved > 0, "the header and obs-index pointings give the same counts; this test would not see the fault"


def _rewrite_obs_index(root: Path, edit) -> None:
    obs = Table.read(root / "obs-index.fits.gz")
    edit(obs)
    obs.write(root / "obs-index.fits.gz", overwrite=True)


@pytest.fixture
def small_store(tmp_path):
    return simulate_store(tmp_path / "store", n_runs=3, events_per_run=2000, seed=11, date="2026-01-01").path


def test_a_wrong_obs_index_pointing_is_not_used_when_the_header_has_one(small_store):
    def shift(obs):
        obs["RA_PNT"] = obs["RA_PNT"] + np.float32(0.5)

    _rewrite_obs_index(small_store, shift)
    runs = bkgxr.open_store(small_store).select()
    cube = bkgxr.build_cube(runs, binning=SIM_BINNING).compute()
    expected = _histogram(runs, SIM_BINNING, _header)
    np.testing.assert_array_equal(cube["counts"].values, expected)
    assert np.abs(_histogram(runs, SIM_BINNING, _index) - expected).sum() > 0.1 * expected.sum()
    assert runs["PNT_SOURCE"].tolist() == [PNT_HEADER_ELSE_INDEX] * 3


def test_pointing_missing_from_the_obs_index_is_the_headers(small_store):
    _rewrite_obs_index(small_store, lambda obs: obs.remove_columns(["RA_PNT", "DEC_PNT"]))
    runs = bkgxr.open_store(small_store).select()
    assert runs["PNT_SOURCE"].tolist() == [PNT_HEADER] * 3
    cube = bkgxr.build_cube(runs, binning=SIM_BINNING).compute()
    np.testing.assert_array_equal(cube["counts"].values, _histogram(runs, SIM_BINNING, _header))


def _edit_events_header(path, **cards):
    with fits.open(path) as hdul:
        hdul = fits.HDUList([hdu.copy() for hdu in hdul])
    for key, value in cards.items():
        if value is None:
            del hdul["EVENTS"].header[key]
        else:
            hdul["EVENTS"].header[key] = value
    hdul.writeto(path, overwrite=True)


def test_a_header_without_pointing_falls_back_to_the_obs_index(small_store):
    def shift(obs):
        obs["RA_PNT"] = obs["RA_PNT"] + np.float32(0.5)

    _rewrite_obs_index(small_store, shift)
    runs = bkgxr.open_store(small_store).select()
    first = runs.iloc[:1]
    _edit_events_header(first["EVENTS_PATH"].iloc[0], RA_PNT=None, DEC_PNT=None)
    cube = bkgxr.build_cube(runs, binning=SIM_BINNING).compute()
    expected = _histogram(first, SIM_BINNING, _index) + _histogram(runs.iloc[1:], SIM_BINNING, _header)
    np.testing.assert_array_equal(cube["counts"].values, expected)


def test_a_header_pointing_that_is_not_a_number_names_run_and_file(small_store):
    runs = bkgxr.open_store(small_store).select()
    path = runs["EVENTS_PATH"].iloc[1]
    _edit_events_header(path, DEC_PNT="north")
    with pytest.raises(InvalidRunError, match=rf"run {runs['OBS_ID'].iloc[1]} \({Path(path).name}\): EVENTS keyword DEC_PNT"):
        bkgxr.build_cube(runs, binning=SIM_BINNING).compute()
