"""Command line interface: what each ``bkgxr`` command does, through calls to the public API only.

The commands and their options are declared in :mod:`bkgxr.cli_parser`;
:func:`main` parses the command line with it and runs the command.
Heavy modules are imported inside the commands, so ``bkgxr --help`` is quick.
Every failure is one line on stderr: ``bkgxr: error: ...``, exit code 2 for a
bad option or argument, 1 for data or files that cannot be used. SIGINT and
SIGTERM stop a command with one line and exit code 130 or 143; no temporary
file is left and an output is either complete or untouched (a second signal
exits at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .cli_parser import build_parser
from .io.partfiles import handling
from .recipe import DEADTIMES, DEFAULT_RECIPE, ZENITH_MODELS, Recipe, Smoothing

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

    from .exclusion import ExclusionRegions
    from .io.store import Store


def summary(cube: xr.Dataset, *, query: str | None) -> str:
    """Return the build summary: runs, events, ONTIME and LIVETIME per zenith band."""
    lines = [f"selection: {query}" if query else "selection: every run (no query)"]
    lines.append(f"{'zenith band (deg)':>18} {'runs':>6} {'events':>10} {'ontime (h)':>11} {'livetime (h)':>13}")
    events = cube["counts"].sum([d for d in cube["counts"].dims if d != "zenith"]).values
    for label, n, ev, on, live in zip(
        cube["zenith_band"].values, cube["n_runs"].values, events, cube["ontime"].values, cube["livetime"].values, strict=True
    ):
        lines.append(f"{label:>18} {int(n):>6} {int(ev):>10} {on / 3600:>11.2f} {live / 3600:>13.2f}")
    error = cube["run_error"].values
    for obs_id, reason in zip(cube["obs_id"].values[error != ""], error[error != ""], strict=True):
        lines.append(f"left out: run {int(obs_id)}: {reason}")
    return "\n".join(lines)


def written(models: xr.Dataset, out: str | Path) -> str:
    """Return the line saying where the models went (absolute path) and which models the file holds."""
    kind = "BKG_3D" if "fov_lon" in models.dims else "BKG_2D"
    own, bands, n_obs = int(models["obs_own"].sum()), models.sizes["zenith"], models.sizes["obs_id"]
    with_model = int((models["obs_own"] | (models["obs_band"] >= 0)).sum())
    line = f"written: {Path(out).absolute()}: "
    if own:
        line += f"one {kind} model per observation ({own} HDUs BKG_OBS_<OBS_ID>) and {bands} zenith-band models (BKG_ZEN_*)"
    else:
        line += f"{bands} zenith-band {kind} models (BKG_ZEN_*), each of the {with_model} observations pointing to its band's"
    if with_model < n_obs:
        line += f"; {n_obs - with_model} of {n_obs} observations have no model (--outside none)"
    return line


def _select(data_dir: Path, query: str | None, runs: str, *, skip_bad: bool) -> tuple[Store, pd.DataFrame, str | None]:
    from . import OFF_QUERY, open_store
    from .exceptions import EmptySelectionError

    store = open_store(data_dir)
    given = query
    if query is None and runs == "off" and "TARGET_NAME" in store.obs_table.colnames:
        query = OFF_QUERY
    try:
        return store, store.select(query, skip_bad=skip_bad), query
    except EmptySelectionError:
        what = f"--query {given!r}" if given is not None else f"--runs {runs} ({query})" if query else "the store"
        raise EmptySelectionError(f"no run of {store.root} matches {what}; its obs index has {len(store.obs)} runs") from None


def _exclusion(args: argparse.Namespace) -> ExclusionRegions | None:
    """Return the regions of --exclude and --exclude-circles, None if neither is given."""
    from .exclusion import ExclusionRegions

    regions = ExclusionRegions()
    if args.exclude is not None:
        regions = regions | ExclusionRegions.from_file(args.exclude)
    if args.exclude_circles:
        regions = regions | ExclusionRegions.from_text(args.exclude_circles)
    return regions if regions.circles else None


def _cube(args: argparse.Namespace) -> tuple[Store, pd.DataFrame, xr.Dataset, str | None]:
    """Select the runs and compute their cube, as the cube options say; return the store, run table, cube and query."""
    from . import Binning, build_cube
    from .cluster import compute, connect

    exclusion = _exclusion(args)  # a bad region file fails before any run is read
    store, runs, query = _select(args.data_dir, args.query, args.runs, skip_bad=args.skip_bad)
    binning = Binning(
        zenith=args.zenith_edges, energy=args.energy_edges, offset=args.offset_edges,
        fov=args.fov, fov_lon=args.fov_edges, fov_lat=args.fov_edges,
    )
    with connect(workers=args.workers, scheduler=args.scheduler, quiet=args.quiet, silence_logs=not args.verbose):
        cube = build_cube(
            runs, binning=binning, skip_bad=args.skip_bad, safe_energy=args.safe_energy,
            exclusion=exclusion, target_radius=args.exclude_radius or None, event_zenith=args.event_zenith,
        )
        cube = compute(cube, progress=not args.quiet)
    return store, runs, cube, query


def recipe_of(args: argparse.Namespace) -> Recipe:
    """Return the recipe of the options: :data:`bkgxr.DEFAULT_RECIPE` with the options given."""
    changes: dict[str, object] = {}
    if args.zenith_model is not None:
        changes["zenith"] = args.zenith_model
    if args.kernel_sigma is not None:
        changes["kernel_sigma"] = args.kernel_sigma
    if args.time_sigma is not None:
        changes["time_sigma"] = args.time_sigma or None
    if args.track is not None:
        changes["track"] = args.track
    if args.efficiency_sigma is not None:
        changes["efficiency_sigma"] = args.efficiency_sigma or None
    if args.efficiency_scaling is not None:
        changes["efficiency_scaling"] = args.efficiency_scaling
    if args.smooth is not None:
        changes["smoothing"] = Smoothing() if args.smooth else None
    elif getattr(args, "fov", "offset") == "altaz":
        changes["smoothing"] = None  # the smoothing fits radial shapes
    if args.deadtime is not None:
        changes["deadtime"] = args.deadtime
    if args.outside is not None:
        changes["outside"] = args.outside
    if args.nodes is not None:
        changes["nodes"] = args.nodes
    return DEFAULT_RECIPE.replace(**changes)


def _build(args: argparse.Namespace) -> int:
    from . import open_store, predict_models, write_models
    from .io.write import check_output

    recipe = recipe_of(args)
    check_output(args.out, store=open_store(args.data_dir))  # before the build, not after it; never an input
    store, runs, cube, query = _cube(args)
    # Every observation gets a model; with no query the run table is already all of them, each
    # checked (a bad run either raised or carries its ERROR), so the store is not selected twice.
    models = predict_models(cube, store if query is not None else runs, recipe)
    out = write_models(models, args.out, store=store, date=args.date)
    print(summary(cube, query=query))
    print(written(models, out))
    print(recipe.describe())
    return 0


def _compared(recipe: Recipe, cube: xr.Dataset) -> list[Recipe]:
    """Return the recipes ``validate --compare`` prints beside the chosen one.

    The default with the efficiency scaling is among them when every run used has a MUONEFF.
    """
    from .efficiency import known

    variants = [
        DEFAULT_RECIPE.replace(zenith=zenith, smoothing=smoothing, deadtime=deadtime)
        for zenith in ZENITH_MODELS
        for smoothing in (None, Smoothing())
        for deadtime in DEADTIMES
    ]
    if "run_muoneff" in cube and known(cube["run_muoneff"].values[cube["run_used"].values]):
        variants.append(DEFAULT_RECIPE.replace(efficiency_scaling=True))  # counts brought to each run's MUONEFF
    return [r for r in variants if r != recipe]


def _validate_fields(args: argparse.Namespace, recipe: Recipe) -> int:
    from . import OFF_QUERY, Binning, open_store
    from .fields import models_from_recipe, source_fields, validate_fields

    fields = source_fields(open_store(args.data_dir).select())
    exclusion = _exclusion(args)
    for f in fields:  # every field's regions apply to every training run
        exclusion = f.regions() if exclusion is None else exclusion | f.regions()
    binning = Binning(zenith=args.zenith_edges, energy=args.energy_edges, offset=args.offset_edges,
                      fov=args.fov, fov_lon=args.fov_edges, fov_lat=args.fov_edges)
    make_models = models_from_recipe(recipe, binning=binning, exclusion=exclusion, target_radius=args.exclude_radius or None)
    result = validate_fields(args.data_dir, make_models=make_models, fields=fields,
                             train_query=OFF_QUERY if args.runs == "off" else args.query)
    print(recipe.describe(), f"(fov {args.fov}, trained on the {args.runs} runs)")
    print(result)
    if args.out is not None:
        print(f"written: {', '.join(str(p) for p in result.write(args.out))}")
    if args.png is not None:
        print(f"written: {result.plot(args.png)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .validation import validate

    recipe = recipe_of(args)
    if args.fields:
        return _validate_fields(args, recipe)
    outputs = [name for name in (args.out, args.png) if name is not None]
    if len(outputs) == 2 and os.path.realpath(args.out) == os.path.realpath(args.png):
        raise ValueError(f"--out and --png both name {args.out}; give two files")
    if outputs:
        from . import open_store
        from .io.write import check_output

        for name in outputs:
            check_output(name, store=open_store(args.data_dir))  # the CSV and PNG never replace an input
    store, _, cube, query = _cube(args)
    result = validate(cube, recipe=recipe, radius=args.radius)
    print(summary(cube, query=query))
    print(recipe.describe())
    print(result.runs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(result)
    results = [result]
    if args.compare:
        results += [validate(cube, recipe=other, radius=args.radius) for other in _compared(recipe, cube)]
        if "bkg" in {str(t).strip().lower() for t in store.hdu_table["HDU_TYPE"]}:
            from .published import validate_published

            results.append(validate_published(store, cube, radius=args.radius))
        for other_result in results[1:]:
            print(other_result)
    if args.out is not None:
        print(f"written: {result.write(args.out).absolute()}")
    if args.png is not None:
        from .altaz_maps import reference_time
        from .plot_runs import plot_validation

        meta = store.obs_table.meta
        reference = reference_time(meta) if "MJDREFI" in meta or "MJDREF" in meta else None  # without: years since it
        data = f"{'simulated ' if meta.get('CREATOR') == 'bkgxr.simulate' else ''}{store.root.name} " \
               f"({'query ' + args.query if args.query is not None else args.runs + ' runs'})"
        fig = plot_validation(cube, results, recipe=recipe.describe(), data=data, reference=reference)
        print(f"written: {_save(fig, args.png, dpi=100).absolute()}")
    return 0


def _save(fig: Figure, out: str | Path, *, dpi: int) -> Path:
    """Save a figure atomically (format from the suffix) and return its path."""
    import io

    from .io.write import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=Path(out).suffix.lstrip(".").lower() or "png")
    return write_atomic(buffer.getvalue(), out)


def _plot(args: argparse.Namespace) -> int:
    from .io.read import read_models
    from .io.write import check_output
    from .plot import plot_overview
    from .plot_runs import plot_observations

    if os.path.realpath(args.out) == os.path.realpath(args.file):
        raise ValueError(f"--out {args.out} is the model file being read; give another name")
    check_output(args.out)
    models = read_models(args.file)
    if args.obs is not None:
        fig = plot_observations(models, args.obs, offsets=args.offsets, energies=args.energies)
    else:
        fig = plot_overview(models, offsets=args.offsets, energies=args.energies)
        own = models["obs_id"].values[models["obs_own"].values]
        if own.size:
            print(f"bkgxr: note: {args.file} holds one model per observation ({own.size}); these are its zenith-band "
                  f"models; draw observations' own with --obs, e.g. --obs {','.join(map(str, own[:2]))}", file=sys.stderr)
    print(f"written: {_save(fig, args.out, dpi=args.dpi).absolute()}")
    return 0


def _progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 100) == 0:
        print(f"\rsimulated {done}/{total} runs", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _simulate(args: argparse.Namespace) -> int:
    import time

    from .simulate import simulate_store

    if (args.out_dir / "obs-index.fits.gz").exists() and not args.overwrite:
        raise FileExistsError(f"{args.out_dir} already holds a store; pass --overwrite to replace it")
    start = time.perf_counter()
    sim = simulate_store(
        args.out_dir, n_runs=args.runs, events_per_run=args.events_per_run, seed=args.seed,
        zenith_range=args.zenith_range, workers=args.workers, date=args.date, overwrite=args.overwrite,
        deadc_range=args.deadc_range, truth_time=args.truth_time, track=args.track,
        progress=None if args.quiet else _progress,
    )
    seconds = time.perf_counter() - start
    print(f"written: {sim.path} ({args.runs} runs, {int(sim.runs['EVENT_COUNT'].sum())} events, "
          f"{seconds:.1f} s, {args.runs / seconds:.1f} runs/s)")
    print(f"true model: {sim.model}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import (
        DEFAULT_RECIPE,
        OFF_QUERY,
        build_cube,
        open_store,
        predict_models,
        read_models,
        write_models,
    )
    from .plot import plot_overview
    from .simulate import simulate_store

    index = args.out / "store" / "obs-index.fits.gz"
    if index.exists():
        from astropy.io import fits

        if str(fits.getheader(index, 1).get("CREATOR", "")).strip() != "bkgxr.simulate":
            raise FileExistsError(f"{index.parent} holds a store bkgxr did not simulate; give the demo another --out")
    sim = simulate_store(args.out / "store", n_runs=args.runs, events_per_run=args.events_per_run, seed=args.seed, overwrite=True)
    store = open_store(sim.path)
    cube = build_cube(store.select(OFF_QUERY)).compute()
    models = predict_models(cube, store, DEFAULT_RECIPE)
    path = write_models(models, args.out / "bkg-models.fits", store=store)
    overview = _save(plot_overview(read_models(path)), args.out / "overview.png", dpi=100)  # the band models as written
    print(summary(cube, query=OFF_QUERY))
    print(DEFAULT_RECIPE.describe())
    print(f"store:    {sim.path}\n{written(models, path.resolve())}\noverview: {overview.resolve()}")
    return 0


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> str:
    return f"bkgxr: warning: {message}\n"


class Stopped(BaseException):
    """SIGINT or SIGTERM, raised in the main thread so that every ``finally`` and context manager runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Stopped` for the block; a second one exits at once.

    Signals a parent set to be ignored stay ignored; the previous handlers are
    restored after the block. Outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if stopping:  # the first one's cleanup is under way: do not wait for it
            os._exit(128 + signum)
        stopping.append(signum)
        raise Stopped(signum)

    with handling((signal.SIGINT, signal.SIGTERM), stop):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bkgxr`` command; return its exit code (0 done, 1 data or files, 2 usage, 130/143 SIGINT/SIGTERM)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or one line for a bad option
        return done.code if isinstance(done.code, int) else 2
    warnings.formatwarning = _one_line_warning
    from .exceptions import BkgxrError

    command = {"build": _build, "validate": _validate, "plot": _plot, "simulate": _simulate, "demo": _demo}[args.command]
    with stop_on_signals():
        try:
            return int(command(args))
        except Stopped as stop:
            name = signal.Signals(stop.signum).name
            print(f"bkgxr: stopped by {name}; no temporary file left, outputs complete or untouched", file=sys.stderr)
            return 128 + stop.signum
        except (BkgxrError, OSError) as err:  # OSError: the output cannot be written
            print(f"bkgxr: error: {err}", file=sys.stderr)
            return 1
        except ValueError as err:  # bad option values reaching the API
            print(f"bkgxr: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
