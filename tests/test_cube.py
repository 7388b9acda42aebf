import dask
import numpy as np
import pytest
import xarray as xr
from reference import band_ontime, numpy_counts

import bkgxr
from bkgxr.axes import band_index, exposure_s_mev_sr
from bkgxr.cube import build_cube


def test_counts_equal_a_histogram_at_astropys_zenith_of_each_event(hess_runs, hess_cube):
    """Events at the pointing's zenith at their TIME (astropy per event); bkgxr interpolates a track."""
    b = bkgxr.Binning()
    expected = numpy_counts(hess_runs, b.zenith, b.energy, b.offset)
    moved = np.abs(hess_cube["counts"].values - expected).sum()
    assert moved <= 2, moved  # an event within ~1e-4 deg of a band edge may fall either side
    assert hess_cube["counts"].sum() > 300_000
    by_pointing = numpy_counts(hess_runs, b.zenith, b.energy, b.offset, event_zenith=False)
    assert np.abs(by_pointing - expected).sum() > 1000  # the track matters: runs cross band edges
    np.testing.assert_array_equal(build_cube(hess_runs, event_zenith=False)["counts"].values, by_pointing)


@pytest.fixture(params=["hess", "simulated"])
def store_and_cube(request):
    """The H.E.S.S. off runs, and a simulated store (so the engine is tested without the H.E.S.S. data)."""
    if request.param == "hess":
        return request.getfixturevalue("hess_runs"), request.getfixturevalue("hess_cube")
    runs = request.getfixturevalue("sim_store").select()
    return runs, build_cube(runs).compute()


def test_rate_is_counts_over_ontime_energy_width_and_ring_solid_angle(store_and_cube):
    runs, cube = store_and_cube
    b = bkgxr.Binning()
    np.testing.assert_allclose(cube["ontime"].values, band_ontime(runs, b.zenith), rtol=2e-3)
    ontime = cube["ontime"].values
    d_energy_mev = (b.energy[1:] - b.energy[:-1]) * 1e6
    d_omega = 2 * np.pi * (np.cos(np.radians(b.offset[:-1])) - np.cos(np.radians(b.offset[1:])))
    exposure = ontime[:, None, None] * d_energy_mev[None, :, None] * d_omega[None, None, :]
    counts = cube["counts"].values
    assert counts.sum() > 100_000
    np.testing.assert_allclose(cube["rate"].values, counts / exposure, rtol=1e-12, atol=0)
    np.testing.assert_allclose(cube["rate_err"].values, np.sqrt(counts) / exposure, rtol=1e-12)
    np.testing.assert_allclose(cube["ontime"].values.sum(), runs["ONTIME"].sum(), rtol=1e-12)
    livetime = (runs["LIVETIME"].to_numpy()[:, None] * cube["run_band_fraction"].values).sum(axis=0)
    np.testing.assert_allclose(cube["livetime"].values, livetime, rtol=1e-12)
    assert np.all(cube["livetime"].values < cube["ontime"].values)  # dead time is not in the rate
    assert cube["rate"].attrs["units"] == "1 / (MeV s sr)"
    assert cube.attrs["rate_time"].startswith("ONTIME")


def test_runs_per_band_are_listed(hess_runs, hess_cube):
    by_pointing = build_cube(hess_runs, event_zenith=False)
    assert by_pointing["n_runs"].values.tolist() == [11, 25, 9]
    assert by_pointing.attrs["zenith_assignment"].startswith("band containing the run's pointing zenith")
    # with tracks, a run crossing an edge counts in both bands
    crossing = (hess_cube["run_band_fraction"] > 0).sum("zenith")
    assert hess_cube["n_runs"].values.tolist() == (hess_cube["run_band_fraction"] > 0).sum("obs_id").values.tolist()
    assert int((crossing == 2).sum()) == hess_cube["n_runs"].values.sum() - 45 > 0
    assert hess_cube.attrs["zenith_assignment"].startswith("event: band holding the pointing's zenith at its TIME")
    in_band = hess_cube["obs_id"].where(hess_cube["run_band"] == 0, drop=True).values
    expected = hess_runs.loc[hess_runs["ZEN_PNT"] < 20, "OBS_ID"].to_numpy()
    np.testing.assert_array_equal(np.sort(in_band), np.sort(expected))
    assert int(hess_cube.sizes["obs_id"]) == 45


def test_every_variable_and_coord_has_units(hess_cube):
    for name in [*hess_cube.data_vars, *hess_cube.coords]:
        if name in ("obs_id", "zenith_band", "has_exposure"):
            continue
        assert "units" in hess_cube[name].attrs, name


