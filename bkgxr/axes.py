"""Bin edges, boost-histogram axes and xarray coordinates of the cube.

:data:`DIMS` (2D models, radial in the field of view) and :data:`DIMS_3D` (3D
models, FoV longitude and latitude in the frame aligned with the horizontal
system, ``FOVALIGN = 'ALTAZ'``) name the boost axes, the xarray dims and the
CLI flags. Edges are float64 in the canonical units of :mod:`bkgxr.units`.
Solid angles are exact: ``2 pi (cos r1 - cos r2)`` for an offset ring,
``(lon2 - lon1) (sin lat2 - sin lat1)`` (radians) for a FoV pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import astropy.units as u
import boost_histogram as bh
import numpy as np

from .geometry import ring_solid_angle_sr
from .units import ANGLE_UNIT, ENERGY_UNIT, RATE_ENERGY_UNIT, scale_to

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import xarray as xr

    from .recipe import Outside

#: Dimensions of the cube, in axis order: boost axes, xarray dims, CLI flags.
DIMS = ("zenith", "energy", "offset")
#: Dimensions of a 3D cube: FoV longitude and latitude (ALTAZ-aligned) instead of offset.
DIMS_3D = ("zenith", "energy", "fov_lon", "fov_lat")
_ALL_DIMS = ("zenith", "energy", "offset", "fov_lon", "fov_lat")

#: Canonical unit of each dimension.
DIM_UNITS: dict[str, u.UnitBase] = {
    "zenith": ANGLE_UNIT,
    "energy": ENERGY_UNIT,
    "offset": ANGLE_UNIT,
    "fov_lon": ANGLE_UNIT,
    "fov_lat": ANGLE_UNIT,
}

#: Allowed closed range of edges per dimension (canonical units).
_DIM_RANGE = {
    "zenith": (0.0, 180.0),
    "energy": (0.0, np.inf),
    "offset": (0.0, 180.0),
    "fov_lon": (-180.0, 180.0),
    "fov_lat": (-90.0, 90.0),
}


def default_edges(dim: str) -> npt.NDArray[np.float64]:
    """Return the default edges of the gammapy tutorial for one dimension.

    Energy: 19 log-spaced bins from 0.1 to 100 TeV. Offset: 9 bins from 0 to
    3 deg spaced evenly in offset squared. Zenith: bands 0-20-40-90 deg.
    FoV longitude and latitude (3D): 12 bins of 0.5 deg from -3 to 3 deg.
    """
    if dim == "energy":
        return np.geomspace(0.1, 100.0, 20)
    if dim == "offset":
        return np.sqrt(np.linspace(0.0, 9.0, 10))
    if dim == "zenith":
        return np.array([0.0, 20.0, 40.0, 90.0])
    if dim in ("fov_lon", "fov_lat"):
        return np.linspace(-3.0, 3.0, 13)
    raise ValueError(f"unknown dimension {dim!r}; expected one of {_ALL_DIMS}")


def to_edges(
    values: npt.ArrayLike | u.Quantity | None, dim: str
) -> npt.NDArray[np.float64]:
    """Validate bin edges of ``dim`` and return them in canonical units.

    Parameters
    ----------
    values : array-like, Quantity or None
        Edges; plain numbers are taken in the canonical unit of ``dim``
        (TeV or deg). ``None`` gives :func:`default_edges`.
    dim : str
        One of :data:`DIMS` or :data:`DIMS_3D`.

    Returns
    -------
    numpy.ndarray
        Float64 edges, strictly increasing, at least two.

    Raises
    ------
    ValueError
        If the edges are not finite, not strictly increasing, fewer than two,
        or outside the physical range of the dimension.
    """
    if dim not in _ALL_DIMS:
        raise ValueError(f"unknown dimension {dim!r}; expected one of {_ALL_DIMS}")
    if values is None:
        return default_edges(dim)
    if isinstance(values, u.Quantity):
        try:
            values = values.to_value(DIM_UNITS[dim])
        except u.UnitConversionError as err:
            raise ValueError(f"{dim} edges: {err}") from err
    edges = np.asarray(values, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"{dim} edges: need a 1-D sequence of at least two edges")
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"{dim} edges must be finite and strictly increasing: {edges}")
    lo, hi = _DIM_RANGE[dim]
    if edges[0] < lo or edges[-1] > hi or (dim == "energy" and edges[0] <= 0):
        raise ValueError(f"{dim} edges {edges} outside the allowed range [{lo}, {hi}]")
    return edges


@dataclass(frozen=True)
class Binning:
    """Edges of the cube's dimensions, in canonical units: 2D (offset) or 3D (FoV lon, lat).

    Parameters
    ----------
    zenith, energy, offset : array-like, Quantity or None
        Edges per dimension (deg, TeV, deg when plain numbers); ``None`` gives
        the tutorial's defaults (see :func:`default_edges`).
    fov : {"offset", "altaz"}
        ``offset``: 2D models, radial (:data:`DIMS`); ``altaz``: 3D models in
        FoV longitude and latitude aligned with the horizontal system
        (:data:`DIMS_3D`); ``offset`` is then unused.
    fov_lon, fov_lat : array-like, Quantity or None
        Edges of the 3D FoV axes (deg); ``None`` gives 12 bins of 0.5 deg.

    Examples
    --------
    >>> import astropy.units as u
    >>> b = Binning(zenith=[0, 30, 60] * u.deg)
    >>> b.shape
    (2, 19, 9)
    >>> Binning(fov="altaz").shape
    (3, 19, 12, 12)
    """

    # __post_init__ turns None (the defaults) or any array-like into edges: the
    # constructor takes more than the field type, which dataclasses cannot declare.
    zenith: npt.NDArray[np.float64] = field(default=None)  # type: ignore[arg-type]
    energy: npt.NDArray[np.float64] = field(default=None)  # type: ignore[arg-type]
    offset: npt.NDArray[np.float64] = field(default=None)  # type: ignore[arg-type]
    fov: str = "offset"
    fov_lon: npt.NDArray[np.float64] = field(default=None)  # type: ignore[arg-type]
    fov_lat: npt.NDArray[np.float64] = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.fov not in ("offset", "altaz"):
            raise ValueError(f"fov must be 'offset' (2D) or 'altaz' (3D), not {self.fov!r}")
        for dim in _ALL_DIMS:
            edges = to_edges(getattr(self, dim), dim)
            edges.setflags(write=False)
            object.__setattr__(self, dim, edges)

    @property
    def dims(self) -> tuple[str, ...]:
        """The cube's dims: :data:`DIMS` (2D) or :data:`DIMS_3D` (3D)."""
        return DIMS_3D if self.fov == "altaz" else DIMS

    @property
    def fov_dims(self) -> tuple[str, ...]:
        """The field-of-view dims: ``("offset",)`` or ``("fov_lon", "fov_lat")``."""
        return self.dims[2:]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binning):
            return NotImplemented
        return self.dims == other.dims and all(np.array_equal(self.edges(d), other.edges(d)) for d in self.dims)

    def __hash__(self) -> int:
        return hash((self.dims, *(self.edges(d).tobytes() for d in self.dims)))

    def edges(self, dim: str) -> npt.NDArray[np.float64]:
        """Return the edges of ``dim``."""
        if dim not in _ALL_DIMS:
            raise ValueError(f"unknown dimension {dim!r}; expected one of {_ALL_DIMS}")
        return cast("npt.NDArray[np.float64]", getattr(self, dim))

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of bins per dimension, in :attr:`dims` order."""
        return tuple(self.edges(d).size - 1 for d in self.dims)

    def solid_angle_sr(self) -> npt.NDArray[np.float64]:
        """Return the exact solid angle (sr) of each FoV bin. Shape: the FoV dims' (ring or pixel)."""
        if self.fov == "offset":
            return ring_solid_angle_sr(self.offset)
        d_lon = np.diff(np.radians(self.fov_lon))
        d_sin_lat = np.diff(np.sin(np.radians(self.fov_lat)))
        return np.asarray(d_lon[:, None] * d_sin_lat[None, :], dtype=np.float64)

    def boost_axes(self) -> list[bh.axis.Variable]:
        """Return boost-histogram axes in :data:`DIMS` order, named after the dims.

        Events outside the edges land in the under/overflow bins, which the
        cube reports but does not use.
        """
        return [
            bh.axis.Variable(self.edges(d), __dict__={"name": d, "units": str(DIM_UNITS[d])})
            for d in self.dims
        ]

    def coords(self) -> dict[str, tuple[str, npt.NDArray[np.float64], dict[str, str]]]:
        """Return xarray coordinates: bin centres and ``*_lo``/``*_hi`` edges.

        Energy centres are geometric means of the edges (log binning); zenith
        and offset centres are arithmetic means.
        """
        coords = {}
        for dim in self.dims:
            lo, hi = self.edges(dim)[:-1], self.edges(dim)[1:]
            center = np.sqrt(lo * hi) if dim == "energy" else 0.5 * (lo + hi)
            attrs = {"units": str(DIM_UNITS[dim])}
            coords[dim] = (dim, center, {**attrs, "long_name": f"{dim} bin centre"})
            coords[f"{dim}_lo"] = (dim, lo.copy(), {**attrs, "long_name": f"{dim} lower edge"})
            coords[f"{dim}_hi"] = (dim, hi.copy(), {**attrs, "long_name": f"{dim} upper edge"})
        return coords


