import gc
import tracemalloc

import boost_histogram as bh
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr.exceptions import InvalidRunError
from bkgxr.fill import batch_bounds, fill_runs
from bkgxr.geometry import offset_deg
from bkgxr.io.events import RunRead, iter_event_blocks


@pytest.mark.parametrize("n_runs", [1, 5, 31, 32, 33, 100, 1601, 3000])
def test_batches_cover_every_run_once_in_order_and_are_bounded(n_runs):
    bounds = batch_bounds(n_runs, max_runs=50, min_batches=32)
    starts, stops = np.array(bounds).T
    assert starts[0] == 0 and stops[-1] == n_runs and np.all(starts[1:] == stops[:-1])
    sizes = stops - starts
    assert sizes.max() <= 50 and sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    assert len(bounds) >= min(n_runs, 32)


@pytest.mark.parametrize("n_runs", [1, 5, 33, 1000, 3000])
def test_batches_by_event_counts_balance_the_cost(n_runs):
    from bkgxr.fill import RUN_COST_EVENTS

    rng = np.random.default_rng(n_runs)
    events = rng.lognormal(9, 1.5, n_runs)  # run sizes spread over a factor of ~100
    events[rng.random(n_runs) < 0.05] = np.nan  # unknown: the median
    bounds = batch_bounds(n_runs, events=events, max_runs=50, min_batches=32)
    starts, stops = np.array(bounds).T
    assert starts[0] == 0 and stops[-1] == n_runs and np.all(starts[1:] == stops[:-1]) and np.all(stops > starts)
    assert (stops - starts).max() <= 50 and len(bounds) >= min(n_runs, 32)
    cost = np.where(np.isnan(events), np.nanmedian(events), events) + RUN_COST_EVENTS
    per_batch = np.add.reduceat(cost, starts)
    n_shares = max(min(n_runs, 32), -(-n_runs // 50))
    assert per_batch.max() <= cost.sum() / n_shares + cost.max() * (1 + 1e-12)  # a share plus one run at most
    assert len(bounds) <= 3 * n_shares  # more shares only where cheap runs would crowd a batch
    if n_runs >= 1000:  # with equal run counts the costliest batch, the last to finish, costs far more
        equal = np.add.reduceat(cost, np.array(batch_bounds(n_runs, max_runs=50, min_batches=32))[:, 0])
        assert per_batch.max() < 0.7 * equal.max()


def _events_file(path, n_rows, *, seed=0, **header):
    rng = np.random.default_rng(seed)
    table = Table(
        {
            "EVENT_ID": np.arange(n_rows, dtype=np.int64),
            "TIME": rng.uniform(0, 1600, n_rows),
            "RA": rng.normal(83.6, 1.2, n_rows).astype(np.float32),
            "DEC": rng.normal(22.0, 1.2, n_rows).astype(np.float32),
            "ENERGY": (0.1 * (1 + rng.pareto(1.7, n_rows))).astype(np.float32),
        }
    )
    table["RA"].unit = table["DEC"].unit = "deg"
    table["ENERGY"].unit = "TeV"
    events = fits.BinTableHDU(table, name="EVENTS")
    events.header.update({"RA_PNT": 83.6, "DEC_PNT": 22.0, **header})
    gti = fits.BinTableHDU(Table({"START": [0.0], "STOP": [1600.0]}), name="GTI")
    fits.HDUList([fits.PrimaryHDU(), events, gti]).writeto(path)
    return table


def _run(path, obs_id=1):
    return RunRead(str(path), "EVENTS", "GTI", obs_id, 83.6, 22.0, 20.0)


def _histref():
    return bh.Histogram(*bkgxr.Binning().boost_axes(), storage=bh.storage.Int64())


def test_a_run_filled_block_by_block_equals_a_numpy_histogram_of_the_whole_run(tmp_path):
    table = _events_file(tmp_path / "a.fits", 100_003)
    total, run_counts, errors, _, _ = fill_runs([_run(tmp_path / "a.fits"), None], _histref(), block_bytes=7 * 2**10 + 3)
    binning = bkgxr.Binning()
    offset = offset_deg(np.asarray(table["RA"], float), np.asarray(table["DEC"], float), 83.6, 22.0)
    expected, _ = np.histogramdd(
        (np.full(len(table), 20.0), np.asarray(table["ENERGY"], float), offset), bins=(binning.zenith, binning.energy, binning.offset)
    )
    np.testing.assert_array_equal(total.values(), expected)
    np.testing.assert_array_equal(run_counts[0], expected.sum(axis=0))
    np.testing.assert_array_equal(run_counts[1], 0)
    assert errors.tolist() == ["", ""]


def _peak(path, block_bytes):
    fill_runs([_run(path)], _histref(), block_bytes=block_bytes)  # warm caches
    gc.collect()
    tracemalloc.start()
    try:
        fill_runs([_run(path)], _histref(), block_bytes=block_bytes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_a_fill_is_one_block_whatever_the_runs_size(tmp_path):
    block = 2**20
    _events_file(tmp_path / "small.fits", 120_000)  # 3.4 MB of rows: 4 blocks
    _events_file(tmp_path / "large.fits", 1_200_000)  # 34 MB of rows: 33 blocks
    small, large = _peak(tmp_path / "small.fits", block), _peak(tmp_path / "large.fits", block)
    assert large < 1.1 * small, (small, large)
    assert large < 8 * block  # a block of rows, its float64 columns and their offsets


def _set_card(path, key, value):
    """Overwrite the integer card ``key`` of the first extension header in place, bytes only."""
    data = bytearray(path.read_bytes())
    start = data.index(f"{key:8}=".encode(), 2880)
    data[start : start + 80] = f"{key:8}= {value:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))


def test_a_header_claiming_more_rows_than_the_file_holds_is_refused_before_reading(tmp_path):
    path = tmp_path / "hostile.fits"
    _events_file(path, 10)
    _set_card(path, "NAXIS2", 100_000_000_000)
    with pytest.raises(InvalidRunError, match=r"run 7 \(hostile.fits\): cannot read the file: .*more than the file can hold"):
        fill_runs([_run(path, obs_id=7)], _histref())


def test_a_header_whose_size_overflows_int64_is_refused(tmp_path):
    """2**40 rows of 2**40 bytes: numpy's int64 product wraps to 0, a size that would pass any check."""
    path = tmp_path / "wrap.fits"
    _events_file(path, 10)
    _set_card(path, "NAXIS1", 2**40)
    _set_card(path, "NAXIS2", 2**40)
    with pytest.raises(InvalidRunError, match="more than the file can hold"):
        fill_runs([_run(path)], _histref())


def test_a_header_with_more_tfields_than_columns_says_so(tmp_path):
    path = tmp_path / "tfields.fits"
    _events_file(path, 10)
    _set_card(path, "TFIELDS", 6)  # astropy refuses to write such a header
    with pytest.raises(InvalidRunError, match="declares TFIELDS = 6 but has no TFORM6"):
        list(iter_event_blocks(path, "EVENTS", 3))


def test_skip_bad_keeps_the_good_runs_of_a_batch_and_says_why_the_bad_one_failed(tmp_path):
    _events_file(tmp_path / "a.fits", 5000)
    (tmp_path / "b.fits").write_bytes((tmp_path / "a.fits").read_bytes()[:4000])
    runs = [_run(tmp_path / "a.fits"), _run(tmp_path / "b.fits", obs_id=2), None]
    with pytest.raises(InvalidRunError, match=r"run 2 \(b.fits\)"):
        fill_runs(runs, _histref())
    total, run_counts, errors, _, _ = fill_runs(runs, _histref(), skip_bad=True, reasons=["", "", "outside every zenith band"])
    alone, _, _, _, _ = fill_runs(runs[:1], _histref())
    assert total == alone
    assert run_counts[1].sum() == 0 and run_counts[0].sum() == alone.values().sum()
    assert errors[0] == "" and "ends inside" in errors[1] and errors[2] == "outside every zenith band"


def test_every_block_is_checked_for_impossible_values(tmp_path):
    """A negative energy in the last block, or a header naming another run, is refused naming the run."""
    table = _events_file(tmp_path / "a.fits", 30_000)
    table["ENERGY"][-1] = -1.0
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table, name="EVENTS"), fits.BinTableHDU(Table({"START": [0.0]}), name="GTI")]).writeto(
        tmp_path / "b.fits"
    )
    with pytest.raises(InvalidRunError, match=r"run 1 \(b.fits\): EVENTS ENERGY has 1 value\(s\) <= 0"):
        fill_runs([_run(tmp_path / "b.fits")], _histref(), block_bytes=2**14)
    _events_file(tmp_path / "c.fits", 10, OBS_ID=99)
    with pytest.raises(InvalidRunError, match="OBS_ID = 99 disagrees"):
        fill_runs([_run(tmp_path / "c.fits")], _histref())


