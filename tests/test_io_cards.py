"""bkgxr.io.cards formats header cards exactly as astropy does (hypothesis draws the values)."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import example, given
from hypothesis import strategies as st

from bkgxr.io.cards import VALUELESS, card_image

KEYWORDS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=8)
COMMENTS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(np.float32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(np.int32),
    st.booleans(),
    st.booleans().map(np.bool_),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


@given(KEYWORDS, VALUES, COMMENTS)
@example("COMMENT", 0.0, "")  # astropy writes "COMMENT 0.0": a commentary card, not ours to write
@example("END", 1, "")  # astropy refuses it
def test_card_image_is_astropys(keyword, value, comment):
    if keyword in VALUELESS:  # astropy writes no "= value" for these, or refuses them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            try:
                assert fits.Card(keyword, value, comment).image[8:10] != "= "
            except ValueError:
                pass
        with pytest.raises(ValueError, match="takes no value"):
            card_image(keyword, value, comment)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy would truncate the comment: ours must refuse it
        try:
            expected = fits.Card(keyword, value, comment).image
        except fits.verify.VerifyWarning:
            with pytest.raises(ValueError, match="does not fit 80 characters"):
                card_image(keyword, value, comment)
            return
    assert card_image(keyword, value, comment) == expected


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("X", float("nan"), "not finite"),
        ("X", float("inf"), "not finite"),
        ("X", None, "cannot write a header value of type NoneType"),
        ("X", 1 + 2j, "cannot write a header value of type complex"),
        ("TOOLONGKEY", 1, "not a standard FITS keyword"),
        ("A B", 1, "not a standard FITS keyword"),
        ("X", "é", "not printable ASCII"),
        ("X", "x" * 70, "does not fit 80 characters"),
    ],
)
def test_card_image_refuses_what_one_card_cannot_hold(keyword, value, message):
    with pytest.raises(ValueError, match=message):
        card_image(keyword, value)
