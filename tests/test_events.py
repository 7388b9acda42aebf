import tracemalloc

import dask
import numpy as np
from astropy.io import fits

from bkgxr.io.events import RunRead, read_run
from bkgxr.io.lazy_events import open_events


def _args(run):
    return (run.EVENTS_PATH, run.EVENTS_HDU, run.GTI_HDU, run.OBS_ID, run.RA_PNT, run.DEC_PNT, run.ZEN_PNT)


def _peak(args):
    read_run(RunRead(*args))  # warm imports and caches
    tracemalloc.start()
    read_run(RunRead(*args))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_read_task_holds_one_runs_events_not_its_file(hess_runs, tmp_path):
    """Memory of a task is bounded by its run's events: 40 MB of IRFs after EVENTS cost nothing."""
    run = next(hess_runs.itertuples())
    with fits.open(run.EVENTS_PATH) as hdul:
        hdus = [hdul[0].copy(), hdul["EVENTS"].copy(), hdul["GTI"].copy()]
        n_events = len(hdul["EVENTS"].data)
    fits.HDUList(hdus).writeto(tmp_path / "small.fits.gz")
    big = np.random.default_rng(0).normal(size=(5000, 1000))  # 40 MB, incompressible
    fits.HDUList([*hdus, fits.ImageHDU(big, name="BIG_IRF")]).writeto(tmp_path / "big.fits.gz")
    args = _args(run)[1:]
    small, large = _peak((str(tmp_path / "small.fits.gz"), *args)), _peak((str(tmp_path / "big.fits.gz"), *args))
    assert large < 1.1 * small + 2**16, (small, large)
    assert small < 10 * n_events * 3 * 8  # a few copies of the three columns, nothing file-sized


def test_one_chunk_per_run_in_run_order(hess_runs):
    runs = hess_runs.iloc[:4]
    events, errors = open_events(runs)
    assert events.numblocks == (4, 1) and errors.numblocks == (4,)
    with dask.config.set(scheduler="sync"):
        blocks = [events.blocks[i].compute() for i in range(4)]
    for block, run in zip(blocks, runs.itertuples()):
        np.testing.assert_array_equal(block, read_run(RunRead(*_args(run))))
        assert np.all(block[:, 0] == run.ZEN_PNT)
    assert errors.compute(scheduler="sync").tolist() == ["", "", "", ""]
