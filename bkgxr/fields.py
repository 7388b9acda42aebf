"""Validation on source fields, the way analysers use a background model (gammapy's map chain).

Each field is analysed by :func:`bkgxr.field_analysis.analyse_field` (gammapy's map
chain: per-run norms, significance map and spectral residuals outside the exclusion regions).

:func:`validate_fields` holds each field out of the training set
(``mode="field"``) or each run (``mode="run"``), asks ``make_models`` for a
model file of the held-out observations, loads it with
``gammapy.data.DataStore.from_file`` and analyses the field; the published
models of the store (``DataStore.from_dir``) are analysed alike. The source
fields of a store are its runs grouped by target (:func:`source_fields`), with
exclusion circles from :data:`TARGET_RADIUS_DEG` and :data:`KNOWN_SOURCES`.

gammapy and matplotlib are imported only when a function needs them.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .exclusion import DEFAULT_RADIUS_DEG, Circle, ExclusionRegions
from .field_analysis import AnalysisSettings, FieldResult, analyse_field
from .io.selection import select_rows
from .io.store import OFF_QUERY, Store, open_store
from .io.write import write_atomic
from .recipe import DEFAULT_RECIPE

if TYPE_CHECKING:
    from .axes import Binning
    from .recipe import Recipe

#: ``make_models(store, train_runs, field_runs, path) -> path``: write to ``path`` a model file
#: (``DataStore.from_file`` loads it) holding a bkg for every run of ``field_runs``, built from
#: ``train_runs`` (run tables of :meth:`bkgxr.Store.select`).
MakeModels = Callable[[Store, pd.DataFrame, pd.DataFrame, Path], Path]
Mode = Literal["field", "run"]
MODES: tuple[str, ...] = ("field", "run")

#: Exclusion radius (deg) around each DR1 target (``RA_OBJ``/``DEC_OBJ``): point-like Crab and
#: PKS 2155-304, the ~0.1 deg PWN MSH 15-52, the ~0.6 deg shell of RX J1713.7-3946.
TARGET_RADIUS_DEG = {"Crab": 0.3, "PKS 2155-304": 0.3, "MSH 15-52": 0.4, "RX J1713.7-3946": 0.8}

#: Other known TeV sources within 2.2 deg of a DR1 target: name, Galactic l, b (deg) of the
#: H.E.S.S. Galactic Plane Survey catalogue (H.E.S.S. Collaboration 2018, A&A 612, A1), rounded to
#: 0.01 deg, and an exclusion radius (deg) of about the source size + 0.2 deg.
KNOWN_SOURCES: dict[str, tuple[tuple[str, float, float, float], ...]] = {
    "MSH 15-52": (("HESS J1503-582", 319.62, 0.29, 0.4), ("HESS J1457-593", 318.35, -0.42, 0.4)),
    "RX J1713.7-3946": (
        ("HESS J1713-381 (CTB 37B)", 348.63, 0.38, 0.3),
        ("HESS J1714-385 (CTB 37A)", 348.39, 0.11, 0.3),
        ("HESS J1718-385", 348.83, -0.49, 0.3),
        ("HESS J1708-410", 345.68, -0.47, 0.3),
    ),
}


@dataclass(frozen=True)
class Field:
    """A source field: its observations, map centre and exclusion circles.

    Attributes
    ----------
    name : str
        Target name (``TARGET_NAME`` without a ``(flare)``-like suffix).
    obs_ids : tuple of int
        Observations of the field.
    ra_deg, dec_deg : float
        Map centre, ICRS deg (the target, ``RA_OBJ``/``DEC_OBJ``).
    exclusion : tuple of Circle
        Excluded sky circles.
    """

    name: str
    obs_ids: tuple[int, ...]
    ra_deg: float
    dec_deg: float
    exclusion: tuple[Circle, ...]

    def regions(self) -> ExclusionRegions:
        """Return the exclusion circles as :class:`bkgxr.exclusion.ExclusionRegions` (for builds)."""
        return ExclusionRegions(circles=self.exclusion)


def target_name(name: str) -> str:
    """Return a ``TARGET_NAME`` without a trailing parenthesis (``"PKS 2155-304 (flare)"`` → ``"PKS 2155-304"``)."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", str(name)).strip()


def _known_circles(name: str) -> list[Circle]:
    from astropy.coordinates import SkyCoord

    circles = []
    for _, glon, glat, radius in KNOWN_SOURCES.get(name, ()):
        icrs = SkyCoord(l=glon, b=glat, unit="deg", frame="galactic").icrs
        circles.append(Circle(float(icrs.ra.deg), float(icrs.dec.deg), radius))
    return circles


