"""Figures of a background cube: rate maps, spectra, radial profiles, diagnostics, validation.

Every function takes the cube of :func:`bkgxr.build_cube` (computed), or the
models of :func:`bkgxr.predict_models` or :func:`bkgxr.read_models`, labels its
axes with the units in each variable's ``attrs["units"]`` and returns the Axes
or Figure it drew on; none
calls ``plt.show``. The panel functions accept ``axes`` to draw into an
existing figure; without it they open a new pyplot figure. This is the only
module that imports matplotlib.

Bins without counts (rate 0) and bands without exposure are left blank on the
log scales rather than drawn at an invented floor. Error bars are drawn where
the cube has ``rate_err``, and the diagnostics need ``counts`` and ``exposure``;
the rest needs only ``rate``, ``ontime``, ``n_runs`` and the edge coords. Rates
are per observation time (ONTIME), so each band is labelled with its runs'
summed ONTIME. A per-observation build is drawn per observation by
:func:`plot_observations`; a leave-one-run-out validation by
:func:`plot_validation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, cast

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from astropy.time import TimeDelta
from matplotlib.colors import LogNorm

from .axes import binning_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import xarray as xr
    from astropy.time import Time
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .validation import Validation

    #: Axes to draw into, one per panel; ``None`` opens a new figure.
    AxesArg: TypeAlias = "Sequence[Axes] | npt.NDArray[np.object_] | None"


def axis_label(cube: xr.Dataset, name: str) -> str:
    """Return ``"name (units)"`` for a variable or coord, or ``"name"`` if unitless."""
    units = str(cube[name].attrs.get("units", ""))
    return f"{name} ({units})" if units else name


def _band_title(cube: xr.Dataset, i: int) -> str:
    band = cube.isel(zenith=i)
    hours = float(band["ontime"]) / 3600.0
    return f"zenith {band['zenith_band'].item()} deg: {int(band['n_runs'])} runs, {hours:.1f} h ONTIME"


def _bin_containing(cube: xr.Dataset, dim: str, value: float) -> int:
    lo, hi = cube[f"{dim}_lo"].values, cube[f"{dim}_hi"].values
    inside = np.flatnonzero((lo <= value) & (value < hi))
    if inside.size == 0:
        raise ValueError(f"{dim} {value} is outside the cube's {dim} edges [{lo[0]:g}, {hi[-1]:g})")
    return int(inside[0])


def _bin_label(cube: xr.Dataset, dim: str, i: int) -> str:
    units = cube[dim].attrs.get("units", "")
    return f"{dim} {cube[f'{dim}_lo'].values[i]:.3g}-{cube[f'{dim}_hi'].values[i]:.3g} {units}"


def _positive(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return float values with zeros and negatives replaced by NaN (blank on log axes)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, values, np.nan)


def _new_axes(axes: AxesArg, n: int, what: str) -> list[Axes]:
    if axes is None:
        fig = plt.figure(figsize=(4.0 * n, 3.4), layout="constrained")
        return list(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    axes = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(axes) != n:
        raise ValueError(f"{what} needs {n} axes, got {len(axes)}")
    return axes


def _map(cube: xr.Dataset, name: str, axes: list[Axes]) -> list[Axes]:
    """Draw ``cube[name]`` over energy x offset, one band per axes, one log colour scale."""
    binning = binning_of(cube)
    values = _positive(cube[name].transpose("zenith", "energy", "offset").values)
    finite = values[np.isfinite(values)]
    norm = LogNorm(*(finite.min(), finite.max()) if finite.size else (1.0, 10.0))
    mesh = None
    for i, ax in enumerate(axes):
        # pcolormesh wants C[y, x]: offset along y, energy along x, hence the transpose.
        mesh = ax.pcolormesh(binning.energy, binning.offset, np.ma.masked_invalid(values[i].T), norm=norm)
        ax.set_xscale("log")
        ax.set_xlabel(axis_label(cube, "energy"))
        ax.set_title(_band_title(cube, i), fontsize="medium")
    axes[0].set_ylabel(axis_label(cube, "offset"))
    if mesh is not None:
        axes[0].figure.colorbar(mesh, ax=axes, label=axis_label(cube, name))
    return axes


def _errorbars(ax: Axes, cut: xr.Dataset, dim: str, *, label: str) -> None:
    """Draw the rate of a 1-D cut along ``dim``: bin widths as x bars, Poisson y errors if known."""
    x = cut[dim].values
    xerr = np.stack([x - cut[f"{dim}_lo"].values, cut[f"{dim}_hi"].values - x])
    rate = _positive(cut["rate"].values)
    err = np.where(np.isfinite(rate), cut["rate_err"].values, np.nan) if "rate_err" in cut else None
    ax.errorbar(x, rate, xerr=xerr, yerr=err, fmt="o-", ms=3, lw=1, label=label)


def plot_rate_map(cube: xr.Dataset, *, axes: AxesArg = None) -> list[Axes]:
    """Plot the rate over energy x offset, one panel per zenith band, log colour.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube with ``rate`` (zenith, energy, offset) and edge coords.
    axes : sequence of matplotlib.axes.Axes, optional
        One Axes per zenith band; a new figure if omitted.

    Returns
    -------
    list of matplotlib.axes.Axes
        One per band; the shared colour bar is on their figure.

    Raises
    ------
    ValueError
        If ``axes`` does not hold one Axes per band.
    """
    return _map(cube, "rate", _new_axes(axes, cube.sizes["zenith"], "plot_rate_map"))


def plot_spectra(
    cube: xr.Dataset,
    *,
    offsets: Sequence[float] = (0.5, 1.5),
    axes: AxesArg = None,
) -> list[Axes]:
    """Plot rate vs energy with Poisson error bars, one panel per offset, one line per band.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube with ``rate``; error bars where it has ``rate_err``.
    offsets : sequence of float
        Offsets in the cube's offset unit (deg); each selects the bin containing it.
    axes : sequence of matplotlib.axes.Axes, optional
        One Axes per offset; a new figure if omitted.

    Returns
    -------
    list of matplotlib.axes.Axes
        One per offset, log-log.

    Raises
    ------
    ValueError
        If an offset lies outside the offset edges, or ``axes`` has the wrong length.
    """
    bins = [_bin_containing(cube, "offset", offset) for offset in offsets]
    axes_list = _new_axes(axes, len(bins), "plot_spectra")
    for ax, j in zip(axes_list, bins, strict=True):
        for i in range(cube.sizes["zenith"]):
            cut = cube.isel(zenith=i, offset=j)
            _errorbars(ax, cut, "energy", label=f"zenith {cut['zenith_band'].item()} deg")
        ax.set(xscale="log", yscale="log", xlabel=axis_label(cube, "energy"))
        ax.set_title(_bin_label(cube, "offset", j), fontsize="medium")
        ax.legend(fontsize="small")
    axes_list[0].set_ylabel(axis_label(cube, "rate"))
    return axes_list


def plot_radial_profiles(
    cube: xr.Dataset,
    *,
    energies: Sequence[float] = (0.5, 1.0, 3.0, 10.0),
    axes: AxesArg = None,
) -> list[Axes]:
    """Plot rate vs offset with Poisson error bars, one panel per band, one line per energy.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube with ``rate``; error bars where it has ``rate_err``.
    energies : sequence of float
        Energies in the cube's energy unit (TeV); each selects the bin containing it.
    axes : sequence of matplotlib.axes.Axes, optional
        One Axes per zenith band; a new figure if omitted.

    Returns
    -------
    list of matplotlib.axes.Axes
        One per band, linear offset and log rate.

    Raises
    ------
    ValueError
        If an energy lies outside the energy edges, or ``axes`` has the wrong length.
    """
    bins = [_bin_containing(cube, "energy", e) for e in energies]
    axes_list = _new_axes(axes, cube.sizes["zenith"], "plot_radial_profiles")
    for i, ax in enumerate(axes_list):
        for k in bins:
            _errorbars(ax, cube.isel(zenith=i, energy=k), "offset", label=_bin_label(cube, "energy", k))
        ax.set(yscale="log", xlabel=axis_label(cube, "offset"))
        ax.set_title(_band_title(cube, i), fontsize="medium")
    axes_list[0].set_ylabel(axis_label(cube, "rate"))
    axes_list[-1].legend(fontsize="small")
    return axes_list


def plot_diagnostics(cube: xr.Dataset) -> Figure:
    """Plot counts (top row) and exposure (bottom row) over energy x offset per band.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube, or models, with ``counts`` and ``exposure``.

    Returns
    -------
    matplotlib.figure.Figure
        Two rows of one panel per zenith band, each row with its log colour bar.

    Raises
    ------
    ValueError
        If the cube lacks ``counts`` or ``exposure``.
    """
    missing = [name for name in ("counts", "exposure") if name not in cube]
    if missing:
        raise ValueError(f"plot_diagnostics needs {missing}: use the cube of bkgxr.build_cube or the models of bkgxr.read_models")
    n = cube.sizes["zenith"]
    fig = plt.figure(figsize=(4.0 * n + 1.5, 6.6), layout="constrained")
    grid = fig.subplots(2, n, sharex=True, sharey=True, squeeze=False)
    for row, name in zip(grid, ("counts", "exposure"), strict=True):
        _map(cube, name, list(row))
    return fig


def plot_overview(
    cube: xr.Dataset,
    *,
    offsets: Sequence[float] = (0.5, 1.5),
    energies: Sequence[float] = (0.5, 1.0, 3.0, 10.0),
) -> Figure:
    """Plot rate maps, spectra and radial profiles of a cube in one figure.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube of :func:`bkgxr.build_cube`, or models of
        :func:`bkgxr.predict_models` or :func:`bkgxr.read_models` (their runs
        along dim ``run``).
    offsets : sequence of float
        Offsets (deg) of the spectra; see :func:`plot_spectra`.
    energies : sequence of float
        Energies (TeV) of the radial profiles; see :func:`plot_radial_profiles`.

    Returns
    -------
    matplotlib.figure.Figure
        Three rows: rate maps and radial profiles (one panel per zenith band)
        and spectra (one panel per offset). Save it with ``fig.savefig``.

    See Also
    --------
    plot_rate_map, plot_spectra, plot_radial_profiles, plot_diagnostics
    """
    n = max(cube.sizes["zenith"], len(offsets))
    fig = plt.figure(figsize=(4.2 * n + 1.5, 10.5), layout="constrained")
    rows = cast("npt.NDArray[np.object_]", fig.subfigures(3, 1))
    plot_rate_map(cube, axes=rows[0].subplots(1, cube.sizes["zenith"], sharey=True, squeeze=False)[0])
    plot_spectra(cube, offsets=offsets, axes=rows[1].subplots(1, len(offsets), sharey=True, squeeze=False)[0])
    plot_radial_profiles(
        cube, energies=energies, axes=rows[2].subplots(1, cube.sizes["zenith"], sharey=True, squeeze=False)[0]
    )
    # a cube holds its runs along obs_id; models hold observations there and their runs along run
    n_runs = cube.sizes["run" if "run" in cube.dims else "obs_id"]
    title = f"bkgxr background model: {n_runs} runs"
    if "run_kept" in cube:
        kept = cube["run_kept"].values.reshape(n_runs, -1)
        masked = int((kept < 1).any(axis=1).sum())
        title += f", {masked} of them used outside exclusion regions" if masked else ""
    if "recipe" in cube.attrs:  # models of predict_models / read_models say how they were made
        title += f"\n{cube.attrs['recipe']}"
    if "obs_own" in cube and cube["obs_own"].any():
        title += (f"\nthe zenith-band models; {int(cube['obs_own'].sum())} observations have their own model: "
                  "plot_observations (bkgxr plot --obs OBS_ID,...) draws them")
    fig.suptitle(title)
    return fig


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
    offsets: Sequence[float] = (0.5, 1.5),
    energies: Sequence[float] = (0.5, 1.0, 3.0, 10.0),
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
    offset_bins = [_bin_containing(models, "offset", offset) for offset in offsets]
    energy_bins = [_bin_containing(models, "energy", e) for e in energies]
    rate = models["obs_rate"].transpose("obs_id", "energy", "offset").values
    labels = [_observation_label(models, i) for i in positions]
    fig = plt.figure(figsize=(4.2 * max(len(offsets), len(energies)) + 1.5, 7.5), layout="constrained")
    rows = cast("npt.NDArray[np.object_]", fig.subfigures(2, 1))
    spectra = list(rows[0].subplots(1, len(offset_bins), sharey=True, squeeze=False)[0])
    profiles = list(rows[1].subplots(1, len(energy_bins), sharey=True, squeeze=False)[0])
    for ax, j in zip(spectra, offset_bins, strict=True):
        for i, label in zip(positions, labels, strict=True):
            ax.plot(models["energy"].values, _positive(rate[i, :, j]), "o-", ms=3, lw=1, label=label)
        ax.set(xscale="log", yscale="log", xlabel=axis_label(models, "energy"))
        ax.set_title(_bin_label(models, "offset", j), fontsize="medium")
    for ax, k in zip(profiles, energy_bins, strict=True):
        for i, label in zip(positions, labels, strict=True):
            ax.plot(models["offset"].values, _positive(rate[i, k, :]), "o-", ms=3, lw=1, label=label)
        ax.set(yscale="log", xlabel=axis_label(models, "offset"))
        ax.set_title(_bin_label(models, "energy", k), fontsize="medium")
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
