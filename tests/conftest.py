"""Shared fixtures: the H.E.S.S. DR1 store (through BKGXR_DATA) and its off-run cube; a tiny simulated store.

Tests needing the H.E.S.S. data are marked ``hess`` (``pytest -m "not hess"``
runs the rest). Without the data they skip, except on CI (``CI`` set to a true
value), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Default location of the H.E.S.S. DL3 DR1 store, beside the repository.
DEFAULT_HESS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hess-dl3-dr1"


#: Values of ``CI`` that do not mean "running on CI".
NOT_CI = frozenset({"", "0", "false", "no", "off"})


def hess_path() -> Path:
    """Return the H.E.S.S. DR1 folder from ``BKGXR_DATA`` or the default."""
    return Path(os.environ.get("BKGXR_DATA", DEFAULT_HESS))


def on_ci() -> bool:
    """Whether ``CI`` is set to a true value (CI always has the H.E.S.S. data)."""
    return os.environ.get("CI", "").strip().lower() not in NOT_CI


@pytest.fixture(scope="session")
def hess_dir() -> Path:
    """The H.E.S.S. DR1 folder; skip without it, but fail on CI, where the data must be."""
    path = hess_path()
    if not (path / "obs-index.fits.gz").is_file():
        message = f"H.E.S.S. DR1 data not found at {path}; set BKGXR_DATA"
        if on_ci():
            pytest.fail(f"{message} (CI={os.environ['CI']}: on CI a test needing the data fails instead of skipping)")
        pytest.skip(message)
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the H.E.S.S. data (``hess_dir``, directly or through a fixture) ``hess``; slow files first.

    The files holding a ``slow`` test run first, each file whole (its module
    fixtures built once), the others after them in their usual order: under
    pytest-xdist the long tests then start at once on both workers and the
    short ones fill in around them, instead of one long test running alone
    at the end.
    """
    for item in items:
        if "hess_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.hess)
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each group is kept


@pytest.fixture(scope="session")
def hess_store(hess_dir):
    import bkgxr

    return bkgxr.open_store(hess_dir)


@pytest.fixture(scope="session")
def hess_runs(hess_store):
    import bkgxr

    return hess_store.select(bkgxr.OFF_QUERY)


@pytest.fixture(scope="session")
def hess_cube(hess_runs):
    import bkgxr

    return bkgxr.build_cube(hess_runs).compute()


#: Simulated-store fixtures: 24 off runs of ~15,000 events at zenith 0-60 deg, drawn once per session.
SIM_RUNS, SIM_EVENTS_PER_RUN, SIM_SEED = 24, 15_000, 20240


@pytest.fixture(scope="session")
def simulation(tmp_path_factory):
    """A tiny simulated store and its truth (a :class:`bkgxr.simulate.Simulation`)."""
    from bkgxr.simulate import simulate_store

    return simulate_store(
        tmp_path_factory.mktemp("sim") / "store",
        n_runs=SIM_RUNS, events_per_run=SIM_EVENTS_PER_RUN, seed=SIM_SEED, date="2026-01-01",
    )


@pytest.fixture(scope="session")
def sim_store(simulation):
    import bkgxr

    return bkgxr.open_store(simulation.path)


@pytest.fixture
def astropy_calls(monkeypatch):
    """The number of nodes of each call of bkgxr.altaz_maps's astropy transformation, as the calls happen."""
    from bkgxr import altaz_maps

    calls = []
    real = altaz_maps._node_maps

    def counted(node_s, reference, location):
        calls.append(node_s.size)
        return real(node_s, reference, location)

    monkeypatch.setattr(altaz_maps, "_node_maps", counted)
    return calls
