"""Read a model file written by :func:`bkgxr.write_models` back into its Dataset.

:func:`read_models` returns what was written, in the layout of
:func:`bkgxr.predict_models`: the band models, every observation's model, the
runs behind them and the recipe. Integrity is checked with the FITS
CHECKSUM/DATASUM keywords of every HDU, not by recomputing the models, so a
file stays readable whatever later versions of the modelling code do. Files of
bkgxr 0.1 (no checksums; rates per LIVETIME) are read with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.table import Table

from ..axes import Binning, band_index, band_labels
from ..cube import RATE_TIME, assemble_cube
from ..exceptions import StoreError
from ..models import BAND_VARIABLES, models_dataset
from ..recipe import Recipe
from ..units import ANGLE_UNIT, ENERGY_UNIT, RATE_UNIT, TIME_UNIT, parse_unit, scale_to

if TYPE_CHECKING:
    import numpy.typing as npt

#: What a file without the BKGTIME keyword (bkgxr 0.1) holds.
LEGACY_RATE_TIME = "LIVETIME (file of bkgxr 0.1: gammapy over-predicts it by 1/DEADC)"


def _column(hdu: fits.BinTableHDU, name: str, unit: u.UnitBase, path: Path) -> npt.NDArray[np.float64]:
    """Return the one-row array column ``name`` of ``hdu`` converted to ``unit``."""
    if name not in hdu.columns.names:
        raise StoreError(f"{hdu.name} lacks column {name}", path=path)
    given = parse_unit(hdu.columns[name].unit, default=unit, what=f"{path.name} {hdu.name} {name}")
    return np.asarray(hdu.data[name][0], dtype=np.float64) * scale_to(given, unit)


def _edges(lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], what: str, path: Path) -> npt.NDArray[np.float64]:
    """Return the edges of contiguous bins ``[lo, hi)``."""
    if not np.array_equal(lo[1:], hi[:-1]):
        raise StoreError(f"{what} bins are not contiguous: {lo} / {hi}", path=path)
    return np.append(lo, hi[-1])


#: FoV columns of each model HDU class, with the Binning field each one fills.
_FOV_COLUMNS = {"BKG_2D": (("THETA", "offset"),), "BKG_3D": (("DETX", "fov_lon"), ("DETY", "fov_lat"))}


def _grid(hdu: fits.BinTableHDU, path: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Return the edges of a BKG_2D or BKG_3D HDU, keyed by Binning field (energy, offset or fov_lon/fov_lat)."""
    columns = (("ENERG", "energy"), *_FOV_COLUMNS[str(hdu.header["HDUCLAS4"])])
    return {
        field: _edges(
            _column(hdu, f"{col}_LO", ENERGY_UNIT if col == "ENERG" else ANGLE_UNIT, path),
            _column(hdu, f"{col}_HI", ENERGY_UNIT if col == "ENERG" else ANGLE_UNIT, path),
            col,
            path,
        )
        for col, field in columns
    }


