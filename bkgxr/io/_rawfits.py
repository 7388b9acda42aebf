"""Read scalar columns of one FITS binary table with numpy, without astropy's HDU machinery.

DL3 run files put EVENTS first and large IRF tables after it; this reader
decompresses (ISA-L igzip when installed, else zlib) only up to the end of the
wanted table and views its rows as a big-endian structured array. Anything it
does not handle (scaled or non-scalar columns, unusual headers) raises
:class:`Unsupported`, and the caller falls back to :mod:`astropy.io.fits`.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np

_gzip: ModuleType  # either module; both have open(path, "rb")
try:  # ISA-L decodes gzip about twice as fast as zlib
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - isal is a declared dependency
    _gzip = gzip

if TYPE_CHECKING:
    import numpy.typing as npt

BLOCK = 2880
#: Bytes of table rows read at once: memory per read is about this, plus its float64 columns.
BLOCK_BYTES = 8 * 2**20
#: Deflate's largest compression ratio: a gzip file never holds more than this times its size.
MAX_GZIP_RATIO = 1032
_CARD = 80
#: FITS binary-table type codes of scalar numeric columns and their numpy types.
_TYPES = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
#: Byte width of every TFORM code, to lay out the row (P/Q are descriptors; X is
#: in bits, and a column of ``rX`` takes whole bytes: ceil(r / 8)).
_WIDTHS = {"L": 1, "X": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")


class Unsupported(Exception):
    """The table uses a feature this reader leaves to astropy."""


def _open(path: Path) -> tuple[IO[bytes], int]:
    """Open a FITS file, gzipped or not; return the stream and the most bytes it can hold."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
        size = os.fstat(probe.fileno()).st_size
    if magic != b"\x1f\x8b":
        return open(path, "rb"), size
    # isal's igzip.open is unannotated, and typeshed's GzipFile is not an IO[bytes]; both read bytes.
    return cast("IO[bytes]", _gzip.open(path, "rb")), size * MAX_GZIP_RATIO


def _card_value(text: str) -> str | int | float | bool:
    """Parse the value field of a FITS card: quoted string, logical, integer or float."""
    text = text.strip()
    if text.startswith("'"):
        end = 1
        while True:
            end = text.find("'", end)
            if end < 0:
                raise Unsupported(f"unterminated string {text!r}")
            if text[end + 1 : end + 2] != "'":
                return text[1:end].replace("''", "'").rstrip()
            end += 2
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text.replace("D", "E"))
        except ValueError as err:
            raise Unsupported(f"card value {text!r}") from err


