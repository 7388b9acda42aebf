"""Plots of the H.E.S.S. off-run cube, read_models round trip and the ``bkgxr plot`` command."""

import struct

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from astropy.io import fits
from matplotlib.colors import LogNorm
from reference import band_ontime

import bkgxr
from bkgxr import plot, read_models
from bkgxr.cli import main
from bkgxr.exceptions import StoreError, UnitError

BANDS = ["0-20", "20-40", "40-90"]
RATE_UNITS = "1 / (MeV s sr)"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


#: Not smoothed, bin averages: the band models written are the cube's own rates.
RECIPE = bkgxr.Recipe(smoothing=None, nodes=False)


@pytest.fixture(scope="module")
def written(hess_store, hess_cube, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "bkg.fits"
    return bkgxr.write_models(bkgxr.predict_models(hess_cube, hess_store, RECIPE), path, store=hess_store, date="2026-01-01")


def masked(values):
    """Values as the plots show them: zeros (no counts) masked."""
    return np.ma.masked_equal(np.asarray(values, dtype=float), 0.0)


def errorbar_y(ax):
    """The y data of each errorbar line of ``ax``, in drawing order."""
    return [np.asarray(c.lines[0].get_ydata(), dtype=float) for c in ax.containers]


def test_units_label_comes_from_attrs(hess_cube):
    assert hess_cube["rate"].attrs["units"] == RATE_UNITS
    assert plot.axis_label(hess_cube, "rate") == f"rate ({RATE_UNITS})"
    assert plot.axis_label(hess_cube, "counts") == "counts"


def test_rate_map_has_one_log_panel_per_band_drawn_on_the_bin_edges(hess_cube, hess_runs):
    axes = plot.plot_rate_map(hess_cube)
    assert len(axes) == 3
    fig = axes[0].figure
    colorbar = [ax for ax in fig.axes if ax not in axes]
    assert len(colorbar) == 1 and colorbar[0].get_ylabel() == f"rate ({RATE_UNITS})"
    assert axes[0].get_ylabel() == "offset (deg)"
    for i, (ax, band) in enumerate(zip(axes, BANDS)):
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "energy (TeV)"
        # runs that spent time in the band and their ONTIME there (astropy's zenith every second)
        inside = int((hess_cube["run_band_fraction"].isel(zenith=i) > 0).sum())
        hours = band_ontime(hess_runs, [0, 20, 40, 90])[i] / 3600
        assert ax.get_title() == f"zenith {band} deg: {inside} runs, {hours:.1f} h ONTIME"
        (mesh,) = ax.collections
        assert isinstance(mesh.norm, LogNorm)
        xy = mesh.get_coordinates()
        np.testing.assert_array_equal(xy[0, :, 0], np.geomspace(0.1, 100, 20))
        np.testing.assert_allclose(xy[:, 0, 1], np.sqrt(np.linspace(0, 9, 10)))
        # pcolormesh rows are offsets, columns energies; zero-count bins stay blank.
        expected = masked(hess_cube["rate"].isel(zenith=i).transpose("offset", "energy").values)
        shown = mesh.get_array().reshape(expected.shape)
        np.testing.assert_array_equal(shown.mask, expected.mask)
        np.testing.assert_array_equal(shown.compressed(), expected.compressed())


def test_rate_map_draws_into_given_axes_and_rejects_a_wrong_count(hess_cube):
    _, grid = plt.subplots(1, 3)
    assert plot.plot_rate_map(hess_cube, axes=grid) == list(grid)
    with pytest.raises(ValueError, match="needs 3 axes, got 2"):
        plot.plot_rate_map(hess_cube, axes=grid[:2])


def test_spectra_have_one_log_log_panel_per_offset_and_a_line_per_band(hess_cube):
    axes = plot.plot_spectra(hess_cube, offsets=(0.5, 1.5))
    assert len(axes) == 2
    assert axes[0].get_ylabel() == f"rate ({RATE_UNITS})"
    for ax, offset, title in zip(axes, (0.5, 1.5), ("offset 0-1 deg", "offset 1.41-1.73 deg")):
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert ax.get_xlabel() == "energy (TeV)" and ax.get_title() == title
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"zenith {b} deg" for b in BANDS]
        expected = hess_cube["rate"].sel(offset=offset, method="nearest").values
        for shown, want in zip(errorbar_y(ax), expected):
            np.testing.assert_array_equal(shown, np.where(want > 0, want, np.nan))


