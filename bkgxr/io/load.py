"""Read a model file written by :func:`bkgxr.write_models` back into its cube.

The file's RUNS table holds every run's counts, safe energy bins, livetime,
zenith and fate; :func:`load_models` rebuilds the cube from them through
:func:`bkgxr.cube.assemble_cube`, re-applies the smoothing the header states,
and checks the result against the stored BKG_2D rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..axes import Binning, band_index
from ..cube import assemble_cube
from ..exceptions import StoreError
from ..smooth import smooth_cube
from ..units import ANGLE_UNIT, ENERGY_UNIT, RATE_UNIT, TIME_UNIT, parse_unit, scale_to

if TYPE_CHECKING:
    import astropy.units as u
    import numpy.typing as npt
    import xarray as xr

#: Primary-header keywords of the smoothing options: keyword -> (option of smooth_rate, comment).
SMOOTH_KEYWORDS = {
    "SMDEGREE": ("degree", "smoothing: max degree of the radial shape"),
    "SMMINCNT": ("min_counts", "smoothing: counts of a populated energy bin"),
    "SMSHPCNT": ("shape_counts", "smoothing: counts of a shape-fit window"),
    "SMNTAIL": ("n_tail", "smoothing: populated bins fixing the tail"),
}

def _column(hdu: fits.BinTableHDU, name: str, unit: u.UnitBase, path: Path) -> npt.NDArray[np.float64]:
    """Return the one-row array column ``name`` of ``hdu`` converted to ``unit``."""
    if name not in hdu.columns.names:
        raise StoreError(f"{hdu.name} lacks column {name}", path=path)
    given = parse_unit(hdu.columns[name].unit, default=unit, what=f"{path.name} {hdu.name} {name}")
    return np.asarray(hdu.data[name][0], dtype=np.float64) * scale_to(given, unit)


def _edges(
    lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], what: str, path: Path
) -> npt.NDArray[np.float64]:
    """Return the edges of contiguous bins ``[lo, hi)``."""
    if not np.array_equal(lo[1:], hi[:-1]):
        raise StoreError(f"{what} bins are not contiguous: {lo} / {hi}", path=path)
    return np.append(lo, hi[-1])


def load_models(path: str | Path) -> xr.Dataset:
    """Read a file written by :func:`write_models` back into the cube it was written from.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file with one ``BKG_2D`` HDU per zenith band (keywords ``ZEN_LO``,
        ``ZEN_HI``) and the ``RUNS`` table.

    Returns
    -------
    xarray.Dataset
        Eager, with the variables, dims, coords and units of
        :func:`bkgxr.build_cube`, rebuilt from the runs' counts, safe bins
        and livetimes; the rate is checked against the stored BKG.

    Raises
    ------
    StoreError
        If the file is unreadable, has no such HDUs, lacks a keyword or column,
        its bands or bins do not line up, or its rate disagrees with its counts.
    UnitError
        If a column has a unit that is unknown or of the wrong kind.

    See Also
    --------
    write_models, bkgxr.plot.plot_overview
    """
    path = Path(path)
    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read the file: {err}", path=path) from err
    with hdul:
        hdus = [h for h in hdul[1:] if h.header.get("HDUCLAS4") == "BKG_2D" and "ZEN_LO" in h.header]
        if not hdus:
            raise StoreError("no BKG_2D HDU with ZEN_LO/ZEN_HI: not written by bkgxr.write_models", path=path)
        hdus.sort(key=lambda h: float(h.header["ZEN_LO"]))
        try:
            zen = np.array([[float(h.header["ZEN_LO"]), float(h.header["ZEN_HI"])] for h in hdus])
            runs = Table.read(hdul["RUNS"])
            safe_energy = bool(hdul[0].header.get("SAFEENER", False))
            smoothing = (
                {name: hdul[0].header[key] for key, (name, _) in SMOOTH_KEYWORDS.items()}
                if hdul[0].header.get("SMOOTH", False)
                else None
            )
            run_counts = np.asarray(runs["COUNTS"], dtype=np.int64).transpose(0, 2, 1)
            run_safe, run_error = np.asarray(runs["SAFE"], dtype=bool), np.asarray(runs["ERROR"], dtype=object)
        except (KeyError, ValueError, IndexError) as err:
            raise StoreError(f"missing keyword, HDU or column: {err}", path=path) from err
        grids = [
            tuple(
                _edges(_column(h, f"{col}_LO", unit, path), _column(h, f"{col}_HI", unit, path), col, path)
                for col, unit in (("ENERG", ENERGY_UNIT), ("THETA", ANGLE_UNIT))
            )
            for h in hdus
        ]
        # TDIM (n_energy, n_offset) reads back as numpy (n_offset, n_energy): transpose to (energy, offset).
        stored = np.stack([_column(h, "BKG", RATE_UNIT, path).T for h in hdus])
    if any(not (np.array_equal(e, grids[0][0]) and np.array_equal(o, grids[0][1])) for e, o in grids):
        raise StoreError("the BKG_2D HDUs have different energy or offset bins", path=path)
    binning = Binning(zenith=_edges(zen[:, 0], zen[:, 1], "zenith band", path), energy=grids[0][0], offset=grids[0][1])
    run_zenith = np.asarray(runs["ZEN_PNT"].quantity.to_value(ANGLE_UNIT), np.float64)
    band = band_index(run_zenith, binning.zenith)
    used = (run_error == "") & (band >= 0)
    counts = np.stack([(run_counts * (used & (band == i))[:, None, None]).sum(axis=0) for i in range(len(hdus))])
    cube = assemble_cube(
        binning,
        counts=counts,
        run_counts=run_counts,
        run_error=run_error,
        run_safe=run_safe,
        obs_id=np.asarray(runs["OBS_ID"], dtype=np.int64),
        run_zenith=run_zenith,
        run_livetime=np.asarray(runs["LIVETIME"].quantity.to_value(TIME_UNIT), np.float64),
        run_threshold=np.asarray(runs["SAFE_ENERGY_LO"].quantity.to_value(ENERGY_UNIT), np.float64),
        run_tstart=np.asarray(runs["TSTART"].quantity.to_value(TIME_UNIT), np.float64),
        attrs={
            "source": str(path),
            "excluded_runs": runs["OBS_ID"][band < 0].tolist(),
            "safe_energy": int(safe_energy),
        },
    )
    if smoothing is not None:
        cube = smooth_cube(cube, **smoothing)
    if not np.allclose(cube["rate"].values, stored, rtol=1e-12, atol=0):
        raise StoreError("the stored BKG differs from the runs' counts / exposure: the file was changed after writing", path=path)
    return cube
