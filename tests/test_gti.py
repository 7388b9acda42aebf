"""Runs with gaps in their good time: the zenith bands share their ONTIME by the GTIs."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr import altaz_maps, fov
from bkgxr.exceptions import InvalidRunError
from bkgxr.io.gti import has_gaps, read_gti
from bkgxr.track import (
    band_fractions,
    good_time_nodes,
    gti_band_fractions,
    slice_tracks,
    track_times,
)

EDGES = np.array([0.0, 20.0, 40.0, 90.0])
CROSSING = 21753  # a DR1 off run whose pointing spends half its time on each side of 20 deg


def _gaps(start, stop):
    """Three good pieces of the run, most of its second half left out."""
    span = stop - start
    return np.array([[start, start + 0.4 * span], [start + 0.45 * span, start + 0.5 * span],
                     [start + 0.9 * span, stop]])


def _gti_file(path, pieces, unit="s"):
    table = Table({"START": pieces[:, 0], "STOP": pieces[:, 1]})
    table["START"].unit = table["STOP"].unit = unit
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(path)
    with fits.open(path, mode="update") as hdul:
        hdul[1].name = "GTI"
    return path


def test_gti_fractions_equal_astropys_time_in_each_band(hess_runs):
    run = hess_runs[hess_runs["OBS_ID"] == CROSSING]
    times, zenith, _ = slice_tracks(run)
    pieces = _gaps(float(run["TSTART"].iloc[0]), float(run["TSTOP"].iloc[0]))
    got = gti_band_fractions(times[0], zenith[0], pieces, EDGES)
    meta = run.attrs["OBS_META"]
    seconds = fov.zenith_time_s(pieces[:, 0], pieces[:, 1], float(run["RA_PNT"].iloc[0]), float(run["DEC_PNT"].iloc[0]),
                                EDGES, reference=altaz_maps.reference_time(meta), location=altaz_maps.location_of(meta), step_s=1.0)
    expected = seconds / np.diff(pieces, axis=1).sum()
    np.testing.assert_allclose(got, expected, atol=2e-4)
    whole = band_fractions(zenith, EDGES)[0]
    assert abs(got[0] - whole[0]) > 0.2  # the gaps matter for this run
    one_piece = gti_band_fractions(times[0], zenith[0], [[times[0, 0], times[0, -1]]], EDGES)
    np.testing.assert_allclose(one_piece, whole, rtol=1e-12)  # GTIs covering the run: the track's fractions
    overlapping = np.concatenate([pieces, pieces[:1]])
    np.testing.assert_allclose(gti_band_fractions(times[0], zenith[0], overlapping, EDGES), got, rtol=1e-12)


def test_a_run_with_gaps_shares_its_ontime_by_its_gtis(hess_runs, tmp_path):
    runs = hess_runs.copy()
    i = int(np.flatnonzero(runs["OBS_ID"].to_numpy() == CROSSING)[0])
    start, stop = float(runs.at[i, "TSTART"]), float(runs.at[i, "TSTOP"])
    pieces = _gaps(start, stop)
    runs.at[i, "GTI_PATH"] = str(_gti_file(tmp_path / "gti.fits", pieces))
    runs.at[i, "ONTIME"] = np.diff(pieces, axis=1).sum()
    runs.at[i, "LIVETIME"] = 0.9 * runs.at[i, "ONTIME"]
    assert has_gaps(runs["TSTART"], runs["TSTOP"], runs["ONTIME"]).tolist() == [k == i for k in range(len(runs))]
    binning = bkgxr.Binning(zenith=EDGES)
    gapped = bkgxr.build_cube(runs, binning=binning)["run_band_fraction"].values
    whole = bkgxr.build_cube(hess_runs, binning=binning)["run_band_fraction"].values
    times, zenith, _ = slice_tracks(runs.iloc[[i]])
    np.testing.assert_allclose(gapped[i], gti_band_fractions(times[0], zenith[0], pieces, EDGES), rtol=1e-12)
    np.testing.assert_array_equal(np.delete(gapped, i, axis=0), np.delete(whole, i, axis=0))
    assert not np.allclose(gapped[i], whole[i], atol=0.2)


def test_the_kernels_track_of_a_run_with_gaps_samples_its_good_time(hess_runs, tmp_path):
    runs = hess_runs.copy()
    i = int(np.flatnonzero(runs["OBS_ID"].to_numpy() == CROSSING)[0])
    start, stop = float(runs.at[i, "TSTART"]), float(runs.at[i, "TSTOP"])
    pieces = _gaps(start, stop)
    runs.at[i, "GTI_PATH"] = str(_gti_file(tmp_path / "gti.fits", pieces))
    runs.at[i, "ONTIME"] = runs.at[i, "LIVETIME"] = np.diff(pieces, axis=1).sum()
    nodes = good_time_nodes(pieces, 7)
    good = np.diff(pieces, axis=1).ravel()
    # independent: each node's good time before it, counted interval by interval
    before = [sum(min(max(t - a, 0.0), b - a) for a, b in pieces) for t in nodes]
    np.testing.assert_allclose(before, (np.arange(7) + 0.5) / 7 * good.sum(), rtol=0, atol=1e-6)  # s, at times ~1e8 s
    assert all(np.any((t >= pieces[:, 0]) & (t < pieces[:, 1])) for t in nodes)  # none falls in a gap
    np.testing.assert_allclose(good_time_nodes([[start, stop]]), track_times([start], [stop])[0], rtol=0, atol=1e-6)
    cube = bkgxr.build_cube(runs, binning=bkgxr.Binning(zenith=EDGES))
    whole = bkgxr.build_cube(hess_runs, binning=bkgxr.Binning(zenith=EDGES))
    meta = runs.attrs["OBS_META"]
    row = runs.iloc[i]
    expected = [90 - fov.az_alt_deg(row.RA_PNT, row.DEC_PNT, [t], reference=altaz_maps.reference_time(meta),
                                    location=altaz_maps.location_of(meta))[1][0] for t in nodes]
    np.testing.assert_allclose(cube["run_track"].values[i], expected, atol=1e-6)
    np.testing.assert_array_equal(np.delete(cube["run_track"].values, i, 0), np.delete(whole["run_track"].values, i, 0))
    assert np.abs(cube["run_track"].values[i] - whole["run_track"].values[i]).max() > 0.5  # its gaps move its nodes


@pytest.mark.parametrize(
    ("pieces", "unit", "reason"),
    [
        ([[10.0, 5.0]], "s", "stops before it starts"),
        ([[0.0, np.nan]], "s", "non-finite"),
        ([[-100.0, 5.0]], "s", "outside the run"),
        ([[0.0, 5.0]], "min", "not s"),
    ],
)
def test_bad_gtis_name_the_run_and_file(tmp_path, pieces, unit, reason):
    path = _gti_file(tmp_path / "gti.fits", np.array(pieces), unit=unit)
    with pytest.raises(InvalidRunError, match=reason) as info:
        read_gti(path, "GTI", obs_id=7, tstart=0.0, tstop=1000.0)
    assert info.value.obs_id == 7 and "gti.fits" in str(info.value)
    with pytest.raises(InvalidRunError, match="no EVENTS HDU"):
        read_gti(path, "EVENTS", obs_id=7, tstart=0.0, tstop=1000.0)


def test_overlapping_gtis_join_so_that_no_time_counts_twice(tmp_path):
    pieces = np.array([[50.0, 80.0], [0.0, 10.0], [5.0, 20.0], [20.0, 30.0], [60.0, 70.0], [90.0, 1000.0]])
    got = read_gti(_gti_file(tmp_path / "gti.fits", pieces), "GTI", obs_id=1, tstart=0.0, tstop=1000.0)
    np.testing.assert_array_equal(got, [[0.0, 30.0], [50.0, 80.0], [90.0, 1000.0]])
    nodes = good_time_nodes(got, 7)  # 970 s of good time: slices of 970 / 7 s
    fine = np.arange(0.0, 1000.0, 0.01) + 0.005
    inside = np.any((fine[:, None] >= got[:, 0]) & (fine[:, None] < got[:, 1]), axis=1)
    expected = [fine[inside][int((k + 0.5) / 7 * inside.sum())] for k in range(7)]
    np.testing.assert_allclose(nodes, expected, atol=0.02)