def parse_edges(text: str) -> list[float]:
    """Parse comma-separated edges from the command line, e.g. ``"0,20,40,90"``.

    Raises
    ------
    ValueError
        If an item is not a number.
    """
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError as err:
        raise ValueError(f"edges must be comma-separated numbers, got {text!r}") from err


def band_labels(edges: Sequence[float] | npt.NDArray[np.float64]) -> list[str]:
    """Return labels like ``"0-20"`` for consecutive pairs of zenith edges."""
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def binning_of(cube: xr.Dataset) -> Binning:
    """Return the :class:`Binning` a cube was built with, from its edge coordinates."""
    dims = DIMS_3D if "fov_lon" in cube.dims else DIMS
    edges = {d: np.append(cube[f"{d}_lo"].values, cube[f"{d}_hi"].values[-1]) for d in dims}
    return Binning(fov="altaz" if dims == DIMS_3D else "offset", **edges)


def band_index(zenith: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Return the index of the band ``lo <= zenith < hi`` of each value, -1 if none.

    NaN and values outside ``[edges[0], edges[-1])`` give -1.
    """
    zenith = np.asarray(zenith, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(edges, zenith, side="right") - 1
    inside = (index >= 0) & (index < edges.size - 1) & np.isfinite(zenith)
    return np.where(inside, index, -1).astype(np.int64)


def assign_bands(
    zenith: npt.ArrayLike, edges: npt.ArrayLike, *, outside: Outside = "nearest"
) -> npt.NDArray[np.int64]:
    """Assign each observation the zenith band of its model.

    The band containing the zenith (``lo <= zenith < hi``) is chosen; a zenith
    outside every band gets the nearest band (``outside="nearest"``) or none,
    -1 (``outside="none"``). A NaN zenith always gets -1.

    Returns
    -------
    numpy.ndarray
        Band index per observation. Shape: (n_obs,).
    """
    if outside not in ("nearest", "none"):
        raise ValueError(f"outside must be 'nearest' or 'none', not {outside!r}")
    zenith = np.asarray(zenith, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    index = band_index(zenith, edges)
    if outside == "nearest":
        finite = np.isfinite(zenith)
        nearest = np.where(zenith < edges[0], 0, edges.size - 2)
        index = np.where((index < 0) & finite, nearest, index)
    return index


def exposure_s_mev_sr(time_s: npt.ArrayLike, binning: Binning) -> npt.NDArray[np.float64]:
    """Return time x dE[MeV] x dOmega[sr] per bin.

    Parameters
    ----------
    time_s : array-like
        Time per zenith band (or per run) in s. Shape: (n,).
    binning : Binning

    Returns
    -------
    numpy.ndarray
        Shape: (n, n_energy, *fov shape): (n, n_energy, n_offset) in 2D,
        (n, n_energy, n_lon, n_lat) in 3D.
    """
    d_energy = np.diff(binning.energy) * scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT)
    d_omega = binning.solid_angle_sr()
    time = np.asarray(time_s, dtype=np.float64)
    volume = d_energy.reshape(-1, *([1] * d_omega.ndim)) * d_omega[None]
    return np.asarray(time.reshape(-1, *([1] * volume.ndim)) * volume[None], dtype=np.float64)


def rate_from_counts(counts: xr.DataArray, exposure: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Return rate and Poisson error, 0 where the exposure is 0 (never NaN/inf)."""
    has = exposure > 0
    safe = exposure.where(has, 1.0)
    rate = (counts / safe).where(has, 0.0)
    err = (cast("xr.DataArray", np.sqrt(counts)) / safe).where(has, 0.0)  # numpy's stubs ignore __array_ufunc__
    return rate, err
