"""Fill the histograms of runs: one task per batch of runs, each run read in bounded blocks.

A task reads the runs of its batch one after the other, each a block of rows
at a time (:func:`bkgxr.io.events.iter_run_rows`), and fills boost
histograms with every block before the next is read: memory per task is one
block plus the histograms, whatever a file's size. It returns the batch's
histogram, which dask-histogram tree-reduces into the cube's counts, and each
run's own counts for the recipes. Batching keeps the graph at O(n_runs /
batch) tasks, so scheduler overhead and memory stay flat to thousands of runs.
"""

from __future__ import annotations

import operator
import uuid
from typing import TYPE_CHECKING, Any

import boost_histogram as bh
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph
from dask_histogram.core import PartitionedHistogram

from .exceptions import InvalidRunError
from .io._rawfits import BLOCK_BYTES
from .io.events import iter_run_rows
from .masking import run_kept_fraction

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy.typing as npt

    from .axes import Binning
    from .io.events import RunRead

#: Most runs in one task: large enough to amortise per-task overhead (~1 ms on a cluster).
MAX_BATCH_RUNS = 50
#: What reading a run costs beyond its events, in events: its headers, checks and
#: generators (~0.7 ms) against ~0.1 us per event (5,000-event simulated runs).
RUN_COST_EVENTS = 7000
#: Fewest tasks a build is split into (runs permitting), so that every core of a
#: machine or small cluster has work and the progress bar moves.
MIN_BATCHES = 32


