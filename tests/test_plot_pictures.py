"""Pictures that say what they show: ``bkgxr plot --obs`` (plot_observations) and ``bkgxr validate --png`` (plot_validation).

What is drawn is compared with numbers read independently: the model HDUs and
index tables read with astropy, the CSV the same command writes, the obs
index's ZEN_PNT, TSTART and DATE-OBS.
"""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

import bkgxr
from bkgxr import plot, plot_runs
from bkgxr.cli import main

#: Simulated runs the models and validations are built from (few, so that each test is fast).
SIM_RUNS = [1, 2, 3, 4, 5, 6, 7, 8]
QUERY = f"OBS_ID in {SIM_RUNS}"
#: H.E.S.S. DR1 off runs of the date test, April 2004 to November 2005 (before the leap second of 2005-12-31).
HESS_RUNS = [20275, 20915, 21824, 22997, 23246, 23736, 26077, 29683]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _models_file(sim_store, path, recipe):
    cube = bkgxr.build_cube(sim_store.select(QUERY)).compute()
    return bkgxr.write_models(bkgxr.predict_models(cube, sim_store, recipe), path, store=sim_store, date="2026-01-01")


@pytest.fixture(scope="module")
def own_file(sim_store, tmp_path_factory):
    """The default recipe's file: one model per observation of the store."""
    return _models_file(sim_store, tmp_path_factory.mktemp("own") / "bkg.fits", bkgxr.DEFAULT_RECIPE)


@pytest.fixture(scope="module")
def bands_file(sim_store, tmp_path_factory):
    """The tutorial's recipe: band models only, no per-observation HDU."""
    return _models_file(sim_store, tmp_path_factory.mktemp("bands") / "bkg.fits", bkgxr.Recipe(zenith="bands", smoothing=None))


def captured(monkeypatch, module, name):
    """Figures that ``module.<name>`` (a module of bkgxr, e.g. bkgxr.plot_runs) returns while the test runs.

    The CLI imports each plot function when it runs, so it calls the patched one.
    """
    drawn = []
    function = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: drawn.append(function(*a, **k)) or drawn[-1])
    return drawn


def obs_hdus(path):
    """OBS_ID -> (energy, offset) rate in MeV-1 s-1 sr-1 of its model HDU, and the energy and offset edges, by astropy."""
    with fits.open(path) as hdul:
        index = Table.read(hdul["OBS_INDEX"])
        rates = {}
        for obs_id, name in zip(index["OBS_ID"], index["BKG_HDU"]):
            hdu = hdul[str(name).strip()]
            assert hdu.columns["BKG"].unit == "MeV-1 s-1 sr-1"
            rates[int(obs_id)] = hdu.data["BKG"][0].T.astype(float)  # TDIM (n_energy, n_offset) reads as (offset, energy)
        first = hdul[str(index["BKG_HDU"][0]).strip()].data
        energy = np.append(first["ENERG_LO"][0], first["ENERG_HI"][0][-1])
        offset = np.append(first["THETA_LO"][0], first["THETA_HI"][0][-1])
    return rates, energy, offset


