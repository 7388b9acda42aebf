"""bkgxr.fov against astropy's full ICRS -> AltAz transformation and gammapy's FoV frames and background maps."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord, get_sun
from astropy.utils import iers
from gammapy.data import FixedPointingInfo
from gammapy.irf import Background3D
from gammapy.makers.utils import make_map_background_irf
from gammapy.maps import MapAxis, WcsGeom
from gammapy.utils.coordinates import FoVAltAzFrame, sky_to_fov

from bkgxr import altaz_maps, fov

#: EVENTS header cards of H.E.S.S. DR1 (site and time origin).
HESS = {"GEOLON": 16.5002222222222, "GEOLAT": -23.2717777777778, "ALTITUDE": 1835.0,
        "MJDREFI": 51910, "MJDREFF": 0.000742870370370241, "TIMESYS": "TT"}
#: Run 20136 of DR1 (MSH 15-52): start (s since MJDREF), duration (s), pointing (deg).
RUN_START, RUN_LENGTH, RA_PNT, DEC_PNT = 101962602.0, 1682.0, 228.6125, -58.771666666667


@pytest.fixture(scope="module")
def site():
    return altaz_maps.reference_time(HESS), altaz_maps.location_of(HESS)


def astropy_altaz(ra, dec, time_s, reference, location):
    """The full transformation, no refraction, with only the installed Earth-orientation tables."""
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        frame = AltAz(obstime=reference + np.asarray(time_s) * u.s, location=location, pressure=0 * u.hPa)
        return SkyCoord(ra * u.deg, dec * u.deg).transform_to(frame), get_sun(frame.obstime).transform_to(frame)


def separation_deg(az1, alt1, az2, alt2):
    return SkyCoord(az1 * u.deg, alt1 * u.deg).separation(SkyCoord(az2 * u.deg, alt2 * u.deg)).deg


def test_az_alt_matches_astropy_over_the_sky_and_years(site):
    reference, location = site
    rng = np.random.default_rng(3)
    n = 1500
    time = rng.uniform(94_672_800.0, 94_672_800.0 + 4 * 3.156e7, n)  # 2004-2008, the DR1 years
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    az, alt = fov.az_alt_deg(ra, dec, time, reference=reference, location=location)
    truth, sun = astropy_altaz(ra, dec, time, reference, location)
    # astropy bends light passing the Sun (1.75 arcsec at its limb); IACTs observe at night
    far = truth.separation(sun).deg > 30
    assert far.sum() > 0.8 * n
    assert separation_deg(az, alt, truth.az.deg, truth.alt.deg)[far].max() < 5e-5  # measured 1.5e-5 (node step 1800 s)
    assert np.all((az >= 0) & (az < 360))


def test_pointing_track_of_a_run_matches_astropy(site):
    reference, location = site
    time = RUN_START + np.linspace(0, RUN_LENGTH, 57)
    az, alt = fov.az_alt_deg(RA_PNT, DEC_PNT, time, reference=reference, location=location)
    truth, _ = astropy_altaz(np.full(time.size, RA_PNT), np.full(time.size, DEC_PNT), time, reference, location)
    assert az.shape == time.shape
    assert separation_deg(az, alt, truth.az.deg, truth.alt.deg).max() < 5e-5
    assert np.ptp(alt) > 1.0  # the track moves: a run-mean zenith is not enough


def test_fov_lon_lat_is_gammapys_sky_to_fov():
    rng = np.random.default_rng(4)
    n = 20000
    az_pnt, alt_pnt = rng.uniform(0, 360, n), rng.uniform(-89, 89, n)
    az, alt = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    near = rng.random(n) < 0.5  # half of them within a few degrees of the pointing, as events are
    az[near], alt[near] = az_pnt[near] + rng.normal(0, 3, near.sum()), np.clip(alt_pnt[near] + rng.normal(0, 3, near.sum()), -90, 90)
    lon, lat = fov.fov_lon_lat_deg(az, alt, az_pnt, alt_pnt)
    ref_lon, ref_lat = sky_to_fov(az * u.deg, alt * u.deg, az_pnt * u.deg, alt_pnt * u.deg)
    d_lon = (lon - ref_lon.to_value(u.deg) + 180) % 360 - 180
    assert np.abs(d_lon * np.cos(np.radians(lat))).max() < 1e-9
    assert np.abs(lat - ref_lat.to_value(u.deg)).max() < 1e-9


def test_fov_sign_convention():
    # above the pointing: lat > 0; towards smaller azimuth: lon > 0
    lon, lat = fov.fov_lon_lat_deg([180.0, 178.0], [52.0, 50.0], 180.0, 50.0)
    assert lat[0] == pytest.approx(2.0, abs=1e-12) and lon[0] == pytest.approx(0.0, abs=1e-12)
    assert lon[1] == pytest.approx(2.0 * np.cos(np.radians(50.0)), abs=1e-3)
    assert lat[1] == pytest.approx(0.0, abs=0.02)  # the great circle bulges above the parallel


def test_event_fov_matches_gammapys_fov_altaz_frame(site):
    reference, location = site
    rng = np.random.default_rng(5)
    n = 2000
    time = np.sort(rng.uniform(RUN_START, RUN_START + RUN_LENGTH, n))
    ra, dec = RA_PNT + rng.normal(0, 2, n) / np.cos(np.radians(DEC_PNT)), DEC_PNT + rng.normal(0, 2, n)
    got = fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, reference=reference, location=location)
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        obstime = reference + time * u.s
        origin = SkyCoord(RA_PNT * u.deg, DEC_PNT * u.deg).transform_to(AltAz(obstime=obstime, location=location))
        frame = FoVAltAzFrame(origin=origin.altaz, location=location, obstime=obstime)
        truth = SkyCoord(ra * u.deg, dec * u.deg).transform_to(frame)
    assert np.abs(got.fov_lon - truth.fov_lon.deg).max() < 5e-5
    assert np.abs(got.fov_lat - truth.fov_lat.deg).max() < 5e-5
    np.testing.assert_allclose(got.zenith_pnt, 90 - origin.alt.deg, atol=5e-5)


def test_zenith_time_matches_one_second_sampling(site):
    reference, location = site
    # two GTIs with a gap; the pointing's zenith crosses the inner edges during the run
    start = np.array([RUN_START, RUN_START + 700.0])
    stop = np.array([RUN_START + 600.0, RUN_START + RUN_LENGTH])
    track = fov.az_alt_deg(RA_PNT, DEC_PNT, [RUN_START, RUN_START + RUN_LENGTH], reference=reference, location=location)[1]
    z0, z1 = sorted(90 - track)
    edges = np.array([0.0, z0 + 0.3 * (z1 - z0), z0 + 0.8 * (z1 - z0), 90.0])
    got = fov.zenith_time_s(start, stop, RA_PNT, DEC_PNT, edges, reference=reference, location=location)
    mid = np.concatenate([np.arange(a, b) + 0.5 for a, b in zip(start, stop)])
    truth, _ = astropy_altaz(np.full(mid.size, RA_PNT), np.full(mid.size, DEC_PNT), mid, reference, location)
    brute = np.histogram(90 - truth.alt.deg, edges)[0].astype(float)
    assert np.all(brute > 100)
    np.testing.assert_allclose(got, brute, atol=1.0)  # 1-s sampling is exact to half a second per crossing
    assert got.sum() == pytest.approx(float(np.sum(stop - start)), abs=1e-6)
    # edges leaving part of the run outside: that time is not counted
    part = fov.zenith_time_s(start, stop, RA_PNT, DEC_PNT, edges[1:3], reference=reference, location=location)
    np.testing.assert_allclose(part, got[1:2], atol=1e-6)


def test_zenith_time_refuses_bad_input(site):
    reference, location = site
    kw = {"reference": reference, "location": location}
    with pytest.raises(ValueError, match="stops before it starts"):
        fov.zenith_time_s([10.0], [5.0], RA_PNT, DEC_PNT, [0, 90], **kw)
    with pytest.raises(ValueError, match="edges must increase"):
        fov.zenith_time_s([0.0], [5.0], RA_PNT, DEC_PNT, [30, 20], **kw)
    with pytest.raises(ValueError, match="finite"):
        fov.az_alt_deg(RA_PNT, DEC_PNT, [np.nan], **kw)


def test_header_helpers_name_the_missing_keyword():
    with pytest.raises(KeyError, match="GEOLAT"):
        altaz_maps.location_of({"GEOLON": 16.5})
    with pytest.raises(KeyError, match="MJDREFI"):
        altaz_maps.reference_time({})
    assert altaz_maps.reference_time(HESS).scale == "tt"
    assert altaz_maps.location_of(HESS).lat.deg == pytest.approx(HESS["GEOLAT"])
    # location_of calls erfa directly: the same place as astropy's from_geodetic
    astropy_site = EarthLocation.from_geodetic(HESS["GEOLON"] * u.deg, HESS["GEOLAT"] * u.deg, HESS["ALTITUDE"] * u.m)
    np.testing.assert_allclose(
        u.Quantity(altaz_maps.location_of(HESS).geocentric).to_value(u.m), u.Quantity(astropy_site.geocentric).to_value(u.m), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("axis", ["fov_lat", "fov_lon"])
def test_gammapy_background_map_rotates_as_bkgxr_fov(site, axis):
    """An ALTAZ Background3D with a gradient along one FoV axis, projected by gammapy onto the sky.

    The rate is exp(0.5/deg * coordinate) x E^-2: gammapy's log interpolation and
    log-log energy integration are exact for it, so the map must equal the
    run-averaged rate at each pixel's FoV coordinates from bkgxr.fov.
    """
    reference, location = site
    energy = MapAxis.from_energy_bounds(1, 10, 2, unit="TeV")
    lon = MapAxis.from_edges(np.linspace(-4, 4, 33), unit="deg", name="fov_lon")
    lat = MapAxis.from_edges(np.linspace(-4, 4, 41), unit="deg", name="fov_lat")
    grid = np.meshgrid(lon.center.to_value(u.deg), lat.center.to_value(u.deg), indexing="ij")
    along = grid[0] if axis == "fov_lon" else grid[1]
    data = 1e-6 * energy.center.to_value(u.TeV)[:, None, None] ** -2.0 * np.exp(0.5 * along)[None]
    bkg = Background3D(axes=[energy, lon, lat], data=data, unit="MeV-1 s-1 sr-1", fov_alignment="ALTAZ")
    geom = WcsGeom.create(skydir=(RA_PNT, DEC_PNT), width=3, binsz=0.15, frame="icrs", axes=[energy])
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        counts = make_map_background_irf(
            FixedPointingInfo(fixed_icrs=SkyCoord(RA_PNT * u.deg, DEC_PNT * u.deg)), RUN_LENGTH * u.s, bkg, geom,
            reference + RUN_START * u.s, fov_rotation_step=0.1 * u.deg, location=location,
        ).data.sum(axis=0)

    sky = geom.to_image().get_coord().skycoord
    ra, dec = sky.ra.deg.ravel(), sky.dec.deg.ravel()
    # 1e-6 MeV-1 s-1 sr-1 x integral of (E/TeV)^-2 over 1-10 TeV (0.9 TeV = 0.9e6 MeV) x pixel solid angle x ontime
    scale = 1e-6 * 0.9e6 * geom.to_image().solid_angle().to_value(u.sr) * RUN_LENGTH

    def bkgxr_map(times):
        az, alt = fov.az_alt_deg(ra[None], dec[None], times[:, None], reference=reference, location=location)
        az_pnt, alt_pnt = fov.az_alt_deg(RA_PNT, DEC_PNT, times, reference=reference, location=location)
        fov_lon, fov_lat = fov.fov_lon_lat_deg(az, alt, az_pnt[:, None], alt_pnt[:, None])
        pattern = np.exp(0.5 * (fov_lon if axis == "fov_lon" else fov_lat)).mean(axis=0)
        return pattern.reshape(sky.shape) * scale, az, alt

    averaged, _, _ = bkgxr_map(RUN_START + (np.arange(200) + 0.5) / 200 * RUN_LENGTH)
    np.testing.assert_allclose(counts, averaged, rtol=1e-4)  # measured 6e-7
    at_mid, az, alt = bkgxr_map(np.array([RUN_START + RUN_LENGTH / 2]))
    np.testing.assert_allclose(counts, at_mid, rtol=0.01)  # the field turns by a few degrees in the run

    # the physical reading: fov_lat grows with altitude, fov_lon towards smaller azimuth
    toward = alt[0] if axis == "fov_lat" else -((az[0] - np.median(az[0]) + 180) % 360 - 180)
    assert np.corrcoef(counts.ravel(), toward)[0, 1] > 0.9



def test_run_node_maps_give_each_run_its_fov_without_astropy(site, astropy_calls):
    reference, location = site
    # runs across the DR1 years, of 0 s to 1 h, at starts on and off the node grid; two overlap
    start = np.array([RUN_START, RUN_START + 1000.0, 1.3e8 + 600.0, 9.5e7 + 17.3, 1.1e8 + 599.999])
    stop = start + np.array([RUN_LENGTH, 1682.0, 0.0, 3600.0, 1.0])
    per_run = altaz_maps.run_node_maps(start, stop, reference=reference, location=location)
    assert astropy_calls == [len(np.unique(np.concatenate([n.time_s for n in per_run])))]  # one call, shared nodes once
    rng = np.random.default_rng(6)
    for a, b, nodes in zip(start, stop, per_run):
        # every multiple of the step within half a step of the run, and nothing more than one step beyond
        first, last = np.ceil((a - altaz_maps.NODE_STEP_S / 2) / altaz_maps.NODE_STEP_S), np.floor((b + altaz_maps.NODE_STEP_S / 2) / altaz_maps.NODE_STEP_S)
        assert set(np.arange(first, last + 1) * altaz_maps.NODE_STEP_S) <= set(nodes.time_s)
        assert nodes.time_s.min() >= a - altaz_maps.NODE_STEP_S and nodes.time_s.max() <= b + altaz_maps.NODE_STEP_S
        # events of the run, and up to half a step beyond it
        time = np.concatenate([[a, b, a - 299.0, b + 299.0], rng.uniform(a, b, 500)])
        ra = RA_PNT + rng.normal(0, 2, time.size) / np.cos(np.radians(DEC_PNT))
        dec = DEC_PNT + rng.normal(0, 2, time.size)
        before = len(astropy_calls)
        got = fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, reference=reference, location=location, nodes=nodes)
        assert len(astropy_calls) == before  # numpy only
        alone = fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, reference=reference, location=location)
        assert len(astropy_calls) == before + 1
        for x, y in zip(got, alone):
            np.testing.assert_array_equal(x, y)  # the same maps: bit for bit
    # and against astropy's full transformation into gammapy's FoV frame, for the last run's events
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        obstime = reference + time * u.s
        origin = SkyCoord(RA_PNT * u.deg, DEC_PNT * u.deg).transform_to(AltAz(obstime=obstime, location=location))
        truth = SkyCoord(ra * u.deg, dec * u.deg).transform_to(FoVAltAzFrame(origin=origin.altaz, location=location, obstime=obstime))
    assert np.abs(got.fov_lon - truth.fov_lon.deg).max() < 5e-5
    assert np.abs(got.fov_lat - truth.fov_lat.deg).max() < 5e-5


def test_event_fov_computes_its_nodes_when_given_ones_do_not_fit(site, astropy_calls):
    reference, location = site
    time = RUN_START + np.linspace(0, RUN_LENGTH, 101)
    ra, dec = RA_PNT + np.linspace(-2, 2, 101), DEC_PNT + np.linspace(2, -2, 101)
    kw = {"reference": reference, "location": location}
    alone = fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, **kw)
    elsewhere = altaz_maps.location_of({**HESS, "GEOLAT": HESS["GEOLAT"] + 1e-6})  # 11 cm north
    misfits = {
        "reference 1 ms later": altaz_maps.run_node_maps([RUN_START], [RUN_START + RUN_LENGTH], reference=reference + 1 * u.ms, location=location),
        "another site": altaz_maps.run_node_maps([RUN_START], [RUN_START + RUN_LENGTH], reference=reference, location=elsewhere),
        "another run": altaz_maps.run_node_maps([RUN_START + 3600], [RUN_START + 3600 + RUN_LENGTH], **kw),
        "half the run": altaz_maps.run_node_maps([RUN_START], [RUN_START + 100.0], **kw),
        "none": [altaz_maps.NodeMaps(np.zeros(0), np.zeros((0, 3, 4)), *altaz_maps.run_node_maps([0.0], [0.0], **kw)[0][2:])],
    }
    for why, [nodes] in misfits.items():
        before = len(astropy_calls)
        got = fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, nodes=nodes, **kw)
        assert len(astropy_calls) == before + 1, why
        for x, y in zip(got, alone):
            np.testing.assert_array_equal(x, y, err_msg=why)
    # nodes within 1 µs and 1 mm are the same site: used
    [close] = altaz_maps.run_node_maps([RUN_START], [RUN_START + RUN_LENGTH], reference=reference + 0.1 * u.us, location=location)
    before = len(astropy_calls)
    fov.event_fov_deg(ra, dec, time, RA_PNT, DEC_PNT, nodes=close, **kw)
    assert len(astropy_calls) == before


def test_run_node_maps_refuse_bad_runs(site):
    reference, location = site
    kw = {"reference": reference, "location": location}
    with pytest.raises(ValueError, match="stops before it starts"):
        altaz_maps.run_node_maps([10.0], [5.0], **kw)
    with pytest.raises(ValueError, match="finite"):
        altaz_maps.run_node_maps([np.nan], [5.0], **kw)
    with pytest.raises(ValueError, match="1-d of one shape"):
        altaz_maps.run_node_maps([0.0, 1.0], [5.0], **kw)
    with pytest.raises(ValueError, match="positive"):
        altaz_maps.run_node_maps([0.0], [5.0], node_step_s=0.0, **kw)
    with pytest.raises(ValueError, match="finite"):
        altaz_maps.node_maps_for([np.inf], **kw)


def test_3d_cube_reads_with_one_astropy_call(sim_store, astropy_calls):
    """The obs-index's MJDREF and site give every run its nodes when the graph is built; counts as per run."""
    import bkgxr

    runs = sim_store.select()
    binning = bkgxr.Binning(zenith=[0, 30, 60], energy=np.geomspace(0.3, 30, 5), fov="altaz",
                            fov_lon=np.linspace(-2, 2, 41), fov_lat=np.linspace(-2, 2, 41))
    lazy = bkgxr.build_cube(runs, binning=binning, event_zenith=False)  # without the obs-index header, no track
    assert len(astropy_calls) == 1
    cube = lazy.compute(scheduler="sync")
    assert len(astropy_calls) == 1  # the read tasks called no astropy
    withheld = runs.copy()
    withheld.attrs.clear()  # a run table without the obs-index header: each task computes its nodes
    per_run = bkgxr.build_cube(withheld, binning=binning, event_zenith=False).compute(scheduler="sync")
    assert len(astropy_calls) == 1 + len(runs)
    assert int(cube["counts"].sum()) > 10 * len(runs) * binning.shape[1]  # events in every run and energy
    np.testing.assert_array_equal(cube["counts"].values, per_run["counts"].values)
    np.testing.assert_array_equal(cube["run_counts"].values, per_run["run_counts"].values)


