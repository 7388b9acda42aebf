"""Runs with sources in the cube: events inside exclusion regions dropped, exposure reduced by the kept FoV fraction;
3D cubes in ALTAZ-aligned FoV coordinates. Checked against numpy/astropy/gammapy computations and the simulated truth."""

import numpy as np
import pytest
from astropy.coordinates import angular_separation
from astropy.io import fits

import bkgxr
from bkgxr.masking import altaz_of_fov, run_regions
from bkgxr.simulate import destination
from bkgxr.truth import truth_cube

#: A source 0.7 deg from each "on" run's pointing, excluded with 0.45 deg.
SOURCE_OFFSET, RADIUS = 0.7, 0.45
BINNING = bkgxr.Binning(zenith=[0, 90], energy=np.geomspace(0.3, 30, 7), offset=np.linspace(0, 2.0, 11))


@pytest.fixture(scope="module")
def on_runs(sim_store):
    """The simulated runs, every other one turned into a run 'on' a source beside its pointing."""
    runs = sim_store.select()
    on = np.arange(len(runs)) % 2 == 0
    targets = [destination(r.RA_PNT, r.DEC_PNT, SOURCE_OFFSET, 1.0) for r in runs.itertuples()]
    runs = runs.assign(
        TARGET_NAME=np.where(on, "Src", "Off data"),
        RA_OBJ=[float(t[0]) for t in targets],
        DEC_OBJ=[float(t[1]) for t in targets],
    )
    return runs


def _events(run):
    with fits.open(run.EVENTS_PATH) as hdul:
        data, header = hdul["EVENTS"].data, hdul["EVENTS"].header
        return (
            {c: np.asarray(data[c], dtype=np.float64) for c in ("RA", "DEC", "ENERGY", "TIME")},
            header,
        )


def test_events_inside_the_target_circle_are_dropped(on_runs):
    cube = bkgxr.build_cube(on_runs, binning=BINNING, target_radius=RADIUS).compute()
    expected = np.zeros(BINNING.shape[1:])
    for run in on_runs.itertuples():
        ev, header = _events(run)
        rad = np.radians
        offset = np.degrees(angular_separation(rad(ev["RA"]), rad(ev["DEC"]), rad(header["RA_PNT"]), rad(header["DEC_PNT"])))
        keep = np.ones(offset.size, dtype=bool)
        if run.TARGET_NAME != "Off data":
            keep = np.degrees(angular_separation(rad(ev["RA"]), rad(ev["DEC"]), rad(run.RA_OBJ), rad(run.DEC_OBJ))) >= RADIUS
        expected += np.histogram2d(ev["ENERGY"][keep], offset[keep], [BINNING.energy, BINNING.offset])[0]
    np.testing.assert_array_equal(cube["counts"].values[0], expected)
    plain = bkgxr.build_cube(on_runs, binning=BINNING, target_radius=None).compute()
    assert plain["counts"].sum() > cube["counts"].sum() + 1000  # the circle removed something


def test_kept_fraction_and_exposure_against_monte_carlo(on_runs):
    cube = bkgxr.build_cube(on_runs, binning=BINNING, target_radius=RADIUS).compute()
    kept = cube["run_kept"].values
    off = (on_runs["TARGET_NAME"] == "Off data").to_numpy()
    assert np.all(kept[off] == 1)
    # independent: uniform points on the sphere around one on-run's pointing, fraction outside the circle per ring
    rng = np.random.default_rng(3)
    run = on_runs[~off].iloc[0]
    n = 2_000_000
    cos_r = rng.uniform(np.cos(np.radians(2.0)), 1.0, n)
    r = np.degrees(np.arccos(cos_r))
    ra, dec = destination(run.RA_PNT, run.DEC_PNT, r, rng.uniform(0, 2 * np.pi, n))
    outside = np.degrees(angular_separation(*np.radians([ra, dec, np.full(n, run.RA_OBJ), np.full(n, run.DEC_OBJ)]))) >= RADIUS
    ring = np.digitize(r, BINNING.offset) - 1
    mc = np.bincount(ring, weights=outside, minlength=10) / np.bincount(ring, minlength=10)
    sigma = np.sqrt(mc * (1 - mc) / np.bincount(ring, minlength=10)) + 1e-9
    got = cube["run_kept"].sel(obs_id=run.OBS_ID).values
    assert np.all(np.abs(got - mc) < 5 * sigma + 1e-6), (got, mc)
    assert got.min() < 0.9  # the circle takes a real part of some ring
    # exposure: sum over runs of ONTIME x kept x dE x 2 pi (cos r1 - cos r2)
    d_e = np.diff(BINNING.energy) * 1e6
    d_omega = 2 * np.pi * (np.cos(np.radians(BINNING.offset[:-1])) - np.cos(np.radians(BINNING.offset[1:])))
    expected = (on_runs["ONTIME"].to_numpy()[:, None] * kept).sum(0)[None, :] * d_e[:, None] * d_omega[None, :]
    np.testing.assert_allclose(cube["exposure"].values[0], expected, rtol=1e-12)


