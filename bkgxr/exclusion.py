"""Exclusion regions for runs with sources: their parsers, and which events they drop.

Regions are sky circles (ICRS centre and radius, deg) and/or gammapy exclusion masks
(boolean :class:`~gammapy.maps.WcsNDMap`, True = keep, as in gammapy). A run contributes
outside them: :func:`excluded` drops its events; :mod:`bkgxr.kept_fraction` gives the
fraction of each bin's solid angle that stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from .geometry import offset_deg

if TYPE_CHECKING:
    import numpy.typing as npt
    from gammapy.maps import WcsNDMap

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "DEFAULT_RADIUS_DEG",
    "Circle",
    "ExclusionRegions",
    "excluded",
]

#: Default exclusion radius (deg) around a non-off run's target (``RA_OBJ``/``DEC_OBJ``).
DEFAULT_RADIUS_DEG = 0.5

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Circle:
    """A sky circle: ICRS centre and radius, all in deg.

    Raises
    ------
    ValueError
        If a value is not finite, ``dec_deg`` is outside [-90, 90] or ``radius_deg`` is
        outside (0, 180).
    """

    ra_deg: float
    dec_deg: float
    radius_deg: float

    def __post_init__(self) -> None:
        values = (self.ra_deg, self.dec_deg, self.radius_deg)
        if not all(np.isfinite(values)):
            raise ValueError(f"exclusion circle {values}: values must be finite")
        if not -90.0 <= self.dec_deg <= 90.0:
            raise ValueError(f"exclusion circle {values}: Dec {self.dec_deg} deg is outside [-90, 90]")
        if not 0.0 < self.radius_deg < 180.0:
            raise ValueError(f"exclusion circle {values}: radius {self.radius_deg} deg is outside (0, 180)")


@dataclass(frozen=True, eq=False)
class ExclusionRegions:
    """Sky regions whose events and exposure a run does not contribute.

    Build with :meth:`from_file`, :meth:`from_text`, :meth:`from_mask` or
    :meth:`around_target`; combine with ``|``.

    Attributes
    ----------
    circles : tuple of Circle
        Excluded sky circles.
    masks : tuple of gammapy.maps.WcsNDMap
        Boolean sky images, True = keep (gammapy's convention); their False pixels are
        excluded, the sky outside them is kept. Read-only copies.
    """

    circles: tuple[Circle, ...] = ()
    masks: tuple[WcsNDMap, ...] = ()

    def __or__(self, other: ExclusionRegions) -> ExclusionRegions:
        """Return the union of two sets of regions."""
        return ExclusionRegions(self.circles + other.circles, self.masks + other.masks)

    @classmethod
    def from_file(cls, path: str | Path) -> ExclusionRegions:
        """Read sky circles from a DS9 or CRTF region file (format from the suffix).

        Raises
        ------
        ValueError
            If the file cannot be read, holds no region, or holds a region other than a
            sky circle (the message names the file and the shape).
        """
        from regions import CircleSkyRegion, Regions

        path = Path(path)
        try:
            regions = Regions.read(str(path))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable DS9/CRTF region file: {err}") from err
        if not regions:
            raise ValueError(f"{path}: no region found; expected sky circles in DS9 or CRTF format")
        circles = []
        for region in regions:
            if not isinstance(region, CircleSkyRegion):
                raise ValueError(  # noqa: TRY004 - a file's content, not an argument's type
                    f"{path}: {type(region).__name__} is not supported; exclusion regions are sky circles"
                )
            centre = region.center.icrs
            circles.append(Circle(float(centre.ra.deg), float(centre.dec.deg), float(region.radius.to_value("deg"))))
        return cls(circles=tuple(circles))

    @classmethod
    def from_text(cls, text: str) -> ExclusionRegions:
        """Parse circles written ``"ra,dec,radius"`` in ICRS deg, several separated by ``;``.

        The text is parsed as numbers, never evaluated.

        Examples
        --------
        >>> ExclusionRegions.from_text("83.63,22.01,0.3; 84.1,22.3,0.2").circles[1]
        Circle(ra_deg=84.1, dec_deg=22.3, radius_deg=0.2)

        Raises
        ------
        ValueError
            If an item is not three decimal numbers, or is not a valid :class:`Circle`;
            the message quotes the refused item.
        """
        items = [item.strip() for item in text.split(";") if item.strip()]
        if not items:
            raise ValueError(f"exclusion circles {text!r}: no circle given (expected 'ra,dec,radius' in deg)")
        circles = []
        for item in items:
            fields = [field.strip() for field in item.split(",")]
            if len(fields) != 3 or not all(_NUMBER.fullmatch(field) for field in fields):
                raise ValueError(f"exclusion circle {item!r}: expected three numbers 'ra,dec,radius' in deg")
            try:
                circles.append(Circle(*(float(field) for field in fields)))
            except ValueError as err:
                raise ValueError(f"exclusion circle {item!r}: {err}") from err
        return cls(circles=tuple(circles))

    @classmethod
    def from_mask(cls, mask: WcsNDMap) -> ExclusionRegions:
        """Use a gammapy exclusion mask (True = keep); a mask with non-spatial axes excludes
        a sky pixel if any of its planes does.

        Raises
        ------
        TypeError
            If ``mask`` is not a boolean :class:`~gammapy.maps.WcsNDMap`.
        """
        from gammapy.maps import WcsNDMap

        if not isinstance(mask, WcsNDMap) or mask.data.dtype != np.bool_:
            raise TypeError(f"exclusion mask must be a boolean gammapy WcsNDMap, got {type(mask).__name__}")
        image = mask.copy() if mask.geom.is_image else mask.reduce_over_axes(func=np.logical_and)
        image.data.flags.writeable = False
        return cls(masks=(image,))

    @classmethod
    def around_target(
        cls, ra_obj_deg: float, dec_obj_deg: float, *, radius_deg: float = DEFAULT_RADIUS_DEG
    ) -> ExclusionRegions:
        """Return the default for a non-off run: a circle around its target.

        Parameters
        ----------
        ra_obj_deg, dec_obj_deg : float
            Target position (``RA_OBJ``/``DEC_OBJ`` of the obs-index), ICRS deg.
        radius_deg : float
            Circle radius in deg.
        """
        return cls(circles=(Circle(float(ra_obj_deg), float(dec_obj_deg), float(radius_deg)),))


def excluded(ra_deg: npt.ArrayLike, dec_deg: npt.ArrayLike, regions: ExclusionRegions) -> BoolArray:
    """Return which positions lie inside any region.

    A position is inside a circle if its true angular distance from the centre
    (Vincenty formula, float64) is below the radius, like ``regions``'
    ``CircleSkyRegion.contains``; inside a mask if its pixel is False.

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS positions in deg, of one shape.
    regions : ExclusionRegions

    Returns
    -------
    numpy.ndarray of bool
        Same shape as ``ra_deg``.
    """
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(ra.shape, dec.shape), dtype=np.bool_)
    for circle in regions.circles:
        out |= offset_deg(ra, dec, circle.ra_deg, circle.dec_deg) < circle.radius_deg
    for mask in regions.masks:
        out |= ~_mask_keeps(mask, ra, dec)
    return out


def _unit(lon: FloatArray, lat: FloatArray) -> FloatArray:
    """Return unit vectors of spherical coordinates (rad). Shape: (*lon.shape, 3)."""
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def _lon_lat(vec: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return the spherical coordinates (rad) of vectors of shape (..., 3)."""
    return np.arctan2(vec[..., 1], vec[..., 0]), np.arctan2(vec[..., 2], np.hypot(vec[..., 0], vec[..., 1]))


def _mask_keeps(mask: WcsNDMap, ra: FloatArray, dec: FloatArray) -> BoolArray:
    """Return the mask's value (True = keep) at ICRS positions; True outside the mask."""
    from astropy.coordinates import SkyCoord

    # ICRS → the mask's frame is a fixed rotation: take it from three points, apply it with numpy.
    basis = SkyCoord([0.0, 90.0, 0.0], [0.0, 0.0, 90.0], unit="deg", frame="icrs").transform_to(mask.geom.frame)
    matrix = _unit(basis.spherical.lon.rad, basis.spherical.lat.rad).T
    lon, lat = (np.degrees(a) for a in _lon_lat(_unit(np.radians(ra), np.radians(dec)) @ matrix.T))
    return cast("BoolArray", mask.get_by_coord((lon, lat), fill_value=True).astype(np.bool_))
