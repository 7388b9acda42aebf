"""Field validation (bkgxr.fields) against simulated truth, an independent spectral fit and the DR1 obs index.

The simulated store's runs point at random sky positions, so each run is a field of
its own, with an exclusion circle at its pointing; every field is held out of the
training runs (leave-one-field-out = leave-one-run-out here). The truth does not
depend on zenith, so a model from the other runs is unbiased: gammapy's FoV norms
must be 1 within their Poisson errors and the significance width 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_RUNS, EVENTS, SEED = 6, 20_000, 7
#: Coarser maps and fewer energy bins than the defaults keep the test fast; 0.3-30 TeV holds
#: about half of each run's events (turn-on at 0.2 TeV). gammapy integrates the bkg over an energy
#: bin from its edges by default: over these wide bins near the turn-on that alone biases the norms
#: by ~1 %, so the bkg is oversampled x4 as in tests/test_gammapy_chain.py.
SETTINGS = {"energy_edges_tev": tuple(np.geomspace(0.3, 30.0, 6)), "binsz_deg": 0.05, "background_oversampling": 4}
#: The cube binning: one zenith band holding every run; fine energy and offset bins, because bkgxr
#: writes bin averages that gammapy reads as values at bin centres (with the default binning
#: gammapy predicts ~4-8 % too few counts: the xfail of tests/test_gammapy_chain.py).
ZENITH = (20.0, 40.0)
BINNING = {"zenith": ZENITH, "energy": np.geomspace(0.1, 100.0, 61), "offset": np.linspace(0.0, 3.0, 31)}


@pytest.fixture(scope="module")
def field_store(tmp_path_factory: pytest.TempPathFactory):
    """Six simulated runs whose rate does not depend on zenith, and one field per run."""
    from bkgxr.exclusion import Circle
    from bkgxr.fields import Field
    from bkgxr.rate_model import RateModel
    from bkgxr.simulate import simulate_store

    model = RateModel(norm_sec_power=0.0, threshold_sec_power=0.0)
    sim = simulate_store(tmp_path_factory.mktemp("fields") / "store", n_runs=N_RUNS, events_per_run=EVENTS,
                         seed=SEED, zenith_range=ZENITH, model=model, date="2026-01-01")
    fields = [Field(f"run {int(r.OBS_ID)}", (int(r.OBS_ID),), float(r.RA_PNT), float(r.DEC_PNT),
                    (Circle(float(r.RA_PNT), float(r.DEC_PNT), 0.3),)) for r in sim.runs.itertuples()]
    return sim, fields


def _scaled_models(factor: float):
    """A make_models that writes bkgxr's default models times ``factor``."""
    import bkgxr

    def make_models(store, train_runs, field_runs, path: Path) -> Path:
        cube = bkgxr.build_cube(train_runs, binning=bkgxr.Binning(**BINNING)).compute()
        models = bkgxr.predict_models(cube, store)
        models = models.assign(rate=models["rate"] * factor, obs_rate=models["obs_rate"] * factor)
        return bkgxr.write_models(models, path, store=store, date="2026-01-01")

    return make_models


@pytest.fixture(scope="module")
def validations(field_store):
    import bkgxr
    from bkgxr.field_analysis import AnalysisSettings
    from bkgxr.fields import models_from_recipe, validate_fields

    sim, fields = field_store
    settings = AnalysisSettings(**SETTINGS)
    default = validate_fields(sim.path, make_models=models_from_recipe(binning=bkgxr.Binning(**BINNING)),
                              fields=fields, train_query=None, published=False, settings=settings)
    scaled = validate_fields(sim.path, make_models=_scaled_models(1.2), fields=fields, train_query=None,
                             published=False, label="x1.2", settings=settings)
    return default, scaled


@pytest.mark.slow
def test_default_model_norms_are_one_within_poisson_errors(validations) -> None:
    default, _ = validations
    runs = pd.concat([r.runs for r in default.results.values()])
    assert len(runs) == N_RUNS and np.all(np.isfinite(runs["NORM"]))
    pull = (runs["NORM"] - 1.0) / runs["NORM_ERR"]
    # Poisson error of each run's counts; the model of 5 other runs adds ~1/sqrt(5) of it
    assert np.all(np.abs(pull) < 3.5 * np.sqrt(1 + 1 / (N_RUNS - 1))), runs
    assert abs(pull.mean()) < 3.0 / np.sqrt(N_RUNS), runs
    assert np.all(runs["NORM_ERR"] < 0.03)


@pytest.mark.slow
def test_default_model_significance_is_standard_normal_outside_exclusion(validations) -> None:
    default, _ = validations
    table = default.table()
    assert (table["n_pixels"] > 500).all()
    assert np.all(np.abs(table["sig_width"] - 1.0) < 0.1), table
    assert np.all(np.abs(table["sig_mean"]) < 0.1), table


