"""Leave-one-run-out validation: how well a recipe predicts runs it has not seen.

For each held-out run, the model of its zenith is built from the other runs
(:func:`bkgxr.zenith.predict_rates` with ``leave_out``) and turned into
predicted counts as gammapy does, ``rate x ONTIME`` of the run (with the
recipe's ``deadtime="livetime"``, the model holds the run's DEADC, so this is
``rate_live x LIVETIME``), times the run's FoV fraction outside exclusion
regions (``run_kept``: its events inside them are not counted). Compared in the bins above the
run's safe energy threshold and inside ``radius``:

- normalisation: ``ratio = observed / predicted`` total counts;
- shape: the prediction scaled to the observed total, then the Poisson
  deviance over bins with a prediction (``NDF = n_bins - 1``), and Pearson
  chi2 over bins predicting at least :data:`CHI2_MIN_PREDICTED` counts
  (``NDF_CHI2`` of them, minus one).

Names: in the per-run table (and its CSV) ``NDF`` and ``NDF_CHI2`` are
degrees of freedom, integers; in the summary ``deviance_ndf`` and ``chi2_ndf``
are the ratios deviance/ndf and chi2/ndf over all runs (sums over sums).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .axes import binning_of, exposure_s_mev_sr
from .recipe import DEFAULT_RECIPE
from .zenith import predict_rates

if TYPE_CHECKING:
    import numpy.typing as npt
    import xarray as xr

    from .axes import Binning
    from .recipe import Recipe

#: Energy threshold (TeV) of runs without SAFE_ENERGY_LO.
DEFAULT_THRESHOLD = 1.0
#: Offset radius (deg) inside which runs are compared.
DEFAULT_RADIUS = 2.0


@dataclass(frozen=True)
class Validation:
    """Result of :func:`validate`: one row per held-out run and the summary.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per held-out run, columns :data:`COLUMNS`.
    summary : dict
        ``model``, ``n_runs``, ``mean``, ``std``, ``mad`` of RATIO,
        ``deviance_ndf`` and ``chi2_ndf`` (ratios: sums of DEVIANCE and CHI2
        over runs divided by the sums of NDF and NDF_CHI2),
        ``radius`` and ``default_threshold``.
    """

    runs: pd.DataFrame
    summary: dict[str, float | int | str]

    def __str__(self) -> str:
        s = self.summary
        return (
            f"{s['model']:>{MODEL_WIDTH}}: {s['n_runs']:>4} runs, obs/pred mean {s['mean']:.3f} std {s['std']:.3f} "
            f"MAD {s['mad']:.3f}; shape deviance/ndf {s['deviance_ndf']:.3f}, chi2/ndf {s['chi2_ndf']:.3f}"
        )

    def write(self, path: str | Path) -> Path:
        """Write the per-run table as CSV with the summary as ``#`` header lines, atomically (see :func:`bkgxr.io.write.write_atomic`)."""
        from .io.write import write_atomic

        header = "".join(f"# {key}: {value}\n" for key, value in self.summary.items())
        return write_atomic((header + self.runs.to_csv(index=False)).encode(), path)


#: Columns of the per-run validation table: NDF and NDF_CHI2 are the degrees of freedom of DEVIANCE and CHI2.
COLUMNS = ["OBS_ID", "ZEN_PNT", "OBSERVED", "PREDICTED", "RATIO", "DEVIANCE", "NDF", "CHI2", "NDF_CHI2", "N_EFF"]
#: Width the recipe's name is right-aligned to in a summary line (the longest name, ``interpolate+smooth+deadc``).
MODEL_WIDTH = 24
#: Pearson chi2 counts only bins whose scaled prediction reaches this many counts.
CHI2_MIN_PREDICTED = 5.0


