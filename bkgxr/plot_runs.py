"""Figures per observation or run: chosen observations' own models, and a leave-one-run-out validation.

:func:`plot_observations` draws the models of :func:`bkgxr.predict_models` or
:func:`bkgxr.read_models` of chosen observations (``bkgxr plot --obs``), one
line each; :func:`plot_validation` draws obs/pred per held-out run of
:func:`bkgxr.validate` against zenith and time (``bkgxr validate --png``).
Both return the Figure they drew on and never call ``plt.show``. Axis labels,
bin lookup and the blanking of empty bins on log scales are those of
:mod:`bkgxr.plot`, whose figures show the zenith-band models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from astropy.time import TimeDelta

from .plot import (
    PROFILE_ENERGIES_TEV,
    SPECTRUM_OFFSETS_DEG,
    axis_label,
    bin_containing,
    bin_label,
    positive,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import xarray as xr
    from astropy.time import Time
    from matplotlib.figure import Figure

    from .validation import Validation


def observation_positions(models: xr.Dataset, obs_ids: Sequence[int]) -> npt.NDArray[np.int64]:
    """Return the positions along ``obs_id`` of ``obs_ids`` (repeats dropped), each an observation with a model.

    Raises
    ------
    ValueError
        If no OBS_ID is given, one is not in the models, or one has no model
        (recipe ``outside="none"``).
    """
    ids = models["obs_id"].values
    where = {int(obs_id): i for i, obs_id in enumerate(ids)}
    wanted = list(dict.fromkeys(int(obs_id) for obs_id in obs_ids))
    source = models.attrs.get("source", "the models")
    unknown = [obs_id for obs_id in wanted if obs_id not in where]
    if not wanted or unknown:
        raise ValueError(f"OBS_ID {', '.join(map(str, unknown)) or '(none given)'}: not an observation of {source} "
                         f"(its {ids.size} observations are OBS_ID {ids.min()} to {ids.max()})")
    positions = np.array([where[obs_id] for obs_id in wanted], dtype=np.int64)
    empty = [str(ids[i]) for i in positions if models["obs_error"].values[i]]
    if empty:
        raise ValueError(f"OBS_ID {', '.join(empty)}: no model in {source} (outside every zenith band, recipe outside='none')")
    return positions


def _observation_label(models: xr.Dataset, i: int) -> str:
    label = f"OBS_ID {int(models['obs_id'].values[i])}, zenith {float(models['obs_zenith'].values[i]):.1f} deg"
    if not models["obs_own"].values[i]:
        label += f", band {models['zenith_band'].values[models['obs_band'].values[i]]} model"
    return label


def plot_observations(
    models: xr.Dataset,
    obs_ids: Sequence[int],
    *,
    offsets: Sequence[float] = SPECTRUM_OFFSETS_DEG,
    energies: Sequence[float] = PROFILE_ENERGIES_TEV,
) -> Figure:
    """Plot the models of chosen observations: spectra and radial profiles, one line per observation.

    Parameters
    ----------
    models : xarray.Dataset
        2D models of :func:`bkgxr.predict_models` or :func:`bkgxr.read_models`
        (``obs_rate`` with dims obs_id, energy, offset).
    obs_ids : sequence of int
        Observations to draw, each labelled with its OBS_ID and zenith (deg).
    offsets : sequence of float
        Offsets (deg) of the spectra, one panel each (the bin containing it).
    energies : sequence of float
        Energies (TeV) of the radial profiles, one panel each (the bin containing it).

    Returns
    -------
    matplotlib.figure.Figure
        Two rows: rate vs energy (log-log) per offset, rate vs offset (log
        rate) per energy; the title names the observations and the recipe.

    Raises
    ------
    ValueError
        If the models are not 2D models, an OBS_ID is unknown or has no model,
        or an offset or energy lies outside the edges.
    """
    if "obs_rate" not in models or "offset" not in models["obs_rate"].dims:
        raise ValueError("plot_observations needs the 2D (offset) models of bkgxr.predict_models or bkgxr.read_models")
    positions = observation_positions(models, obs_ids)
    offset_bins = [bin_containing(models, "offset", offset) for offset in offsets]
    energy_bins = [bin_containing(models, "energy", e) for e in energies]
    rate = models["obs_rate"].transpose("obs_id", "energy", "offset").values
    labels = [_observation_label(models, i) for i in positions]
    fig = plt.figure(figsize=(4.2 * max(len(offsets), len(energies)) + 1.5, 7.5), layout="constrained")
    rows = cast("npt.NDArray[np.object_]", fig.subfigures(2, 1))
    spectra = list(rows[0].subplots(1, len(offset_bins), sharey=True, squeeze=False)[0])
    profiles = list(rows[1].subplots(1, len(energy_bins), sharey=True, squeeze=False)[0])
    for ax, j in zip(spectra, offset_bins, strict=True):
        for i, label in zip(positions, labels, strict=True):
            ax.plot(models["energy"].values, positive(rate[i, :, j]), "o-", ms=3, lw=1, label=label)
        ax.set(xscale="log", yscale="log", xlabel=axis_label(models, "energy"))
        ax.set_title(bin_label(models, "offset", j), fontsize="medium")
    for ax, k in zip(profiles, energy_bins, strict=True):
        for i, label in zip(positions, labels, strict=True):
            ax.plot(models["offset"].values, positive(rate[i, k, :]), "o-", ms=3, lw=1, label=label)
        ax.set(yscale="log", xlabel=axis_label(models, "offset"))
        ax.set_title(bin_label(models, "energy", k), fontsize="medium")
    for row in (spectra, profiles):
        row[0].set_ylabel(axis_label(models, "obs_rate"))
    spectra[-1].legend(fontsize="small")
    chosen = ", ".join(str(int(models["obs_id"].values[i])) for i in positions)
    n_runs = models.sizes["run"] if "run" in models.dims else int(models["n_runs"].sum())
    source = f" in {Path(models.attrs['source']).name}" if "source" in models.attrs else ""
    title = f"bkgxr models of observations {chosen}{source} ({positions.size} of {models.sizes['obs_id']}; built from {n_runs} runs)"
    fig.suptitle(title + (f"\n{models.attrs['recipe']}" if "recipe" in models.attrs else ""))
    return fig


def plot_validation(
    cube: xr.Dataset,
    results: Sequence[Validation],
    *,
    recipe: str,
    data: str = "",
    reference: Time | None = None,
) -> Figure:
    """Plot obs/pred per held-out run against zenith and against time, one series per recipe.

    Parameters
    ----------
    cube : xarray.Dataset
        The cube validated (its ``run_tstart`` per ``obs_id``, s since MJDREF).
    results : sequence of Validation
        Results of :func:`bkgxr.validate` (or of the store's own models), the
        chosen recipe first (black); each is drawn with Poisson error bars
        ``sqrt(OBSERVED) / PREDICTED`` and its mean and std in the legend.
    recipe : str
        Description of the chosen recipe (:meth:`bkgxr.Recipe.describe`), for the title.
    data : str
        What the runs are (e.g. the store), for the title.
    reference : astropy.time.Time, optional
        Time of TSTART 0 (the obs index's MJDREF, :func:`bkgxr.altaz_maps.reference_time`):
        with it the time axis shows UTC dates, without it years since MJDREF.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels sharing the obs/pred axis: against ZEN_PNT (deg) and against
        TSTART; the legend below them.

    Raises
    ------
    ValueError
        If ``results`` is empty or names a run the cube lacks.
    """
    if not results:
        raise ValueError("plot_validation needs at least one validation result")
    position = {int(obs_id): i for i, obs_id in enumerate(cube["obs_id"].values)}
    missing = sorted({int(o) for r in results for o in r.runs["OBS_ID"]} - position.keys())
    if missing:
        raise ValueError(f"runs {missing} of the validation are not in the cube")
    fig = plt.figure(figsize=(12.0, 5.2 + 0.1 * len(results)), layout="constrained")
    by_zenith, by_time = fig.subplots(1, 2, sharey=True)
    for n, result in enumerate(results):
        table, s = result.runs, result.summary
        tstart = cube["run_tstart"].values[[position[int(o)] for o in table["OBS_ID"]]]
        if reference is None:
            when = tstart / (365.25 * 86400.0)  # Julian years
        else:  # matplotlib's dates: days since its epoch
            when = mdates.date2num((reference + TimeDelta(tstart, format="sec")).utc.datetime64)  # type: ignore[no-untyped-call]
        error = np.sqrt(table["OBSERVED"].to_numpy(np.float64)) / table["PREDICTED"].to_numpy(np.float64)
        label = f"{s['model']}: mean {s['mean']:.3f}, std {s['std']:.3f} ({s['n_runs']} runs)"
        style = {"fmt": "o", "ms": 4, "color": "k", "zorder": 3} if n == 0 else {"fmt": ".", "ms": 3, "color": plt.get_cmap("tab20")(n % 20)}
        for ax, x in ((by_zenith, table["ZEN_PNT"].to_numpy(np.float64)), (by_time, when)):
            ax.errorbar(x, table["RATIO"].to_numpy(np.float64), yerr=error, lw=0.8, label=label, **style)
    for ax in (by_zenith, by_time):
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    by_zenith.set(xlabel="ZEN_PNT (deg)", ylabel="observed / predicted counts")
    if reference is None:
        by_time.set_xlabel("TSTART (yr since MJDREF)")
    else:
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        by_time.xaxis.set_major_locator(locator)
        by_time.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        by_time.set_xlabel("TSTART (UTC)")
    fig.legend(*by_time.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(results), 2), fontsize="small")
    s = results[0].summary
    title = f"leave-one-run-out validation{' on ' + data if data else ''}: {s['n_runs']} runs, " \
            f"counts above each run's threshold within {s['radius']:g} deg\n{recipe}"
    title += f" (black)\nin colour: the {len(results) - 1} other models" if len(results) > 1 else ""
    fig.suptitle(title)
    return fig