def test_events_take_the_zenith_of_the_track_at_their_time_and_run_counts_keep_them_all(tmp_path):
    table = _events_file(tmp_path / "a.fits", 20_000)  # TIME uniform in [0, 1600] s
    binning = bkgxr.Binning(zenith=[0.0, 30.0, 35.0])
    histref = bh.Histogram(*binning.boost_axes(), storage=bh.storage.Int64())
    run = RunRead(str(tmp_path / "a.fits"), "EVENTS", "GTI", 1, 83.6, 22.0, 30.0,
                  track_time=np.array([0.0, 1600.0]), track_zenith=np.array([20.0, 40.0]))
    total, run_counts, _, _, _ = fill_runs([run], histref)
    zenith = 20.0 + 20.0 * np.asarray(table["TIME"]) / 1600.0
    energy = np.asarray(table["ENERGY"], float)
    offset = offset_deg(np.asarray(table["RA"], float), np.asarray(table["DEC"], float), 83.6, 22.0)
    expected, _ = np.histogramdd((zenith, energy, offset), bins=(binning.zenith, binning.energy, binning.offset))
    np.testing.assert_array_equal(total.values(), expected)
    everything, _ = np.histogramdd((energy, offset), bins=(binning.energy, binning.offset))
    np.testing.assert_array_equal(run_counts[0], everything)
    assert run_counts[0].sum() > 1.2 * total.values().sum()  # a quarter of the run lies beyond the bands
