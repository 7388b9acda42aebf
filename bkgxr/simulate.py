"""Simulated GADF DL3 off runs drawn from a known background rate model, with simple IRFs.

The truth is a :class:`bkgxr.rate_model.RateModel` (a rate per ONTIME, or
per LIVETIME with ``truth_time="livetime"``; also importable from here).
:func:`simulate_store` writes a data store of off runs drawn from it through
:mod:`bkgxr.io.dl3`, Poisson-exact and reproducible from a seed;
:func:`bkgxr.truth.truth_cube` returns the expected counts and the bin-averaged
rate per ONTIME in the layout of :func:`bkgxr.build_cube`, which the engine
must recover on average.

Every run file also holds the simple response of :class:`bkgxr.simirf.IrfModel`
(formulas in :mod:`bkgxr.simirf`), so that a gammapy analysis runs on the store.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import ICRS, AltAz, EarthLocation, SkyCoord
from astropy.coordinates.erfa_astrom import ErfaAstromInterpolator, erfa_astrom
from astropy.time import Time

from .earth_orientation import installed_tables
from .io.dl3 import (
    create_events_hdu,
    create_gti_hdu,
    hdu_index,
    obs_index,
    write_index_tables,
    write_run,
)
from .rate_model import (
    TIME_COLUMN,
    TRUTH_TIMES,
    RateModel,
    TruthTime,
    energy_grid,
    offset_grid,
)
from .simirf import IrfModel, irf_hdus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy.typing as npt

#: Observatory written to every header: the H.E.S.S. site (deg, deg, m).
SITE = {"GEOLON": 16.5002222222222, "GEOLAT": -23.2717777777778, "ALTITUDE": 1835.0}
#: MJDREFI, MJDREFF of TIME/TSTART/TSTOP, as in the H.E.S.S. release (2001-01-01 UTC, in TT).
MJDREF = (51910, 0.000742870370370241)
#: TSTART of run 0 (2004-01-01 18:00 UTC, s since MJDREF); 8 runs a night in 30-min slots.
FIRST_TSTART, RUNS_PER_NIGHT, SLOT_S = 94_672_800.0, 8, 1800.0
#: Equal slices of a run along whose zenith track ``simulate_store(track=True)`` draws its events.
TRACK_SLICES = 32
#: Closed range of a run's ONTIME (integer s) and default range of its DEADC = LIVETIME/ONTIME, drawn uniformly.
ONTIME_RANGE_S, DEADC_RANGE = (1500, 1800), (0.88, 0.94)

_KEYWORDS = ("OBS_ID", "TSTART", "TSTOP", "ONTIME", "LIVETIME", "DEADC", "RA_PNT", "DEC_PNT", "ALT_PNT", "AZ_PNT",
             "OBJECT", "RA_OBJ", "DEC_OBJ", "DATE-OBS", "TIME-OBS", "DATE-END", "TIME-END", "N_TELS", "TELLIST")
_TIME_CARDS = {"MJDREFI": MJDREF[0], "MJDREFF": MJDREF[1], "TIMEUNIT": "s", "TIMESYS": "TT", "TIMEREF": "LOCAL"}


def destination(
    ra_deg: float, dec_deg: float, offset_deg: npt.ArrayLike, position_angle_rad: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return RA, Dec (deg) at an offset (deg) and position angle (east of north) from a point, on the sphere."""
    dec0, offset = np.radians(dec_deg), np.radians(np.asarray(offset_deg, dtype=np.float64))
    pa = np.asarray(position_angle_rad, dtype=np.float64)
    sin_dec = np.clip(np.sin(dec0) * np.cos(offset) + np.cos(dec0) * np.sin(offset) * np.cos(pa), -1.0, 1.0)
    d_ra = np.arctan2(np.sin(pa) * np.sin(offset) * np.cos(dec0), np.cos(offset) - np.sin(dec0) * sin_dec)
    return np.mod(ra_deg + np.degrees(d_ra), 360.0), np.degrees(np.arcsin(sin_dec))


