"""FITS header cards formatted as astropy formats them, without astropy's per-card cost.

``astropy.io.fits.Card(keyword, value, comment).image`` reads several configuration
items per card (about 80 µs each); a file of one model per observation writes
thousands of cards. :func:`card_image` gives the same 80 characters for the values
bkgxr writes (strings, booleans, integers, finite floats) and refuses anything else.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: Length of a FITS header card.
CARD_LENGTH = 80
#: Keywords that take no value (astropy writes ``COMMENT text``, and refuses END).
VALUELESS = frozenset({"COMMENT", "HISTORY", "END"})
QUOTE = "'"


def _float_text(value: float | np.floating) -> str:
    """Return a float as FITS fixed format writes it: Python's shortest repr, upper-case E, at most 20 characters."""
    text = str(value).replace("e", "E")
    if len(text) > 20:
        exponent = text.find("E")
        text = text[:20] if exponent < 0 else text[: 20 - (len(text) - exponent)] + text[exponent:]
    return text


def value_text(value: object) -> str:
    """Return the value field of a card (FITS fixed format, as astropy writes it).

    Raises
    ------
    ValueError
        For a non-finite float, or a type bkgxr does not write (None, complex, ...).
    """
    if isinstance(value, str):
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"header string {value!r} is not printable ASCII")
        if value == "":
            return "''"
        quoted = "'" + f"{value.replace(QUOTE, 2 * QUOTE):8}" + "'"
        return f"{quoted:20}"
    if isinstance(value, (bool, np.bool_)):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (numbers.Integral, np.integer)):
        return f"{int(value):>20d}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"header value {value!r} is not finite")
        return f"{_float_text(value):>20}"
    raise ValueError(f"cannot write a header value of type {type(value).__name__}")


def card_image(keyword: str, value: object, comment: str = "") -> str:
    """Return the 80-character card ``KEYWORD = value / comment``.

    Equal to ``astropy.io.fits.Card(keyword, value, comment).image`` for the
    values :func:`value_text` takes (tests/test_io_cards.py compares them).

    Raises
    ------
    ValueError
        If the keyword is not a standard one (1-8 characters A-Z, 0-9, ``-``,
        ``_``) or takes no value (:data:`VALUELESS`), the value is refused by :func:`value_text`, or the card would
        not fit 80 characters (astropy would truncate the comment or continue
        the value on more cards).
    """
    key = keyword.upper()
    if not 0 < len(key) <= 8 or not all(c.isascii() and (c.isupper() or c.isdigit() or c in "-_") for c in key):
        raise ValueError(f"{keyword!r} is not a standard FITS keyword")
    if key in VALUELESS:
        raise ValueError(f"{key} takes no value: it is not a 'KEYWORD = value' card")
    if not comment.isascii() or not (comment.isprintable() or comment == ""):
        raise ValueError(f"comment of {keyword} is not printable ASCII")
    text = f"{key:8}= {value_text(value)}{' / ' + comment if comment else ''}"
    if len(text) > CARD_LENGTH:
        raise ValueError(f"header card {keyword}={value!r} / {comment!r} does not fit {CARD_LENGTH} characters")
    return f"{text:{CARD_LENGTH}}"
