"""Exclusion regions: parsers, events inside them, and the kept fraction of rings and FoV pixels.

Kept fractions are checked against brute-force Monte Carlo: points uniform on the sphere within
each ring (pixel), placed on the sky by astropy/gammapy, tested with ``SkyCoord.separation`` or the
mask's own ``get_by_coord``; and against closed forms where there is one.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from gammapy.maps import MapAxis, WcsGeom, WcsNDMap
from gammapy.utils.coordinates import fov_to_sky
from regions import (
    CirclePixelRegion,
    CircleSkyRegion,
    PixCoord,
    RectangleSkyRegion,
    Regions,
)

from bkgxr.exclusion import (
    Circle,
    ExclusionRegions,
    excluded,
)
from bkgxr.kept_fraction import kept_fraction_pixels, kept_fraction_rings

PNT = SkyCoord(83.63, 22.51, unit="deg")
#: Overlapping circles, one holding the pointing, one crossing the outer edge.
CIRCLES = "83.63,22.01,0.3; 84.0,22.2,0.4; 85.5,23.4,0.6; 83.63,22.51,0.2"
HESS = EarthLocation(lat=-23.2717 * u.deg, lon=16.5 * u.deg, height=1835 * u.m)
T0 = Time("2004-12-04T22:00:00", scale="utc")
#: A 28-min run sampled at 6 times with unequal live-time weights.
TIMES_S = np.linspace(0.0, 28 * 60.0, 6)
WEIGHTS = np.array([1.0, 2.0, 3.0, 1.0, 0.5, 2.5])
FOV_EDGES = np.linspace(-2.5, 2.5, 11)


def sky_of_fov(lon_deg, lat_deg, time_s):
    """ALTAZ-aligned FoV → ICRS at T0 + time_s, through gammapy's fov_to_sky and astropy AltAz."""
    frame = AltAz(obstime=T0 + time_s * u.s, location=HESS)
    pnt = PNT.transform_to(frame)
    az, alt = fov_to_sky(np.asarray(lon_deg) * u.deg, np.asarray(lat_deg) * u.deg, pnt.az, pnt.alt)
    sky = SkyCoord(az=az, alt=alt, frame=frame).icrs
    return sky.ra.deg, sky.dec.deg


def inside_circles(sky, regions):
    """Brute-force membership: astropy separation from each centre."""
    out = np.zeros(sky.shape, dtype=bool)
    for c in regions.circles:
        out |= sky.separation(SkyCoord(c.ra_deg, c.dec_deg, unit="deg")).deg < c.radius_deg
    return out


def inside_mask(sky, mask):
    return ~mask.get_by_coord({"skycoord": sky}, fill_value=True).astype(bool)


def assert_agrees_with_mc(exact, kept, total):
    """Each bin within 4.5 sigma of the MC fraction, and chi2 per bin consistent with 1."""
    mc = kept / total
    sigma = np.sqrt(np.maximum(mc * (1 - mc), 1.0 / total) / total)
    pull = (exact - mc) / sigma
    assert np.max(np.abs(pull)) < 4.5, pull
    assert np.mean(pull**2) < 2.0


@pytest.fixture(scope="module")
def mask():
    """A Galactic-frame exclusion mask (True = keep) holding two of the circles, 0.02 deg pixels."""
    geom = WcsGeom.create(skydir=PNT, width=6, binsz=0.02, frame="galactic")
    shapes = [CircleSkyRegion(SkyCoord(84.0, 22.2, unit="deg"), 0.4 * u.deg),
              CircleSkyRegion(SkyCoord(85.5, 23.4, unit="deg"), 0.6 * u.deg)]
    return geom.region_mask(shapes, inside=False)


@pytest.fixture(scope="module")
def ring_samples():
    """1e6 points uniform on the sphere within 2.5 deg of the pointing: offset and sky position."""
    rng = np.random.default_rng(11)
    n = 1_000_000
    offset = np.degrees(np.arccos(rng.uniform(np.cos(np.radians(2.5)), 1.0, n)))
    sky = PNT.directional_offset_by(rng.uniform(0, 2 * np.pi, n) * u.rad, offset * u.deg)
    return offset, sky


