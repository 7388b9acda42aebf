"""The pointing's zenith over each run, and the kernel recipe that follows it (Recipe.track)."""

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time

import bkgxr
from bkgxr.axes import binning_of, exposure_s_mev_sr
from bkgxr.track import band_fractions, slice_tracks, track_times, zenith_tracks
from bkgxr.zenith import predict_rates


def test_tracks_are_astropys_zenith_of_the_pointing_at_the_track_times(sim_store):
    runs = sim_store.select()
    tracks = zenith_tracks(runs)
    meta = runs.attrs["OBS_META"]
    reference = Time(meta["MJDREFI"] + meta["MJDREFF"], format="mjd", scale="tt")
    site = EarthLocation.from_geodetic(float(meta["GEOLON"]) * u.deg, float(meta["GEOLAT"]) * u.deg, float(meta["ALTITUDE"]) * u.m)
    times = track_times(runs["TSTART"].to_numpy(), runs["TSTOP"].to_numpy())
    for i, run in enumerate(runs.itertuples()):
        frame = AltAz(obstime=reference + times[i] * u.s, location=site)
        expected = 90 - SkyCoord(run.RA_PNT * u.deg, run.DEC_PNT * u.deg).transform_to(frame).alt.deg
        np.testing.assert_allclose(tracks[i], expected, atol=1e-4)
    assert np.ptp(tracks, axis=1).max() > 0.5  # the zenith moves during a run
    runs.attrs = {}  # no observatory: each run stays at its ZEN_PNT
    np.testing.assert_array_equal(zenith_tracks(runs), np.repeat(runs["ZEN_PNT"].to_numpy()[:, None], 7, axis=1))


def test_track_kernel_averages_over_both_tracks(sim_store):
    cube = bkgxr.build_cube(sim_store.select()).compute()
    recipe = bkgxr.Recipe(smoothing=None, time_sigma=None, track=True, nodes=False)
    run_track = cube["run_track"].values
    counts = cube["run_counts"].values.astype(float)
    unit = exposure_s_mev_sr(np.ones(1), binning_of(cube))[0]
    exposure = cube["run_ontime"].values[:, None, None] * unit[None]
    target = np.array([20.0, 21.5, 23.0])  # one observation's track
    expected = []
    for z in target:  # independent: the run weights at each node, then the mean of the rates
        g = np.exp(-0.5 * ((np.cos(np.radians(run_track)) - np.cos(np.radians(z))) / 0.03) ** 2).mean(axis=1)
        expected.append(np.tensordot(g, counts, 1) / np.tensordot(g, exposure, 1))
    rate, _ = predict_rates(cube, target[None, :], recipe=recipe)
    np.testing.assert_allclose(rate[0], np.mean(expected, axis=0), rtol=1e-9)
    untracked, _ = predict_rates(cube, target[None, :], recipe=recipe.replace(track=False))
    assert not np.allclose(untracked, rate, rtol=1e-6)


def test_band_fractions_equal_finely_sampled_linear_tracks():
    rng = np.random.default_rng(5)
    edges = np.array([0.0, 20.0, 40.0, 90.0])
    zenith = np.cumsum(rng.normal(0, 3, (50, 9)), axis=1) + rng.uniform(5, 60, (50, 1))
    zenith[0] = 20.0  # constant, on an edge: the upper band
    got = band_fractions(zenith, edges)
    fine = np.linspace(0, 1, 80_001)[1:] - 0.5 / 80_000  # midpoints of fine equal slices
    sampled = np.array([np.interp(fine, np.linspace(0, 1, 9), row) for row in zenith])
    expected = np.stack([((sampled >= lo) & (sampled < hi)).mean(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got[0].tolist() == [0.0, 1.0, 0.0]
    assert band_fractions(np.full((1, 3), np.nan), edges).tolist() == [[0.0, 0.0, 0.0]]  # unknown zenith: no band, as band_index
    assert np.all(got.sum(axis=1) <= 1 + 1e-12) and np.any(got.sum(axis=1) < 1)  # some tracks leave [0, 90]


def test_slice_tracks_follow_astropy_at_the_bounds(hess_runs):
    from reference import pointing_zenith

    times, zenith, known = slice_tracks(hess_runs.iloc[:3])
    assert known.all() and times.shape == zenith.shape == (3, 33)
    for run, t, z in zip(hess_runs.iloc[:3].itertuples(), times, zenith):
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")
        np.testing.assert_allclose(z, pointing_zenith([header], [t])[0], atol=1e-4)
        assert t[0] == run.TSTART and t[-1] == run.TSTOP


def test_all_runs_in_one_evaluation_equal_each_run_on_its_own(hess_runs):
    from bkgxr.altaz_maps import location_of, merged_node_maps, reference_time
    from bkgxr.fov import az_alt_deg
    from bkgxr.io.events import index_node_maps

    nodes = index_node_maps(hess_runs)
    times, zenith, known = slice_tracks(hess_runs, nodes=nodes)
    meta = hess_runs.attrs["OBS_META"]
    reference, location = reference_time(meta), location_of(meta)
    one_by_one = np.array([
        90 - az_alt_deg(run.RA_PNT, run.DEC_PNT, t, reference=reference, location=location, nodes=n)[1]
        for run, t, n in zip(hess_runs.itertuples(), times, nodes)
    ])
    assert known.all()
    np.testing.assert_array_equal(zenith, one_by_one)  # the same arithmetic, element by element
    moved = nodes[1]._replace(location_m=(0.0, 0.0, 6.4e6))
    assert merged_node_maps([nodes[0], moved]) is None  # maps of two sites cannot serve one call
    merged = merged_node_maps(nodes[:2])
    assert np.all(np.diff(merged.time_s) > 0) and set(merged.time_s) == set(nodes[0].time_s) | set(nodes[1].time_s)
