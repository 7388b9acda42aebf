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

The methods live in ``benchmarks/peers.py``, the timing and memory helpers in
``benchmarks/_timing.py``; this script holds the cases, the agreement check
and the tables. Run ``python benchmarks/hess_dr1.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from _timing import (
    RssPeak,
    drop_page_cache,
    machine,
    mib,
    run_process,
    time_calls,
    traced_peak,
)
from peers import (
    ENERGY_EDGES_TEV,
    OFF_TARGET,
    OFFSET_EDGES_DEG,
    ZENITH_BINS,
    Context,
    Result,
    baccmod_model,
    bkgxr_build,
    columns_raw,
    floor,
    floor_raw,
    index_runs,
    off_run_ids,
    offset_deg,
    seed,
    seed_script,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
#: Data store used unless ``--data`` or ``BKGXR_DATA`` says otherwise.
DEFAULT_DATA = Path(os.environ.get("BKGXR_DATA", REPO.parent / "shared" / "data" / "hess-dl3-dr1"))


# --------------------------------------------------------------------------- agreement


#: Events this close to an offset edge may land on either side of it: RA/DEC are
#: float32 (1 ulp is up to 3e-5 deg), gammapy separates them in float32 from the
#: EVENTS-header pointing; bkgxr in float64 from the same pointing.
OFFSET_TOL_DEG = 3e-5
#: The same for energy edges: gammapy converts float32 TeV to float32 MeV.
ENERGY_RTOL = 3e-7


def near_edges(ctx: Context) -> int:
    """Count events within float32 precision of an energy or offset edge."""
    n = 0
    for path, hdu, _, _, _, _ in index_runs(ctx):
        energy, ra, dec, ra0, dec0 = columns_raw(path, hdu)
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
                    "pointing, bkgxr in float64 from the same pointing"
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



# --------------------------------------------------------------------------- tables


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
    p.add_argument("--floor-once", type=Path, metavar="OUT", help=argparse.SUPPRESS)
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


#: What ``bkgxr build`` imports of the dependencies the library is built on (xarray pulls in
#: pandas, dask.array scipy.fft, dask-histogram awkward), imported whole-process as a floor.
DEPENDENCY_IMPORTS = ("numpy", "xarray", "dask.array", "boost_histogram", "dask_histogram.core",
                      "astropy.io.fits", "astropy.table", "astropy.coordinates")


def whole_process(ctx: Context, args: argparse.Namespace, subset: bool) -> list[Row]:
    """Time whole processes, imports included: ``bkgxr --help``, ``bkgxr build``, the seed and floor scripts, the imports.

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
            "floor script (astropy loop, writes .npz)": [sys.executable, __file__, "--data", str(ctx.data_dir), *runs_arg, "--floor-once", f"{tmp}/floor.npz"],
            "imports of bkgxr's dependencies, nothing else": [sys.executable, "-c", f"import {', '.join(DEPENDENCY_IMPORTS)}"],
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
    if args.floor_once:  # the hand-written script of the issue: read, histogram, divide, save
        result = floor(ctx)
        np.savez(args.floor_once, counts=result.counts, rate=result.rate)
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
        print(f"  bkgxr build / floor script: {whole[1].median / whole[3].median:.2f} (issue 15's target: at most 1.5)")
        print(f"  dependency imports alone / floor script: {whole[4].median / whole[3].median:.2f} "
              "(what the fixed dependencies cost before bkgxr reads a file)")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
