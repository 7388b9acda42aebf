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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from ..exceptions import EmptySelectionError, InvalidRunError, StoreError
from ..pointing import mean_zenith
from .checks import check_event_columns, check_run_values
from .events import PNT_HEADER, PNT_HEADER_ELSE_INDEX
from .index import find_index, read_index
from .selection import select_rows

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Columns of a run table that the engine reads; all other obs-index columns are kept too.
RUN_COLUMNS = (
    "OBS_ID", "RA_PNT", "DEC_PNT", "ZEN_PNT", "ONTIME", "LIVETIME", "EVENTS_PATH", "EVENTS_HDU", "GTI_HDU", "PNT_SOURCE"
)

#: Query the tutorial uses to select off runs, applied when the column exists.
OFF_QUERY = 'TARGET_NAME == "Off data"'

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
        paths = {*self.file_paths(dirs, hdus["FILE_NAME"]), str(find_index(self.root, "hdu")), str(find_index(self.root, "obs"))}
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
            If a selected run has no events file, lacks a needed keyword, has
            an impossible value (:func:`bkgxr.io.checks.check_run_values`; its
            EVENTS header, when read here, :func:`bkgxr.io.checks.check_event_columns`),
            or shares its EVENTS HDU with another run of the hdu-index.
        StoreError
            If the hdu-index has several events or gti rows for one run.
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
        If an index is missing, unreadable or hostile (:func:`bkgxr.io.index.read_index`),
        or an OBS_ID repeats in the obs-index.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        # "$GAMMAPY_DATA/hess-dl3-dr1" with the variable unset reaches us as "/hess-dl3-dr1"
        unset = Path(path).parent == Path("/") and not os.environ.get("GAMMAPY_DATA")
        raise StoreError("not a folder" + (" (GAMMAPY_DATA is not set: export it, see the README)" if unset else ""), path=root)
    hdu_table = read_index(find_index(root, "hdu"), "hdu")
    obs_path = find_index(root, "obs")
    obs_table = read_index(obs_path, "obs")
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
        raise StoreError(f"hdu-index has several {hdu_type} rows for OBS_ID {dup}", path=find_index(store.root, "hdu"))
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
    with ``skip_bad``; otherwise the first bad run raises), and ``PNT_SOURCE``.
    An unusable run's :data:`NEEDED` and :data:`TIMES` values are NaN.
    """
    events = hdu_locations(store, "events")
    shared = _shared_events(events)
    frame = frame.merge(events, on="OBS_ID", how="left").merge(hdu_locations(store, "gti"), on="OBS_ID", how="left")
    indexed = frame.reindex(columns=["RA_PNT", "DEC_PNT"]).apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    values, errors = [], []
    read = [c for c in ("OBS_ID", "EVENTS_PATH", "EVENTS_HDU", "GTI_PATH", "ALT_PNT", *NEEDED, *TIMES) if c in frame]
    for row in frame[read].to_dict("records"):  # plain dicts of what run_values reads: faster than iterrows' Series
        try:
            if int(row["OBS_ID"]) in shared:
                raise InvalidRunError(int(row["OBS_ID"]), row["EVENTS_PATH"], shared[int(row["OBS_ID"])])
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
    for column in set(TIMES) & set(frame.columns):  # an unusable run's times are not to be used either
        frame[column] = pd.to_numeric(frame[column], errors="coerce").where(np.asarray(errors) == "")
    # The GTI HDU is checked while reading the events when it lives in the same file.
    same = frame["GTI_PATH"] == frame["EVENTS_PATH"]
    frame["GTI_HDU"] = frame["GTI_HDU"].where(same, "")
    frame["ERROR"] = errors
    source = np.where(indexed.to_numpy(), PNT_HEADER_ELSE_INDEX, PNT_HEADER)
    frame["PNT_SOURCE"] = np.where(np.asarray(errors) == "", source, "").astype(object)
    return frame


def _shared_events(events: pd.DataFrame) -> dict[int, str]:
    """Return why each run whose EVENTS HDU is also another run's in the hdu-index cannot be used.

    Files are compared by device and inode (hard and symbolic links, ``..``
    and absolute FILE_DIRs are the same file). The HDU's OBS_ID keyword, when
    it names one of the runs sharing it, gives that run the HDU; every other
    sharer (all of them, without the keyword) is refused: its counts would be
    another run's, its exposure its own.

    Parameters
    ----------
    events : pandas.DataFrame
        :func:`hdu_locations` of the events rows of the whole hdu-index.

    Returns
    -------
    dict of int to str
        OBS_ID -> reason, for the runs refused.
    """
    keys = []
    for path, hdu in zip(events["EVENTS_PATH"], events["EVENTS_HDU"], strict=True):
        try:
            stat = os.stat(path)
            keys.append(f"{stat.st_dev}:{stat.st_ino}:{hdu.upper()}")
        except OSError:  # a missing file is refused by run_values
            keys.append(f"{path}:{hdu.upper()}")
    groups = events.assign(KEY=keys).groupby("KEY", sort=False)["OBS_ID"]
    refused: dict[int, str] = {}
    for _, ids in groups:
        if len(ids) < 2:
            continue
        first = events.loc[ids.index[0]]
        try:
            owner = fits.getheader(first["EVENTS_PATH"], first["EVENTS_HDU"]).get("OBS_ID")
        except (OSError, KeyError, IndexError, EOFError, ValueError):  # the read task says what is wrong
            owner = None
        for obs_id in ids.tolist():
            if obs_id == owner:
                continue
            others = sorted(set(ids.tolist()) - {obs_id})
            whose = f"; its OBS_ID keyword is {owner!r}" if owner is not None else ""
            refused[int(obs_id)] = f"its {first['EVENTS_HDU']} HDU is also that of run(s) {others} in the hdu-index{whose}"
    return refused


#: Per-run values the engine needs, from the obs-index or else the EVENTS header.
NEEDED = ("RA_PNT", "DEC_PNT", "ZEN_PNT", "LIVETIME", "ONTIME")
#: Per-run values checked against NEEDED when given (obs-index, else the header when it is read).
TIMES = ("TSTART", "TSTOP", "DEADC")


def _given(row: Mapping[str, Any], name: str) -> float | None:
    value: Any = row.get(name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


def run_values(row: Mapping[str, Any]) -> dict[str, float]:
    """Return and check pointing, zenith, livetime and observation time of one run-table row (a Series or a dict).

    Values missing from the obs-index are read from the EVENTS header: RA_PNT,
    DEC_PNT, LIVETIME, ONTIME, and ZEN_PNT (else 90 - ALT_PNT, else computed from the
    pointing, the run times and the observatory location). They are checked
    with the run's TSTART, TSTOP and DEADC (obs-index, else the header when it
    is read) by :func:`bkgxr.io.checks.check_run_values`.

    Returns
    -------
    dict of str to float
        The values of :data:`NEEDED`.

    Raises
    ------
    InvalidRunError
        If a file is missing, a value cannot be found or is impossible (see
        :func:`bkgxr.io.checks.check_run_values`).
    """
    obs_id = int(row["OBS_ID"])
    path = row.get("EVENTS_PATH")
    if not isinstance(path, str):
        raise InvalidRunError(obs_id, None, "the hdu-index has no events row")
    path = Path(path)
    if not path.is_file():
        raise InvalidRunError(obs_id, path, f"events file {path} not found")
    gti = row.get("GTI_PATH")
    if not isinstance(gti, str):
        raise InvalidRunError(obs_id, path, "the hdu-index has no gti row")
    if not Path(gti).is_file():
        raise InvalidRunError(obs_id, path, f"GTI file {gti} not found")
    values = {name: _given(row, name) for name in (*NEEDED, *TIMES)}
    if values["ZEN_PNT"] is None and _given(row, "ALT_PNT") is not None:
        values["ZEN_PNT"] = 90.0 - float(row["ALT_PNT"])
    if any(values[name] is None for name in NEEDED):
        values = _from_header(obs_id, path, str(row["EVENTS_HDU"]), values)
    found = {name: np.nan if value is None else value for name, value in values.items()}
    check_run_values(found, obs_id=obs_id, path=path)
    return {name: found[name] for name in NEEDED}


def _from_header(obs_id: int, path: Path, hdu: str, values: dict[str, float | None]) -> dict[str, float | None]:
    try:
        header = fits.getheader(path, hdu)
    except (OSError, KeyError, IndexError, EOFError, ValueError) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the {hdu} header: {err}") from err
    check_event_columns({}, header, obs_id=obs_id, path=path, hdu=hdu, tstart=values["TSTART"], tstop=values["TSTOP"])
    values = dict(values)
    for name in ("RA_PNT", "DEC_PNT", "LIVETIME", "ONTIME"):
        if values[name] is None:
            if name not in header:
                raise InvalidRunError(obs_id, path, f"neither the obs-index nor the {hdu} header gives {name}")
            values[name] = _number(header, name, obs_id, path, hdu)
    for name in TIMES:  # checked when given as numbers, never needed
        given = header.get(name)
        if values[name] is None and isinstance(given, (int, float)) and not isinstance(given, bool):
            values[name] = float(given)
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
