"""bkgxr: background models for IACTs from off runs, lazy and labelled.

Names are imported on first use, so ``bkgxr --help`` starts without loading
dask, xarray or astropy.

Examples
--------
>>> import bkgxr
>>> store = bkgxr.open_store("hess-dl3-dr1")                 # doctest: +SKIP
>>> runs = store.select(bkgxr.OFF_QUERY)                      # doctest: +SKIP
>>> cube = bkgxr.build_cube(runs).compute()                   # doctest: +SKIP
>>> models = bkgxr.predict_models(cube, store)                # doctest: +SKIP
>>> bkgxr.write_models(models, "bkg.fits", store=store)      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .axes import DIMS as DIMS
    from .axes import Binning as Binning
    from .cube import build_cube as build_cube
    from .exceptions import BkgxrError as BkgxrError
    from .exceptions import EmptySelectionError as EmptySelectionError
    from .exceptions import InvalidRunError as InvalidRunError
    from .exceptions import StoreError as StoreError
    from .exceptions import UnitError as UnitError
    from .io.read import read_models as read_models
    from .io.store import OFF_QUERY as OFF_QUERY
    from .io.store import Store as Store
    from .io.store import open_store as open_store
    from .io.write import write_models as write_models
    from .models import predict_models as predict_models
    from .recipe import DEFAULT_RECIPE as DEFAULT_RECIPE
    from .recipe import Recipe as Recipe
    from .recipe import Smoothing as Smoothing
    from .validation import validate as validate

__version__ = _version("bkgxr")

#: Public name -> module that defines it.
_WHERE = {
    "Binning": "axes",
    "BkgxrError": "exceptions",
    "DEFAULT_RECIPE": "recipe",
    "DIMS": "axes",
    "EmptySelectionError": "exceptions",
    "InvalidRunError": "exceptions",
    "OFF_QUERY": "io.store",
    "Recipe": "recipe",
    "Smoothing": "recipe",
    "Store": "io.store",
    "StoreError": "exceptions",
    "UnitError": "exceptions",
    "build_cube": "cube",
    "open_store": "io.store",
    "predict_models": "models",
    "read_models": "io.read",
    "validate": "validation",
    "write_models": "io.write",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'bkgxr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
