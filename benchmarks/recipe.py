"""What the default recipe costs per observation: ``predict_models`` + ``write_models``, before and after (issue 15, item 3).

For each store size N (``--runs``, default 100 and 1000 simulated off runs of
``--events-per-run`` events, cached as in ``benchmarks/scale.py``), two child
processes each build the cube once (untimed) and then time ``--repeats`` times
``predict_models(cube, runs)`` (:data:`bkgxr.DEFAULT_RECIPE`: a kernel model per
observation, smoothed, node values) and ``write_models`` to a temporary file:

``before``
    the code of commit :data:`BEFORE` (per-slice smoothing loops with one small
    Newton fit per model's power-law tail, one HDU per observation), taken from
    git history with ``git archive`` into a temporary folder;
``after``
    the code of this working tree (smoothing batched across models, observations
    with equal models sharing one HDU).

Both run in the same invocation, alternately, so that their ratio is
comparable from run to run on a shared machine. Printed: milliseconds per
observation (median wall time / N) of predict, write and both, the marginal
cost per observation from the smallest to the largest N, the after/before
ratios, the file size and number of model HDUs, and the largest relative
difference of the per-observation models (``obs_rate``) between the two: the
script exits 1 if it exceeds :data:`RTOL` or their zeros differ.

About 2 minutes on a 2-core machine (plus about a minute to simulate the stores
the first time)::

    python benchmarks/recipe.py --runs 100,1000 --repeats 3
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine
from scale import DEFAULT_CACHE, SIM_DATE, ensure_store

#: The commit timed as "before": the default recipe as it was when issue 15 was filed.
BEFORE = "4b22894ff3b3f242f3ec1924028ad7dd044c8ee4"
#: Largest relative difference allowed between the before and after models (the smoothing
#: agrees to 1e-9, node values to their own fixed-point tolerance of 1e-4 are recomputed from it,
#: and shared HDUs hold a model within bkgxr.io.gadf.SHARE_RTOL of each observation's).
RTOL = 1e-6
REPO = Path(__file__).resolve().parent.parent


def child(data_dir: Path, repeats: int, save: Path) -> dict[str, object]:
    """Build the cube once, then time predict_models and write_models ``repeats`` times each."""
    import bkgxr

    store = bkgxr.open_store(data_dir)
    runs = store.select()
    cube = bkgxr.build_cube(runs).compute()
    predict, write = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "models.fits"
        for _ in range(repeats):
            t0 = time.perf_counter()
            models = bkgxr.predict_models(cube, runs)
            t1 = time.perf_counter()
            bkgxr.write_models(models, out, store=store, date=SIM_DATE)
            t2 = time.perf_counter()
            predict.append(t1 - t0)
            write.append(t2 - t1)
        from astropy.io import fits

        with fits.open(out) as hdul:
            n_hdus = sum(str(h.name).startswith("BKG_OBS_") for h in hdul)
        size = out.stat().st_size
    np.save(save, models["obs_rate"].transpose("obs_id", "energy", "offset").values)
    return {"predict": statistics.median(predict), "write": statistics.median(write), "n_obs": int(models.sizes["obs_id"]),
            "bytes": size, "n_hdus": n_hdus, "bkgxr": bkgxr.__file__}


def run_child(code: Path, data_dir: Path, repeats: int, save: Path) -> dict[str, float]:
    """Run :func:`child` in a fresh process with ``code`` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, __file__, "--child", str(data_dir), "--repeats", str(repeats), "--save", str(save)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child with {code} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="100,1000", help="store sizes, comma-separated (default: 100,1000)")
    p.add_argument("--events-per-run", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed predict+write per child (median; default: 3)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--after", type=Path, default=REPO, help="folder holding the bkgxr package timed as after (default: this tree)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats, args.save)))
        return 0
    sizes = [int(n) for n in args.runs.split(",")]
    print(machine())
    print(f"load average {os.getloadavg()[0]:.2f}; before = {BEFORE[:10]}, after = {args.after}")
    results: dict[tuple[str, int], dict[str, float]] = {}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "bkgxr"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for n in sizes:
            data_dir, _, _ = ensure_store(args.cache, n, args.events_per_run, args.seed, 1)
            for label, code in (("before", old), ("after", args.after)):
                results[label, n] = run_child(code, data_dir, args.repeats, Path(tmp) / f"{label}{n}.npy")
            before, after = (np.load(Path(tmp) / f"{label}{n}.npy") for label in ("before", "after"))
            if not np.array_equal(before == 0, after == 0):
                print(f"N={n}: models DIFFER in their zeros")
                return 1
            worst = max(worst, float(np.max(np.abs(after - before) / np.where(before > 0, before, 1.0))))
    print(f"\n{'N':>6} {'code':>7} {'predict':>9} {'write':>9} {'total':>9}  ms/obs   {'file':>9} {'model HDUs':>10}")
    for n in sizes:
        for label in ("before", "after"):
            r = results[label, n]
            per = [1e3 * r[k] / r["n_obs"] for k in ("predict", "write")]
            print(f"{n:>6} {label:>7} {per[0]:>9.3f} {per[1]:>9.3f} {sum(per):>9.3f}          "
                  f"{r['bytes'] / 2**20:>7.1f} MiB {int(r['n_hdus']):>10}")
    for n in sizes:
        b, a = results["before", n], results["after", n]
        print(f"N={n}: after/before  predict {a['predict'] / b['predict']:.2f}  write {a['write'] / b['write']:.2f}  "
              f"total {(a['predict'] + a['write']) / (b['predict'] + b['write']):.2f}")
    if len(sizes) > 1:
        lo, hi = min(sizes), max(sizes)

        def marginal(label: str) -> float:
            total = {n: results[label, n]["predict"] + results[label, n]["write"] for n in (lo, hi)}
            return 1e3 * (total[hi] - total[lo]) / (results[label, hi]["n_obs"] - results[label, lo]["n_obs"])

        print(f"marginal cost per observation {lo} -> {hi}: before {marginal('before'):.3f} ms, after "
              f"{marginal('after'):.3f} ms, ratio {marginal('after') / marginal('before'):.2f}")
    print(f"largest relative difference of the models after vs before: {worst:.2e} (allowed {RTOL:g})")
    return 0 if worst <= RTOL else 1


if __name__ == "__main__":
    sys.exit(main())