def batch_bounds(
    n_runs: int,
    *,
    events: npt.ArrayLike | None = None,
    max_runs: int = MAX_BATCH_RUNS,
    min_batches: int = MIN_BATCHES,
) -> list[tuple[int, int]]:
    """Return ``(start, stop)`` of consecutive batches covering ``n_runs`` runs.

    There are at least ``min(n_runs, min_batches)`` batches and none holds
    more than ``max_runs`` runs. Without ``events`` batches differ in size by
    at most one run. With each run's event count (e.g. the obs-index's
    EVENT_COUNT; NaN where unknown: the median of the others) the runs are
    cut where the running cost, events plus :data:`RUN_COST_EVENTS` per run,
    crosses equal shares of the total, so that a batch of large runs holds
    fewer of them; a batch then costs at most a share plus one run.
    """
    n_batches = max(min(n_runs, min_batches), -(-n_runs // max_runs))
    if n_runs == 0:
        return []
    if events is None:
        edges = np.linspace(0, n_runs, n_batches + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    count = np.asarray(events, dtype=np.float64)
    if count.shape != (n_runs,):
        raise ValueError(f"events must hold one count per run ({n_runs}), got shape {count.shape}")
    known = np.isfinite(count) & (count >= 0)
    cost = np.where(known, count, np.median(count[known]) if known.any() else 0.0) + RUN_COST_EVENTS
    done = np.cumsum(cost)
    while True:  # more shares while one would hold more than max_runs runs
        # a run goes to the share its cost's midpoint falls in
        share = np.minimum((done - cost / 2) * n_batches // done[-1], n_batches - 1)
        edges = np.unique(np.concatenate([[0], np.flatnonzero(np.diff(share)) + 1, [n_runs]]))
        longest = int(np.diff(edges).max())
        if longest <= max_runs:
            break
        n_batches = -(-n_batches * longest // max_runs)
    bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    while len(bounds) < min(n_runs, min_batches):  # a few huge runs took whole shares: halve the longest batches
        i = max(range(len(bounds)), key=lambda k: bounds[k][1] - bounds[k][0])
        lo, hi = bounds[i]
        bounds[i:i + 1] = [(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)]
    return bounds


def fill_runs(
    reads: Sequence[RunRead | None],
    histref: bh.Histogram[bh.storage.Int64],
    skip_bad: bool = False,
    block_bytes: int = BLOCK_BYTES,
    reasons: Sequence[str] | None = None,
    by_band: bool = False,
    binning: Binning | None = None,
) -> tuple[
    bh.Histogram[bh.storage.Int64], npt.NDArray[np.int64], npt.NDArray[np.object_], npt.NDArray[np.int64] | None,
    npt.NDArray[np.float64],
]:
    """Fill the histograms of a batch of runs, each read in bounded blocks, and find what each keeps of the FoV.

    Parameters
    ----------
    reads : sequence of RunRead or None
        The runs of the batch; None for a run not read (no counts, no error).
    histref : boost_histogram.Histogram
        Empty histogram with the cube's axes (zenith, energy, FoV...).
    skip_bad : bool
        A run that fails to read gets no counts and its error message,
        instead of raising :class:`~bkgxr.InvalidRunError`.
    block_bytes : int
        Bytes of EVENTS rows read at once.
    reasons : sequence of str, optional
        Why each run is not read ('' if it is), returned as its error.
    by_band : bool
        Also return each run's counts per zenith band.
    binning : Binning, optional
        The cube's binning, for the FoV fraction each run with exclusion
        regions keeps (:func:`bkgxr.masking.run_kept_fraction`); without it
        every fraction is 1.

    Returns
    -------
    total : boost_histogram.Histogram
        Counts of all runs of the batch read.
    run_counts : numpy.ndarray
        Each run's counts summed over zenith, including events whose zenith
        lies outside the bands. Shape: (n_reads, n_energy, *fov shape).
    errors : numpy.ndarray
        Shape: (n_reads,), object: why each run was skipped, '' otherwise.
    band_counts : numpy.ndarray or None
        With ``by_band``, each run's counts per zenith band. Shape: (n_reads, n_zenith, n_energy, *fov shape).
    kept : numpy.ndarray
        Each run's kept FoV fraction, 1 for a run not read, skipped or without
        regions. Shape: (n_reads, *fov shape).
    """
    total, run = histref.copy(), histref.copy()
    band_counts = np.zeros((len(reads), *histref.shape), dtype=np.int64) if by_band else None
    run_counts = np.zeros((len(reads), *histref.shape[1:]), dtype=np.int64)
    errors = np.array([""] * len(reads) if reasons is None else list(reasons), dtype=object)
    kept = np.ones((len(reads), *histref.shape[2:]))
    inner = (slice(1, -1),) * (len(histref.axes) - 1)  # without the energy and FoV flow bins
    for i, read in enumerate(reads):
        if read is None:
            continue
        run.reset()
        try:
            headers: list[Mapping[str, Any]] = []
            for columns in iter_run_rows(read, block_bytes=block_bytes, headers=headers):
                run.fill(*columns)
            if binning is not None and read.exclude is not None:
                kept[i] = run_kept_fraction(read, binning, headers[0] if headers else None)
        except InvalidRunError as err:
            if not skip_bad:
                raise
            errors[i] = err.reason
            continue
        # all of the run's events, whichever zenith band (or none) its track was in at their time
        run_counts[i] = run.values(flow=True).sum(axis=0)[inner]
        if band_counts is not None:
            band_counts[i] = run.values()
        total += run
    return total, run_counts, errors, band_counts, kept


def histogram_runs(
    reads: Sequence[RunRead | None],
    binning: Binning,
    *,
    skip_bad: bool = False,
    reasons: Sequence[str] | None = None,
    by_band: bool = False,
    events: npt.ArrayLike | None = None,
) -> tuple[da.Array, da.Array, da.Array, da.Array | None, da.Array]:
    """Return lazy counts of ``reads``: the cube's, each run's, why runs were skipped, and the FoV each keeps.

    Parameters
    ----------
    reads : sequence of RunRead or None
        One entry per run of the run table (None: not read), see
        :func:`bkgxr.io.events.run_reads`.
    binning : Binning
    skip_bad, reasons, by_band
        See :func:`fill_runs`.
    events : array-like, optional
        Each run's event count (NaN where unknown), to size the batches (:func:`batch_bounds`).

    Returns
    -------
    counts : dask.array.Array
        Shape: ``binning.shape`` (zenith, energy, *fov), int64.
    run_counts : dask.array.Array
        Shape: (n_runs, n_energy, *fov shape), int64.
    errors : dask.array.Array
        Shape: (n_runs,), object: why each run was skipped or not read ('' if used).
    band_counts : dask.array.Array or None
        With ``by_band``: shape (n_runs, n_zenith, n_energy, *fov shape), int64.
    kept : dask.array.Array
        Each run's FoV fraction outside its exclusion regions (``RunRead.exclude``),
        computed in its read task. Shape: (n_runs, *fov shape), float64.
    """
    if not reads:
        raise ValueError("histogram_runs needs at least one run")
    histref = bh.Histogram(*binning.boost_axes(), storage=bh.storage.Int64())
    bounds = batch_bounds(len(reads), events=events)
    reasons = [""] * len(reads) if reasons is None else list(reasons)
    token = uuid.uuid4().hex  # a fresh name per graph: hashing every run's reads costs ~0.1 ms per run
    fill, hist, counts_name, errors_name, band_name, kept_name = (
        f"bkgxr-{what}-{token}" for what in ("fill", "fill-hist", "run-counts", "run-error", "run-band-counts", "run-kept")
    )
    zeros = (0,) * (len(binning.shape) - 1)
    layers: dict[str, dict[Any, Any]] = {
        fill: {(fill, b): (fill_runs, list(reads[lo:hi]), histref, skip_bad, BLOCK_BYTES, reasons[lo:hi], by_band, binning)
               for b, (lo, hi) in enumerate(bounds)},
        hist: {(hist, b): (operator.getitem, (fill, b), 0) for b in range(len(bounds))},
        counts_name: {(counts_name, b, *zeros): (operator.getitem, (fill, b), 1) for b in range(len(bounds))},
        errors_name: {(errors_name, b): (operator.getitem, (fill, b), 2) for b in range(len(bounds))},
        kept_name: {(kept_name, b, *zeros[1:]): (operator.getitem, (fill, b), 4) for b in range(len(bounds))},
    }
    if by_band:
        layers[band_name] = {(band_name, b, *zeros, 0): (operator.getitem, (fill, b), 3) for b in range(len(bounds))}
    graph = HighLevelGraph(layers, {name: (set() if name == fill else {fill}) for name in layers})
    sizes = tuple(hi - lo for lo, hi in bounds)
    counts = PartitionedHistogram(graph, hist, len(bounds), histref).collapse().to_dask_array(flow=False)[0]
    # dask.array.Array's constructor is unannotated
    run_counts = da.Array(graph, counts_name, chunks=(sizes, *((n,) for n in binning.shape[1:])), dtype=np.int64)  # type: ignore[no-untyped-call]
    errors = da.Array(graph, errors_name, chunks=(sizes,), dtype=object)  # type: ignore[no-untyped-call]
    band_counts = None if not by_band else da.Array(  # type: ignore[no-untyped-call]
        graph, band_name, chunks=(sizes, *((n,) for n in binning.shape)), dtype=np.int64
    )
    kept = da.Array(graph, kept_name, chunks=(sizes, *((n,) for n in binning.shape[2:])), dtype=np.float64)  # type: ignore[no-untyped-call]
    return counts, run_counts, errors, band_counts, kept
