"""bkgxr: background models for IACTs from off runs, lazy and labelled.

Names are imported on first use, so ``bkgxr --help`` starts without loading
dask, xarray or astropy.

Examples
--------
>>> import bkgxr
>>> store = bkgxr.open_store("hess-dl3-dr1")                 # doctest: +SKIP
>>> runs = store.select(bkgxr.OFF_QUERY)                      # doctest: +SKIP
>>> cube = bkgxr.build_cube(runs).compute()                   # doctest: +SKIP
>>> bkgxr.write_models(cube, "bkg.fits", store=store)        # doctest: +SKIP
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
    from .io.events import open_events as open_events
    from .io.gadf import write_models as write_models
    from .io.load import load_models as load_models
    from .io.store import OFF_QUERY as OFF_QUERY
    from .io.store import Store as Store
    from .io.store import open_store as open_store
    from .validation import validate as validate

__version__ = _version("bkgxr")

#: Public name -> module that defines it.
_WHERE = {
    "Binning": "axes",
    "BkgxrError": "exceptions",
    "DIMS": "axes",
    "EmptySelectionError": "exceptions",
    "InvalidRunError": "exceptions",
    "OFF_QUERY": "io.store",
    "Store": "io.store",
    "StoreError": "exceptions",
    "build_cube": "cube",
    "load_models": "io.load",
    "open_events": "io.events",
    "open_store": "io.store",
    "validate": "validation",
    "write_models": "io.gadf",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'bkgxr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
