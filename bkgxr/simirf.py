"""IRFs of simulated runs: the simple response :func:`bkgxr.simulate.simulate_store` writes with every run.

The background events are drawn in reconstructed coordinates; these IRFs do
not shape them, they only let a gammapy analysis run on the store:

- ``AEFF_2D``: ``area / (1 + (E_thr(z) / E)^sharpness) exp(-r^2 / (2 offset_sigma^2))``
  m2, with the rate model's turn-on ``E_thr(z)`` at the run's zenith, at bin
  centres (geometric in energy); ``LO_THRES = E_thr(z)``, ``HI_THRES = energy_max``.
- ``EDISP_2D``: migra = E_reco / E_true is Gaussian, mean 1 (no bias), sigma
  ``energy_resolution``, at every energy and offset; a bin holds the mean density over it.
- ``PSF_TABLE``: a Gaussian of sigma ``psf_sigma``, ``exp(-r^2 / (2 s^2)) / (2 pi s^2)``
  sr-1 (s in rad), at every energy and offset, at bin centres.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .io.dl3 import (
    HduBytes,
    create_aeff_2d_hdu,
    create_edisp_2d_hdu,
    create_psf_table_hdu,
    to_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy.typing as npt
    from astropy.io import fits

    from .rate_model import RateModel

#: IRF axes: true energy (TeV), offset of AEFF and of EDISP/PSF (deg), migra, PSF radius (deg).
IRF_ENERGY, IRF_OFFSET, IRF_OFFSET_FLAT = np.geomspace(0.01, 300.0, 46), np.linspace(0.0, 5.0, 21), np.array([0.0, 2.5, 5.0])
IRF_MIGRA, IRF_RAD = np.linspace(0.2, 2.0, 91), np.linspace(0.0, 0.6, 61)


@dataclass(frozen=True)
class IrfModel:
    """Instrument response written with every simulated run (formulas in the module docstring)."""

    area: float = 1.0e5  #: effective area on axis, far above the turn-on (m2)
    sharpness: float = 4.0  #: steepness of the effective area's turn-on at the rate model's E_thr(zenith)
    offset_sigma: float = 1.5  #: width of the effective area's Gaussian fall-off with offset (deg)
    energy_resolution: float = 0.1  #: sigma of migra = E_reco / E_true
    psf_sigma: float = 0.1  #: sigma of the Gaussian PSF (deg)

    def __post_init__(self) -> None:
        values = np.array(dataclasses.astuple(self), dtype=np.float64)
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"{self}: every parameter must be finite and positive")

    def effective_area(
        self, energy_tev: npt.ArrayLike, offset_deg: npt.ArrayLike, threshold_tev: float
    ) -> npt.NDArray[np.float64]:
        """Return the effective area (m2) at true energy (TeV) and offset (deg); arguments broadcast."""
        energy, offset = np.asarray(energy_tev, dtype=np.float64), np.asarray(offset_deg, dtype=np.float64)
        return self.area / (1.0 + (threshold_tev / energy) ** self.sharpness) * np.exp(-0.5 * (offset / self.offset_sigma) ** 2)

    def migra_density(self, migra_edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the mean of the Gaussian density dP/dmigra over each bin. Shape: (n_edges - 1,)."""
        edges = np.asarray(migra_edges, dtype=np.float64)
        cdf = np.array([math.erf((m - 1.0) / (math.sqrt(2.0) * self.energy_resolution)) for m in edges])
        density: npt.NDArray[np.float64] = 0.5 * np.diff(cdf) / np.diff(edges)
        return density

    def psf_density(self, rad_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the PSF density dP/dOmega (sr-1) at angular distances (deg) from the true direction."""
        rad = np.asarray(rad_deg, dtype=np.float64)
        density: npt.NDArray[np.float64] = np.exp(-0.5 * (rad / self.psf_sigma) ** 2) / (2 * np.pi * np.radians(self.psf_sigma) ** 2)
        return density


def _centres(edges: npt.NDArray[np.float64], log: bool = False) -> npt.NDArray[np.float64]:
    return np.sqrt(edges[1:] * edges[:-1]) if log else 0.5 * (edges[1:] + edges[:-1])


_WHERE = "at every true energy and offset (bkgxr.simulate.IrfModel)"


@functools.lru_cache(maxsize=4)
def _flat_irfs(irf: IrfModel) -> tuple[HduBytes, HduBytes]:
    """EDISP_2D and PSF_TABLE HDUs, the same in every run: laid out once per process."""
    n_e, n_o = IRF_ENERGY.size - 1, IRF_OFFSET_FLAT.size - 1
    edisp = np.broadcast_to(irf.migra_density(IRF_MIGRA)[None, :, None], (n_e, IRF_MIGRA.size - 1, n_o))
    psf = np.broadcast_to(irf.psf_density(_centres(IRF_RAD))[None, None, :], (n_e, n_o, IRF_RAD.size - 1))
    edisp_text = (f"migra = E_reco / E_true Gaussian, mean 1, sigma {irf.energy_resolution:g}, {_WHERE}; "
                  "a bin holds the mean density over it")
    psf_text = f"Gaussian PSF, sigma {irf.psf_sigma:g} deg: exp(-r^2 / (2 s^2)) / (2 pi s^2) sr-1, s in rad, {_WHERE}"
    meta = {"CREATOR": "bkgxr.simulate"}
    return (to_bytes(create_edisp_2d_hdu(edisp, IRF_ENERGY, IRF_MIGRA, IRF_OFFSET_FLAT, meta=meta, comments=[edisp_text])),
            to_bytes(create_psf_table_hdu(psf, IRF_ENERGY, IRF_OFFSET_FLAT, IRF_RAD, meta=meta, comments=[psf_text])))


def irf_hdus(irf: IrfModel, model: RateModel, run: Mapping[str, Any]) -> list[fits.BinTableHDU | HduBytes]:
    """AEFF_2D (at the run's zenith), EDISP_2D and PSF_TABLE HDUs of a run, with COMMENT cards stating the formulas."""
    zenith = float(run["ZEN_PNT"])
    threshold = float(model.energy_threshold(zenith))
    area = irf.effective_area(_centres(IRF_ENERGY, log=True)[:, None], _centres(IRF_OFFSET)[None, :], threshold)
    aeff_text = (f"A = {irf.area:g} m2 / (1 + (E_thr / E)^{irf.sharpness:g}) x exp(-r^2 / (2 x ({irf.offset_sigma:g} deg)^2)), "
                 f"E_thr = {threshold:.6g} TeV, the background model's turn-on at ZENITH; values at bin centres")
    meta = {"OBS_ID": run["OBS_ID"], "ZENITH": zenith, "CREATOR": "bkgxr.simulate", "LO_THRES": threshold,
            "HI_THRES": model.energy_max}
    return [create_aeff_2d_hdu(area, IRF_ENERGY, IRF_OFFSET, meta=meta, comments=[aeff_text]), *_flat_irfs(irf)]
