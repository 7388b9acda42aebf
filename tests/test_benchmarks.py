"""Smoke tests of benchmarks/: each script runs at a tiny size and prints its table.

They check that the methods agree on real data (the script exits non-zero
when counts differ), not how fast anything is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_hess_dr1_prints_ratios_and_agreement(hess_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCHMARKS / "hess_dr1.py"), "--data", str(hess_dir)]
    cmd += ["--repeats", "1", "--runs", "3", "--skip-baccmod"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout

    assert "3 off runs" in out and "file cache: warm" in out
    number = r"\d+\.\d\d"
    for label in ("seed / bkgxr", "bkgxr / floor", "bkgxr / floor-raw"):
        assert re.search(rf"{re.escape(label)}\s+\(threads\) {number} \| \(LocalCluster\) {number}", out), label
    assert re.search(r"BAccMod / bkgxr\s+skipped: --skip-baccmod", out)
    assert "counts agree: " in out and "counts DIFFER" not in out
    for name in ("floor", "floor-raw", "bkgxr (threads)", "bkgxr (LocalCluster)"):
        assert name in out.split("counts agree: ")[1].split("\n")[0]
    assert re.search(r"bkgxr build \(CLI, writes models\)\s+\d", out)
    assert re.search(rf"seed script / bkgxr build: {number}", out)
    assert re.search(rf"bkgxr build / floor script: {number}", out)
    assert re.search(rf"dependency imports alone / floor script: {number}", out)
    for floor in ("floor", "floor-raw"):  # same ONTIME, pointing and solid angles: the same rates
        difference = re.search(rf"rate, largest relative difference {floor} vs bkgxr in bins of equal counts: (\S+)", out)
        assert difference and float(difference.group(1)) < 1e-12, floor


@pytest.mark.slow
def test_scale_prints_table_targets_and_agreement(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCHMARKS / "scale.py"), "--runs", "4,8", "--events-per-run", "500"]
    cmd += ["--repeats", "1", "--cache", str(tmp_path / "cache")]
    # a first run, threads only, simulates the stores; the full run below reuses them
    proc = subprocess.run([*cmd, "--no-whole-process", "--workers", ""], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "store N=4:" in proc.stdout and "simulated in" in proc.stdout
    assert "counts agree: threads, 1 thread identical" in proc.stdout
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout

    assert "store N=8: " in out and "(cached)" in out and "simulated in" not in out
    for mode in ("threads", "1 thread", "1 worker", "2 workers"):
        for n in (4, 8):
            assert re.search(rf"^\s+{n}\s+\d+ {mode}\s+\d+\.\d\d\s+\d+\.\d\d", out, re.MULTILINE), (mode, n)
    for name in ("bkgxr build", "bkgxr build --zenith-model bands", "bkgxr build --zenith-model bands --workers 2",
                 "floor (astropy)", "floor-raw (zlib)"):
        assert re.search(rf"^  {re.escape(name)}\s+\d+\.\d\d\s+\d+\.\d\d\s+-?\d+\.\d\d$", out, re.MULTILINE), name
    verdict = r"(-?\d+\.\d\d|n/a)  \(target [<>]= \d\.\d\d\): (ok|MISS|a marginal)"
    for label in ("peak worker RSS N_max / N_min, 2 workers", "time per run max / min over N, threads",
                  "throughput 2 workers / 1 worker, N=8", "threads / 1 thread throughput, N=8",
                  "marginal cost per run, bkgxr build / floor",
                  "marginal cost per run, bkgxr build --zenith-model bands / floor"):
        assert re.search(rf"{re.escape(label)}\s+{verdict}", out), label
    assert re.search(r"cores free: \d\.\d\d of \d+", out)
    assert "counts agree: threads, 1 thread, 1 worker, 2 workers, floor, floor-raw identical" in out
    assert "counts DIFFER" not in out
