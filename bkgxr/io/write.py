"""Write the models of :func:`bkgxr.predict_models` as one GADF file, atomically.

One FITS file holds, in order: a primary HDU stating the recipe, ``HDU_INDEX``,
``OBS_INDEX``, ``RUNS`` (the runs the models were built from, with their
counts), one ``BKG_2D`` (or, for 3D cubes, ``BKG_3D`` with ``FOVALIGN = 'ALTAZ'``)
HDU per zenith band (``BKG_ZEN_<lo>_<hi>``) and, for recipes that give each
observation its own model, one per distinct model (``BKG_OBS_<OBS_ID>``, named
after one of the observations it is for, its ``NOBS`` saying how many): observations
whose rates, DEADC and N_EFF agree within :data:`bkgxr.io.gadf.SHARE_RTOL` (1e-6
relative, in every bin) share one HDU, so the file grows with the number of distinct
models. The HDU index keeps every row of the source
store, with paths re-based to the output file, and points each observation's
``bkg`` row to its model (``HDU_NAME``), so ``gammapy.data.DataStore.from_file(path)`` loads
it as the observation's bkg. Every rate is per observation time (ONTIME), as
the GADF spec says and gammapy uses (``BKGTIME = 'ONTIME'`` in each header).
Every HDU carries FITS CHECKSUM/DATASUM keywords, which :func:`bkgxr.read_models`
verifies. This module turns a Dataset into bytes and holds no modelling code.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/irfs/full_enclosure/bkg/
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..axes import binning_of
from ..recipe import Recipe
from ._checksum import add_checksum_cards, fill_checksums
from .gadf import (
    bkg_hdu_name,
    bkg_hdus_bytes,
    create_bkg_2d_hdu,
    create_bkg_3d_hdu,
    shared_models,
)
from .index import hdu_index_table, obs_index_table, rebase_dir
from .partfiles import PART_SUFFIX, part_prefix, remove_stale, signals_held

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt
    import xarray as xr

    from ..axes import Binning
    from .store import Store

#: Keyword and comment stating the time every rate in the file is per.
BKGTIME_CARD = ("ONTIME", "rate per obs. time (GTI sum), no deadtime corr.")


def check_output(path: str | Path, *, overwrite: bool = True, store: Store | None = None) -> Path:
    """Check, without writing anything, that ``path`` can become the output file.

    With ``store``, a path that resolves (symlinks followed) to one of the
    store's files is refused: the output never replaces an input. So is a
    path the FITS index tables cannot hold: FITS strings are ASCII, and the
    HDU index names the output file and the store's folders relative to it, so
    a non-ASCII output name, or a non-ASCII store path that is not shared with
    the output's folder, is refused before anything is read.

    Raises
    ------
    ValueError
        If ``path`` is a file of ``store``, or a path the index cannot hold.
    IsADirectoryError
        If ``path`` is a folder, or names one (a trailing separator).
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    PermissionError
        If the nearest existing folder above ``path`` is not a writable folder.
    """
    text = os.fspath(path)
    if text.endswith((os.sep, "/")) or os.path.basename(text) in ("", ".", ".."):
        raise IsADirectoryError(f"{text} names a folder; give the name of the output file")
    path = Path(path)
    if store is not None:
        if Path(os.path.realpath(path)) in store.files():
            raise ValueError(f"{path} is a file of the store being read ({store.root}); write the models elsewhere")
        if not path.name.isascii():
            raise ValueError(f"{path}: the output name is not ASCII, and FITS index tables hold ASCII only; rename it")
        hdus = store.hdus
        out_dir = path.absolute().resolve().parent
        for file_dir in sorted({str(d).strip() for d in hdus["FILE_DIR"]} if "FILE_DIR" in hdus else {""}):
            if not rebase_dir(file_dir, store.root, out_dir).isascii():
                raise ValueError(
                    f"{path}: its HDU index would name the store's folder {rebase_dir(file_dir, store.root, out_dir)!r}, "
                    "not ASCII (FITS index tables hold ASCII only); write the models into a folder that shares the "
                    "non-ASCII part of the store's path, or move the store"
                )
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the name of the output file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: {folder} is not a writable folder")
    return path


def _umask() -> int:
    """Return the process umask, read from /proc where it can be (setting it to read it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_atomic(data: bytes, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A failure leaves no partial file and any existing ``path`` untouched.
    SIGINT, SIGTERM and SIGHUP wait while the temporary file exists and take
    effect once it is renamed or removed, so none leaves it behind; the stale
    temporary files of ``path`` left by killed processes are removed first
    (the rule is in :mod:`bkgxr.io.partfiles`).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        If ``path`` is a folder.
    """
    path = check_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    with signals_held():
        fd, tmp = tempfile.mkstemp(prefix=part_prefix(path), suffix=PART_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it: mkstemp's 0600 hides models from a cluster's users
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def runs_table(models: xr.Dataset) -> Table:
    """Return the RUNS table: every run behind the models, its counts, safe bins, kept FoV and fate."""
    fov = binning_of(models).fov_dims
    shape = ", ".join(str(models.sizes[d]) for d in ("energy", *fov))
    table = Table(
        {
            "OBS_ID": models["run"].values,
            "ZEN_PNT": models["run_zenith"].values,
            "ONTIME": models["run_ontime"].values,
            "LIVETIME": models["run_livetime"].values,
            "SAFE_ENERGY_LO": models["run_threshold"].values,
            "TSTART": models["run_tstart"].values,
            "MUONEFF": models["run_muoneff"].values,
            "TRACK": models["run_track"].values,
            "BAND_FRACTION": models["run_band_fraction"].values,
            "BAND": models["run_band"].values,
            "USED": models["run_used"].values,
            "ERROR": np.asarray(models["run_error"].values, dtype=str),
            # (energy, *fov) per run, written with the axes reversed like BKG: TDIM (n_energy, *fov)
            "COUNTS": models["run_counts"].transpose("run", *fov[::-1], "energy").values,
            "KEPT": models["run_kept"].transpose("run", *fov[::-1]).values,
            "SAFE": models["run_safe"].values,
        },
        units={"ZEN_PNT": "deg", "ONTIME": "s", "LIVETIME": "s", "SAFE_ENERGY_LO": "TeV", "TSTART": "s"},
    )
    table.meta.update({"EXTNAME": "RUNS", "COMMENT": f"COUNTS per run: ({', '.join(('energy', *fov))}) = ({shape})"})
    return table


def _written_models(models: xr.Dataset) -> npt.NDArray[np.intp]:
    """Return, per observation, the observation whose model HDU holds its own model (-1 for none).

    Observations whose rates, DEADC and N_EFF agree within :data:`bkgxr.io.gadf.SHARE_RTOL`
    share one HDU (:func:`bkgxr.io.gadf.shared_models`), so that it states each of them.
    """
    own = np.flatnonzero(models["obs_own"].values)
    rates = models["obs_rate"].values[own]
    rates = rates.reshape(own.size, int(np.prod(rates.shape[1:])))
    values = np.column_stack([rates, models["obs_deadc"].values[own], models["obs_n_eff"].values[own]])
    written = np.full(models.sizes["obs_id"], -1, dtype=np.intp)
    written[own] = own[shared_models(values)]
    return written


def _hdu_names(models: xr.Dataset, written: npt.NDArray[np.intp]) -> tuple[list[str], list[str]]:
    """Return the EXTNAME of each band model and of each observation's model ('' for none)."""
    binning = binning_of(models)
    bands = [bkg_hdu_name(lo, hi) for lo, hi in zip(binning.zenith[:-1], binning.zenith[1:], strict=True)]
    obs_ids = models["obs_id"].values
    names = [
        f"BKG_OBS_{int(obs_ids[hdu])}" if hdu >= 0 else (bands[band] if band >= 0 else "")
        for hdu, band in zip(written, models["obs_band"].values, strict=True)
    ]
    return bands, names


def _primary(models: xr.Dataset, recipe: Recipe, date: str | None) -> fits.PrimaryHDU:
    primary = fits.PrimaryHDU()
    primary.header["CREATOR"] = "bkgxr"
    primary.header["DATE"] = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    primary.header["BKGTIME"] = BKGTIME_CARD
    for key, card in recipe.to_header().items():
        primary.header[key] = card
    primary.header["COMMENT"] = "bands: an observation gets the model of the band containing ZEN_PNT (lo <= z < hi)"
    primary.header["NRUNS"] = (int(models["run_used"].sum()), "runs the models were built from")
    primary.header["NSKIPPED"] = (int((~models["run_used"]).sum()), "runs left out: see RUNS.ERROR")
    primary.header["SAFEENER"] = (bool(models.attrs.get("safe_energy", 0)), "runs used only in their safe energy bins")
    return primary


def _create(binning: Binning) -> Callable[..., fits.BinTableHDU]:
    """Return the HDU builder of the binning's models, edges bound: BKG_2D or BKG_3D (ALTAZ)."""
    if binning.fov == "altaz":
        return partial(create_bkg_3d_hdu, energy_edges=binning.energy, lon_edges=binning.fov_lon, lat_edges=binning.fov_lat)
    return partial(create_bkg_2d_hdu, energy_edges=binning.energy, offset_edges=binning.offset)


def _band_hdus(models: xr.Dataset, names: list[str]) -> list[fits.BinTableHDU]:
    binning = binning_of(models)
    create = _create(binning)
    hdus = []
    for i, name in enumerate(names):
        band = models.isel(zenith=i)
        hdus.append(
            create(
                band["rate"].transpose("energy", *binning.fov_dims).values,
                extname=name,
                error=band["rate_err"].transpose("energy", *binning.fov_dims).values,
                counts=band["counts"].transpose("energy", *binning.fov_dims).values,
                meta={
                    "BKGTIME": BKGTIME_CARD,
                    "ZEN_LO": (float(binning.zenith[i]), "[deg] zenith band lower edge"),
                    "ZEN_HI": (float(binning.zenith[i + 1]), "[deg] zenith band upper edge"),
                    "ONTIME": (float(band["ontime"]), "[s] summed ONTIME of the runs"),
                    "LIVETIME": (float(band["livetime"]), "[s] summed LIVETIME of the runs"),
                    "NRUNS": (int(band["n_runs"]), "runs in this band"),
                    "NEVENTS": (int(band["counts"].sum()), "events in the binned range"),
                },
            )
        )
    return hdus


def _observation_bytes(models: xr.Dataset, recipe: Recipe, names: list[str], written: npt.NDArray[np.intp]) -> bytes:
    """Return the model HDUs of the observations with a model of their own, one per distinct model, as FITS bytes."""
    own, sharing = np.unique(written[written >= 0], return_counts=True)
    obs_id, zenith, deadc, n_eff = (models[name].values for name in ("obs_id", "obs_zenith", "obs_deadc", "obs_n_eff"))
    metas = [
        {
            "EXTNAME": (names[i], "name of this binary table extension"),
            "BKGTIME": BKGTIME_CARD,
            "OBS_ID": (int(obs_id[i]), "observation this model is for"),
            "NOBS": (int(n), "observations sharing this model (OBS_INDEX)"),
            "ZEN_PNT": (float(zenith[i]), "[deg] zenith the model is evaluated at"),
            "ZENMODEL": (recipe.zenith, "zenith recipe"),
            "DEADC": (float(deadc[i]), "dead-time factor folded in (1: none)"),
            "N_EFF": (float(n_eff[i]), "effective number of runs behind the model"),
        }
        for i, n in zip(own, sharing, strict=True)
    ]
    binning = binning_of(models)
    rates = models["obs_rate"].transpose("obs_id", "energy", *binning.fov_dims).values[own]
    return bkg_hdus_bytes(rates, _create(binning), metas)


def write_models(
    models: xr.Dataset,
    path: str | Path,
    *,
    store: Store,
    date: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the models of :func:`bkgxr.predict_models` and index tables to one FITS file.

    Parameters
    ----------
    models : xarray.Dataset
        From :func:`bkgxr.predict_models`, its recipe in the attributes.
    path : str or pathlib.Path
        Output FITS file; ``gammapy.data.DataStore.from_file(path)`` loads it.
    store : Store
        Store the observations belong to: its index rows are copied, with
        paths re-based to ``path``.
    date : str, optional
        Value of the DATE keyword; today's UTC date if omitted. Pass it to
        make output byte-reproducible.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If ``models`` is not a Dataset of :func:`bkgxr.predict_models`, or lacks
        an observation of ``store`` (the file's indexes list them all).
    """
    missing = [n for n in ("rate", "obs_rate", "obs_own", "obs_band", "run_counts") if n not in models]
    if missing:
        raise ValueError(f"models lack {missing}: pass the Dataset of bkgxr.predict_models (not a cube)")
    path = check_output(path, overwrite=overwrite, store=store)
    recipe = Recipe.from_header(models.attrs)
    binning = binning_of(models)
    written = _written_models(models)
    bands, names = _hdu_names(models, written)
    labels = models["zenith_band"].values
    band = models["obs_band"].values
    # the models are sorted by OBS_ID; the obs index keeps its own row order
    order = {int(o): i for i, o in enumerate(models["obs_id"].values)}
    lacking = [int(o) for o in store.obs_table["OBS_ID"] if int(o) not in order]
    if lacking:  # the file's indexes list every observation of the store, each with its model
        shown = ", ".join(map(str, lacking[:5])) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise ValueError(
            f"the models lack {len(lacking)} observation(s) of the store {store.root} ({shown}): the file's index "
            "gives every observation its model; predict them with predict_models(cube, store)"
        )
    keep = [order[int(o)] for o in store.obs_table["OBS_ID"]]
    obs_table = obs_index_table(
        store, {"BKG_HDU": [names[i] for i in keep], "BKG_ZEN_BAND": [labels[band[i]] if band[i] >= 0 else "" for i in keep]}
    )
    obs_table.meta.update({"BKGZRULE": recipe.outside, "ZENMODEL": recipe.zenith})
    hdus = [
        _primary(models, recipe, date),
        fits.table_to_hdu(hdu_index_table(store, path, models["obs_id"].values, names, hdu_class=f"bkg_{len(binning.dims) - 1}d")),
        fits.table_to_hdu(obs_table),
        fits.table_to_hdu(runs_table(models)),
        *_band_hdus(models, bands),
    ]
    hdus[1].name, hdus[2].name, hdus[3].name = "HDU_INDEX", "OBS_INDEX", "RUNS"
    for hdu in hdus:
        add_checksum_cards(hdu.header)
    buffer = io.BytesIO()
    # every HDU is built here from valid parts: astropy's verification pass would
    # cost more than the writing itself for thousands of per-observation models
    fits.HDUList(hdus).writeto(buffer, checksum=False, output_verify="ignore")
    data = fill_checksums(buffer.getvalue() + _observation_bytes(models, recipe, names, written))
    return write_atomic(data, path, overwrite=overwrite)