@pytest.fixture(scope="module")
def pixel_samples():
    """1e6 points uniform on the sphere within the FoV grid, each at one of the run's times (by weight)."""
    rng = np.random.default_rng(12)
    n = 1_000_000
    lon = rng.uniform(FOV_EDGES[0], FOV_EDGES[-1], n)
    sin_lat = np.sin(np.radians(FOV_EDGES[[0, -1]]))
    lat = np.degrees(np.arcsin(rng.uniform(*sin_lat, n)))
    which = rng.choice(TIMES_S.size, size=n, p=WEIGHTS / WEIGHTS.sum())
    ra, dec = np.empty(n), np.empty(n)
    for i, t in enumerate(TIMES_S):
        ra[which == i], dec[which == i] = sky_of_fov(lon[which == i], lat[which == i], t)
    return lon, lat, SkyCoord(ra, dec, unit="deg")


# --- parsers -------------------------------------------------------------------------------


def test_text_is_parsed_into_circles():
    regions = ExclusionRegions.from_text(" 83.63, 22.01 ,0.3;-10,-5.5e1,1.; ")
    assert regions.circles == (Circle(83.63, 22.01, 0.3), Circle(-10.0, -55.0, 1.0))
    assert regions.masks == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", r"exclusion circle \"__import__\('os'\)\": expected three numbers"),
        ("83.63,22.01", r"'83.63,22.01': expected three numbers"),
        ("83.63,22.01,0.3;83.6,,0.2", r"'83.6,,0.2': expected three numbers"),
        ("83.63,22.01,0.3,1", r"expected three numbers"),
        ("83.63,22.01,-0.3", r"'83.63,22.01,-0.3': .*radius -0.3 deg is outside \(0, 180\)"),
        ("83.63,95,0.3", r"Dec 95.0 deg is outside \[-90, 90\]"),
        ("nan,22,0.3", r"'nan,22,0.3': expected three numbers"),
        ("1e999,22,0.3", r"values must be finite"),
        (" ; ", r"no circle given"),
    ],
)
def test_bad_text_is_refused_naming_it(text, message):
    with pytest.raises(ValueError, match=message):
        ExclusionRegions.from_text(text)


@pytest.mark.parametrize("suffix", [".reg", ".crtf"])
def test_region_file_circles_are_read_in_icrs(tmp_path, suffix):
    galactic = SkyCoord(l=184.56, b=-5.78, unit="deg", frame="galactic")
    written = Regions([CircleSkyRegion(SkyCoord(83.63, 22.01, unit="deg"), 0.3 * u.deg),
                       CircleSkyRegion(galactic, 12 * u.arcmin)])
    path = tmp_path / f"exclude{suffix}"
    written.write(str(path))
    circles = ExclusionRegions.from_file(path).circles
    assert len(circles) == 2
    np.testing.assert_allclose([circles[0].ra_deg, circles[0].dec_deg, circles[0].radius_deg], [83.63, 22.01, 0.3])
    got = SkyCoord(circles[1].ra_deg, circles[1].dec_deg, unit="deg")
    assert got.separation(galactic).arcsec < 0.01  # CRTF writes 6 decimals
    assert circles[1].radius_deg == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("shape", "name"),
    [
        (RectangleSkyRegion(SkyCoord(83.6, 22.0, unit="deg"), 1 * u.deg, 1 * u.deg), "RectangleSkyRegion"),
        (CirclePixelRegion(PixCoord(10, 10), 5), "CirclePixelRegion"),
    ],
)
def test_region_file_with_other_shapes_is_refused_naming_file_and_shape(tmp_path, shape, name):
    path = tmp_path / "mixed.reg"
    Regions([CircleSkyRegion(SkyCoord(83.6, 22.0, unit="deg"), 0.3 * u.deg), shape]).write(str(path))
    with pytest.raises(ValueError, match=rf"mixed\.reg: {name} is not supported"):
        ExclusionRegions.from_file(path)


def test_unreadable_or_empty_region_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.reg: not a readable DS9/CRTF region file"):
        ExclusionRegions.from_file(tmp_path / "missing.reg")
    path = tmp_path / "broken.reg"
    path.write_text("circle(83.6, 22.0\n")  # regions logs and skips a line without a frame
    with pytest.raises(ValueError, match=r"broken\.reg: no region found"):
        ExclusionRegions.from_file(path)


