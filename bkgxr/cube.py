"""Fill the energy x offset x zenith histogram and return it as one labelled cube.

The cube is an :class:`xarray.Dataset` with dims :data:`bkgxr.axes.DIMS`:

``counts`` (int64)
    Events per bin: boost histograms of batches of runs (:mod:`bkgxr.fill`),
    tree-reduced by dask-histogram.
``ontime``, ``livetime`` (zenith; s)
    Summed ONTIME (observation time, the GTI sum) and LIVETIME of the runs
    used in each band.
``exposed_ontime`` (zenith, energy; s)
    ONTIME of the runs whose safe energy range holds the bin (equal to
    ``ontime`` unless ``safe_energy=True``).
``exposure`` (s MeV sr)
    ``exposed_ontime * dE[MeV] * dOmega[sr]``, ``dOmega = 2 pi (cos r1 - cos r2)``.
``rate``, ``rate_err`` (MeV-1 s-1 sr-1)
    ``counts / exposure`` and its Poisson error ``sqrt(counts) / exposure``:
    a rate per observation time, as GADF files hold and gammapy uses (it
    predicts ``rate x ONTIME``).
    Bins of zero counts have rate 0; bins of zero exposure (a band without
    runs) have rate 0 and error 0, and ``has_exposure`` is False there.

plus one entry per run of the run table along ``obs_id``: ``run_counts``
(energy x offset), ``run_safe``, ``run_zenith``, ``run_ontime``, ``run_livetime``, ``run_threshold``, ``run_tstart``,
``run_band`` (-1 outside every band), ``run_used`` and ``run_error`` (why a
run was left out, '' if used). Bin edges are ``*_lo``/``*_hi`` coordinates.
:func:`build_cube` returns it lazily: coordinates and metadata are known at
once; what depends on reading the events is a dask array until ``.compute()``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .axes import (
    Binning,
    band_index,
    band_labels,
    exposure_s_mev_sr,
    rate_from_counts,
)
from .exceptions import EmptySelectionError, InvalidRunError
from .exclusion import DEFAULT_RADIUS_DEG, ExclusionRegions
from .fill import histogram_runs
from .io.events import index_node_maps, run_reads
from .masking import run_regions
from .track import (
    band_fractions,
    gti_fractions,
    gti_pieces,
    slice_tracks,
    zenith_tracks,
)
from .units import RATE_UNIT

if TYPE_CHECKING:
    import numpy.typing as npt

    from .io.events import RunRead

#: The time a rate is per, as GADF defines it and gammapy uses.
RATE_TIME = "ONTIME: observation time (GTI sum), no dead-time correction"
#: How events and runs pick their zenith bands in the cube (``event_zenith=True``).
ZENITH_RULE = (
    "event: band holding the pointing's zenith at its TIME (linear between 33 points of the run); "
    "ONTIME shared among bands by the good time the pointing spent in each (GTIs read where ONTIME < TSTOP - TSTART); "
    "runs without a known track: as ZEN_PNT"
)
#: The same with ``event_zenith=False``, and for a cube read back from a file.
POINTING_RULE = "band containing the run's pointing zenith ZEN_PNT: lo <= zenith < hi"


def safe_bins(
    energy_edges: npt.ArrayLike, safe_lo: npt.ArrayLike, safe_hi: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """Return which energy bins lie wholly inside each run's safe energy range.

    Parameters
    ----------
    energy_edges : array-like
        Shape: (n_energy + 1,), TeV.
    safe_lo, safe_hi : array-like
        Safe range per run, TeV; NaN means unbounded. Shape: (n_runs,).

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, n_energy); a bin straddling a threshold is excluded.
    """
    edges = np.asarray(energy_edges, dtype=np.float64)
    lo = np.nan_to_num(np.asarray(safe_lo, dtype=np.float64), nan=-np.inf)[:, None]
    hi = np.nan_to_num(np.asarray(safe_hi, dtype=np.float64), nan=np.inf)[:, None]
    # a relative tolerance keeps a threshold written in float32 on its edge
    tol = 1e-6 * edges[None, :]
    return (edges[None, :-1] >= lo - tol[:, :-1]) & (edges[None, 1:] <= hi + tol[:, 1:])


def _energy_limits(safe: npt.NDArray[np.bool_], edges: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return per run the energy range [lo, hi) of its safe bins (events outside are dropped)."""
    any_bin = safe.any(axis=1)
    first = np.argmax(safe, axis=1)
    last = safe.shape[1] - 1 - np.argmax(safe[:, ::-1], axis=1)
    lo = np.where(any_bin, edges[first], np.inf)
    hi = np.where(any_bin, edges[last + 1], -np.inf)
    # edge bins of the binning also keep what lies beyond them (under/overflow)
    lo = np.where(any_bin & (first == 0), -np.inf, lo)
    hi = np.where(any_bin & (last == safe.shape[1] - 1), np.inf, hi)
    return lo, hi


