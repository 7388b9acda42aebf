"""Validate background models on the H.E.S.S. DR1 source fields as analysers use them, against the published ones.

For each source field of the store (Crab, MSH 15-52, PKS 2155-304, RX J1713.7-3946:
the runs not ``TARGET_NAME == "Off data"``, grouped by target), bkgxr's models are
built from the runs outside the field (today the 45 off runs: leave-one-field-out),
written to a model file, loaded with ``gammapy.data.DataStore.from_file`` and analysed
with gammapy's ``MapDatasetMaker`` → ``SafeMaskMaker`` → ``FoVBackgroundMaker`` →
``ExcessMapEstimator`` chain (:mod:`bkgxr.fields`); the published models of the store
go through the same chain. Prints the table (significance mean and width outside the
exclusion regions, per-run FoV norm mean ± std, spectral chi2/ndf after the norm and
after norm + tilt; published / bkgxr), the wall time, writes the significance maps and
distributions to the PNG given on the command line and one CSV per field beside it.

Example::

    python benchmarks/fields.py fields.png    # 0.02 deg pixels: 128 s on 2 loaded cores (0.04 deg: 62 s)
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Data store used unless ``--data`` or ``BKGXR_DATA`` says otherwise.
DEFAULT_DATA = Path(os.environ.get("BKGXR_DATA", REPO.parent / "shared" / "data" / "hess-dl3-dr1"))


def main(argv: list[str] | None = None) -> int:
    """Run the field validation and print the table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("png", type=Path, help="output PNG of the maps and distributions (CSVs go beside it)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DL3 store (default: %(default)s)")
    parser.add_argument("--binsz", type=float, default=0.02,
                        help="map pixel size, deg (default: %(default)s; 0.04 takes half the time, same figures)")
    parser.add_argument("--mode", choices=("field", "run"), default="field", help="hold out a field or a run")
    parser.add_argument("--fields", default="", help="comma-separated field names (default: all)")
    parser.add_argument("--zenith-model", choices=("bands", "interpolate", "kernel"), default=None,
                        help="bkgxr recipe's zenith model (default: bkgxr.DEFAULT_RECIPE's)")
    parser.add_argument("--time-sigma", type=float, default=None, help="kernel width in time, yr; 0: none (default: the recipe's)")
    parser.add_argument("--efficiency-sigma", type=float, default=None, help="kernel width in ln MUONEFF (default: none)")
    parser.add_argument("--efficiency-scaling", action="store_true",
                        help="scale each run's counts to the observation's MUONEFF (Recipe.efficiency_scaling)")
    parser.add_argument("--track", action="store_true", help="follow each run's zenith track (Recipe.track)")
    parser.add_argument("--no-smooth", action="store_true", help="no smoothing (always so with --fov altaz)")
    parser.add_argument("--runs", choices=("off", "all"), default="off",
                        help="train on the off runs, or on every run outside the fields' exclusion regions")
    parser.add_argument("--fov", choices=("offset", "altaz"), default="offset", help="2D or 3D (ALTAZ) models")
    parser.add_argument("--published", action=argparse.BooleanOptionalAction, default=True,
                        help="also analyse the store's published models (default: yes)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import bkgxr
    from bkgxr.field_analysis import AnalysisSettings
    from bkgxr.fields import models_from_recipe, source_fields, validate_fields

    recipe = bkgxr.DEFAULT_RECIPE
    if args.zenith_model is not None:
        recipe = recipe.replace(zenith=args.zenith_model)
    if args.time_sigma is not None:
        recipe = recipe.replace(time_sigma=args.time_sigma or None)
    if args.track:
        recipe = recipe.replace(track=True)
    if args.efficiency_scaling:
        recipe = recipe.replace(efficiency_scaling=True)
    if args.efficiency_sigma:
        recipe = recipe.replace(efficiency_sigma=args.efficiency_sigma)
    if args.no_smooth or args.fov == "altaz":
        recipe = recipe.replace(smoothing=None)
    all_fields = source_fields(bkgxr.open_store(args.data).select())
    fields = all_fields
    if args.fields:
        wanted = {name.strip() for name in args.fields.split(",")}
        fields = [f for f in fields if f.name in wanted]
    exclusion = None
    for f in all_fields:  # every field's regions apply to every training run (far ones cost nothing)
        exclusion = f.regions() if exclusion is None else exclusion | f.regions()
    make_models = models_from_recipe(
        recipe, binning=bkgxr.Binning(fov=args.fov), exclusion=exclusion if args.runs == "all" else None
    )
    print(f"store {args.data}: {len(fields)} field(s) {[f.name for f in fields]}, mode {args.mode}, "
          f"pixel {args.binsz} deg; bkgxr recipe: {recipe.describe()}, fov {args.fov}, trained on the {args.runs} runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gammapy/astropy warn on the public files' headers
        result = validate_fields(args.data, make_models=make_models, fields=fields, mode=args.mode,
                                 train_query=bkgxr.OFF_QUERY if args.runs == "off" else None,
                                 published=args.published, settings=AnalysisSettings(binsz_deg=args.binsz))
    wall = time.perf_counter() - start
    print(result)
    print(f"wall time {wall:.0f} s (imports, model builds, {2 * sum(len(f.obs_ids) for f in fields)} run analyses, "
          f"{os.cpu_count()} cores)")
    result.plot(args.png)
    paths = result.write(args.png.parent)
    print(f"wrote {args.png} and {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
