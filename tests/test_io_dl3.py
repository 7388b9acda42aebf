"""DL3 writer: every HDU read back by gammapy as written, laid out as gammapy's own writer, and the
simulated IRFs checked against their formulas and against gammapy's use of them."""

import gzip
import io

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from bkgxr.io.dl3 import (
    RUN_HDUS,
    create_aeff_2d_hdu,
    create_edisp_2d_hdu,
    create_events_hdu,
    create_gti_hdu,
    create_psf_table_hdu,
    write_gz,
    write_run,
)
from bkgxr.rate_model import RateModel
from bkgxr.simirf import (
    IRF_ENERGY,
    IRF_MIGRA,
    IRF_OFFSET,
    IRF_OFFSET_FLAT,
    IRF_RAD,
    IrfModel,
)

#: Irregular edges: true energy (TeV), offset (deg), migra, PSF radius (deg).
ENERGY, OFFSET, MIGRA, RAD = np.array([0.1, 0.3, 1.0, 2.0, 10.0, 50.0]), np.array([0.0, 0.7, 1.5, 3.0]), \
    np.array([0.2, 0.6, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0]), np.array([0.0, 0.02, 0.05, 0.1, 0.3])


def _irfs(rng):
    shapes = {"aeff": (5, 3), "edisp": (5, 7, 3), "psf": (5, 3, 4)}
    data = {name: rng.uniform(0.0, 100.0, shape) for name, shape in shapes.items()}
    hdus = {
        "aeff": create_aeff_2d_hdu(data["aeff"], ENERGY, OFFSET, meta={"LO_THRES": 0.3, "HI_THRES": 50.0}),
        "edisp": create_edisp_2d_hdu(data["edisp"], ENERGY, MIGRA, OFFSET),
        "psf": create_psf_table_hdu(data["psf"], ENERGY, OFFSET, RAD),
    }
    return data, hdus


def test_gammapy_reads_each_irf_as_written_and_lays_it_out_the_same(tmp_path):
    from gammapy.irf import PSF3D, EffectiveAreaTable2D, EnergyDispersion2D

    data, hdus = _irfs(np.random.default_rng(0))
    path = tmp_path / "irfs.fits"
    fits.HDUList([fits.PrimaryHDU(), *hdus.values()]).writeto(path)
    classes = {"aeff": (EffectiveAreaTable2D, "AEFF", "m2"), "edisp": (EnergyDispersion2D, "EDISP", ""),
               "psf": (PSF3D, "PSF", "sr-1")}
    for name, (cls, extname, unit) in classes.items():
        irf = cls.read(path, hdu=extname)
        np.testing.assert_array_equal(irf.quantity.to_value(unit), data[name])
        np.testing.assert_allclose(irf.axes["energy_true"].edges.to_value("TeV"), ENERGY, rtol=1e-15)
        np.testing.assert_array_equal(irf.axes["offset"].edges.to_value("deg"), OFFSET)
        # the same columns, shapes and TDIM as gammapy writes for the same IRF
        reference = irf.to_table_hdu()
        for column in reference.columns:
            ours = hdus[name].columns[column.name]
            assert (ours.dim or None) == (column.dim or None) or reference.data[column.name].ndim == 2, column.name
            np.testing.assert_allclose(hdus[name].data[column.name], reference.data[column.name], rtol=1e-15)
        for key in ("HDUCLASS", "HDUCLAS1", "HDUCLAS2", "HDUCLAS3", "HDUCLAS4"):
            assert hdus[name].header[key] == reference.header[key], (name, key)
    np.testing.assert_array_equal(EnergyDispersion2D.read(path, hdu="EDISP").axes["migra"].edges, MIGRA)
    np.testing.assert_array_equal(PSF3D.read(path, hdu="PSF").axes["rad"].edges.to_value("deg"), RAD)


def test_bad_values_shapes_and_edges_are_refused():
    data, _ = _irfs(np.random.default_rng(1))
    with pytest.raises(ValueError, match="EFFAREA has shape"):
        create_aeff_2d_hdu(data["aeff"].T, ENERGY, OFFSET)
    with pytest.raises(ValueError, match="negative MATRIX"):
        create_edisp_2d_hdu(-data["edisp"], ENERGY, MIGRA, OFFSET)
    with pytest.raises(ValueError, match="non-finite"):
        create_psf_table_hdu(np.where(data["psf"] > 50, np.nan, data["psf"]), ENERGY, OFFSET, RAD)
    with pytest.raises(ValueError, match="THETA edges must be increasing"):
        create_aeff_2d_hdu(data["aeff"], ENERGY, OFFSET[::-1])


