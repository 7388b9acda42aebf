import numpy as np
import pytest
from astropy.io import fits

from bkgxr.cli import main


def test_build_writes_models_and_prints_the_summary(hess_dir, hess_cube, tmp_path, capsys):
    out = tmp_path / "bkg.fits"
    args = ["build", str(hess_dir), "--out", str(out), "--quiet", "--date", "2026-01-01", "--runs", "off",
            "--zenith-model", "bands", "--no-smooth", "--no-nodes"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert 'TARGET_NAME == "Off data"' in text
    for label, runs, events in zip(["0-20", "20-40", "40-90"], hess_cube["n_runs"].values, hess_cube["counts"].sum(("energy", "offset")).values):
        assert f"{label:>18} {runs:>6} {int(events):>10}" in text
    # the absolute path, and which models the file holds: bands only, every observation pointing to its band's
    assert f"written: {out.absolute()}: 3 zenith-band BKG_2D models (BKG_ZEN_*), each of the 105 observations" in text
    np.testing.assert_array_equal(
        fits.getdata(out, "BKG_ZEN_20_40")["BKG"][0].T, hess_cube["rate"].sel(zenith=30).values
    )


def test_build_with_custom_edges_and_query(hess_dir, tmp_path, capsys):
    out = tmp_path / "bkg.fits"
    code = main(
        ["build", str(hess_dir), "--out", str(out), "--quiet", "--query", "OBS_ID < 30000 and TARGET_NAME == 'Off data'",
         "--energy-edges", "0.5,1,10", "--offset-edges", "0,1,2", "--zenith-edges", "0,30,60"]
    )
    assert code == 0
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[4:6]] == ["BKG_ZEN_0_30", "BKG_ZEN_30_60"]
        assert len(hdul) == 6 + 105  # and one kernel model per observation
        assert hdul[4].data["BKG"][0].shape == (2, 2)
        np.testing.assert_allclose(hdul[4].data["ENERG_LO"][0], [0.5, 1])


