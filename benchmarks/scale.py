"""How bkgxr builds scale with the number of runs, on simulated stores (issue 5).

For each store size N (``--runs``), a store of N simulated off runs
(:func:`bkgxr.simulate.simulate_store`, ``--events-per-run`` mean events per
run, fixed seed and date) is written once into ``--cache`` and reused by
later runs of the script when one with the same parameters is there.

In-process builds
    ``open_store`` + ``select`` + ``build_cube(...)`` + ``bkgxr.cluster.compute``,
    each size and scheduler in a fresh child process: dask's local threaded
    scheduler ("threads", and "1 thread" for the second core's speed-up), and a ``LocalCluster`` of 1 and of 2 single-threaded
    worker processes (``bkgxr.cluster.connect``; start-up and one warm-up
    build of a few runs untimed). Wall time is the median of ``--repeats``
    builds. A thread samples with psutil, every 10 ms, the RSS of the child
    (the client, which also hosts the scheduler) and of each worker; the peak
    over the timed builds is printed. CPU seconds are those of the client and
    the workers together.
Whole process
    ``bkgxr build DATA --out FILE --quiet`` (default scheduler: threads) and
    ``--workers 2``, imports and writing included, at the smallest and the
    largest N, beside the single-core floors of ``benchmarks/peers.py``
    (imported from there): ``floor`` reads ENERGY/RA/DEC with
    ``astropy.io.fits`` (stdlib gzip), ``floor-raw`` with zlib and a hand FITS
    parse; both compute the offset in numpy and fill one
    ``np.histogram2d`` per run. The marginal cost per run is
    ``(T(N_max) - T(N_min)) / (N_max - N_min)``.

Every build and both floors must give identical counts in every bin at every
N where they ran; otherwise the script prints "counts DIFFER" and exits 1.
The figures are then compared with the targets of issues 5 and 15, each
printed as the measured ratio with "ok" or "MISS".

Defaults (``--runs 100,300,1000 --events-per-run 5000``) take about 4
minutes on a 2-core machine (the first time, plus about a minute to
simulate). The issue's sizes are one argument away::

    python benchmarks/scale.py --runs 100,1000,3000 --events-per-run 20000

(about 11 minutes, plus about 5 to simulate 1.6 GB of files into the cache
once.) Other processes sharing the cores slow the wall times: the load
average and the cores this script gets (probed with busy processes) are
printed at the start and at the end, and CPU seconds beside the wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from _timing import RssPeak, cpu_seconds, free_cores, machine, rss, run_process

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

#: Where simulated stores are kept between runs of the benchmark.
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bkgxr-bench"
#: DATE keyword of the simulated files, so that a cached store is byte-identical to a fresh one.
SIM_DATE = "2026-01-01"
#: Runs of the untimed warm-up build on a fresh scheduler (imports in the workers).
WARMUP_RUNS = 4
#: Seconds between two RSS samples.
SAMPLE_S = 0.01

# ------------------------------------------------------------------------------ stores


def store_dir(cache: Path, n_runs: int, events_per_run: int, seed: int) -> Path:
    """Folder of the cached store with these parameters."""
    return cache / f"runs{n_runs}-events{events_per_run}-seed{seed}"


def ensure_store(cache: Path, n_runs: int, events_per_run: int, seed: int, workers: int) -> tuple[Path, int, float | None]:
    """Return (folder, total events, seconds spent simulating or None if cached).

    A store counts as cached when its ``bench.json`` (written last) holds
    the same parameters; a folder without it is simulated again.
    """
    path = store_dir(cache, n_runs, events_per_run, seed)
    marker = path / "bench.json"
    params = {"n_runs": n_runs, "events_per_run": events_per_run, "seed": seed, "date": SIM_DATE}
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("params") == params:
            return path, int(saved["events"]), None
    from bkgxr.simulate import simulate_store

    print(f"simulating {n_runs} runs x {events_per_run} events into {path} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    sim = simulate_store(path, n_runs=n_runs, events_per_run=events_per_run, seed=seed, workers=workers,
                         date=SIM_DATE, overwrite=True)
    seconds = time.perf_counter() - t0
    events = int(sim.runs["EVENT_COUNT"].sum())
    marker.write_text(json.dumps({"params": params, "events": events}))
    return path, events, seconds


# ------------------------------------------------------------------------------ child: one build mode


def measure_mode(data_dir: Path, workers: int, repeats: int, save: Path) -> dict[str, Any]:
    """Time ``repeats`` builds of the whole store on one scheduler (0 workers: threads, -1: one thread).

    Saves the counts to ``save`` (.npy) and returns walls, CPU seconds, peak
    and idle RSS of the client and of each worker, start-up and graph size.
    """
    import dask
    import dask.system

    from bkgxr.cluster import compute, connect
    from bkgxr.cube import build_cube
    from bkgxr.io.store import open_store

    def build(n: int | None = None) -> tuple[Any, Any]:
        runs = open_store(data_dir).select()
        # the floors put a run's events in the band of its ZEN_PNT: the same job, comparable counts
        lazy = build_cube(runs if n is None else runs.iloc[:n], event_zenith=False)
        return lazy, compute(lazy)

    t0 = time.perf_counter()
    threads = 1 if workers < 0 else None  # dask's threaded scheduler on one thread
    with dask.config.set(num_workers=threads), connect(workers=max(workers, 0) or None, quiet=True) as client:
        startup = time.perf_counter() - t0 if client else 0.0
        build(WARMUP_RUNS)
        worker_pids = [pid for _, pid in sorted(client.run(os.getpid).items())] if client else []
        pids = [os.getpid(), *worker_pids]
        idle = rss(pids)
        walls, cpus, client_cpus = [], [], []
        with RssPeak(pids, interval=SAMPLE_S) as sampler:
            for _ in range(repeats):
                c0, client0, w0 = cpu_seconds(pids), cpu_seconds(pids[:1]), time.perf_counter()
                lazy, cube = build()
                walls.append(time.perf_counter() - w0)
                cpus.append(cpu_seconds(pids) - c0)
                client_cpus.append(cpu_seconds(pids[:1]) - client0)
    np.save(save, cube["counts"].values.astype(np.int64))
    return {"walls": walls, "cpus": cpus, "client_cpus": client_cpus, "peak": sampler.peak, "idle": idle, "startup": startup, "tasks": len(lazy.__dask_graph__()),
            "cores": threads or workers or dask.system.CPU_COUNT,
            "load": os.getloadavg()[0]}


# ------------------------------------------------------------------------------ child: floor


def floor_counts(data_dir: Path, reader: str) -> npt.NDArray[np.int64]:
    """The single-core floor: per run, read ENERGY/RA/DEC, offset in numpy, one ``np.histogram2d``."""
    read = {"astropy": peers.columns_astropy, "raw": peers.columns_raw}[reader]
    ctx = peers.Context(data_dir, peers.off_run_ids(data_dir, None))
    zenith_edges = peers.ZENITH_EDGES_DEG
    counts = np.zeros((zenith_edges.size - 1, peers.ENERGY_EDGES_TEV.size - 1, peers.OFFSET_EDGES_DEG.size - 1))
    for path, hdu, _, _, zenith, _ in peers.index_runs(ctx):
        band = int(np.searchsorted(zenith_edges, zenith, side="right")) - 1
        if not 0 <= band < counts.shape[0]:
            continue
        energy, ra, dec, ra0, dec0 = read(path, hdu)
        offset = peers.offset_deg(ra, dec, ra0, dec0)
        counts[band] += np.histogram2d(energy, offset, bins=(peers.ENERGY_EDGES_TEV, peers.OFFSET_EDGES_DEG))[0]
    return counts.astype(np.int64)


# ------------------------------------------------------------------------------ parent


@dataclass
class Build:
    """One scheduler at one store size, as measured by a child process."""

    n_runs: int
    events: int
    mode: str
    wall: float
    cpu: float
    client_cpu: float
    client_peak: int
    worker_peaks: list[int]
    worker_idle: list[int]
    startup: float
    tasks: int
    cores: int
    load: float

    @property
    def ms_per_run(self) -> float:
        return 1e3 * self.wall / self.n_runs


def mode_name(workers: int) -> str:
    return {0: "threads", -1: "1 thread"}.get(workers) or f"{workers} worker{'s' if workers > 1 else ''}"


def run_child(args: Sequence[str]) -> None:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


def bkgxr_command() -> list[str]:
    exe = Path(sys.executable).with_name("bkgxr")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "bkgxr.cli"]


#: The whole-process bkgxr commands, as labelled in the table.
BKGXR_COMMANDS = ("bkgxr build", "bkgxr build --zenith-model bands", "bkgxr build --zenith-model bands --workers 2")


def whole_process(stores: dict[int, tuple[Path, int]], sizes: list[int], repeats: int, tmp: Path) -> dict[str, dict[int, float]]:
    """Median wall seconds of whole processes at the smallest and largest N; counts saved under ``tmp``."""
    times: dict[str, dict[int, float]] = {}
    for n in (sizes[0], sizes[-1]):
        path = stores[n][0]
        build = [*bkgxr_command(), "build", str(path), "--out", str(tmp / "m.fits"), "--quiet", "--date", SIM_DATE]
        commands = {
            "bkgxr build": build,
            "bkgxr build --zenith-model bands": [*build, "--zenith-model", "bands"],
            "bkgxr build --zenith-model bands --workers 2": [*build, "--zenith-model", "bands", "--workers", "2"],
            "floor (astropy)": [sys.executable, __file__, "--floor-once", str(path), "--reader", "astropy",
                                "--save", str(tmp / f"floor-{n}.npy")],
            "floor-raw (zlib)": [sys.executable, __file__, "--floor-once", str(path), "--reader", "raw",
                                 "--save", str(tmp / f"floor-raw-{n}.npy")],
        }
        for name, cmd in commands.items():
            print(f"timing whole process: {name}, {n} runs ...", file=sys.stderr, flush=True)
            times.setdefault(name, {})[n] = statistics.median(run_process(cmd)[0] for _ in range(repeats))
    return times


def check_counts(tmp: Path, sizes: list[int], modes: list[str], floors: bool) -> tuple[bool, str]:
    """Compare the saved counts of every mode (and floor) with threads' at each N."""
    problems, compared = [], set()
    for n in sizes:
        ref = np.load(tmp / f"counts-{n}-threads.npy")
        others = [f"counts-{n}-{m}.npy" for m in modes if m != "threads"]
        if floors and n in (sizes[0], sizes[-1]):
            others += [f"floor-{n}.npy", f"floor-raw-{n}.npy"]
        for name in others:
            counts = np.load(tmp / name)
            label = name.removeprefix(f"counts-{n}-").removesuffix(".npy").replace(f"-{n}", "")
            compared.add(label)
            if not np.array_equal(counts, ref):
                problems.append(f"counts DIFFER at N={n}: {label} vs threads in {np.count_nonzero(counts != ref)} bins "
                                f"(totals {int(counts.sum())} vs {int(ref.sum())})")
    if problems:
        return False, "\n".join(problems)
    return True, f"counts agree: {', '.join(['threads', *sorted(compared)])} identical in every bin at every N compared"