def test_run_files_have_the_hdus_in_order_with_their_sizes_and_reproducible_bytes(tmp_path):
    _, irfs = _irfs(np.random.default_rng(2))
    header = {"OBS_ID": 7, "TSTART": 10.0, "TSTOP": 40.0}
    columns = {"EVENT_ID": np.arange(1, 4), "TIME": np.array([11.0, 20.0, 39.0]), "RA": np.zeros(3), "DEC": np.ones(3),
               "ENERGY": np.array([0.5, 1.0, 2.0])}
    hdus = [create_events_hdu(columns, header), create_gti_hdu(10.0, 40.0, header), *irfs.values()]
    with pytest.raises(ValueError, match="a run file holds"):
        write_run(tmp_path / "wrong.fits.gz", hdus[::-1])
    sizes = write_run(tmp_path / "a.fits.gz", hdus)
    write_run(tmp_path / "b.fits.gz", hdus)
    raw = (tmp_path / "a.fits.gz").read_bytes()
    assert raw == (tmp_path / "b.fits.gz").read_bytes() and raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with fits.open(io.BytesIO(gzip.decompress(raw))) as hdul:
        assert [hdu.name for hdu in hdul[1:]] == [name for name, _, _ in RUN_HDUS]
        spans = [info["datLoc"] - info["hdrLoc"] + info["datSpan"] for info in (hdu.fileinfo() for hdu in hdul[1:])]
        assert sizes == spans
        np.testing.assert_array_equal(hdul["EVENTS"].data["ENERGY"], columns["ENERGY"])
        assert hdul["GTI"].data["STOP"][0] - hdul["GTI"].data["START"][0] == 30.0
    assert not list(tmp_path.glob(".*.part"))
    target = tmp_path / "c.fits.gz"
    write_gz(fits.HDUList([fits.PrimaryHDU()]), target, 9)  # the level is capped at 3: still a valid gzip
    assert fits.getheader(target)["SIMPLE"]


# --- the simulated store's IRFs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def irf_store(tmp_path_factory):
    from bkgxr.simulate import simulate_store

    return simulate_store(tmp_path_factory.mktemp("irf") / "store", n_runs=3, events_per_run=200, seed=5,
                          zenith_range=(0.0, 60.0), date="2026-01-01")


def test_gammapy_loads_aeff_edisp_psf_of_every_observation(irf_store):
    from gammapy.data import DataStore

    for data_store in (DataStore.from_file(irf_store.path / "hdu-index.fits.gz"), DataStore.from_dir(irf_store.path)):
        observations = data_store.get_observations(list(irf_store.runs["OBS_ID"]), required_irf=["aeff", "edisp", "psf"])
        assert len(observations) == len(irf_store.runs)
    hdus = data_store.hdu_table
    sizes = {}
    for path in sorted({irf_store.path / "data" / name for name in hdus["FILE_NAME"]}):
        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                info = hdu.fileinfo()
                sizes[path.name, hdu.name] = info["datLoc"] - info["hdrLoc"] + info["datSpan"]
    assert [sizes[row["FILE_NAME"], row["HDU_NAME"]] for row in hdus] == list(hdus["SIZE"])


