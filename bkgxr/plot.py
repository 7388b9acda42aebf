"""Figures of a cube's zenith-band models: rate maps, spectra, radial profiles, diagnostics.

Every function takes the cube of :func:`bkgxr.build_cube` (computed), or the
models of :func:`bkgxr.predict_models` or :func:`bkgxr.read_models`, labels its
axes with the units in each variable's ``attrs["units"]`` and returns the Axes
or Figure it drew on; none
calls ``plt.show``. The panel functions accept ``axes`` to draw into an
existing figure; without it they open a new pyplot figure. The helpers that
label axes, find bins and blank empty bins (:func:`axis_label`,
:func:`bin_containing`, :func:`bin_label`, :func:`positive`) are shared with
:mod:`bkgxr.plot_runs`.

Bins without counts (rate 0) and bands without exposure are left blank on the
log scales rather than drawn at an invented floor. Error bars are drawn where
the cube has ``rate_err``, and the diagnostics need ``counts`` and ``exposure``;
the rest needs only ``rate``, ``ontime``, ``n_runs`` and the edge coords. Rates
are per observation time (ONTIME), so each band is labelled with its runs'
summed ONTIME. The figures per observation or run (an observation's own model,
a leave-one-run-out validation) are in :mod:`bkgxr.plot_runs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, cast

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from .axes import binning_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    #: Axes to draw into, one per panel; ``None`` opens a new figure.
    AxesArg: TypeAlias = "Sequence[Axes] | npt.NDArray[np.object_] | None"

#: Offsets (deg) whose spectra the figures draw by default (``bkgxr plot --offsets`` says the same).
SPECTRUM_OFFSETS_DEG = (0.5, 1.5)
#: Energies (TeV) whose radial profiles the figures draw by default (``bkgxr plot --energies``).
PROFILE_ENERGIES_TEV = (0.5, 1.0, 3.0, 10.0)


def axis_label(cube: xr.Dataset, name: str) -> str:
    """Return ``"name (units)"`` for a variable or coord, or ``"name"`` if unitless."""
    units = str(cube[name].attrs.get("units", ""))
    return f"{name} ({units})" if units else name


def _band_title(cube: xr.Dataset, i: int) -> str:
    band = cube.isel(zenith=i)
    hours = float(band["ontime"]) / 3600.0
    return f"zenith {band['zenith_band'].item()} deg: {int(band['n_runs'])} runs, {hours:.1f} h ONTIME"


def bin_containing(cube: xr.Dataset, dim: str, value: float) -> int:
    """Return the index of the ``dim`` bin whose ``[lo, hi)`` edges hold ``value``.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube or models with coords ``{dim}_lo`` and ``{dim}_hi``.
    dim : str
        Binned dim, e.g. ``"energy"`` (TeV) or ``"offset"`` (deg).
    value : float
        In the unit of the ``dim`` coord.

    Returns
    -------
    int
        Position of the bin along ``dim``.

    Raises
    ------
    ValueError
        If ``value`` lies outside the edges.
    """
    lo, hi = cube[f"{dim}_lo"].values, cube[f"{dim}_hi"].values
    inside = np.flatnonzero((lo <= value) & (value < hi))
    if inside.size == 0:
        raise ValueError(f"{dim} {value} is outside the cube's {dim} edges [{lo[0]:g}, {hi[-1]:g})")
    return int(inside[0])


def bin_label(cube: xr.Dataset, dim: str, i: int) -> str:
    """Return ``"dim lo-hi units"`` of bin ``i`` along ``dim``, e.g. ``"offset 0-1 deg"``."""
    units = cube[dim].attrs.get("units", "")
    return f"{dim} {cube[f'{dim}_lo'].values[i]:.3g}-{cube[f'{dim}_hi'].values[i]:.3g} {units}"


def positive(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return float values (same shape) with zeros and negatives replaced by NaN (blank on log axes)."""
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
    values = positive(cube[name].transpose("zenith", "energy", "offset").values)
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
    rate = positive(cut["rate"].values)
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
    offsets: Sequence[float] = SPECTRUM_OFFSETS_DEG,
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
    bins = [bin_containing(cube, "offset", offset) for offset in offsets]
    axes_list = _new_axes(axes, len(bins), "plot_spectra")
    for ax, j in zip(axes_list, bins, strict=True):
        for i in range(cube.sizes["zenith"]):
            cut = cube.isel(zenith=i, offset=j)
            _errorbars(ax, cut, "energy", label=f"zenith {cut['zenith_band'].item()} deg")
        ax.set(xscale="log", yscale="log", xlabel=axis_label(cube, "energy"))
        ax.set_title(bin_label(cube, "offset", j), fontsize="medium")
        ax.legend(fontsize="small")
    axes_list[0].set_ylabel(axis_label(cube, "rate"))
    return axes_list


def plot_radial_profiles(
    cube: xr.Dataset,
    *,
    energies: Sequence[float] = PROFILE_ENERGIES_TEV,
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
    bins = [bin_containing(cube, "energy", e) for e in energies]
    axes_list = _new_axes(axes, cube.sizes["zenith"], "plot_radial_profiles")
    for i, ax in enumerate(axes_list):
        for k in bins:
            _errorbars(ax, cube.isel(zenith=i, energy=k), "offset", label=bin_label(cube, "energy", k))
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
    offsets: Sequence[float] = SPECTRUM_OFFSETS_DEG,
    energies: Sequence[float] = PROFILE_ENERGIES_TEV,
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