def compare(
    observed: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> tuple[float, float, int, float, int]:
    """Compare one run's observed and predicted counts.

    The prediction is scaled to the observed total before the shape terms.

    Returns
    -------
    ratio : float
        Observed / predicted total counts (NaN without prediction).
    deviance, ndf : float, int
        Poisson deviance over bins with a positive prediction, and their
        number minus one (the scaling).
    chi2, ndf_chi2 : float, int
        Pearson chi2 over bins whose scaled prediction is at least
        :data:`CHI2_MIN_PREDICTED` counts, and their number minus one.
    """
    total_obs, total_pred = float(observed.sum()), float(predicted.sum())
    if total_pred <= 0 or total_obs <= 0:
        return (total_obs / total_pred if total_pred > 0 else np.nan), np.nan, 0, np.nan, 0
    scaled = predicted * (total_obs / total_pred)
    positive = scaled > 0
    obs, pred = observed[positive], scaled[positive]
    log_term = np.where(obs > 0, obs * np.log(np.where(obs > 0, obs, 1.0) / pred), 0.0)
    deviance = float(2 * np.sum(log_term - (obs - pred)))
    large = scaled >= CHI2_MIN_PREDICTED
    chi2 = float(np.sum((observed[large] - scaled[large]) ** 2 / scaled[large]))
    return total_obs / total_pred, deviance, int(positive.sum()) - 1, chi2, int(large.sum()) - 1


def validate(
    cube: xr.Dataset,
    *,
    recipe: Recipe = DEFAULT_RECIPE,
    radius: float = DEFAULT_RADIUS,
    default_threshold: float = DEFAULT_THRESHOLD,
) -> Validation:
    """Leave-one-run-out validation of a zenith recipe on the runs of ``cube``.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube with per-run counts (:func:`bkgxr.build_cube`).
    recipe : Recipe
        How each held-out run's model is made (:data:`bkgxr.DEFAULT_RECIPE`
        if omitted).
    radius : float
        Compare offsets up to this radius, deg (whole offset bins only; in 3D
        the FoV pixels whose centre lies within it).
    default_threshold : float
        Energy threshold (TeV) of runs without SAFE_ENERGY_LO.

    Returns
    -------
    Validation
    """
    binning = binning_of(cube)
    held = np.flatnonzero(cube["run_used"].values)
    targets = cube["run_track"].values[held] if recipe.track else cube["run_zenith"].values[held]
    rate, n_eff = predict_rates(
        cube, targets, recipe=recipe, time=cube["run_tstart"].values[held], leave_out=held,
        efficiency=cube["run_muoneff"].values[held],
    )
    unit = exposure_s_mev_sr(np.ones(1), binning)[0]
    # gammapy's prediction, rate per ONTIME x ONTIME: the recipe's own time of the run
    time = cube["run_ontime" if recipe.deadtime == "ontime" else "run_livetime"].values[held]
    predicted = rate * time.reshape(-1, *([1] * unit.ndim)) * unit[None]
    name = (recipe.zenith + ("+smooth" if recipe.smoothing is not None else "") + ("+deadc" if recipe.deadtime == "livetime" else "")
            + ("+muoneff" if recipe.efficiency_scaling else ""))
    return compare_runs(cube, held, predicted, n_eff, model=name, radius=radius, default_threshold=default_threshold)


def fov_within(binning: Binning, radius: float) -> npt.NDArray[np.bool_]:
    """Return which FoV bins lie within ``radius`` (deg): whole offset rings (2D), pixel centres (3D)."""
    if binning.fov == "offset":
        return np.asarray(binning.offset[1:] <= radius + 1e-9)
    lon = 0.5 * (binning.fov_lon[1:] + binning.fov_lon[:-1])
    lat = 0.5 * (binning.fov_lat[1:] + binning.fov_lat[:-1])
    return np.asarray(np.hypot(lon[:, None], lat[None, :]) <= radius + 1e-9)


def compare_runs(
    cube: xr.Dataset,
    held: npt.NDArray[np.int64],
    predicted: npt.NDArray[np.float64],
    n_eff: npt.NDArray[np.float64],
    *,
    model: str,
    radius: float,
    default_threshold: float,
) -> Validation:
    """Compare the runs ``held`` (indices along ``obs_id``) with their predicted counts.

    Parameters
    ----------
    cube : xarray.Dataset
        Computed cube with per-run counts.
    held : numpy.ndarray
        Runs compared. Shape: (n_held,).
    predicted : numpy.ndarray
        Predicted counts per bin over the whole FoV, as gammapy predicts them.
        Shape: (n_held, n_energy, *fov shape). A run used outside exclusion
        regions has no counts inside them: its prediction is compared times
        its kept FoV fraction (``run_kept``).
    n_eff : numpy.ndarray
        Effective number of runs behind each prediction (NaN if not defined).
    model, radius, default_threshold
        Name of the recipe, offset radius (deg) and threshold of runs without
        SAFE_ENERGY_LO (TeV), as in :func:`validate`.
    """
    binning = binning_of(cube)
    if "run_kept" in cube:  # files of bkgxr 0.1 have none: every run whole
        predicted = predicted * cube["run_kept"].values[held][:, None]
    threshold = np.nan_to_num(cube["run_threshold"].values[held], nan=default_threshold)
    in_energy = binning.energy[None, :-1] >= threshold[:, None] * (1 - 1e-6)
    in_radius = fov_within(binning, radius)
    rows = []
    for k, i in enumerate(held):
        mask = in_energy[k].reshape(-1, *([1] * in_radius.ndim)) & in_radius[None]
        observed = cube["run_counts"].values[i].astype(np.float64)
        rows.append(
            (int(cube["obs_id"].values[i]), float(cube["run_zenith"].values[i]), round(observed[mask].sum()),
             predicted[k][mask].sum(), *compare(observed[mask], predicted[k][mask]), float(n_eff[k]))
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Validation(table, summarize(table, model=model, radius=radius, default_threshold=default_threshold))


def summarize(table: pd.DataFrame, *, model: str, radius: float, default_threshold: float) -> dict[str, float | int | str]:
    """Return the summary figures of a per-run validation table."""
    ratio = table["RATIO"].to_numpy()
    ok = np.isfinite(ratio)
    return {
        "model": model,
        "n_runs": int(ok.sum()),
        "mean": float(np.mean(ratio[ok])),
        "std": float(np.std(ratio[ok], ddof=1)),
        "mad": float(np.median(np.abs(ratio[ok] - np.median(ratio[ok])))),
        "deviance_ndf": float(table["DEVIANCE"].to_numpy()[ok].sum() / table["NDF"].to_numpy()[ok].sum()),
        "chi2_ndf": float(table["CHI2"].to_numpy()[ok].sum() / table["NDF_CHI2"].to_numpy()[ok].sum()),
        "radius": radius,
        "default_threshold": default_threshold,
    }