def _site() -> EarthLocation:
    """Return the observatory of :data:`SITE`."""
    return EarthLocation.from_geodetic(SITE["GEOLON"] * u.deg, SITE["GEOLAT"] * u.deg, SITE["ALTITUDE"] * u.m)


def pointing_track(runs: pd.DataFrame, n_slices: int = TRACK_SLICES) -> npt.NDArray[np.float64]:
    """Return each run's pointing zenith (deg) at the bounds and midpoints of ``n_slices`` equal slices of its time.

    One astropy ICRS -> AltAz evaluation for all runs and times (RA_PNT/DEC_PNT,
    the site :data:`SITE`, TT times since :data:`MJDREF`, no refraction), its
    precession-nutation and Earth position interpolated on a 300 s grid
    (astropy's ``ErfaAstromInterpolator``: 2e-11 deg from the exact
    transformation; 0.6 s instead of 9 s for 1000 runs of 32 slices).
    Elementwise, so a run's track does not depend on the other runs.

    Parameters
    ----------
    runs : pandas.DataFrame
        RA_PNT, DEC_PNT (deg) and TSTART, TSTOP (s since MJDREF) of each run.
    n_slices : int
        Equal slices of [TSTART, TSTOP].

    Returns
    -------
    numpy.ndarray
        Shape: (n_runs, 2 n_slices + 1); column ``2k`` is the zenith at the
        start of slice ``k``, ``2k + 1`` at its midpoint, the last at TSTOP.
    """
    start, stop = (runs[name].to_numpy(np.float64) for name in ("TSTART", "TSTOP"))
    fraction = np.arange(2 * n_slices + 1) / (2 * n_slices)
    times = start[:, None] + fraction[None, :] * (stop - start)[:, None]
    ra, dec = (runs[name].to_numpy(np.float64)[:, None] * u.deg for name in ("RA_PNT", "DEC_PNT"))
    with installed_tables(), erfa_astrom.set(ErfaAstromInterpolator(300 * u.s)):
        frame = AltAz(obstime=Time(MJDREF[0], MJDREF[1] + times / 86400.0, format="mjd", scale="tt"), location=_site())
        altitude = SkyCoord(ra=ra, dec=dec, frame=ICRS()).transform_to(frame).alt.deg
    return np.asarray(90.0 - altitude, dtype=np.float64).reshape(times.shape)


def _draw_run_params(
    rng: np.random.Generator, cos_range: tuple[float, float], deadc_range: tuple[float, float] = DEADC_RANGE
) -> tuple[float, float, int, float]:
    """Draw zenith, azimuth (float32-exact), ONTIME and DEADC: the first draws of a run's generator."""
    zenith = float(np.float32(np.degrees(np.arccos(rng.uniform(*cos_range)))))
    azimuth = float(np.float32(rng.uniform(0.0, 360.0)))
    ontime = int(rng.integers(ONTIME_RANGE_S[0], ONTIME_RANGE_S[1] + 1))
    return zenith, azimuth, ontime, float(np.float32(rng.uniform(*deadc_range)))


