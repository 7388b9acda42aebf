"""The expected counts and rates of a simulated store: the truth the engine must recover on average.

:func:`bin_integrals` integrates :class:`bkgxr.simulate.RateModel` over each
energy x offset bin; :func:`truth_cube` sums it over a store's runs into the
expected counts and the bin-averaged rate per ONTIME, in the layout of
:func:`bkgxr.build_cube`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import xarray as xr

from .axes import (
    DIMS,
    Binning,
    band_index,
    band_labels,
    exposure_s_mev_sr,
    rate_from_counts,
)
from .io.store import Store
from .simulate import TIME_COLUMN, TRUTH_TIMES, RateModel, TruthTime
from .units import ENERGY_UNIT, RATE_ENERGY_UNIT, RATE_UNIT, scale_to

if TYPE_CHECKING:
    import numpy.typing as npt

_GL = 12  # Gauss-Legendre nodes per bin and dim
_MEV_PER_TEV = scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT)


def bin_integrals(model: RateModel, zenith_deg: float, binning: Binning) -> npt.NDArray[np.float64]:
    """Return the integral of the rate dE (MeV) dOmega (sr) over each energy x offset bin (s-1).

    Gauss-Legendre in ln E and cos(offset) over each bin clipped to the model's support.
    Shape: (n_energy, n_offset).
    """
    nodes, weights = np.polynomial.legendre.leggauss(_GL)
    lo, hi = (np.log(np.clip(e, model.energy_min, model.energy_max)) for e in (binning.energy[:-1], binning.energy[1:]))
    log_e = 0.5 * (lo + hi)[:, None] + 0.5 * (hi - lo)[:, None] * nodes
    w_energy = 0.5 * (hi - lo)[:, None] * weights * np.exp(log_e) * _MEV_PER_TEV
    cos = np.cos(np.radians(np.minimum(binning.offset, model.max_offset)))
    offset = np.degrees(np.arccos(0.5 * (cos[:-1] + cos[1:])[:, None] + 0.5 * (cos[:-1] - cos[1:])[:, None] * nodes))
    w_offset = 0.5 * (cos[:-1] - cos[1:])[:, None] * weights * 2.0 * np.pi
    rate = model.rate(np.exp(log_e)[:, :, None, None], offset[None, None], zenith_deg)
    return np.einsum("ik,jl,ikjl->ij", w_energy, w_offset, rate)  # type: ignore[no-any-return]


def truth_cube(
    runs: pd.DataFrame | Store,
    model: RateModel | None = None,
    binning: Binning | None = None,
    *,
    truth_time: TruthTime | None = None,
) -> xr.Dataset:
    """Return the expected counts and the bin-averaged rate per ONTIME in the layout of :func:`bkgxr.build_cube`.

    Per zenith band (``lo <= ZEN_PNT < hi``), ``counts`` sums over its runs
    T x :func:`bin_integrals`, T each run's ONTIME or LIVETIME as ``truth_time``
    says; ``exposure`` is the summed ONTIME x dE x dOmega, so ``rate = counts /
    exposure`` is the rate per observation time a model file holds and
    ``build_cube`` recovers on average (for ``truth_time="livetime"``,
    ``sum(LIVETIME x rate) / sum(ONTIME)`` over the band's runs);
    ``rate_err = sqrt(counts) / exposure``.

    Parameters
    ----------
    runs : pandas.DataFrame or Store
        Run table (OBS_ID, ZEN_PNT, ONTIME, LIVETIME) or a simulated store (all its runs).
    model : RateModel, optional
        The truth; read from the store's obs-index header if omitted.
    binning : Binning, optional
        Edges; the tutorial's defaults if omitted.
    truth_time : {"ontime", "livetime"}, optional
        The time ``model`` is a rate per. Default: a store's ``SIMTIME`` keyword
        (``"livetime"`` in stores written before it existed), else ``"ontime"``.

    Returns
    -------
    xarray.Dataset
        Dims (zenith, energy, offset) and obs_id, numpy-backed.

    Raises
    ------
    ValueError
        If the model is missing, a column is missing or ``truth_time`` contradicts the store.
    """
    if isinstance(runs, Store):
        meta = runs.obs_table.meta
        model = RateModel.from_meta(meta) if model is None else model
        stored = str(meta.get("SIMTIME", "livetime")).strip()
        if truth_time not in (None, stored):
            raise ValueError(f"{runs.root}: the store's truth is per {stored} (SIMTIME), not {truth_time}")
        truth_time, runs = cast("TruthTime", stored), runs.select()
    truth_time = "ontime" if truth_time is None else truth_time
    if model is None:
        raise ValueError("truth_cube needs a model unless given a simulated Store")
    if truth_time not in TRUTH_TIMES:
        raise ValueError(f"truth_time must be one of {TRUTH_TIMES}, not {truth_time!r}")
    missing = [name for name in ("OBS_ID", "ZEN_PNT", "ONTIME", "LIVETIME") if name not in runs]
    if missing:
        raise ValueError(f"the run table lacks {', '.join(missing)}")
    binning = Binning() if binning is None else binning
    band = band_index(runs["ZEN_PNT"].to_numpy(np.float64), binning.zenith)
    used, band = runs[band >= 0].reset_index(drop=True), band[band >= 0]
    run_time = {name: used[column].to_numpy(np.float64) for name, column in TIME_COLUMN.items()}
    expected = np.zeros(binning.shape)
    for b, zenith, time in zip(band, used["ZEN_PNT"].to_numpy(np.float64), run_time[truth_time], strict=True):
        expected[b] += time * bin_integrals(model, zenith, binning)
    ontime, livetime = (np.bincount(band, weights=run_time[name], minlength=binning.shape[0]) for name in TRUTH_TIMES)
    counts = xr.DataArray(expected, dims=DIMS, attrs={"units": "", "long_name": "expected event counts"})
    exposure = xr.DataArray(exposure_s_mev_sr(ontime, binning), dims=DIMS, attrs={"units": "MeV s sr", "long_name": "ONTIME x dE x dOmega"})
    rate, rate_err = rate_from_counts(counts, exposure)
    rate.attrs = {"units": str(RATE_UNIT), "long_name": "true bin-averaged rate per observation time"}
    rate_err.attrs = {"units": str(RATE_UNIT), "long_name": "expected Poisson error of the rate"}
    return xr.Dataset(
        {"counts": counts, "exposure": exposure, "rate": rate, "rate_err": rate_err, "has_exposure": exposure > 0,
         "ontime": ("zenith", ontime, {"units": "s", "long_name": "summed ONTIME"}),
         "livetime": ("zenith", livetime, {"units": "s", "long_name": "summed LIVETIME"}),
         "n_runs": ("zenith", np.bincount(band, minlength=binning.shape[0]), {"units": "", "long_name": "runs per band"}),
         "run_zenith": ("obs_id", used["ZEN_PNT"].to_numpy(np.float64), {"units": "deg"}),
         "run_ontime": ("obs_id", run_time["ontime"], {"units": "s", "long_name": "ONTIME (GTI sum)"}),
         "run_livetime": ("obs_id", run_time["livetime"], {"units": "s", "long_name": "LIVETIME"}),
         "run_band": ("obs_id", band, {"units": "", "long_name": "zenith band index"})},
        coords={**binning.coords(), "obs_id": ("obs_id", used["OBS_ID"].to_numpy(np.int64)),
                "zenith_band": ("zenith", band_labels(binning.zenith.tolist()), {"long_name": "zenith band (deg)"})},
        attrs={"truth": repr(model), "truth_time": truth_time, "rate_time": "ONTIME",
               "excluded_runs": runs["OBS_ID"][~runs["OBS_ID"].isin(used["OBS_ID"])].astype(int).tolist()},
    )
