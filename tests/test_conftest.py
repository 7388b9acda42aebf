"""tests/conftest.py: without the H.E.S.S. data a data test skips, except on CI, where it fails; data tests are marked ``hess``.

Each case runs pytest in a child process on a small generated test file, with
the real tests/conftest.py loaded as a plugin, the repository's pytest
configuration (its registered markers, ``--strict-markers``) and
``BKGXR_DATA`` pointing to an empty folder; the outcome of every test is read
from the child's JUnit XML report, independently of its terminal summary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Two tests needing the data (directly and through a fixture built on ``hess_dir``) and one that does not.
PROBE = '''
def test_direct(hess_dir):
    assert (hess_dir / "obs-index.fits.gz").is_file()


def test_through_store(hess_store):
    assert len(hess_store.obs_table) > 0


def test_engine():
    assert 1 + 1 == 2
'''
DATA_TESTS = {"test_direct", "test_through_store"}


@dataclass
class Run:
    """What the child pytest did: exit status, terminal output and each test's outcome."""

    returncode: int
    output: str
    outcomes: dict[str, str]


def run_probe(tmp_path: Path, ci: str | None, *args: str) -> Run:
    """Run pytest on :data:`PROBE` with ``CI`` set to ``ci`` (unset if None) and no H.E.S.S. data."""
    empty = tmp_path / "no-data"
    empty.mkdir(exist_ok=True)
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    report = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"}}
    env["BKGXR_DATA"] = str(empty)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    # -n 0: in one process, whose summary counts deselected tests (xdist's workers deselect them unreported);
    # under the configured xdist workers the data tests fail and skip the same way
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest", "-c", str(REPO / "pyproject.toml"),
           "--rootdir", str(tmp_path), "--strict-markers", "-q", "-n", "0", f"--junitxml={report}", str(probe), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    outcomes = {}
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            kinds = [child.tag for child in case if child.tag in {"failure", "error", "skipped"}]
            outcomes[case.attrib["name"]] = kinds[0] if kinds else "passed"
    return Run(proc.returncode, proc.stdout + proc.stderr, outcomes)


def summary(output: str) -> str:
    """The last line of pytest's terminal output, e.g. ``1 passed, 2 skipped in 0.12s``."""
    return output.strip().splitlines()[-1]


@pytest.mark.parametrize("ci", ["1", "true"])
def test_on_ci_a_data_test_fails_instead_of_skipping(tmp_path: Path, ci: str) -> None:
    run = run_probe(tmp_path, ci)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.output
    # a failure in a fixture's set-up is reported by pytest as an error of the test
    assert run.outcomes == {"test_direct": "error", "test_through_store": "error", "test_engine": "passed"}, run.output
    assert re.fullmatch(r"1 passed, 2 errors in [\d.]+s", summary(run.output)), run.output
    assert "skipped" not in run.output
    assert f"H.E.S.S. DR1 data not found at {tmp_path / 'no-data'}; set BKGXR_DATA" in run.output
    assert f"CI={ci}" in run.output


@pytest.mark.parametrize("ci", [None, "0", "false"])
def test_off_ci_a_data_test_skips_and_the_summary_counts_it(tmp_path: Path, ci: str | None) -> None:
    run = run_probe(tmp_path, ci)
    assert run.returncode == pytest.ExitCode.OK, run.output
    assert run.outcomes == {"test_direct": "skipped", "test_through_store": "skipped", "test_engine": "passed"}, run.output
    # -q alone prints the skip count in the last line; -ra (the project's addopts) adds the reasons
    assert re.fullmatch(r"1 passed, 2 skipped in [\d.]+s", summary(run.output)), run.output
    reason = f"H.E.S.S. DR1 data not found at {tmp_path / 'no-data'}; set BKGXR_DATA"
    assert re.findall(r"^SKIPPED \[1\] test_probe\.py:\d+: (.*)$", run.output, re.MULTILINE) == [reason, reason], run.output


def test_data_tests_are_marked_hess_through_any_fixture(tmp_path: Path) -> None:
    run = run_probe(tmp_path, "1", "-m", "hess", "--collect-only")
    assert run.returncode == pytest.ExitCode.OK, run.output
    collected = {line.rsplit("::", 1)[1] for line in run.output.splitlines() if "::" in line}
    assert collected == DATA_TESTS, run.output
    assert re.fullmatch(r"2/3 tests collected \(1 deselected\) in [\d.]+s", summary(run.output)), run.output


def test_not_hess_runs_the_engine_tests_alone_even_on_ci(tmp_path: Path) -> None:
    run = run_probe(tmp_path, "1", "-m", "not hess")
    assert run.returncode == pytest.ExitCode.OK, run.output
    assert run.outcomes == {"test_engine": "passed"}, run.output
    assert re.fullmatch(r"1 passed, 2 deselected in [\d.]+s", summary(run.output)), run.output