def draw_events(
    model: RateModel,
    run: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    truth_time: TruthTime = "ontime",
    slice_zenith: npt.ArrayLike | None = None,
) -> tuple[dict[str, npt.NDArray[Any]], float]:
    """Draw one run's events, N ~ Poisson(T x counts_per_second(ZEN_PNT)), T its ONTIME or LIVETIME.

    With ``slice_zenith`` (deg, shape (n_slices,)), [TSTART, TSTOP] is cut
    into that many equal slices and slice ``k`` draws N_k ~ Poisson(T / n_slices
    x counts_per_second(slice_zenith[k])) events, energies from that zenith's
    spectrum and times uniform in the slice. Energy and offset by inverse CDFs
    on fine grids, uniform position angle. Returns the columns EVENT_ID, TIME,
    RA, DEC, ENERGY and OFFSET (deg, not written), shape (n_events,), and the
    expected count.
    """
    zenith = np.atleast_1d(np.asarray(run["ZEN_PNT"] if slice_zenith is None else slice_zenith, dtype=np.float64))
    slice_time = float(run[TIME_COLUMN[truth_time]]) / zenith.size
    # each zenith's grid right after counts_per_second computed (and cached) it
    per_s, grids = zip(*[(model.counts_per_second(z), energy_grid(model, z)) for z in map(float, zenith)], strict=True)
    expected = slice_time * np.array(per_s)
    counts = rng.poisson(expected)
    n, first = int(counts.sum()), np.concatenate([[0], np.cumsum(counts)])
    u_energy = rng.random(n)
    energy = np.concatenate([np.exp(np.interp(u_energy[a:b], cdf_e, log_e))
                             for (log_e, cdf_e, _), a, b in zip(grids, first[:-1], first[1:], strict=True)])
    x, cdf_x, _ = offset_grid(model)
    offset = np.degrees(np.arccos(1.0 - np.interp(rng.random(n), cdf_x, x)))
    ra, dec = destination(float(run["RA_PNT"]), float(run["DEC_PNT"]), offset, rng.uniform(0, 2 * np.pi, n))
    width = float(run["ONTIME"]) / zenith.size  # slices in time order: sorting keeps each event in its slice
    time = float(run["TSTART"]) + np.sort(rng.uniform(0.0, width, n) + np.repeat(np.arange(zenith.size) * width, counts))
    ids = np.arange(1, n + 1, dtype=np.int64)
    return {"EVENT_ID": ids, "TIME": time, "RA": ra, "DEC": dec, "ENERGY": energy, "OFFSET": offset}, float(expected.sum())



class _Setup(NamedTuple):
    """What every run of a store shares."""

    model: RateModel
    irf: IrfModel
    seed: int
    cos_range: tuple[float, float]
    deadc_range: tuple[float, float]
    truth_time: TruthTime
    date: str
    track_slices: int = 0  # 0: each run's events at ZEN_PNT


def _simulate_run(task: tuple[_Setup, int, dict[str, Any], Path, npt.NDArray[np.float64] | None]) -> tuple[int, float, list[int]]:
    """Draw and write one run; return its EVENT_COUNT, expected count and HDU sizes (bytes)."""
    setup, index, run, path, slice_zenith = task
    rng = np.random.default_rng([setup.seed, index])
    _draw_run_params(rng, setup.cos_range, setup.deadc_range)  # the plan drew these from the same generator
    columns, expected = draw_events(setup.model, run, rng, truth_time=setup.truth_time, slice_zenith=slice_zenith)
    header = {"CREATOR": "bkgxr.simulate", "TELESCOP": "HESS", "INSTRUME": "bkgxr simulation", "OBS_MODE": "POINTING",
              "RADECSYS": "ICRS", "EQUINOX": 2000.0, **_TIME_CARDS, "TELAPSE": float(run["ONTIME"]),
              **{k: run[k] for k in _KEYWORDS}, **SITE, "EUNIT": "TeV", "DATE": setup.date}
    gti = create_gti_hdu(run["TSTART"], run["TSTOP"], {"TSTART": run["TSTART"], "TSTOP": run["TSTOP"], **_TIME_CARDS})
    sizes = write_run(path, [create_events_hdu(columns, header), gti, *irf_hdus(setup.irf, setup.model, run)])
    return columns["ENERGY"].size, expected, sizes