def test_simulated_aeff_is_the_documented_formula(irf_store):
    from gammapy.data import DataStore

    data_store = DataStore.from_dir(irf_store.path)
    model = irf_store.model
    energy, offset = np.sqrt(IRF_ENERGY[1:] * IRF_ENERGY[:-1]), 0.5 * (IRF_OFFSET[1:] + IRF_OFFSET[:-1])
    for _, run in irf_store.runs.iterrows():
        aeff = data_store.obs(int(run["OBS_ID"]), required_irf=["aeff"]).aeff
        threshold = 0.2 / np.cos(np.radians(run["ZEN_PNT"])) ** 2.5  # RateModel's defaults, written out
        expected = 1e5 / (1 + (threshold / energy[:, None]) ** 4) * np.exp(-(offset[None, :] ** 2) / (2 * 1.5**2))
        np.testing.assert_allclose(aeff.quantity.to_value("m2"), expected, rtol=1e-12)
        assert aeff.meta["LO_THRES"] == pytest.approx(run["SAFE_ENERGY_LO"], rel=1e-6)
        assert aeff.meta["HI_THRES"] == model.energy_max
        # gammapy interpolates it: at a bin centre it gives the value
        value = aeff.evaluate(energy_true=energy[20] * u.TeV, offset=offset[3] * u.deg).to_value("m2")
        assert value == pytest.approx(expected[20, 3], rel=1e-9)
    with fits.open(data_store.hdu_table.hdu_location(1, "aeff").path()) as hdul:
        assert "1 + (E_thr / E)^4" in str(hdul["AEFF"].header["COMMENT"]).replace("\n", "")


def test_simulated_edisp_is_a_gaussian_of_ten_percent_without_bias(irf_store):
    from gammapy.data import DataStore

    edisp = DataStore.from_dir(irf_store.path).obs(1, required_irf=["edisp"]).edisp
    matrix = edisp.quantity.to_value("")  # (energy, migra, offset)
    migra, width = edisp.axes["migra"].center.value, np.diff(edisp.axes["migra"].edges.value)
    probability = np.einsum("emo,m->eo", matrix, width)
    np.testing.assert_allclose(probability, 1.0, atol=1e-12)  # the tails beyond 0.2 and 2.0 are < 1e-15
    mean = np.einsum("emo,m->eo", matrix, width * migra)
    std = np.sqrt(np.einsum("emo,m->eo", matrix, width * migra**2) - mean**2)
    np.testing.assert_allclose(mean, 1.0, atol=1e-12)
    np.testing.assert_allclose(std, np.sqrt(0.1**2 + np.mean(width) ** 2 / 12), rtol=1e-3)  # Sheppard: bins of 0.02
    # gammapy's kernel in reconstructed energy: 10 % resolution, no bias
    from gammapy.maps import MapAxis

    reco = MapAxis.from_energy_bounds(0.1, 10, 200, unit="TeV")
    kernel = edisp.to_edisp_kernel(offset=1 * u.deg, energy_axis=reco)
    assert float(kernel.get_resolution(1 * u.TeV)[0]) == pytest.approx(0.1, rel=0.02)
    assert abs(float(kernel.get_bias(1 * u.TeV)[0])) < 0.005


def test_simulated_psf_is_a_normalised_gaussian_of_a_tenth_of_a_degree(irf_store):
    from gammapy.data import DataStore

    psf = DataStore.from_dir(irf_store.path).obs(2, required_irf=["psf"]).psf
    np.testing.assert_array_equal(psf.axes["rad"].edges.to_value("deg"), IRF_RAD)
    np.testing.assert_array_equal(psf.axes["offset"].edges.to_value("deg"), IRF_OFFSET_FLAT)
    rad = np.radians(psf.axes["rad"].center.to_value("deg"))
    density = psf.quantity.to_value("sr-1")  # (energy, offset, rad)
    expected = np.exp(-(rad**2) / (2 * np.radians(0.1) ** 2)) / (2 * np.pi * np.radians(0.1) ** 2)
    np.testing.assert_allclose(density, np.broadcast_to(expected, density.shape), rtol=1e-12)
    enclosed = np.sum(density * 2 * np.pi * np.sin(rad) * np.diff(np.radians(IRF_RAD)), axis=-1)
    np.testing.assert_allclose(enclosed, 1.0, rtol=1e-3)
    radius = psf.containment_radius(0.68, energy_true=[0.3, 3, 30] * u.TeV, offset=1 * u.deg).to_value("deg")
    np.testing.assert_allclose(radius, 0.1 * np.sqrt(-2 * np.log(1 - 0.68)), rtol=0.01)


def test_irf_model_checks_its_parameters_and_axes_cover_the_analysis():
    with pytest.raises(ValueError, match="finite and positive"):
        IrfModel(psf_sigma=0.0)
    assert IRF_ENERGY[0] < RateModel().energy_min and IRF_ENERGY[-1] > RateModel().energy_max
    assert IRF_OFFSET[-1] >= 5 and IRF_MIGRA[0] < 1 - 7 * IrfModel().energy_resolution
