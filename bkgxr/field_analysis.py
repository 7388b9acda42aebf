"""Analysis of one source field with its background models, the way analysers use them (gammapy's map chain).

For each observation of a field, :func:`analyse_field` runs gammapy's
``MapDatasetMaker`` (counts, background) → ``SafeMaskMaker`` (``offset-max``
2.5 deg and ``aeff-default``: the released safe energy range of each run, the
``LO_THRES``/``HI_THRES`` of its effective area, as the H.E.S.S. DR1 analyses
use) → ``FoVBackgroundMaker`` outside the exclusion regions, twice:

- ``method="scale"``: the per-run norm, counts / background outside the
  exclusion regions, and its Poisson error;
- ``method="fit"`` with a :class:`~gammapy.modeling.models.PowerLawNormSpectralModel`
  whose norm and tilt are free: the per-run norm and tilt.

The scaled datasets are stacked; ``ExcessMapEstimator`` (correlation radius
0.1 deg, all energies) gives the significance map whose mean and width outside
the exclusion regions judge the model (0 and 1 for a perfect one); a pixel counts there
if its correlation circle lies wholly outside them (the circles grown by the correlation
radius), so that no excluded source's counts enter its significance. Spectral
residuals: per energy bin, the counts and the predicted background outside the
exclusion regions in the safe mask, summed over the field's runs;
``chi2 = sum((counts - npred)^2 / npred)`` over bins with a prediction, with
``ndf`` their number minus 1 after the per-run norm (each run's total is
matched) and minus 2 after norm + tilt.

:mod:`bkgxr.fields` chooses the fields, builds their models and reports.
gammapy and regions are imported only when :func:`analyse_field` runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import numpy.typing as npt
    from gammapy.maps import WcsNDMap

    from .exclusion import Circle

#: Columns of :attr:`FieldResult.runs`.
RUN_COLUMNS = ("OBS_ID", "NORM", "NORM_ERR", "FIT_NORM", "FIT_NORM_ERR", "FIT_TILT", "FIT_TILT_ERR")
#: Columns of :attr:`FieldResult.spectrum`.
SPECTRUM_COLUMNS = ("E_LO", "E_HI", "COUNTS", "NPRED_NORM", "NPRED_TILT")


@dataclass(frozen=True)
class AnalysisSettings:
    """Maps and makers of :func:`analyse_field`.

    Attributes
    ----------
    energy_edges_tev : tuple of float
        Reconstructed-energy edges, TeV; 10 log bins over 0.5-30 TeV by default.
    width_deg, binsz_deg : float
        Map width (square, CAR projection, ICRS) and pixel size, deg.
    correlation_radius_deg : float
        Correlation radius of the significance map, deg.
    offset_max_deg : float
        ``SafeMaskMaker`` ``offset-max``, deg.
    background_oversampling : int or None
        ``MapDatasetMaker`` ``background_oversampling`` (energy sub-bins of the bkg
        integration); None, gammapy's default, integrates each bin from its edges.
    """

    energy_edges_tev: tuple[float, ...] = tuple(float(e) for e in np.geomspace(0.5, 30.0, 11))
    width_deg: float = 4.0
    binsz_deg: float = 0.02
    correlation_radius_deg: float = 0.1
    offset_max_deg: float = 2.5
    background_oversampling: int | None = None

    def __post_init__(self) -> None:
        edges = np.asarray(self.energy_edges_tev, dtype=np.float64)
        if edges.size < 2 or not np.all(np.diff(edges) > 0) or not edges[0] > 0:
            raise ValueError(f"energy_edges_tev must be >= 2 increasing positive values, got {self.energy_edges_tev}")
        if not (self.width_deg > 0 and 0 < self.binsz_deg < self.width_deg
                and self.correlation_radius_deg > 0 and self.offset_max_deg > 0):
            raise ValueError(f"{self}: widths, pixel size, correlation radius and offset_max must be positive")
        if self.background_oversampling is not None and not self.background_oversampling >= 1:
            raise ValueError(f"background_oversampling must be None or an integer >= 1, got {self.background_oversampling}")


@dataclass(frozen=True)
class FieldResult:
    """What :func:`analyse_field` measured on one field with one set of models.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per observation, columns :data:`RUN_COLUMNS`: the ``scale`` norm and its
        Poisson error, the ``fit`` norm and tilt and their errors (NaN where gammapy's
        maker failed).
    significance : gammapy.maps.WcsNDMap
        Significance (``sqrt_ts``) image of the stacked field after the per-run norms.
    outside : numpy.ndarray
        Pixels counted in the significance statistics: farther than the correlation radius
        from every exclusion region, in some run's safe mask, finite. Shape: (n_lat, n_lon), bool.
    spectrum : pandas.DataFrame
        One row per energy bin, columns :data:`SPECTRUM_COLUMNS` (TeV, counts): counts and
        predicted background after the norm and after norm + tilt, outside the exclusion
        regions, in the safe masks, summed over the runs.
    """

    runs: pd.DataFrame
    significance: WcsNDMap
    outside: npt.NDArray[np.bool_]
    spectrum: pd.DataFrame

    @property
    def significances(self) -> npt.NDArray[np.float64]:
        """Significances of the pixels outside the exclusion regions. Shape: (n_pixels,)."""
        return np.asarray(self.significance.data, dtype=np.float64).reshape(self.outside.shape)[self.outside]

    def summary(self) -> dict[str, float]:
        """Return the figures: significance mean/width, norm mean/std, chi2/ndf after norm and norm + tilt."""
        sig = self.significances
        norm = self.runs["NORM"].to_numpy(np.float64)
        norm = norm[np.isfinite(norm)]
        out: dict[str, float] = {
            "n_runs": float(len(norm)),
            "sig_mean": float(np.mean(sig)),
            "sig_width": float(np.std(sig)),
            "n_pixels": float(sig.size),
            "norm_mean": float(np.mean(norm)),
            "norm_std": float(np.std(norm, ddof=1)) if norm.size > 1 else np.nan,
        }
        for name, column, n_par in (("norm", "NPRED_NORM", 1), ("tilt", "NPRED_TILT", 2)):
            chi2, ndf = spectral_chi2(self.spectrum["COUNTS"].to_numpy(), self.spectrum[column].to_numpy(), n_par)
            out[f"chi2_{name}"], out[f"ndf_{name}"] = chi2, float(ndf)
            out[f"chi2_ndf_{name}"] = chi2 / ndf if ndf > 0 else np.nan
        return out


def spectral_chi2(counts: npt.ArrayLike, npred: npt.ArrayLike, n_par: int) -> tuple[float, int]:
    """Return ``sum((counts - npred)^2 / npred)`` over bins with ``npred > 0`` and their number minus ``n_par``."""
    n = np.asarray(counts, dtype=np.float64)
    mu = np.asarray(npred, dtype=np.float64)
    used = mu > 0
    return float(np.sum((n[used] - mu[used]) ** 2 / mu[used])), int(used.sum()) - n_par


def _norm_and_error(dataset: Any, name: str) -> tuple[float, float]:
    """Return a parameter of the dataset's FoV background model and its error; NaN if the maker failed."""
    if not dataset.mask_safe.data.any():
        return np.nan, np.nan
    parameter = dataset.background_model.spectral_model.parameters[name]
    return float(parameter.value), float(parameter.error)


