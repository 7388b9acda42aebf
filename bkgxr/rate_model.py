"""The known background rate of simulated stores: :class:`RateModel` and its sampling grids.

:class:`RateModel` is the truth: a falling spectrum with a zenith-dependent
turn-on and normalisation, times a radial acceptance. It is a rate per
observation time (ONTIME, the GTI sum: the time GADF background rates are per
and gammapy multiplies them by), or per LIVETIME with ``truth_time="livetime"``
(:data:`TruthTime`). :func:`energy_grid` and :func:`offset_grid` hold its
normalised CDFs on fine grids, from which :func:`bkgxr.simulate.draw_events`
draws energies and offsets by inversion; :mod:`bkgxr.truth` integrates it
over bins.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .units import ENERGY_UNIT, RATE_ENERGY_UNIT, scale_to

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy.typing as npt

    #: Sampling grid: nodes, normalised CDF on them, integral of the density.
    Grid = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]

#: The time the known rate is per: observation time (ONTIME) or LIVETIME = ONTIME x DEADC.
TruthTime = Literal["ontime", "livetime"]
TRUTH_TIMES: tuple[str, ...] = ("ontime", "livetime")
#: Run-table column of each truth time.
TIME_COLUMN = {"ontime": "ONTIME", "livetime": "LIVETIME"}

_GRID = 8193  # nodes of the sampling grids
_MEV_PER_TEV = scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT)
_META = {  # RateModel field -> obs-index header keyword
    "norm": "SIMNORM", "index": "SIMINDEX", "threshold": "SIMETHR", "threshold_sec_power": "SIMETHRP",
    "sharpness": "SIMSHARP", "norm_sec_power": "SIMNORMP", "offset_sigma": "SIMSIGMA",
    "energy_min": "SIMEMIN", "energy_max": "SIMEMAX", "max_offset": "SIMOFMAX",
}


def _sec(zenith_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    zenith = np.asarray(zenith_deg, dtype=np.float64)
    if np.any(~((zenith >= 0) & (zenith < 90))):
        raise ValueError(f"zenith must lie in [0, 90) deg, got {zenith}")
    return 1.0 / np.cos(np.radians(zenith))


@dataclass(frozen=True)
class RateModel:
    """Background rate dN/(dt dE dOmega) in MeV-1 s-1 sr-1, known exactly.

    ``rate(E, r, z) = norm sec(z)^norm_sec_power (E/1 TeV)^-index
    / (1 + (E_thr(z)/E)^sharpness) exp(-r^2 / (2 offset_sigma^2))`` with
    ``E_thr(z) = threshold sec(z)^threshold_sec_power``, for
    ``energy_min <= E <= energy_max`` and ``r <= max_offset``; 0 elsewhere.
    Below the turn-on the rate goes as ``E^(sharpness - index)``.
    """

    norm: float = 4.0e-4  #: at 1 TeV, on axis, zenith 0, far above threshold (MeV-1 s-1 sr-1)
    index: float = 2.7  #: spectral index above the turn-on
    threshold: float = 0.2  #: turn-on energy at zenith 0 (TeV)
    threshold_sec_power: float = 2.5  #: growth of the turn-on energy with sec(zenith)
    sharpness: float = 4.0  #: steepness of the turn-on
    norm_sec_power: float = 1.0  #: growth of the normalisation with sec(zenith)
    offset_sigma: float = 1.3  #: width of the Gaussian radial acceptance (deg)
    energy_min: float = 0.05  #: support in energy (TeV)
    energy_max: float = 100.0
    max_offset: float = 3.0  #: largest offset (deg)

    def __post_init__(self) -> None:
        positive = ("norm", "threshold", "sharpness", "offset_sigma", "energy_min", "max_offset")
        finite = np.all(np.isfinite(np.array(dataclasses.astuple(self), dtype=np.float64)))
        if not finite or any(getattr(self, n) <= 0 for n in positive) or not (
            self.energy_max > self.energy_min and self.max_offset < 90
        ):
            raise ValueError(f"{self}: need finite values, {', '.join(positive)} > 0, "
                             "energy_max > energy_min and max_offset < 90 deg")

    def energy_threshold(self, zenith_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the turn-on energy (TeV) at each zenith (deg)."""
        return self.threshold * _sec(zenith_deg) ** self.threshold_sec_power

    def spectrum(self, energy_tev: npt.ArrayLike, zenith_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the unnormalised spectral shape; 0 outside ``[energy_min, energy_max]``."""
        energy = np.asarray(energy_tev, dtype=np.float64)
        e = np.clip(energy, self.energy_min, self.energy_max)
        shape = e**-self.index / (1.0 + (self.energy_threshold(zenith_deg) / e) ** self.sharpness)
        return np.where((energy >= self.energy_min) & (energy <= self.energy_max), shape, 0.0)

    def acceptance(self, offset_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the radial acceptance, 1 on axis; 0 beyond ``max_offset``."""
        offset = np.asarray(offset_deg, dtype=np.float64)
        inside = (offset >= 0) & (offset <= self.max_offset)
        return np.where(inside, np.exp(-0.5 * (offset / self.offset_sigma) ** 2), 0.0)

    def rate(
        self, energy_tev: npt.ArrayLike, offset_deg: npt.ArrayLike, zenith_deg: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """Return the rate (MeV-1 s-1 sr-1) at energy (TeV), offset and zenith (deg); arguments broadcast."""
        norm = self.norm * _sec(zenith_deg) ** self.norm_sec_power
        return norm * self.spectrum(energy_tev, zenith_deg) * self.acceptance(offset_deg)

    def counts_per_second(self, zenith_deg: float) -> float:
        """Return a run's expected event rate, the integral of rate dE dOmega (s-1), on the sampling grids."""
        norm = self.norm * float(_sec(zenith_deg)) ** self.norm_sec_power
        return float(norm) * energy_grid(self, float(zenith_deg))[2] * offset_grid(self)[2]

    def to_meta(self) -> dict[str, float]:
        """Return the parameters as ``SIM*`` FITS keywords, read back by :meth:`from_meta`."""
        return {key: float(getattr(self, name)) for name, key in _META.items()}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> RateModel:
        """Return the model a simulated obs-index header holds; ValueError if it lacks one."""
        missing = [key for key in _META.values() if key not in meta]
        if missing:
            raise ValueError(f"header lacks {', '.join(missing)}: not written by simulate_store")
        return cls(**{name: float(meta[key]) for name, key in _META.items()})


def _cdf(nodes: npt.NDArray[np.float64], density: npt.NDArray[np.float64], scale: float) -> Grid:
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(nodes))])
    return nodes, cdf / cdf[-1], scale * float(cdf[-1])


@functools.lru_cache(maxsize=8)
def energy_grid(model: RateModel, zenith: float) -> Grid:
    """Return the CDF of the spectrum on a fine ln E grid; the integral is that of the shape dE (MeV)."""
    log_e = np.linspace(np.log(model.energy_min), np.log(model.energy_max), _GRID)
    energy = np.clip(np.exp(log_e), model.energy_min, model.energy_max)  # end nodes exactly on the support
    return _cdf(log_e, model.spectrum(energy, zenith) * energy, _MEV_PER_TEV)


@functools.lru_cache(maxsize=8)
def offset_grid(model: RateModel) -> Grid:
    """Return the CDF of the acceptance on a fine 1 - cos(offset) grid; the integral is in sr."""
    x = np.linspace(0.0, 1.0 - np.cos(np.radians(model.max_offset)), _GRID)
    return _cdf(x, model.acceptance(np.minimum(np.degrees(np.arccos(1.0 - x)), model.max_offset)), 2.0 * np.pi)
