"""bkgxr.nodes's averaging as it was before it worked energy-first in cache-sized chunks (issue 15).

A copy of ``_segment_means``, ``_averages_of_logs``, ``_chunked_averages`` and ``to_node_values``
as they were, computing the FoV interpolation first over all models of a chunk of 2**23 values;
the grid, the checks and the zero handling are bkgxr.nodes's (unchanged). tests/test_nodes_speed.py
checks that the rewritten functions give these results.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bkgxr.nodes import (
    _LOG_MAX,
    _OMEGA,
    TINY,
    _checked,
    _filled_logs,
    _Grid,
    _grid,
    _stranded,
)

_CHUNK_VALUES = 2**23  # values of one intermediate array, as it was


def _segment_means(y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Return the mean of e^y over each segment between consecutive points of the last axis, y linear on each.

    That is (e^b − e^a) / (b − a) for the segment's end values a, b; the trapezoid (e^a + e^b) / 2
    where |b − a| < 1e-4 (relative error below 1e-9). ``y`` is clipped at 700 so that e^y stays finite.
    """
    np.minimum(y, _LOG_MAX, out=y)
    values = np.exp(y)
    dy = y[..., 1:] - y[..., :-1]
    dv = values[..., 1:] - values[..., :-1]
    small = np.abs(dy) < 1e-4
    return np.where(small, values[..., :-1] + 0.5 * dv, dv / np.where(small, 1.0, dy))


def _averages_of_logs(log_nodes: npt.NDArray[np.float64], grid: _Grid) -> npt.NDArray[np.float64]:
    """Return the bin averages of gammapy's interpolant of ``exp(log_nodes)``.

    Shape: (n_models, n_energy, *fov bins) in and out. The log values are interpolated onto
    the FoV sampling points, then onto the energy edges and centres (last axis, contiguous).
    """
    y = log_nodes
    for axis in grid.fov:  # contracts the first FoV axis left, appends its points: (m, e, *points)
        y = np.tensordot(y, axis.interp, axes=([2], [1]))
    y = np.tensordot(y, grid.energy_interp, axes=([1], [1]))  # (m, *points, 2 n_energy + 1)
    y += grid.energy_points  # E dE = E_0 e^u du: integrate in u = ln(E / E_0)
    segments = np.diff(grid.energy_points) * _segment_means(y)  # exact power-law integral of each half bin
    energy = segments.reshape(*segments.shape[:-1], -1, 2).sum(axis=-1) / grid.energy_widths
    for axis in grid.fov:  # contracts the first FoV points left, appends its bins: (m, e, *bins) at the end
        energy = np.tensordot(energy, axis.average, axes=([1], [1]))
    return energy  # type: ignore[no-any-return]


def reference_chunked_averages(nodes: npt.NDArray[np.float64], grid: _Grid) -> npt.NDArray[np.float64]:
    """:func:`_averages_of_logs` of the log nodes as gammapy sees them, over the leading dims in chunks of bounded memory."""
    n_fov = len(grid.fov)
    logs = _filled_logs(nodes, n_fov) if grid.fill_missing else np.log(np.maximum(nodes, TINY))
    per_model = grid.energy_interp.shape[0] * int(np.prod([a.interp.shape[0] for a in grid.fov]))
    flat = logs.reshape(-1, *logs.shape[-n_fov - 1 :])
    step = max(1, _CHUNK_VALUES // per_model)
    out = np.concatenate([_averages_of_logs(flat[i : i + step], grid) for i in range(0, max(len(flat), 1), step)])
    return out.reshape(nodes.shape)


def reference_to_node_values(
    rate: npt.ArrayLike,
    energy_edges: npt.ArrayLike,
    *fov_edges: npt.ArrayLike,
    fov: str = "offset",
    maker: bool = True,
    max_gain: float | None = None,
    rtol: float = 1e-4,
    max_iter: int = 100,
) -> npt.NDArray[np.float64]:
    """:func:`bkgxr.nodes.to_node_values` as it was (same arguments and result)."""
    grid = _grid(energy_edges, fov_edges, fov, maker)
    target = _checked(rate, grid, "rate")
    gain = float(2 ** (1 + len(grid.fov)) if max_gain is None else max_gain)
    if not gain >= 1.0:
        raise ValueError(f"max_gain must be at least 1, got {max_gain}")
    n_model_dims = len(grid.fov) + 1
    target = np.where(_stranded(target > 0, n_model_dims, fill=maker), 0.0, target)
    flat = target.reshape(-1, *target.shape[-n_model_dims:])  # (models, energy, *fov)
    low, high = flat / gain, flat * gain
    nodes = flat.copy()
    active = np.arange(len(flat))  # models not converged yet
    for _ in range(max_iter):
        if active.size == 0:
            break
        goal, now = flat[active], nodes[active]
        averages = reference_chunked_averages(now, grid)
        ratio = np.where((goal > 0) & (averages > 0), goal / np.where(averages > 0, averages, 1.0), gain)
        ratio[goal == 0] = 1.0
        bounded = ((now >= high[active]) & (ratio >= 1)) | ((now <= low[active]) & (ratio <= 1))
        done = np.all(((np.abs(ratio - 1) <= rtol) | bounded).reshape(active.size, -1), axis=1)
        nodes[active] = np.clip(now * np.where(done.reshape(-1, *[1] * n_model_dims), 1.0, ratio**_OMEGA), low[active], high[active])
        active = active[~done]
    return nodes.reshape(target.shape)
