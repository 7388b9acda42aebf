"""The peers bkgxr is timed against on a GADF store: the seed recipe, two floors, BAccMod, and bkgxr itself.

Every method takes a :class:`Context` (store folder and off runs) and, except
BAccMod, returns a :class:`Result`: counts and rate per zenith band (0-20-40-90
deg) x 19 log energy bins (0.1-100 TeV) x 9 offset bins (0-3 deg, even in
offset^2).

seed
    The gammapy tutorial "Make template background model" ported to gammapy
    2.1 (:func:`seed`, and :func:`seed_script` which also writes the models).
floor, floor-raw
    Single-core loops reading ENERGY/RA/DEC with ``astropy.io.fits``
    (:func:`columns_astropy`) or with stdlib ``zlib`` and a hand FITS parse
    (:func:`columns_raw`), then one ``np.histogramdd`` (:func:`floor`,
    :func:`floor_raw`).
bkgxr
    ``open_store`` + ``select`` + ``build_cube(...).compute()`` on the active
    dask scheduler (:func:`bkgxr_build`).
BAccMod
    One radial model of all runs (:func:`baccmod_model`; package ``baccmod``).

Used by ``benchmarks/hess_dr1.py`` (all of them) and ``benchmarks/scale.py``
(the floors' readers).
"""

from __future__ import annotations

import re
import zlib
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt

#: The tutorial's binning (bkgxr's defaults are the same values).
ENERGY_EDGES_TEV = np.logspace(-1, 2, 20)
OFFSET_EDGES_DEG = np.sqrt(np.linspace(0.0, 9.0, 10))
ZENITH_BINS = [{"min": 0, "max": 20}, {"min": 20, "max": 40}, {"min": 40, "max": 90}]
ZENITH_EDGES_DEG = np.array([0.0, 20.0, 40.0, 90.0])
OFF_TARGET = "Off data"


@dataclass
class Result:
    """Counts and rate of one method. Shape: (n_zenith, n_energy, n_offset)."""

    counts: npt.NDArray[np.int64]
    rate: npt.NDArray[np.float64]


@dataclass
class Context:
    """What every method gets: the store folder and the off runs to use."""

    data_dir: Path
    obs_ids: list[int]


# --------------------------------------------------------------------------- (a) seed recipe


class BackgroundModelEstimator:
    """The tutorial's estimator on gammapy 2.1 (``axes=`` API), filled with LIVETIME."""

    def __init__(self, ebounds: Any, offset: Any) -> None:
        self.counts = self._make_bkg2d(ebounds, offset, unit="")
        self.exposure = self._make_bkg2d(ebounds, offset, unit="s MeV sr")

    @staticmethod
    def _make_bkg2d(ebounds: Any, offset: Any, unit: str) -> Any:
        from gammapy.irf import Background2D
        from gammapy.maps import MapAxis

        energy = MapAxis.from_energy_edges(ebounds.to("MeV"), name="energy")
        offset = MapAxis.from_edges(offset.to("deg"), name="offset")
        return Background2D(axes=[energy, offset], data=np.zeros((energy.nbin, offset.nbin)), unit=unit)

    def run(self, observations: Any) -> None:
        for obs in observations:
            self.fill_counts(obs)
            self.fill_exposure(obs)

    def fill_counts(self, obs: Any) -> None:
        events = obs.events
        axes = self.counts.axes
        counts = np.histogram2d(
            x=events.energy.to("MeV"),
            y=events.offset.to("deg"),
            bins=(axes["energy"].edges, axes["offset"].edges),
        )[0]
        self.counts.data += counts

    def fill_exposure(self, obs: Any) -> None:
        axes = self.exposure.axes
        energy_width = np.diff(axes["energy"].edges)
        offset = axes["offset"].center
        offset_width = np.diff(axes["offset"].edges)
        solid_angle = 2 * np.pi * offset * offset_width
        time = obs.observation_live_time_duration  # the tutorial: observation_time_duration
        exposure = time * energy_width[:, None] * solid_angle[None, :]
        self.exposure.data += exposure.to_value(self.exposure.unit)

    @property
    def background_rate(self) -> Any:
        rate = deepcopy(self.counts)
        has = self.exposure.data > 0
        rate.data = np.where(has, self.counts.data / np.where(has, self.exposure.data, 1.0), 0.0)
        return rate


