import os
import signal
import time

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
        done = [k for k, ts in scheduler.tasks.items() if "bkgxr-events" in str(k) and ts.state in ("memory", "released", "forgotten")]
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
