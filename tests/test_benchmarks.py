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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
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
