"""Background models of observations from a cube and a recipe, as one Dataset.

:func:`predict_models` is the modelling step between the cube and the files:
it returns an :class:`xarray.Dataset` holding

- the **band models** (dims zenith, energy and the FoV: offset, or fov_lon
  and fov_lat in 3D): ``rate``, ``rate_err``
  (smoothed if the recipe says so), with the cube's ``counts``, ``exposure``,
  ``ontime``, ``livetime`` and ``n_runs`` behind them;
- one **model per observation** (dims obs_id, energy, FoV): ``obs_rate``,
  with ``obs_own`` (a model of its own, or its band's), ``obs_band``,
  ``obs_zenith``, ``obs_tstart``, ``obs_ontime``, ``obs_deadc`` (the dead-time
  factor folded into it, 1 unless ``deadtime="livetime"``), ``obs_n_eff`` and
  ``obs_error`` (why an observation has no model, '' if it has one);
- the **runs** the models were built from (dim ``run``): the cube's
  ``run_*`` variables;

and the recipe's header keywords as attributes (:meth:`bkgxr.Recipe.from_header`
reads them back). Every rate is per observation time (ONTIME): gammapy
predicts an observation's counts as ``obs_rate x ONTIME``. With the recipe's
``nodes`` (the default), ``rate`` and ``obs_rate`` are the values at the bin
centres whose gammapy interpolation averages back to each bin's measured rate
(:mod:`bkgxr.nodes`); the bin averages are ``counts / exposure``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from .axes import assign_bands, binning_of
from .cube import RATE_TIME
from .exceptions import EmptySelectionError
from .io.store import Store
from .nodes import to_node_values
from .recipe import DEFAULT_RECIPE
from .track import zenith_tracks
from .units import RATE_UNIT
from .zenith import predict_rates

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy.typing as npt

    from .recipe import Recipe

#: Variables of a cube that describe its runs, carried into the models along dim ``run``.
RUN_VARIABLES = (
    "run_counts", "run_kept", "run_safe", "run_zenith", "run_track", "run_ontime", "run_livetime", "run_tstart", "run_muoneff",
    "run_threshold", "run_band", "run_band_fraction", "run_used", "run_error",
)
#: Per-observation variables of the models: units and meaning (``obs_rate`` has dims obs_id, energy, FoV).
OBS_VARIABLES = {
    "obs_rate": (str(RATE_UNIT), "model of the observation, per ONTIME"),
    "obs_own": ("", "model of its own (else its band's)"),
    "obs_band": ("", "zenith band index (-1: no model)"),
    "obs_zenith": ("deg", "ZEN_PNT"),
    "obs_tstart": ("s", "TSTART (since MJDREF)"),
    "obs_ontime": ("s", "ONTIME"),
    "obs_deadc": ("", "dead-time factor folded into the model"),
    "obs_n_eff": ("", "effective number of runs behind the model"),
    "obs_error": ("", "why the observation has no model"),
}
#: Variables of a cube that describe its zenith bands, carried into the models.
BAND_VARIABLES = ("counts", "exposure", "rate", "rate_err", "has_exposure", "ontime", "livetime", "exposed_ontime", "n_runs")


def _observations(targets: Store | pd.DataFrame) -> pd.DataFrame:
    """Return the observation table of ``targets`` with OBS_ID, ZEN_PNT, ONTIME, LIVETIME, TSTART and ERROR."""
    obs = targets.select(skip_bad=True) if isinstance(targets, Store) else targets.reset_index(drop=True)
    missing = [c for c in ("OBS_ID", "ZEN_PNT", "ONTIME", "LIVETIME") if c not in obs]
    if missing:
        raise ValueError(f"the observations lack column(s) {missing}: pass a Store or a run table of Store.select")
    if "ERROR" not in obs:
        obs = obs.assign(ERROR="")
    if "TSTART" not in obs:
        obs = obs.assign(TSTART=np.nan)
    return obs


def band_models(cube: xr.Dataset, recipe: Recipe) -> xr.Dataset:
    """Return the band variables of a computed cube, smoothed as ``recipe`` says."""
    if recipe.smoothing is None:
        return cube[list(BAND_VARIABLES)]
    from .smooth import smooth_cube

    return smooth_cube(cube[list(BAND_VARIABLES)], **recipe.smoothing.options())


def observation_models(
    cube: xr.Dataset, obs: pd.DataFrame, recipe: Recipe, band_rate: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[Any]]:
    """Return the per-observation values of :func:`predict_models`, keyed as :data:`OBS_VARIABLES`."""
    binning = binning_of(cube)
    zenith = obs["ZEN_PNT"].to_numpy(np.float64)
    band = assign_bands(zenith, binning.zenith, outside=recipe.outside)
    error = obs["ERROR"].to_numpy(str).astype(object)
    error = np.where((error == "") & (band < 0), "zenith outside every band", error)
    band[error != ""] = -1
    modelled = band >= 0
    deadc = obs["LIVETIME"].to_numpy(np.float64) / obs["ONTIME"].to_numpy(np.float64)
    factor = np.where(modelled, deadc if recipe.deadtime == "livetime" else 1.0, 1.0)
    rate = np.zeros((len(obs), *band_rate.shape[1:]))
    n_eff = np.zeros(len(obs))
    if recipe.per_observation:
        index = np.flatnonzero(modelled)
        efficiency = obs["MUONEFF"].to_numpy(np.float64)[index] if "MUONEFF" in obs else None
        targets = zenith_tracks(obs)[index] if recipe.track else zenith[index]
        rate[index], n_eff[index] = predict_rates(
            cube, targets, recipe=recipe, time=obs["TSTART"].to_numpy(np.float64)[index], efficiency=efficiency
        )
        rate *= factor.reshape(-1, *([1] * (rate.ndim - 1)))
    else:
        rate[modelled] = band_rate[band[modelled]]
        n_eff[modelled] = cube["n_runs"].values[band[modelled]]
    return {
        "obs_rate": rate, "obs_own": np.full(len(obs), recipe.per_observation) & modelled, "obs_band": band,
        "obs_zenith": zenith, "obs_tstart": obs["TSTART"].to_numpy(np.float64),
        "obs_ontime": obs["ONTIME"].to_numpy(np.float64), "obs_deadc": factor, "obs_n_eff": n_eff, "obs_error": error,
    }


def models_dataset(
    bands: xr.Dataset,
    cube: xr.Dataset,
    obs_ids: npt.ArrayLike,
    observations: Mapping[str, npt.ArrayLike],
    recipe: Recipe,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """Return the models Dataset from its parts, as :func:`predict_models` and :func:`bkgxr.read_models` make it.

    Parameters
    ----------
    bands : xarray.Dataset
        The band variables (:data:`BAND_VARIABLES`), dims zenith, energy, FoV.
    cube : xarray.Dataset
        The cube whose :data:`RUN_VARIABLES` describe the runs behind the models.
    obs_ids : array-like
        The observations. Shape: (n_obs,).
    observations : mapping
        Per-observation values, keyed by the names of :data:`OBS_VARIABLES`.
    recipe : Recipe
        Its header keywords and description become attributes.
    attrs : mapping
        Further attributes (``rate_time``, ``safe_energy``, ...).
    """
    fov_dims = binning_of(cube).fov_dims
    data = {
        name: (("obs_id", "energy", *fov_dims) if name == "obs_rate" else "obs_id", observations[name],
               {"units": units, "long_name": long_name})
        for name, (units, long_name) in OBS_VARIABLES.items()
    }
    runs = cube[list(RUN_VARIABLES)].rename({"obs_id": "run"})
    return xr.Dataset(
        {**bands.data_vars, **runs.data_vars, **data},
        coords={**bands.coords, "run": runs["run"].values, "obs_id": np.asarray(obs_ids, dtype=np.int64)},
        attrs={**{key: value for key, (value, _) in recipe.to_header().items()}, "recipe": recipe.describe(), **attrs},
    )


def predict_models(
    cube: xr.Dataset, targets: Store | pd.DataFrame, recipe: Recipe = DEFAULT_RECIPE
) -> xr.Dataset:
    """Return the background models of every target observation.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube of :func:`bkgxr.build_cube` (computed here if still lazy).
    targets : Store or pandas.DataFrame
        Observations to model: all of a store's (unreadable ones get no
        model), or a run table of :meth:`bkgxr.Store.select`.
    recipe : Recipe
        How to model; :data:`bkgxr.DEFAULT_RECIPE` if omitted.

    Returns
    -------
    xarray.Dataset
        See the module docstring; every rate in MeV-1 s-1 sr-1 per ONTIME.

    Raises
    ------
    EmptySelectionError
        If no run of the cube is usable (e.g. every run was skipped as unreadable).

    Warns
    -----
    UserWarning
        For observations that get no model, and for zenith bands without events.

    Examples
    --------
    >>> models = predict_models(cube, store)                          # doctest: +SKIP
    >>> models["obs_rate"].sel(obs_id=23523, offset=0.5, method="nearest")  # doctest: +SKIP
    """
    cube = cube.compute()
    if not cube["run_used"].values.any():
        reasons = "; ".join(f"run {int(o)}: {e}" for o, e in zip(cube["obs_id"].values[:5], cube["run_error"].values[:5], strict=True))
        raise EmptySelectionError(f"no usable run is left to model the background from ({reasons})")
    obs = _observations(targets)
    bands = band_models(cube, recipe)
    binning = binning_of(cube)
    if recipe.smoothing is not None and binning.fov != "offset":
        raise ValueError("smoothing fits radial shapes: use a recipe with smoothing=None for 3D (fov='altaz') cubes")
    per_obs = observation_models(cube, obs, recipe, bands["rate"].transpose("zenith", "energy", *binning.fov_dims).values)
    if recipe.nodes:  # what gammapy's interpolation needs; bin averages stay in counts / exposure
        edges = [binning.edges(d) for d in binning.fov_dims]
        node_rate = to_node_values(bands["rate"].transpose("zenith", "energy", *binning.fov_dims).values, binning.energy, *edges, fov=binning.fov)
        average = bands["rate"].transpose("zenith", "energy", *binning.fov_dims)
        relative = np.divide(bands["rate_err"].transpose(*average.dims).values, average.values,
                             out=np.zeros(average.shape), where=average.values > 0)
        bands = bands.assign(rate=average.copy(data=node_rate), rate_err=average.copy(data=relative * node_rate))
        per_obs["obs_rate"] = to_node_values(per_obs["obs_rate"], binning.energy, *edges, fov=binning.fov)
    lost = obs.loc[per_obs["obs_band"] < 0, "OBS_ID"].astype(int).tolist()
    if lost:
        warnings.warn(f"{len(lost)} observation(s) outside every zenith band or unreadable get no bkg model: {lost}", stacklevel=2)
    empty = cube["zenith_band"].values[cube["counts"].sum(("energy", *binning.fov_dims)).values == 0].tolist()
    if empty:
        warnings.warn(f"zenith band(s) {empty} deg hold no event (no run, or none in the binned range): their models are 0", stacklevel=2)
    attrs = {"rate_time": RATE_TIME, "safe_energy": int(cube.attrs.get("safe_energy", 0))}
    return models_dataset(bands, cube, obs["OBS_ID"].to_numpy(np.int64), per_obs, recipe, attrs)
