"""The expected counts and rates of a simulated store: the truth the engine must recover on average.

:func:`bin_integrals` integrates :class:`bkgxr.rate_model.RateModel` over each
energy x offset bin; :func:`truth_cube` sums it over a store's runs (or, for a
store drawn along the zenith tracks, over their slices) into the expected counts
and the bin-averaged rate per ONTIME, in the layout of :func:`bkgxr.build_cube`.
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
from .geometry import segment_shares
from .io.store import Store
from .rate_model import TIME_COLUMN, TRUTH_TIMES, RateModel, TruthTime
from .simulate import pointing_track
from .units import ENERGY_UNIT, RATE_ENERGY_UNIT, RATE_UNIT, scale_to

if TYPE_CHECKING:
    import numpy.typing as npt

_GL = 12  # Gauss-Legendre nodes per bin and dim
_MEV_PER_TEV = scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT)


def bin_integrals(model: RateModel, zenith_deg: npt.ArrayLike, binning: Binning) -> npt.NDArray[np.float64]:
    """Return the integral of the rate dE (MeV) dOmega (sr) over each energy x offset bin (s-1).

    Gauss-Legendre in ln E and cos(offset), 12 nodes each, over each bin clipped
    to the model's support, of its product form ``rate(E, r, z) = rate(E, 0, z)
    x acceptance(r)``. Shape: (*zenith.shape, n_energy, n_offset).
    """
    return _energy_integrals(model, zenith_deg, binning)[..., None] * _offset_integrals(model, binning)


def _energy_integrals(model: RateModel, zenith_deg: npt.ArrayLike, binning: Binning) -> npt.NDArray[np.float64]:
    """Return the on-axis rate integrated dE (MeV) over each energy bin. Shape: (*zenith.shape, n_energy)."""
    nodes, weights = np.polynomial.legendre.leggauss(_GL)
    lo, hi = (np.log(np.clip(e, model.energy_min, model.energy_max)) for e in (binning.energy[:-1], binning.energy[1:]))
    log_e = 0.5 * (lo + hi)[:, None] + 0.5 * (hi - lo)[:, None] * nodes
    w_energy = 0.5 * (hi - lo)[:, None] * weights * np.exp(log_e) * _MEV_PER_TEV
    zenith = np.asarray(zenith_deg, dtype=np.float64)[..., None, None]
    return np.sum(w_energy * model.rate(np.exp(log_e), 0.0, zenith), axis=-1)  # type: ignore[no-any-return]


def _offset_integrals(model: RateModel, binning: Binning) -> npt.NDArray[np.float64]:
    """Return the acceptance integrated dOmega (sr) over each offset bin. Shape: (n_offset,)."""
    nodes, weights = np.polynomial.legendre.leggauss(_GL)
    cos = np.cos(np.radians(np.minimum(binning.offset, model.max_offset)))
    offset = np.degrees(np.arccos(0.5 * (cos[:-1] + cos[1:])[:, None] + 0.5 * (cos[:-1] - cos[1:])[:, None] * nodes))
    w_offset = 0.5 * (cos[:-1] - cos[1:])[:, None] * weights * 2.0 * np.pi
    return np.sum(w_offset * model.acceptance(offset), axis=-1)  # type: ignore[no-any-return]


def truth_cube(
    runs: pd.DataFrame | Store,
    model: RateModel | None = None,
    binning: Binning | None = None,
    *,
    truth_time: TruthTime | None = None,
    track_slices: int | None = None,
) -> xr.Dataset:
    """Return the expected counts and the bin-averaged rate per ONTIME in the layout of :func:`bkgxr.build_cube`.

    Per zenith band (``lo <= ZEN_PNT < hi``), ``counts`` sums over its runs
    T x :func:`bin_integrals`, T each run's ONTIME or LIVETIME as ``truth_time``
    says; ``exposure`` is the summed ONTIME x dE x dOmega, so ``rate = counts /
    exposure`` is the rate per observation time a model file holds and
    ``build_cube(..., event_zenith=False)`` recovers on average (for
    ``truth_time="livetime"``, ``sum(LIVETIME x rate) / sum(ONTIME)`` over the
    band's runs); ``rate_err = sqrt(counts) / exposure``.

    A store drawn along the zenith tracks (``simulate_store(track=True)``,
    ``SIMTRACK`` = n slices) drew slice k of a run (T / n, zenith z_k at its
    midpoint, :func:`bkgxr.simulate.pointing_track`) at the rate of z_k with
    times uniform in the slice. Its truth shares each slice among the bands as
    its pointing moves through them: linearly between the zeniths at the slice's
    bounds, the share s_kb of its time in band b (:func:`bkgxr.geometry.segment_shares`).
    Then ``counts[b] = sum over runs and k of (T / n) s_kb bin_integrals(z_k)``
    and ``ontime[b] = sum ONTIME / n x s_kb``. This is what
    ``build_cube(..., event_zenith=True)`` expects: it places each event by the
    zenith at its TIME, linear between the same n + 1 bounds (n = 32 =
    :data:`bkgxr.track.EVENT_SLICES`) and shares ONTIME the same way
    (:func:`bkgxr.track.band_fractions`). Its bounds come from node maps, up to
    4e-6 deg from these (astropy, 6e-12 deg from its exact transformation), so
    a run's band fractions agree to 4e-6 and a band's ONTIME to 1.3e-6
    (measured on 60 and 100 runs at 20-50 deg, three in four crossing 3-deg
    bands). Giving each slice wholly to the band of z_k instead would move up to
    half a slice, 1/64 of a run, per edge crossing: up to 0.5% of a band's
    counts there. Runs in no band by ZEN_PNT are left out, as the cube does.

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
    track_slices : int, optional
        Slices per run along which the events were drawn (0: whole runs at
        ZEN_PNT). Default: the ``SIMTRACK`` keyword of a store or of the run
        table's ``attrs["OBS_META"]`` (:meth:`bkgxr.Store.select`), else 0;
        pass :attr:`bkgxr.simulate.Simulation.track_slices` with its ``runs``.

    Returns
    -------
    xarray.Dataset
        Dims (zenith, energy, offset) and obs_id, numpy-backed; ``run_band_fraction``
        (obs_id, zenith) is each run's share of time per band.

    Raises
    ------
    ValueError
        If the model is missing, a column is missing or ``truth_time`` or
        ``track_slices`` contradicts the store.
    """
    if isinstance(runs, Store):
        meta = runs.obs_table.meta
        model = RateModel.from_meta(meta) if model is None else model
        stored = str(meta.get("SIMTIME", "livetime")).strip()
        if truth_time not in (None, stored):
            raise ValueError(f"{runs.root}: the store's truth is per {stored} (SIMTIME), not {truth_time}")
        truth_time, runs = cast("TruthTime", stored), runs.select()
    truth_time = "ontime" if truth_time is None else truth_time
    meta = runs.attrs.get("OBS_META", {})
    if track_slices is not None and "SIMTRACK" in meta and track_slices != int(meta["SIMTRACK"]):
        raise ValueError(f"the store's events were drawn in {int(meta['SIMTRACK'])} slices per run (SIMTRACK), not {track_slices}")
    track_slices = int(meta.get("SIMTRACK", 0)) if track_slices is None else track_slices
    if model is None:
        raise ValueError("truth_cube needs a model unless given a simulated Store")
    if truth_time not in TRUTH_TIMES:
        raise ValueError(f"truth_time must be one of {TRUTH_TIMES}, not {truth_time!r}")
    if track_slices < 0:
        raise ValueError(f"track_slices must be >= 0, got {track_slices}")
    columns = ("OBS_ID", "ZEN_PNT", "ONTIME", "LIVETIME") + (("RA_PNT", "DEC_PNT", "TSTART", "TSTOP") if track_slices else ())
    missing = [name for name in columns if name not in runs]
    if missing:
        raise ValueError(f"the run table lacks {', '.join(missing)}")
    binning = Binning() if binning is None else binning
    band = band_index(runs["ZEN_PNT"].to_numpy(np.float64), binning.zenith)
    used, band = runs[band >= 0].reset_index(drop=True), band[band >= 0]
    run_time = {name: used[column].to_numpy(np.float64) for name, column in TIME_COLUMN.items()}
    zenith, share = _slice_shares(used, band, binning, track_slices)
    fraction = share.mean(axis=1)  # (run, band)
    energy = np.zeros(binning.shape[:2])
    for time, run_share, run_zenith in zip(run_time[truth_time], share, zenith, strict=True):
        energy += time / zenith.shape[1] * run_share.T @ _energy_integrals(model, run_zenith, binning)
    expected = energy[:, :, None] * _offset_integrals(model, binning)
    ontime, livetime = (run_time[name] @ fraction for name in TRUTH_TIMES)
    counts = xr.DataArray(expected, dims=DIMS, attrs={"units": "", "long_name": "expected event counts"})
    exposure = xr.DataArray(exposure_s_mev_sr(ontime, binning), dims=DIMS, attrs={"units": "MeV s sr", "long_name": "ONTIME x dE x dOmega"})
    rate, rate_err = rate_from_counts(counts, exposure)
    rate.attrs = {"units": str(RATE_UNIT), "long_name": "true bin-averaged rate per observation time"}
    rate_err.attrs = {"units": str(RATE_UNIT), "long_name": "expected Poisson error of the rate"}
    return xr.Dataset(
        {"counts": counts, "exposure": exposure, "rate": rate, "rate_err": rate_err, "has_exposure": exposure > 0,
         "ontime": ("zenith", ontime, {"units": "s", "long_name": "summed ONTIME"}),
         "livetime": ("zenith", livetime, {"units": "s", "long_name": "summed LIVETIME"}),
         "n_runs": ("zenith", np.sum(fraction > 0, axis=0), {"units": "", "long_name": "runs per band"}),
         "run_zenith": ("obs_id", used["ZEN_PNT"].to_numpy(np.float64), {"units": "deg"}),
         "run_ontime": ("obs_id", run_time["ontime"], {"units": "s", "long_name": "ONTIME (GTI sum)"}),
         "run_livetime": ("obs_id", run_time["livetime"], {"units": "s", "long_name": "LIVETIME"}),
         "run_band": ("obs_id", band, {"units": "", "long_name": "zenith band of ZEN_PNT"}),
         "run_band_fraction": (("obs_id", "zenith"), fraction, {"units": "", "long_name": "fraction of the run's time in the band"})},
        coords={**binning.coords(), "obs_id": ("obs_id", used["OBS_ID"].to_numpy(np.int64)),
                "zenith_band": ("zenith", band_labels(binning.zenith.tolist()), {"long_name": "zenith band (deg)"})},
        attrs={"truth": repr(model), "truth_time": truth_time, "rate_time": "ONTIME", "track_slices": track_slices,
               "excluded_runs": runs["OBS_ID"][~runs["OBS_ID"].isin(used["OBS_ID"])].astype(int).tolist()},
    )


def _slice_shares(
    runs: pd.DataFrame, band: npt.NDArray[np.intp], binning: Binning, track_slices: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return each run's zenith per slice (n_runs, n_slices) and its slices' shares of time per band (n_runs, n_slices, n_bands).

    Without a track, one slice at ZEN_PNT wholly in the band of ZEN_PNT.
    """
    n_bands = binning.shape[0]
    if not track_slices:
        return runs["ZEN_PNT"].to_numpy(np.float64)[:, None], (band[:, None, None] == np.arange(n_bands)).astype(np.float64)
    track = pointing_track(runs, track_slices)
    bounds = track[:, ::2]
    share = segment_shares(bounds[:, :-1].ravel(), bounds[:, 1:].ravel(), binning.zenith)
    return track[:, 1::2], share.reshape(len(runs), track_slices, n_bands)
