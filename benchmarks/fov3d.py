"""Cost of a 3D (ALTAZ-aligned FoV) cube against the 2D (offset) cube, on the H.E.S.S. DR1 runs.

Times ``build_cube(runs, binning=...).compute()`` in this process (dask threads),
median of ``--repeats`` after one warm-up, for the 45 off runs and for all 105
runs with exclusion regions (the 0.5 deg target circles, which in 3D need the
kept pixel fractions of each run with a target), and prints the 3D / 2D ratios
(the issue's target: at most 2).

Example::

    python benchmarks/fov3d.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings
from pathlib import Path

from _timing import machine, time_calls

REPO = Path(__file__).resolve().parents[1]
#: Data store used unless ``--data`` or ``BKGXR_DATA`` says otherwise.
DEFAULT_DATA = Path(os.environ.get("BKGXR_DATA", REPO.parent / "shared" / "data" / "hess-dl3-dr1"))


def main(argv: list[str] | None = None) -> int:
    """Time the 2D and 3D builds and print their ratio; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DL3 store (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed builds per case (default: %(default)s)")
    args = parser.parse_args(argv)

    import bkgxr

    warnings.simplefilter("ignore")  # astropy warns on the public files' headers
    store = bkgxr.open_store(args.data)
    print(machine())
    print(f"{'runs':>22} {'2D s':>8} {'3D s':>8} {'3D / 2D':>8}")
    for label, query in (("45 off runs", bkgxr.OFF_QUERY), ("105 runs, exclusion", None)):
        runs = store.select(query)
        medians = []
        for fov in ("offset", "altaz"):
            binning = bkgxr.Binning(fov=fov)

            def build(runs=runs, binning=binning) -> object:  # noqa: ANN001 - bound loop values
                return bkgxr.build_cube(runs, binning=binning).compute()

            build()  # warm-up: imports, file cache, astropy's tables
            medians.append(statistics.median(time_calls(build, args.repeats)[0]))
        print(f"{label:>22} {medians[0]:>8.2f} {medians[1]:>8.2f} {medians[1] / medians[0]:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
