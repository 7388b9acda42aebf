"""Canonical units of bkgxr, declared once.

Everything inside the engine (dask chunks, boost-histogram fills, cube
variables) is plain float64 in these units; astropy quantities appear only at
the edges: user-given edges, FITS ``TUNIT``/header values and written HDUs.
"""

from __future__ import annotations

import astropy.units as u

from .exceptions import UnitError

#: Unit of reconstructed energy inside the engine.
ENERGY_UNIT = u.TeV
#: Unit of angles (offset, zenith, coordinates) inside the engine.
ANGLE_UNIT = u.deg
#: Unit of times (livetime) inside the engine.
TIME_UNIT = u.s
#: Unit of the energy bin width in the rate, as GADF background models use.
RATE_ENERGY_UNIT = u.MeV
#: Unit of solid angle.
SOLID_ANGLE_UNIT = u.sr
#: Unit of the background rate dN/(dt dE dOmega).
RATE_UNIT = u.Unit("MeV-1 s-1 sr-1")


def parse_unit(text: str | None, *, default: u.UnitBase, what: str) -> u.UnitBase:
    """Parse a FITS unit string, falling back to ``default`` when it is empty.

    Parameters
    ----------
    text : str or None
        The unit as written in the file (``TUNITn`` or a keyword).
    default : astropy.units.UnitBase
        Unit assumed when the file gives none (GADF's documented default).
    what : str
        What the unit belongs to, for the error message.

    Returns
    -------
    astropy.units.UnitBase

    Raises
    ------
    UnitError
        If the text is not a unit astropy knows or is not convertible to
        ``default``.
    """
    if text is None or not str(text).strip():
        return default
    try:
        unit = u.Unit(str(text).strip(), format="fits", parse_strict="raise")
    except ValueError:
        try:
            unit = u.Unit(str(text).strip(), parse_strict="raise")
        except ValueError as err:
            raise UnitError(f"{what}: unknown unit {text!r}") from err
    if not unit.is_equivalent(default):
        raise UnitError(f"{what}: unit {text!r} is not convertible to {default}")
    return unit


def scale_to(unit: u.UnitBase, target: u.UnitBase) -> float:
    """Return the factor that converts values in ``unit`` to ``target``."""
    return float(unit.to(target))