def _masked_spectrum(dataset: Any, keep: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return counts and npred background per energy bin in the safe mask and ``keep`` (lat, lon)."""
    mask = dataset.mask_safe.data & keep[None]
    counts = np.where(mask, dataset.counts.data, 0.0).sum(axis=(1, 2))
    npred = np.where(mask, dataset.npred_background().data, 0.0).sum(axis=(1, 2))
    return counts.astype(np.float64), npred.astype(np.float64)


def analyse_field(
    observations: Iterable[Any],
    *,
    ra_deg: float,
    dec_deg: float,
    exclusion: Sequence[Circle],
    settings: AnalysisSettings | None = None,
) -> FieldResult:
    """Analyse a field's observations with their bkg models, as a gammapy user would.

    Parameters
    ----------
    observations : iterable of gammapy.data.Observation
        With events, GTI, effective area and bkg (``DataStore.get_observations(ids,
        required_irf=["aeff", "bkg"])``).
    ra_deg, dec_deg : float
        Map centre, ICRS deg.
    exclusion : sequence of Circle
        Sky circles excluded from the norms and the statistics.
    settings : AnalysisSettings, optional
        Maps and makers; the defaults if omitted.

    Returns
    -------
    FieldResult

    Raises
    ------
    ValueError
        If no observation is given.

    Examples
    --------
    >>> from gammapy.data import DataStore                                 # doctest: +SKIP
    >>> obs = DataStore.from_file("bkg.fits").get_observations([23523], required_irf=["aeff", "bkg"])  # doctest: +SKIP
    >>> analyse_field(obs, ra_deg=83.633, dec_deg=22.014, exclusion=[Circle(83.633, 22.014, 0.3)]).summary()  # doctest: +SKIP
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.datasets import MapDataset
    from gammapy.estimators import ExcessMapEstimator
    from gammapy.makers import FoVBackgroundMaker, MapDatasetMaker, SafeMaskMaker
    from gammapy.maps import Map, MapAxis, WcsGeom
    from gammapy.modeling.models import PowerLawNormSpectralModel
    from regions import CircleSkyRegion

    settings = AnalysisSettings() if settings is None else settings
    energy = MapAxis.from_edges(np.asarray(settings.energy_edges_tev), unit="TeV", name="energy", interp="log")
    geom = WcsGeom.create(skydir=SkyCoord(ra_deg, dec_deg, unit="deg"), width=settings.width_deg,
                          binsz=settings.binsz_deg, frame="icrs", proj="CAR", axes=[energy])
    image = geom.to_image()

    def outside_circles(grow_deg: float) -> Any:
        regions = [CircleSkyRegion(SkyCoord(c.ra_deg, c.dec_deg, unit="deg"), (c.radius_deg + grow_deg) * u.deg)
                   for c in exclusion]
        return image.region_mask(regions, inside=False) if regions else Map.from_geom(image, data=True, dtype=bool)

    keep_map = outside_circles(0.0)
    keep = np.asarray(keep_map.data, dtype=bool)
    # a pixel's significance sums the counts within the correlation radius: none may be excluded
    far = np.asarray(outside_circles(settings.correlation_radius_deg).data, dtype=bool)
    maker = MapDatasetMaker(selection=["counts", "background"], background_oversampling=settings.background_oversampling)
    safe = SafeMaskMaker(methods=["offset-max", "aeff-default"], offset_max=settings.offset_max_deg * u.deg)
    scale = FoVBackgroundMaker(method="scale", exclusion_mask=keep_map)
    stacked = MapDataset.create(geom, name="stacked")
    rows, spectra = [], []
    for obs in observations:
        dataset = safe.run(maker.run(MapDataset.create(geom, name=f"obs-{obs.obs_id}"), obs), obs)
        dataset = scale.run(dataset)
        norm = _norm_and_error(dataset, "norm")
        counts, npred_norm = _masked_spectrum(dataset, keep)
        stacked.stack(dataset)
        dataset.models = None
        tilted = PowerLawNormSpectralModel()
        tilted.tilt.frozen = False
        dataset = FoVBackgroundMaker(method="fit", exclusion_mask=keep_map, spectral_model=tilted).run(dataset)
        _, npred_tilt = _masked_spectrum(dataset, keep)
        rows.append((int(obs.obs_id), *norm, *_norm_and_error(dataset, "norm"), *_norm_and_error(dataset, "tilt")))
        spectra.append((counts, npred_norm, npred_tilt))
    if not rows:
        raise ValueError("no observation to analyse")
    estimator = ExcessMapEstimator(correlation_radius=settings.correlation_radius_deg * u.deg, selection_optional=[])
    significance = estimator.run(stacked)["sqrt_ts"].get_image_by_idx((0,))
    sig = np.asarray(significance.data, dtype=np.float64)
    outside = far & stacked.mask_safe.data.any(axis=0) & np.isfinite(sig)
    summed = np.sum(spectra, axis=0)
    edges = np.asarray(settings.energy_edges_tev)
    spectrum = pd.DataFrame(dict(zip(SPECTRUM_COLUMNS, (edges[:-1], edges[1:], *summed), strict=True)))
    return FieldResult(pd.DataFrame(rows, columns=list(RUN_COLUMNS)), significance, outside, spectrum)