def test_radial_profiles_have_one_panel_per_band_and_a_line_per_energy(hess_cube):
    axes = plot.plot_radial_profiles(hess_cube, energies=(0.5, 5.0))
    assert len(axes) == 3
    assert axes[0].get_ylabel() == f"rate ({RATE_UNITS})"
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert labels == ["energy 0.428-0.616 TeV", "energy 3.79-5.46 TeV"]
    for i, ax in enumerate(axes):
        assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")
        assert ax.get_xlabel() == "offset (deg)" and BANDS[i] in ax.get_title()
        for shown, energy in zip(errorbar_y(ax), (0.5, 5.0)):
            want = hess_cube["rate"].isel(zenith=i).sel(energy=energy, method="nearest").values
            np.testing.assert_array_equal(shown, np.where(want > 0, want, np.nan))


@pytest.mark.parametrize(("function", "kwargs"), [(plot.plot_spectra, {"offsets": (3.5,)}), (plot.plot_radial_profiles, {"energies": (0.05,)})])
def test_values_outside_the_edges_raise_before_a_figure_opens(hess_cube, function, kwargs):
    with pytest.raises(ValueError, match="outside the cube's"):
        function(hess_cube, **kwargs)
    assert plt.get_fignums() == []


def test_diagnostics_show_counts_and_exposure_per_band(hess_cube):
    fig = plot.plot_diagnostics(hess_cube)
    meshes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    colorbars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(meshes) == 6 and colorbars == ["counts", "exposure (MeV s sr)"]
    for i, ax in enumerate(meshes[:3]):
        assert ax.get_xscale() == "log" and BANDS[i] in ax.get_title()
        expected = masked(hess_cube["counts"].isel(zenith=i).transpose("offset", "energy").values)
        np.testing.assert_array_equal(ax.collections[0].get_array().reshape(expected.shape), expected)
    assert meshes[0].get_ylabel() == "offset (deg)" and meshes[3].get_xlabel() == "energy (TeV)"


def test_diagnostics_of_read_models_show_the_counts_and_exposure_of_the_cube(written, hess_cube):
    fig = plot.plot_diagnostics(read_models(written))
    meshes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i in range(3):
        for ax, name in ((meshes[i], "counts"), (meshes[3 + i], "exposure")):
            expected = masked(hess_cube[name].isel(zenith=i).transpose("offset", "energy").values)
            np.testing.assert_array_equal(ax.collections[0].get_array().reshape(expected.shape), expected, err_msg=name)


def test_overview_combines_maps_spectra_and_profiles(hess_cube):
    fig = plot.plot_overview(hess_cube)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.get_suptitle() == "bkgxr background model: 45 runs"
    maps, spectra, profiles = (sub.axes for sub in fig.subfigs)
    assert len(maps) == 4 and len(spectra) == 2 and len(profiles) == 3  # maps: 3 bands + colour bar
    assert [ax.get_ylabel() for ax in (maps[0], maps[3], spectra[0], profiles[0])] == [
        "offset (deg)", f"rate ({RATE_UNITS})", f"rate ({RATE_UNITS})", f"rate ({RATE_UNITS})"
    ]


def test_read_models_gives_back_the_written_rate_exactly(written, hess_cube):
    cube = read_models(written)
    assert cube.attrs["checksum"] == "verified"
    with fits.open(written) as hdul:  # independent read: plain astropy, one HDU per band
        for i, name in enumerate(["BKG_ZEN_0_20", "BKG_ZEN_20_40", "BKG_ZEN_40_90"]):
            hdu = hdul[name]
            assert hdu.columns["BKG"].unit == "MeV-1 s-1 sr-1"
            rate = hdu.data["BKG"][0].T  # TDIM (n_energy, n_offset) reads as (offset, energy)
            np.testing.assert_array_equal(cube["rate"].isel(zenith=i).values, rate)
            np.testing.assert_array_equal(hess_cube["rate"].isel(zenith=i).values, rate)
            assert cube["ontime"].values[i] == hdu.header["ONTIME"]
            assert cube["livetime"].values[i] == hdu.header["LIVETIME"]
            assert cube["n_runs"].values[i] == hdu.header["NRUNS"]
            np.testing.assert_array_equal(cube["energy_lo"].values, hdu.data["ENERG_LO"][0])
            np.testing.assert_array_equal(cube["offset_hi"].values, hdu.data["THETA_HI"][0])
    # the cube's runs (dim obs_id) are the models' runs (dim run); obs_id holds every observation of the store
    band_coords = [name for name in hess_cube.coords if name != "obs_id"]
    for name in ("rate", "counts", "exposure", "ontime", "livetime", "n_runs", *band_coords):
        np.testing.assert_array_equal(cube[name].values, hess_cube[name].values, err_msg=name)
        assert cube[name].dims == hess_cube[name].dims, name
        assert cube[name].attrs.get("units") == hess_cube[name].attrs.get("units"), name
    np.testing.assert_array_equal(cube["run"].values, hess_cube["obs_id"].values)
    np.testing.assert_array_equal(cube["run_counts"].values, hess_cube["run_counts"].values)


