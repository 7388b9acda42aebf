import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster

import bkgxr
from bkgxr.cluster import active_client, compute, connect


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


def _write(cube, store, path):
    """The bytes of the model file of ``cube`` by the default recipe."""
    return bkgxr.write_models(bkgxr.predict_models(cube, store), path, store=store, date="2026-01-01").read_bytes()


def test_two_worker_cluster_equals_the_serial_build(client, hess_store, hess_runs, tmp_path):
    assert active_client() is client
    cube = compute(bkgxr.build_cube(hess_runs))
    serial = bkgxr.build_cube(hess_runs).compute(scheduler="sync")
    for name in ("counts", "rate", "rate_err", "exposure"):
        np.testing.assert_array_equal(cube[name].values, serial[name].values)
    assert _write(cube, hess_store, tmp_path / "a" / "bkg.fits") == _write(serial, hess_store, tmp_path / "b" / "bkg.fits")


def test_a_worker_killed_mid_build_does_not_change_the_result(client, hess_runs):
    serial = bkgxr.build_cube(hess_runs).compute(scheduler="sync")
    cube = bkgxr.build_cube(hess_runs)
    scheduler = client.cluster.scheduler
    pids = client.run(os.getpid)
    future = client.compute(cube)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = [k for k, ts in scheduler.tasks.items() if "bkgxr-fill" in str(k) and ts.state in ("memory", "released", "forgotten")]
        if done:
            break
        time.sleep(0.0005)
    victim = next(iter(pids.values()))
    os.kill(victim, signal.SIGKILL)
    killed_mid_build = future.status == "pending"
    result = future.result(timeout=60)
    assert killed_mid_build, "the build finished before the worker was killed"
    np.testing.assert_array_equal(result["counts"].values, serial["counts"].values)
    np.testing.assert_array_equal(result["rate"].values, serial["rate"].values)


def test_connect_refuses_both_options_and_yields_none_without():
    with pytest.raises(ValueError, match="not both"), connect(workers=2, scheduler="tcp://x:1"):
        pass
    with connect() as client:
        assert client is None


def test_skip_bad_gives_the_same_cube_on_a_cluster_and_threads(client, simulation, tmp_path):
    """``skip_bad`` on a distributed client: same counts, same reasons, with and without a bad run."""
    store_dir = tmp_path / "store"
    shutil.copytree(simulation.path, store_dir)
    store = bkgxr.open_store(store_dir)
    runs = store.select(skip_bad=True)
    bad = runs["EVENTS_PATH"].iloc[3]
    Path(bad).write_bytes(Path(bad).read_bytes()[:5000])  # truncated: unreadable
    threads = bkgxr.build_cube(runs, skip_bad=True).compute(scheduler="threads")
    cluster = compute(bkgxr.build_cube(runs, skip_bad=True))
    assert threads["run_error"].values[3].startswith("cannot read the file")
    assert list(cluster["run_error"].values) == list(threads["run_error"].values)
    for name in ("counts", "run_counts", "exposure", "rate"):
        np.testing.assert_array_equal(cluster[name].values, threads[name].values)
    assert threads["run_counts"].values[3].sum() == 0 and not threads["run_used"].values[3]
    clean = compute(bkgxr.build_cube(bkgxr.open_store(simulation.path).select(skip_bad=True), skip_bad=True))
    assert (clean["run_error"].values == "").all()
    expected = clean["counts"].values.sum(axis=0) - clean["run_counts"].values[3]
    np.testing.assert_array_equal(threads["counts"].values.sum(axis=0), expected)
