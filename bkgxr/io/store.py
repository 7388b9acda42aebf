"""GADF data store: index tables in, run table out.

A store is the folder of ``hdu-index.fits[.gz]`` and ``obs-index.fits[.gz]``.
:func:`open_store` reads both; :meth:`Store.select` turns a query on the
observation table into a *run table*: one row per selected run with the
columns the engine needs (``OBS_ID``, ``RA_PNT``, ``DEC_PNT``, ``ZEN_PNT``,
``ONTIME``, ``LIVETIME``, ``EVENTS_PATH``, ``EVENTS_HDU``), filled from the EVENTS header
where the observation index lacks them, and ``PNT_SOURCE``, where the read
task takes the pointing from (:mod:`bkgxr.io.events`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from ..exceptions import EmptySelectionError, InvalidRunError, StoreError
from ..pointing import mean_zenith
from .events import PNT_HEADER, PNT_HEADER_ELSE_INDEX
from .selection import select_rows

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Columns of a run table that the engine reads; all other obs-index columns are kept too.
RUN_COLUMNS = (
    "OBS_ID", "RA_PNT", "DEC_PNT", "ZEN_PNT", "ONTIME", "LIVETIME", "EVENTS_PATH", "EVENTS_HDU", "GTI_HDU", "PNT_SOURCE"
)

#: Query the tutorial uses to select off runs, applied when the column exists.
OFF_QUERY = 'TARGET_NAME == "Off data"'

_INDEX_NAMES = {"hdu": "hdu-index.fits", "obs": "obs-index.fits"}


def _find_index(root: Path, kind: str) -> Path:
    for suffix in (".gz", ""):
        path = root / (_INDEX_NAMES[kind] + suffix)
        if path.is_file():
            return path
    raise StoreError(f"no {_INDEX_NAMES[kind]}[.gz] in this folder", path=root)


def _read_table(path: Path, hdu: int | str = 1) -> Table:
    try:
        return Table.read(path, hdu=hdu)
    except (OSError, ValueError, KeyError, IndexError, EOFError) as err:
        raise StoreError(f"cannot read index table: {err}", path=path) from err


def _decode(table: Table) -> pd.DataFrame:
    """Return the scalar columns of ``table`` as a DataFrame with stripped str, not bytes.

    Masked strings become ''; masked numbers NaN (astropy's ``to_pandas``).
    """
    names = [n for n in table.colnames if table[n].ndim == 1]
    text = [n for n in names if table[n].dtype.kind in "SU"]
    frame = table[[n for n in names if n not in text]].to_pandas()
    for name in text:
        column = table[name]
        values = np.asarray(column.filled("") if hasattr(column, "filled") else column)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "ascii", errors="replace")
        frame[name] = np.char.strip(values).astype(object)
    return frame[names]


@dataclass(frozen=True, eq=False)  # identity: a store is its index tables as read
class Store:
    """A GADF DL3 data store: its folder and its two index tables.

    Attributes
    ----------
    root : pathlib.Path
        Folder of the index files; ``FILE_DIR`` is relative to it.
    hdu_table : astropy.table.Table
        The HDU index, every row as read.
    obs_table : astropy.table.Table
        The observation index, every row as read.
    """

    root: Path
    hdu_table: Table
    obs_table: Table

    @property
    def obs(self) -> pd.DataFrame:
        """The observation index as a DataFrame (scalar columns, strings decoded)."""
        return self._decoded("obs").copy()

    @property
    def hdus(self) -> pd.DataFrame:
        """The HDU index as a DataFrame (scalar columns, strings decoded)."""
        return self._decoded("hdu").copy()

    @functools.cache  # noqa: B019 - a store is immutable and lives as long as its tables
    def _decoded(self, which: str) -> pd.DataFrame:
        return _decode(self.obs_table if which == "obs" else self.hdu_table)

    def file_path(self, row: pd.Series) -> Path:
        """Return the path of the file an HDU-index row points to."""
        file_dir = row.get("FILE_DIR", "")
        file_dir = "" if file_dir is None or pd.isna(file_dir) else str(file_dir)
        return Path(self.file_paths([file_dir], [str(row["FILE_NAME"])])[0])

    def file_paths(self, file_dirs: Iterable[str], file_names: Iterable[str]) -> list[str]:
        """Return the normalised absolute paths of files given by FILE_DIR and FILE_NAME.

        ``..`` is resolved lexically (no file system access), so thousands of
        rows cost no system calls.
        """
        root = str(self.root)
        return [
            os.path.normpath(os.path.join(root, str(d).strip(), str(n).strip()))
            for d, n in zip(file_dirs, file_names, strict=True)
        ]

    def files(self) -> set[Path]:
        """Return every file of the store, symlinks resolved: its two index files and each file the HDU index names."""
        hdus = self.hdus
        dirs = hdus["FILE_DIR"] if "FILE_DIR" in hdus else [""] * len(hdus)
        paths = {*self.file_paths(dirs, hdus["FILE_NAME"]), str(_find_index(self.root, "hdu")), str(_find_index(self.root, "obs"))}
        return {Path(os.path.realpath(p)) for p in paths}

    def select(
        self,
        query: str | None = None,
        *,
        obs_ids: Iterable[int] | None = None,
        zenith: tuple[float, float] | None = None,
        skip_bad: bool = False,
    ) -> pd.DataFrame:
        """Select runs and return their run table.

        Parameters
        ----------
        query : str, optional
            A selection on the observation index in the language of
            :mod:`bkgxr.io.selection` (column names, literals, comparisons,
            ``in``, ``and``/``or``/``not``), e.g. ``'TARGET_NAME == "Off data"'``
            (see :data:`OFF_QUERY`). ``None`` keeps every run.
        obs_ids : iterable of int, optional
            Keep only these observations.
        zenith : (float, float), optional
            Keep runs with ``lo <= ZEN_PNT < hi`` (deg).
        skip_bad : bool
            Keep runs that cannot be used, with the reason in their ``ERROR``
            column, instead of raising; :func:`bkgxr.build_cube` leaves them out.

        Returns
        -------
        pandas.DataFrame
            One row per run, sorted by ``OBS_ID``, with every obs-index column
            plus :data:`RUN_COLUMNS` and ``ERROR`` ('' for a usable run).
            ``RA_PNT``/``DEC_PNT`` are the obs-index's where it has them; the
            events are binned around the EVENTS header's pointing when it has
            one, and ``PNT_SOURCE`` says so: ``"EVENTS header"`` where the
            obs-index lacks the pointing (it was read from the header here),
            ``"EVENTS header, else obs-index"`` where the header is read only
            by the read task, '' for an unusable run. ``attrs["OBS_META"]``
            holds the obs-index header (MJDREF, observatory), which 3D reads
            use to map every run's events from one astropy call.

        Raises
        ------
        EmptySelectionError
            If no run is selected.
        InvalidRunError
            If a selected run has no events file or lacks a needed keyword.
        """
        frame = self.obs
        if query is not None:
            frame = select_rows(frame, query)  # parsed, never evaluated: no code runs from a query
        if obs_ids is not None:
            frame = frame[frame["OBS_ID"].isin(list(obs_ids))]
        frame = _complete(self, frame.sort_values("OBS_ID").reset_index(drop=True), skip_bad=skip_bad)
        frame.attrs["OBS_META"] = dict(self.obs_table.meta)  # MJDREF and site for 3D reads (bkgxr.io.events)
        if zenith is not None:
            lo, hi = zenith
            frame = frame[(frame["ZEN_PNT"] >= lo) & (frame["ZEN_PNT"] < hi) | (frame["ERROR"] != "")]
        if frame.empty:
            raise EmptySelectionError(
                f"no run of {self.root} matches query={query!r}, obs_ids={obs_ids!r}, "
                f"zenith={zenith!r}"
            )
        return frame.reset_index(drop=True)


def open_store(path: str | Path) -> Store:
    """Open a GADF data store: read its HDU and observation index tables.

    Parameters
    ----------
    path : str or pathlib.Path
        Folder holding ``hdu-index.fits[.gz]`` and ``obs-index.fits[.gz]``.

    Returns
    -------
    Store

    Raises
    ------
    StoreError
        If an index is missing or unreadable, or an OBS_ID repeats.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        # "$GAMMAPY_DATA/hess-dl3-dr1" with the variable unset reaches us as "/hess-dl3-dr1"
        unset = Path(path).parent == Path("/") and not os.environ.get("GAMMAPY_DATA")
        raise StoreError("not a folder" + (" (GAMMAPY_DATA is not set: export it, see the README)" if unset else ""), path=root)
    hdu_table = _read_table(_find_index(root, "hdu"))
    obs_path = _find_index(root, "obs")
    obs_table = _read_table(obs_path)
    for name, table in (("hdu", hdu_table), ("obs", obs_table)):
        needed = {"hdu": ("OBS_ID", "HDU_TYPE", "FILE_NAME"), "obs": ("OBS_ID",)}[name]
        missing = [c for c in needed if c not in table.colnames]
        if missing:
            raise StoreError(f"{name}-index lacks column(s) {', '.join(missing)}", path=root)
    ids, counts = np.unique(np.asarray(obs_table["OBS_ID"]), return_counts=True)
    if np.any(counts > 1):
        raise StoreError(f"duplicate OBS_ID in the obs-index: {ids[counts > 1].tolist()}", path=obs_path)
    return Store(root=root, hdu_table=hdu_table, obs_table=obs_table)


def hdu_locations(store: Store, hdu_type: str) -> pd.DataFrame:
    """Return OBS_ID, path and HDU name of every ``hdu_type`` row of the HDU index."""
    hdus = store.hdus
    rows = hdus[hdus["HDU_TYPE"].str.lower() == hdu_type]
    if rows["OBS_ID"].duplicated().any():
        dup = rows.loc[rows["OBS_ID"].duplicated(), "OBS_ID"].tolist()
        raise StoreError(f"hdu-index has several {hdu_type} rows for OBS_ID {dup}", path=store.root)
    names = rows["HDU_NAME"] if "HDU_NAME" in rows else pd.Series("", index=rows.index)
    key = hdu_type.upper()
    return pd.DataFrame(
        {
            "OBS_ID": rows["OBS_ID"].to_numpy(),
            f"{key}_PATH": store.file_paths(
                rows["FILE_DIR"] if "FILE_DIR" in rows else [""] * len(rows), rows["FILE_NAME"]
            ),
            f"{key}_HDU": [n.strip() or key for n in names.astype(str)],
        }
    )


def _complete(store: Store, frame: pd.DataFrame, *, skip_bad: bool) -> pd.DataFrame:
    """Add file locations, fill needed values from EVENTS headers and check them.

    Adds ``ERROR``: '' for a usable run, else why it cannot be used (only
    with ``skip_bad``; otherwise the first bad run raises); and ``PNT_SOURCE``.
    """
    for hdu_type in ("events", "gti"):
        frame = frame.merge(hdu_locations(store, hdu_type), on="OBS_ID", how="left")
    indexed = frame.reindex(columns=["RA_PNT", "DEC_PNT"]).apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    values, errors = [], []
    for _, row in frame.iterrows():
        try:
            values.append(run_values(row))
            errors.append("")
        except InvalidRunError as err:
            if not skip_bad:
                raise
            values.append(dict.fromkeys(NEEDED, np.nan))
            errors.append(err.reason)
    filled = pd.DataFrame(values, index=frame.index, columns=list(NEEDED), dtype=np.float64)
    for column in NEEDED:
        frame[column] = filled[column]
    # The GTI HDU is checked while reading the events when it lives in the same file.
    same = frame["GTI_PATH"] == frame["EVENTS_PATH"]
    frame["GTI_HDU"] = frame["GTI_HDU"].where(same, "")
    frame["ERROR"] = errors
    source = np.where(indexed.to_numpy(), PNT_HEADER_ELSE_INDEX, PNT_HEADER)
    frame["PNT_SOURCE"] = np.where(np.asarray(errors) == "", source, "").astype(object)
    return frame


#: Per-run values the engine needs, from the obs-index or else the EVENTS header.
NEEDED = ("RA_PNT", "DEC_PNT", "ZEN_PNT", "LIVETIME", "ONTIME")


def _given(row: pd.Series, name: str) -> float | None:
    value = row.get(name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


def run_values(row: pd.Series) -> dict[str, float]:
    """Return and check pointing, zenith, livetime and observation time of one run-table row.

    Values missing from the obs-index are read from the EVENTS header: RA_PNT,
    DEC_PNT, LIVETIME, ONTIME, and ZEN_PNT (else 90 - ALT_PNT, else computed from the
    pointing, the run times and the observatory location).

    Raises
    ------
    InvalidRunError
        If a file is missing, a value cannot be found, LIVETIME or ONTIME is
        not positive and finite, or LIVETIME exceeds ONTIME.
    """
    obs_id = int(row["OBS_ID"])
    path = row.get("EVENTS_PATH")
    if not isinstance(path, str):
        raise InvalidRunError(obs_id, None, "the hdu-index has no events row")
    path = Path(path)
    if not path.is_file():
        raise InvalidRunError(obs_id, path, "file not found")
    gti = row.get("GTI_PATH")
    if not isinstance(gti, str):
        raise InvalidRunError(obs_id, path, "the hdu-index has no gti row")
    if not Path(gti).is_file():
        raise InvalidRunError(obs_id, path, f"GTI file {gti} not found")
    values = {name: _given(row, name) for name in NEEDED}
    if values["ZEN_PNT"] is None and _given(row, "ALT_PNT") is not None:
        values["ZEN_PNT"] = 90.0 - float(row["ALT_PNT"])
    if any(v is None for v in values.values()):
        values = _from_header(obs_id, path, str(row["EVENTS_HDU"]), values)
    found = cast("dict[str, float]", values)  # _from_header filled every None or raised
    for name in ("LIVETIME", "ONTIME"):
        if not (np.isfinite(found[name]) and found[name] > 0):
            raise InvalidRunError(obs_id, path, f"{name} is {found[name]} s; it must be positive")
    if found["LIVETIME"] > found["ONTIME"] * (1 + 1e-6):
        raise InvalidRunError(obs_id, path, f"LIVETIME {found['LIVETIME']} s exceeds ONTIME {found['ONTIME']} s")
    for name in ("RA_PNT", "DEC_PNT", "ZEN_PNT"):
        if not np.isfinite(found[name]):
            raise InvalidRunError(obs_id, path, f"{name} is not finite")
    return found


def _from_header(obs_id: int, path: Path, hdu: str, values: dict[str, float | None]) -> dict[str, float | None]:
    try:
        header = fits.getheader(path, hdu)
    except (OSError, KeyError, IndexError, EOFError, ValueError) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the {hdu} header: {err}") from err
    values = dict(values)
    for name in ("RA_PNT", "DEC_PNT", "LIVETIME", "ONTIME"):
        if values[name] is None:
            if name not in header:
                raise InvalidRunError(obs_id, path, f"neither the obs-index nor the {hdu} header gives {name}")
            values[name] = _number(header, name, obs_id, path, hdu)
    if values["ZEN_PNT"] is None:
        if "ZEN_PNT" in header:
            values["ZEN_PNT"] = _number(header, "ZEN_PNT", obs_id, path, hdu)
        elif "ALT_PNT" in header:
            values["ZEN_PNT"] = 90.0 - _number(header, "ALT_PNT", obs_id, path, hdu)
        else:
            try:
                values["ZEN_PNT"] = mean_zenith(header, values["RA_PNT"], values["DEC_PNT"])  # type: ignore[arg-type]
            except KeyError as err:
                raise InvalidRunError(
                    obs_id, path, f"no ZEN_PNT or ALT_PNT, and no {err.args[0]} to compute the zenith from"
                ) from err
            except (ValueError, TypeError) as err:  # a keyword of the wrong type
                raise InvalidRunError(obs_id, path, f"cannot compute the zenith from the {hdu} header: {err}") from err
    return values


def _number(header: fits.Header, name: str, obs_id: int, path: Path, hdu: str) -> float:
    """Return header keyword ``name`` as a float; InvalidRunError if it is not a number."""
    try:
        return float(header[name])
    except (TypeError, ValueError) as err:
        raise InvalidRunError(obs_id, path, f"{hdu} keyword {name} = {header[name]!r} is not a number") from err
