"""Fill the energy x offset x zenith histogram and return it as one labelled cube.

The cube is an :class:`xarray.Dataset` with dims :data:`bkgxr.axes.DIMS`:

``counts`` (int64)
    Events per bin, from boost-histogram through dask-histogram.
``livetime`` (zenith; s)
    Summed LIVETIME of the runs of each band.
``exposure`` (s MeV sr)
    ``livetime * dE[MeV] * dOmega[sr]`` with ``dOmega = 2 pi (cos r1 - cos r2)``.
``rate``, ``rate_err`` (MeV-1 s-1 sr-1)
    ``counts / exposure`` and its Poisson error ``sqrt(counts) / exposure``.
    Bins of zero counts have rate 0; bins of zero exposure (a band without
    runs) have rate 0 and error 0, and ``has_exposure`` is False there.

plus one row per run along ``obs_id`` (``run_zenith``, ``run_livetime``,
``run_band``) and the bin edges as ``*_lo``/``*_hi`` coordinates.
:func:`build_cube` returns it lazily: coordinates and metadata are known at
once, ``counts`` and what derives from it are dask arrays until ``.compute()``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import boost_histogram as bh
import dask_histogram as dh
import numpy as np
import xarray as xr

from .axes import DIMS, Binning, band_labels
from .events import open_events
from .exceptions import EmptySelectionError
from .geometry import ring_solid_angle_sr
from .units import ENERGY_UNIT, RATE_ENERGY_UNIT, RATE_UNIT, scale_to

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

#: How a run's zenith picks its band in the cube.
ZENITH_RULE = "band containing the run's pointing zenith ZEN_PNT: lo <= zenith < hi"


def band_index(zenith: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Return the index of the band ``lo <= zenith < hi`` of each value, -1 if none.

    NaN and values outside ``[edges[0], edges[-1])`` give -1.
    """
    zenith = np.asarray(zenith, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(edges, zenith, side="right") - 1
    inside = (index >= 0) & (index < edges.size - 1) & np.isfinite(zenith)
    return np.where(inside, index, -1).astype(np.int64)


def exposure_s_mev_sr(
    livetime_s: npt.ArrayLike, binning: Binning
) -> npt.NDArray[np.float64]:
    """Return livetime x dE[MeV] x dOmega[sr] per bin.

    Parameters
    ----------
    livetime_s : array-like
        Livetime per zenith band in s. Shape: (n_zenith,).
    binning : Binning

    Returns
    -------
    numpy.ndarray
        Shape: (n_zenith, n_energy, n_offset).
    """
    d_energy = np.diff(binning.energy) * scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT)
    d_omega = ring_solid_angle_sr(binning.offset)
    livetime = np.asarray(livetime_s, dtype=np.float64)
    return livetime[:, None, None] * d_energy[None, :, None] * d_omega[None, None, :]


def rate_from_counts(counts: xr.DataArray, exposure: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Return rate and Poisson error, 0 where the exposure is 0 (never NaN/inf)."""
    has = exposure > 0
    safe = exposure.where(has, 1.0)
    rate = (counts / safe).where(has, 0.0)
    err = (np.sqrt(counts) / safe).where(has, 0.0)
    return rate, err


def _histogram(runs: pd.DataFrame, binning: Binning) -> xr.DataArray:
    events = open_events(runs)
    histref = bh.Histogram(*binning.boost_axes(), storage=bh.storage.Int64())
    agg = dh.factory(events, histref=histref)
    counts = agg.to_dask_array(flow=False)[0]
    return xr.DataArray(counts, dims=DIMS, attrs={"units": "", "long_name": "event counts"})


def build_cube(runs: pd.DataFrame, *, binning: Binning | None = None) -> xr.Dataset:
    """Build the lazy background cube of ``runs``.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table from :meth:`bkgxr.Store.select`.
    binning : Binning, optional
        Edges of zenith, energy and offset; the tutorial's defaults if omitted.

    Returns
    -------
    xarray.Dataset
        Dims (zenith, energy, offset) and obs_id; dask-backed until computed.
        See the module docstring for its variables.

    Raises
    ------
    EmptySelectionError
        If no run falls in any zenith band.

    Warns
    -----
    UserWarning
        For runs outside every zenith band (left out and listed in
        ``attrs["excluded_runs"]``) and for bands without runs.

    Examples
    --------
    >>> store = open_store(path)                         # doctest: +SKIP
    >>> cube = build_cube(store.select(OFF_QUERY)).compute()  # doctest: +SKIP
    >>> cube.rate.sel(offset=0.5, method="nearest").plot.line(x="energy", xscale="log")  # doctest: +SKIP
    """
    binning = Binning() if binning is None else binning
    band = band_index(runs["ZEN_PNT"].to_numpy(), binning.zenith)
    excluded = runs.loc[band < 0, "OBS_ID"].astype(int).tolist()
    if excluded:
        warnings.warn(
            f"{len(excluded)} run(s) outside every zenith band {binning.zenith.tolist()} "
            f"deg are left out: {excluded}",
            stacklevel=2,
        )
    used = runs[band >= 0].reset_index(drop=True)
    band = band[band >= 0]
    if used.empty:
        raise EmptySelectionError("no run falls in any zenith band")
    n_bands = binning.shape[0]
    livetime = np.bincount(band, weights=used["LIVETIME"].to_numpy(np.float64), minlength=n_bands)
    n_runs = np.bincount(band, minlength=n_bands)
    labels = band_labels(binning.zenith)
    empty = [labels[i] for i in np.flatnonzero(n_runs == 0)]
    if empty:
        warnings.warn(f"zenith band(s) {empty} deg have no run: their rate is 0", stacklevel=2)

    counts = _histogram(used, binning)
    exposure = xr.DataArray(
        exposure_s_mev_sr(livetime, binning),
        dims=DIMS,
        attrs={"units": "MeV s sr", "long_name": "livetime x dE x dOmega"},
    )
    rate, rate_err = rate_from_counts(counts, exposure)
    rate.attrs = {"units": str(RATE_UNIT), "long_name": "background rate dN/(dt dE dOmega)"}
    rate_err.attrs = {"units": str(RATE_UNIT), "long_name": "Poisson error of the rate"}
    cube = xr.Dataset(
        {
            "counts": counts,
            "exposure": exposure,
            "rate": rate,
            "rate_err": rate_err,
            "has_exposure": exposure > 0,
            "livetime": ("zenith", livetime, {"units": "s", "long_name": "summed LIVETIME"}),
            "n_runs": ("zenith", n_runs, {"units": "", "long_name": "runs per band"}),
            "run_zenith": ("obs_id", used["ZEN_PNT"].to_numpy(np.float64), {"units": "deg"}),
            "run_livetime": ("obs_id", used["LIVETIME"].to_numpy(np.float64), {"units": "s"}),
            "run_band": ("obs_id", band, {"units": "", "long_name": "zenith band index"}),
        },
        coords={
            **binning.coords(),
            "zenith_band": ("zenith", labels, {"long_name": "zenith band (deg)"}),
            "obs_id": ("obs_id", used["OBS_ID"].to_numpy(np.int64)),
        },
        attrs={
            "zenith_assignment": ZENITH_RULE,
            "excluded_runs": excluded,
            "rate_without_exposure": "0 (see has_exposure)",
        },
    )
    return cube


def binning_of(cube: xr.Dataset) -> Binning:
    """Return the :class:`Binning` a cube was built with, from its edge coordinates."""
    return Binning(
        **{d: np.append(cube[f"{d}_lo"].values, cube[f"{d}_hi"].values[-1]) for d in DIMS}
    )