def test_rates_with_exclusion_recover_the_truth(on_runs, sim_store):
    """Dropping events without reducing the exposure would bias the rings the circle crosses low."""
    cube = bkgxr.build_cube(on_runs, binning=BINNING, target_radius=RADIUS).compute()
    truth = truth_cube(sim_store, binning=BINNING)["rate"].values[0]
    err = cube["rate_err"].values[0]
    good = err > 0
    pulls = ((cube["rate"].values[0] - truth) / np.where(good, err, 1))[good]
    assert abs(pulls.mean()) < 0.35 and 0.7 < pulls.std() < 1.3, (pulls.mean(), pulls.std())
    crossed = cube["run_kept"].values.min(axis=0) < 0.95  # rings the circle takes a part of
    uncorrected = cube["counts"].values[0] / (cube["exposure"].values[0] / cube["run_kept"].values.mean(0)[None, :])
    biased = ((uncorrected - truth) / np.where(good, err, 1))[:, crossed][good[:, crossed]]
    assert biased.mean() < -1.0  # the same counts over the full exposure: clearly low


def test_off_runs_get_no_target_circle(sim_store):
    runs = sim_store.select()
    assert all(r is None for r in run_regions(runs, target_radius=0.5))
    cube = bkgxr.build_cube(runs.iloc[:2], binning=BINNING).compute()
    assert np.all(cube["run_kept"].values == 1)


def test_fov_inverse_matches_gammapys_fov_to_sky():
    import astropy.units as u
    from gammapy.utils.coordinates import fov_to_sky

    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(-3, 3, 200), rng.uniform(-3, 3, 200)
    az0, alt0 = rng.uniform(0, 360, 200), rng.uniform(20, 85, 200)
    az, alt = altaz_of_fov(lon, lat, az0, alt0)
    ra, dec = fov_to_sky(lon * u.deg, lat * u.deg, az0 * u.deg, alt0 * u.deg)  # works on any lon/lat frame
    assert np.abs((ra.deg - az + 180) % 360 - 180).max() < 1e-9 and np.abs(dec.deg - alt).max() < 1e-9


def test_3d_counts_and_exposure_against_gammapy_fov_frame(sim_store):
    from astropy.coordinates import AltAz, SkyCoord
    from gammapy.data import EventList
    from gammapy.utils.coordinates import sky_to_fov

    from bkgxr.altaz_maps import location_of

    runs = sim_store.select().iloc[:3]
    binning = bkgxr.Binning(zenith=[0, 90], energy=np.geomspace(0.3, 30, 5), fov="altaz",
                            fov_lon=np.linspace(-2, 2, 9), fov_lat=np.linspace(-2, 2.5, 10))
    cube = bkgxr.build_cube(runs, binning=binning).compute()
    assert cube["counts"].dims == ("zenith", "energy", "fov_lon", "fov_lat")
    expected = np.zeros(binning.shape[1:])
    for run in runs.itertuples():
        events = EventList.read(run.EVENTS_PATH)
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")
        frame = AltAz(obstime=events.time, location=location_of(header))
        altaz = events.radec.transform_to(frame)
        pnt = SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg").transform_to(frame)
        lon, lat = sky_to_fov(altaz.az, altaz.alt, pnt.az, pnt.alt)
        expected += np.histogramdd(
            np.column_stack([events.energy.to_value("TeV"), lon.deg, lat.deg]), [binning.energy, binning.fov_lon, binning.fov_lat]
        )[0]
    # astropy and bkgxr's node maps differ by < 1e-5 deg: allow the odd event on an edge
    assert np.abs(cube["counts"].values[0] - expected).sum() <= 4
    assert cube["counts"].values.sum() > 10_000
    d_e = np.diff(binning.energy) * 1e6
    pixel = np.diff(np.radians(binning.fov_lon))[:, None] * np.diff(np.sin(np.radians(binning.fov_lat)))[None, :]
    np.testing.assert_allclose(cube["exposure"].values[0], runs["ONTIME"].sum() * d_e[:, None, None] * pixel[None], rtol=1e-12)