def test_mask_is_copied_read_only_and_planes_are_combined(mask):
    energy = MapAxis.from_energy_bounds("1 TeV", "10 TeV", nbin=2)
    cube = WcsNDMap(mask.geom.to_cube([energy]), data=np.stack([mask.data, np.ones_like(mask.data)]))
    cube.data[1, 0, 0] = False
    regions = ExclusionRegions.from_mask(cube)
    (image,) = regions.masks
    expected = mask.data.copy()
    expected[0, 0] = False
    np.testing.assert_array_equal(image.data, expected)
    assert image.geom.is_image and not image.data.flags.writeable
    cube.data[:] = False  # the caller's map stays the caller's
    assert image.data.sum() == expected.sum()


def test_mask_must_be_boolean(mask):
    with pytest.raises(TypeError, match="boolean gammapy WcsNDMap, got WcsNDMap"):
        ExclusionRegions.from_mask(WcsNDMap(mask.geom, data=mask.data.astype(float)))


def test_default_is_a_circle_around_the_target_and_regions_combine():
    regions = ExclusionRegions.around_target(83.63, 22.01) | ExclusionRegions.from_text("84,22,0.1")
    assert regions.circles == (Circle(83.63, 22.01, 0.5), Circle(84.0, 22.0, 0.1))
    assert ExclusionRegions.around_target(83.63, 22.01, radius_deg=0.8).circles[0].radius_deg == 0.8


# --- events ---------------------------------------------------------------------------------


def test_events_inside_circles_are_exactly_those_astropy_separates(ring_samples):
    regions = ExclusionRegions.from_text(CIRCLES)
    rng = np.random.default_rng(3)
    # points 1e-9 .. 1e-3 deg either side of each boundary, plus the uniform sample
    edge_ra, edge_dec = [], []
    for c in regions.circles:
        d = c.radius_deg + rng.choice([-1, 1], 20_000) * 10 ** rng.uniform(-9, -3, 20_000)
        ring = SkyCoord(c.ra_deg, c.dec_deg, unit="deg").directional_offset_by(
            rng.uniform(0, 2 * np.pi, d.size) * u.rad, d * u.deg)
        edge_ra.append(ring.ra.deg)
        edge_dec.append(ring.dec.deg)
    sky = SkyCoord(np.concatenate([*edge_ra, ring_samples[1].ra.deg[:200_000]]),
                   np.concatenate([*edge_dec, ring_samples[1].dec.deg[:200_000]]), unit="deg")
    got = excluded(sky.ra.deg, sky.dec.deg, regions)
    np.testing.assert_array_equal(got, inside_circles(sky, regions))
    assert 0.1 < got.mean() < 0.9


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_events_in_mask_are_its_false_pixels(frame, ring_samples):
    geom = WcsGeom.create(skydir=PNT, width=3, binsz=0.02, frame=frame)
    mask = geom.region_mask([CircleSkyRegion(SkyCoord(84.0, 22.2, unit="deg"), 0.4 * u.deg)], inside=False)
    sky = ring_samples[1][:300_000]
    got = excluded(sky.ra.deg, sky.dec.deg, ExclusionRegions.from_mask(mask))
    np.testing.assert_array_equal(got, inside_mask(sky, mask))
    assert got.any()


# --- 2D: offset rings ------------------------------------------------------------------------


def test_ring_fraction_of_a_circle_on_the_pointing_is_the_closed_form():
    edges = np.array([0.0, 0.1, 0.3, 0.5, 1.0, 2.5])
    rho = 0.37
    got = kept_fraction_rings(edges, PNT.ra.deg, PNT.dec.deg, ExclusionRegions.from_text(f"83.63,22.51,{rho}"))
    cos = np.cos(np.radians(edges))
    kept = (np.cos(np.radians(np.maximum(edges[:-1], rho))) - cos[1:]).clip(0) / (cos[:-1] - cos[1:])
    np.testing.assert_allclose(got, kept, rtol=1e-12, atol=1e-11)


def test_ring_fractions_match_monte_carlo(ring_samples):
    offset, sky = ring_samples
    regions = ExclusionRegions.from_text(CIRCLES)
    edges = np.linspace(0.0, 2.5, 10)
    exact = kept_fraction_rings(edges, PNT.ra.deg, PNT.dec.deg, regions)
    total = np.histogram(offset, edges)[0]
    kept = np.histogram(offset, edges, weights=(~inside_circles(sky, regions)).astype(float))[0]
    assert_agrees_with_mc(exact, kept, total)
    assert exact.min() < 0.5  # the circles matter