def test_ra_dec_inverts_az_alt_and_matches_astropys_altaz_to_icrs(site, astropy_calls):
    reference, location = site
    rng = np.random.default_rng(11)
    n = 1500
    time = rng.uniform(94_672_800.0, 94_672_800.0 + 4 * 3.156e7, n)  # 2004-2008, the DR1 years
    az, alt = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(0.1, 1, n)))
    ra, dec = fov.ra_dec_deg(az, alt, time, reference=reference, location=location)
    assert np.all((ra >= 0) & (ra < 360)) and ra.shape == time.shape
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        frame = AltAz(obstime=reference + time * u.s, location=location, pressure=0 * u.hPa)
        truth = SkyCoord(az=az * u.deg, alt=alt * u.deg, frame=frame).icrs
        sun = get_sun(frame.obstime).transform_to(frame)
    far = separation_deg(az, alt, sun.az.deg, sun.alt.deg) > 30  # as for az_alt_deg: no light bending near the Sun
    assert far.sum() > 0.8 * n
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(truth).deg[far].max() < 5e-5  # measured 1.5e-5 (node step 1800 s)
    # the inverse of az_alt_deg through the same nodes
    az_back, alt_back = fov.az_alt_deg(ra, dec, time, reference=reference, location=location)
    assert separation_deg(az_back, alt_back, az, alt).max() < 1e-9


