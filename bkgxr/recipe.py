"""The recipe: every choice that turns a cube into background models, in one object.

A :class:`Recipe` is used alike by the API (:func:`bkgxr.predict_models`,
:func:`bkgxr.validate`, :func:`bkgxr.write_models`), the command line and the
demo, and is written to and read back from a model file's primary header
(:meth:`Recipe.to_header`, :meth:`Recipe.from_header`). :data:`DEFAULT_RECIPE`
is the one default everywhere.

Time convention. A rate in a file is per observation time (ONTIME, the sum of
the GTIs), as the GADF spec says and gammapy uses: gammapy predicts an
observation's background as ``rate x ONTIME``. ``deadtime="ontime"`` averages
``counts / sum(ONTIME)`` over the runs behind a model; ``deadtime="livetime"``
averages ``counts / sum(LIVETIME)`` and folds each observation's own dead-time
fraction into its model, ``rate_live x DEADC``, so that gammapy predicts
``rate_live x LIVETIME``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

ZenithModel = Literal["bands", "interpolate", "kernel"]
DeadTime = Literal["ontime", "livetime"]
#: Rule for a zenith outside every band: the nearest band's model, or none.
Outside = Literal["nearest", "none"]

#: Zenith recipes, in the order the CLI lists them.
ZENITH_MODELS: tuple[str, ...] = ("bands", "interpolate", "kernel")
#: Time conventions of the models.
DEADTIMES: tuple[str, ...] = ("ontime", "livetime")


@dataclass(frozen=True)
class Smoothing:
    """Options of :func:`bkgxr.smooth.smooth_rate` (the rule is in :mod:`bkgxr.smooth`).

    Parameters
    ----------
    degree : int
        Highest degree of the log-polynomial radial shape, >= 1.
    min_counts : float
        Counts from which an energy bin keeps its own normalisation, >= 1.
    shape_counts : float
        Counts the energy window fitted for a bin's radial shape must hold, > 0.
    n_tail : int
        Populated bins that fix the power law of the sparse bins above them, >= 2.
    """

    degree: int = 3
    min_counts: float = 50.0
    shape_counts: float = 500.0
    n_tail: int = 4

    def __post_init__(self) -> None:
        for name, low, integer in (("degree", 1, True), ("min_counts", 1, False), ("shape_counts", 0, False), ("n_tail", 2, True)):
            value = getattr(self, name)
            number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not number or (integer and int(value) != value) or not (value >= low if name != "shape_counts" else value > low):
                kind = "an integer" if integer else "a finite number"
                raise ValueError(f"smoothing {name} must be {kind} {'>' if name == 'shape_counts' else '>='} {low}, got {value!r}")

    def options(self) -> dict[str, Any]:
        """Return the keyword options of :func:`bkgxr.smooth.smooth_rate`."""
        return dataclasses.asdict(self)


#: Primary-header keyword of each smoothing option, with its comment.
_SMOOTH_KEYWORDS = {
    "degree": ("SMDEGREE", "smoothing: max degree of the radial shape"),
    "min_counts": ("SMMINCNT", "smoothing: counts of a populated energy bin"),
    "shape_counts": ("SMSHPCNT", "smoothing: counts of a shape-fit window"),
    "n_tail": ("SMNTAIL", "smoothing: populated bins fixing the tail"),
}


@dataclass(frozen=True)
class Recipe:
    """How background models are made from a cube.

    Parameters
    ----------
    zenith : {"bands", "interpolate", "kernel"}
        ``bands``: the model of the zenith band holding the observation (the
        gammapy tutorial's); ``interpolate``: band models interpolated in
        cos(zenith); ``kernel``: every run weighted by a Gaussian in
        cos(zenith) and time (see :mod:`bkgxr.zenith`).
    kernel_sigma : float
        Kernel width in cos(zenith).
    time_sigma : float or None
        Kernel width in time, years; None for no time term.
    efficiency_sigma : float or None
        Kernel width in ln(optical efficiency) (MUONEFF of the obs-index);
        None for no such term.
    efficiency_scaling : bool
        Bring each run's counts to the observation's optical efficiency, as
        ``MUONEFF ** index`` with the index per energy bin fitted on the runs
        (:mod:`bkgxr.efficiency`).
    track : bool
        Follow the pointing's zenith over each run (:mod:`bkgxr.track`): a
        run's kernel weight is its Gaussian averaged over its track, and an
        observation's model the average of the models at its track's zeniths
        (``kernel`` and ``interpolate``); otherwise each run stands at its ZEN_PNT.
    smoothing : Smoothing or None
        Smooth every model (:mod:`bkgxr.smooth`); None for the raw
        counts / exposure.
    outside : {"nearest", "none"}
        An observation whose zenith lies outside every band gets the nearest
        band's model, or none (``bands`` only).
    deadtime : {"ontime", "livetime"}
        Rates per observation time averaged over the runs (``ontime``), or per
        live time with each observation's DEADC folded into its own model
        (``livetime``); see the module docstring.
    nodes : bool
        Write node values at the bin centres that gammapy's interpolation
        averages back to each bin's measured rate (:mod:`bkgxr.nodes`), rather
        than the bin averages themselves, which gammapy would read as values at
        the centres (~4.5 % too few counts with the default binning).

    Examples
    --------
    >>> Recipe(zenith="bands", smoothing=None, nodes=False).describe()
    'zenith model: bands, not smoothed, rate per ONTIME, bin averages'
    """

    zenith: ZenithModel = "kernel"
    kernel_sigma: float = 0.03
    time_sigma: float | None = 1.0
    efficiency_sigma: float | None = None
    efficiency_scaling: bool = False
    track: bool = False
    smoothing: Smoothing | None = field(default_factory=Smoothing)
    outside: Outside = "nearest"
    deadtime: DeadTime = "ontime"
    nodes: bool = True

    def __post_init__(self) -> None:
        if self.zenith not in ZENITH_MODELS:
            raise ValueError(f"unknown zenith model {self.zenith!r}; choose from {ZENITH_MODELS}")
        for name in ("kernel_sigma", "time_sigma", "efficiency_sigma"):
            width = getattr(self, name)
            if width is None and name != "kernel_sigma":
                continue
            if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < float(width) < math.inf:
                none = "" if name == "kernel_sigma" else " or None"
                raise ValueError(f"{name} must be a positive finite number{none}, got {width!r}")
        if self.outside not in ("nearest", "none"):
            raise ValueError(f"outside must be 'nearest' or 'none', not {self.outside!r}")
        if self.deadtime not in DEADTIMES:
            raise ValueError(f"deadtime must be one of {DEADTIMES}, not {self.deadtime!r}")
        if self.smoothing is not None and not isinstance(self.smoothing, Smoothing):
            raise TypeError(f"smoothing must be a Smoothing or None, not {type(self.smoothing).__name__}")

    @property
    def per_observation(self) -> bool:
        """Whether every observation gets a model of its own (``BKG_OBS_<id>``)."""
        return self.zenith != "bands" or self.deadtime == "livetime" or self.efficiency_scaling

    def replace(self, **changes: Any) -> Recipe:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Return a one-line description, as printed by the CLI."""
        text = f"zenith model: {self.zenith}"
        if self.zenith == "kernel":
            text += f" (kernel sigma {self.kernel_sigma:g} in cos z, time sigma {self.time_sigma or 'none'} yr"
            text += f", efficiency sigma {self.efficiency_sigma:g})" if self.efficiency_sigma else ")"
        text += ", zenith tracks" if self.track else ""
        text += ", counts scaled to each observation's MUONEFF" if self.efficiency_scaling else ""
        text += ", smoothed" if self.smoothing is not None else ", not smoothed"
        text += ", rate per LIVETIME x each observation's DEADC" if self.deadtime == "livetime" else ", rate per ONTIME"
        return text + (", node values for gammapy" if self.nodes else ", bin averages")

    def to_header(self) -> dict[str, tuple[object, str]]:
        """Return the recipe as FITS keywords with comments, for a primary header."""
        cards: dict[str, tuple[object, str]] = {
            "ZENMODEL": (self.zenith, "zenith recipe: bands, interpolate or kernel"),
            "KSIGMA": (self.kernel_sigma, "kernel width in cos(zenith)"),
            "KTSIGMA": (self.time_sigma or 0.0, "[yr] kernel width in time (0: none)"),
            "KESIGMA": (self.efficiency_sigma or 0.0, "kernel width in ln MUONEFF (0: none)"),
            "KESCALE": (self.efficiency_scaling, "counts scaled to the obs MUONEFF ** index(E)"),
            "KTRACK": (self.track, "zenith followed over each run's track"),
            "ZENRULE": (self.outside, "obs outside all bands: nearest or none"),
            "DEADTIME": (self.deadtime, "ontime: per ONTIME; livetime: x obs DEADC"),
            "SMOOTH": (self.smoothing is not None, "models smoothed by bkgxr.smooth (SM*)"),
            "BKGNODES": (self.nodes, "node values (bkgxr.nodes), else bin averages"),
        }
        if self.smoothing is not None:
            for name, (key, comment) in _SMOOTH_KEYWORDS.items():
                cards[key] = (getattr(self.smoothing, name), comment)
        return cards

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> Recipe:
        """Return the recipe stated in a model file's primary header.

        Keywords a file lacks take the values bkgxr wrote before they existed:
        no kernel keywords with ``bands``, ``DEADTIME`` absent in files whose
        rates were per LIVETIME (see :func:`bkgxr.read_models`).

        Raises
        ------
        ValueError
            If ``ZENMODEL`` is missing or a value is out of range.
        """
        if "ZENMODEL" not in header:
            raise ValueError("no ZENMODEL keyword: not a model file written by bkgxr")
        smoothing = None
        if bool(header.get("SMOOTH", False)):
            smoothing = Smoothing(
                **{name: type(getattr(Smoothing(), name))(header[key]) for name, (key, _) in _SMOOTH_KEYWORDS.items()}
            )
        time_sigma = float(header.get("KTSIGMA", 0.0))
        efficiency_sigma = float(header.get("KESIGMA", 0.0))
        return cls(
            zenith=cast("ZenithModel", str(header["ZENMODEL"]).strip()),
            kernel_sigma=float(header.get("KSIGMA", cls.kernel_sigma)),
            time_sigma=time_sigma if time_sigma > 0 else None,
            efficiency_sigma=efficiency_sigma if efficiency_sigma > 0 else None,
            efficiency_scaling=bool(header.get("KESCALE", False)),
            track=bool(header.get("KTRACK", False)),
            smoothing=smoothing,
            outside=cast("Outside", str(header.get("ZENRULE", "nearest")).strip()),
            deadtime=cast("DeadTime", str(header.get("DEADTIME", "ontime")).strip()),
            nodes=bool(header.get("BKGNODES", False)),  # files before bkgxr.nodes hold bin averages
        )


#: The recipe used when none is given: API, CLI and demo alike.
DEFAULT_RECIPE = Recipe()