def rewritten(written, path, edit, *, checksum=True):
    """Copy ``written`` to ``path`` with ``edit(hdu)`` applied to every BKG_2D HDU, checksums renewed unless told."""
    with fits.open(written) as hdul:
        for hdu in hdul[4:]:
            edit(hdu)
        hdul.writeto(path, checksum=checksum)
    return path


def in_tev(hdu):
    hdu.data["BKG"] *= 1e6
    hdu.columns.change_attrib("BKG", "unit", "s-1 TeV-1 sr-1")


def wider_first_bin(hdu):
    if hdu.name == "BKG_ZEN_40_90":
        hdu.data["ENERG_LO"][0][0] = 0.05


def in_metres(hdu):
    hdu.columns.change_attrib("BKG", "unit", "m")


def test_read_models_converts_the_rate_unit_once(written, tmp_path):
    tev = read_models(rewritten(written, tmp_path / "tev.fits", in_tev))
    np.testing.assert_allclose(tev["rate"], read_models(written)["rate"], rtol=1e-15)
    assert tev["rate"].attrs["units"] == RATE_UNITS


@pytest.mark.parametrize(
    ("edit", "error", "match"), [(wider_first_bin, StoreError, r"different energy or \w+ bins"), (in_metres, UnitError, "not convertible")]
)
def test_read_models_refuses_a_changed_file(written, tmp_path, edit, error, match):
    with pytest.raises(error, match=match):
        read_models(rewritten(written, tmp_path / "edited.fits", edit))
    # the same edit without renewing the checksums is caught by them
    with pytest.raises(StoreError, match="the file was changed after writing"):
        read_models(rewritten(written, tmp_path / "unsigned.fits", edit, checksum=False))


def test_a_cube_with_only_the_rate_plots_without_error_bars_but_not_its_diagnostics(hess_cube):
    rate_only = hess_cube[["rate", "ontime", "n_runs"]]
    (ax,) = plot.plot_spectra(rate_only, offsets=(0.5,))
    assert ax.containers and all(not c.has_yerr for c in ax.containers)
    for shown, expected in zip(errorbar_y(ax), hess_cube["rate"].isel(offset=0).values):
        np.testing.assert_array_equal(shown, np.where(expected > 0, expected, np.nan))
    with pytest.raises(ValueError, match=r"needs \['counts', 'exposure'\]"):
        plot.plot_diagnostics(rate_only)


def test_read_models_refuses_foreign_and_missing_files(hess_dir, tmp_path):
    with pytest.raises(StoreError, match="not written by bkgxr.write_models"):
        read_models(hess_dir / "hdu-index.fits.gz")
    with pytest.raises(StoreError, match="cannot read the file"):
        read_models(tmp_path / "missing.fits")


def png_size(path):
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_command_writes_the_overview_of_the_file(written, hess_cube, tmp_path, capsys, monkeypatch):
    drawn = []
    overview = plot.plot_overview
    monkeypatch.setattr(plot, "plot_overview", lambda *a, **k: drawn.append(overview(*a, **k)) or drawn[-1])
    out = tmp_path / "figs" / "overview.png"
    assert main(["plot", str(written), "--out", str(out), "--dpi", "40"]) == 0
    assert capsys.readouterr().out.strip() == f"written: {out}"
    (fig,) = drawn
    assert fig.get_suptitle().splitlines()[0] == "bkgxr background model: 45 runs"  # the runs, not the 105 observations
    assert fig.get_suptitle().splitlines()[1].startswith("zenith model: ")  # the recipe of the file
    width, height = png_size(out)
    assert (width, height) == tuple(round(v * 40) for v in fig.get_size_inches())
    maps, spectra, profiles = (sub.axes for sub in fig.subfigs)
    assert [ax.get_title().split(":")[0] for ax in profiles] == [f"zenith {b} deg" for b in BANDS]
    assert maps[3].get_ylabel() == spectra[0].get_ylabel() == f"rate ({RATE_UNITS})"
    for i, ax in enumerate(maps[:3]):  # the picture shows the rate of the cube the file was written from
        expected = masked(hess_cube["rate"].isel(zenith=i).transpose("offset", "energy").values)
        np.testing.assert_array_equal(ax.collections[0].get_array().reshape(expected.shape), expected)
    image = plt.imread(out)
    assert image.shape == (height, width, 4)
    assert image.std() > 0.05 and len(np.unique(image.reshape(-1, 4), axis=0)) > 100  # drawn, not blank


def test_plot_command_reports_a_bad_file_in_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none.fits"), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error:") and "none.fits" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