def test_ring_fractions_of_a_mask_match_monte_carlo(mask, ring_samples):
    offset, sky = ring_samples
    edges = np.linspace(0.0, 2.5, 10)
    exact = kept_fraction_rings(edges, PNT.ra.deg, PNT.dec.deg, ExclusionRegions.from_mask(mask))
    total = np.histogram(offset, edges)[0]
    kept = np.histogram(offset, edges, weights=(~inside_mask(sky, mask)).astype(float))[0]
    assert_agrees_with_mc(exact, kept, total)
    assert exact.min() < 0.95


def test_no_regions_keep_everything():
    edges = np.linspace(0, 2.5, 4)
    np.testing.assert_array_equal(kept_fraction_rings(edges, 10.0, 20.0, ExclusionRegions()), np.ones(3))
    np.testing.assert_array_equal(
        kept_fraction_pixels(edges, edges, sky_of_fov, [0.0], [1.0], ExclusionRegions()), np.ones((3, 3)))


# --- 3D: FoV pixels during the run -----------------------------------------------------------


def test_pixel_fractions_match_monte_carlo(pixel_samples):
    lon, lat, sky = pixel_samples
    regions = ExclusionRegions.from_text(CIRCLES)
    exact = kept_fraction_pixels(FOV_EDGES, FOV_EDGES, sky_of_fov, TIMES_S, WEIGHTS, regions)
    total = np.histogram2d(lon, lat, [FOV_EDGES, FOV_EDGES])[0]
    kept = np.histogram2d(lon, lat, [FOV_EDGES, FOV_EDGES], weights=(~inside_circles(sky, regions)).astype(float))[0]
    assert_agrees_with_mc(exact, kept, total)
    # the regions moved: one time alone gives another answer
    first = kept_fraction_pixels(FOV_EDGES, FOV_EDGES, sky_of_fov, TIMES_S[:1], [1.0], regions)
    assert np.max(np.abs(first - exact)) > 0.05


def test_pixel_fractions_of_a_mask_match_monte_carlo(mask, pixel_samples):
    lon, lat, sky = pixel_samples
    exact = kept_fraction_pixels(
        FOV_EDGES, FOV_EDGES, sky_of_fov, TIMES_S, WEIGHTS, ExclusionRegions.from_mask(mask), oversample=16)
    total = np.histogram2d(lon, lat, [FOV_EDGES, FOV_EDGES])[0]
    kept = np.histogram2d(lon, lat, [FOV_EDGES, FOV_EDGES], weights=(~inside_mask(sky, mask)).astype(float))[0]
    assert_agrees_with_mc(exact, kept, total)


def test_pixels_lose_exactly_the_caps_solid_angle():
    # Two disjoint caps wholly inside the grid at every time: the removed solid angle is their area.
    regions = ExclusionRegions.from_text("83.63,22.51,0.7; 84.9,23.3,0.3")
    edges = np.linspace(-2.5, 2.5, 21)
    kept = kept_fraction_pixels(edges, edges, sky_of_fov, TIMES_S[[0, -1]], [1.0, 1.0], regions)
    pixel_sr = np.diff(np.radians(edges))[:, None] * np.diff(np.sin(np.radians(edges)))[None, :]
    caps_sr = 2 * np.pi * (2 - np.cos(np.radians(0.7)) - np.cos(np.radians(0.3)))
    assert np.sum((1 - kept) * pixel_sr) == pytest.approx(caps_sr, rel=1e-7)


def test_pixels_refuse_a_mapping_that_is_not_a_rotation():
    def stretched(lon_deg, lat_deg, time_s):
        return 83.63 + 2 * lon_deg, 22.51 + lat_deg

    with pytest.raises(ValueError, match="sky_of_fov at time 0.0: not a rotation of the sphere"):
        kept_fraction_pixels(FOV_EDGES, FOV_EDGES, stretched, [0.0], [1.0], ExclusionRegions.from_text(CIRCLES))


@pytest.mark.parametrize(
    ("edges", "weights", "message"),
    [
        (FOV_EDGES[::-1], [1.0], "lon_edges_deg must be at least two increasing values"),
        (FOV_EDGES, [-1.0], "weights finite, >= 0"),
        (FOV_EDGES, [1.0, 1.0], "got 1 times"),
    ],
)
def test_pixels_refuse_bad_bins_and_weights(edges, weights, message):
    with pytest.raises(ValueError, match=message):
        kept_fraction_pixels(edges, FOV_EDGES, sky_of_fov, [0.0], weights, ExclusionRegions.from_text(CIRCLES))
