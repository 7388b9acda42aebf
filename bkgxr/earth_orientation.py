"""astropy's Earth-orientation table (IERS) without parsing its text files in every process.

bkgxr's Alt/Az computations use the IERS-A and IERS-B tables installed with astropy (no
download). astropy parses them from fixed-width text on the first transformation of each
process, about 1 s, the largest single cost of a ``bkgxr build`` on a few runs. The parsed
table is kept in a binary copy (numpy ``.npz``, no pickles) under :func:`cache_dir`, named by
a digest of astropy's version and of the two files' names, sizes and times, and handed to
astropy (:data:`astropy.utils.iers.earth_orientation_table`) for the duration of
:func:`installed_tables`. Its values are astropy's own, so the transformations are unchanged
(tests/test_earth_orientation.py compares them to the last bit). Without a writable cache the
table is parsed as before.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import astropy
import numpy as np
from astropy.table import MaskedColumn
from astropy.utils import iers

#: Environment variable naming the cache folder (default: ``$XDG_CACHE_HOME/bkgxr`` or ``~/.cache/bkgxr``).
CACHE_ENV = "BKGXR_CACHE"
_META = ("predictive_index", "predictive_mjd", "data_path", "readme_path")


def cache_dir() -> Path:
    """Return the folder of bkgxr's caches (:data:`CACHE_ENV`, else the XDG cache folder)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bkgxr"


def _cache_path() -> Path:
    """Return the cache file of the installed tables: a digest of astropy's version and the files' state."""
    parts = [astropy.__version__]
    for name in (iers.IERS_A_FILE, iers.IERS_B_FILE):
        stat = os.stat(name)
        parts += [str(name), str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / f"iers-{digest}.npz"


@contextmanager
def _installed_files_only() -> Iterator[None]:
    """Within the block, astropy neither downloads IERS tables nor checks their age."""
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        yield


def _bundled_table() -> iers.IERS_Auto:
    """Return astropy's table from the installed files (IERS-A with IERS-B substituted), as astropy reads it."""
    with _installed_files_only():
        return iers.IERS_Auto.open()


def _save(table: iers.IERS_Auto, path: Path) -> None:
    """Write the table's columns (values, units, masks) and meta to ``path``, atomically."""
    arrays: dict[str, Any] = {"names": np.array(table.colnames)}
    for i, name in enumerate(table.colnames):
        column = table[name]
        arrays[f"c{i}"] = np.asarray(getattr(column, "value", column))
        arrays[f"u{i}"] = np.array("" if getattr(column, "unit", None) is None else column.unit.to_string())
        if isinstance(column, MaskedColumn):
            arrays[f"m{i}"] = np.asarray(column.mask)
    for key in _META:
        arrays[f"meta_{key}"] = np.array(table.meta[key])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False) as part:
        try:
            np.savez(part, **arrays)
        except BaseException:
            os.unlink(part.name)  # a full disk leaves no partial cache file
            raise
    os.replace(part.name, path)


def _load(path: Path) -> iers.IERS_Auto:
    """Return the table written by :func:`_save`."""
    import astropy.units as u

    with np.load(path, allow_pickle=False) as data:
        columns: list[Any] = []
        names = [str(n) for n in data["names"]]
        for i, name in enumerate(names):
            values, unit = data[f"c{i}"], str(data[f"u{i}"])
            if f"m{i}" in data:
                columns.append(MaskedColumn(values, name=name, mask=data[f"m{i}"]))
            else:
                columns.append(values * u.Unit(unit) if unit else values)
        meta = {key: data[f"meta_{key}"].item() for key in _META}
    return iers.IERS_Auto(columns, names=names, meta=meta)


def bundled_table() -> iers.IERS_Auto:
    """Return astropy's Earth-orientation table of the installed files, from the cache when it holds it.

    A missing or unreadable cache file is written anew; a folder that cannot be
    written leaves the table parsed by astropy.
    """
    try:
        path = _cache_path()
    except OSError:
        return _bundled_table()
    try:
        return _load(path)
    except (OSError, KeyError, ValueError):
        pass
    table = _bundled_table()
    try:
        _save(table, path)
    except OSError:
        pass
    return table


@functools.cache
def process_table() -> iers.IERS_Auto:
    """Return :func:`bundled_table`, read once per process."""
    return bundled_table()


@contextmanager
def installed_tables() -> Iterator[None]:
    """Within the block, astropy uses the installed Earth-orientation tables only (no download, no age check).

    The table is :func:`process_table`.
    """
    with _installed_files_only(), iers.earth_orientation_table.set(process_table()):
        yield