def test_building_the_cube_reads_no_event(hess_runs, monkeypatch):
    calls = []
    import bkgxr.io.events

    original = bkgxr.io.events.iter_event_blocks
    monkeypatch.setattr(bkgxr.io.events, "iter_event_blocks", lambda *a, **k: calls.append(a) or original(*a, **k))
    with dask.config.set(scheduler="sync"):
        cube = build_cube(hess_runs.iloc[:3], binning=bkgxr.Binning(zenith=[0, 90]))
        assert calls == []
        assert isinstance(cube["counts"].data, dask.array.Array)
        assert cube["rate"].shape == (1, 19, 9)  # coords known before compute
        cube.compute()
    assert len(calls) == 3  # one read per run, shared by all variables


def test_empty_band_gives_zero_rate_not_nan(hess_runs):
    b = bkgxr.Binning(zenith=[0, 20, 40, 60, 70])
    with pytest.warns(UserWarning, match="have no run"):
        cube = build_cube(hess_runs, binning=b).compute()
    assert cube["n_runs"].values[-1] == 0
    assert np.all(np.isfinite(cube["rate"].values)) and np.all(cube["rate"].values[-1] == 0)
    assert not cube["has_exposure"].values[-1].any()


def test_runs_outside_every_band_are_left_out_with_a_warning(hess_runs):
    with pytest.warns(UserWarning, match="outside every zenith band"):
        cube = build_cube(hess_runs, binning=bkgxr.Binning(zenith=[0, 40]), event_zenith=False).compute()
    outside = hess_runs.loc[hess_runs["ZEN_PNT"] >= 40, "OBS_ID"].tolist()
    assert cube.attrs["excluded_runs"] == outside
    left_out = cube["obs_id"].where(~cube["run_used"], drop=True).values.tolist()
    assert left_out == outside
    assert set(cube["run_error"].sel(obs_id=outside).values) == {"outside every zenith band"}
    assert cube["run_counts"].sel(obs_id=outside).sum() == 0
    assert cube["livetime"].item() == pytest.approx(hess_runs.loc[hess_runs["ZEN_PNT"] < 40, "LIVETIME"].sum())
    assert cube["ontime"].item() == pytest.approx(hess_runs.loc[hess_runs["ZEN_PNT"] < 40, "ONTIME"].sum())


def test_run_counts_are_each_runs_own_histogram(hess_runs, hess_cube):
    b = bkgxr.Binning()
    for obs_id in (20275, 29683):
        run = hess_runs[hess_runs["OBS_ID"] == obs_id]
        expected = numpy_counts(run, [0, 90], b.energy, b.offset, event_zenith=False)[0]  # one band
        np.testing.assert_array_equal(hess_cube["run_counts"].sel(obs_id=obs_id).values, expected)
    np.testing.assert_array_equal(hess_cube["run_counts"].sum("obs_id").values, hess_cube["counts"].sum("zenith").values)


def test_safe_energy_masks_counts_and_exposure_per_run(hess_runs):
    cube = build_cube(hess_runs, safe_energy=True, event_zenith=False).compute()
    b = bkgxr.Binning()
    lo = hess_runs["SAFE_ENERGY_LO"].to_numpy()
    safe = b.energy[None, :-1] >= lo[:, None] * (1 - 1e-6)
    np.testing.assert_array_equal(cube["run_safe"].values, safe)
    # independent: drop each run's events below its first safe edge, sum ONTIMEs of safe runs per bin
    first_edge = np.array([b.energy[:-1][row].min() if row.any() else np.inf for row in safe])
    expected = np.zeros(cube["counts"].shape)
    ontime = np.zeros((3, 19))
    for (_, run), edge, row in zip(hess_runs.iterrows(), first_edge, safe):
        band = np.searchsorted([20, 40], run["ZEN_PNT"], side="right")
        counts = numpy_counts(hess_runs.loc[[_]], [0, 90], b.energy, b.offset, event_zenith=False)[0]  # one band
        expected[band] += counts * row[:, None]
        ontime[band] += run["ONTIME"] * row
    np.testing.assert_array_equal(cube["counts"].values, expected)
    np.testing.assert_allclose(cube["exposed_ontime"].values, ontime, rtol=1e-12)
    assert np.all(np.isfinite(cube["rate"].values))
    assert cube["counts"].sum() < 0.5 * hess_runs["EVENT_COUNT"].sum()


def test_band_index_rule():
    edges = [0, 20, 40, 90]
    np.testing.assert_array_equal(band_index([0, 19.99, 20, 89.9, 90, -1, np.nan], edges), [0, 0, 1, 2, -1, -1, -1])


def test_exposure_shape_and_units():
    exp = exposure_s_mev_sr([1.0, 2.0, 0.0], bkgxr.Binning())
    assert exp.shape == (3, 19, 9)
    assert exp[2].sum() == 0 and np.all(exp[1] == 2 * exp[0])


def test_zenith_band_is_a_coordinate_for_selection(hess_cube):
    assert isinstance(hess_cube, xr.Dataset)
    assert hess_cube["zenith_band"].values.tolist() == ["0-20", "20-40", "40-90"]
    assert float(hess_cube.sel(zenith=30)["zenith_lo"]) == 20
