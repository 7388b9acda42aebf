"""GADF background HDUs: ``BKG_2D`` tables built with astropy, and many of them as raw bytes.

:func:`create_bkg_2d_hdu` builds one HDU; :func:`bkg_hdus_bytes` lays out
thousands of per-observation models of one binning from a single template.
:mod:`bkgxr.io.write` assembles them into a file.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/irfs/full_enclosure/bkg/
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from ..units import ANGLE_UNIT, ENERGY_UNIT, RATE_UNIT
from ._checksum import add_checksum_cards
from .cards import card_image

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy.typing as npt


#: Keywords every GADF HDU written here carries (copied per HDU, never shared).
DEFAULT_HEADER = {"HDUCLASS": "GADF", "HDUDOC": "https://github.com/open-gamma-ray-astro/gamma-astro-data-formats", "HDUVERS": "0.2"}

#: Largest relative difference of models written as one HDU: every value ``a`` of a model shares
#: the HDU of a model with value ``b`` when ``|a - b| <= SHARE_RTOL x max(|a|, |b|)`` (zeros match only zeros).
SHARE_RTOL = 1e-6


def bkg_hdu_name(lo: float, hi: float) -> str:
    """Return the EXTNAME of the model of zenith band ``[lo, hi)``, e.g. ``BKG_ZEN_0_20``."""
    return f"BKG_ZEN_{lo:g}_{hi:g}".replace(".", "p")


def create_bkg_2d_hdu(
    rate: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    offset_edges: npt.ArrayLike,
    *,
    extname: str,
    meta: Mapping[str, object] | None = None,
    error: npt.ArrayLike | None = None,
    counts: npt.ArrayLike | None = None,
) -> fits.BinTableHDU:
    """Create a GADF ``BKG_2D`` HDU.

    Parameters
    ----------
    rate : array-like
        Background rate in MeV-1 s-1 sr-1. Shape: (n_energy, n_offset).
    energy_edges : array-like
        Energy edges in TeV. Shape: (n_energy + 1,).
    offset_edges : array-like
        Offset edges in deg. Shape: (n_offset + 1,).
    extname : str
        Name of the HDU.
    meta : dict, optional
        Extra header keywords.
    error : array-like, optional
        Statistical error of the rate, written as the extra column ``BKG_ERR``
        (gammapy reads ``BKG`` only). Shape: (n_energy, n_offset).
    counts : array-like, optional
        Events behind the rate, written as the extra integer column ``COUNTS``.

    Raises
    ------
    ValueError
        If the rate (or error) is not finite and non-negative, or its shape does not match.
    """
    return _bkg_hdu(rate, {"ENERG": energy_edges, "THETA": offset_edges}, extname=extname, meta=meta, error=error, counts=counts)


def create_bkg_3d_hdu(
    rate: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    lon_edges: npt.ArrayLike,
    lat_edges: npt.ArrayLike,
    *,
    extname: str,
    meta: Mapping[str, object] | None = None,
    error: npt.ArrayLike | None = None,
    counts: npt.ArrayLike | None = None,
) -> fits.BinTableHDU:
    """Create a GADF ``BKG_3D`` HDU in FoV coordinates aligned with Alt/Az (``FOVALIGN = 'ALTAZ'``).

    ``DETX`` is the FoV longitude and ``DETY`` the FoV latitude of
    :func:`bkgxr.fov.fov_lon_lat_deg` (gammapy's ``fov_lon``, ``fov_lat``).

    Parameters
    ----------
    rate : array-like
        Background rate in MeV-1 s-1 sr-1. Shape: (n_energy, n_lon, n_lat).
    energy_edges : array-like
        Energy edges in TeV. Shape: (n_energy + 1,).
    lon_edges, lat_edges : array-like
        FoV longitude and latitude edges in deg. Shapes: (n_lon + 1,), (n_lat + 1,).
    extname : str
        Name of the HDU.
    meta : dict, optional
        Extra header keywords.
    error : array-like, optional
        Statistical error of the rate, written as the extra column ``BKG_ERR``
        (gammapy reads ``BKG`` only). Shape: (n_energy, n_lon, n_lat).
    counts : array-like, optional
        Events behind the rate, written as the extra integer column ``COUNTS``.

    Raises
    ------
    ValueError
        If the rate (or error) is not finite and non-negative, or its shape does not match.

    See Also
    --------
    create_bkg_2d_hdu : the radial model.
    """
    edges = {"ENERG": energy_edges, "DETX": lon_edges, "DETY": lat_edges}
    return _bkg_hdu(rate, edges, extname=extname, meta={"FOVALIGN": "ALTAZ", **(meta or {})}, error=error, counts=counts)


def _bkg_hdu(
    rate: npt.ArrayLike,
    edges: Mapping[str, npt.ArrayLike],
    *,
    extname: str,
    meta: Mapping[str, object] | None,
    error: npt.ArrayLike | None,
    counts: npt.ArrayLike | None = None,
) -> fits.BinTableHDU:
    """Build a BKG_2D (edges ENERG, THETA) or BKG_3D (ENERG, DETX, DETY) HDU, checking the rate and error."""
    rate = np.asarray(rate, dtype=np.float64)
    grid = {name: np.asarray(e, dtype=np.float64) for name, e in edges.items()}
    if rate.shape != tuple(e.size - 1 for e in grid.values()):
        raise ValueError(f"{extname}: rate shape {rate.shape} does not match the edges")
    columns = [
        fits.Column(f"{name}_{side}", f"{e.size - 1}D", unit=str(ENERGY_UNIT if name == "ENERG" else ANGLE_UNIT),
                    array=(e[:-1] if side == "LO" else e[1:])[None])
        for name, e in grid.items() for side in ("LO", "HI")
    ]
    # FITS stores the last numpy axis fastest: the (energy, *fov) array is written with its
    # axes reversed, TDIM = (n_energy, *fov), as gammapy's IRF.to_table does.
    dim = "(" + ",".join(str(n) for n in rate.shape) + ")"
    for name, values in (("BKG", rate), ("BKG_ERR", error)):
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.shape != rate.shape or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{extname}: refusing to write a non-finite or negative {name}, or one of another shape")
        columns.append(fits.Column(name, f"{rate.size}D", unit=RATE_UNIT.to_string("fits"), dim=dim, array=values.T[None]))
    if counts is not None:
        events = np.asarray(counts, dtype=np.int64)
        if events.shape != rate.shape or np.any(events < 0):
            raise ValueError(f"{extname}: refusing to write negative COUNTS, or of another shape than BKG")
        columns.append(fits.Column("COUNTS", f"{rate.size}K", dim=dim, array=events.T[None]))
    hduclas4 = "BKG_3D" if "DETX" in grid else "BKG_2D"
    header = fits.Header(
        {**DEFAULT_HEADER, "HDUCLAS1": "RESPONSE", "HDUCLAS2": "BKG", "HDUCLAS3": "FULL-ENCLOSURE", "HDUCLAS4": hduclas4}
    )
    for key, value in (meta or {}).items():
        header[key] = value
    return fits.BinTableHDU.from_columns(columns, header=header, name=extname)

def bkg_hdus_bytes(
    rates: npt.NDArray[np.float64],
    create: Callable[..., fits.BinTableHDU],
    metas: list[dict[str, tuple[object, str]]],
) -> bytes:
    """Serialise many background HDUs of one binning as FITS bytes, to append to a file.

    astropy builds the first, ``create(rates[0], extname=..., meta=...)``
    (:func:`create_bkg_2d_hdu` or :func:`create_bkg_3d_hdu` with the edges
    bound); the others reuse its header, with the cards of ``metas`` (the same
    keys in every entry, ``EXTNAME`` among them) replaced, and its row layout
    with their rate. That costs microseconds per model instead of astropy's
    milliseconds, which matters for one model per observation of a large
    production. CHECKSUM/DATASUM placeholders are filled by
    :func:`bkgxr.io._checksum.fill_checksums`.

    Parameters
    ----------
    rates : numpy.ndarray
        MeV-1 s-1 sr-1. Shape: (n_models, n_energy, *fov shape).
    create : callable
        Builds one HDU from a rate, with keyword arguments ``extname`` and ``meta``.
    metas : list of dict
        Header cards (value, comment) of each model.
    """
    if not metas:
        return b""
    first = dict(metas[0])
    extname = str(first.pop("EXTNAME")[0])
    template = create(rates[0], extname=extname, meta=first)
    add_checksum_cards(template.header)  # filled per HDU by the writer (fill_checksums)
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError("refusing to write a non-finite or negative rate")
    if any(len(card.image) != 80 for card in template.header.cards):  # a long value spans cards
        raise ValueError("the background HDU's header has a multi-card value; cannot reuse its layout")
    text = template.header.tostring()
    position = {card.keyword: i for i, card in enumerate(template.header.cards)}
    native = np.array(template.data).view(np.ndarray)  # one row; astropy hands it out native-endian
    row = native.astype(native.dtype.newbyteorder(">"))  # FITS is big-endian
    data_pad = b"\0" * (-row.nbytes % 2880)
    out = []
    for rate, meta in zip(rates, metas, strict=True):
        cards = [text[i : i + 80] for i in range(0, len(text), 80)]
        for key, (value, comment) in meta.items():
            cards[position[key]] = card_image(key, value, comment)
        row["BKG"][0] = np.asarray(rate, dtype=np.float64).T  # the numpy -> FITS axis flip of create
        out += ["".join(cards).encode("ascii"), row.tobytes(), data_pad]
    return b"".join(out)


def shared_models(values: npt.ArrayLike, *, rtol: float = SHARE_RTOL) -> npt.NDArray[np.intp]:
    """Return, for each model, the index of the model whose HDU it shares (its own index if none).

    Models are equal when every value agrees within ``rtol`` (see :data:`SHARE_RTOL`); each
    model is compared with the models already chosen to be written, in increasing order of
    their sums, and shares the first that equals it. A written model thus differs from each
    model that shares it by at most ``rtol`` relative, in every value.

    Parameters
    ----------
    values : array-like
        The values that must agree (rates, and the header values written with them), finite.
        Shape: (n_models, n_values).
    rtol : float
        Relative tolerance, >= 0.

    Returns
    -------
    numpy.ndarray
        Index of the written model of each model. Shape: (n_models,).

    Examples
    --------
    >>> shared_models([[1.0, 2.0], [1.0, 2.0000001], [1.0, 2.1], [0.0, 2.0]]).tolist()
    [0, 0, 2, 3]
    """
    flat = np.asarray(values, dtype=np.float64)
    if flat.ndim != 2 or not rtol >= 0 or not np.all(np.isfinite(flat)):
        raise ValueError("shared_models needs finite values of shape (n_models, n_values) and a tolerance rtol >= 0")
    if len(flat) == 0:
        return np.zeros(0, dtype=np.intp)
    unique, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)  # exact copies at once
    magnitude = np.abs(unique).sum(axis=1)
    order = np.argsort(magnitude, kind="stable")
    written: list[int] = []  # rows of ``unique`` that are written, by increasing magnitude
    target = np.empty(len(unique), dtype=np.intp)
    for row in order:
        target[row] = row
        lowest = magnitude[row] * (1.0 - 2.0 * rtol)  # an equal model's magnitude is at least this
        for other in reversed(written):
            if magnitude[other] < lowest:
                break
            if np.all(np.abs(unique[row] - unique[other]) <= rtol * np.maximum(np.abs(unique[row]), np.abs(unique[other]))):
                target[row] = other
                break
        if target[row] == row:
            written.append(row)
    return np.asarray(first[target[inverse.ravel()]], dtype=np.intp)
