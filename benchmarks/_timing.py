"""Timing and memory helpers shared by the benchmark scripts.

Wall and CPU seconds of calls in this process (:func:`time_calls`) or of
whole child processes (:func:`run_process`), peak memory from ``tracemalloc``
(:func:`traced_peak`) or sampled RSS of other processes (:class:`RssPeak`),
the page cache dropped for cold timings (:func:`drop_page_cache`), the cores
free right now (:func:`free_cores`) and one line describing the machine and
the versions (:func:`machine`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import threading
import time
import tracemalloc
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


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


def traced_peak(func: Callable[[], object]) -> int:
    """Peak bytes allocated (tracemalloc) during ``func()``."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def rss(pids: Sequence[int]) -> list[int]:
    """Resident set size (bytes) of each process, now."""
    import psutil

    return [psutil.Process(p).memory_info().rss for p in pids]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds spent so far by these processes together."""
    import psutil

    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


class RssPeak:
    """Sample the RSS of some processes in a thread while the ``with`` block runs.

    After the block, ``start`` is each process's RSS when it began, ``peak``
    the largest sample and ``delta`` peak minus start (bytes, one per pid).
    """

    def __init__(self, pids: Sequence[int], interval: float = 0.005) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids]
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start: list[int] = []
        self.peak: list[int] = []
        self.delta: list[int] = []

    def _sample(self) -> None:
        while not self._stop.is_set():
            for i, proc in enumerate(self._procs):
                self.peak[i] = max(self.peak[i], proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> Self:
        self.start = [p.memory_info().rss for p in self._procs]
        self.peak = list(self.start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.delta = [peak - start for peak, start in zip(self.peak, self.start)]


def mib(n: float) -> str:
    """Bytes as ``"12.3 MiB"``."""
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


def drop_page_cache(files: Sequence[Path]) -> str:
    """Drop the page cache; return how ("drop_caches", "fadvise") or "" if not possible.

    ``/proc/sys/vm/drop_caches`` (root) drops every clean page; without it,
    ``posix_fadvise(DONTNEED)`` evicts the given files.
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


def _spin(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def free_cores(seconds: float = 0.5) -> float:
    """Cores this script gets now: CPU seconds of one busy process per core over the wall time."""
    import concurrent.futures
    import multiprocessing

    n = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(n, mp_context=context) as pool:
        list(pool.map(_spin, [0.01] * n))  # start-up
        t0 = time.perf_counter()
        list(pool.map(_spin, [seconds] * n))
        return n * seconds / (time.perf_counter() - t0)


def machine() -> str:
    """Two lines: cores, CPU model and memory; versions of Python and the packages timed."""
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
