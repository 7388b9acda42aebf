import astropy.units as u
import boost_histogram as bh
import numpy as np
import pytest

from bkgxr.axes import DIMS, Binning, band_labels, parse_edges, to_edges


def test_defaults_are_the_tutorial_binning():
    b = Binning()
    assert b.shape == (3, 19, 9)
    np.testing.assert_allclose(np.diff(np.log10(b.energy)), 3 / 19)
    np.testing.assert_allclose(np.diff(b.offset**2), 1.0)
    assert b.offset[0] == 0 and b.offset[-1] == pytest.approx(3.0)
    assert b.zenith.tolist() == [0, 20, 40, 90]


def test_quantities_are_converted_to_canonical_units():
    b = Binning(energy=[100, 1000, 10000] * u.GeV, offset=[0, 60, 120] * u.arcmin)
    np.testing.assert_allclose(b.energy, [0.1, 1, 10])
    np.testing.assert_allclose(b.offset, [0, 1, 2])


@pytest.mark.parametrize(
    ("dim", "edges"),
    [
        ("energy", [1, 0.5]),
        ("energy", [0, 1]),
        ("offset", [-1, 1]),
        ("zenith", [0, 200]),
        ("zenith", [10]),
        ("energy", [1, np.nan]),
        ("energy", [1, 2] * u.deg),
    ],
)
def test_bad_edges_raise_value_error(dim, edges):
    with pytest.raises(ValueError, match=dim):
        to_edges(edges, dim)


def test_boost_axes_are_named_after_dims_and_match_edges():
    b = Binning()
    axes = b.boost_axes()
    assert [a.name for a in axes] == list(DIMS)
    for axis, dim in zip(axes, DIMS):
        np.testing.assert_array_equal(axis.edges, b.edges(dim))
    # a boost fill by position follows DIMS: independent check with numpy
    rng = np.random.default_rng(1)
    sample = np.column_stack([rng.uniform(0, 90, 500), rng.uniform(0.1, 100, 500), rng.uniform(0, 3, 500)])
    hist = bh.Histogram(*axes).fill(*sample.T)
    expected, _ = np.histogramdd(sample, bins=[b.edges(d) for d in DIMS])
    np.testing.assert_array_equal(hist.values(), expected)


def test_coords_hold_edges_and_centres():
    coords = Binning().coords()
    lo, hi = coords["energy_lo"][1], coords["energy_hi"][1]
    np.testing.assert_allclose(coords["energy"][1], np.sqrt(lo * hi))
    np.testing.assert_allclose(coords["offset"][1], 0.5 * (coords["offset_lo"][1] + coords["offset_hi"][1]))
    assert coords["energy"][2]["units"] == "TeV"


def test_parse_edges_and_labels():
    assert parse_edges("0,20, 40,90") == [0, 20, 40, 90]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_edges("0,twenty")
    assert band_labels([0, 20, 40.5]) == ["0-20", "20-40.5"]