def seed_models(ctx: Context) -> tuple[list[Any], list[Any], Any]:
    """Run the tutorial's ``make_models``: one estimator per zenith band."""
    import astropy.units as u
    from gammapy.data import DataStore

    data_store = DataStore.from_dir(ctx.data_dir)
    obs_table = data_store.obs_table
    obs_table = obs_table[obs_table["TARGET_NAME"] == OFF_TARGET]
    obs_table = obs_table[np.isin(obs_table["OBS_ID"], ctx.obs_ids)]
    ebounds = ENERGY_EDGES_TEV * u.TeV
    offset = OFFSET_EDGES_DEG * u.deg
    estimators, models = [], []
    for zenith in ZENITH_BINS:
        mask = zenith["min"] <= obs_table["ZEN_PNT"]
        mask &= obs_table["ZEN_PNT"] < zenith["max"]
        estimator = BackgroundModelEstimator(ebounds, offset)
        obs_ids = obs_table["OBS_ID"][mask]
        if len(obs_ids):
            estimator.run(data_store.get_observations(obs_ids))
        estimators.append(estimator)
        models.append(estimator.background_rate)
    return estimators, models, data_store


def seed(ctx: Context) -> Result:
    """Time target (a): the seed tutorial's recipe."""
    estimators, models, _ = seed_models(ctx)
    return Result(
        counts=np.stack([e.counts.data for e in estimators]).astype(np.int64),
        rate=np.stack([m.data for m in models]),
    )


def seed_script(ctx: Context, out: Path) -> None:
    """The seed recipe as a whole script: build, then write the models like the tutorial."""
    from astropy.io import fits

    _, models, data_store = seed_models(ctx)
    hdu_list = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(data_store.obs_table)])
    for idx, model in enumerate(models):
        hdu = model.to_table_hdu()
        hdu.name = f"BKG{idx}"
        hdu_list.append(hdu)
    hdu_list.writeto(out, overwrite=True)


# --------------------------------------------------------------------------- (b) floors


def offset_deg(ra: npt.NDArray[np.float64], dec: npt.NDArray[np.float64], ra0: float, dec0: float) -> npt.NDArray[np.float64]:
    """Angular distance (deg) from the pointing, Vincenty formula in plain numpy."""
    lon1, lat1, lon2, lat2 = np.radians(ra), np.radians(dec), np.radians(ra0), np.radians(dec0)
    sdlon, cdlon = np.sin(lon2 - lon1), np.cos(lon2 - lon1)
    slat1, slat2, clat1, clat2 = np.sin(lat1), np.sin(lat2), np.cos(lat1), np.cos(lat2)
    num1 = clat2 * sdlon
    num2 = clat1 * slat2 - slat1 * clat2 * cdlon
    den = slat1 * slat2 + clat1 * clat2 * cdlon
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def index_runs(ctx: Context) -> list[tuple[Path, str, float, float, float, float]]:
    """Read both index tables: (path, hdu, ra_pnt, dec_pnt, zen_pnt, ontime) per run."""
    from astropy.io import fits

    root = ctx.data_dir
    obs = fits.getdata(root / "obs-index.fits.gz", 1)
    hdu = fits.getdata(root / "hdu-index.fits.gz", 1)
    events = {
        int(i): (root / d.strip() / n.strip(), h.strip() or "EVENTS")
        for i, t, d, n, h in zip(hdu["OBS_ID"], hdu["HDU_TYPE"], hdu["FILE_DIR"], hdu["FILE_NAME"], hdu["HDU_NAME"])
        if t.strip().lower() == "events"
    }
    rows = {int(r["OBS_ID"]): r for r in obs}
    return [
        (*events[i], *(float(rows[i][c]) for c in ("RA_PNT", "DEC_PNT", "ZEN_PNT", "ONTIME")))
        for i in sorted(ctx.obs_ids)
    ]