def _plan(n_runs: int, first_obs_id: int, setup: _Setup) -> tuple[pd.DataFrame, npt.NDArray[np.float64] | None]:
    """Draw every run's parameters and place its pointing on the sky (astropy, no refraction).

    With ``setup.track_slices``, also return each run's zenith at its slice
    midpoints (:func:`pointing_track`). Shape: (n_runs, track_slices).
    """
    zenith, azimuth, ontime, deadc = map(np.array, zip(
        *(_draw_run_params(np.random.default_rng([setup.seed, i]), setup.cos_range, setup.deadc_range) for i in range(n_runs)),
        strict=True))
    i = np.arange(n_runs)
    tstart = FIRST_TSTART + (i // RUNS_PER_NIGHT) * 86400.0 + (i % RUNS_PER_NIGHT) * SLOT_S
    location = _site()
    with installed_tables():
        start, stop = (Time(MJDREF[0], MJDREF[1] + t / 86400.0, format="mjd", scale="tt") for t in (tstart, tstart + ontime))
        frame = AltAz(obstime=start + (stop - start) / 2, location=location)
        sky = SkyCoord(az=azimuth * u.deg, alt=(90.0 - zenith) * u.deg, frame=frame).transform_to(ICRS())
        start_utc, stop_utc = start.utc.isot, stop.utc.isot
    f32 = np.float32
    ra, dec = sky.ra.deg.astype(f32), sky.dec.deg.astype(f32)  # events are drawn around these exact values
    galactic = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).galactic
    runs = pd.DataFrame(
        {"OBS_ID": first_obs_id + i, "RA_PNT": ra, "DEC_PNT": dec, "GLON_PNT": galactic.l.deg.astype(f32),
         "GLAT_PNT": galactic.b.deg.astype(f32), "ZEN_PNT": zenith.astype(f32), "ALT_PNT": (90.0 - zenith).astype(f32),
         "AZ_PNT": azimuth.astype(f32), "OBJECT": "Simulated off field", "RA_OBJ": ra, "DEC_OBJ": dec,
         "ONTIME": ontime.astype(f32), "LIVETIME": (ontime * deadc).astype(f32), "DEADC": deadc.astype(f32),
         "TSTART": tstart, "TSTOP": tstart + ontime,
         "DATE-OBS": [s[:10] for s in start_utc], "TIME-OBS": [s[11:] for s in start_utc],
         "DATE-END": [s[:10] for s in stop_utc], "TIME-END": [s[11:] for s in stop_utc],
         "N_TELS": 4, "TELLIST": "1,2,3,4", "QUALITY": 0, "TARGET_NAME": "Off data", "TARGET_TAG": "offdata"}
    )
    if not setup.track_slices:
        return runs, None
    track = pointing_track(runs, setup.track_slices)
    low = np.flatnonzero(np.max(track, axis=1) >= 90.0)
    if low.size:
        raise ValueError(f"run {int(runs['OBS_ID'][low[0]])}: its pointing sets below the horizon during the run "
                         f"({len(low)} run(s)); lower zenith_range[1]")
    return runs, track[:, 1::2]


def _normalised(model: RateModel, events_per_run: float, setup: _Setup) -> RateModel:
    """Rescale ``norm`` so that a run's expected count, averaged over the draws, is ``events_per_run``."""
    nodes, weights = np.polynomial.legendre.leggauss(32)
    cos_range = setup.cos_range
    cos_z = 0.5 * (cos_range[0] + cos_range[1]) + 0.5 * (cos_range[1] - cos_range[0]) * nodes
    per_s = np.array([model.counts_per_second(float(z)) for z in np.degrees(np.arccos(cos_z))])
    mean_time = 0.5 * sum(ONTIME_RANGE_S) * (0.5 * sum(setup.deadc_range) if setup.truth_time == "livetime" else 1.0)
    return dataclasses.replace(model, norm=float(model.norm * events_per_run / (mean_time * 0.5 * np.sum(weights * per_s))))


