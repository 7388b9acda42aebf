import subprocess
import sys

import bkgxr


def test_all_is_sorted_complete_and_resolvable():
    assert bkgxr.__all__ == sorted(bkgxr.__all__)
    assert dir(bkgxr) == bkgxr.__all__
    for name in bkgxr.__all__:
        assert getattr(bkgxr, name) is not None, name


def test_every_public_name_is_the_object_it_names_after_all_submodules_are_imported():
    """A submodule named like a function (bkgxr.validate once was) must not shadow it."""
    import importlib
    import pkgutil
    import types

    for module in pkgutil.walk_packages(bkgxr.__path__, "bkgxr."):
        importlib.import_module(module.name)
    for name, where in bkgxr._WHERE.items():
        obj = getattr(bkgxr, name)
        assert not isinstance(obj, types.ModuleType), name
        assert obj is getattr(importlib.import_module(f"bkgxr.{where}"), name), name
    assert callable(bkgxr.validate) and callable(bkgxr.predict_models) and callable(bkgxr.read_models)


def test_dims_constant_names_the_cube_axes():
    assert bkgxr.DIMS == ("zenith", "energy", "offset")
    assert [a.name for a in bkgxr.Binning().boost_axes()] == list(bkgxr.DIMS)


def test_importing_the_cli_loads_no_heavy_module():
    code = "import sys, bkgxr.cli; print(sorted(m for m in ('dask', 'xarray', 'astropy', 'gammapy', 'matplotlib', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_are_bkgxr_and_builtin_errors():
    err = bkgxr.InvalidRunError(23523, "/x/obs_023523.fits.gz", "EVENTS lacks ENERGY")
    assert isinstance(err, bkgxr.BkgxrError) and isinstance(err, ValueError)
    assert str(err) == "run 23523 (obs_023523.fits.gz): EVENTS lacks ENERGY"
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.obs_id == 23523
