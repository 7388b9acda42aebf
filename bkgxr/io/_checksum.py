"""FITS CHECKSUM/DATASUM keywords (the FITS standard's ones' complement sums), reproducibly.

astropy writes the same sums but stamps the write time into their comments, so
that two builds of the same models differ; here every HDU of a serialised file
gets its ``DATASUM`` and ``CHECKSUM`` with fixed comments, and readers verify
them with ``astropy.io.fits.open(..., checksum=True)``.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits

from ._rawfits import _data_size, _read_header
from .cards import card_image

#: Comments of the two cards, fixed so that output is byte-reproducible.
CHECKSUM_CARDS = {"CHECKSUM": ("0" * 16, "HDU checksum"), "DATASUM": ("0", "data unit checksum")}
_EXCLUDE = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))


def ones_complement_sum(data: bytes, start: int = 0) -> int:
    """Return the 32-bit ones' complement sum of ``data`` (a whole number of 4-byte words) added to ``start``."""
    words = np.frombuffer(data, dtype=">u4")
    total = start + int(np.sum(words >> 16, dtype=np.uint64)) * 65536 + int(np.sum(words & 0xFFFF, dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def encode_checksum(value: int) -> str:
    """Return the 16-character ASCII encoding of a 32-bit checksum (FITS standard, appendix J)."""
    chars = [0] * 16
    for i in range(4):
        byte = (value >> ((3 - i) * 8)) & 0xFF
        quotient, remainder = byte // 4 + 0x30, byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                while ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            chars[4 * j + i] = ch[j]
    return bytes(chars[15:] + chars[:15]).decode("ascii")


def add_checksum_cards(header: fits.Header) -> None:
    """Append placeholder CHECKSUM/DATASUM cards, filled by :func:`fill_checksums` once serialised."""
    for key, value in CHECKSUM_CARDS.items():
        header[key] = value


def _card(key: str, value: str) -> bytes:
    return card_image(key, value, CHECKSUM_CARDS[key][1]).encode("ascii")


def _card_offset(data: bytearray, keyword: bytes, begin: int, end: int) -> int:
    """Return the offset of the card ``keyword`` in the header ``data[begin:end]`` (-1 if absent)."""
    field = keyword.ljust(8) + b"="
    at = data.find(field, begin, end)
    while at >= 0 and (at - begin) % 80:  # the text inside another card: look on
        at = data.find(field, at + 1, end)
    return at


_ZERO_CHECKSUM = _card("CHECKSUM", "0" * 16)


def fill_checksums(data: bytes) -> bytes:
    """Return serialised FITS ``data`` with the CHECKSUM/DATASUM cards of every HDU filled.

    HDUs without both cards are left as they are.
    """
    out = bytearray(data)
    stream = io.BytesIO(data)
    while True:
        begin = stream.tell()
        header = _read_header(stream)
        if header is None:
            return bytes(out)
        header_end = stream.tell()
        data_end = header_end + _data_size(header)
        stream.seek(data_end)
        if "CHECKSUM" not in header or "DATASUM" not in header:
            continue
        datasum_at, checksum_at = (_card_offset(out, key, begin, header_end) for key in (b"DATASUM", b"CHECKSUM"))
        datasum = ones_complement_sum(bytes(out[header_end:data_end]))
        out[datasum_at : datasum_at + 80] = _card("DATASUM", str(datasum))
        out[checksum_at : checksum_at + 80] = _ZERO_CHECKSUM
        total = ones_complement_sum(bytes(out[begin:header_end]), datasum)
        out[checksum_at : checksum_at + 80] = _card("CHECKSUM", encode_checksum(~total & 0xFFFFFFFF))


