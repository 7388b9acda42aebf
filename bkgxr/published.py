"""The store's own background models: predicted counts per run, and their validation.

Every run of a GADF store may carry a background model (its ``bkg`` HDU; the
H.E.S.S. DR1 store has the ``BKG_3D`` models of Mohrmann et al. 2019,
A&A 632, A72). :func:`predicted_counts` turns each run's model into the
counts it predicts in the cube's energy x offset bins,

    N = T * sum over model bins of rate * |overlap in energy| [MeV] * |overlap in solid angle| [sr],

taking the model as constant inside each of its bins (which is how such a
model is made: counts over exposure per bin), and ``T`` the run's observation
time, ONTIME (:data:`TIME_COLUMN`): GADF background rates are per observation
time, and gammapy predicts ``rate x ONTIME`` (``MapDatasetMaker`` passes
``observation_time_duration``), so these are the counts gammapy predicts.
The H.E.S.S. DR1 models seem normalised per livetime instead: over the 45 off
runs obs/pred has mean 0.90 and follows DEADC (r = +0.25), while
``rate x LIVETIME`` would give mean 0.97, uncorrelated with DEADC (r = -0.03);
gammapy thus over-predicts them by about 1/DEADC (mean DEADC 0.93).
:func:`validate_published` compares those predictions with the observed
counts exactly as :func:`bkgxr.validation.validate` does, with model name
``"published"`` and no run left out: the models are fixed.

Geometry: ``DETX``/``DETY`` are the longitude and latitude of a spherical
frame centred on the pointing (gammapy's ``fov_lon``/``fov_lat``), so the
offset of (x, y) is ``arccos(cos x cos y)``. Each offset ring is cut into
thin sub-rings whose exact solid angles add up to the ring's
``2 pi (cos r1 - cos r2)``; each sub-ring's is shared among the model pixels
by the arcs of its centre circle inside them (exact in azimuth), nothing
outside the model's field of view. A flat model thus gives exactly
rate x dE x dOmega x T. The ``BKG`` array is read in gammapy's
axis order, (ENERGY, DETX, DETY); over a full ring, swapping DETX and DETY
(a reflection) changes nothing.
Spec: https://gamma-astro-data-formats.readthedocs.io/en/latest/irfs/full_enclosure/bkg/
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from astropy.io import fits

from .axes import binning_of
from .exceptions import InvalidRunError
from .io.store import hdu_locations
from .units import (
    ANGLE_UNIT,
    ENERGY_UNIT,
    RATE_ENERGY_UNIT,
    RATE_UNIT,
    parse_unit,
    scale_to,
)
from .validation import DEFAULT_RADIUS, DEFAULT_THRESHOLD, Validation, compare_runs

if TYPE_CHECKING:
    import astropy.units as u
    import numpy.typing as npt
    import xarray as xr

    from .io.store import Store

#: Sub-rings per model pixel width: the radial step is pixel / DEFAULT_OVERSAMPLE.
DEFAULT_OVERSAMPLE = 8
#: Per-run time the model rate is multiplied by, as gammapy does (the cube's ``run_ontime``, s).
TIME_COLUMN = "run_ontime"
#: Name of the model in :class:`~bkgxr.validation.Validation` summaries.
MODEL_NAME = "published"


@dataclass(frozen=True)
class Background3D:
    """One run's ``BKG_3D`` model in canonical units.

    Attributes
    ----------
    energy : numpy.ndarray
        Energy edges, TeV. Shape: (n_energy + 1,).
    detx, dety : numpy.ndarray
        Field-of-view edges, deg. Shapes: (n_x + 1,), (n_y + 1,).
    rate : numpy.ndarray
        MeV-1 s-1 sr-1, constant in each bin. Shape: (n_energy, n_x, n_y).
    """

    energy: npt.NDArray[np.float64]
    detx: npt.NDArray[np.float64]
    dety: npt.NDArray[np.float64]
    rate: npt.NDArray[np.float64]


def _column(hdu: fits.BinTableHDU, name: str, unit: u.UnitBase, obs_id: int, path: Path) -> npt.NDArray[np.float64]:
    """Return the first-row array of column ``name`` converted to ``unit``."""
    if name not in hdu.columns.names:
        raise InvalidRunError(obs_id, path, f"{hdu.name} lacks column {name}")
    given = parse_unit(hdu.columns[name].unit, default=unit, what=f"run {obs_id} ({path.name}) {hdu.name} {name}")
    return np.asarray(hdu.data[name][0], dtype=np.float64) * scale_to(given, unit)


def _edges(hdu: fits.BinTableHDU, name: str, unit: u.UnitBase, obs_id: int, path: Path) -> npt.NDArray[np.float64]:
    """Return the edges of the contiguous, increasing bins ``name_LO``/``name_HI``."""
    lo = _column(hdu, f"{name}_LO", unit, obs_id, path)
    hi = _column(hdu, f"{name}_HI", unit, obs_id, path)
    if lo.ndim != 1 or lo.shape != hi.shape or not np.allclose(lo[1:], hi[:-1], rtol=1e-6, atol=1e-9) or not np.all(hi > lo):
        raise InvalidRunError(obs_id, path, f"{hdu.name} {name} bins are not contiguous and increasing")
    return np.append(lo, hi[-1])


def read_bkg_3d(path: str | Path, hdu: str, *, obs_id: int) -> Background3D:
    """Read a GADF ``BKG_3D`` HDU.

    Parameters
    ----------
    path : str or pathlib.Path
        FITS file, gzipped or not.
    hdu : str
        Name of the HDU (``HDU_NAME`` of the store's hdu-index).
    obs_id : int
        The run, for error messages.

    Returns
    -------
    Background3D

    Raises
    ------
    InvalidRunError
        If the file or HDU cannot be read, is not ``BKG_3D``, lacks a column,
        or its bins or rate are unusable (not contiguous, wrong shape, rate
        negative or not finite).
    UnitError
        If a column's unit is unknown or not convertible (TeV, deg, MeV-1 s-1 sr-1).
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            table = hdul[hdu]
            kind = str(table.header.get("HDUCLAS4", "")).strip().upper()
            if kind != "BKG_3D":
                raise InvalidRunError(obs_id, path, f"{hdu} is {kind or 'not declared (no HDUCLAS4)'}; only BKG_3D is supported")
            energy = _edges(table, "ENERG", ENERGY_UNIT, obs_id, path)
            detx = _edges(table, "DETX", ANGLE_UNIT, obs_id, path)
            dety = _edges(table, "DETY", ANGLE_UNIT, obs_id, path)
            rate = _column(table, "BKG", RATE_UNIT, obs_id, path)
    except (OSError, KeyError, IndexError, EOFError, TypeError) as err:
        raise InvalidRunError(obs_id, path, f"cannot read the {hdu} HDU: {err}") from err
    shape = (energy.size - 1, detx.size - 1, dety.size - 1)
    if rate.shape != shape:
        raise InvalidRunError(obs_id, path, f"{hdu} BKG has shape {rate.shape}, expected (ENERGY, DETX, DETY) = {shape}")
    if not np.all(np.isfinite(rate)) or np.any(rate < 0):
        raise InvalidRunError(obs_id, path, f"{hdu} BKG has negative or non-finite rates")
    return Background3D(energy=energy, detx=detx, dety=dety, rate=rate)


def energy_overlap_mev(edges: npt.ArrayLike, model_edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the width (MeV) that each bin shares with each model bin.

    Parameters
    ----------
    edges, model_edges : array-like
        Energy edges, TeV. Shapes: (n + 1,), (m + 1,).

    Returns
    -------
    numpy.ndarray
        Shape: (n, m); row sums are the bin widths inside the model's range.
    """
    e = np.asarray(edges, dtype=np.float64)
    m = np.asarray(model_edges, dtype=np.float64)
    lo = np.maximum(e[:-1, None], m[None, :-1])
    hi = np.minimum(e[1:, None], m[None, 1:])
    return np.asarray(np.clip(hi - lo, 0.0, None) * scale_to(ENERGY_UNIT, RATE_ENERGY_UNIT), dtype=np.float64)


def fov_lon_lat_deg(offset_deg: npt.ArrayLike, azimuth_rad: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return field-of-view longitude and latitude (deg) of points at an offset and azimuth.

    The azimuth is measured from the latitude axis towards the longitude axis.
    """
    r = np.radians(np.asarray(offset_deg, dtype=np.float64))
    phi = np.asarray(azimuth_rad, dtype=np.float64)
    lon = np.arctan2(np.sin(r) * np.sin(phi), np.cos(r))
    lat = np.arcsin(np.clip(np.sin(r) * np.cos(phi), -1.0, 1.0))
    return np.degrees(lon), np.degrees(lat)


def ring_pixel_solid_angle(
    offset_edges: npt.ArrayLike, detx_edges: npt.ArrayLike, dety_edges: npt.ArrayLike, *, step: float
) -> npt.NDArray[np.float64]:
    """Return the solid angle (sr) each offset ring shares with each model pixel.

    Each ring is cut into sub-rings no wider than ``step``. The circle through
    a sub-ring's centre is cut exactly where it crosses pixel edges, and the
    sub-ring's exact solid angle is shared out by the length of each arc (arcs
    outside the model get nothing). Only the radial direction is sampled, so a
    ring inside the model gives exactly ``2 pi (cos r1 - cos r2)`` and the
    error elsewhere falls with ``step``.

    Parameters
    ----------
    offset_edges : array-like
        Ring edges, deg. Shape: (n_offset + 1,).
    detx_edges, dety_edges : array-like
        Pixel edges of the model, deg. Shapes: (n_x + 1,), (n_y + 1,).
    step : float
        Largest sub-ring width, deg.

    Returns
    -------
    numpy.ndarray
        Shape: (n_offset, n_x, n_y).

    Raises
    ------
    ValueError
        If ``step`` is not positive or the offset edges are not increasing from >= 0.
    """
    return _ring_pixel_solid_angle(*(tuple(np.asarray(a, dtype=np.float64).tolist()) for a in (offset_edges, detx_edges, dety_edges)), step).copy()


def _pixel_crossings(radius_deg: float, detx_edges: npt.NDArray[np.float64], dety_edges: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return the sorted azimuths (rad, from 0 to 2 pi) where the circle of ``radius_deg`` crosses a pixel edge.

    On the circle, ``tan(lon) = tan(r) sin(phi)`` and ``sin(lat) = sin(r) cos(phi)``;
    between two consecutive azimuths the circle stays in one pixel.
    """
    r = np.radians(radius_deg)
    s = np.tan(np.radians(detx_edges)) / np.tan(r) if r > 0 else np.array([])
    c = np.sin(np.radians(dety_edges)) / np.sin(r) if r > 0 else np.array([])
    s, c = s[np.abs(s) <= 1], c[np.abs(c) <= 1]
    phi = np.concatenate([np.arcsin(s), np.pi - np.arcsin(s), np.arccos(c), -np.arccos(c)])
    return np.unique(np.concatenate([np.mod(phi, 2 * np.pi), [0.0, 2 * np.pi]]))


@functools.lru_cache(maxsize=8)
def _ring_pixel_solid_angle(
    offset_edges: tuple[float, ...], detx_edges: tuple[float, ...], dety_edges: tuple[float, ...], step: float
) -> npt.NDArray[np.float64]:
    """Cached :func:`ring_pixel_solid_angle` (every run of a store shares one model grid)."""
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    rings = np.asarray(offset_edges)
    if rings[0] < 0 or np.any(np.diff(rings) <= 0):
        raise ValueError(f"offset edges must increase from >= 0, got {rings.tolist()}")
    x_edges, y_edges = np.asarray(detx_edges), np.asarray(dety_edges)
    n_x, n_y = x_edges.size - 1, y_edges.size - 1
    weights = np.zeros((rings.size - 1, n_x * n_y))
    for ring, (r1, r2) in enumerate(itertools.pairwise(rings)):
        sub = np.linspace(r1, r2, max(1, int(np.ceil((r2 - r1) / step))) + 1)
        cos = np.cos(np.radians(sub))
        for cos_a, cos_b in itertools.pairwise(cos):
            radius = np.degrees(np.arccos(0.5 * (cos_a + cos_b)))  # centre of the sub-ring in solid angle
            phi = _pixel_crossings(radius, x_edges, y_edges)
            lon, lat = fov_lon_lat_deg(radius, 0.5 * (phi[:-1] + phi[1:]))
            ix = np.searchsorted(x_edges, lon, side="right") - 1
            iy = np.searchsorted(y_edges, lat, side="right") - 1
            inside = (ix >= 0) & (ix < n_x) & (iy >= 0) & (iy < n_y)
            arc = np.diff(phi)[inside] / (2 * np.pi)
            weights[ring] += 2 * np.pi * (cos_a - cos_b) * np.bincount(ix[inside] * n_y + iy[inside], weights=arc, minlength=n_x * n_y)
    weights.flags.writeable = False
    return weights.reshape(rings.size - 1, n_x, n_y)


def model_counts(
    model: Background3D, energy_edges: npt.ArrayLike, offset_edges: npt.ArrayLike, ontime_s: float, *, oversample: int = DEFAULT_OVERSAMPLE
) -> npt.NDArray[np.float64]:
    """Return the counts a ``BKG_3D`` model predicts in energy x offset-ring bins.

    Parameters
    ----------
    model : Background3D
    energy_edges : array-like
        TeV. Shape: (n_energy + 1,).
    offset_edges : array-like
        deg. Shape: (n_offset + 1,).
    ontime_s : float
        Time the rate is multiplied by, s: the run's observation time (ONTIME).
    oversample : int
        Sub-rings per model pixel width (the finer pixel side).

    Returns
    -------
    numpy.ndarray
        Shape: (n_energy, n_offset); 0 outside the model's energy range and field of view.
    """
    if int(oversample) < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample}")
    pixel = min(np.diff(model.detx).min(), np.diff(model.dety).min())
    solid_angle = _ring_pixel_solid_angle(
        tuple(np.asarray(offset_edges, dtype=np.float64).tolist()), tuple(model.detx.tolist()), tuple(model.dety.tolist()),
        float(pixel / int(oversample)),
    )
    overlap = energy_overlap_mev(energy_edges, model.energy)  # (n_energy, m_energy)
    per_ring = model.rate.reshape(model.rate.shape[0], -1) @ solid_angle.reshape(solid_angle.shape[0], -1).T  # (m_energy, n_offset)
    return np.asarray(ontime_s * (overlap @ per_ring), dtype=np.float64)


def bkg_locations(store: Store, obs_ids: npt.ArrayLike) -> pd.DataFrame:
    """Return ``OBS_ID``, ``BKG_PATH`` and ``BKG_HDU`` of each run, in the given order.

    Raises
    ------
    InvalidRunError
        If the store's hdu-index has no bkg row for a run.
    """
    wanted = pd.DataFrame({"OBS_ID": np.asarray(obs_ids, dtype=np.int64)})
    rows = hdu_locations(store, "bkg")
    found = wanted.merge(rows.astype({"OBS_ID": np.int64}), on="OBS_ID", how="left")
    missing = found["BKG_PATH"].isna().to_numpy()
    if missing.any():
        raise InvalidRunError(int(found["OBS_ID"][np.argmax(missing)]), None, f"the hdu-index of {store.root} has no bkg row")
    return found


def predicted_counts(store: Store, cube: xr.Dataset, *, oversample: int = DEFAULT_OVERSAMPLE) -> npt.NDArray[np.float64]:
    """Return the counts each run's own bkg model predicts in the cube's bins.

    Parameters
    ----------
    store : Store
        Store whose hdu-index points each run of the cube to its ``BKG_3D`` HDU.
    cube : xarray.Dataset
        Cube of :func:`bkgxr.build_cube` (only its edges, ``obs_id`` and
        ``run_ontime`` are used, so it may still be lazy).
    oversample : int
        Sub-rings per model pixel width (see :func:`ring_pixel_solid_angle`).

    Returns
    -------
    numpy.ndarray
        ``rate x dE x dOmega x ONTIME`` integrated over each bin, as gammapy predicts.
        Shape: (n_runs, n_energy, n_offset), runs in the cube's ``obs_id`` order.

    Raises
    ------
    InvalidRunError
        If a run has no bkg row or its model cannot be read (see :func:`read_bkg_3d`).

    Examples
    --------
    >>> store = bkgxr.open_store(path)                                  # doctest: +SKIP
    >>> cube = bkgxr.build_cube(store.select(bkgxr.OFF_QUERY)).compute()   # doctest: +SKIP
    >>> predicted_counts(store, cube).shape                             # doctest: +SKIP
    (45, 19, 9)
    """
    binning = binning_of(cube)
    obs_ids = cube["obs_id"].values
    ontime = np.asarray(cube[TIME_COLUMN].values, dtype=np.float64)
    where = bkg_locations(store, obs_ids)
    out = np.zeros((obs_ids.size, binning.shape[1], binning.shape[2]))
    for i, row in where.iterrows():
        model = read_bkg_3d(row["BKG_PATH"], row["BKG_HDU"], obs_id=int(row["OBS_ID"]))
        out[i] = model_counts(model, binning.energy, binning.offset, ontime[i], oversample=oversample)
    return out


def validate_published(
    store: Store,
    cube: xr.Dataset,
    *,
    radius: float = DEFAULT_RADIUS,
    default_threshold: float = DEFAULT_THRESHOLD,
    oversample: int = DEFAULT_OVERSAMPLE,
) -> Validation:
    """Compare each run's observed counts with its own published bkg model.

    The prediction is gammapy's, ``rate x ONTIME`` (:func:`predicted_counts`),
    as for bkgxr's own models in :func:`bkgxr.validation.validate`, and so are
    the bins and statistics: energy bins whose lower edge is at or above the
    run's threshold and offset bins wholly inside ``radius``; ratio of totals,
    then shape chi2 and deviance with the prediction scaled to the observed
    total. No run is left out: the models are fixed. ``N_EFF`` is NaN (the runs behind the
    published models are not known).

    Parameters
    ----------
    store : Store
        Store holding each run's ``BKG_3D`` model.
    cube : xarray.Dataset
        Computed cube with per-run counts (:func:`bkgxr.build_cube`).
    radius : float
        Compare offsets up to this radius, deg (whole offset bins only).
    default_threshold : float
        Energy threshold (TeV) of runs without SAFE_ENERGY_LO.
    oversample : int
        See :func:`predicted_counts`.

    Returns
    -------
    Validation
        Summary ``model`` is ``"published"``.

    See Also
    --------
    bkgxr.validation.validate : the same comparison for bkgxr's own recipes.
    """
    held = np.flatnonzero(cube["run_used"].values)
    predicted = predicted_counts(store, cube.isel(obs_id=held), oversample=oversample)
    return compare_runs(
        cube, held, predicted, np.full(held.size, np.nan), model=MODEL_NAME, radius=radius, default_threshold=default_threshold
    )
