"""SIGINT/SIGTERM stop a real ``bkgxr build`` process with one line and exit 130/143, leaving no temporary file; a killed
build's temporary file is removed by the next build of that output, and nothing else is."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.io import fits

import bkgxr
from bkgxr.cli import main
from bkgxr.io.partfiles import STALE_SECONDS, remove_stale
from bkgxr.io.write import write_atomic

#: The package's parent folder, so that a subprocess imports this bkgxr however it is installed.
PACKAGE_PARENT = str(Path(bkgxr.__file__).resolve().parents[1])

#: Slows every task of dask's local scheduler (a dask callback, no bkgxr code changed) and says when the compute starts.
SLOW_COMPUTE = """
import sys, time
from dask.callbacks import Callback

class Slow(Callback):
    def _start(self, dsk):
        print("compute started", flush=True)

    def _pretask(self, key, dsk, state):
        time.sleep(0.05)

Slow().register()
"""
#: Holds the write's temporary file open for 2 s after it is created and says so.
SLOW_WRITE = """
import tempfile, time
real = tempfile.mkstemp

def mkstemp(*args, **kwargs):
    made = real(*args, **kwargs)
    print("temporary file created", flush=True)
    time.sleep(2)
    return made

tempfile.mkstemp = mkstemp
"""
RUN_MAIN = "\nimport sys\nfrom bkgxr.cli import main\nsys.exit(main(sys.argv[1:]))\n"
#: SIGINT as a shell leaves it. A child inherits an ignored SIGINT from its parent, and bkgxr
#: rightly leaves an ignored signal ignored: once, under pytest-xdist, the build then ran to the end.
SHELL_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def start(hook: str, args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT, "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-c", SHELL_SIGINT + hook + RUN_MAIN, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(process: subprocess.Popen[str], marker: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == marker:
            return
    raise AssertionError(f"{marker!r} never printed: {process.communicate()}")


def parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_build_stops_it_with_one_line_and_leaves_the_old_output(sim_store, tmp_path, signum, code):
    out = tmp_path / "m.fits"
    out.write_bytes(b"the previous models")
    process = start(SLOW_COMPUTE, ["build", str(sim_store.root), "--out", str(out), "--quiet"], tmp_path)
    wait_for(process, "compute started")
    time.sleep(0.3)  # well inside the compute: 24 runs x several tasks x 0.05 s
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert process.returncode == code
    assert stderr == f"bkgxr: stopped by {name}; no temporary file left, outputs complete or untouched\n"  # no traceback
    assert out.read_bytes() == b"the previous models" and parts(tmp_path) == []


@pytest.mark.slow
def test_a_signal_while_the_temporary_file_exists_waits_for_the_rename(sim_store, tmp_path):
    out = tmp_path / "m.fits"
    process = start(SLOW_WRITE, ["build", str(sim_store.root), "--out", str(out), "--quiet", "--zenith-model", "bands"], tmp_path)
    wait_for(process, "temporary file created")
    assert len(parts(tmp_path)) == 1
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "bkgxr: stopped by SIGTERM; no temporary file left, outputs complete or untouched"
    assert parts(tmp_path) == []
    assert bkgxr.read_models(out).sizes["obs_id"] == len(sim_store.obs)  # complete: checksums verified


@pytest.mark.slow
def test_the_next_build_removes_the_temporary_file_of_a_killed_one(sim_store, tmp_path, capsys):
    out = tmp_path / "m.fits"
    process = start(SLOW_WRITE, ["build", str(sim_store.root), "--out", str(out), "--quiet", "--zenith-model", "bands"], tmp_path)
    wait_for(process, "temporary file created")
    process.kill()  # SIGKILL cannot be caught: the temporary file stays
    process.communicate(timeout=60)
    (left,) = parts(tmp_path)
    assert left.startswith(f".m.fits.{socket.gethostname()}.{process.pid}.")
    assert main(["build", str(sim_store.root), "--out", str(out), "--quiet", "--zenith-model", "bands"]) == 0
    assert parts(tmp_path) == [] and fits.getheader(out, "OBS_INDEX")["EXTNAME"] == "OBS_INDEX"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_only_stale_temporary_files_of_the_same_output_are_removed(tmp_path):
    host, dead, now = socket.gethostname(), dead_pid(), time.time()
    old = now - STALE_SECONDS - 60
    files = {  # name: (age, removed)
        f".m.fits.{host}.{dead}.abcdefgh.part": (now, True),  # its writer is gone
        f".m.fits.{host}.{os.getpid()}.abcdefgh.part": (now, False),  # a writer still running (this process)
        f".m.fits.{host}.{os.getppid()}.abcdefgh.part": (now, False),
        f".m.fits.{host}.{os.getppid()}.oldoldol.part": (old, True),  # unchanged for too long, whoever wrote it
        ".m.fits.otherhost.example.12.abcdefgh.part": (now, False),  # another host: cannot be checked from here
        ".m.fits.otherhost.example.12.oldoldol.part": (old, True),
        ".m.fits.k3j_x9a2.part": (now, False),  # an older bkgxr's name: no pid, so only by age
        ".m.fits.k3j_x9a3.part": (old, True),
        f".n.fits.{host}.{dead}.abcdefgh.part": (old, False),  # another output's
        f".m.fits.{host}.{dead}.abcdefgh.partial": (old, False),  # not our suffix
        f"m.fits.{host}.{dead}.abcdefgh.part": (old, False),  # not hidden: not ours
        "notes.txt": (old, False),
    }
    for name, (age, _) in files.items():
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (age, age))
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / f".m.fits.{host}.{dead}.linklink.part"
    link.symlink_to(target)  # a link is never followed nor removed
    os.utime(link, (old, old), follow_symlinks=False)
    folder = tmp_path / f".m.fits.{host}.{dead}.folderab.part"
    folder.mkdir()
    removed = remove_stale(tmp_path / "m.fits")
    assert sorted(p.name for p in removed) == sorted(n for n, (_, gone) in files.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [n for n, (_, gone) in files.items() if not gone] + ["precious.txt", link.name, folder.name]
    )
    assert target.read_text() == "keep"
    before = sorted(p.name for p in tmp_path.iterdir())
    write_atomic(b"models", tmp_path / "m.fits")  # leaves none of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "m.fits"])
    assert (tmp_path / "m.fits").read_bytes() == b"models"


@pytest.mark.slow
def test_a_failing_run_on_workers_is_one_line_without_distributed_logs(simulation, tmp_path):
    """--workers 2 with an unreadable run: the error line only; --verbose shows the workers' log."""
    store = Path(shutil.copytree(simulation.path, tmp_path / "store"))
    broken = min((store / "data").iterdir())
    broken.write_bytes(broken.read_bytes()[:3000])  # a truncated gzip
    args = ["build", str(store), "--out", str(tmp_path / "m.fits"), "--workers", "2", "--quiet"]
    process = start("", args, tmp_path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert stderr.startswith(f"bkgxr: error: run 1 ({broken.name}): ") and stderr.count("\n") == 1, stderr
    process = start("", [*args, "--verbose"], tmp_path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1 and "distributed.worker" in stderr
    assert not (tmp_path / "m.fits").exists() and parts(tmp_path) == []