def test_plot_obs_draws_the_chosen_observations_own_models_and_only_them(own_file, sim_store, tmp_path, capsys, monkeypatch):
    drawn = captured(monkeypatch, plot_runs, "plot_observations")
    out = tmp_path / "obs.png"
    assert main(["plot", str(own_file), "--out", str(out), "--obs", "3,6", "--offsets", "0.5,1.5", "--energies", "1,3", "--dpi", "30"]) == 0
    assert capsys.readouterr().out.strip() == f"written: {out}"
    assert plt.imread(out).std() > 0.05  # drawn, not blank
    (fig,) = drawn
    rates, energy, offset = obs_hdus(own_file)
    assert len(rates) == len(sim_store.obs_table)  # the file holds a model for every observation, not only the 8 runs
    zenith = dict(zip(sim_store.obs_table["OBS_ID"], sim_store.obs_table["ZEN_PNT"]))
    labels = [f"OBS_ID {i}, zenith {zenith[i]:.1f} deg" for i in (3, 6)]
    spectra, profiles = (sub.axes for sub in fig.subfigs)
    assert [t.get_text() for t in spectra[-1].get_legend().get_texts()] == labels
    assert [ax.get_title() for ax in spectra] == ["offset 0-1 deg", "offset 1.41-1.73 deg"]
    assert [ax.get_title() for ax in profiles] == ["energy 0.886-1.27 TeV", "energy 2.64-3.79 TeV"]
    centre_e, centre_o = np.sqrt(energy[1:] * energy[:-1]), 0.5 * (offset[1:] + offset[:-1])
    for axes, value, edges, cut in ((spectra, (0.5, 1.5), offset, lambda r, j: r[:, j]),
                                    (profiles, (1.0, 3.0), energy, lambda r, k: r[k, :])):
        for ax, v in zip(axes, value):
            j = int(np.searchsorted(edges, v, side="right")) - 1
            assert [line.get_label() for line in ax.get_lines()] == labels  # one line per chosen observation
            for line, obs_id in zip(ax.get_lines(), (3, 6)):
                want = cut(rates[obs_id], j)
                np.testing.assert_allclose(line.get_xdata(), centre_e if axes is spectra else centre_o, rtol=1e-12)
                np.testing.assert_array_equal(line.get_ydata(), np.where(want > 0, want, np.nan))
    assert rates[3][:, 0].tolist() != rates[6][:, 0].tolist()  # their own models, not one band's
    title = fig.get_suptitle().splitlines()
    assert title[0] == f"bkgxr models of observations 3, 6 in bkg.fits (2 of {len(rates)}; built from {len(SIM_RUNS)} runs)"
    assert title[1] == bkgxr.DEFAULT_RECIPE.describe() and "smoothed" in title[1]


def test_plot_obs_of_a_bands_file_labels_each_observation_with_its_band(bands_file, tmp_path, monkeypatch):
    drawn = captured(monkeypatch, plot_runs, "plot_observations")
    assert main(["plot", str(bands_file), "--out", str(tmp_path / "b.png"), "--obs", "1", "--dpi", "20"]) == 0
    rates, *_ = obs_hdus(bands_file)
    with fits.open(bands_file) as hdul:
        row = Table.read(hdul["OBS_INDEX"])[0]
    (fig,) = drawn
    (line, *others) = fig.subfigs[0].axes[0].get_lines()
    assert not others and line.get_label().endswith(f", band {row['BKG_ZEN_BAND'].strip()} model")
    np.testing.assert_array_equal(line.get_ydata(), np.where(rates[1][:, 0] > 0, rates[1][:, 0], np.nan))
    assert "not smoothed" in fig.get_suptitle().splitlines()[1]


