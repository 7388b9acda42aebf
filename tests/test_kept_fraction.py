"""3D kept fractions, all times of a run at once, against the one-time-at-a-time computation they replace.

tests/kept_fraction_reference.py holds that computation (bkgxr 2a2a501): a rotation fit and a
kernel call per time, each run's header read with astropy. Monte Carlo and astropy checks of
the fractions themselves are in tests/test_exclusion.py and tests/test_masking.py.
"""

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from gammapy.maps import WcsGeom
from kept_fraction_reference import (
    reference_kept_fraction_pixels,
    reference_kept_fractions,
)
from regions import CircleSkyRegion

import bkgxr
from bkgxr.exceptions import InvalidRunError
from bkgxr.exclusion import DEFAULT_RADIUS_DEG, ExclusionRegions
from bkgxr.kept_fraction import kept_fraction_pixels, kept_fraction_pixels_times

#: Overlapping circles (their boundaries cross), one on the pointing, one across the grid's edge.
CIRCLES = "83.63,22.01,0.3; 84.0,22.2,0.4; 85.5,23.4,0.6; 83.63,22.51,0.2; 81.2,21.0,0.5"
FOV_EDGES = np.linspace(-2.5, 2.5, 11)
TIMES_S = np.linspace(0.0, 28 * 60.0, 6)
#: Unequal weights, one of them 0 (that time is left out).
WEIGHTS = np.array([1.0, 2.0, 0.0, 1.0, 0.5, 2.5])


def turning_sky(ra_deg, dec_deg, deg_per_s):
    """A rigid FoV → ICRS mapping in numpy: the FoV centred on (ra, dec), turning about it at ``deg_per_s``."""
    ra0, dec0 = np.radians(ra_deg), np.radians(dec_deg)

    def mapping(lon_deg, lat_deg, time_s):
        """One time: arrays of shape (n_points,); times of shape (n_times,): shape (n_times, n_points)."""
        lon, lat, psi = np.radians(lon_deg), np.radians(lat_deg), np.radians(deg_per_s * np.asarray(time_s))[..., None]
        x, y, z = np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)
        y, z = y * np.cos(psi) - z * np.sin(psi), y * np.sin(psi) + z * np.cos(psi)  # turn about the centre
        x, z = x * np.cos(dec0) - z * np.sin(dec0), x * np.sin(dec0) + z * np.cos(dec0)  # up to dec0
        x, y = x * np.cos(ra0) - y * np.sin(ra0), x * np.sin(ra0) + y * np.cos(ra0)  # round to ra0
        return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(z))

    return mapping


@pytest.mark.parametrize("deg_per_s", [0.0, 0.02, -0.05])
@pytest.mark.parametrize("lon_edges", [FOV_EDGES, np.array([-3.0, -1.0, 0.2, 0.5, 2.0])], ids=["even", "uneven"])
def test_circle_fractions_equal_the_one_time_at_a_time_computation(deg_per_s, lon_edges):
    regions = ExclusionRegions.from_text(CIRCLES)
    sky = turning_sky(83.63, 22.51, deg_per_s)
    kept = kept_fraction_pixels(lon_edges, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions)
    reference = reference_kept_fraction_pixels(lon_edges, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions)
    assert reference.min() < 0.5 < reference.max()  # the circles take a share of some pixels
    np.testing.assert_allclose(kept, reference, rtol=0, atol=1e-9)