def test_3d_kept_fractions_of_dr1_runs_match_astropys_altaz_to_icrs(hess_store, astropy_calls):
    """The node-map path (one astropy call for all runs) against astropy's transformations at every time."""
    import astropy.units as u
    from astropy.coordinates import AltAz, SkyCoord
    from astropy.utils import iers

    from bkgxr import altaz_maps
    from bkgxr.exclusion import DEFAULT_RADIUS_DEG
    from bkgxr.kept_fraction import kept_fraction_pixels
    from bkgxr.masking import TRACK_NODES, kept_fractions

    calls = astropy_calls
    runs = hess_store.select()
    binning = bkgxr.Binning(fov="altaz")
    regions = run_regions(runs, target_radius=DEFAULT_RADIUS_DEG)  # build_cube's default
    on = [i for i, r in enumerate(regions) if r is not None]
    assert len(on) == 60  # the DR1 runs with a target
    kept = kept_fractions(runs, binning, regions)
    assert len(calls) == 1  # the node maps of all 60 runs at once
    assert np.all(kept[[i for i in range(len(runs)) if i not in on]] == 1)

    def astropy_mapping(ra_pnt, dec_pnt, reference, location):
        def mapping(lon, lat, time):
            with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
                frame = AltAz(obstime=reference + time * u.s, location=location, pressure=0 * u.hPa)
                pnt = SkyCoord(ra_pnt * u.deg, dec_pnt * u.deg).transform_to(frame)
                az, alt = altaz_of_fov(lon, lat, pnt.az.deg, pnt.alt.deg)
                sky = SkyCoord(az=az * u.deg, alt=alt * u.deg, frame=frame).icrs
            return sky.ra.deg, sky.dec.deg

        return mapping

    worst = 0.0
    for i in on:
        run = runs.iloc[i]
        header = fits.getheader(run.EVENTS_PATH, "EVENTS")
        start, stop = header["TSTART"], header["TSTOP"]
        times = start + (np.arange(TRACK_NODES) + 0.5) * (stop - start) / TRACK_NODES
        mapping = astropy_mapping(run.RA_PNT, run.DEC_PNT, altaz_maps.reference_time(header), altaz_maps.location_of(header))
        truth = kept_fraction_pixels(binning.fov_lon, binning.fov_lat, mapping, times, np.ones(TRACK_NODES), regions[i])
        worst = max(worst, np.abs(kept[i] - truth).max())
    assert worst < 1e-4, worst  # measured 3.5e-6
    assert kept[on].min() < 0.01  # the circles take whole pixels of some runs

    # without the obs-index header each run computes its own nodes: the same maps, the same fractions
    withheld = runs.iloc[on[:6]].copy()
    withheld.attrs.clear()
    before = len(calls)
    alone = kept_fractions(withheld, binning, [regions[i] for i in on[:6]])
    assert len(calls) == before + 6
    np.testing.assert_array_equal(alone, kept[on[:6]])


def test_the_overview_says_how_many_runs_were_used_outside_exclusion_regions(on_runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bkgxr.plot import plot_overview

    cube = bkgxr.build_cube(on_runs, binning=BINNING, target_radius=RADIUS).compute()
    n_on = int((on_runs["TARGET_NAME"] != "Off data").sum())
    fig = plot_overview(cube, offsets=[0.5], energies=[1.0])
    assert fig.get_suptitle() == f"bkgxr background model: {len(on_runs)} runs, {n_on} of them used outside exclusion regions"
    plt.close(fig)
