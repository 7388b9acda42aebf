"""Where the lazy cube is computed: the local scheduler or a dask.distributed cluster.

The API never starts a cluster by itself: :func:`compute` uses the active
:class:`distributed.Client` when there is one and dask's local threaded
scheduler otherwise. :func:`connect` starts a ``LocalCluster`` or connects to
a scheduler address when asked to (the CLI's ``--workers``/``--scheduler``).
``distributed`` is imported only here and only when used.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterator

    from distributed import Client

T = TypeVar("T")


def active_client() -> Client | None:
    """Return the active ``distributed.Client``, or None (without importing distributed)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        client: Client = default_client()  # type: ignore[no-untyped-call]
        return client
    except ValueError:
        return None


@contextmanager
def connect(
    *, workers: int | None = None, scheduler: str | None = None, quiet: bool = False, silence_logs: bool = False
) -> Iterator[Client | None]:
    """Start or join a dask cluster for the duration of the block.

    Parameters
    ----------
    workers : int, optional
        Start a ``LocalCluster`` of this many single-threaded worker processes.
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://host:8786``. Its workers
        must be able to read the run files at the paths of the index tables.
    quiet : bool
        Do not print the dashboard link.
    silence_logs : bool
        Keep distributed's log records below CRITICAL quiet in this process
        and in the workers of a ``LocalCluster`` (a failing task's traceback,
        cancelled tasks); the error itself is still raised. The workers of a
        running scheduler log where they were started.

    Yields
    ------
    distributed.Client or None
        None when neither option is given: the local threaded scheduler is used.

    Raises
    ------
    ValueError
        If both options are given or ``workers`` is not positive.
    """
    if workers is not None and scheduler is not None:
        raise ValueError("give either workers or a scheduler address, not both")
    if workers is None and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    # distributed's Client and LocalCluster constructors are unannotated
    level = logging.CRITICAL if silence_logs else logging.WARNING
    with ExitStack() as stack:
        if silence_logs:
            logger = logging.getLogger("distributed")
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(level)
        if workers is not None:
            if workers < 1:
                raise ValueError(f"workers must be >= 1, got {workers}")
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=level)  # type: ignore[no-untyped-call]
            )
            client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        else:
            client = stack.enter_context(Client(scheduler))  # type: ignore[no-untyped-call]
        if not quiet:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        yield client


def compute(obj: T, *, progress: bool = False) -> T:
    """Compute a dask-backed object (e.g. the lazy cube) where it belongs.

    Uses the active ``distributed.Client`` if there is one (with
    ``distributed.progress`` when ``progress``), else dask's local threaded
    scheduler (with ``dask.diagnostics.ProgressBar``).
    """
    client = active_client()
    if client is None:
        # a callable scheduler: naming one ("threads") makes dask import distributed
        from dask.threaded import get

        if not progress:
            return obj.compute(scheduler=get)  # type: ignore[attr-defined, no-any-return]
        from dask.diagnostics.progress import ProgressBar

        with ProgressBar(out=sys.stderr):  # type: ignore[no-untyped-call]
            return obj.compute(scheduler=get)  # type: ignore[attr-defined, no-any-return]
    future: Any = client.compute(obj)  # type: ignore[no-untyped-call]
    if progress:
        from distributed import progress as show_progress

        show_progress(future)  # type: ignore[no-untyped-call]
        print(file=sys.stderr)
    return future.result()  # type: ignore[no-any-return]
