"""Write the cube as GADF BKG_2D models with HDU and observation index tables.

One FITS file holds, in order: a primary HDU stating how it was made,
``HDU_INDEX``, ``OBS_INDEX``, ``RUNS`` (the runs each model was built from)
and one ``BKG_2D`` HDU per zenith band. The HDU index keeps every row of the
source store, with ``FILE_DIR`` rewritten relative to the output file, and
points each observation's ``bkg`` row to the model of its zenith band, so
``gammapy.data.DataStore.from_file(path)`` loads it as the observation's bkg.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/irfs/full_enclosure/bkg/
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Row, Table

from ..axes import Outside, assign_bands, band_labels, binning_of
from ..smooth import OPTIONS, smooth_cube
from ..units import ANGLE_UNIT, ENERGY_UNIT, RATE_UNIT
from ..zenith import (
    DEFAULT_ZENITH_MODEL,
    KERNEL_SIGMA,
    KERNEL_TIME_SIGMA,
    ZenithModel,
    predict_rates,
)
from .load import SMOOTH_KEYWORDS

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy.typing as npt
    import pandas as pd
    import xarray as xr

    from .store import Store

#: Keywords every GADF HDU written here carries (copied per HDU, never shared).
DEFAULT_HEADER = {"HDUCLASS": "GADF", "HDUDOC": "https://github.com/open-gamma-ray-astro/gamma-astro-data-formats", "HDUVERS": "0.2"}

def bkg_hdu_name(lo: float, hi: float) -> str:
    """Return the EXTNAME of the model of zenith band ``[lo, hi)``, e.g. ``BKG_ZEN_0_20``."""
    return f"BKG_ZEN_{lo:g}_{hi:g}".replace(".", "p")


def create_bkg_2d_hdu(
    rate: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    *,
    extname: str,
    meta: Mapping[str, object] | None = None,
) -> fits.BinTableHDU:
    """Create a GADF ``BKG_2D`` HDU.

    Parameters
    ----------
    rate : array-like
        Background rate in MeV-1 s-1 sr-1. Shape: (n_energy, n_offset).
    energy_edges : array-like
        Energy edges in TeV. Shape: (n_energy + 1,).
    offset_edges : array-like
        Offset edges in deg. Shape: (n_offset + 1,).
    extname : str
        Name of the HDU.
    meta : dict, optional
        Extra header keywords.

    Raises
    ------
    ValueError
        If the rate is not finite and non-negative, or its shape does not match.
    """
    rate = np.asarray(rate, dtype=np.float64)
    energy_edges = np.asarray(energy_edges, dtype=np.float64)
    offset_edges = np.asarray(offset_edges, dtype=np.float64)
    if rate.shape != (energy_edges.size - 1, offset_edges.size - 1):
        raise ValueError(f"rate shape {rate.shape} does not match the edges")
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise ValueError(f"{extname}: refusing to write a non-finite or negative rate")
    n_e, n_o = rate.shape
    columns = [
        fits.Column("ENERG_LO", f"{n_e}D", unit=str(ENERGY_UNIT), array=energy_edges[None, :-1]),
        fits.Column("ENERG_HI", f"{n_e}D", unit=str(ENERGY_UNIT), array=energy_edges[None, 1:]),
        fits.Column("THETA_LO", f"{n_o}D", unit=str(ANGLE_UNIT), array=offset_edges[None, :-1]),
        fits.Column("THETA_HI", f"{n_o}D", unit=str(ANGLE_UNIT), array=offset_edges[None, 1:]),
        # FITS stores the last numpy axis fastest: the (energy, offset) array is written
        # transposed, TDIM = (n_energy, n_offset), as gammapy's IRF.to_table does.
        fits.Column("BKG", f"{n_e * n_o}D", unit=RATE_UNIT.to_string("fits"), dim=f"({n_e},{n_o})", array=rate.T[None]),
    ]
    header = fits.Header(
        {**DEFAULT_HEADER, "HDUCLAS1": "RESPONSE", "HDUCLAS2": "BKG", "HDUCLAS3": "FULL-ENCLOSURE", "HDUCLAS4": "BKG_2D"}
    )
    for key, value in (meta or {}).items():
        header[key] = value
    return fits.BinTableHDU.from_columns(columns, header=header, name=extname)


def _relative_dir(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # no relative path between drives
        return target.as_posix()


def _cell(row: Row, name: str) -> str:
    """Return a text cell of an index row, '' where the column is missing or the cell masked."""
    value = row[name] if name in row.colnames else ""
    return "" if value is np.ma.masked else str(value).strip()


def hdu_index_table(
    store: Store, out: Path, obs_ids: npt.ArrayLike, hdu_names: list[str]
) -> Table:
    """Return the store's HDU index for a file at ``out``, bkg rows replaced.

    Parameters
    ----------
    store : Store
        Source store; all its non-bkg rows are kept, paths made relative to ``out``.
    out : pathlib.Path
        Path of the file the index is written to.
    obs_ids, hdu_names : array-like, list of str
        Each observation and the name of its BKG HDU in ``out`` ('' for none).
    """
    out_dir = out.resolve().parent
    rows = []
    for row in store.hdu_table:
        hdu_type = str(row["HDU_TYPE"]).strip().lower()
        if hdu_type == "bkg":
            continue
        file_dir = _relative_dir(store.file_path(row).parent, out_dir)
        rows.append(
            (int(row["OBS_ID"]), hdu_type, _cell(row, "HDU_CLASS") or hdu_type, file_dir,
             Path(str(row["FILE_NAME"]).strip()).name, _cell(row, "HDU_NAME") or hdu_type.upper())
        )
    for obs_id, name in zip(np.asarray(obs_ids).tolist(), hdu_names, strict=True):
        if name:
            rows.append((int(obs_id), "bkg", "bkg_2d", ".", out.name, name))
    rows.sort(key=lambda r: (r[0], r[1]))
    table = Table(rows=rows, names=("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME", "HDU_NAME"))
    table.meta.update({**DEFAULT_HEADER, "HDUCLAS1": "INDEX", "HDUCLAS2": "HDU"})
    return table


def check_output(path: str | Path, *, overwrite: bool = True) -> Path:
    """Check, without writing anything, that ``path`` can become the output file.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a folder.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    PermissionError
        If the nearest existing folder above ``path`` is not a writable folder.
    """
    path = Path(path)
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


def write_atomic(hdul: fits.HDUList, path: str | Path, *, overwrite: bool = True, tail: bytes = b"") -> Path:
    """Write ``hdul`` to a temporary file beside ``path`` and rename it into place.

    A failure leaves no partial file and any existing ``path`` untouched.
    ``tail`` holds further complete HDUs (see :func:`bkg_2d_hdus_bytes`),
    appended after ``hdul``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        If ``path`` is a folder.
    """
    path = check_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        # every HDU is built here from valid parts: astropy's verification pass would
        # cost more than the writing itself for thousands of per-observation models
        hdul.writeto(tmp, overwrite=True, checksum=False, output_verify="ignore")
        if tail:
            with open(tmp, "ab") as out:
                out.write(tail)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_models(
    cube: xr.Dataset,
    path: str | Path,
    *,
    store: Store,
    zenith_model: ZenithModel = DEFAULT_ZENITH_MODEL,
    sigma: float = KERNEL_SIGMA,
    time_sigma: float | None = KERNEL_TIME_SIGMA,
    smooth: Mapping[str, Any] | None = None,
    outside: Outside = "nearest",
    date: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write BKG_2D models and index tables for every observation of ``store``.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube from :func:`bkgxr.build_cube` (computed here if still lazy).
    path : str or pathlib.Path
        Output FITS file; ``DataStore.from_file(path)`` loads it.
    store : Store
        Store whose observations (all of them, not only the runs of the
        cube) get a bkg row.
    zenith_model : {"bands", "interpolate", "kernel"}
        ``bands``: each observation gets the model of its zenith band (the
        tutorial's recipe). Otherwise (default: ``kernel``, which validates
        best on H.E.S.S. DR1) each observation gets its own BKG_2D,
        ``BKG_OBS_<OBS_ID>``, evaluated at its zenith (and time) by
        :func:`bkgxr.zenith.predict_rates`. The band models are written in
        every case.
    sigma, time_sigma : float
        Kernel widths in cos(zenith) and years (``kernel`` only; time_sigma
        None for no time kernel).
    smooth : mapping, optional
        Smooth every model with these options of
        :func:`bkgxr.smooth.smooth_rate` (``{}`` for its defaults); None for
        the raw counts / exposure. Stated in the header (SMOOTH, SM*).
    outside : {"nearest", "none"}
        ``bands`` only: observations whose zenith lies outside every band get
        the nearest band's model, or no model (with a warning).
    date : str, optional
        Value of the DATE keyword; today's UTC date if omitted. Pass it to
        make output byte-reproducible.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    cube = cube.compute()
    path = Path(path)
    smoothing = None if smooth is None else {**OPTIONS, **smooth}
    models = cube if smoothing is None else smooth_cube(cube, **smoothing)
    binning = binning_of(cube)
    labels = band_labels(binning.zenith)
    names = [bkg_hdu_name(lo, hi) for lo, hi in zip(binning.zenith[:-1], binning.zenith[1:], strict=True)]
    obs = store.select(skip_bad=True)
    band = assign_bands(obs["ZEN_PNT"].to_numpy(), binning.zenith, outside=outside)
    band[obs["ERROR"].to_numpy() != ""] = -1
    if np.any(band < 0):
        lost = obs.loc[band < 0, "OBS_ID"].astype(int).tolist()
        warnings.warn(f"{len(lost)} observation(s) outside every zenith band or unreadable get no bkg model: {lost}", stacklevel=2)
    zero = [labels[i] for i in np.flatnonzero(cube["counts"].sum(("energy", "offset")).values == 0)]
    if zero:  # also with skip_bad, where build_cube cannot tell which bands stay empty
        warnings.warn(f"zenith band(s) {zero} deg hold no event (no run, or none in the binned range): written as zeros", stacklevel=2)
    if zenith_model == "bands":
        if np.any(cube["n_runs"].values[band[band >= 0]] == 0):
            warnings.warn("observations are assigned a zenith band without runs: their model is 0", stacklevel=2)
        hdu_names = [names[b] if b >= 0 else "" for b in band]
        extra = b""
    else:
        hdu_names, extra = _observation_hdus(cube, obs, band >= 0, zenith_model, sigma, time_sigma, smoothing)

    primary = fits.PrimaryHDU()
    primary.header["CREATOR"] = "bkgxr"
    primary.header["DATE"] = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    primary.header["ZENMODEL"] = (zenith_model, "zenith recipe: bands, interpolate or kernel")
    if zenith_model == "kernel":
        primary.header["KSIGMA"] = (sigma, "kernel width in cos(zenith)")
        primary.header["KTSIGMA"] = (time_sigma or 0.0, "[yr] kernel width in time (0: none)")
    primary.header["ZENRULE"] = (outside, "bands: obs outside all bands: nearest or none")
    primary.header["COMMENT"] = "bands: an observation gets the model of the band containing ZEN_PNT (lo <= z < hi)"
    primary.header["NRUNS"] = (int(cube["run_used"].sum()), "off runs the models were built from")
    primary.header["NSKIPPED"] = (int((~cube["run_used"]).sum()), "runs left out: see RUNS.ERROR")
    primary.header["SAFEENER"] = (bool(cube.attrs.get("safe_energy", 0)), "runs used only in their safe energy bins")
    primary.header["SMOOTH"] = (smoothing is not None, "models smoothed by bkgxr.smooth (SM* options)")
    for key, (name, comment) in SMOOTH_KEYWORDS.items():
        if smoothing is not None:
            primary.header[key] = (smoothing[name], comment)

    obs_table = store.obs_table.copy(copy_data=True)
    obs_table.meta.update({"EXTNAME": "OBS_INDEX", "BKGZRULE": outside, "ZENMODEL": zenith_model})
    # The run table is sorted by OBS_ID; the obs index keeps its own row order.
    order = {int(o): i for i, o in enumerate(obs["OBS_ID"])}
    keep = [order[int(o)] for o in obs_table["OBS_ID"]]
    obs_table["BKG_HDU"] = [hdu_names[i] for i in keep]
    obs_table["BKG_ZEN_BAND"] = [labels[band[i]] if band[i] >= 0 else "" for i in keep]

    hdus = [
        primary,
        fits.table_to_hdu(hdu_index_table(store, path, obs["OBS_ID"], hdu_names)),
        fits.table_to_hdu(obs_table),
        fits.table_to_hdu(runs_table(cube)),
    ]
    hdus[1].name, hdus[2].name, hdus[3].name = "HDU_INDEX", "OBS_INDEX", "RUNS"
    for i, name in enumerate(names):
        band_cube = models.isel(zenith=i)
        hdus.append(
            create_bkg_2d_hdu(
                band_cube["rate"].transpose("energy", "offset").values,
                binning.energy,
                binning.offset,
                extname=name,
                meta={
                    "ZEN_LO": (float(binning.zenith[i]), "[deg] zenith band lower edge"),
                    "ZEN_HI": (float(binning.zenith[i + 1]), "[deg] zenith band upper edge"),
                    "LIVETIME": (float(band_cube["livetime"]), "[s] summed livetime of the runs"),
                    "NRUNS": (int(band_cube["n_runs"]), "runs in this band"),
                    "NEVENTS": (int(band_cube["counts"].sum()), "events in the binned range"),
                },
            )
        )
    return write_atomic(fits.HDUList(hdus), path, overwrite=overwrite, tail=extra)


def _observation_hdus(
    cube: xr.Dataset,
    obs: pd.DataFrame,
    modelled: npt.NDArray[np.bool_],
    zenith_model: ZenithModel,
    sigma: float,
    time_sigma: float | None,
    smooth: Mapping[str, Any] | None,
) -> tuple[list[str], bytes]:
    """Return each observation's HDU name ('' for none) and the BKG_2D HDUs of the modelled ones, as FITS bytes."""
    binning = binning_of(cube)
    index = np.flatnonzero(modelled)
    time = obs["TSTART"].to_numpy(np.float64)[index] if "TSTART" in obs else None
    rate, n_eff = predict_rates(
        cube,
        obs["ZEN_PNT"].to_numpy(np.float64)[index],
        model=zenith_model,
        sigma=sigma,
        time=time,
        time_sigma=time_sigma,
        smooth=smooth,
    )
    names = [""] * len(obs)
    metas = []
    for k, i in enumerate(index):
        obs_id = int(obs["OBS_ID"].iloc[i])
        names[i] = f"BKG_OBS_{obs_id}"
        metas.append(
            {
                "EXTNAME": (names[i], "name of this binary table extension"),
                "OBS_ID": (obs_id, "observation this model is for"),
                "ZEN_PNT": (float(obs["ZEN_PNT"].iloc[i]), "[deg] zenith the model is evaluated at"),
                "ZENMODEL": (zenith_model, "zenith recipe"),
                "N_EFF": (round(float(n_eff[k]), 6), "effective number of runs behind the model"),
            }
        )
    return names, bkg_2d_hdus_bytes(rate, binning.energy, binning.offset, metas)


