import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from bkgxr.io._rawfits import Unsupported, read_table_columns


def _write(path, columns, **header):
    hdu = fits.BinTableHDU(Table(columns), name="EVENTS")
    hdu.header.update(header)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"X": [1.0]}), name="OTHER"), hdu]).writeto(path)
    return path


def test_reads_the_same_values_as_astropy_for_every_hess_off_run(hess_runs):
    for path in hess_runs["EVENTS_PATH"]:
        header, columns, units = read_table_columns(path, "EVENTS", ["ENERGY", "RA", "DEC", "NOPE"])
        table = Table.read(path, hdu="EVENTS")
        assert set(columns) == {"ENERGY", "RA", "DEC"}
        for name, values in columns.items():
            np.testing.assert_array_equal(values, np.asarray(table[name], dtype=np.float64))
        assert units == {"ENERGY": "TeV", "RA": "deg", "DEC": "deg"}
        assert header["OBS_ID"] == table.meta["OBS_ID"]


@pytest.mark.parametrize("compress", [False, True])
def test_mixed_column_types_after_other_hdus(tmp_path, compress):
    rng = np.random.default_rng(3)
    cols = {
        "EVENT_ID": np.arange(50, dtype=np.int64),
        "FLAG": rng.integers(0, 2, 50).astype(np.int16),
        "ENERGY": rng.uniform(0.1, 10, 50).astype(np.float32),
        "NAME": np.array(["ab"] * 50),
        "VEC": rng.normal(size=(50, 3)),
        "RA": rng.uniform(0, 360, 50),
    }
    path = _write(tmp_path / "a.fits", cols)
    if compress:
        gz = tmp_path / "a.fits.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path = gz
    _, columns, _ = read_table_columns(path, "events", ["ENERGY", "RA", "FLAG", "EVENT_ID"])
    for name in ("ENERGY", "RA", "FLAG", "EVENT_ID"):
        np.testing.assert_array_equal(columns[name], cols[name].astype(np.float64))


def test_scaled_columns_are_left_to_astropy(tmp_path):
    hdu = fits.BinTableHDU(Table({"ENERGY": np.arange(5, dtype=np.int32)}), name="EVENTS")
    hdu.header["TSCAL1"] = 0.5
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "s.fits")
    with pytest.raises(Unsupported):
        read_table_columns(tmp_path / "s.fits", "EVENTS", ["ENERGY"])


def test_missing_hdu_truncated_and_not_fits(tmp_path, hess_runs):
    path = _write(tmp_path / "a.fits", {"RA": [1.0]})
    with pytest.raises(KeyError):
        read_table_columns(path, "GTI", ["RA"])
    data = Path(hess_runs["EVENTS_PATH"][0]).read_bytes()
    (tmp_path / "t.fits.gz").write_bytes(data[:20000])
    with pytest.raises((EOFError, OSError)):
        read_table_columns(tmp_path / "t.fits.gz", "EVENTS", ["RA"])
    (tmp_path / "n.fits").write_bytes(b"hello world" * 400)
    with pytest.raises(OSError):
        read_table_columns(tmp_path / "n.fits", "EVENTS", ["RA"])


@pytest.mark.parametrize("bits", [["3X"], ["1X", "9X", "16X"]])
def test_bit_columns_take_whole_bytes(tmp_path, bits):
    # rX takes ceil(r / 8) bytes; summing r / 8 put ENERGY a fraction of a byte early: garbage, silently.
    energy = np.arange(1, 6, dtype=np.float32)
    columns = [fits.Column(f"F{i}", form, array=np.ones((5, int(form[:-1])), bool)) for i, form in enumerate(bits)]
    hdu = fits.BinTableHDU.from_columns([*columns, fits.Column("ENERGY", "E", array=energy)], name="EVENTS")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "a.fits")
    _, columns, _ = read_table_columns(tmp_path / "a.fits", "EVENTS", ["ENERGY"])
    np.testing.assert_array_equal(columns["ENERGY"], energy)
