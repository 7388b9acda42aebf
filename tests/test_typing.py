"""mypy --strict passes on the package, as the style guide asks (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 40 s without mypy's cache
def test_mypy_strict_passes_on_the_package():
    done = subprocess.run([sys.executable, "-m", "mypy", "bkgxr"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mypy bkgxr failed:\n{done.stdout}{done.stderr}"