def _same(a: dict[str, npt.NDArray[np.float64]], b: dict[str, npt.NDArray[np.float64]]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _rate(hdu: fits.BinTableHDU, path: Path, column: str = "BKG") -> npt.NDArray[np.float64]:
    # TDIM (n_energy, *fov) reads back as numpy (*fov reversed, n_energy): reverse the axes.
    return _column(hdu, column, RATE_UNIT, path).T


def _open_verified(path: Path) -> tuple[fits.HDUList, bool]:
    """Open ``path``, checking every HDU's checksum; return the HDUs and whether they had checksums."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, checksum=True)
            for hdu in hdul:
                hdu.data  # noqa: B018 - loading the data verifies DATASUM
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read the file: {err}", path=path) from err
    failed = [str(w.message).strip() for w in caught if "verification failed" in str(w.message)]
    if failed:
        hdul.close()
        raise StoreError(f"the file was changed after writing: {failed[0]}", path=path)
    return hdul, all("CHECKSUM" in hdu.header for hdu in hdul)


def read_models(path: str | Path) -> xr.Dataset:
    """Read a file written by :func:`bkgxr.write_models` into the Dataset it was written from.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file with one ``BKG_2D`` HDU per zenith band (``ZEN_LO``,
        ``ZEN_HI``), the ``RUNS`` and ``OBS_INDEX`` tables and the
        per-observation models.

    Returns
    -------
    xarray.Dataset
        Eager, in the layout of :func:`bkgxr.predict_models` (band models,
        ``obs_*`` per observation, ``run_*`` per run); attributes hold the
        recipe, ``rate_time`` and ``checksum`` ('verified' or 'absent').

    Raises
    ------
    StoreError
        If the file is unreadable, a checksum fails, it lacks an HDU, keyword
        or column, or its bands or bins do not line up.
    UnitError
        If a column has a unit that is unknown or of the wrong kind.

    Warns
    -----
    UserWarning
        For a file of bkgxr 0.1, whose rates are per LIVETIME.

    See Also
    --------
    write_models, predict_models, bkgxr.plot.plot_overview
    """
    path = Path(path)
    hdul, verified = _open_verified(path)
    with hdul:
        primary = hdul[0].header
        bands = sorted((h for h in hdul[1:] if h.header.get("HDUCLAS4") in _FOV_COLUMNS and "ZEN_LO" in h.header),
                       key=lambda h: float(h.header["ZEN_LO"]))
        if not bands:
            raise StoreError("no BKG_2D/BKG_3D HDU with ZEN_LO/ZEN_HI: not written by bkgxr.write_models", path=path)
        try:
            recipe = Recipe.from_header(primary)
            zen = np.array([[float(h.header["ZEN_LO"]), float(h.header["ZEN_HI"])] for h in bands])
            runs = Table.read(hdul["RUNS"])
            obs = Table.read(hdul["OBS_INDEX"])
            own = {str(h.name): h for h in hdul[1:] if str(h.name).startswith("BKG_OBS_")}
        except (KeyError, ValueError, IndexError) as err:
            raise StoreError(f"missing keyword, HDU or column: {err}", path=path) from err
        grids = [_grid(h, path) for h in bands]
        if any(not _same(g, grids[0]) for g in grids):
            raise StoreError("the band models have different energy or FoV bins", path=path)
        band_rate = np.stack([_rate(h, path) for h in bands])
        # files before the zenith of each event's time lack COUNTS: their runs were whole in one band
        band_counts = np.stack([_column(h, "COUNTS", u.dimensionless_unscaled, path).T for h in bands]) \
            if all("COUNTS" in h.columns.names for h in bands) else None
        band_err = np.stack([_rate(h, path, "BKG_ERR") if "BKG_ERR" in h.columns.names else np.zeros(band_rate.shape[1:]) for h in bands])
        fov = "altaz" if "fov_lon" in grids[0] else "offset"
        binning = Binning(zenith=_edges(zen[:, 0], zen[:, 1], "zenith band", path), fov=fov, **grids[0])
        obs_models = _observations(obs, own, band_rate, binning, path)
    cube = _cube(runs, binning, bool(primary.get("SAFEENER", False)), band_counts)
    n_runs = cube["n_runs"].values
    of_band = ~obs_models["obs_own"] & (obs_models["obs_band"] >= 0)
    obs_models["obs_n_eff"][of_band] = n_runs[obs_models["obs_band"][of_band]]
    if "BKGTIME" not in primary:
        warnings.warn(f"{path.name}: written by bkgxr 0.1: its rates are per LIVETIME; gammapy predicts rate x ONTIME "
                      "and so over-predicts by 1/DEADC: rebuild it", stacklevel=2)
    models = cube[list(BAND_VARIABLES)].assign(rate=(cube["rate"].dims, band_rate), rate_err=(cube["rate"].dims, band_err))
    for name in ("rate", "rate_err"):
        models[name].attrs = {**cube[name].attrs, "recipe": recipe.describe()}
    attrs = {
        "rate_time": RATE_TIME if "BKGTIME" in primary else LEGACY_RATE_TIME,
        "safe_energy": int(bool(primary.get("SAFEENER", False))),
        "source": str(path),
        "checksum": "verified" if verified else "absent",
    }
    return models_dataset(models, cube, np.asarray(obs["OBS_ID"], dtype=np.int64), obs_models, recipe, attrs)


def _cube(runs: Table, binning: Binning, safe_energy: bool, band_counts: npt.NDArray[np.float64] | None) -> xr.Dataset:
    """Return the cube of the RUNS table and the band HDUs' COUNTS (counts, exposure, per-run values)."""
    run_zenith = np.asarray(runs["ZEN_PNT"].quantity.to_value(ANGLE_UNIT), np.float64)
    run_counts = np.asarray(runs["COUNTS"], dtype=np.int64)
    run_counts = run_counts.transpose(0, *range(run_counts.ndim - 1, 0, -1))  # FITS order back to (energy, *fov)
    kept = np.asarray(runs["KEPT"], dtype=np.float64) if "KEPT" in runs.colnames else None  # none in bkgxr 0.1 files
    kept = None if kept is None else kept.transpose(0, *range(kept.ndim - 1, 0, -1))
    run_error = np.asarray(runs["ERROR"], dtype=object)
    band = band_index(run_zenith, binning.zenith)
    used = (run_error == "") & (band >= 0)
    member = (used[:, None] & (band[:, None] == np.arange(binning.shape[0])[None, :])).astype(np.int64)  # (run, band)
    counts = np.tensordot(member, run_counts, axes=(0, 0)) if band_counts is None else band_counts.astype(np.int64)
    livetime = np.asarray(runs["LIVETIME"].quantity.to_value(TIME_UNIT), np.float64)
    # files of bkgxr 0.1 have no ONTIME: their rates were per LIVETIME, which then stands in
    ontime = np.asarray(runs["ONTIME"].quantity.to_value(TIME_UNIT), np.float64) if "ONTIME" in runs.colnames else livetime
    return assemble_cube(
        binning,
        counts=counts,
        run_counts=run_counts,
        run_error=run_error,
        run_safe=np.asarray(runs["SAFE"], dtype=bool),
        obs_id=np.asarray(runs["OBS_ID"], dtype=np.int64),
        run_zenith=run_zenith,
        run_ontime=ontime,
        run_livetime=livetime,
        run_threshold=np.asarray(runs["SAFE_ENERGY_LO"].quantity.to_value(ENERGY_UNIT), np.float64),
        run_tstart=np.asarray(runs["TSTART"].quantity.to_value(TIME_UNIT), np.float64),
        run_muoneff=np.asarray(runs["MUONEFF"], np.float64) if "MUONEFF" in runs.colnames else None,
        run_track=np.asarray(runs["TRACK"], np.float64).reshape(len(runs), -1) if "TRACK" in runs.colnames else None,
        run_band_fraction=np.asarray(runs["BAND_FRACTION"], np.float64).reshape(len(runs), -1) if "BAND_FRACTION" in runs.colnames else None,
        attrs={"safe_energy": int(safe_energy)},
        run_kept=kept,
    )


def _observations(
    obs: Table, own: dict[str, fits.BinTableHDU], band_rate: npt.NDArray[np.float64], binning: Binning, path: Path
) -> dict[str, npt.NDArray[Any]]:
    """Return the ``obs_*`` values of the OBS_INDEX and the per-observation HDUs, keyed as :data:`bkgxr.models.OBS_VARIABLES`.

    ``own`` holds the ``BKG_OBS_*`` HDUs by name; each observation's is the one its ``BKG_HDU``
    names, which several observations share when their models are equal (:func:`bkgxr.write_models`).
    """
    labels = band_labels(binning.zenith)
    ids = np.asarray(obs["OBS_ID"], dtype=np.int64)
    hdu = np.char.strip(np.asarray(obs["BKG_HDU"].filled("") if hasattr(obs["BKG_HDU"], "filled") else obs["BKG_HDU"], dtype=str))
    label = np.char.strip(np.asarray(obs["BKG_ZEN_BAND"], dtype=str))
    band = np.array([labels.index(b) if b in labels else -1 for b in label], dtype=np.int64)
    rate = np.zeros((ids.size, *band_rate.shape[1:]))
    deadc, n_eff = np.ones(ids.size), np.zeros(ids.size)
    is_own = np.array([name.startswith("BKG_OBS_") for name in hdu])
    models: dict[str, tuple[npt.NDArray[np.float64], float, float]] = {}  # each HDU read once
    for i, obs_id in enumerate(ids):
        if is_own[i]:
            if hdu[i] not in own:
                raise StoreError(f"OBS_INDEX names {hdu[i]} for observation {obs_id}, which the file lacks", path=path)
            if hdu[i] not in models:
                model = own[hdu[i]]
                grid = _grid(model, path)
                if not all(np.array_equal(edges, binning.edges(field)) for field, edges in grid.items()):
                    raise StoreError(f"{hdu[i]} has other bins than the band models", path=path)
                models[hdu[i]] = _rate(model, path), float(model.header.get("DEADC", 1.0)), float(model.header.get("N_EFF", np.nan))
            rate[i], deadc[i], n_eff[i] = models[hdu[i]]
        elif band[i] >= 0:
            rate[i] = band_rate[band[i]]
    zenith = np.asarray(obs["ZEN_PNT"], dtype=np.float64)
    tstart, ontime = (np.asarray(obs[c], dtype=np.float64) if c in obs.colnames else np.full(ids.size, np.nan) for c in ("TSTART", "ONTIME"))
    return {
        "obs_rate": rate, "obs_own": is_own, "obs_band": band, "obs_zenith": zenith, "obs_tstart": tstart,
        "obs_ontime": ontime, "obs_deadc": deadc, "obs_n_eff": n_eff,
        "obs_error": np.where(hdu == "", "no model", "").astype(object),
    }
