"""Cost of a 3D (ALTAZ-aligned FoV) cube against the 2D (offset) cube, on the H.E.S.S. DR1 runs.

Times ``build_cube(runs, binning=...).compute(scheduler=...)`` in this process,
median of ``--repeats`` after one warm-up, for the 45 off runs and for all 105
runs with exclusion regions (the 0.5 deg target circles, which in 3D need the
kept pixel fractions of each run with a target), and prints the 3D / 2D ratios
(the issue's target: at most 2). Three builds per case:

``2D``
    ``Binning()``: offset.
``3D``
    ``Binning(fov="altaz")``: the node maps of all runs come from one astropy
    call when the graph is built (the obs-index header has MJDREF and the site);
    each read task maps its events and, for a run with regions, its kept pixel
    fractions (:func:`bkgxr.masking.run_kept_fraction`) with them.
``3D per run``
    The same with the obs-index header withheld from the run table
    (``runs.attrs``): each read task, and each run's kept fractions, call
    astropy for their own nodes.

All three 3D cubes of a case must have identical counts (summed over zenith:
the run table without its header has no zenith tracks), else the script
prints "counts DIFFER" and exits 1. ``--sim DIR`` adds a case for a
simulated store (e.g. 1000 runs of ``bkgxr.simulate.simulate_store``) and
prints the time of the one astropy call alone.

Example::

    python benchmarks/fov3d.py --repeats 3 --scheduler sync --sim /tmp/sim1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from _timing import machine, time_calls

REPO = Path(__file__).resolve().parents[1]
#: Data store used unless ``--data`` or ``BKGXR_DATA`` says otherwise.
DEFAULT_DATA = Path(os.environ.get("BKGXR_DATA", REPO.parent / "shared" / "data" / "hess-dl3-dr1"))


def main(argv: list[str] | None = None) -> int:
    """Time the 2D and 3D builds and print their ratio; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DL3 store (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed builds per case (default: %(default)s)")
    parser.add_argument("--scheduler", default="threads", choices=["threads", "sync"], help="dask scheduler (default: %(default)s)")
    parser.add_argument("--sim", type=Path, help="also time every run of this (simulated) store")
    args = parser.parse_args(argv)

    import bkgxr
    from bkgxr.altaz_maps import location_of, reference_time, run_node_maps

    warnings.simplefilter("ignore")  # astropy warns on the public files' headers
    store = bkgxr.open_store(args.data)
    cases = [("45 off runs", store.select(bkgxr.OFF_QUERY)), ("105 runs, exclusion", store.select())]
    if args.sim is not None:
        runs = bkgxr.open_store(args.sim).select()
        cases.append((f"{len(runs)} simulated runs", runs))
    print(machine())
    print(f"scheduler: {args.scheduler}, median of {args.repeats}")
    print(f"{'runs':>22} {'2D s':>8} {'3D s':>8} {'3D/2D':>6} {'3D per run s':>13} {'per run/2D':>11} {'astropy s':>10}")
    status = 0
    for label, runs in cases:
        withheld = runs.copy()
        withheld.attrs.clear()
        medians, counts = [], []
        for fov, table in (("offset", runs), ("altaz", runs), ("altaz", withheld)):
            binning = bkgxr.Binning(fov=fov)

            def build(table=table, binning=binning) -> xr.Dataset:
                return bkgxr.build_cube(table, binning=binning).compute(scheduler=args.scheduler)

            cube = build()  # warm-up: imports, file cache, astropy's tables
            if fov == "altaz":  # summed over zenith: without the obs-index header runs have no track (whole in a band)
                counts.append(cube["counts"].values.sum(axis=0))
            medians.append(statistics.median(time_calls(build, args.repeats)[0]))
        meta = runs.attrs["OBS_META"]
        start = time.perf_counter()
        run_node_maps(runs["TSTART"], runs["TSTOP"], reference=reference_time(meta), location=location_of(meta))
        one_shot = time.perf_counter() - start
        same = all(np.array_equal(counts[0], c) for c in counts[1:])
        print(
            f"{label:>22} {medians[0]:>8.2f} {medians[1]:>8.2f} {medians[1] / medians[0]:>6.2f}"
            f" {medians[2]:>13.2f} {medians[2] / medians[0]:>11.2f} {one_shot:>10.3f}"
            + ("" if same else "  counts DIFFER")
        )
        status |= not same
    return status


if __name__ == "__main__":
    raise SystemExit(main())
