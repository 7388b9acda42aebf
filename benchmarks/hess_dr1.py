"""Time bkgxr against the seed recipe, two hand-written floors and BAccMod on H.E.S.S. DR1.

Every method starts from the data-store folder and ends with counts and rate
per zenith band (0-20-40-90 deg) x 19 log energy bins (0.1-100 TeV) x 9
offset bins (0-3 deg, even in offset^2), from the off runs
(``TARGET_NAME == "Off data"``, 45 runs), all in ONE process:

seed
    The gammapy tutorial "Make template background model" ported to gammapy
    2.1: ``DataStore.from_dir``, ``get_observations`` per zenith band, one
    observation at a time, ``np.histogram2d`` of ``events.energy`` (MeV) x
    ``events.offset``, exposure from the LIVETIME (the tutorial used the
    observation time) and the tutorial's ``2 pi r dr`` solid angle.
floor
    A plain single-core loop: ``astropy.io.fits.open`` of each run (astropy
    gunzips through stdlib ``gzip``), ENERGY/RA/DEC, numpy offset, then one
    ``np.histogramdd`` over all runs.
floor-raw
    The same loop without astropy: stdlib ``zlib`` decompresses each file
    only as far as the end of its EVENTS HDU, the FITS headers are parsed by
    hand and the three columns are viewed with ``np.frombuffer``.
bkgxr
    ``open_store`` + ``select`` + ``build_cube(...).compute()`` with dask's
    default threaded scheduler, and again with a ``LocalCluster`` of 2
    single-threaded workers whose Client is active (cluster start-up timed
    apart from the builds).
BAccMod
    ``RadialAcceptanceMapCreator(energy_axis, offset_axis)
    .create_acceptance_model(observations, zenith_binning=False)``: one radial
    model of all runs (package ``baccmod``, extra ``bench``); skipped when not
    importable.

Times are medians of ``--repeats`` calls after one untimed warm-up call per
method (imports done, files read once: "warm cache"); ``--cold`` adds the
same with the page cache dropped before each call. CPU seconds (all threads
of this process) are printed beside the wall times, as a check when other
processes share the cores (the load average is printed too). Peak memory
comes from one more, untimed call under ``tracemalloc`` (Python and numpy
allocations of this process); for the cluster, the workers' peak RSS above
their idle RSS is sampled with psutil. Whole processes (``bkgxr build`` and
the seed recipe as a script, imports included) are timed last.

The floors and both bkgxr modes must give identical counts in every bin; the
seed may differ only by events lying within float32 precision of a bin edge
(see :func:`check_agreement`). Otherwise the script prints "counts DIFFER"
and exits with status 1.

Run ``python benchmarks/hess_dr1.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
import zlib
from copy import deepcopy
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
#: Data store used unless ``--data`` or ``BKGXR_DATA`` says otherwise.
DEFAULT_DATA = Path(os.environ.get("BKGXR_DATA", REPO.parent / "shared" / "data" / "hess-dl3-dr1"))

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
    """Read both index tables: (path, hdu, ra_pnt, dec_pnt, zen_pnt, livetime) per run."""
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
        (*events[i], *(float(rows[i][c]) for c in ("RA_PNT", "DEC_PNT", "ZEN_PNT", "LIVETIME")))
        for i in sorted(ctx.obs_ids)
    ]


def columns_astropy(path: Path, hdu: str) -> tuple[npt.NDArray[np.float64], ...]:
    """ENERGY (TeV), RA, DEC (deg) through ``astropy.io.fits`` (stdlib gzip inside)."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        table = hdul[hdu]
        for name, unit in (("ENERGY", "TeV"), ("RA", "deg"), ("DEC", "deg")):
            if table.columns[name].unit != unit:
                raise ValueError(f"{path.name}: {name} is in {table.columns[name].unit}, not {unit}")
        return tuple(np.asarray(table.data[c], dtype=np.float64) for c in ("ENERGY", "RA", "DEC"))


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
    """ENERGY (TeV), RA, DEC (deg) from a hand parse of the gunzipped prefix of the file."""
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
        return out
    finally:
        stream.close()


