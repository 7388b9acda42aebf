"""Command line interface: argument parsing and calls to the public API only.

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

from . import cli_args
from .io.partfiles import handling
from .recipe import DEADTIMES, DEFAULT_RECIPE, ZENITH_MODELS, Recipe, Smoothing

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pandas as pd
    import xarray as xr
    from matplotlib.figure import Figure

    from .exclusion import ExclusionRegions
    from .io.store import Store


def _add_cube_options(p: argparse.ArgumentParser) -> None:
    """Options that say which runs go into the cube and how it is binned (build, validate)."""
    p.add_argument("data_dir", type=Path, help="folder with hdu-index.fits[.gz] and obs-index.fits[.gz]")
    p.add_argument(
        "--query",
        metavar="EXPR",
        help="selection on the obs index, e.g. 'ZEN_PNT < 40 and TARGET_NAME != \"Crab\"': column names, literals, "
        "comparisons, in [...], and/or/not; parsed, never evaluated (default: the runs of --runs)",
    )
    p.add_argument(
        "--runs",
        choices=("off", "all"),
        default="all",
        help="all: every run, those with a target used outside their exclusion regions (default: it validates "
        "best on source fields); off: the off runs, TARGET_NAME == \"Off data\" (every run if the column is missing)",
    )
    p.add_argument(
        "--exclude",
        type=Path,
        help="DS9/CRTF file of sky circles every run is used outside of (events dropped, exposure reduced)",
    )
    p.add_argument(
        "--exclude-circles",
        help="sky circles every run is used outside of, 'ra,dec,radius[;ra,dec,radius...]' in deg (ICRS)",
    )
    p.add_argument(
        "--exclude-radius",
        type=cli_args.width_or_zero,
        default=0.5,
        help="radius (deg) of the circle excluded around the target (RA_OBJ, DEC_OBJ) of every run "
        "that is not an off run; 0 for none (default: 0.5)",
    )
    p.add_argument(
        "--fov",
        choices=("offset", "altaz"),
        default="offset",
        help="offset: 2D models (BKG_2D, radial); altaz: 3D models in FoV lon/lat aligned with Alt/Az "
        "(BKG_3D, FOVALIGN = 'ALTAZ'; not smoothed unless --smooth) (default: offset)",
    )
    p.add_argument("--fov-edges", type=cli_args.edges, help="deg, edges of FoV lon and lat with --fov altaz (default: -3 to 3 by 0.5)")
    p.add_argument("--energy-edges", type=cli_args.edges, help="TeV, comma-separated (default: 19 log bins 0.1-100)")
    p.add_argument("--offset-edges", type=cli_args.edges, help="deg (default: 9 bins 0-3, even in offset^2)")
    p.add_argument("--zenith-edges", type=cli_args.edges, help="deg (default: 0,20,40,90)")
    p.add_argument(
        "--safe-energy",
        action="store_true",
        help="use each run only in the energy bins inside its SAFE_ENERGY_LO/HI range",
    )
    p.add_argument(
        "--event-zenith",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each event in the zenith band of the pointing at its time, each run's ONTIME shared among the bands "
        "it crossed (default); --no-event-zenith: whole runs in the band of ZEN_PNT",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out runs that cannot be read, list them in the summary and the output's RUNS table",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Options of the recipe (build, validate); each one not given keeps bkgxr.DEFAULT_RECIPE's value."""
    d = DEFAULT_RECIPE
    p.add_argument(
        "--zenith-model",
        choices=ZENITH_MODELS,
        help="bkg of each observation: its zenith band's model (bands: the tutorial), bands interpolated "
        f"in cos(zenith), or a kernel over runs in cos(zenith) and time (default: {d.zenith})",
    )
    p.add_argument("--kernel-sigma", type=cli_args.positive, help=f"kernel width in cos(zenith), > 0 (default: {d.kernel_sigma:g})")
    p.add_argument("--time-sigma", type=cli_args.width_or_zero, help=f"kernel width in time, years; 0 for none (default: {d.time_sigma:g})")
    p.add_argument("--track", action=argparse.BooleanOptionalAction,
                   help="follow the pointing's zenith over each run (kernel weights and models averaged over the "
                   "run's track) instead of its ZEN_PNT (default: off)")
    p.add_argument("--efficiency-sigma", type=cli_args.width_or_zero,
                   help="kernel width in ln(optical efficiency), MUONEFF of the obs index; 0 for none (default: none)")
    p.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        help="smooth sparse bins keeping each energy bin's counts (bkgxr.smooth; default: on); "
        "--zenith-model bands --no-smooth is the tutorial's recipe exactly",
    )
    p.add_argument(
        "--deadtime",
        choices=DEADTIMES,
        help="ontime: rates per observation time averaged over the runs, as GADF and gammapy define them; "
        "livetime: rates per live time, each observation's DEADC folded into its own model "
        f"(default: {d.deadtime})",
    )
    p.add_argument(
        "--nodes",
        action=argparse.BooleanOptionalAction,
        help="write node values that gammapy's interpolation averages back to each bin's rate (default: on); "
        "--no-nodes writes the bin averages, counts / (ONTIME x dE x dOmega)",
    )
    p.add_argument(
        "--outside",
        choices=("nearest", "none"),
        help="observations outside every zenith band get the nearest band's model (default) or none",
    )