def ratio_line(label: str, value: float, target: str, ok: bool, detail: str = "") -> str:
    return f"  {label:<70} {value:>6.2f}  (target {target}): {'ok' if ok else 'MISS'}{'  ' + detail if detail else ''}"


def report(builds: list[Build], whole: dict[str, dict[int, float]], sizes: list[int], modes: list[str]) -> list[str]:
    """The table and the ratios against the targets of issue 5."""
    by = {(b.mode, b.n_runs): b for b in builds}
    lo, hi = sizes[0], sizes[-1]
    head = (f"{'runs':>6} {'events':>10} {'scheduler':<10} {'wall s':>8} {'ms/run':>7} {'vs N=' + str(lo):>8} "
            f"{'Mev/s/core':>10} {'cpu s':>7} {'client':>7} {'load':>5} {'client MiB':>10}  worker peak MiB (idle)")
    lines = [head, "-" * len(head)]
    for mode in modes:
        for n in sizes:
            b = by[mode, n]
            workers = ", ".join(f"{p / 2**20:.0f} ({i / 2**20:.0f})" for p, i in zip(b.worker_peaks, b.worker_idle)) or "-"
            lines.append(
                f"{n:>6} {b.events:>10} {mode:<10} {b.wall:>8.2f} {b.ms_per_run:>7.2f} {b.ms_per_run / by[mode, lo].ms_per_run:>8.2f} "
                f"{b.events / b.wall / b.cores / 1e6:>10.2f} {b.cpu:>7.2f} {b.client_cpu:>7.2f} {b.load:>5.1f} {b.client_peak / 2**20:>10.0f}  {workers}"
            )
    lines.append("(wall: median of the builds; cpu s: client + workers, client: of the client alone (with the scheduler); load: 1-min load average after the builds; Mev/s/core: events / wall / cores, cores = "
                 f"workers, or {by['threads', lo].cores} threads; RSS peaks over the timed builds, idle before them)")
    for mode in modes:
        if mode.endswith(("worker", "workers")):
            lines.append(f"{mode}: LocalCluster start-up {statistics.median(by[mode, n].startup for n in sizes):.2f} s "
                         f"(median, not in the wall times)")
    lines.append(f"graph: {by['threads', hi].tasks} tasks for {hi} runs ({by['threads', hi].tasks / hi:.1f} per run)")
    lines.append("marginal cost per run in process, (T(N_max) - T(N_min)) / (N_max - N_min): " + ", ".join(
        f"{m} {1e3 * (by[m, hi].wall - by[m, lo].wall) / (hi - lo):.2f} ms" for m in modes))

    if whole:
        lines += ["", "whole process (imports and writing included), median wall s:",
                  f"  {'command':<46} {f'N={lo}':>9} {f'N={hi}':>9} {'marginal ms/run':>16}"]
        marginal = {}
        for name, t in whole.items():
            marginal[name] = 1e3 * (t[hi] - t[lo]) / (hi - lo)
            lines.append(f"  {name:<46} {t[lo]:>9.2f} {t[hi]:>9.2f} {marginal[name]:>16.2f}")
        lines.append("  (bkgxr build defaults to the kernel zenith model: one BKG_2D per run is written; "
                     "'bands' writes one per zenith band, as the floors compute)")
        for name in BKGXR_COMMANDS:
            lines.append(f"  {name} / floor (astropy): {marginal[name] / marginal['floor (astropy)']:.2f}, "
                         f"/ floor-raw (zlib): {marginal[name] / marginal['floor-raw (zlib)']:.2f} (marginal cost per run)")

    lines += ["", f"targets of issue 5 (N_min={lo}, N_max={hi}):"]
    for mode in modes:
        if not mode.endswith(("worker", "workers")):
            continue
        peak = max(by[mode, hi].worker_peaks) / max(by[mode, lo].worker_peaks)
        grow = (max(p - i for p, i in zip(by[mode, hi].worker_peaks, by[mode, hi].worker_idle)) / 2**20,
                max(p - i for p, i in zip(by[mode, lo].worker_peaks, by[mode, lo].worker_idle)) / 2**20)
        lines.append(ratio_line(f"peak worker RSS N_max / N_min, {mode}", peak, "<= 1.30", peak <= 1.3,
                                f"(above idle: {grow[0]:.0f} vs {grow[1]:.0f} MiB)"))
    client = by["threads", hi].client_peak / by["threads", lo].client_peak
    lines.append(ratio_line("peak RSS N_max / N_min, threads (one process)", client, "<= 1.30", client <= 1.3))
    for mode in modes:
        per_run = [by[mode, n].ms_per_run for n in sizes]
        spread = max(per_run) / min(per_run)
        lines.append(ratio_line(f"time per run max / min over N, {mode}", spread, "<= 1.20", spread <= 1.2,
                                "(ms/run " + " -> ".join(f"{v:.2f}" for v in per_run) + ")"))
    if {"1 worker", "2 workers"} <= set(modes):
        for n in sizes:
            speedup = by["1 worker", n].wall / by["2 workers", n].wall
            lines.append(ratio_line(f"throughput 2 workers / 1 worker, N={n}", speedup, ">= 1.70", speedup >= 1.7))
    if "1 thread" in modes:
        for n in sizes:
            speedup = by["1 thread", n].wall / by["threads", n].wall
            lines.append(ratio_line(f"in process, {by['threads', n].cores} threads / 1 thread throughput, N={n}", speedup,
                                    ">= 1.60", speedup >= 1.6))
    if whole:
        floor = marginal["floor (astropy)"]
        for name in BKGXR_COMMANDS:
            label = f"marginal cost per run, {name} / floor"
            if min(marginal[name], floor) <= 0:  # at tiny N, start-up noise exceeds the per-run cost
                lines.append(f"  {label:<70} {'n/a':>6}  (target <= 0.60): a marginal cost <= 0, N too small or too noisy")
            else:
                lines.append(ratio_line(label, marginal[name] / floor, "<= 0.60", marginal[name] / floor <= 0.6))
        name = "bkgxr build"
        if min(marginal[name], floor) > 0:  # issue 15: the default recipe near the hardware limit
            lines.append(ratio_line("issue 15: marginal cost per run, bkgxr build / floor (astropy)", marginal[name] / floor,
                                    "<= 0.35", marginal[name] / floor <= 0.35))
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="100,300,1000", help="store sizes N, comma-separated (default: 100,300,1000; issue: 100,1000,3000)")
    p.add_argument("--events-per-run", type=int, default=5000, help="mean events per run (default: 5000; issue: 20000)")
    p.add_argument("--workers", default="1,2", help="LocalCluster sizes, comma-separated (default: 1,2)")
    p.add_argument("--repeats", type=int, default=1, help="timed builds per size and scheduler, median reported (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default: 0)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"folder of the cached stores (default: {DEFAULT_CACHE})")
    p.add_argument("--sim-workers", type=int, default=os.cpu_count() or 1, help="processes simulating a store (default: all cores)")
    p.add_argument("--no-whole-process", action="store_true", help="skip the whole-process timings and the floors")
    for hidden in ("--measure", "--floor-once", "--save", "--reader"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--measure-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(v) for v in args.runs.split(",")})
        args.cluster = sorted({int(v) for v in args.workers.split(",") if v.strip()})
    except ValueError:
        p.error("--runs and --workers take comma-separated integers")
    if len(args.sizes) < 2 or min(args.sizes) < 1 or any(w < 1 for w in args.cluster) or args.repeats < 1:
        p.error("--runs needs at least two sizes >= 1, --workers sizes >= 1 and --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:  # child: one scheduler on one store
        result = measure_mode(Path(args.measure), args.measure_workers, args.repeats, Path(args.save))
        Path(args.save).with_suffix(".json").write_text(json.dumps(result))
        return 0
    if args.floor_once:  # child: the floor as a whole process
        np.save(args.save, floor_counts(Path(args.floor_once), args.reader))
        return 0

    print(machine())
    print(f"load average at start: {os.getloadavg()[0]:.2f}; cores free: {free_cores():.2f} of {os.cpu_count()} "
          "(busy processes' CPU seconds / wall; below the core count, other processes share the cores)")
    stores: dict[int, tuple[Path, int]] = {}
    for n in args.sizes:
        path, events, seconds = ensure_store(args.cache, n, args.events_per_run, args.seed, args.sim_workers)
        stores[n] = (path, events)
        how = "cached" if seconds is None else f"simulated in {seconds:.1f} s"
        print(f"store N={n}: {events} events ({events / n:.0f} per run), {path} ({how})")
    for path, _ in stores.values():  # warm file cache from here on
        for f in path.rglob("*.fits.gz"):
            f.read_bytes()
    print(f"file cache: warm (every store read once); repeats: {args.repeats}")

    modes = ["threads", "1 thread", *(mode_name(w) for w in args.cluster)]
    builds = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for workers in [0, -1, *args.cluster]:
            mode = mode_name(workers)
            for n in args.sizes:
                print(f"timing {mode}, {n} runs ...", file=sys.stderr, flush=True)
                save = tmp / f"counts-{n}-{mode}.npy"
                run_child(["--measure", str(stores[n][0]), "--measure-workers", str(workers),
                           "--repeats", str(args.repeats), "--save", str(save), "--runs", args.runs])
                r = json.loads(save.with_suffix(".json").read_text())
                builds.append(Build(n, stores[n][1], mode, statistics.median(r["walls"]), statistics.median(r["cpus"]), statistics.median(r["client_cpus"]),
                                    r["peak"][0], r["peak"][1:], r["idle"][1:], r["startup"], r["tasks"], r["cores"], r["load"]))
        whole = {} if args.no_whole_process else whole_process(stores, args.sizes, args.repeats, tmp)
        agree, agreement = check_counts(tmp, args.sizes, modes, floors=bool(whole))
    print(f"load average at end: {os.getloadavg()[0]:.2f}; cores free: {free_cores():.2f} of {os.cpu_count()}\n")
    print("\n".join(report(builds, whole, args.sizes, modes)))
    print(agreement)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