def off_run_ids(data_dir: Path, n_runs: int | None) -> list[int]:
    """The first ``n_runs`` off runs of the obs index, by OBS_ID."""
    from astropy.io import fits

    obs = fits.getdata(data_dir / "obs-index.fits.gz", 1)
    ids = sorted(int(i) for i, t in zip(obs["OBS_ID"], obs["TARGET_NAME"]) if t.strip() == OFF_TARGET)
    return ids[:n_runs] if n_runs else ids



def columns_astropy(path: Path, hdu: str) -> tuple[npt.NDArray[np.float64], ...]:
    """ENERGY (TeV), RA, DEC (deg) through ``astropy.io.fits`` (stdlib gzip inside), and the header's RA_PNT, DEC_PNT."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        table = hdul[hdu]
        for name, unit in (("ENERGY", "TeV"), ("RA", "deg"), ("DEC", "deg")):
            if table.columns[name].unit != unit:
                raise ValueError(f"{path.name}: {name} is in {table.columns[name].unit}, not {unit}")
        columns = tuple(np.asarray(table.data[c], dtype=np.float64) for c in ("ENERGY", "RA", "DEC"))
        return (*columns, *(np.float64(table.header[k]) for k in ("RA_PNT", "DEC_PNT")))


_BLOCK = 2880
_TFORM = re.compile(r"^(\d*)([LXBIJKAEDCMPQ])")
_TFORM_BYTES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_TFORM_DTYPE = {"E": ">f4", "D": ">f8"}


class _Gunzip:
    """Decompress a gzip file on demand, only as far as asked."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._zlib = zlib.decompressobj(wbits=31)
        self.buf = bytearray()

    def ensure(self, size: int) -> None:
        while len(self.buf) < size:
            chunk = self._file.read(1 << 16)
            if not chunk:
                raise EOFError(f"{self._file.name}: file ends before byte {size}")
            self.buf += self._zlib.decompress(chunk)

    def close(self) -> None:
        self._file.close()


def _card_value(text: str) -> str:
    text = text.strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1 : end + 2] == "'":
            end = text.find("'", end + 2)
        return text[1:end].replace("''", "'").rstrip()
    return text.split("/", 1)[0].strip()


def _header(stream: _Gunzip, pos: int) -> tuple[dict[str, str], int]:
    """Parse the header starting at byte ``pos``; return its cards and the data start."""
    cards: dict[str, str] = {}
    while True:
        stream.ensure(pos + _BLOCK)
        block = bytes(stream.buf[pos : pos + _BLOCK]).decode("ascii")
        pos += _BLOCK
        for i in range(0, _BLOCK, 80):
            key = block[i : i + 8].strip()
            if key == "END":
                return cards, pos
            if block[i + 8 : i + 10] == "= ":
                cards[key] = _card_value(block[i + 10 : i + 80])


