"""The pointing's zenith over a run: the track a recipe with ``track=True`` follows.

A run lasts ~28 min and its zenith moves by up to several degrees. :func:`zenith_tracks`
returns each run's pointing zenith at :data:`TRACK_NODES` times, the midpoints of equal
slices of [TSTART, TSTOP], from one astropy evaluation for all runs
(:func:`bkgxr.io.events.index_node_maps`, shared with the 3D event reads) and numpy for the rest. A run without the times or the
observatory (obs-index header GEOLON/GEOLAT, MJDREF) keeps its ``ZEN_PNT`` at every node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .fov import az_alt_deg, location_of, reference_time
from .io.events import index_node_maps

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    import pandas as pd

    from .fov import NodeMaps

#: Times per run at which the track is sampled (equal slices of the run, at their midpoints).
TRACK_NODES = 7


def track_times(tstart_s: npt.ArrayLike, tstop_s: npt.ArrayLike, n_nodes: int = TRACK_NODES) -> npt.NDArray[np.float64]:
    """Return the midpoints of ``n_nodes`` equal slices of each run (s). Shape: (n_runs, n_nodes)."""
    start, stop = np.asarray(tstart_s, dtype=np.float64), np.asarray(tstop_s, dtype=np.float64)
    fraction = (np.arange(n_nodes) + 0.5) / n_nodes
    return np.asarray(start[:, None] + fraction[None, :] * (stop - start)[:, None], dtype=np.float64)


def zenith_tracks(
    runs: pd.DataFrame, *, n_nodes: int = TRACK_NODES, nodes: Sequence[NodeMaps | None] | None = None
) -> npt.NDArray[np.float64]:
    """Return each run's pointing zenith (deg) at its track times.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table of :meth:`bkgxr.Store.select` (RA_PNT, DEC_PNT, ZEN_PNT, TSTART,
        TSTOP; the obs-index header in ``attrs["OBS_META"]``).
    n_nodes : int
        Times per run.
    nodes : sequence of NodeMaps or None, optional
        Each run's node maps (:func:`bkgxr.io.events.index_node_maps`); computed
        here, in one astropy call, if omitted.

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, n_nodes); ``ZEN_PNT`` at every node of a run without
        finite TSTART <= TSTOP, or of every run when the header lacks MJDREF or
        the observatory.
    """
    zenith = np.repeat(runs["ZEN_PNT"].to_numpy(np.float64)[:, None], n_nodes, axis=1)
    meta = runs.attrs.get("OBS_META", {})
    if "TSTART" not in runs or "TSTOP" not in runs:
        return zenith
    try:
        reference, location = reference_time(meta), location_of(meta)
    except (KeyError, ValueError, TypeError):
        return zenith
    maps = index_node_maps(runs) if nodes is None else nodes  # None for a run without finite times
    start, stop = runs["TSTART"].to_numpy(np.float64), runs["TSTOP"].to_numpy(np.float64)
    times = track_times(start, stop, n_nodes)
    ra, dec = runs["RA_PNT"].to_numpy(np.float64), runs["DEC_PNT"].to_numpy(np.float64)
    for i, run_nodes in enumerate(maps):
        if run_nodes is not None:
            _, alt = az_alt_deg(ra[i], dec[i], times[i], reference=reference, location=location, nodes=run_nodes)
            zenith[i] = 90.0 - alt
    return zenith