def floor(ctx: Context, read: Callable[[Path, str], tuple[npt.NDArray[np.float64], ...]] = columns_astropy) -> Result:
    """Time target (b): read each run, offset, then one ``np.histogramdd`` over all runs.

    Pointing, zenith and livetime come from the obs index, as in bkgxr, so
    that both compute the same numbers and their counts can be compared
    exactly.
    """
    zenith, energy, offset = [], [], []
    runs = index_runs(ctx)
    for path, hdu, ra0, dec0, zen, _ in runs:
        e, ra, dec = read(path, hdu)
        zenith.append(np.full(e.size, zen))
        energy.append(e)
        offset.append(offset_deg(ra, dec, ra0, dec0))
    counts, _ = np.histogramdd(
        (np.concatenate(zenith), np.concatenate(energy), np.concatenate(offset)),
        bins=(ZENITH_EDGES_DEG, ENERGY_EDGES_TEV, OFFSET_EDGES_DEG),
    )
    band = np.searchsorted(ZENITH_EDGES_DEG, [r[4] for r in runs], side="right") - 1
    livetime = np.bincount(band, weights=[r[5] for r in runs], minlength=len(ZENITH_BINS))
    cos = np.cos(np.radians(OFFSET_EDGES_DEG))
    exposure = livetime[:, None, None] * (np.diff(ENERGY_EDGES_TEV) * 1e6)[None, :, None] * (
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
    cube = bkgxr.build_cube(runs).compute()
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


# --------------------------------------------------------------------------- harness


def drop_page_cache(files: Sequence[Path]) -> str:
    """Drop the page cache; return how ("drop_caches", "fadvise") or "" if not possible.

    ``/proc/sys/vm/drop_caches`` (root) drops every clean page; without it,
    ``posix_fadvise(DONTNEED)`` evicts the store's own files.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    if not hasattr(os, "posix_fadvise"):
        return ""
    try:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    except OSError:
        return ""
    return "fadvise"


class RssPeak:
    """Sample the RSS of some processes in a thread; ``delta`` is peak minus start, per pid."""

    def __init__(self, pids: Sequence[int], interval: float = 0.005) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids]
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.delta: list[int] = []

    def _sample(self) -> None:
        while not self._stop.is_set():
            for i, proc in enumerate(self._procs):
                self._peak[i] = max(self._peak[i], proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> RssPeak:
        self._start = [p.memory_info().rss for p in self._procs]
        self._peak = list(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.delta = [peak - start for peak, start in zip(self._peak, self._start)]


def traced_peak(func: Callable[[], object]) -> int:
    """Peak bytes allocated (tracemalloc) during ``func()``."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@dataclass
class Row:
    """Timings of one method: warm (and cold) wall seconds, CPU seconds and peak memory."""

    name: str
    warm: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    memory: str = ""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.warm)


