"""GADF data store: index tables in, run table out.

A store is the folder of ``hdu-index.fits[.gz]`` and ``obs-index.fits[.gz]``.
:func:`open_store` reads both; :meth:`Store.select` turns a query on the
observation table into a *run table*: one row per selected run with the
columns the engine needs (``OBS_ID``, ``RA_PNT``, ``DEC_PNT``, ``ZEN_PNT``,
``LIVETIME``, ``EVENTS_PATH``, ``EVENTS_HDU``), filled from the EVENTS header
where the observation index lacks them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from .exceptions import EmptySelectionError, InvalidRunError, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Columns of a run table that the engine reads; all other obs-index columns are kept too.
RUN_COLUMNS = ("OBS_ID", "RA_PNT", "DEC_PNT", "ZEN_PNT", "LIVETIME", "EVENTS_PATH", "EVENTS_HDU")

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
    """Return the scalar columns of ``table`` as a DataFrame with str, not bytes."""
    names = [n for n in table.colnames if table[n].ndim == 1]
    frame = table[names].to_pandas()
    for name in names:
        if table[name].dtype.kind in "SU":
            values = frame[name].astype(object)
            values = values.map(lambda v: v.decode() if isinstance(v, bytes) else v)
            frame[name] = values.where(values.notna(), "").astype(str).str.strip()
    return frame


@dataclass(frozen=True)
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
        return _decode(self.obs_table)

    def file_path(self, row: pd.Series) -> Path:
        """Return the path of the file an HDU-index row points to."""
        file_dir = row.get("FILE_DIR", "")
        file_dir = "" if file_dir is None or pd.isna(file_dir) else str(file_dir).strip()
        return (self.root / file_dir / str(row["FILE_NAME"]).strip()).resolve()

    def select(
        self,
        query: str | None = None,
        *,
        obs_ids: Iterable[int] | None = None,
        zenith: tuple[float, float] | None = None,
    ) -> pd.DataFrame:
        """Select runs and return their run table.

        Parameters
        ----------
        query : str, optional
            A :meth:`pandas.DataFrame.query` expression on the observation
            index, e.g. ``'TARGET_NAME == "Off data"'`` (see :data:`OFF_QUERY`).
            ``None`` keeps every run.
        obs_ids : iterable of int, optional
            Keep only these observations.
        zenith : (float, float), optional
            Keep runs with ``lo <= ZEN_PNT < hi`` (deg).

        Returns
        -------
        pandas.DataFrame
            One row per run, sorted by ``OBS_ID``, with every obs-index column
            plus :data:`RUN_COLUMNS`.

        Raises
        ------
        EmptySelectionError
            If no run is selected.
        InvalidRunError
            If a selected run has no events file or lacks a needed keyword.
        """
        frame = self.obs
        if query is not None:
            try:
                frame = frame.query(query)
            except Exception as err:  # pandas raises many types for a bad expression
                raise ValueError(
                    f"cannot apply query {query!r} to the observation index "
                    f"(columns: {', '.join(frame.columns)}): {err}"
                ) from err
        if obs_ids is not None:
            frame = frame[frame["OBS_ID"].isin(list(obs_ids))]
        frame = _complete(self, frame.sort_values("OBS_ID").reset_index(drop=True))
        if zenith is not None:
            lo, hi = zenith
            frame = frame[(frame["ZEN_PNT"] >= lo) & (frame["ZEN_PNT"] < hi)]
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
        raise StoreError("not a folder", path=root)
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


def _events_locations(store: Store) -> pd.DataFrame:
    hdus = _decode(store.hdu_table)
    events = hdus[hdus["HDU_TYPE"].str.lower() == "events"]
    if events["OBS_ID"].duplicated().any():
        dup = events.loc[events["OBS_ID"].duplicated(), "OBS_ID"].tolist()
        raise StoreError(f"hdu-index has several events rows for OBS_ID {dup}", path=store.root)
    paths = [str(store.file_path(row)) for _, row in events.iterrows()]
    hdu_names = events["HDU_NAME"] if "HDU_NAME" in events else pd.Series("EVENTS", index=events.index)
    return pd.DataFrame(
        {
            "OBS_ID": events["OBS_ID"].to_numpy(),
            "EVENTS_PATH": paths,
            "EVENTS_HDU": [h.strip() or "EVENTS" for h in hdu_names.astype(str)],
        }
    )


#: Where each needed column comes from when the obs-index lacks it: EVENTS header keywords.
_HEADER_FALLBACK = {"RA_PNT": "RA_PNT", "DEC_PNT": "DEC_PNT", "LIVETIME": "LIVETIME"}


def _complete(store: Store, frame: pd.DataFrame) -> pd.DataFrame:
    """Add events locations and fill needed columns from EVENTS headers."""
    frame = frame.merge(_events_locations(store), on="OBS_ID", how="left")
    for _, row in frame[frame["EVENTS_PATH"].isna()].iterrows():
        raise InvalidRunError(int(row["OBS_ID"]), None, "the hdu-index has no events row")
    missing = [c for c in (*_HEADER_FALLBACK, "ZEN_PNT") if c not in frame or frame[c].isna().any()]
    if missing:
        filled = pd.DataFrame(
            [_header_values(row) for _, row in frame.iterrows()], index=frame.index
        )
        for column in missing:
            if column not in frame:
                frame[column] = filled[column]
            else:
                frame[column] = frame[column].fillna(filled[column])
    for column in ("RA_PNT", "DEC_PNT", "ZEN_PNT", "LIVETIME"):
        frame[column] = frame[column].astype(np.float64)
    return frame


def _header_values(row: pd.Series) -> dict[str, float]:
    """Read pointing, zenith and livetime of one run from its EVENTS header."""
    obs_id, path = int(row["OBS_ID"]), Path(row["EVENTS_PATH"])
    try:
        header = fits.getheader(path, row["EVENTS_HDU"])
    except (OSError, KeyError, IndexError, EOFError, ValueError) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the EVENTS header: {err}") from err
    values = {}
    for column, keyword in _HEADER_FALLBACK.items():
        if keyword not in header:
            raise InvalidRunError(obs_id, path, f"EVENTS header lacks {keyword}")
        values[column] = float(header[keyword])
    values["ZEN_PNT"] = _header_zenith(header, obs_id, path)
    return values


def _header_zenith(header: fits.Header, obs_id: int, path: Path) -> float:
    if "ZEN_PNT" in header:
        return float(header["ZEN_PNT"])
    if "ALT_PNT" in header:
        return 90.0 - float(header["ALT_PNT"])
    warnings.warn(
        f"run {obs_id} ({path.name}): no ZEN_PNT or ALT_PNT; zenith is NaN", stacklevel=3
    )
    return float("nan")