def source_fields(runs: pd.DataFrame, *, off_query: str = OFF_QUERY) -> list[Field]:
    """Return the source fields of a run table: its runs not matching ``off_query``, grouped by target.

    Parameters
    ----------
    runs : pandas.DataFrame
        Run table of :meth:`bkgxr.Store.select` with ``TARGET_NAME``, ``RA_OBJ``, ``DEC_OBJ``.
    off_query : str
        :meth:`pandas.DataFrame.query` expression of the off runs, left out.

    Returns
    -------
    list of Field
        Sorted by name; centre at the target (the ``RA_OBJ``/``DEC_OBJ`` most of its runs
        give), a circle of :data:`TARGET_RADIUS_DEG`
        (:data:`bkgxr.exclusion.DEFAULT_RADIUS_DEG` for other targets) around it and the
        circles of :data:`KNOWN_SOURCES`.

    Raises
    ------
    ValueError
        If a column is missing.
    """
    missing = [c for c in ("OBS_ID", "TARGET_NAME", "RA_OBJ", "DEC_OBJ") if c not in runs]
    if missing:
        raise ValueError(f"the run table lacks column(s) {missing}")
    sources = runs.drop(select_rows(runs, off_query).index)
    fields = []
    for name, group in sources.groupby(sources["TARGET_NAME"].map(target_name), sort=True):
        # the target's position is the one most of its runs give (DR1 has scan runs of the
        # RX J1713.7-3946 field whose RA_OBJ/DEC_OBJ are their own pointings)
        ra, dec = group[["RA_OBJ", "DEC_OBJ"]].round(4).value_counts(sort=True).index[0]
        centre = Circle(float(ra), float(dec), TARGET_RADIUS_DEG.get(str(name), DEFAULT_RADIUS_DEG))
        fields.append(Field(str(name), tuple(int(i) for i in group["OBS_ID"]), centre.ra_deg, centre.dec_deg,
                            (centre, *_known_circles(str(name)))))
    return fields


def honour_fov_alignment(observation: Any) -> Any:
    """Return the observation with its bkg aligned as the model file's ``FOVALIGN`` says.

    gammapy 2.1's ``Observation.bkg`` forces ``FoVAlignment.REVERSE_LON_RADEC`` on the
    bkg of any observation whose EVENTS header has ``CREATOR = 'SASH FITS::EventListWriter'``
    (a compatibility rule for the H.E.S.S. DR1 files and their published models), whatever
    the model's own ``FOVALIGN``: an ALTAZ-aligned bkgxr model would be applied as if
    RADEC-aligned. This returns an in-memory copy without that CREATOR and with the bkg's
    alignment read from its header; other observations are returned as they are.
    """
    import copy

    from gammapy.irf import FoVAlignment

    bkg = observation.bkg
    align = getattr(bkg, "meta", None) and bkg.meta.get("FOVALIGN")
    if not align or bkg.fov_alignment == FoVAlignment(str(align).strip()):
        return observation
    fixed = observation.copy(in_memory=True)
    fixed.meta.optional = {k: v for k, v in (fixed.meta.optional or {}).items() if k != "CREATOR"}
    bkg = copy.copy(bkg)
    bkg._fov_alignment = FoVAlignment(str(align).strip())
    return fixed.copy(in_memory=True, bkg=bkg)


def models_from_recipe(
    recipe: Recipe = DEFAULT_RECIPE,
    *,
    binning: Binning | None = None,
    exclusion: ExclusionRegions | None = None,
    target_radius: float | None = DEFAULT_RADIUS_DEG,
    date: str = "2000-01-01",
) -> MakeModels:
    """Return a ``make_models`` that builds a cube of the training runs and writes the recipe's models.

    Parameters
    ----------
    recipe : Recipe
        How models are made from the cube (:func:`bkgxr.predict_models`).
    binning : Binning, optional
        Cube binning; :class:`bkgxr.Binning` defaults if omitted.
    exclusion : ExclusionRegions, optional
        Regions every training run is used outside of (e.g. the known sources of every field).
    target_radius : float or None
        Radius (deg) excluded around the target of each training run that is not an off run.
    date : str
        DATE keyword of the model files (reproducible output).

    Returns
    -------
    callable
        ``make_models(store, train_runs, field_runs, path) -> path``; see :data:`MakeModels`.
    """
    from .cube import build_cube
    from .io.write import write_models
    from .models import predict_models

    def make_models(store: Store, train_runs: pd.DataFrame, field_runs: pd.DataFrame, path: Path) -> Path:
        cube = build_cube(train_runs, binning=binning, exclusion=exclusion, target_radius=target_radius).compute()
        # write_models needs a model for every observation of the store; the field's are among them
        return write_models(predict_models(cube, store, recipe), path, store=store, date=date)

    return make_models