class Header(Mapping[str, "str | int | float | bool"]):
    """Valued keywords of one FITS header; a value is parsed when first read.

    DL3 headers carry ~100 cards of which a reader needs a dozen: parsing
    only those keeps the header cheap. A value this reader cannot parse is
    returned as its text (as a string), for the caller's own checks.
    """

    def __init__(self, raw: dict[str, str]) -> None:
        self._raw = raw
        self._parsed: dict[str, str | int | float | bool] = {}

    def __getitem__(self, key: str) -> str | int | float | bool:
        try:
            return self._parsed[key]
        except KeyError:
            text = self._raw[key]
        try:
            value = _card_value(text)
        except Unsupported:
            value = text.strip()
        self._parsed[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._raw  # Mapping's default reads the value and catches KeyError: slow

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._raw else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _read_header(stream: IO[bytes]) -> Header | None:
    """Read one header; return its valued keywords (structure only, no CONTINUE/HIERARCH)."""
    cards: dict[str, str] = {}
    while True:
        block = stream.read(BLOCK)
        if not block:
            if cards:
                raise EOFError("file ends inside a FITS header")
            return None
        if len(block) < BLOCK:
            raise EOFError("file ends inside a FITS header")
        text = block.decode("ascii", errors="replace")
        for i in range(0, BLOCK, _CARD):
            if text[i + 8 : i + 10] == "= ":
                cards[text[i : i + 8].rstrip()] = text[i + 10 : i + _CARD]
            elif text[i : i + 8] == "END     ":
                return Header(cards)
        if not cards:
            raise OSError("not a FITS file")


def _data_size(header: Mapping[str, str | int | float | bool]) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    size = abs(int(header["BITPIX"])) // 8
    # Python integers: a hostile header's product cannot wrap around as numpy's int64 would
    count = math.prod(int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1))
    size *= int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    return -(-size // BLOCK) * BLOCK


def _row_dtype(header: Header, extname: str, names: list[str]) -> tuple[np.dtype, dict[str, str]]:
    """Return a dtype viewing ``names`` in a row, and the TUNIT of each."""
    offset, fields, units = 0, {}, {}
    n_fields = int(header["TFIELDS"])
    index = {str(header.get(f"TTYPE{i}", "")).strip().upper(): i for i in range(1, n_fields + 1)}
    wanted = {index[n]: n for n in names if n in index}
    for i in range(1, n_fields + 1):
        if f"TFORM{i}" not in header:
            raise ValueError(f"{extname} header declares TFIELDS = {n_fields} but has no TFORM{i}")
        match = _TFORM.match(str(header[f"TFORM{i}"]))
        if match is None:
            raise Unsupported(f"TFORM{i}={header[f'TFORM{i}']!r}")
        repeat, code = int(match.group(1) or 1), match.group(2)
        if i in wanted:
            if repeat != 1 or code not in _TYPES or f"TSCAL{i}" in header or f"TZERO{i}" in header:
                raise Unsupported(f"column {wanted[i]} is not a plain scalar")
            fields[wanted[i]] = (np.dtype(_TYPES[code]), offset)
            units[wanted[i]] = str(header.get(f"TUNIT{i}", "")).strip()
        offset += -(-repeat // 8) if code == "X" else repeat * _WIDTHS[code]
    if offset != int(header["NAXIS1"]):
        raise Unsupported("row layout does not match NAXIS1")
    dtype = np.dtype(
        {"names": list(fields), "formats": [f[0] for f in fields.values()],
         "offsets": [f[1] for f in fields.values()], "itemsize": int(header["NAXIS1"])}
    )
    return dtype, units


def read_table_columns(
    path: str | Path, extname: str, names: list[str], *, also: tuple[str, ...] = ()
) -> tuple[Header, dict[str, npt.NDArray[np.float64]], dict[str, str]]:
    """Read scalar columns of the binary table ``extname`` as float64, whole.

    The blocks of :func:`iter_table_blocks`, joined; see there.

    Returns
    -------
    header : Header
        Valued keywords of the table's header (structure keywords, TUNITs, ...).
    columns : dict of str to numpy.ndarray
        Float64 columns, shape (n_rows,).
    units : dict of str to str
        TUNIT of each column read ('' when none).
    """
    blocks = list(iter_table_blocks(path, extname, names, also=also))
    header, _, units = blocks[0]
    columns = {name: np.concatenate([block[1][name] for block in blocks]) for name in blocks[0][1]}
    return header, columns, units


def iter_table_blocks(
    path: str | Path, extname: str, names: list[str], *, also: tuple[str, ...] = (), block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[Header, dict[str, npt.NDArray[np.float64]], dict[str, str]]]:
    """Yield scalar columns of the binary table ``extname`` as float64, a block of rows at a time.

    Memory is one block of at most ``block_bytes`` of rows (and its float64
    columns) whatever the table's size; a table declaring more bytes than the
    file can hold (for gzip, 1032 times its compressed size: deflate's largest
    ratio) is refused before anything is allocated.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file, gzipped or not.
    extname : str
        EXTNAME of the table (case-insensitive).
    names : list of str
        Upper-case column names; those missing are absent from the result.
    also : tuple of str
        EXTNAMEs that must be present in the file too (e.g. ``("GTI",)``);
        headers after the table are scanned, once its last block is out, until all are seen.
    block_bytes : int
        Bytes of rows per block (at least one row).

    Yields
    ------
    header : Header
        Valued keywords of the table's header, the same object for every block.
    columns : dict of str to numpy.ndarray
        Float64 columns of the block, shape (n_block_rows,); one empty block for an empty table.
    units : dict of str to str
        TUNIT of each column read ('' when none).

    Raises
    ------
    KeyError
        If the file has no HDU ``extname`` or one of ``also``.
    EOFError, OSError
        If the file is truncated or not a FITS file.
    ValueError
        If the header is inconsistent (a missing TFORMn, a size beyond the file's).
    Unsupported
        If the table needs astropy's general reader.
    """
    path = Path(path)
    wanted = extname.upper()
    missing = {name.upper() for name in also}
    found = False
    stream, limit = _open(path)
    with stream:
        first = True
        while not found or missing:
            header = _read_header(stream)
            if header is None:
                raise KeyError(extname if not found else min(missing))
            if first and "SIMPLE" not in header:
                raise OSError("not a FITS file (no SIMPLE keyword)")
            first = False
            size = _data_size(header)
            if size > limit:
                raise ValueError(f"HDU {header.get('EXTNAME', '')!s} declares {size} bytes of data, more than the file can hold")
            name = str(header.get("EXTNAME", "")).strip().upper()
            missing.discard(name)
            if name != wanted or found:
                stream.seek(size, 1)
                continue
            found = True
            yield from _iter_rows(stream, header, extname, names, block_bytes)
            stream.seek(size - int(header["NAXIS1"]) * int(header["NAXIS2"]), 1)


def _iter_rows(
    stream: IO[bytes], header: Header, extname: str, names: list[str], block_bytes: int
) -> Iterator[tuple[Header, dict[str, npt.NDArray[np.float64]], dict[str, str]]]:
    if str(header.get("XTENSION", "")).strip() != "BINTABLE" or int(header.get("NAXIS", 0)) != 2:
        raise Unsupported(f"{extname} is not a binary table")
    dtype, units = _row_dtype(header, extname, names)
    n_rows, row_bytes = int(header["NAXIS2"]), int(header["NAXIS1"])
    if n_rows < 0:
        raise ValueError(f"{extname} declares NAXIS2 = {n_rows} rows")
    step = max(1, block_bytes // max(row_bytes, 1))
    for start in range(0, max(n_rows, 1), step):
        count = min(step, n_rows - start)
        buffer = stream.read(count * row_bytes)
        if len(buffer) < count * row_bytes:
            raise EOFError(f"file ends inside the {extname} data")
        rows = np.frombuffer(buffer, dtype=dtype, count=count)
        yield header, {name: rows[name].astype(np.float64) for name in dtype.names or ()}, units