def test_ra_dec_with_run_node_maps_calls_no_astropy(site, astropy_calls):
    reference, location = site
    [nodes] = altaz_maps.run_node_maps([RUN_START], [RUN_START + RUN_LENGTH], reference=reference, location=location)
    time = RUN_START + np.linspace(0, RUN_LENGTH, 7)
    az, alt = np.linspace(100, 250, 35).reshape(5, 7), np.linspace(30, 80, 35).reshape(5, 7)
    kw = {"reference": reference, "location": location}
    assert altaz_maps.nodes_serve(nodes, time, **kw)
    before = len(astropy_calls)
    got = fov.ra_dec_deg(az, alt, time, nodes=nodes, **kw)  # times broadcast with the directions
    track = fov.az_alt_deg(RA_PNT, DEC_PNT, time, nodes=nodes, **kw)
    assert len(astropy_calls) == before
    for x, y in zip((*got, *track), (*fov.ra_dec_deg(az, alt, time, **kw), *fov.az_alt_deg(RA_PNT, DEC_PNT, time, **kw))):
        np.testing.assert_array_equal(x, y)  # the same maps: bit for bit
    assert got[0].shape == (5, 7)
    # nodes of another run, site or time origin do not serve
    elsewhere = altaz_maps.location_of({**HESS, "GEOLAT": HESS["GEOLAT"] + 1e-6})
    assert not altaz_maps.nodes_serve(nodes, time + 3600.0, **kw)
    assert not altaz_maps.nodes_serve(nodes, time, reference=reference, location=elsewhere)
    assert not altaz_maps.nodes_serve(nodes, time, reference=reference + 1 * u.ms, location=location)
    before = len(astropy_calls)
    np.testing.assert_array_equal(
        fov.ra_dec_deg(az, alt, time + 3600.0, nodes=nodes, **kw), fov.ra_dec_deg(az, alt, time + 3600.0, **kw)
    )
    assert len(astropy_calls) == before + 2  # nodes that do not serve are recomputed
