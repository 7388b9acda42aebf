"""GADF index tables: read from a store, checked; written for a model file, the store's rows kept verbatim.

Reading (:func:`find_index`, :func:`read_index`): an index file's declared
size is checked against :data:`MAX_INDEX_BYTES` and the file's real length
before anything is allocated, and its OBS_ID column must hold one integer
per row; a hostile index is one :class:`~bkgxr.StoreError` naming the file.

Writing: a model file is a data store of its own: ``gammapy.data.DataStore.from_file``
reads its ``HDU_INDEX`` and ``OBS_INDEX`` and opens every other HDU through
``FILE_DIR`` relative to the file's folder. So every row of the source store is
copied with all its columns and cells as read (masked cells stay masked, extra
columns such as ``SIZE`` or ``MD5SUM`` are kept), and only ``FILE_DIR`` changes:
re-based from the store's folder to the output's.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/data_storage/hdu_index/index.html
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Column, MaskedColumn, Table, vstack

from ..exceptions import StoreError
from .gadf import DEFAULT_HEADER

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy.typing as npt

    from .store import Store


#: File names of a store's index tables (``.gz`` or not).
INDEX_NAMES = {"hdu": "hdu-index.fits", "obs": "obs-index.fits"}
#: Columns an index table must have.
INDEX_COLUMNS = {"hdu": ("OBS_ID", "HDU_TYPE", "FILE_NAME"), "obs": ("OBS_ID",)}
#: Largest index table read (bytes of table data, 1 GiB: ten million rows of 100 bytes; H.E.S.S.
#: DR1's hdu-index holds 630 rows of 72 bytes); a table declaring more is refused before reading.
MAX_INDEX_BYTES = 2**30


def find_index(root: Path, kind: str) -> Path:
    """Return the path of the ``kind`` ("hdu" or "obs") index file in ``root``, ``.gz`` first.

    Raises
    ------
    StoreError
        If there is none.
    """
    for suffix in (".gz", ""):
        path = root / (INDEX_NAMES[kind] + suffix)
        if path.is_file():
            return path
    raise StoreError(f"no {INDEX_NAMES[kind]}[.gz] in this folder", path=root)


def _check_declared_size(path: Path) -> None:
    """Check the data sizes the primary and first extension headers declare, before anything is allocated.

    Moves through the file (a gzip stream is decompressed in small blocks,
    never held) to the end of each HDU's declared data.

    Raises
    ------
    StoreError
        If a declared size is negative or exceeds :data:`MAX_INDEX_BYTES`, or
        the file ends before the declared data does.
    """
    with open(path, "rb") as probe:
        packed = probe.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if packed else open(path, "rb") as stream:
        for which in ("primary HDU", "index table"):
            header = fits.Header.fromfile(stream)
            naxis = int(header.get("NAXIS", 0))
            counts = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
            counts += [int(header.get("PCOUNT", 0)), int(header.get("GCOUNT", 1))]
            if min(counts) < 0:
                raise StoreError(f"the {which} declares a negative size (NAXISn, PCOUNT, GCOUNT = {counts})", path=path)
            size = abs(int(header.get("BITPIX", 8))) // 8 * counts[-1] * (counts[-2] + math.prod(counts[:-2])) if naxis else 0
            what = f"the {which} declares {size} bytes ({counts[1] if naxis > 1 else 0} rows)"
            if size > MAX_INDEX_BYTES:
                raise StoreError(f"{what}, more than the {MAX_INDEX_BYTES} an index may hold: not read", path=path)
            start = stream.tell()
            if size:
                stream.seek(start + size - 1)
                if stream.read(1) == b"":
                    raise StoreError(f"{what}, but the file ends before them", path=path)
            stream.seek(start + -(-size // 2880) * 2880)


def read_index(path: Path, kind: str) -> Table:
    """Read and check the index table of ``path`` (its first extension).

    Parameters
    ----------
    path : pathlib.Path
        An index file, gzipped or not.
    kind : {"hdu", "obs"}
        Which index it is (the columns it needs, :data:`INDEX_COLUMNS`).

    Returns
    -------
    astropy.table.Table
        Every row as read.

    Raises
    ------
    StoreError
        If the file is unreadable, declares more data than it holds or than
        :data:`MAX_INDEX_BYTES`, lacks a needed column, or its OBS_ID column
        is not one given integer per row.
    """
    try:
        _check_declared_size(path)
        table = Table.read(path, hdu=1)
    except StoreError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, zlib.error) as err:
        detail = str(err) or ("the file ends inside a FITS header" if isinstance(err, EOFError) else type(err).__name__)
        raise StoreError(f"cannot read index table: {detail}", path=path) from err
    missing = [c for c in INDEX_COLUMNS[kind] if c not in table.colnames]
    if missing:
        raise StoreError(f"{kind}-index lacks column(s) {', '.join(missing)}", path=path)
    column = table["OBS_ID"]
    if column.ndim != 1 or column.dtype.kind not in "iu":
        shape = list(column.shape[1:]) or ""
        raise StoreError(f"the OBS_ID column holds {column.dtype.name}{shape}, not one integer per row", path=path)
    masked = int(np.count_nonzero(np.ma.getmaskarray(column)))
    if masked:
        raise StoreError(f"the OBS_ID column has {masked} empty (masked) cell(s)", path=path)
    return table


def _text(column: Column | MaskedColumn) -> npt.NDArray[np.str_]:
    """Return a text column as stripped str, '' where masked."""
    values = np.asarray(column.filled("") if isinstance(column, MaskedColumn) else column)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "ascii", errors="replace")
    return np.char.strip(values.astype(str))


def rebase_dir(file_dir: str, root: Path, out_dir: Path) -> str:
    """Return ``FILE_DIR`` of a row of the store at ``root`` for an index in ``out_dir``.

    A relative (or empty: the store's folder) ``file_dir`` is resolved
    lexically against ``root`` and made relative to ``out_dir``; an absolute
    one is kept as it is.

    Parameters
    ----------
    file_dir : str
        FILE_DIR as read ('' for an empty or masked cell).
    root, out_dir : pathlib.Path
        Absolute folders of the source store and of the output file.

    Returns
    -------
    str
        POSIX path; '.' for ``out_dir`` itself. Absolute when no relative path
        exists (another drive).

    Examples
    --------
    >>> rebase_dir("../data", Path("/a/store"), Path("/a/models"))
    '../data'
    >>> rebase_dir("", Path("/a/store"), Path("/a/models"))
    '../store'
    """
    file_dir = file_dir.strip()
    if os.path.isabs(file_dir):
        return file_dir
    target = os.path.normpath(os.path.join(root, file_dir))
    try:
        return Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # no relative path between drives
        return Path(target).as_posix()


def hdu_index_table(
    store: Store, out: Path, obs_ids: npt.ArrayLike, hdu_names: list[str], *, hdu_class: str = "bkg_2d"
) -> Table:
    """Return the store's HDU index for a file at ``out``, its bkg rows replaced by the models in ``out``.

    Every non-bkg row is kept with all its columns and cells as read; only
    ``FILE_DIR`` is re-based (:func:`rebase_dir`) and unmasked, since an empty
    cell meant the store's folder, not the output's. One bkg row per modelled
    observation follows them; columns the store has beyond the GADF ones
    (``SIZE``, ...) are masked in those rows.

    Parameters
    ----------
    store : Store
        Source store.
    out : pathlib.Path
        Path of the file the index is written to.
    obs_ids : array-like
        Observation IDs. Shape: (n_obs,).
    hdu_names : list of str
        Name of each observation's model HDU in ``out``; '' for none.
    hdu_class : str
        HDU_CLASS of the model HDUs, ``"bkg_2d"`` or ``"bkg_3d"``.

    Returns
    -------
    astropy.table.Table
        Meta: the store's, with the GADF HDU-index keywords.

    Raises
    ------
    ValueError
        If ``obs_ids`` and ``hdu_names`` differ in length.
    """
    obs_ids = np.asarray(obs_ids)
    if obs_ids.shape != (len(hdu_names),):
        raise ValueError(f"{obs_ids.size} obs_ids for {len(hdu_names)} hdu_names")
    table = store.hdu_table.copy(copy_data=True)
    table.convert_bytestring_to_unicode()
    table = table[np.char.lower(_text(table["HDU_TYPE"])) != "bkg"]
    file_dirs = _text(table["FILE_DIR"]) if "FILE_DIR" in table.colnames else np.full(len(table), "")
    out_dir = out.resolve().parent
    cells = file_dirs.tolist()
    by_dir = {d: rebase_dir(d, store.root, out_dir) for d in set(cells)}  # a store has few folders and many rows
    rebased = [by_dir[d] for d in cells]
    old = table.columns.get("FILE_DIR")
    column = Column(rebased, name="FILE_DIR", dtype=str)
    if old is not None:
        column.info.description, column.meta = old.info.description, dict(old.meta)
        table.replace_column("FILE_DIR", column)
    else:
        table.add_column(column, index=min(3, len(table.colnames)))
    given = [i for i, name in enumerate(hdu_names) if name]
    bkg = Table(
        {
            "OBS_ID": obs_ids[given].astype(table["OBS_ID"].dtype),
            "HDU_TYPE": ["bkg"] * len(given),
            "HDU_CLASS": [hdu_class] * len(given),
            "FILE_DIR": ["."] * len(given),
            "FILE_NAME": [out.name] * len(given),
            "HDU_NAME": [hdu_names[i] for i in given],
        }
    )
    merged = vstack([table, bkg], join_type="outer", metadata_conflicts="silent")
    merged.meta = {**store.hdu_table.meta, **DEFAULT_HEADER, "HDUCLAS1": "INDEX", "HDUCLAS2": "HDU"}
    return merged


def obs_index_table(store: Store, extra_columns: Mapping[str, list[object]]) -> Table:
    """Return the store's observation index as read, with ``extra_columns`` added.

    Parameters
    ----------
    store : Store
        Source store; its rows, columns, masks and meta are kept.
    extra_columns : mapping of str to list
        Columns to add (or replace), one value per row of ``store.obs_table``,
        in its row order.

    Returns
    -------
    astropy.table.Table
        Meta: the store's, EXTNAME ``OBS_INDEX``.

    Raises
    ------
    ValueError
        If an extra column's length differs from the number of observations.
    """
    table = store.obs_table.copy(copy_data=True)
    for name, values in extra_columns.items():
        if len(values) != len(table):
            raise ValueError(f"column {name} has {len(values)} values for {len(table)} observations")
        table[name] = values
    table.meta["EXTNAME"] = "OBS_INDEX"
    return table