def time_calls(
    func: Callable[[], object], repeats: int, before: Callable[[], object] | None = None
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (all threads of this process) of ``repeats`` calls of ``func``.

    ``before()`` runs untimed ahead of each call.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        t0, c0 = time.perf_counter(), time.process_time()
        func()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def run_process(cmd: Sequence[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (bytes, sampled with psutil) of one child process."""
    import resource

    import psutil

    with tempfile.TemporaryFile() as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.002)
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read().decode(errors='replace')}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, peak


def off_run_ids(data_dir: Path, n_runs: int | None) -> list[int]:
    """The first ``n_runs`` off runs of the obs index, by OBS_ID."""
    from astropy.io import fits

    obs = fits.getdata(data_dir / "obs-index.fits.gz", 1)
    ids = sorted(int(i) for i, t in zip(obs["OBS_ID"], obs["TARGET_NAME"]) if t.strip() == OFF_TARGET)
    return ids[:n_runs] if n_runs else ids


#: Events this close to an offset edge may land on either side of it: RA/DEC are
#: float32 (1 ulp is up to 3e-5 deg), gammapy separates them in float32 from the
#: EVENTS-header pointing; bkgxr in float64 from the obs-index (float32) pointing.
OFFSET_TOL_DEG = 3e-5
#: The same for energy edges: gammapy converts float32 TeV to float32 MeV.
ENERGY_RTOL = 3e-7


def near_edges(ctx: Context) -> int:
    """Count events within float32 precision of an energy or offset edge."""
    n = 0
    for path, hdu, ra0, dec0, _, _ in index_runs(ctx):
        energy, ra, dec = columns_raw(path, hdu)
        offset = offset_deg(ra, dec, ra0, dec0)
        near = np.min(np.abs(offset[:, None] - OFFSET_EDGES_DEG), axis=1) < OFFSET_TOL_DEG
        near |= np.min(np.abs(energy[:, None] / ENERGY_EDGES_TEV - 1), axis=1) < ENERGY_RTOL
        n += int(np.count_nonzero(near))
    return n


def check_agreement(results: dict[str, Result], ctx: Context) -> tuple[bool, list[str]]:
    """Compare every method's counts with bkgxr's; return (agree, report lines).

    Floors and bkgxr modes must be equal in every bin. The seed may move
    events to a neighbouring bin only if the per-band totals are equal and no
    more events moved than lie within float32 precision of an edge.
    """
    ref = results["bkgxr (threads)"]
    totals = ref.counts.sum((1, 2))
    exact, notes, problems = [], [], []
    for name, res in results.items():
        diff = res.counts - ref.counts
        if not diff.any():
            exact.append(name)
            continue
        moved = int(np.abs(diff).sum()) // 2
        if name == "seed" and np.array_equal(res.counts.sum((1, 2)), totals):
            near = near_edges(ctx)
            if moved <= near:
                notes.append(
                    f"  seed: same per-band totals; {moved} of {int(totals.sum())} events fall in a neighbouring "
                    f"bin, and {near} events lie within float32 precision of a bin edge ({OFFSET_TOL_DEG:g} deg or "
                    f"{ENERGY_RTOL:g} in energy): gammapy separates float32 RA/DEC in float32 from the EVENTS-header "
                    "pointing, bkgxr in float64 from the obs-index pointing"
                )
                continue
        problems.append(
            f"counts DIFFER: {name} vs bkgxr (threads) in {np.count_nonzero(diff)} bins ({moved} events moved); "
            f"per band {res.counts.sum((1, 2)).tolist()} vs {totals.tolist()}"
        )
    per_band = ", ".join(f"{z['min']}-{z['max']} deg: {n}" for z, n in zip(ZENITH_BINS, totals))
    lines = problems or [f"counts agree: {', '.join(exact)} are identical in every bin ({per_band}){'' if not notes else ';'}", *notes]
    for name, res in results.items():
        if not name.startswith("bkgxr"):
            has = (ref.rate > 0) & (res.counts == ref.counts)
            rel = np.max(np.abs(res.rate[has] / ref.rate[has] - 1)) if has.any() else 0.0
            why = " (its 2 pi r dr solid angle and gammapy's livetime)" if name == "seed" else ""
            lines.append(f"rate, largest relative difference {name} vs bkgxr in bins of equal counts: {rel:.1e}{why}")
    return not problems, lines


def machine() -> str:
    import dask
    import distributed

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.processor())
    versions = {"python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__, "distributed": distributed.__version__}
    for dist in ("astropy", "gammapy", "bkgxr", "baccmod"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return (
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB\n"
        + "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"H.E.S.S. DL3 DR1 store (default: $BKGXR_DATA or {DEFAULT_DATA})")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method; the median is reported (default: 5)")
    p.add_argument("--runs", type=int, default=None, help="use only the first N off runs by OBS_ID (default: all 45)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes, 1 thread each (default: 2)")
    p.add_argument("--cold", action="store_true", help="also time with the page cache dropped before each call")
    p.add_argument("--skip-baccmod", action="store_true", help="do not run BAccMod (about 8 s a call, at most 3 repeats)")
    p.add_argument("--no-whole-process", action="store_true", help="skip the whole-process timings (bkgxr CLI vs seed script)")
    p.add_argument("--seed-once", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if not (args.data / "obs-index.fits.gz").is_file():
        p.error(f"no H.E.S.S. DR1 store at {args.data}; pass --data or set BKGXR_DATA")
    return args


def measure(
    row: Row, func: Callable[[], object], args: argparse.Namespace, files: Sequence[Path], cache: dict[str, str],
    repeats: int | None = None,
) -> None:
    """Fill ``row`` with warm (and cold) times and the tracemalloc peak of ``func``."""
    print(f"timing {row.name} ...", file=sys.stderr, flush=True)
    repeats = repeats or args.repeats
    row.warm, row.cpu = time_calls(func, repeats)
    if args.cold and cache["how"]:
        row.cold = time_calls(func, repeats, before=lambda: drop_page_cache(files))[0]
    if not row.memory:
        row.memory = f"{mib(traced_peak(func))} (tracemalloc)"


def run_cluster(ctx: Context, args: argparse.Namespace, files: Sequence[Path], cache: dict[str, str], rows: list[Row], results: dict[str, Result]) -> None:
    """Time (c) on a LocalCluster: start-up, first build, then warm (and cold) builds."""
    from dask.distributed import Client, LocalCluster

    name = f"bkgxr (LocalCluster {args.workers}x1)"
    print(f"timing {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(args.workers)
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        results[name] = bkgxr_build(ctx)
        first = time.perf_counter() - t0
        row = Row(name, note=f"cpu: client only; first build on fresh workers {first:.2f} s")
        pids = list(client.run(os.getpid).values())
        client_peak = 0
        with RssPeak(pids) as rss:
            client_peak = traced_peak(lambda: bkgxr_build(ctx))
        row.memory = f"client {mib(client_peak)} (tracemalloc); workers +{'/+'.join(mib(d).split()[0] for d in rss.delta)} MiB (RSS, psutil)"
        measure(row, lambda: bkgxr_build(ctx), args, files, cache)
    finally:
        client.close()
        cluster.close()
    rows.append(Row(f"LocalCluster start-up ({args.workers} workers + Client)", warm=[startup], memory="-", note="1 sample"))
    rows.append(row)


def whole_process(ctx: Context, args: argparse.Namespace, subset: bool) -> list[Row]:
    """Time whole processes, imports included: ``bkgxr --help``, ``bkgxr build``, the seed script.

    No warm-up call: the in-process timings before have read the same modules.
    """
    exe = Path(sys.executable).with_name("bkgxr")
    bkgxr_cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "bkgxr.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        query = f'TARGET_NAME == "{OFF_TARGET}"' + (f" and OBS_ID in {ctx.obs_ids}" if subset else "")
        runs_arg = ["--runs", str(len(ctx.obs_ids))] if subset else []
        commands = {
            "bkgxr --help": [*bkgxr_cmd, "--help"],
            "bkgxr build (CLI, writes models)": [*bkgxr_cmd, "build", str(ctx.data_dir), "--out", f"{tmp}/bkgxr.fits", "--quiet", "--query", query],
            "seed recipe script (writes models)": [sys.executable, __file__, "--data", str(ctx.data_dir), *runs_arg, "--seed-once", f"{tmp}/seed.fits"],
        }
        for name, cmd in commands.items():
            print(f"timing whole process: {name} ...", file=sys.stderr, flush=True)
            samples = [run_process(cmd) for _ in range(args.repeats)]
            rows.append(Row(name, warm=[s[0] for s in samples], cpu=[s[1] for s in samples],
                            memory=f"{mib(max(s[2] for s in samples))} (peak RSS)"))
    return rows


def table(rows: list[Row], cold: bool) -> list[str]:
    head = f"{'method':<44} {'median s':>9} {'min s':>8} {'max s':>8} {'cpu s':>7}"
    if cold:
        head += f" {'cold med s':>10} {'cold min':>8} {'cold max':>8}"
    lines = [head + "  peak memory", "-" * (len(head) + 30)]
    for r in rows:
        cpu = f"{statistics.median(r.cpu):>7.3f}" if r.cpu else f"{'-':>7}"
        line = f"{r.name:<44} {r.median:>9.3f} {min(r.warm):>8.3f} {max(r.warm):>8.3f} {cpu}"
        if cold:
            line += f" {statistics.median(r.cold):>10.3f} {min(r.cold):>8.3f} {max(r.cold):>8.3f}" if r.cold else f" {'-':>10} {'-':>8} {'-':>8}"
        lines.append(line + f"  {r.memory}" + (f"  [{r.note}]" if r.note else ""))
    return lines


def ratios(rows: dict[str, Row], skipped: str) -> list[str]:
    modes = [n for n in rows if n.startswith("bkgxr (")]
    pairs = [("seed / bkgxr", "seed", None), ("BAccMod / bkgxr", "BAccMod radial model", None),
             ("bkgxr / floor", None, "floor"), ("bkgxr / floor-raw", None, "floor-raw")]
    lines = ["ratios of median times (warm cache):"]
    for label, num, den in pairs:
        if (num or den) not in rows:
            lines.append(f"  {label:<20} skipped: {skipped}")
            continue
        parts = []
        for mode in modes:
            a, b = (rows[num].median, rows[mode].median) if num else (rows[mode].median, rows[den].median)  # type: ignore[index]
            parts.append(f"{mode.removeprefix('bkgxr ')} {a / b:.2f}")
        lines.append(f"  {label:<20} " + " | ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=r"zenith band\(s\) .* have no run")  # --runs subsets
    ctx = Context(args.data.resolve(), off_run_ids(args.data.resolve(), args.runs))
    if args.seed_once:
        seed_script(ctx, args.seed_once)
        return 0
    files = sorted(p for p in ctx.data_dir.rglob("*.fits*") if p.is_file())
    cache = {"how": drop_page_cache(files[:1]) if args.cold else ""}
    for path in files:  # warm-up read: the whole store is in the page cache from here on
        path.read_bytes()
    print(machine())
    print(f"load average at start: {os.getloadavg()[0]:.2f} (above ~0.3, other processes share the cores)")
    print(f"data: {ctx.data_dir}, {len(ctx.obs_ids)} off runs; repeats: {args.repeats}; file cache: warm "
          "(store read once, each method called once untimed before timing)")
    if args.cold:
        print("cold cache: " + {"drop_caches": "page cache dropped (/proc/sys/vm/drop_caches) before each call",
                                "fadvise": "store files evicted (posix_fadvise DONTNEED) before each call; "
                                           "/proc/sys/vm/drop_caches not writable",
                                "": "not possible here (no drop_caches, no posix_fadvise)"}[cache["how"]])

    methods: dict[str, Callable[[Context], Result]] = {
        "seed": seed, "floor": floor, "floor-raw": floor_raw, "bkgxr (threads)": bkgxr_build,
    }
    labels = {"seed": "seed (gammapy, 1 obs at a time)", "floor": "floor (astropy.io.fits loop, 1 core)",
              "floor-raw": "floor-raw (zlib + hand FITS parse, 1 core)", "bkgxr (threads)": f"bkgxr (threads, {os.cpu_count()})"}
    rows: dict[str, Row] = {}
    results: dict[str, Result] = {}
    for key, method in methods.items():
        results[key] = method(ctx)  # warm-up call, and the result checked below
        rows[key] = Row(labels[key])
        measure(rows[key], lambda m=method: m(ctx), args, files, cache)  # type: ignore[misc]
    cluster_rows: list[Row] = []
    run_cluster(ctx, args, files, cache, cluster_rows, results)
    rows["LocalCluster start-up"], rows["bkgxr (LocalCluster)"] = cluster_rows
    results["bkgxr (LocalCluster)"] = results.pop(cluster_rows[1].name)

    skipped = "--skip-baccmod"
    if not args.skip_baccmod:
        try:
            import baccmod  # noqa: F401
        except ImportError as err:
            skipped = f"baccmod not importable ({err}); pip install -e '.[bench]'"
        else:
            baccmod_model(ctx)
            repeats = min(args.repeats, 3)
            rows["BAccMod radial model"] = Row("BAccMod radial model (1 model, all runs)", note=f"{repeats} repeats")
            measure(rows["BAccMod radial model"], lambda: baccmod_model(ctx), args, files, cache, repeats)
    agree, agreement = check_agreement(results, ctx)
    whole = [] if args.no_whole_process else whole_process(ctx, args, subset=args.runs is not None)

    print(f"load average at end: {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(list(rows.values()), cold=bool(args.cold and cache["how"]))))
    print("(median/min/max: wall seconds per call; cpu s: median CPU seconds of this process, all threads)")
    print("\n".join(ratios(rows, skipped)))
    if "BAccMod radial model" not in rows:
        print(f"BAccMod: skipped ({skipped})")
    print("\n".join(agreement))
    if whole:
        print("\nwhole process, imports included (warm cache):")
        print("\n".join(table(whole, cold=False)))
        print(f"  seed script / bkgxr build: {whole[2].median / whole[1].median:.2f}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
