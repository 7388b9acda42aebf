import numpy as np
from astropy.coordinates import SkyCoord
from scipy import integrate

from bkgxr.geometry import offset_deg, ring_solid_angle_sr


def test_ring_solid_angle_matches_numerical_integral():
    edges = np.sqrt(np.linspace(0, 9, 10))
    numeric = [
        2 * np.pi * integrate.quad(np.sin, np.radians(a), np.radians(b))[0]
        for a, b in zip(edges[:-1], edges[1:])
    ]
    np.testing.assert_allclose(ring_solid_angle_sr(edges), numeric, rtol=1e-12)


def test_rings_tile_the_sphere():
    np.testing.assert_allclose(ring_solid_angle_sr([0, 30, 90, 180]).sum(), 4 * np.pi, rtol=1e-14)


def test_offset_is_the_true_separation_far_from_the_equator():
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, 1000), rng.uniform(-89, 89, 1000)
    expected = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(83.6, -72.0, unit="deg")).deg
    np.testing.assert_allclose(offset_deg(ra, dec, 83.6, -72.0), expected, rtol=1e-12, atol=1e-12)
    # a flat-sky offset would be wrong by far more than that near the pole
    flat = np.hypot((ra - 83.6) * np.cos(np.radians(-72.0)), dec + 72.0)
    assert np.max(np.abs(flat - expected)) > 1.0
