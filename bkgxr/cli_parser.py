"""The ``bkgxr`` command line: its commands and their options, as one ``argparse`` parser.

:func:`build_parser` declares every command (``build``, ``validate``, ``plot``,
``simulate``, ``demo``) and option with its help text; option values are
checked by the types of :mod:`bkgxr.cli_args`. What each command does is in
:mod:`bkgxr.cli`, which dispatches on the parsed ``command``. Nothing heavy is
imported, so ``bkgxr --help`` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import cli_args
from .recipe import DEADTIMES, DEFAULT_RECIPE, ZENITH_MODELS


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
    p.add_argument("--efficiency-scaling", action=argparse.BooleanOptionalAction,
                   help="bring each run's counts to the observation's MUONEFF as MUONEFF**index, the index per energy "
                   "fitted on the runs (bkgxr.efficiency; default: off)")
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
        help="also print the summary of every recipe, smoothed or not, of the default with the efficiency scaling, "
        "and of the store's own bkg models if it has them",
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
        "(bkgxr.plot_runs.plot_validation); with --fields, significance maps and distributions",
    )
    _add_cluster_options(p)


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
        "(bkgxr.plot_runs.plot_observations), and save the figure.",
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
        "one line per observation; bkgxr.plot_runs.plot_observations)",
    )
    p.add_argument("--dpi", type=cli_args.dpi, default=100, help=f"resolution, 1 to {cli_args.MAX_DPI} (default: 100)")


def _add_simulate(sub: argparse._SubParsersAction[cli_args.Parser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a GADF data store of off runs drawn from a known background model",
        description="Draw off runs from bkgxr.rate_model.RateModel (Poisson-exact, reproducible from the "
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
    p.add_argument(
        "--track",
        action="store_true",
        help="draw each run's events along its pointing's zenith track (32 slices, each at its midpoint's zenith; "
        "obs-index SIMTRACK) instead of all at its mid-run ZEN_PNT: the truth of 'bkgxr build' with its default "
        "--event-zenith (default: off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress")


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