@dataclass(frozen=True)
class FieldValidation:
    """Results of :func:`validate_fields`: one :class:`FieldResult` per field and set of models.

    Attributes
    ----------
    fields : list of Field
        The fields, in order.
    results : dict
        ``(field name, model label) -> FieldResult``.
    labels : tuple of str
        Model labels in column order (``"published"`` first when analysed).
    mode : str
        ``"field"`` (leave-one-field-out) or ``"run"`` (leave-one-run-out).
    """

    fields: list[Field]
    results: dict[tuple[str, str], FieldResult]
    labels: tuple[str, ...]
    mode: str = "field"
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)

    def table(self) -> pd.DataFrame:
        """Return one row per field and model label with :meth:`FieldResult.summary`'s figures."""
        rows = [{"field": f.name, "model": label, **self.results[f.name, label].summary()}
                for f in self.fields for label in self.labels]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        labels = " / ".join(self.labels)
        head = (f"| field (runs) | sig. mean: {labels} | sig. width: {labels} | per-run norm: {labels} "
                f"| chi2/ndf norm: {labels} | chi2/ndf norm+tilt: {labels} |")
        lines = [head, "|" + "---|" * 6]
        for f in self.fields:
            s = [self.results[f.name, label].summary() for label in self.labels]

            def cell(fmt: str, *keys: str, s: list[dict[str, float]] = s) -> str:
                return " / ".join(fmt.format(*(x[k] for k in keys)) for x in s)

            lines.append(f"| {f.name} ({len(f.obs_ids)}) | {cell('{:+.2f}', 'sig_mean')} | {cell('{:.2f}', 'sig_width')} "
                         f"| {cell('{:.2f} ± {:.2f}', 'norm_mean', 'norm_std')} | {cell('{:.1f}', 'chi2_ndf_norm')} "
                         f"| {cell('{:.1f}', 'chi2_ndf_tilt')} |")
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``<field>.csv`` per field: per-run rows of every model label, the summaries as ``#`` lines.

        Each file is written whole or not at all (:func:`bkgxr.io.write.write_atomic`).

        Returns
        -------
        list of pathlib.Path
            The files written, one per field.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in self.fields:
            path = folder / f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', f.name)}.csv"
            lines = [f"# field: {f.name}; mode: {self.mode}\n"]
            for label in self.labels:
                summary = self.results[f.name, label].summary()
                lines.append(f"# {label}: " + ", ".join(f"{k} {v:.6g}" for k, v in summary.items()) + "\n")
            table = pd.concat([self.results[f.name, label].runs.assign(MODEL=label) for label in self.labels])
            paths.append(write_atomic(("".join(lines) + table.to_csv(index=False)).encode(), path))
        return paths

    def plot(self, path: str | Path) -> Path:
        """Draw per field the significance maps of every label and their distributions with N(0, 1), to a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n_col = len(self.labels) + 1
        fig = plt.figure(figsize=(4.2 * n_col, 3.8 * len(self.fields)))
        grid = np.linspace(-6.0, 6.0, 241)
        for row, f in enumerate(self.fields):
            hist_ax = fig.add_subplot(len(self.fields), n_col, row * n_col + n_col)
            for k, label in enumerate(self.labels):
                result = self.results[f.name, label]
                ax = fig.add_subplot(len(self.fields), n_col, row * n_col + k + 1, projection=result.significance.geom.wcs)
                image = np.asarray(result.significance.data, dtype=np.float64).reshape(result.outside.shape)
                shown = ax.imshow(np.where(result.outside, image, np.nan), origin="lower", cmap="RdBu_r", vmin=-5, vmax=5)
                ax.set_title(f"{f.name}: {label}", fontsize=9)
                ax.coords[0].set_axislabel("RA")
                ax.coords[1].set_axislabel("Dec")
                fig.colorbar(shown, ax=ax, label="significance", shrink=0.8)
                s = result.summary()
                hist_ax.hist(result.significances, bins=np.linspace(-6, 6, 61).tolist(), density=True, histtype="step",
                             label=f"{label}: {s['sig_mean']:+.2f} ± {s['sig_width']:.2f}")
            hist_ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
            hist_ax.set_yscale("log")
            hist_ax.set_ylim(1e-4, 1)
            hist_ax.set_xlabel("significance outside exclusion")
            hist_ax.legend(fontsize=7)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        png = io.BytesIO()
        fig.savefig(png, dpi=90, format=Path(path).suffix.lstrip(".") or "png")
        plt.close(fig)
        return write_atomic(png.getvalue(), path)


def _training_groups(
    pool: pd.DataFrame, fields: Sequence[Field], mode: str
) -> list[tuple[tuple[int, ...], list[int]]]:
    """Return ``(training OBS_IDs, held-out OBS_IDs)`` per distinct training set, in first-seen order.

    ``mode="field"``: a field's runs are held out of ``pool`` together; ``mode="run"``: each
    run alone. Units with the same training set share one build.
    """
    pool_ids = pool["OBS_ID"].astype(int).tolist()
    groups: dict[tuple[int, ...], list[int]] = {}
    for f in fields:
        units = [f.obs_ids] if mode == "field" else [(i,) for i in f.obs_ids]
        for unit in units:
            train = tuple(i for i in pool_ids if i not in set(unit))
            groups.setdefault(train, []).extend(unit)
    return list(groups.items())


def validate_fields(
    store_path: str | Path,
    *,
    make_models: MakeModels | None = None,
    fields: Sequence[Field] | None = None,
    mode: Mode = "field",
    train_query: str | None = OFF_QUERY,
    published: bool = True,
    label: str = "bkgxr",
    settings: AnalysisSettings | None = None,
    workdir: str | Path | None = None,
) -> FieldValidation:
    """Validate background models on source fields, leave-one-field-out or leave-one-run-out.

    Parameters
    ----------
    store_path : str or pathlib.Path
        GADF DL3 store folder.
    make_models : callable, optional
        See :data:`MakeModels`; :func:`models_from_recipe` with :data:`bkgxr.DEFAULT_RECIPE`
        if omitted.
    fields : sequence of Field, optional
        :func:`source_fields` of the store if omitted.
    mode : {"field", "run"}
        Hold out a field's runs together (``field``) or each run alone (``run``) from the
        training runs.
    train_query : str or None
        :meth:`bkgxr.Store.select` query of the runs models may be trained on (the off runs
        by default); None: every run of the store.
    published : bool
        Also analyse the store's own bkg models (``DataStore.from_dir``), labelled ``published``.
    label : str
        Label of ``make_models``' models.
    settings : AnalysisSettings, optional
        Maps and makers of :func:`analyse_field`.
    workdir : str or pathlib.Path, optional
        Folder for the model files (kept); a temporary folder, removed at the end, if omitted.

    Returns
    -------
    FieldValidation

    Raises
    ------
    ValueError
        If ``mode`` is unknown, there are no fields, or a field's runs leave no training run.
    """
    from gammapy.data import DataStore

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    store = open_store(store_path)
    fields = list(source_fields(store.select()) if fields is None else fields)
    if not fields:
        raise ValueError(f"{store_path}: no source field (every run matches {OFF_QUERY!r}); pass fields=")
    make_models = models_from_recipe() if make_models is None else make_models
    settings = AnalysisSettings() if settings is None else settings
    pool = store.select(train_query)
    required = ["aeff", "bkg"]
    with tempfile.TemporaryDirectory(prefix="bkgxr-fields-") as tmp:
        folder = Path(tmp if workdir is None else workdir)
        folder.mkdir(parents=True, exist_ok=True)
        source: dict[int, Any] = {}
        for k, (train, held) in enumerate(_training_groups(pool, fields, mode)):
            if not train:
                raise ValueError(f"runs {held[:5]}...: no training run left once they are held out")
            path = make_models(store, store.select(obs_ids=train), store.select(obs_ids=held), folder / f"models_{k}.fits")
            data_store = DataStore.from_file(path)
            source.update(dict.fromkeys(held, data_store))
        results: dict[tuple[str, str], FieldResult] = {}
        for f in fields:
            observations = [honour_fov_alignment(source[i].obs(i, required_irf=required)) for i in f.obs_ids]
            results[f.name, label] = analyse_field(observations, ra_deg=f.ra_deg, dec_deg=f.dec_deg,
                                                   exclusion=f.exclusion, settings=settings)
        if published:
            data_store = DataStore.from_dir(Path(store_path))
            for f in fields:
                observations = data_store.get_observations(list(f.obs_ids), required_irf=required)
                results[f.name, "published"] = analyse_field(observations, ra_deg=f.ra_deg, dec_deg=f.dec_deg,
                                                             exclusion=f.exclusion, settings=settings)
    labels = ("published", label) if published else (label,)
    return FieldValidation(fields, results, labels, mode, settings)