def test_a_mapping_of_all_times_at_once_gives_the_fractions_of_one_time_at_a_time():
    regions = ExclusionRegions.from_text(CIRCLES)
    sky = turning_sky(83.63, 22.51, 0.02)
    at_once = kept_fraction_pixels_times(FOV_EDGES, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions)
    np.testing.assert_allclose(at_once, kept_fraction_pixels(FOV_EDGES, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"sky_of_fov must return \(ra, dec\) of shape \(5, 25\), got \(25,\)"):
        kept_fraction_pixels_times(FOV_EDGES, FOV_EDGES, lambda lon, lat, t: sky(lon, lat, 0.0), TIMES_S, WEIGHTS, regions)


def test_mask_fractions_equal_the_one_time_at_a_time_computation():
    geom = WcsGeom.create(skydir=SkyCoord(83.63, 22.51, unit="deg"), width=6, binsz=0.05, frame="galactic")
    mask = geom.region_mask([CircleSkyRegion(SkyCoord(84.0, 22.2, unit="deg"), 0.8 * u.deg)], inside=False)
    regions = ExclusionRegions.from_mask(mask)
    sky = turning_sky(83.63, 22.51, 0.03)
    kept = kept_fraction_pixels(FOV_EDGES, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions, oversample=12)
    reference = reference_kept_fraction_pixels(FOV_EDGES, FOV_EDGES, sky, TIMES_S, WEIGHTS, regions, oversample=12)
    assert reference.min() < 0.5
    np.testing.assert_allclose(kept, reference, rtol=0, atol=1e-9)


def test_dr1_kept_fractions_equal_the_one_time_at_a_time_computation(hess_store):
    from bkgxr.io.events import index_node_maps
    from bkgxr.masking import kept_fractions, run_regions

    runs = hess_store.select()
    binning = bkgxr.Binning(fov="altaz")
    regions = run_regions(runs, target_radius=DEFAULT_RADIUS_DEG)
    nodes = index_node_maps(runs)
    kept = kept_fractions(runs, binning, regions, nodes=nodes)
    # the regions are placed from the EVENTS header's pointing, as the events' FoV coordinates are
    pointing = [fits.getheader(path, hdu) for path, hdu in zip(runs["EVENTS_PATH"], runs["EVENTS_HDU"], strict=True)]
    header_pointing = runs.assign(RA_PNT=[h["RA_PNT"] for h in pointing], DEC_PNT=[h["DEC_PNT"] for h in pointing])
    reference = reference_kept_fractions(header_pointing, binning, regions, nodes)
    assert np.sum(np.any(reference < 1, axis=(1, 2))) == 60  # every run with a target loses some pixels
    np.testing.assert_allclose(kept, reference, rtol=0, atol=1e-9)


@pytest.fixture
def one_run(sim_store):
    """A simulated run with a 0.4 deg circle 0.5 deg from its pointing, and its file's EVENTS header."""
    runs = sim_store.select().iloc[:1].copy()
    row = runs.iloc[0]
    regions = [ExclusionRegions.from_text(f"{row.RA_PNT + 0.5},{row.DEC_PNT},0.4")]
    with fits.open(row.EVENTS_PATH) as hdul:
        header = hdul[row.EVENTS_HDU].header.copy()
    return runs, regions, header


def test_the_fraction_of_an_astropy_header_equals_kept_fractions(one_run):
    from bkgxr.masking import header_pixel_fraction, kept_fractions

    runs, regions, header = one_run
    binning = bkgxr.Binning(fov="altaz")
    row = runs.iloc[0]
    alone = header_pixel_fraction(header, row.RA_PNT, row.DEC_PNT, binning, regions[0])  # its own nodes
    np.testing.assert_allclose(alone, kept_fractions(runs, binning, regions)[0], rtol=0, atol=1e-12)
    with pytest.raises(KeyError, match="TSTOP"):
        header_pixel_fraction({k: v for k, v in header.items() if k != "TSTOP"}, row.RA_PNT, row.DEC_PNT, binning, regions[0])


def test_a_header_the_fast_reader_leaves_to_astropy_gives_the_same_fractions(one_run, tmp_path):
    from bkgxr.masking import kept_fractions

    runs, regions, header = one_run
    binning = bkgxr.Binning(fov="altaz")
    kept = kept_fractions(runs, binning, regions)
    assert 0 < kept.min() < 0.5
    # the EVENTS keywords on an image HDU: no binary table for the fast reader
    image = fits.ImageHDU(name=runs.iloc[0].EVENTS_HDU)
    for key in ("MJDREFI", "MJDREFF", "TIMESYS", "TSTART", "TSTOP", "GEOLON", "GEOLAT", "ALTITUDE"):
        if key in header:
            image.header[key] = header[key]
    path = tmp_path / "image_events.fits"
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    np.testing.assert_array_equal(kept_fractions(runs.assign(EVENTS_PATH=str(path)), binning, regions), kept)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "file ends inside a FITS header"),
        ("no EVENTS", "no EVENTS HDU"),
        ("no GEOLON", "EVENTS lacks GEOLON"),
        ("not FITS", "not a FITS file"),
    ],
)
def test_a_run_file_without_usable_times_or_site_names_run_and_file(one_run, tmp_path, damage, reason):
    from bkgxr.masking import kept_fractions

    runs, regions, header = one_run
    path = tmp_path / "run_042.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("TIME", "D", array=np.zeros(1))], header=header, name="EVENTS")
    if damage == "no GEOLON":
        del table.header["GEOLON"]
    if damage == "no EVENTS":
        table.name = "OTHER"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:4000])
    if damage == "not FITS":
        path.write_bytes(b"x" * 6000)
    obs_id = int(runs.iloc[0].OBS_ID)
    message = rf"run {obs_id} \(run_042.fits\): cannot place the exclusion regions in the FoV: {reason}"
    with pytest.raises(InvalidRunError, match=message):
        kept_fractions(runs.assign(EVENTS_PATH=str(path)), bkgxr.Binning(fov="altaz"), regions)


@pytest.mark.parametrize("fov", ["offset", "altaz"])
def test_a_damaged_run_with_a_target_is_skipped_not_fatal_and_the_others_keep_their_fractions(sim_store, tmp_path, fov):
    from bkgxr.masking import kept_fractions, run_regions

    runs = sim_store.select().iloc[:4].copy()
    runs["TARGET_NAME"] = "Some source"  # every run excludes a circle around its target
    runs["RA_OBJ"] = runs["RA_PNT"] + 0.5
    good = runs.copy()
    damaged = tmp_path / "damaged.fits.gz"
    damaged.write_bytes(Path(runs["EVENTS_PATH"].iloc[1]).read_bytes()[:5000])
    runs.iloc[1, runs.columns.get_loc("EVENTS_PATH")] = str(damaged)
    binning = bkgxr.Binning(zenith=[0.0, 90.0], fov=fov)
    with pytest.raises(InvalidRunError, match="damaged.fits.gz"):
        bkgxr.build_cube(runs, binning=binning, event_zenith=False).compute(scheduler="sync")
    cube = bkgxr.build_cube(runs, binning=binning, skip_bad=True, event_zenith=False).compute(scheduler="sync")
    assert cube["run_error"].values[1] != "" and list(cube["run_error"].values[[0, 2, 3]]) == ["", "", ""]
    expected = kept_fractions(good, binning, run_regions(good, target_radius=DEFAULT_RADIUS_DEG))
    assert np.all(expected.reshape(4, -1).min(axis=1) < 1)  # each run loses part of its FoV
    np.testing.assert_allclose(cube["run_kept"].values[[0, 2, 3]], expected[[0, 2, 3]], rtol=0, atol=1e-12)