def _add_build(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    p = sub.add_parser(
        "build",
        help="build background models (BKG_2D, or BKG_3D with --fov altaz) from the runs of a GADF data store",
        description="Histogram the selected runs in zenith x energy x offset, divide by "
        "exposure and write the models with HDU/OBS index tables that "
        "gammapy's DataStore.from_file loads.",
    )
    _add_cube_options(p)
    p.add_argument("--out", type=cli_args.output_file, required=True,
                   help="output FITS file (its name and its path relative to the store must be ASCII)")
    _add_model_options(p)
    p.add_argument("--date", type=cli_args.date, help="DATE keyword of the output, e.g. 2026-01-01 (default: today, UTC)")
    _add_cluster_options(p)
    p.set_defaults(func=_build)


def _add_validate(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    p = sub.add_parser(
        "validate",
        help="leave-one-run-out validation of a zenith recipe on the off runs",
        description="Predict each selected run from a model built without it and compare: obs/pred of "
        "the total counts above the run's safe energy threshold within --radius, and the shape "
        "(Poisson deviance per energy x offset bin after matching totals).",
    )
    _add_cube_options(p)
    _add_model_options(p)
    p.add_argument("--radius", type=cli_args.positive, default=2.0, help="compare offsets up to this radius, deg (default: 2)")
    p.add_argument("--out", type=cli_args.output_file, help="write the per-run table as CSV (summary in # lines)")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also print the summary of every recipe, smoothed or not, and of the store's own bkg models if it has them",
    )
    p.add_argument(
        "--fields",
        action="store_true",
        help="validate on the source fields instead, as analysers use a model (gammapy map chain, FoV norms, "
        "significance outside exclusion; bkgxr.fields), each field's models built without its runs (from "
        "--runs), the store's published models beside them; --out is then a folder for one CSV per field",
    )
    p.add_argument(
        "--png", type=cli_args.output_file,
        help="picture to this PNG: obs/pred per run against zenith and time, each --compare recipe's points beside "
        "(bkgxr.plot.plot_validation); with --fields, significance maps and distributions",
    )
    _add_cluster_options(p)
    p.set_defaults(func=_validate)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--workers", type=cli_args.workers, metavar="N",
        help="start a local dask cluster of N worker processes (default: threads in this process)",
    )
    group.add_argument(
        "--scheduler",
        help="address of a running dask scheduler, e.g. tcp://host:8786; its workers must read the run files at the same paths",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no dashboard link")
    p.add_argument("--verbose", action="store_true", help="show dask.distributed's log (a failed task's worker traceback)")


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


def _cube(args: argparse.Namespace) -> tuple[Store, xr.Dataset, str | None]:
    """Select the runs and compute their cube, as the cube options say."""
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
    return store, cube, query


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
    store, cube, query = _cube(args)
    models = predict_models(cube, store, recipe)
    out = write_models(models, args.out, store=store, date=args.date)
    print(summary(cube, query=query))
    print(written(models, out))
    print(recipe.describe())
    return 0


def _compared(recipe: Recipe) -> list[Recipe]:
    """Return the recipes ``validate --compare`` prints beside the chosen one."""
    variants = [
        DEFAULT_RECIPE.replace(zenith=zenith, smoothing=smoothing, deadtime=deadtime)
        for zenith in ZENITH_MODELS
        for smoothing in (None, Smoothing())
        for deadtime in DEADTIMES
    ]
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
    store, cube, query = _cube(args)
    result = validate(cube, recipe=recipe, radius=args.radius)
    print(summary(cube, query=query))
    print(recipe.describe())
    print(result.runs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(result)
    results = [result]
    if args.compare:
        results += [validate(cube, recipe=other, radius=args.radius) for other in _compared(recipe)]
        if "bkg" in {str(t).strip().lower() for t in store.hdu_table["HDU_TYPE"]}:
            from .published import validate_published

            results.append(validate_published(store, cube, radius=args.radius))
        for other_result in results[1:]:
            print(other_result)
    if args.out is not None:
        print(f"written: {result.write(args.out).absolute()}")
    if args.png is not None:
        from .altaz_maps import reference_time
        from .plot import plot_validation

        meta = store.obs_table.meta
        reference = reference_time(meta) if "MJDREFI" in meta or "MJDREF" in meta else None  # without: years since it
        data = f"{'simulated ' if meta.get('CREATOR') == 'bkgxr.simulate' else ''}{store.root.name} " \
               f"({'query ' + args.query if args.query is not None else args.runs + ' runs'})"
        fig = plot_validation(cube, results, recipe=recipe.describe(), data=data, reference=reference)
        print(f"written: {_save(fig, args.png, dpi=100).absolute()}")
    return 0


def _add_plot(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    def obs_ids(text: str) -> list[int]:
        """Comma-separated OBS_IDs, e.g. ``20136,20137``."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items or not all(item.lstrip("+").isdigit() for item in items):
            raise argparse.ArgumentTypeError(f"expected comma-separated OBS_IDs (integers), got {text!r}")
        return [int(item) for item in items]

    p = sub.add_parser(
        "plot",
        help="plot the models of a file written by 'bkgxr build' to a PNG",
        description="Draw rate maps, spectra and radial profiles of every zenith band of a "
        "model file (bkgxr.plot.plot_overview), or with --obs the chosen observations' own models "
        "(bkgxr.plot.plot_observations), and save the figure.",
    )
    p.add_argument("file", type=Path, help="FITS file written by 'bkgxr build' or bkgxr.write_models")
    p.add_argument("--out", type=cli_args.output_file, required=True, help="output image (PNG; format from the suffix)")
    p.add_argument("--offsets", type=cli_args.values, default=[0.5, 1.5], help="deg, offsets of the spectra (default: 0.5,1.5)")
    p.add_argument(
        "--energies", type=cli_args.values, default=[0.5, 1.0, 3.0, 10.0], help="TeV, energies of the radial profiles (default: 0.5,1,3,10)"
    )
    p.add_argument(
        "--obs", type=obs_ids, metavar="OBS_ID,...",
        help="draw these observations' own models instead (spectra at --offsets, radial profiles at --energies, "
        "one line per observation; bkgxr.plot.plot_observations)",
    )
    p.add_argument("--dpi", type=cli_args.dpi, default=100, help=f"resolution, 1 to {cli_args.MAX_DPI} (default: 100)")
    p.set_defaults(func=_plot)


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
    from .plot import plot_observations, plot_overview

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


def _add_simulate(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a GADF data store of off runs drawn from a known background model",
        description="Draw off runs from bkgxr.simulate.RateModel (Poisson-exact, reproducible from the "
        "seed) and write their EVENTS/GTI files with hdu-index and obs-index tables.",
    )
    p.add_argument("out_dir", type=Path, help="store folder to write")
    p.add_argument("--runs", type=cli_args.count, required=True, help="number of runs")
    p.add_argument("--events-per-run", type=cli_args.events_per_run, required=True, help="mean expected events per run")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--zenith-range", type=cli_args.range_of(0, 90), default=(0.0, 60.0), help="deg, 'lo,hi' (default: 0,60)")
    p.add_argument("--workers", type=cli_args.workers, default=1, help="processes drawing and writing runs (default: 1)")
    p.add_argument("--date", type=cli_args.date, help="DATE keyword of the files, e.g. 2026-01-01 (default: today, UTC)")
    p.add_argument("--overwrite", action="store_true", help="replace a store already in OUT_DIR")
    p.add_argument("--deadc-range", type=cli_args.range_of(0, 1), default=(0.88, 0.94),
                   help="'lo,hi' of the drawn DEADC (default: 0.88,0.94)")
    p.add_argument(
        "--truth-time",
        choices=("ontime", "livetime"),
        default="ontime",
        help="the true rate is per ONTIME (events ~ ONTIME x rate) or per LIVETIME (default: ontime)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=_simulate)


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
        deadc_range=args.deadc_range, truth_time=args.truth_time,
        progress=None if args.quiet else _progress,
    )
    seconds = time.perf_counter() - start
    print(f"written: {sim.path} ({args.runs} runs, {int(sim.runs['EVENT_COUNT'].sum())} events, "
          f"{seconds:.1f} s, {args.runs / seconds:.1f} runs/s)")
    print(f"true model: {sim.model}")
    return 0


def _add_demo(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a small store, build its models and write them with an overview plot",
        description="The whole job on embedded, simulated data (no download, no network): simulate "
        "off runs into OUT/store (replacing a store the simulator wrote there before, never another), "
        "build the default recipe's models, write OUT/bkg-models.fits (loadable "
        "with gammapy's DataStore.from_file) and OUT/overview.png.",
    )
    p.add_argument("--out", type=Path, default=Path("bkgxr-demo"), help="output folder (default: ./bkgxr-demo)")
    p.add_argument("--runs", type=cli_args.count, default=30, help="simulated runs (default: 30)")
    p.add_argument("--events-per-run", type=cli_args.events_per_run, default=5000, help="mean events per run (default: 5000)")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_demo)


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


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``bkgxr`` command."""
    from . import __version__

    parser = cli_args.Parser(prog="bkgxr", description="Background models for IACTs from off runs (GADF DL3).")
    parser.add_argument("--version", action="version", version=f"bkgxr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_validate(sub)
    _add_plot(sub)
    _add_simulate(sub)
    _add_demo(sub)
    return parser


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

    with stop_on_signals():
        try:
            return int(args.func(args))
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