def build_cube(
    runs: pd.DataFrame,
    *,
    binning: Binning | None = None,
    skip_bad: bool = False,
    safe_energy: bool = False,
    exclusion: ExclusionRegions | None = None,
    target_radius: float | None = DEFAULT_RADIUS_DEG,
    event_zenith: bool = True,
) -> xr.Dataset:
    """Build the lazy background cube of ``runs``.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table from :meth:`bkgxr.Store.select`.
    binning : Binning, optional
        Edges of zenith, energy and the FoV (offset for 2D, ALTAZ-aligned
        lon/lat for ``Binning(fov="altaz")``); the tutorial's 2D defaults if omitted.
    skip_bad : bool
        Leave out runs that cannot be read (and rows of the run table whose
        ``ERROR`` is set), listing why in ``run_error``, instead of raising
        :class:`~bkgxr.InvalidRunError` at compute time.
    safe_energy : bool
        Use each run only in the energy bins wholly inside its safe range
        (``SAFE_ENERGY_LO``/``SAFE_ENERGY_HI`` of the run table), in counts
        and exposure alike, as the published H.E.S.S. models do.
    exclusion : ExclusionRegions, optional
        Sky regions every run contributes nothing from: their events are
        dropped and each FoV bin's exposure is reduced by the fraction they
        cover (:mod:`bkgxr.masking`).
    target_radius : float or None
        Radius (deg) of the circle excluded around the target (``RA_OBJ``,
        ``DEC_OBJ``) of every run that is not an off run (``TARGET_NAME``
        other than "Off data"): 0.5 deg by default; None for no such circle.
    event_zenith : bool
        Give each event the zenith band of the pointing at its TIME, and share
        each run's ONTIME among the bands by the time its pointing spent in
        each within its GTIs (:mod:`bkgxr.track`; the GTI table is read only
        for a run whose ONTIME is shorter than TSTOP - TSTART; runs whose
        track is unknown stay whole in the band of ``ZEN_PNT``). The cube then also holds ``run_band_counts``
        (obs_id, zenith, energy, FoV), which the ``bands`` and ``interpolate``
        zenith models weight, each run in each band by its share of time
        (``run_band_fraction``); the kernel models weight whole runs either way.
        False: every event and the whole run in the band of ``ZEN_PNT``.

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
        For runs outside every zenith band (left out, ``run_band`` -1) and
        for bands without runs.

    Examples
    --------
    >>> store = open_store(path)                         # doctest: +SKIP
    >>> cube = build_cube(store.select(OFF_QUERY)).compute()  # doctest: +SKIP
    >>> cube.rate.sel(offset=0.5, method="nearest").plot.line(x="energy", xscale="log")  # doctest: +SKIP
    """
    binning = Binning() if binning is None else binning
    runs = runs.reset_index(drop=True)
    n_runs_all = len(runs)
    band = band_index(runs["ZEN_PNT"].to_numpy(), binning.zenith)
    given_error = runs["ERROR"].to_numpy(str) if "ERROR" in runs else np.full(n_runs_all, "", dtype=object)
    if not skip_bad and np.any(given_error != ""):
        i = int(np.flatnonzero(given_error != "")[0])
        raise InvalidRunError(int(runs["OBS_ID"][i]), runs["EVENTS_PATH"][i], given_error[i])
    excluded = runs.loc[(band < 0) & (given_error == ""), "OBS_ID"].astype(int).tolist()
    if excluded:
        warnings.warn(
            f"{len(excluded)} run(s) outside every zenith band {binning.zenith.tolist()} "
            f"deg are left out: {excluded}",
            stacklevel=2,
        )
    read = np.flatnonzero((band >= 0) & (given_error == ""))
    if read.size == 0:
        why = [
            f"run {int(o)} ({Path(f).name if isinstance(f, str) else 'no file'}): {e or f'zenith {z:.1f} deg'}"
            for o, f, z, e in zip(runs["OBS_ID"], runs["EVENTS_PATH"], runs["ZEN_PNT"], given_error, strict=True)
        ]
        more = f"; and {len(why) - 5} more" if len(why) > 5 else ""
        raise EmptySelectionError(
            f"no usable run falls in any zenith band {binning.zenith.tolist()} deg: {'; '.join(why[:5])}{more}"
        )
    threshold = runs.get("SAFE_ENERGY_LO", pd.Series(np.nan, index=runs.index)).to_numpy(np.float64)
    safe = np.ones((n_runs_all, binning.shape[1]), dtype=bool)
    if safe_energy:
        safe = safe_bins(
            binning.energy,
            threshold,
            runs.get("SAFE_ENERGY_HI", pd.Series(np.nan, index=runs.index)).to_numpy(np.float64),
        )
    e_lo, e_hi = _energy_limits(safe, binning.energy)
    to_read = runs.iloc[read].assign(E_MIN=e_lo[read], E_MAX=e_hi[read])

    regions = run_regions(runs, exclusion=exclusion, target_radius=target_radius)
    nodes = index_node_maps(runs)  # one astropy call: the zenith tracks, 3D reads and 3D exclusion share it
    pieces = gti_pieces(runs, skip_bad=skip_bad)  # GTIs of the runs with gaps: their band time and track nodes
    fraction, tracks = None, None  # without event_zenith: whole runs in the band of ZEN_PNT (assemble_cube's default)
    if event_zenith:
        times, track, known = slice_tracks(runs, nodes=nodes)
        times[~known] = np.nan  # no track: the run's events keep ZEN_PNT, as its constant track does in band_fractions
        fraction = gti_fractions(times, track, band_fractions(track, binning.zenith), binning.zenith, pieces)
        tracks = (times[read], track[read])
    reads: list[RunRead | None] = [None] * n_runs_all
    for i, one in zip(read.tolist(), run_reads(
        to_read, fov=binning.fov, exclude=[regions[i] for i in read], nodes=[nodes[i] for i in read], tracks=tracks
    ), strict=True):
        reads[i] = one
    # a run the selection found bad keeps its reason (its zenith is NaN: no band either)
    reasons = np.where(given_error != "", given_error, np.where(band < 0, "outside every zenith band", "")).astype(object)
    counts, run_counts, read_errors, band_counts, kept = histogram_runs(
        reads, binning, skip_bad=skip_bad, reasons=reasons.tolist(), by_band=event_zenith,
        events=runs.get("EVENT_COUNT", pd.Series(np.nan, index=runs.index)).to_numpy(np.float64),
    )
    # with skip_bad, which runs count is known only once they are read
    run_error: npt.NDArray[np.object_] | da.Array = read_errors if skip_bad else reasons
    cube = assemble_cube(
        binning,
        counts=counts,
        run_counts=run_counts,
        run_error=run_error,
        run_safe=safe,
        obs_id=runs["OBS_ID"].to_numpy(np.int64),
        run_zenith=runs["ZEN_PNT"].to_numpy(np.float64),
        run_ontime=runs["ONTIME"].to_numpy(np.float64),
        run_livetime=runs["LIVETIME"].to_numpy(np.float64),
        run_threshold=threshold,
        run_tstart=runs.get("TSTART", pd.Series(np.nan, index=runs.index)).to_numpy(np.float64),
        run_muoneff=runs.get("MUONEFF", pd.Series(np.nan, index=runs.index)).to_numpy(np.float64),
        run_track=zenith_tracks(runs, nodes=nodes, pieces=pieces),
        run_band_fraction=fraction,
        attrs={"excluded_runs": excluded, "safe_energy": int(safe_energy),
               "zenith_assignment": ZENITH_RULE if event_zenith else POINTING_RULE},
        run_kept=kept,
    )
    if band_counts is not None:  # what the zenith models weight per band when runs cross band edges
        cube["run_band_counts"] = (("obs_id", *binning.dims), band_counts,
                                   {"units": "", "long_name": "counts per run and zenith band"})
    if not skip_bad:  # with skip_bad, n_runs is known only after compute
        _warn_empty(cube["n_runs"].values, binning)
    return cube


