"""Peak memory of ``bkgxr build`` on one huge run against one small run (issue 14, item 5).

A one-run store is simulated (:func:`bkgxr.simulate.simulate_store`), and its
events file is rewritten twice, uncompressed, with the EVENTS rows repeated
until the table holds ``--small`` and ``--large`` MiB of rows (the other HDUs
kept as they are). ``bkgxr build STORE --out FILE --quiet`` then runs on each
as a child process; psutil samples its RSS every 5 ms. The ratio of the two
peaks is the figure: a build reads a run in blocks of
:data:`bkgxr.io._rawfits.BLOCK_BYTES`, so it should stay near 1 (target
<= 1.5) however large the run. The counts of both builds are checked against
the number of rows written (every repeated event is counted once per copy).

Defaults (20 MiB and 2048 MiB) need 2.1 GB of free space in ``--tmp`` and take
about a minute on a 2-core machine::

    python benchmarks/memory.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).parent))
from _timing import machine, mib, run_process

import bkgxr
from bkgxr.io._rawfits import BLOCK, BLOCK_BYTES
from bkgxr.simulate import simulate_store

TARGET = 1.5


def write_repeated(source: Path, target: Path, table_bytes: int) -> int:
    """Write ``source`` uncompressed to ``target``, EVENTS rows repeated to about ``table_bytes``; return the rows."""
    with fits.open(source) as hdul:
        events = hdul["EVENTS"]
        rows = np.asarray(events.data).view(np.uint8).reshape(len(events.data), -1)
        repeats = max(1, round(table_bytes / rows.nbytes))
        header = events.header.copy()
        header["NAXIS2"] = rows.shape[0] * repeats
        with open(target, "wb") as out:
            out.write(hdul[0].header.tostring().encode("ascii"))
            out.write(header.tostring().encode("ascii"))
            chunk = np.tile(rows, (max(1, BLOCK_BYTES // rows.nbytes), 1)).tobytes()
            written = 0
            while written < rows.nbytes * repeats:
                part = chunk[: rows.nbytes * repeats - written]
                out.write(part)
                written += len(part)
            out.write(b"\0" * (-written % BLOCK))
            out.writelines(_hdu_bytes(hdu) for hdu in hdul[2:])
    return rows.shape[0] * repeats


def _hdu_bytes(hdu: fits.hdu.base._BaseHDU) -> bytes:
    """The serialised bytes of one extension HDU."""
    with tempfile.TemporaryFile() as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu.copy()]).writeto(tmp)
        tmp.seek(0)
        data = tmp.read()
    return data[len(fits.PrimaryHDU().header.tostring()) :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=float, default=20, help="MiB of EVENTS rows of the small run (default: 20)")
    p.add_argument("--large", type=float, default=2048, help="MiB of EVENTS rows of the large run (default: 2048)")
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="folder for the stores")
    args = p.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        base = simulate_store(Path(tmp) / "base", n_runs=1, events_per_run=20_000, seed=1, date="2026-01-01", zenith_range=(10.0, 30.0))
        source = Path(bkgxr.open_store(base.path).select()["EVENTS_PATH"].iloc[0])
        base_counts, n_base = _counted(base.path), len(fits.getdata(source, "EVENTS"))
        peaks = {}
        for name, size in (("small", args.small), ("large", args.large)):
            store = Path(tmp) / name
            shutil.copytree(base.path, store)
            events = store / source.relative_to(base.path)
            n_rows = write_repeated(source, events, int(size * 2**20))
            out = Path(tmp) / f"{name}.fits"
            wall, cpu, peak = run_process(["bkgxr", "build", str(store), "--out", str(out), "--quiet"])
            counted, expected = _counted(store), base_counts * (n_rows // n_base)
            peaks[name] = peak
            print(f"{name:5}: {events.stat().st_size / 2**20:8.1f} MiB file, {n_rows:>11,} events, "
                  f"build {wall:6.1f} s wall ({cpu:6.1f} s CPU), peak RSS {mib(peak)}; "
                  f"counted {counted:,} ({'as expected' if counted == expected else f'EXPECTED {expected:,}'})")
            events.unlink()
    ratio = peaks["large"] / peaks["small"]
    print(f"peak RSS large / small: {ratio:.2f} (target <= {TARGET}: {'ok' if ratio <= TARGET else 'MISS'})")
    return 0


def _counted(store: str | Path) -> int:
    """Events of the store's run inside the default binning (an in-process build)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zenith band", category=UserWarning)  # one run: two bands empty
        cube = bkgxr.build_cube(bkgxr.open_store(store).select()).compute()
    return int(cube["counts"].sum())


if __name__ == "__main__":
    raise SystemExit(main())