def test_plot_without_obs_says_the_file_holds_per_observation_models(own_file, bands_file, tmp_path, capsys, monkeypatch):
    drawn = captured(monkeypatch, plot, "plot_overview")
    with fits.open(own_file) as hdul:
        n_own = int(np.char.startswith(np.char.strip(np.asarray(hdul["OBS_INDEX"].data["BKG_HDU"], dtype=str)), "BKG_OBS_").sum())
    assert main(["plot", str(own_file), "--out", str(tmp_path / "own.png"), "--dpi", "20"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bkgxr: note: {own_file} holds one model per observation ({n_own});")
    assert "--obs" in err
    assert f"{n_own} observations have their own model" in drawn[0].get_suptitle().splitlines()[2]
    # a file of band models only: nothing to say
    assert main(["plot", str(bands_file), "--out", str(tmp_path / "bands.png"), "--dpi", "20"]) == 0
    assert capsys.readouterr().err == ""
    assert len(drawn[1].get_suptitle().splitlines()) == 2


@pytest.mark.parametrize(("obs", "named"), [("3,99999", "99999"), ("77,3,78", "77, 78")])
def test_plot_obs_names_an_unknown_obs_id_in_one_line(own_file, tmp_path, capsys, obs, named):
    out = tmp_path / "x.png"
    assert main(["plot", str(own_file), "--out", str(out), "--obs", obs]) == 2
    err = capsys.readouterr().err
    assert err == f"bkgxr: error: OBS_ID {named}: not an observation of {own_file} (its 24 observations are OBS_ID 1 to 24)\n"
    assert not out.exists()


def test_plot_obs_refuses_what_is_not_an_obs_id_list(own_file, tmp_path, capsys):
    assert main(["plot", str(own_file), "--out", str(tmp_path / "x.png"), "--obs", "3,x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error: argument --obs:") and "'3,x'" in err and err.count("\n") == 1


def test_an_observation_without_a_model_is_refused(sim_store):
    zenith = dict(zip(sim_store.obs_table["OBS_ID"], sim_store.obs_table["ZEN_PNT"]))
    outside = [i for i in SIM_RUNS if zenith[i] >= 30.0]
    inside = [i for i in SIM_RUNS if zenith[i] < 30.0]
    assert outside and inside
    with pytest.warns(UserWarning, match=f"{len(outside)} run.s. outside every zenith band"):
        cube = bkgxr.build_cube(sim_store.select(QUERY), binning=bkgxr.Binning(zenith=[0.0, 30.0])).compute()
    with pytest.warns(UserWarning, match="outside every zenith band or unreadable get no bkg model"):
        models = bkgxr.predict_models(cube, sim_store, bkgxr.Recipe(zenith="bands", smoothing=None, outside="none"))
    with pytest.raises(ValueError, match=rf"^OBS_ID {outside[0]}: no model in the models \(outside every zenith band"):
        plot_runs.plot_observations(models, [inside[0], outside[0]])
    assert plt.get_fignums() == []


def series(fig):
    """(label, zenith x, time x, y, y error) of each errorbar series, drawing order, from the two panels."""
    by_zenith, by_time = fig.axes[:2]
    out = []
    for on_zenith, on_time in zip(by_zenith.containers, by_time.containers):
        assert on_zenith.get_label() == on_time.get_label()
        y = np.asarray(on_zenith.lines[0].get_ydata(), dtype=float)
        np.testing.assert_array_equal(np.asarray(on_time.lines[0].get_ydata(), dtype=float), y)
        segments = on_zenith.lines[2][0].get_segments()
        error = np.array([(s[1, 1] - s[0, 1]) / 2 for s in segments])
        out.append((on_zenith.get_label(), np.asarray(on_zenith.lines[0].get_xdata(), dtype=float),
                    np.asarray(on_time.lines[0].get_xdata(), dtype=float), y, error))
    return out


def read_csv(path):
    return pd.read_csv(io.StringIO("".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))))


def test_validate_png_draws_the_csv_ratios_with_poisson_errors_against_zenith_and_date(sim_store, simulation, tmp_path, capsys, monkeypatch):
    drawn = captured(monkeypatch, plot_runs, "plot_validation")
    png, csv = tmp_path / "v.png", tmp_path / "v.csv"
    args = ["validate", str(simulation.path), "--query", QUERY, "--quiet", "--png", str(png), "--out", str(csv)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"written: {png}" in out and plt.imread(png).std() > 0.05
    table = read_csv(csv)
    (fig,) = drawn
    ((label, x_zenith, x_time, y, error),) = series(fig)
    index = sim_store.obs_table.to_pandas().set_index("OBS_ID").loc[table["OBS_ID"]]
    np.testing.assert_array_equal(x_zenith, table["ZEN_PNT"])
    np.testing.assert_allclose(x_zenith, index["ZEN_PNT"], rtol=1e-6)  # float32 in the obs index
    np.testing.assert_allclose(y, table["RATIO"], rtol=1e-12)
    np.testing.assert_allclose(error, np.sqrt(table["OBSERVED"]) / table["PREDICTED"], rtol=1e-9)
    ratio = table["RATIO"].to_numpy()
    assert label == f"kernel+smooth: mean {ratio.mean():.3f}, std {ratio.std(ddof=1):.3f} ({len(SIM_RUNS)} runs)"
    # the date axis: TSTART is s since MJDREF, 2001-01-01 00:01:04.184 TT = 00:00:00 UTC; no leap second until 2005-12-31
    assert index["TSTART"].max() < 157_766_400  # 2006-01-01 UTC
    want = mdates.date2num(np.datetime64("2001-01-01T00:00:00") + (index["TSTART"].to_numpy() * 1e6).astype("timedelta64[us]"))
    np.testing.assert_allclose(x_time, want, atol=1e-3 / 86400, rtol=0)
    assert fig.axes[1].get_xlabel() == "TSTART (UTC)" and fig.axes[0].get_xlabel() == "ZEN_PNT (deg)"
    title = fig.get_suptitle().splitlines()
    assert title[0] == (f"leave-one-run-out validation on simulated store (query {QUERY}): {len(SIM_RUNS)} runs, "
                        "counts above each run's threshold within 2 deg")
    assert title[1] == bkgxr.DEFAULT_RECIPE.describe()


def test_validate_png_with_compare_draws_every_recipe_the_summary_prints(simulation, tmp_path, capsys, monkeypatch):
    drawn = captured(monkeypatch, plot_runs, "plot_validation")
    png = tmp_path / "compare.png"
    assert main(["validate", str(simulation.path), "--query", QUERY, "--quiet", "--compare", "--zenith-model", "bands", "--png", str(png)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "obs/pred mean" in line]
    (fig,) = drawn
    drawn_series = series(fig)
    assert len(drawn_series) == len(printed) == 12  # the chosen recipe and the 11 others of --compare
    for (label, _, _, y, _), line in zip(drawn_series, printed):
        name, rest = (part.strip() for part in line.split(":", 1))
        mean, std = (float(rest.split(word)[1].split()[0]) for word in (" mean ", " std "))
        assert label.startswith(f"{name}: mean {mean:.3f}, std {std:.3f}")
        assert np.nanmean(y) == pytest.approx(mean, abs=5e-4)
    assert drawn_series[0][0].startswith("bands+smooth:") and fig.get_suptitle().splitlines()[2] == "in colour: the 11 other models"
    assert fig.legends and len(fig.legends[0].get_texts()) == 12


def test_validate_png_dates_are_the_hess_obs_index_dates(hess_dir, tmp_path, monkeypatch):
    drawn = captured(monkeypatch, plot_runs, "plot_validation")
    query = f"OBS_ID in {HESS_RUNS}"
    assert main(["validate", str(hess_dir), "--query", query, "--quiet", "--png", str(tmp_path / "hess.png")]) == 0
    ((_, _, x_time, _, _),) = series(drawn[0])
    index = Table.read(hess_dir / "obs-index.fits.gz").to_pandas().set_index("OBS_ID").loc[HESS_RUNS]
    # DATE-OBS/TIME-OBS are TT clock readings; UTC is 64.184 s behind in 2004-2005 (32 leap seconds + 32.184 s)
    tt = pd.to_datetime(index["DATE-OBS"].str.decode("ascii") + "T" + index["TIME-OBS"].str.decode("ascii")).to_numpy()
    np.testing.assert_allclose(x_time, mdates.date2num(tt - np.timedelta64(64184, "ms")), atol=1e-3 / 86400, rtol=0)
    assert drawn[0].get_suptitle().startswith(f"leave-one-run-out validation on hess-dl3-dr1 (query {query}): 8 runs")


@pytest.mark.parametrize("target", ["obs-index.fits.gz", "same"])
def test_validate_png_refuses_a_store_file_or_the_csv_before_reading_runs(simulation, tmp_path, capsys, monkeypatch, target):
    monkeypatch.setattr("bkgxr.cli._cube", lambda args: pytest.fail("runs were read"))
    csv = tmp_path / "v.csv"
    png = simulation.path / target if target != "same" else csv
    before = png.read_bytes() if png.exists() else None
    assert main(["validate", str(simulation.path), "--quiet", "--png", str(png), "--out", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error: ") and err.count("\n") == 1 and str(png.name) in err
    assert (png.read_bytes() if png.exists() else None) == before and not csv.exists()