def assemble_cube(
    binning: Binning,
    *,
    counts: npt.ArrayLike | da.Array,
    run_counts: npt.ArrayLike | da.Array,
    run_error: npt.ArrayLike | da.Array,
    run_safe: npt.ArrayLike,
    obs_id: npt.ArrayLike,
    run_zenith: npt.ArrayLike,
    run_ontime: npt.ArrayLike,
    run_livetime: npt.ArrayLike,
    run_threshold: npt.ArrayLike,
    run_tstart: npt.ArrayLike,
    attrs: dict[str, Any],
    run_kept: npt.ArrayLike | None = None,
    run_muoneff: npt.ArrayLike | None = None,
    run_track: npt.ArrayLike | None = None,
    run_band_fraction: npt.ArrayLike | None = None,
) -> xr.Dataset:
    """Return the cube Dataset from counts and per-run values (numpy or dask).

    Livetime, exposure, rate and their kin are derived here, the same way for
    a fresh build and for a cube read back from a file.

    Parameters
    ----------
    binning : Binning
    counts : array-like
        Shape: (n_zenith, n_energy, n_offset).
    run_counts : array-like
        Shape: (n_runs, n_energy, n_offset).
    run_error : array-like of str
        '' for a run used in the model. Shape: (n_runs,).
    run_safe : array-like of bool
        Energy bins where each run counts. Shape: (n_runs, n_energy).
    obs_id, run_zenith, run_ontime, run_livetime, run_threshold : array-like
        Shape: (n_runs,); zenith in deg, ONTIME and LIVETIME in s, safe energy threshold
        (SAFE_ENERGY_LO) in TeV, NaN where unknown.
    run_tstart : array-like
        Start time (TSTART, s since the store's MJDREF), NaN where unknown.
        Shape: (n_runs,).
    attrs : dict
        Extra attributes of the Dataset.
    run_kept : array-like, optional
        Fraction of each FoV bin's solid angle outside the run's exclusion
        regions, averaged over the run (1 without regions). Shape: (n_runs,
        *fov shape).
    run_muoneff : array-like, optional
        Optical efficiency (MUONEFF) of each run, NaN where unknown (the default).
    run_track : array-like, optional
        Pointing zenith (deg) at equal-time nodes of each run (:func:`bkgxr.track.zenith_tracks`);
        ``run_zenith`` at one node if omitted. Shape: (n_runs, n_nodes).
    run_band_fraction : array-like, optional
        Fraction of each run's time in each zenith band (:func:`bkgxr.track.band_fractions`);
        all of it in the band of ``run_zenith`` if omitted. Shape: (n_runs, n_zenith).
    """
    n_bands, n_energy, *fov_shape = binning.shape
    fov_dims = binning.fov_dims
    band = band_index(run_zenith, binning.zenith)
    onehot = (band[:, None] == np.arange(n_bands)[None, :]).astype(np.float64)
    fraction = onehot if run_band_fraction is None else np.asarray(run_band_fraction, dtype=np.float64)
    run_ontime = np.asarray(run_ontime, dtype=np.float64)
    run_livetime = np.asarray(run_livetime, dtype=np.float64)
    run_safe = np.asarray(run_safe, dtype=bool)
    used = cast("npt.NDArray[np.bool_] | da.Array", run_error == "")  # elementwise, never a bare bool
    used_ontime = np.where(used, run_ontime, 0.0)  # not 0 * NaN: a run found bad has no time
    ontime = used_ontime @ fraction
    livetime = np.where(used, run_livetime, 0.0) @ fraction
    exposed = (used_ontime[:, None] * run_safe).T @ fraction  # (energy, zenith)
    n_runs = used.astype(np.int64) @ (fraction > 0).astype(np.int64)
    n_all = run_ontime.size
    kept: npt.NDArray[np.float64] | da.Array = np.ones((n_all, *fov_shape))
    if run_kept is not None:  # lazy from the read tasks of a build, numpy from a file
        # one chunk: the sum over runs below then adds in the order numpy does for a cube read from a file;
        # method "tasks" named, else dask imports distributed (0.16 s) to look for a cluster's p2p rechunk
        kept = (run_kept.rechunk({0: -1}, method="tasks") if isinstance(run_kept, da.Array)  # type: ignore[no-untyped-call]
                else np.asarray(run_kept, dtype=np.float64))
    # ONTIME x safe energy bins x kept FoV fraction, summed over each band's runs
    exposed_fov = np.einsum("rb,re,rf->bef", used_ontime[:, None] * fraction, run_safe, kept.reshape(n_all, -1))
    exposure = xr.DataArray(
        exposed_fov.reshape(n_bands, n_energy, *fov_shape) * exposure_s_mev_sr(np.ones(1), binning),
        dims=binning.dims,
        attrs={"units": "MeV s sr", "long_name": "exposed ONTIME x dE x dOmega"},
    )
    counts_da = xr.DataArray(counts, dims=binning.dims, attrs={"units": "", "long_name": "event counts"})
    rate, rate_err = rate_from_counts(counts_da, exposure)
    rate.attrs = {"units": str(RATE_UNIT), "long_name": "background rate dN/(dt dE dOmega) per observation time"}
    rate_err.attrs = {"units": str(RATE_UNIT), "long_name": "Poisson error of the rate"}
    return xr.Dataset(
        {
            "counts": counts_da,
            "exposure": exposure,
            "rate": rate,
            "rate_err": rate_err,
            "has_exposure": exposure > 0,
            "ontime": ("zenith", ontime, {"units": "s", "long_name": "summed ONTIME of used runs"}),
            "livetime": ("zenith", livetime, {"units": "s", "long_name": "summed LIVETIME of used runs"}),
            "exposed_ontime": (("zenith", "energy"), exposed.T, {"units": "s", "long_name": "ONTIME of runs safe in the bin"}),
            "n_runs": ("zenith", n_runs, {"units": "", "long_name": "runs used per band"}),
            "run_counts": (("obs_id", "energy", *fov_dims), run_counts, {"units": "", "long_name": "counts per run"}),
            "run_kept": (("obs_id", *fov_dims), kept, {"units": "", "long_name": "FoV fraction outside exclusion regions"}),
            "run_safe": (("obs_id", "energy"), run_safe, {"units": "", "long_name": "bin inside the run's safe energy range"}),
            "run_zenith": ("obs_id", np.asarray(run_zenith, dtype=np.float64), {"units": "deg"}),
            "run_ontime": ("obs_id", run_ontime, {"units": "s", "long_name": "ONTIME (GTI sum)"}),
            "run_livetime": ("obs_id", run_livetime, {"units": "s", "long_name": "LIVETIME"}),
            "run_tstart": ("obs_id", np.asarray(run_tstart, dtype=np.float64), {"units": "s", "long_name": "TSTART (since MJDREF)"}),
            "run_track": (("obs_id", "track"), np.asarray(run_zenith, dtype=np.float64)[:, None] if run_track is None
                          else np.asarray(run_track, dtype=np.float64), {"units": "deg", "long_name": "pointing zenith over the run"}),
            "run_muoneff": ("obs_id", np.full(run_ontime.size, np.nan) if run_muoneff is None else np.asarray(run_muoneff, dtype=np.float64),
                            {"units": "", "long_name": "optical efficiency MUONEFF"}),
            "run_threshold": ("obs_id", np.asarray(run_threshold, dtype=np.float64), {"units": "TeV", "long_name": "safe energy threshold"}),
            "run_band": ("obs_id", band, {"units": "", "long_name": "zenith band of ZEN_PNT (-1: none)"}),
            "run_band_fraction": (("obs_id", "zenith"), fraction, {"units": "", "long_name": "fraction of the run's time in the band"}),
            "run_used": ("obs_id", used, {"units": "", "long_name": "run counted in the model"}),
            "run_error": ("obs_id", run_error, {"units": "", "long_name": "why the run was left out"}),
        },
        coords={
            **binning.coords(),
            "zenith_band": ("zenith", band_labels(binning.zenith), {"long_name": "zenith band (deg)"}),
            "obs_id": ("obs_id", np.asarray(obs_id, dtype=np.int64)),
        },
        attrs={
            "zenith_assignment": POINTING_RULE,
            "rate_time": RATE_TIME,
            "rate_without_exposure": "0 (see has_exposure)",
            **attrs,
        },
    )


def _warn_empty(n_runs: npt.ArrayLike, binning: Binning) -> None:
    labels = band_labels(binning.zenith)
    empty = [labels[i] for i in np.flatnonzero(np.asarray(n_runs) == 0)]
    if empty:
        warnings.warn(f"zenith band(s) {empty} deg have no run: their rate is 0", stacklevel=3)