@dataclass(frozen=True)
class Simulation:
    """What :func:`simulate_store` wrote."""

    path: Path  #: the store folder, for :func:`bkgxr.open_store`
    model: RateModel  #: the truth, normalised to the requested events per run
    runs: pd.DataFrame  #: the obs index as written, plus EXPECTED_COUNT per run
    irf: IrfModel = dataclasses.field(default_factory=IrfModel)  #: the response written with every run
    truth_time: TruthTime = "ontime"  #: the time ``model`` is a rate per (see :func:`bkgxr.truth.truth_cube`)
    #: slices along each run's zenith track its events were drawn in (``SIMTRACK``); 0: whole runs at ZEN_PNT
    track_slices: int = 0


def simulate_store(
    out_dir: str | Path,
    *,
    n_runs: int,
    events_per_run: float | None = 10_000,
    seed: int = 0,
    zenith_range: tuple[float, float] = (0.0, 60.0),
    model: RateModel | None = None,
    irf: IrfModel | None = None,
    max_offset: float | None = None,
    deadc_range: tuple[float, float] = DEADC_RANGE,
    truth_time: TruthTime = "ontime",
    first_obs_id: int = 1,
    workers: int = 1,
    date: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    track: bool = False,
) -> Simulation:
    """Write a GADF DL3 store of off runs drawn from a known rate model, with IRFs.

    Run ``i`` draws from ``numpy.random.default_rng([seed, i])`` its zenith
    (uniform in cos zenith), azimuth, ONTIME and DEADC, then N ~ Poisson(
    T x integral of rate dE dOmega) events, T its ONTIME (``truth_time="ontime"``)
    or LIVETIME: at the rate of its mid-run zenith ZEN_PNT, or with ``track``
    along the zenith its pointing follows (:data:`TRACK_SLICES` slices, each at
    its midpoint's zenith, :func:`pointing_track` and :func:`draw_events`). ONTIME = TSTOP - TSTART = the GTI, exactly. Files:
    ``data/obs_<OBS_ID>.fits.gz`` (EVENTS, GTI, AEFF, EDISP, PSF; see
    :mod:`bkgxr.io.dl3`), ``hdu-index.fits.gz`` and ``obs-index.fits.gz`` with the
    H.E.S.S. DR1 columns, the model as ``SIM*`` keywords and ``SIMTIME = truth_time``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Store folder, created if missing.
    n_runs : int
        Number of runs; OBS_IDs run from ``first_obs_id``.
    events_per_run : float or None
        Mean expected events per run, averaged over the zenith and time
        draws: the model's ``norm`` is rescaled to it. ``None`` keeps ``norm``.
    seed : int
        Non-negative seed; the same seed gives the same files.
    zenith_range : (float, float)
        Pointing zenith range in deg, within [0, 90).
    model : RateModel, optional
        Shape of the truth; ``RateModel()`` if omitted. ``max_offset`` (deg) replaces its own.
    irf : IrfModel, optional
        Response written with every run; ``IrfModel()`` if omitted.
    deadc_range : (float, float)
        Range of the uniform DEADC draw, within (0, 1].
    truth_time : {"ontime", "livetime"}
        The time the model is a rate per: ONTIME (as GADF background models) or LIVETIME.
    first_obs_id, workers : int
        OBS_ID of the first run; processes that draw and write runs (1: this process;
        more start by forkserver or spawn, so a script must call from ``if __name__ == "__main__":``).
    date : str, optional
        DATE keyword, today (UTC) if omitted; fix it for byte-identical files.
    overwrite : bool
        Replace a store already in ``out_dir``.
    progress : callable, optional
        Called as ``progress(done, n_runs)`` after each run.
    track : bool
        Draw each run along its zenith track (obs-index ``SIMTRACK`` = slices
        per run, read by :func:`bkgxr.truth.truth_cube`); the truth of
        :func:`bkgxr.build_cube` with ``event_zenith=True``. False (the default)
        writes the same files as before the option existed.

    Returns
    -------
    Simulation
        Store folder, true model, IRFs, time convention and obs index.

    Raises
    ------
    FileExistsError
        If ``out_dir`` holds a store and ``overwrite`` is False.
    ValueError
        If an argument is out of range, or with ``track`` a pointing sets during its run.
    """
    root = Path(out_dir)
    if n_runs < 1 or workers < 1 or seed < 0 or (events_per_run is not None and events_per_run <= 0):
        raise ValueError("n_runs and workers must be >= 1, seed >= 0 and events_per_run > 0")
    if not 0 <= zenith_range[0] <= zenith_range[1] < 90:
        raise ValueError(f"zenith_range must satisfy 0 <= lo <= hi < 90 deg, got {zenith_range}")
    if not 0 < deadc_range[0] <= deadc_range[1] <= 1:
        raise ValueError(f"deadc_range must satisfy 0 < lo <= hi <= 1, got {deadc_range}")
    if truth_time not in TRUTH_TIMES:
        raise ValueError(f"truth_time must be one of {TRUTH_TIMES}, not {truth_time!r}")
    if (root / "obs-index.fits.gz").exists() and not overwrite:
        raise FileExistsError(f"{root} already holds a store; pass overwrite=True (CLI: --overwrite) to replace it")
    model = RateModel() if model is None else model
    model = model if max_offset is None else dataclasses.replace(model, max_offset=float(max_offset))
    cos_range = (float(np.cos(np.radians(zenith_range[1]))), float(np.cos(np.radians(zenith_range[0]))))
    date = date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    setup = _Setup(model, IrfModel() if irf is None else irf, seed, cos_range,
                   (float(deadc_range[0]), float(deadc_range[1])), truth_time, date, TRACK_SLICES if track else 0)
    if events_per_run is not None:
        setup = setup._replace(model=_normalised(model, float(events_per_run), setup))
    runs, slice_zenith = _plan(n_runs, first_obs_id, setup)
    (root / "data").mkdir(parents=True, exist_ok=True)
    names = [f"obs_{obs_id:06d}.fits.gz" for obs_id in runs["OBS_ID"]]
    tasks = [(setup, i, row, root / "data" / name, None if slice_zenith is None else slice_zenith[i])
             for i, (row, name) in enumerate(zip(runs.to_dict("records"), names, strict=True))]
    # forkserver/spawn, not fork: forking a process that runs threads (dask, a GUI) can deadlock
    context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) if workers > 1 else None
    try:
        results = []
        for result in pool.map(_simulate_run, tasks, chunksize=4) if pool else map(_simulate_run, tasks):
            results.append(result)
            if progress is not None:
                progress(len(results), n_runs)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    counts, expected, sizes = zip(*results, strict=True)
    model = setup.model
    runs["EVENT_COUNT"] = np.array(counts, dtype=np.int64)
    runs["SAFE_ENERGY_LO"] = model.energy_threshold(runs["ZEN_PNT"].to_numpy(np.float64)).astype(np.float32)
    runs["SAFE_ENERGY_HI"] = np.float32(model.energy_max)
    units = dict.fromkeys(("ONTIME", "LIVETIME", "TSTART", "TSTOP"), "s") | {"SAFE_ENERGY_LO": "TeV", "SAFE_ENERGY_HI": "TeV"}
    units |= {name: "deg" for name in runs if name.endswith(("_PNT", "_OBJ"))}
    meta = {**_TIME_CARDS, **SITE, "CREATOR": "bkgxr.simulate", "DATE": date, "SIMSEED": seed, **model.to_meta(),
            "SIMTIME": (truth_time, "the SIM* rate is per ontime or livetime")}
    if setup.track_slices:  # only then: the default store stays byte-identical
        meta["SIMTRACK"] = (setup.track_slices, "slices per run along the zenith track")
    write_index_tables(root, hdu_index(runs["OBS_ID"], names, sizes), obs_index(runs, meta, units))
    return Simulation(path=root.resolve(), model=model, runs=runs.assign(EXPECTED_COUNT=np.array(expected)),
                      irf=setup.irf, truth_time=truth_time, track_slices=setup.track_slices)


