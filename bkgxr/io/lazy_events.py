"""The events of runs as one lazy dask array, one chunk per run, for exploring them.

A chunk holds a whole run's events in memory (:func:`bkgxr.io.events.read_run`);
:func:`bkgxr.build_cube` instead reads and histograms runs in bounded blocks
(:mod:`bkgxr.fill`). The array's columns and chunks can be histogrammed with
dask-histogram directly.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..exceptions import InvalidRunError
from .events import RunRead, read_run, run_reads

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import pandas as pd

    from ..altaz_maps import NodeMaps
    from ..exclusion import ExclusionRegions


def _read_or_skip(run: RunRead) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_]]:
    """Run :func:`read_run`, turning an InvalidRunError into no events and its message."""
    try:
        return read_run(run), np.array([""], dtype=object)
    except InvalidRunError as err:
        return np.empty((0, run.n_dims)), np.array([err.reason], dtype=object)


def open_events(
    runs: pd.DataFrame,
    *,
    skip_bad: bool = False,
    fov: str = "offset",
    exclude: Sequence[ExclusionRegions | None] | None = None,
    nodes: Sequence[NodeMaps | None] | None = None,
) -> tuple[da.Array, da.Array]:
    """Return the events of ``runs`` as a lazy dask array, one chunk per run.

    For exploring events (e.g. histogramming them with dask-histogram); a
    chunk holds a whole run in memory. :func:`bkgxr.build_cube` instead
    reads and histograms runs in bounded blocks (:mod:`bkgxr.fill`).

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table from :meth:`bkgxr.Store.select` (see :func:`run_reads`).
    skip_bad : bool
        A run that fails to read contributes no events and its error message
        instead of raising :class:`~bkgxr.InvalidRunError` at compute time.
    fov, exclude, nodes
        See :func:`run_reads`.

    Returns
    -------
    events : dask.array.Array
        Shape: (n_events, 3 or 4) with unknown row chunk sizes; columns in
        :data:`bkgxr.axes.DIMS` or :data:`bkgxr.axes.DIMS_3D` order.
    errors : dask.array.Array
        Shape: (n_runs,), object: '' for a run read, else why it was skipped.
        Computed by the same tasks as ``events``: each file is read once.
    """
    reads = run_reads(runs, fov=fov, exclude=exclude, nodes=nodes)
    if not reads:
        raise ValueError("open_events needs at least one run")
    token = tokenize(reads, skip_bad)
    read, name, status = f"bkgxr-read-run-{token}", f"bkgxr-events-{token}", f"bkgxr-run-error-{token}"
    if not skip_bad:  # one task per run; errors raise, the status is all ''
        layer = {(name, i, 0): (read_run, run) for i, run in enumerate(reads)}
        layers: dict[str, Any] = {name: layer, status: {(status, i): (np.array, [""], object) for i in range(len(reads))}}
        graph = HighLevelGraph(layers, {name: set(), status: set()})
    else:
        layers = {
            read: {(read, i): (_read_or_skip, run) for i, run in enumerate(reads)},
            name: {(name, i, 0): (operator.getitem, (read, i), 0) for i in range(len(reads))},
            status: {(status, i): (operator.getitem, (read, i), 1) for i in range(len(reads))},
        }
        graph = HighLevelGraph(layers, {read: set(), name: {read}, status: {read}})
    # dask.array.Array's constructor is unannotated
    n_dims = reads[0].n_dims
    events = da.Array(graph, name, chunks=((np.nan,) * len(reads), (n_dims,)), dtype=np.float64)  # type: ignore[no-untyped-call]
    errors = da.Array(graph, status, chunks=((1,) * len(reads),), dtype=object)  # type: ignore[no-untyped-call]
    return events, errors