def columns_raw(path: Path, hdu: str) -> tuple[npt.NDArray[np.float64], ...]:
    """ENERGY (TeV), RA, DEC (deg) and the header's RA_PNT, DEC_PNT from a hand parse of the gunzipped prefix of the file."""
    stream, pos = _Gunzip(path), 0
    try:
        while True:
            cards, start = _header(stream, pos)
            naxis = [int(cards[f"NAXIS{k}"]) for k in range(1, int(cards["NAXIS"]) + 1)]
            size = abs(int(cards["BITPIX"])) // 8 * int(cards.get("GCOUNT", 1)) * (
                int(cards.get("PCOUNT", 0)) + int(np.prod(naxis))
            ) if naxis else 0
            if cards.get("EXTNAME", "").upper() == hdu.upper():
                break
            pos = start + -(-size // _BLOCK) * _BLOCK
        names, formats, offsets, at = [], [], [], 0
        for k in range(1, int(cards["TFIELDS"]) + 1):
            repeat, code = _TFORM.match(cards[f"TFORM{k}"]).groups()  # type: ignore[union-attr]
            repeat_n = int(repeat or 1)
            name = cards[f"TTYPE{k}"].upper()
            if name in ("ENERGY", "RA", "DEC"):
                unit = {"ENERGY": "TeV"}.get(name, "deg")
                if repeat_n != 1 or code not in _TFORM_DTYPE or cards.get(f"TUNIT{k}") != unit:
                    raise ValueError(f"{path.name}: {name} is {cards[f'TFORM{k}']} {cards.get(f'TUNIT{k}')}")
                if f"TSCAL{k}" in cards or f"TZERO{k}" in cards:
                    raise ValueError(f"{path.name}: {name} is scaled")
                names.append(name)
                formats.append(_TFORM_DTYPE[code])
                offsets.append(at)
            at += (repeat_n + 7) // 8 if code == "X" else repeat_n * _TFORM_BYTES[code]
        stream.ensure(start + naxis[0] * naxis[1])
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": naxis[0]})
        rows = np.frombuffer(stream.buf, dtype=dtype, count=naxis[1], offset=start)
        out = tuple(rows[c].astype(np.float64) for c in ("ENERGY", "RA", "DEC"))
        del rows
        return (*out, *(np.float64(cards[k]) for k in ("RA_PNT", "DEC_PNT")))
    finally:
        stream.close()


def floor(ctx: Context, read: Callable[[Path, str], tuple[npt.NDArray[np.float64], ...]] = columns_astropy) -> Result:
    """Time target (b): read each run, offset, then one ``np.histogramdd`` over all runs.

    Zenith and ONTIME (the time GADF rates are per) come from the obs index and the pointing from the
    EVENTS header (float64; the index holds float32), as in bkgxr, so that
    both compute the same numbers and their counts can be compared exactly.
    """
    zenith, energy, offset = [], [], []
    runs = index_runs(ctx)
    for path, hdu, _, _, zen, _ in runs:
        e, ra, dec, ra0, dec0 = read(path, hdu)
        zenith.append(np.full(e.size, zen))
        energy.append(e)
        offset.append(offset_deg(ra, dec, ra0, dec0))
    counts, _ = np.histogramdd(
        (np.concatenate(zenith), np.concatenate(energy), np.concatenate(offset)),
        bins=(ZENITH_EDGES_DEG, ENERGY_EDGES_TEV, OFFSET_EDGES_DEG),
    )
    band = np.searchsorted(ZENITH_EDGES_DEG, [r[4] for r in runs], side="right") - 1
    ontime = np.bincount(band, weights=[r[5] for r in runs], minlength=len(ZENITH_BINS))
    cos = np.cos(np.radians(OFFSET_EDGES_DEG))
    exposure = ontime[:, None, None] * (np.diff(ENERGY_EDGES_TEV) * 1e6)[None, :, None] * (
        2 * np.pi * (cos[:-1] - cos[1:])
    )[None, None, :]
    rate = np.where(exposure > 0, counts / np.where(exposure > 0, exposure, 1.0), 0.0)
    return Result(counts=counts.astype(np.int64), rate=rate)


def floor_raw(ctx: Context) -> Result:
    """Time target (b'): the floor with the hand-written gunzip + FITS parse."""
    return floor(ctx, columns_raw)


# --------------------------------------------------------------------------- (c) bkgxr, (d) BAccMod


def bkgxr_build(ctx: Context) -> Result:
    """Time target (c): bkgxr's Python API, on whatever dask scheduler is active."""
    import bkgxr

    store = bkgxr.open_store(ctx.data_dir)
    runs = store.select(bkgxr.OFF_QUERY, obs_ids=ctx.obs_ids)
    # the peers put a run's events in the band of its ZEN_PNT: the same job, comparable counts
    cube = bkgxr.build_cube(runs, event_zenith=False).compute()
    return Result(counts=cube["counts"].values.astype(np.int64), rate=cube["rate"].values)


def baccmod_model(ctx: Context) -> None:
    """Time target (d): BAccMod's radial model of all runs, same energy and offset axes."""
    import astropy.units as u
    from baccmod import RadialAcceptanceMapCreator
    from gammapy.data import DataStore
    from gammapy.maps import MapAxis

    data_store = DataStore.from_dir(ctx.data_dir)
    observations = data_store.get_observations(ctx.obs_ids)
    creator = RadialAcceptanceMapCreator(
        energy_axis=MapAxis.from_energy_edges(ENERGY_EDGES_TEV * u.TeV, name="energy"),
        offset_axis=MapAxis.from_edges(OFFSET_EDGES_DEG * u.deg, name="offset"),
    )
    creator.create_acceptance_model(observations, zenith_binning=False)
