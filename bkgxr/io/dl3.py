"""Write GADF DL3 run files and the index tables of a data store.

One gzipped file per run holds, in order: a primary HDU, ``EVENTS``, ``GTI``,
``AEFF`` (``AEFF_2D``), ``EDISP`` (``EDISP_2D``) and ``PSF`` (``PSF_TABLE``);
:data:`RUN_HDUS` lists them with the HDU_TYPE and HDU_CLASS of their rows in
``hdu-index.fits.gz``, so that ``gammapy.data.DataStore.from_dir(store)``
loads events, GTI, effective area, energy dispersion and PSF of every
observation. ``obs-index.fits.gz`` holds one row per run. This module only
lays out values computed elsewhere (:mod:`bkgxr.simulate`); gzip output is
written with mtime 0, so the same values give the same bytes.

Specs: https://gamma-astro-data-formats.readthedocs.io/en/latest/events/ and
.../irfs/full_enclosure/ (aeff/aeff_2d, edisp/edisp_2d, psf/psf_table) and
.../data_storage/ (hdu_index, obs_index).
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..units import ANGLE_UNIT, ENERGY_UNIT
from .gadf import DEFAULT_HEADER

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    import numpy.typing as npt
    import pandas as pd

#: EVENTS columns written: name, TFORM (as in the H.E.S.S. release), TUNIT.
EVENT_COLUMNS = (("EVENT_ID", "K", None), ("TIME", "D", "s"), ("RA", "E", "deg"), ("DEC", "E", "deg"), ("ENERGY", "E", "TeV"))
#: HDUs of a run file after the primary: EXTNAME, HDU_TYPE and HDU_CLASS of its hdu-index row.
RUN_HDUS = (("EVENTS", "events", "events"), ("GTI", "gti", "gti"), ("AEFF", "aeff", "aeff_2d"),
            ("EDISP", "edisp", "edisp_2d"), ("PSF", "psf", "psf_table"))
#: Unit of the effective area and of the PSF density, as written to TUNIT.
AREA_UNIT, PSF_UNIT = "m2", "sr-1"
#: An empty primary HDU as it lies in a file: the start of every run file.
_PRIMARY = fits.PrimaryHDU().header.tostring().encode("ascii")


def write_gz(hdul: fits.HDUList | bytes, path: Path, level: int) -> None:
    """Write ``hdul`` (or the bytes of a FITS file) gzipped at ``level`` (at most 3), atomically, reproducibly.

    ISA-L compresses when installed (else zlib); the gzip mtime is 0. The
    bytes go to a hidden ``.part`` file beside ``path``, renamed into place.
    """
    if isinstance(hdul, fits.HDUList):
        buffer = io.BytesIO()
        hdul.writeto(buffer, checksum=False)
        hdul = buffer.getvalue()
    compress: Callable[..., bytes] = gzip.compress  # isal is optional at run time: plain zlib
    try:
        from isal.igzip import compress
    except ImportError:
        pass
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(compress(hdul, min(level, 3), mtime=0))
    os.replace(tmp, path)


def _header(cards: Mapping[str, Any], comments: Iterable[str] = ()) -> fits.Header:
    header = fits.Header({**DEFAULT_HEADER, **cards})
    for text in comments:
        header.add_comment(text)
    return header


def create_events_hdu(columns: Mapping[str, npt.NDArray[Any]], header: Mapping[str, Any]) -> fits.BinTableHDU:
    """Create an ``EVENTS`` HDU of the :data:`EVENT_COLUMNS`.

    Parameters
    ----------
    columns : mapping of str to numpy.ndarray
        EVENT_ID, TIME (s since MJDREF), RA, DEC (deg) and ENERGY (TeV);
        other keys are ignored. Shape: (n_events,) each.
    header : mapping
        Keywords of the run (OBS_ID, times, pointing, observatory, ...).
    """
    return fits.BinTableHDU.from_columns(
        [fits.Column(name, form, unit=unit, array=columns[name]) for name, form, unit in EVENT_COLUMNS],
        header=_header({"HDUCLAS1": "EVENTS", **header}), name="EVENTS",
    )


def create_gti_hdu(start: npt.ArrayLike, stop: npt.ArrayLike, header: Mapping[str, Any]) -> fits.BinTableHDU:
    """Create a ``GTI`` HDU from interval starts and stops (s since MJDREF). Shape: (n_intervals,)."""
    return fits.BinTableHDU.from_columns(
        [fits.Column(name, "D", unit="s", array=np.atleast_1d(np.asarray(values, dtype=np.float64)))
         for name, values in (("START", start), ("STOP", stop))],
        header=_header({"HDUCLAS1": "GTI", **header}), name="GTI",
    )


def _edge_columns(**edges: tuple[npt.ArrayLike, str | None]) -> list[fits.Column]:
    """``<NAME>_LO``/``<NAME>_HI`` columns, one row, from edges (unit or None)."""
    columns = []
    for name, (values, unit) in edges.items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size < 2 or np.any(np.diff(array) <= 0):
            raise ValueError(f"{name} edges must be increasing, 1-D, with >= 2 values; got {array}")
        for side, part in (("LO", array[:-1]), ("HI", array[1:])):
            columns.append(fits.Column(f"{name}_{side}", f"{part.size}D", unit=unit, array=part[None]))
    return columns


def _data_column(name: str, data: npt.ArrayLike, shape: tuple[int, ...], unit: str | None) -> fits.Column:
    """One-row column of ``data`` given in numpy order (energy first, as gammapy's axes).

    FITS stores the last numpy axis fastest: the array is written with its
    axes reversed, so TDIM lists energy first, as in gammapy's ``IRF.to_table``.
    """
    array = np.asarray(data, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}; the edges need {shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"refusing to write a non-finite or negative {name}")
    dim = "(" + ",".join(str(n) for n in shape) + ")"
    return fits.Column(name, f"{array.size}D", unit=unit, dim=dim, array=array.T[None])


def _response_hdu(
    extname: str,
    hduclas: tuple[str, str],
    edges: Mapping[str, tuple[npt.ArrayLike, str | None]],
    data: tuple[str, npt.ArrayLike, str | None],
    meta: Mapping[str, Any] | None,
    comments: Sequence[str],
) -> fits.BinTableHDU:
    """Build a full-enclosure IRF HDU: edge columns, one data column of their shape, HDUCLAS2/4 ``hduclas``."""
    columns = _edge_columns(**edges)
    shape = tuple(column.array.shape[1] for column in columns[::2])
    name, values, unit = data
    cards = {"HDUCLAS1": "RESPONSE", "HDUCLAS2": hduclas[0], "HDUCLAS3": "FULL-ENCLOSURE", "HDUCLAS4": hduclas[1], **(meta or {})}
    return fits.BinTableHDU.from_columns([*columns, _data_column(name, values, shape, unit)], header=_header(cards, comments), name=extname)


def create_aeff_2d_hdu(
    area_m2: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    *,
    meta: Mapping[str, Any] | None = None,
    comments: Sequence[str] = (),
) -> fits.BinTableHDU:
    """Create an ``AEFF_2D`` HDU named ``AEFF``.

    Parameters
    ----------
    area_m2 : array-like
        Effective area (m2) at the bin centres. Shape: (n_energy, n_offset).
    energy_edges : array-like
        True energy edges (TeV). Shape: (n_energy + 1,).
    offset_edges : array-like
        Offset edges (deg). Shape: (n_offset + 1,).
    meta : mapping, optional
        Further keywords, e.g. LO_THRES and HI_THRES (TeV), which gammapy's
        ``SafeMaskMaker(methods=["aeff-default"])`` reads.
    comments : sequence of str
        COMMENT cards saying how the values were made.

    Raises
    ------
    ValueError
        If edges are not increasing or the area is not finite, non-negative, of the edges' shape.
    """
    edges = {"ENERG": (energy_edges, str(ENERGY_UNIT)), "THETA": (offset_edges, str(ANGLE_UNIT))}
    return _response_hdu("AEFF", ("EFF_AREA", "AEFF_2D"), edges, ("EFFAREA", area_m2, AREA_UNIT), meta, comments)


def create_edisp_2d_hdu(
    matrix: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    migra_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    *,
    meta: Mapping[str, Any] | None = None,
    comments: Sequence[str] = (),
) -> fits.BinTableHDU:
    """Create an ``EDISP_2D`` HDU named ``EDISP``.

    Parameters
    ----------
    matrix : array-like
        Probability density dP/dmigra of migra = E_reco / E_true (dimensionless).
        Shape: (n_energy, n_migra, n_offset).
    energy_edges, migra_edges, offset_edges : array-like
        True energy (TeV), migra and offset (deg) edges.
    meta, comments
        As in :func:`create_aeff_2d_hdu`.

    Raises
    ------
    ValueError
        If edges are not increasing or the matrix is not finite, non-negative, of the edges' shape.
    """
    edges = {"ENERG": (energy_edges, str(ENERGY_UNIT)), "MIGRA": (migra_edges, None), "THETA": (offset_edges, str(ANGLE_UNIT))}
    return _response_hdu("EDISP", ("EDISP", "EDISP_2D"), edges, ("MATRIX", matrix, None), meta, comments)


def create_psf_table_hdu(
    rpsf_sr: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    rad_edges: npt.ArrayLike,
    *,
    meta: Mapping[str, Any] | None = None,
    comments: Sequence[str] = (),
) -> fits.BinTableHDU:
    """Create a ``PSF_TABLE`` HDU named ``PSF``.

    Parameters
    ----------
    rpsf_sr : array-like
        PSF density dP/dOmega (sr-1) at the bin centres. Shape: (n_energy, n_offset, n_rad).
    energy_edges, offset_edges, rad_edges : array-like
        True energy (TeV), offset (deg) and angular distance to the true direction (deg) edges.
    meta, comments
        As in :func:`create_aeff_2d_hdu`.

    Raises
    ------
    ValueError
        If edges are not increasing or the density is not finite, non-negative, of the edges' shape.
    """
    edges = {"ENERG": (energy_edges, str(ENERGY_UNIT)), "THETA": (offset_edges, str(ANGLE_UNIT)), "RAD": (rad_edges, str(ANGLE_UNIT))}
    return _response_hdu("PSF", ("RPSF", "PSF_TABLE"), edges, ("RPSF", rpsf_sr, PSF_UNIT), meta, comments)


class HduBytes(NamedTuple):
    """An extension HDU as it lies in a file: header and padded data, to reuse in many files."""

    name: str  #: EXTNAME
    data: bytes  #: header and data blocks, a multiple of 2880 bytes


def _lay_out(hdus: Sequence[fits.BinTableHDU]) -> list[HduBytes]:
    """Lay out extension HDUs as in a file: one astropy write, cut at each HDU's size."""
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(buffer, checksum=False)
    raw, start, laid_out = buffer.getvalue(), len(_PRIMARY), []
    for hdu in hdus:  # header blocks, then NAXIS1 x NAXIS2 + PCOUNT bytes of data padded to 2880-byte blocks
        size = len(hdu.header.tostring()) - (-(hdu.header["NAXIS1"] * hdu.header["NAXIS2"] + hdu.header["PCOUNT"]) // 2880) * 2880
        laid_out.append(HduBytes(hdu.name, raw[start:start + size]))
        start += size
    if start != len(raw):
        raise ValueError(f"laid out {start} bytes of {len(raw)}: HDU sizes do not add up")
    return laid_out


def to_bytes(hdu: fits.BinTableHDU) -> HduBytes:
    """Lay out one extension HDU as in a file (astropy writes it; no checksum)."""
    return _lay_out([hdu])[0]


def write_run(path: Path, hdus: Sequence[fits.BinTableHDU | HduBytes], *, level: int = 1) -> list[int]:
    """Write one run file of the :data:`RUN_HDUS`, in that order, gzipped; return each HDU's size (bytes).

    HDUs shared by many runs (the same IRF everywhere) can be given as
    :class:`HduBytes`, laid out once by :func:`to_bytes`.

    Raises
    ------
    ValueError
        If the HDUs are not named as :data:`RUN_HDUS`, in order.
    """
    fresh = iter(_lay_out([hdu for hdu in hdus if not isinstance(hdu, HduBytes)]))
    laid_out = [hdu if isinstance(hdu, HduBytes) else next(fresh) for hdu in hdus]
    names = [hdu.name for hdu in laid_out]
    if names != [name for name, _, _ in RUN_HDUS]:
        raise ValueError(f"{path.name}: a run file holds {[n for n, _, _ in RUN_HDUS]}, got {names}")
    write_gz(b"".join([_PRIMARY, *(hdu.data for hdu in laid_out)]), path, level)
    return [len(hdu.data) for hdu in laid_out]


def hdu_index(obs_ids: npt.ArrayLike, file_names: Sequence[str], sizes: npt.ArrayLike, *, file_dir: str = "data") -> Table:
    """Return the ``HDU_INDEX`` table of run files written by :func:`write_run`.

    Parameters
    ----------
    obs_ids : array-like of int
        Shape: (n_runs,).
    file_names : sequence of str
        Each run's file name inside ``file_dir``.
    sizes : array-like of int
        HDU sizes (bytes) as :func:`write_run` returns them. Shape: (n_runs, len(RUN_HDUS)).
    file_dir : str
        Folder of the run files, relative to the index.
    """
    n_runs, n_hdus = len(file_names), len(RUN_HDUS)
    extname, hdu_type, hdu_class = (list(column) * n_runs for column in zip(*RUN_HDUS, strict=True))
    return Table(
        {"OBS_ID": np.repeat(np.asarray(obs_ids, dtype=np.int64), n_hdus), "HDU_TYPE": hdu_type, "HDU_CLASS": hdu_class,
         "FILE_DIR": [file_dir] * (n_hdus * n_runs), "FILE_NAME": np.repeat(list(file_names), n_hdus), "HDU_NAME": extname,
         "SIZE": np.asarray(sizes, dtype=np.int64).reshape(n_runs * n_hdus)},
        meta={**DEFAULT_HEADER, "HDUCLAS1": "INDEX", "HDUCLAS2": "HDU", "EXTNAME": "HDU_INDEX"},
    )


def obs_index(runs: pd.DataFrame, meta: Mapping[str, Any], units: Mapping[str, str]) -> Table:
    """Return the ``OBS_INDEX`` table: one row per run, ``units`` as TUNIT, ``meta`` in the header."""
    table = Table.from_pandas(runs, units={name: unit for name, unit in units.items() if name in runs})
    table.meta.update({**DEFAULT_HEADER, "HDUCLAS1": "INDEX", "HDUCLAS2": "OBS", "EXTNAME": "OBS_INDEX", **meta})
    return table


def write_index_tables(root: Path, hdu: Table, obs: Table) -> None:
    """Write ``hdu-index.fits.gz`` and ``obs-index.fits.gz`` into the store folder ``root``."""
    for name, table in (("hdu-index.fits.gz", hdu), ("obs-index.fits.gz", obs)):
        write_gz(fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]), root / name, 3)