def test_errors_print_one_line_and_exit_non_zero(hess_dir, tmp_path, capsys):
    assert main(["build", str(tmp_path), "--out", str(tmp_path / "x.fits"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error:") and "hdu-index" in err and err.count("\n") == 1
    assert main(["build", str(hess_dir), "--out", str(tmp_path / "x.fits"), "--query", "TARGET_NAME == 'none'", "--quiet"]) == 1
    err = capsys.readouterr().err  # the query as given, no internals
    assert err == f"bkgxr: error: no run of {hess_dir.resolve()} matches --query \"TARGET_NAME == 'none'\"; its obs index has 105 runs\n"
    assert not (tmp_path / "x.fits").exists()


def test_cli_options_make_the_recipe_with_the_api_defaults():
    import bkgxr
    from bkgxr.cli import recipe_of
    from bkgxr.cli_parser import build_parser

    parser = build_parser()
    assert recipe_of(parser.parse_args(["build", "x", "--out", "y"])) == bkgxr.DEFAULT_RECIPE
    assert recipe_of(parser.parse_args(["validate", "x"])) == bkgxr.DEFAULT_RECIPE
    given = parser.parse_args(
        ["build", "x", "--out", "y", "--zenith-model", "bands", "--no-smooth", "--time-sigma", "0", "--deadtime", "livetime",
         "--kernel-sigma", "0.1", "--outside", "none", "--no-nodes", "--efficiency-scaling"]
    )
    assert recipe_of(given) == bkgxr.Recipe(
        zenith="bands", smoothing=None, time_sigma=None, deadtime="livetime", kernel_sigma=0.1, outside="none", nodes=False,
        efficiency_scaling=True,
    )


def test_build_states_the_zenith_model_in_summary_and_header(hess_dir, tmp_path, capsys):
    out = tmp_path / "bkg.fits"
    assert main(["build", str(hess_dir), "--out", str(out), "--quiet", "--time-sigma", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "zenith model: kernel (kernel sigma 0.03 in cos z, time sigma 0.5 yr)" in text
    assert f"written: {out.absolute()}: one BKG_2D model per observation (105 HDUs BKG_OBS_<OBS_ID>) and 3 zenith-band" in text
    header = fits.getheader(out, 0)
    assert header["ZENMODEL"] == "kernel" and header["KTSIGMA"] == 0.5 and header["SMOOTH"]
    index = fits.getdata(out, "HDU_INDEX")
    assert set(index["HDU_NAME"][index["HDU_TYPE"] == "bkg"]) == {f"BKG_OBS_{i}" for i in fits.getdata(out, "OBS_INDEX")["OBS_ID"]}


def test_validate_prints_runs_and_summaries_and_writes_csv(hess_dir, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "v.csv"
    assert main(["validate", str(hess_dir), "--runs", "off", "--quiet", "--compare", "--zenith-model", "bands", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "                   bands:   45 runs, obs/pred mean 0.992 std 0.319" in text  # events in the band of their time
    assert "                  kernel:   45 runs, obs/pred mean 0.988 std 0.158" in text and "interpolate:   45 runs" in text
    assert "     kernel+smooth+deadc:   45 runs, obs/pred mean 0.984 std 0.161" in text
    assert "   kernel+smooth+muoneff:   45 runs, obs/pred mean 0.979 std 0.153" in text  # the efficiency scaling
    summaries = [line for line in text.splitlines() if " runs, obs/pred mean " in line]
    assert len(summaries) == 14 and len({line.index(":") for line in summaries}) == 1  # aligned
    table = pd.read_csv(out, comment="#")
    assert len(table) == 45 and abs(table["RATIO"].std() - 0.318) < 0.001  # bands + smoothing
    # degrees of freedom are integers named NDF*, the summary's *_ndf are ratios of sums
    assert table["OBSERVED"].dtype.kind == "i" and table["NDF"].dtype.kind == "i" and table["NDF_CHI2"].dtype.kind == "i"
    header = dict(line[2:].split(": ") for line in out.read_text().splitlines() if line.startswith("# "))
    assert float(header["chi2_ndf"]) == pytest.approx(table["CHI2"].sum() / table["NDF_CHI2"].sum())
    assert float(header["deviance_ndf"]) == pytest.approx(table["DEVIANCE"].sum() / table["NDF"].sum())
    assert f"chi2/ndf {float(header['chi2_ndf']):.3f}" in text
    row = text.splitlines()[next(i for i, line in enumerate(text.splitlines()) if "OBSERVED" in line) + 1].split()
    assert row[2] == str(table["OBSERVED"][0])  # printed as an integer


def test_build_uses_every_run_outside_its_target_circle_by_default(hess_dir, hess_store, tmp_path, capsys):
    out = tmp_path / "all.fits"
    assert main(["build", str(hess_dir), "--out", str(out), "--quiet", "--date", "2026-01-01"]) == 0
    text = capsys.readouterr().out
    assert "selection: every run (no query)" in text
    runs = fits.getdata(out, "RUNS")
    assert len(runs) == 105 and runs["USED"].all()
    on = np.asarray([str(t).strip() != "Off data" for t in hess_store.obs_table["TARGET_NAME"]])
    kept = dict(zip(runs["OBS_ID"], runs["KEPT"]))  # per run, the fraction of each offset ring kept
    assert all(kept[i].min() < 1 for i in hess_store.obs_table["OBS_ID"][on])  # 0.5 deg around each target
    assert all((kept[i] == 1).all() for i in hess_store.obs_table["OBS_ID"][~on])


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--kernel-sigma", "inf", "argument --kernel-sigma: 'inf' is not a finite number"),
        ("--kernel-sigma", "nan", "argument --kernel-sigma: 'nan' is not a finite number"),
        ("--kernel-sigma", "-0.1", "argument --kernel-sigma: must be > 0"),
        ("--offset-edges", "-1,1", "argument --offset-edges: expected one argument; a value starting with '-' is given as"),
        ("--kernel-sigma", "0", "argument --kernel-sigma: must be > 0"),
        ("--kernel-sigma=", "-1", "argument --kernel-sigma: must be > 0"),
        ("--time-sigma", "1e999", "argument --time-sigma: '1e999' is not a finite number"),
        ("--efficiency-sigma", "x", "argument --efficiency-sigma: 'x' is not a number"),
        ("--exclude-radius", "nan", "argument --exclude-radius: 'nan' is not a finite number"),
        ("--energy-edges", "1,inf", "argument --energy-edges: 'inf' is not a finite number"),
        ("--energy-edges", "3,1", "argument --energy-edges: edges must be two or more strictly increasing"),
        ("--zenith-edges", "20", "argument --zenith-edges: edges must be two or more"),
        ("--workers", "0", "argument --workers: must be >= 1"),
        ("--workers", "100000", "argument --workers: at most"),
        ("--date", "2026-13-01", "argument --date: expected an ISO date"),
        ("--date", "é", "argument --date: expected an ISO date"),
        ("--out", "newdir/", "argument --out: 'newdir/' names a folder"),
        ("--out", "newdir/..", "argument --out: 'newdir/..' names a folder"),
        ("--out", "", "argument --out: '' names a folder"),
    ],
)
def test_bad_option_values_are_one_line_naming_the_option(sim_store, tmp_path, capsys, monkeypatch, option, value, says):
    monkeypatch.chdir(tmp_path)
    args = ["build", str(sim_store.root), "--quiet"] + (["--out", "m.fits"] if option != "--out" else [])
    given = [option + value] if option.endswith("=") else [option, value]
    assert main([*args, *given]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bkgxr: error: {says}") and err.endswith("(see bkgxr build --help)\n") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, no file named newdir


def test_out_with_a_trailing_slash_is_refused_through_the_api_too(sim_store, tmp_path):
    from bkgxr.io.write import check_output

    for out in (f"{tmp_path}/newdir/", f"{tmp_path}/newdir/.", str(tmp_path)):
        with pytest.raises(IsADirectoryError, match="folder"):
            check_output(out, store=sim_store)
    assert list(tmp_path.iterdir()) == []


def test_version_and_simulate_name_the_cli_spelling(tmp_path, capsys):
    import bkgxr

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"bkgxr {bkgxr.__version__}\n"
    out = tmp_path / "store"
    assert main(["simulate", str(out), "--runs", "2", "--events-per-run", "100", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["simulate", str(out), "--runs", "2", "--events-per-run", "100", "--quiet"]) == 1
    assert capsys.readouterr().err == f"bkgxr: error: {out} already holds a store; pass --overwrite to replace it\n"
    assert main(["simulate", str(out), "--runs", "2", "--events-per-run", "1e12", "--quiet"]) == 2
    assert "argument --events-per-run: at most 1e+08" in capsys.readouterr().err


def test_simulate_track_draws_along_the_zenith_track_as_the_api_does(tmp_path, capsys):
    """--track writes SIMTRACK (slices per run) into the obs-index header and the API's tracked store; without it neither."""
    from bkgxr.simulate import TRACK_SLICES, simulate_store

    options = ["--runs", "2", "--events-per-run", "200", "--seed", "3", "--date", "2026-01-01", "--quiet"]
    assert main(["simulate", str(tmp_path / "tracked"), *options, "--track"]) == 0
    assert main(["simulate", str(tmp_path / "plain"), *options]) == 0
    capsys.readouterr()
    tracked, plain = (fits.getheader(tmp_path / name / "obs-index.fits.gz", 1) for name in ("tracked", "plain"))
    assert tracked["SIMTRACK"] == TRACK_SLICES
    assert "SIMTRACK" not in plain
    api = simulate_store(tmp_path / "api", n_runs=2, events_per_run=200, seed=3, date="2026-01-01", track=True)
    for name in ("tracked", "plain"):
        got = fits.getdata(tmp_path / name / "obs-index.fits.gz", 1)["EVENT_COUNT"]
        assert np.array_equal(got, api.runs["EVENT_COUNT"]) == (name == "tracked"), name
    assert main(["simulate", "--help"]) == 0
    assert f"--track draw each run's events along its pointing's zenith track ({TRACK_SLICES} slices" in " ".join(
        capsys.readouterr().out.split())  # the help says what the simulator does


def test_non_ascii_paths_are_refused_before_the_build_unless_the_index_can_hold_them(simulation, tmp_path, capsys):
    """FITS strings are ASCII: a non-ASCII folder shared by store and output works (gammapy loads it), the others are refused."""
    import shutil

    from gammapy.data import DataStore

    root = tmp_path / "jürgen"
    store = shutil.copytree(simulation.path, root / "store")
    shared = root / "models.fits"
    assert main(["build", str(store), "--out", str(shared), "--quiet", "--zenith-model", "bands"]) == 0
    obs = DataStore.from_file(shared).obs(1)  # the relative FILE_DIR 'store/data' resolves
    assert obs.bkg is not None and len(obs.events.table) > 0
    capsys.readouterr()
    for out, says in [(root / "módels.fits", "the output name is not ASCII"),
                      (tmp_path / "models.fits", "its HDU index would name the store's folder 'jürgen/store/data', not ASCII")]:
        assert main(["build", str(store), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1 and not out.exists()