@pytest.mark.slow
def test_model_scaled_by_1_2_gives_norms_over_1_2(validations) -> None:
    default, scaled = validations
    for f in default.fields:
        ref, got = default.results[f.name, "bkgxr"].runs, scaled.results[f.name, "x1.2"].runs
        # gammapy's scale norm is counts / background outside the exclusion: exactly 1/1.2 of the default's
        np.testing.assert_allclose(got["NORM"], ref["NORM"] / 1.2, rtol=1e-5)
        assert np.all(np.abs(got["NORM"] * 1.2 - 1.0) < 3.5 * got["NORM_ERR"] * 1.2)
        np.testing.assert_allclose(got["FIT_NORM"], ref["FIT_NORM"] / 1.2, rtol=2e-3)
        np.testing.assert_allclose(got["FIT_TILT"], ref["FIT_TILT"], atol=2e-3)


@pytest.mark.slow
def test_norm_and_tilt_match_an_independent_poisson_fit_of_the_spectrum(validations) -> None:
    """With a spectral-only FoV model the Cash likelihood depends on the pixels only through the
    per-energy sums, so scipy's fit of the summed spectrum must give gammapy's norm and tilt."""
    from scipy.optimize import minimize

    default, _ = validations
    for result in default.results.values():
        run = result.runs.iloc[0]
        spec = result.spectrum[result.spectrum["NPRED_NORM"] > 0]
        counts = spec["COUNTS"].to_numpy()
        raw = spec["NPRED_NORM"].to_numpy() / run["NORM"]  # the model's background before the norm
        energy = np.sqrt(spec["E_LO"] * spec["E_HI"]).to_numpy()

        def cash(p, counts=counts, raw=raw, energy=energy):
            mu = raw * p[0] * energy ** (-p[1])
            return float(np.sum(mu - counts * np.log(mu)))

        fit = minimize(cash, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-9})
        np.testing.assert_allclose([run["FIT_NORM"], run["FIT_TILT"]], fit.x, atol=2e-3)
        np.testing.assert_allclose(spec["NPRED_TILT"], raw * fit.x[0] * energy ** (-fit.x[1]), rtol=5e-3)
        chi2 = float(np.sum((counts - spec["NPRED_NORM"]) ** 2 / spec["NPRED_NORM"]))
        assert result.summary()["chi2_norm"] == pytest.approx(chi2)
        assert result.summary()["ndf_norm"] == len(spec) - 1


@pytest.mark.slow
def test_report_table_csv_and_plot(validations, tmp_path: Path) -> None:
    default, _ = validations
    text = str(default)
    for f in default.fields:
        s = default.results[f.name, "bkgxr"].summary()
        assert f"| {f.name} (1) | {s['sig_mean']:+.2f} | {s['sig_width']:.2f} |" in text
    paths = default.write(tmp_path)
    assert len(paths) == N_RUNS
    back = pd.read_csv(paths[0], comment="#")
    pd.testing.assert_frame_equal(back.drop(columns="MODEL"), default.results[default.fields[0].name, "bkgxr"].runs,
                                  check_dtype=False)
    png = default.plot(tmp_path / "fields.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in paths), "fields.png"])  # no temporary left


def test_training_groups_hold_out_fields_or_runs() -> None:
    from bkgxr.fields import Field, _training_groups

    pool = pd.DataFrame({"OBS_ID": [1, 2, 3, 4, 5]})
    fields = [Field("a", (1, 2), 0.0, 0.0, ()), Field("b", (9,), 0.0, 0.0, ())]
    assert _training_groups(pool, fields, "field") == [((3, 4, 5), [1, 2]), ((1, 2, 3, 4, 5), [9])]
    assert _training_groups(pool, fields, "run") == [((2, 3, 4, 5), [1]), ((1, 3, 4, 5), [2]), ((1, 2, 3, 4, 5), [9])]


def test_dr1_source_fields_follow_the_obs_index(hess_dir: Path) -> None:
    from astropy.table import Table

    import bkgxr
    from bkgxr.fields import TARGET_RADIUS_DEG, source_fields

    fields = {f.name: f for f in source_fields(bkgxr.open_store(hess_dir).select())}
    table = Table.read(hess_dir / "obs-index.fits.gz")
    index = pd.DataFrame({"OBS_ID": np.asarray(table["OBS_ID"], dtype=np.int64), "TARGET_NAME": [str(n).strip() for n in table["TARGET_NAME"]]})
    names = index["TARGET_NAME"]
    expected = {"Crab": "Crab", "MSH 15-52": "MSH 15-52", "PKS 2155-304": "PKS 2155-304 (", "RX J1713.7-3946": "RX J1713"}
    assert set(fields) == set(expected)
    for name, prefix in expected.items():
        ids = sorted(index.loc[names.str.startswith(prefix), "OBS_ID"].astype(int))
        assert sorted(fields[name].obs_ids) == ids
        first = fields[name].exclusion[0]
        assert first.radius_deg == TARGET_RADIUS_DEG[name]
        assert (first.ra_deg, first.dec_deg) == (fields[name].ra_deg, fields[name].dec_deg)
    assert [len(fields[n].obs_ids) for n in sorted(fields)] == [4, 20, 21, 15]
    # the scan runs of the RX J1713.7-3946 field do not move its centre off the shell
    assert fields["RX J1713.7-3946"].ra_deg == pytest.approx(258.3879, abs=1e-3)