def bkg_2d_hdus_bytes(
    rates: npt.NDArray[np.float64],
    energy_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    metas: list[dict[str, tuple[object, str]]],
) -> bytes:
    """Serialise many BKG_2D HDUs of one binning as FITS bytes, to append to a file.

    astropy builds the first (:func:`create_bkg_2d_hdu`); the others reuse its
    header, with the cards of ``metas`` (the same keys in every entry,
    ``EXTNAME`` among them) replaced, and its row layout with their rate. That
    costs microseconds per model instead of astropy's milliseconds, which
    matters for one model per observation of a large production.

    Parameters
    ----------
    rates : numpy.ndarray
        MeV-1 s-1 sr-1. Shape: (n_models, n_energy, n_offset).
    energy_edges, offset_edges : array-like
        TeV and deg, shared by all models.
    metas : list of dict
        Header cards (value, comment) of each model.
    """
    if not metas:
        return b""
    first = dict(metas[0])
    extname = str(first.pop("EXTNAME")[0])
    template = create_bkg_2d_hdu(rates[0], energy_edges, offset_edges, extname=extname, meta=first)
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError("refusing to write a non-finite or negative rate")
    if any(len(card.image) != 80 for card in template.header.cards):  # a long value spans cards
        raise ValueError("the BKG_2D header has a multi-card value; cannot reuse its layout")
    text = template.header.tostring()
    position = {card.keyword: i for i, card in enumerate(template.header.cards)}
    native = np.array(template.data).view(np.ndarray)  # one row; astropy hands it out native-endian
    row = native.astype(native.dtype.newbyteorder(">"))  # FITS is big-endian
    data_pad = b"\0" * (-row.nbytes % 2880)
    out = []
    for rate, meta in zip(rates, metas, strict=True):
        cards = [text[i : i + 80] for i in range(0, len(text), 80)]
        for key, (value, comment) in meta.items():
            image = fits.Card(key, value, comment).image
            if len(image) != 80:
                raise ValueError(f"header card {key}={value!r} does not fit one card")
            cards[position[key]] = image
        row["BKG"][0] = np.asarray(rate, dtype=np.float64).T
        out += ["".join(cards).encode("ascii"), row.tobytes(), data_pad]
    return b"".join(out)


def runs_table(cube: xr.Dataset) -> Table:
    """Return the RUNS table: every run of the cube, its counts, safe bins and fate."""
    n_e, n_o = cube.sizes["energy"], cube.sizes["offset"]
    table = Table(
        {
            "OBS_ID": cube["obs_id"].values,
            "ZEN_PNT": cube["run_zenith"].values,
            "LIVETIME": cube["run_livetime"].values,
            "SAFE_ENERGY_LO": cube["run_threshold"].values,
            "TSTART": cube["run_tstart"].values,
            "BAND": cube["run_band"].values,
            "USED": cube["run_used"].values,
            "ERROR": np.asarray(cube["run_error"].values, dtype=str),
            # (energy, offset) per run, written transposed like BKG: TDIM (n_energy, n_offset)
            "COUNTS": cube["run_counts"].transpose("obs_id", "offset", "energy").values,
            "SAFE": cube["run_safe"].values,
        },
        units={"ZEN_PNT": "deg", "LIVETIME": "s", "SAFE_ENERGY_LO": "TeV", "TSTART": "s"},
    )
    table.meta.update({"EXTNAME": "RUNS", "COMMENT": f"COUNTS per run: (energy, offset) = ({n_e}, {n_o})"})
    return table
