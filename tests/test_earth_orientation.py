"""The cached Earth-orientation table is astropy's own: same columns, same transformations."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from bkgxr import earth_orientation


def _astropys_table():
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        return iers.IERS_Auto.open()


def _assert_same_table(got, expected):
    assert type(got) is type(expected) and got.colnames == expected.colnames
    for name in expected.colnames:
        a, b = expected[name], got[name]
        assert type(a) is type(b) and getattr(a, "unit", None) == getattr(b, "unit", None), name
        values = np.asarray(getattr(a, "value", a))
        np.testing.assert_array_equal(np.asarray(getattr(b, "value", b)), values)  # NaNs compare equal here
        if hasattr(a, "mask"):
            np.testing.assert_array_equal(b.mask, a.mask)
    assert {k: got.meta[k] for k in earth_orientation._META} == {k: expected.meta[k] for k in earth_orientation._META}


def test_cached_table_is_astropys_and_is_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(earth_orientation.CACHE_ENV, str(tmp_path / "cache"))
    expected = _astropys_table()
    first = earth_orientation.bundled_table()  # parsed by astropy, then written
    (path,) = (tmp_path / "cache").glob("iers-*.npz")
    _assert_same_table(first, expected)
    monkeypatch.setattr(earth_orientation, "_bundled_table", lambda: pytest.fail("parsed again"))
    _assert_same_table(earth_orientation.bundled_table(), expected)
    path.write_bytes(b"not a numpy file")  # a damaged cache is written anew
    monkeypatch.undo()
    monkeypatch.setenv(earth_orientation.CACHE_ENV, str(tmp_path / "cache"))
    _assert_same_table(earth_orientation.bundled_table(), expected)
    _assert_same_table(earth_orientation._load(path), expected)


def test_a_cache_that_cannot_be_written_leaves_astropys_parsed_table(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv(earth_orientation.CACHE_ENV, str(blocker / "cache"))
    _assert_same_table(earth_orientation.bundled_table(), _astropys_table())


def test_transformations_with_the_cached_table_are_astropys_to_the_last_bit(tmp_path, monkeypatch):
    monkeypatch.setenv(earth_orientation.CACHE_ENV, str(tmp_path))
    earth_orientation.bundled_table()
    (path,) = tmp_path.glob("iers-*.npz")
    rng = np.random.default_rng(2)
    n = 500
    times = Time(53005.0 + rng.uniform(0, 8000, n), format="mjd", scale="tt")  # 2004 to 2025
    sky = SkyCoord(rng.uniform(0, 360, n) * u.deg, np.degrees(np.arcsin(rng.uniform(-1, 1, n))) * u.deg)
    frame = AltAz(obstime=times, location=EarthLocation.from_geodetic(16.5 * u.deg, -23.27 * u.deg, 1800 * u.m))
    with iers.earth_orientation_table.set(earth_orientation._load(path)):
        ours = sky.transform_to(frame)
    with iers.earth_orientation_table.set(_astropys_table()):
        theirs = sky.transform_to(frame)
    np.testing.assert_array_equal(ours.az.deg, theirs.az.deg)
    np.testing.assert_array_equal(ours.alt.deg, theirs.alt.deg)


def test_installed_tables_hand_astropy_the_table_without_downloads():
    before = iers.earth_orientation_table.get()
    with earth_orientation.installed_tables():
        assert iers.earth_orientation_table.get() is earth_orientation.process_table()
        assert not iers.conf.auto_download and iers.conf.auto_max_age is None
    assert iers.earth_orientation_table.get() is before


def test_a_failed_cache_write_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv(earth_orientation.CACHE_ENV, str(tmp_path))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(earth_orientation.np, "savez", full_disk)
    _assert_same_table(earth_orientation.bundled_table(), _astropys_table())
    assert list(tmp_path.iterdir()) == []
