"""Forecasts of classic real series: every dynlearn forecaster at its defaults against naive, ETS and auto-ARIMA.

Every series ships inside a package wheel (pmdarima, sktime, statsmodels,
dynlearn), so the benchmark needs no download. Protocol, the same for every
model: the last ``horizon`` observations of a series are held out, each
model is fitted on the observations before them (the history) and forecasts
the held-out ones from the end of the history, all at once. Times are the
observation index (0, 1, 2, ...: every series here is regularly sampled).

Figures, per series and model:

- ``mse_over_naive``: mean squared error of the forecast over the held-out
  observations divided by that of the naive forecast (the last observed
  value carried forward). Below 1 beats naive. The series' own units cancel,
  so figures compare across series.
- ``coverage90``: share of held-out observations inside the model's central
  90% forecast interval. ETS and ARIMA give theirs; LatentODE, NeuralSDE and
  LatentSDE read quantiles of their predictive distribution; NeuralODE and
  ODERNN give split conformal intervals, which need residuals of forecasts
  the model did not train on. With one series there are none, so they are
  calibrated (``calibrate``) on the training history itself, horizon the
  held-out length: in-sample residuals, so their intervals are expected to
  be too narrow.
- ``fit_time_s``: seconds of ``fit`` (and of ``calibrate`` for NeuralODE
  and ODERNN), on one thread.

Models: ``naive``; ``seasonal_naive`` (the value one period earlier) where
the series has a known period; ``ets``, statsmodels' ``ETSModel`` with
additive errors, additive damped trend and additive seasonality where the
period is known; ``auto_arima``, pmdarima's stepwise search (seasonal where
the period is known, except where noted); and dynlearn's forecasters at their
defaults (``random_state`` the seed, ``device`` from ``--device``,
``n_threads=1``): NeuralODE (over ``--seeds``: min, median, max), ODERNN,
LatentODE, NeuralSDE, LatentSDE; and ``AutoForecaster`` when this dynlearn
has it, given ``seasonal_period`` where the series has a known period (the
information ETS and the seasonal ARIMA get). HamiltonianNN and LagrangianNN are not run: they learn conservative
dynamics from coordinate/momentum (or coordinate/velocity) pairs, which none
of these series are.

Run::

    OMP_NUM_THREADS=1 python benchmarks/real_forecasts.py                 # full run
    OMP_NUM_THREADS=1 python benchmarks/real_forecasts.py --quick         # smoke run: 2 series, 3 epochs
    python benchmarks/real_forecasts.py --series airline nile --estimators naive ets NeuralODE --seeds 0 1 2

It writes ``real_forecasts.json`` (every row and the environment) and
``real_forecasts.md`` (the tables) into ``benchmarks/results/``
(``real_forecasts_quick.*`` with ``--quick``). ``benchmarks/run.py`` runs it
as the ``real_forecasts`` benchmark. Needs the ``bench`` extra
(``pip install dynlearn[bench]``: statsmodels, pmdarima, sktime).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # One thread for every library, fixed before numpy loads; imported (by run.py), run() limits the
    # thread pools itself without changing the environment of the other benchmarks.
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = "1"

import argparse
import json
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

NAME = "real_forecasts"
OUT = Path(__file__).resolve().parent / "results"
THREADS = 1
COVERAGE = 0.9
QUICK_SERIES = ("nile", "lynx_hare")
QUICK_EPOCHS = 3
DEFAULT_SEEDS = (0, 1, 2)
DYNLEARN_MODELS = ("NeuralODE", "ODERNN", "LatentODE", "NeuralSDE", "LatentSDE")
BASELINES = ("naive", "seasonal_naive", "ets", "auto_arima")
# Models whose intervals are split conformal: calibrated on the training history (see the module docstring).
CONFORMAL = ("NeuralODE", "ODERNN")
NOT_RUN = {
    "HamiltonianNN": "needs (q, p) pairs of a conservative system; these series are not",
    "LagrangianNN": "needs (q, dq/dt) pairs of a conservative system; these series are not",
}
EXTRAS = ("statsmodels", "pmdarima", "sktime")


# ---------------------------------------------------------------------- series
@dataclass(frozen=True)
class Series:
    """One real series and its protocol: the last ``horizon`` observations are forecast."""

    name: str
    source: str
    sampling: str
    period: int | None
    horizon: int
    load: Callable[[], np.ndarray]  # values, shape (n_times,) or (n_times, n_features)
    arima_seasonal: bool = True
    note: str = ""


def _sktime(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import sktime.datasets

        return getattr(sktime.datasets, name)().to_numpy(float)

    return load


def _pmdarima(name: str, last: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import pmdarima.datasets

        values = np.asarray(getattr(pmdarima.datasets, name)(), dtype=float)
        values = values[: len(values) - np.argmax(~np.isnan(values[::-1]))]  # ausbeer's last quarter is missing
        return values[-last:] if last else values

    return load


def _statsmodels(name: str, column: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import statsmodels.api as sm

        return getattr(sm.datasets, name).load_pandas().data[column].to_numpy(float)

    return load


def _lynx_hare() -> np.ndarray:
    from dynlearn.datasets import load_lynx_hare

    return load_lynx_hare().frame[["hare", "lynx"]].to_numpy(float)


def _fifth(n: int) -> int:
    return round(0.2 * n)


SERIES: dict[str, Series] = {
    s.name: s
    for s in [
        Series("airline", "sktime.datasets.load_airline", "monthly, 144", 12, 24, _sktime("load_airline"),
               note="last two years"),
        Series("shampoo_sales", "sktime.datasets.load_shampoo_sales", "monthly, 36", None, _fifth(36),
               _sktime("load_shampoo_sales"), note="three years: too short for a seasonal fit"),
        Series("lynx", "sktime.datasets.load_lynx", "yearly, 114", None, _fifth(114), _sktime("load_lynx"),
               note="~10-year cycle, not a fixed period"),
        Series("wineind", "pmdarima.datasets.load_wineind", "monthly, 176", 12, 24, _pmdarima("load_wineind"),
               note="last two years"),
        Series("woolyrnq", "pmdarima.datasets.load_woolyrnq", "quarterly, 119", 4, _fifth(119),
               _pmdarima("load_woolyrnq")),
        Series("austres", "pmdarima.datasets.load_austres", "quarterly, 89", None, _fifth(89),
               _pmdarima("load_austres"), note="smooth trend, no seasonality"),
        Series("ausbeer", "pmdarima.datasets.load_ausbeer", "quarterly, 211 (212th missing)", 4, _fifth(211),
               _pmdarima("load_ausbeer")),
        Series("heartrate", "pmdarima.datasets.load_heartrate", "every 0.5 s, 150", None, _fifth(150),
               _pmdarima("load_heartrate")),
        Series("taylor", "pmdarima.datasets.load_taylor", "half-hourly, last 15 of 84 days", 48, 48,
               _pmdarima("load_taylor", last=15 * 48), arima_seasonal=False,
               note="last 15 days of the 12 weeks, the last day forecast; ARIMA non-seasonal (a seasonal "
                    "search at m=48 ran over 5 min without finishing), seasonal naive and ETS carry the daily "
                    "cycle"),
        Series("nile", "statsmodels.datasets.nile", "yearly, 100", None, _fifth(100),
               _statsmodels("nile", "volume")),
        Series("sunspots", "statsmodels.datasets.sunspots", "yearly, 309", None, _fifth(309),
               _statsmodels("sunspots", "SUNACTIVITY"), note="~11-year cycle, not a fixed period"),
        Series("lynx_hare", "dynlearn.datasets.load_lynx_hare", "yearly, 21, two features", None, _fifth(21),
               _lynx_hare, note="both features forecast jointly by dynlearn; baselines per feature"),
    ]
}


def split(values: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """History and held-out observations, as 2-d arrays (n_times, n_features)."""
    values = values.reshape(len(values), -1)
    if np.isnan(values).any():
        raise ValueError("values must have no missing observation; drop or fill them in the series' loader.")
    if not 0 < horizon < len(values) - 2:
        raise ValueError(f"horizon must leave at least 3 training observations; got {horizon} of {len(values)}.")
    return values[:-horizon], values[-horizon:]


def naive_mse(history: np.ndarray, actual: np.ndarray) -> float:
    """MSE of carrying the last observed value forward, over all held-out entries."""
    return float(np.mean((actual - history[-1]) ** 2))


def score(forecast: np.ndarray, history: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """(MSE of the forecast, that MSE over the naive forecast's)."""
    mse = float(np.mean((np.asarray(forecast, dtype=float).reshape(actual.shape) - actual) ** 2))
    return mse, mse / naive_mse(history, actual)


def coverage(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray) -> float:
    lower, upper = (np.asarray(a, dtype=float).reshape(actual.shape) for a in (lower, upper))
    return float(np.mean((actual >= lower) & (actual <= upper)))


# ------------------------------------------------------------------- baselines
# Each takes (history of one feature, horizon, period, series) and returns (forecast, lower, upper);
# lower/upper are None for a model without intervals.
def _naive(y, h, period, series):
    return np.full(h, y[-1]), None, None


def _seasonal_naive(y, h, period, series):
    return y[len(y) - period + np.arange(h) % period], None, None


def _ets(y, h, period, series):
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    model = ETSModel(pd.Series(y), error="add", trend="add", damped_trend=True,
                     seasonal="add" if period else None, seasonal_periods=period)
    fitted = model.fit(disp=False)
    frame = fitted.get_prediction(start=len(y), end=len(y) + h - 1).summary_frame(alpha=1 - COVERAGE)
    return frame["mean"].to_numpy(), frame["pi_lower"].to_numpy(), frame["pi_upper"].to_numpy()


def _auto_arima(y, h, period, series):
    import pmdarima

    seasonal = bool(period) and series.arima_seasonal
    model = pmdarima.auto_arima(y, seasonal=seasonal, m=period if seasonal else 1, suppress_warnings=True,
                                error_action="ignore")
    forecast, bounds = model.predict(n_periods=h, return_conf_int=True, alpha=1 - COVERAGE)
    return np.asarray(forecast), bounds[:, 0], bounds[:, 1]


BASELINE_FUNCTIONS = {"naive": _naive, "seasonal_naive": _seasonal_naive, "ets": _ets, "auto_arima": _auto_arima}


def run_baseline(name: str, series: Series, history: np.ndarray, actual: np.ndarray) -> dict:
    """Fit a baseline on each feature of the history and score its forecast of all of them."""
    h = len(actual)
    forecasts, lowers, uppers = [], [], []
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the statsmodels optimisers
        for feature in range(history.shape[1]):
            forecast, lower, upper = BASELINE_FUNCTIONS[name](history[:, feature], h, series.period, series)
            forecasts.append(forecast)
            lowers.append(lower)
            uppers.append(upper)
    fit_time = time.perf_counter() - started
    forecast = np.stack(forecasts, axis=-1)
    has_interval = lowers[0] is not None
    return _row(series, name, None, history, actual, forecast,
                np.stack(lowers, axis=-1) if has_interval else None,
                np.stack(uppers, axis=-1) if has_interval else None, fit_time)


# --------------------------------------------------------------------- dynlearn
def dynlearn_estimator(name: str):
    """The class ``dynlearn.<name>``, or None when this dynlearn has no such name."""
    import dynlearn

    try:
        return getattr(dynlearn, name)
    except AttributeError:
        return None


def run_dynlearn(name: str, series: Series, history: np.ndarray, actual: np.ndarray, seed: int, device: str,
                 max_epochs: int | None) -> dict:
    """Fit dynlearn's ``name`` at its defaults on the history and score its forecast of the held-out rows."""
    estimator = dynlearn_estimator(name)
    params = {"random_state": seed, "device": device, "n_threads": THREADS}
    if series.period:
        params["seasonal_period"] = series.period  # told the period, as ETS and the seasonal ARIMA are
    if max_epochs is not None:
        params["max_epochs"] = max_epochs
    accepted = estimator().get_params()
    model = estimator(**{key: value for key, value in params.items() if key in accepted})
    t_history = np.arange(len(history), dtype=float)
    t_future = np.arange(len(history), len(history) + len(actual), dtype=float)
    started = time.perf_counter()
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            model.fit(history, t=t_history)
            fit_time = time.perf_counter() - started
            forecast = np.asarray(model.predict(history, t=t_future), dtype=float)
        except (RuntimeError, ValueError, FloatingPointError) as error:
            # A forecast that blows up fails its solve (IntegrationError); a diverging fit raises TrainingError.
            return _row(series, name, seed, history, actual, None, None, None, time.perf_counter() - started,
                        status=f"{type(error).__name__}: {str(error)[:160]}")
        lower = upper = None
        interval_note = ""
        try:
            if name in CONFORMAL:
                calibrating = time.perf_counter()
                model.calibrate(history, X_t=t_history, horizon=len(actual))
                fit_time += time.perf_counter() - calibrating
                interval_note = "conformal, calibrated in-sample"
            lower, upper = model.predict_interval(history, t=t_future, coverage=COVERAGE, random_state=seed)
        except (RuntimeError, ValueError) as error:
            interval_note = f"no interval: {type(error).__name__}: {str(error)[:120]}"
        caught = sorted({type(record.message).__name__ for record in records})
    row = _row(series, name, seed, history, actual, forecast, lower, upper, fit_time)
    row.update(epochs=int(getattr(model, "n_epochs_", 0)), warnings=caught, interval_note=interval_note)
    return row


def _row(series, model, seed, history, actual, forecast, lower, upper, fit_time, status="ok") -> dict:
    mse = ratio = cover = float("nan")
    if forecast is not None:
        mse, ratio = score(forecast, history, actual)
        if not np.isfinite(mse):
            status = "non-finite forecast"
    if lower is not None:
        cover = coverage(lower, upper, actual)
    return {"series": series.name, "model": model, "seed": seed, "n_train": len(history), "horizon": len(actual),
                "naive_mse": naive_mse(history, actual), "mse": mse, "mse_over_naive": ratio, "coverage90": cover,
                "fit_time_s": fit_time, "status": status, "epochs": None, "warnings": [], "interval_note": ""}


# ------------------------------------------------------------------------- run
@dataclass
class Options:
    series: tuple[str, ...]
    estimators: tuple[str, ...]
    seeds: tuple[int, ...]
    device: str = "cpu"
    max_epochs: int | None = None  # None: the estimators' defaults
    quick: bool = False


def available_estimators() -> tuple[str, ...]:
    """Baselines, dynlearn's forecasters, and AutoForecaster when this dynlearn has it."""
    auto = ("AutoForecaster",) if dynlearn_estimator("AutoForecaster") is not None else ()
    return BASELINES + DYNLEARN_MODELS + auto


def default_options(quick: bool) -> Options:
    return Options(
        series=QUICK_SERIES if quick else tuple(SERIES),
        estimators=available_estimators(),
        seeds=DEFAULT_SEEDS[:1] if quick else DEFAULT_SEEDS,
        max_epochs=QUICK_EPOCHS if quick else None,
        quick=quick,
    )


def missing_extras() -> list[str]:
    import importlib.util

    return [name for name in EXTRAS if importlib.util.find_spec(name) is None]


def run(options: Options, log: Callable[[str], None] = print,
        after_series: Callable[[list[dict]], object] | None = None) -> list[dict]:
    """Every selected model on every selected series, on one thread; one row per (series, model, seed).

    ``after_series`` gets the rows so far after each series (the script writes its files there, so an
    interrupted run keeps what it measured).
    """
    rows: list[dict] = []
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with threadpool_limits(limits=THREADS):
            for name in options.series:
                rows += run_series(SERIES[name], options, log)
                if after_series is not None:
                    after_series(rows)
    finally:
        torch.set_num_threads(previous)
    return rows


def run_series(series: Series, options: Options, log: Callable[[str], None]) -> list[dict]:
    history, actual = split(series.load(), series.horizon)
    rows = []
    for model in options.estimators:
        if model in BASELINES:
            if model == "seasonal_naive" and not series.period:
                continue
            rows.append(run_baseline(model, series, history, actual))
        else:
            seeds = options.seeds if model == "NeuralODE" else options.seeds[:1]
            for seed in seeds:
                rows.append(run_dynlearn(model, series, history, actual, seed, options.device, options.max_epochs))
        for row in rows[-(len(options.seeds) if model == "NeuralODE" else 1):]:
            log(f"  {row['series']:<14} {row['model']:<15} seed={row['seed']!s:<5} "
                f"mse/naive={row['mse_over_naive']:.3g}  cov90={row['coverage90']:.2f}  "
                f"fit={row['fit_time_s']:.1f}s  {row['status']}")
    return rows


# ---------------------------------------------------------------------- report
def summary(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(series, model) -> median, min, max of mse_over_naive over seeds, median coverage and fit time."""
    out: dict[tuple[str, str], dict] = {}
    for key in dict.fromkeys((row["series"], row["model"]) for row in rows):
        group = [row for row in rows if (row["series"], row["model"]) == key]
        ratios = np.array([row["mse_over_naive"] for row in group], dtype=float)
        failed = [row["status"] for row in group if row["status"] != "ok"]
        finite = ratios[np.isfinite(ratios)]
        out[key] = {
            "median": float(np.median(ratios)) if not failed else (float(np.median(finite)) if finite.size else np.nan),
            "low": float(finite.min()) if finite.size else np.nan,
            "high": float(finite.max()) if finite.size else np.nan,
            "runs": len(group),
            "failed": len(failed),
            "coverage90": float(np.nanmedian([row["coverage90"] for row in group]))
            if any(np.isfinite(row["coverage90"]) for row in group) else np.nan,
            "fit_time_s": float(np.median([row["fit_time_s"] for row in group])),
        }
    return out


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "–"
    if not np.isfinite(entry["median"]):
        return f"failed ({entry['failed']}/{entry['runs']})"
    text = f"{entry['median']:.3g}"
    if entry["runs"] > 1:
        text += f" [{entry['low']:.3g}, {entry['high']:.3g}]"
    if entry["failed"]:
        text += f" ({entry['failed']}/{entry['runs']} failed)"
    return text


def markdown(rows: list[dict], environment: dict, command: str) -> str:
    table = summary(rows)
    series = list(dict.fromkeys(row["series"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    seeds = sorted({row["seed"] for row in rows if row["model"] == "NeuralODE"})
    lines = [
        f"# Forecasts of real series ({environment['mode']} run)",
        "",
        f"Command: `{command}`",
        "",
        (f"dynlearn {environment['dynlearn']}, torch {environment['torch']}, statsmodels "
        f"{environment.get('statsmodels')}, pmdarima {environment.get('pmdarima')}; device {environment['device']}; "
        f"torch threads {environment['torch_threads']}, OMP_NUM_THREADS={environment['OMP_NUM_THREADS']}; "
        f"{environment['date']}. Every row is in `real_forecasts{environment['suffix']}.json`; the protocol is "
        "in the docstring of `benchmarks/real_forecasts.py`."),
        "",
        "## MSE ÷ naive (last value) on the held-out observations (below 1 beats naive)",
        "",
        (f"NeuralODE: median [min, max] over seeds {', '.join(map(str, seeds))}; other dynlearn models seed "
        f"{seeds[0] if seeds else 0}. The best figure of each series is in bold."),
        "",
        "| series | horizon | " + " | ".join(models) + " |",
        "|---|---:|" + "---:|" * len(models),
    ]
    for name in series:
        entries = {model: table.get((name, model)) for model in models}
        medians = {m: e["median"] for m, e in entries.items() if e is not None and np.isfinite(e["median"])}
        best = min(medians, key=medians.get) if medians else None
        horizon = next(row["horizon"] for row in rows if row["series"] == name)
        cells = [f"**{_cell(e)}**" if m == best else _cell(e) for m, e in entries.items()]
        lines.append(f"| {name} | {horizon} | " + " | ".join(cells) + " |")
    lines += _wins(table, series, models)
    lines += ["", f"## Coverage of the central {COVERAGE:.0%} interval", "",
              "| series | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for name in series:
        cells = []
        for model in models:
            entry = table.get((name, model))
            cells.append("–" if entry is None or not np.isfinite(entry["coverage90"]) else f"{entry['coverage90']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", ("NeuralODE and ODERNN intervals are conformal, calibrated on the training history (in-sample "
              "residuals, so expected to be too narrow); `–`: the model gives no interval."),
              "", "## Fit time (s, median over seeds, one thread)", "",
              "| series | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for name in series:
        cells = [f"{table[(name, m)]['fit_time_s']:.2f}" if (name, m) in table else "–" for m in models]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    failures = [row for row in rows if row["status"] != "ok"]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['series']} / {r['model']} (seed {r['seed']}): {r['status']}" for r in failures]
    lines += ["", "## Series", "", "| series | source | sampling | period | horizon | note |", "|---|---|---|---|---:|---|"]
    lines += [f"| {s.name} | `{s.source}` | {s.sampling} | {s.period or '–'} | {s.horizon} | {s.note} |"
              for s in SERIES.values() if s.name in series]
    lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in NOT_RUN.items()) + "."]
    if "AutoForecaster" not in models:
        lines.append("`dynlearn.AutoForecaster` is not in this dynlearn; the script adds it when it is.")
    return "\n".join(lines) + "\n"


def _wins(table: dict, series: list[str], models: list[str]) -> list[str]:
    """For each dynlearn model: on how many series it beats naive, ETS and auto-ARIMA (median over seeds)."""
    references = [m for m in ("naive", "ets", "auto_arima") if m in models]
    learned = [m for m in models if m not in BASELINES]
    if not learned or not references:
        return []
    lines = ["", ("Series where the dynlearn model's (median) ratio is lower than the reference's, "
             "out of the series where both ran:"), "",
             "| model | " + " | ".join(f"beats {r}" for r in references) + " |", "|---|" + "---:|" * len(references)]
    for model in learned:
        cells = []
        for reference in references:
            pairs = [(table[(s, model)]["median"], table[(s, reference)]["median"]) for s in series
                     if (s, model) in table and (s, reference) in table]
            pairs = [(a, b) for a, b in pairs if np.isfinite(b)]
            cells.append(f"{sum(np.isfinite(a) and a < b for a, b in pairs)}/{len(pairs)}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def environment(options: Options) -> dict:
    import platform
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    import dynlearn

    found = {}
    for package in EXTRAS:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    device = options.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device += f" ({torch.cuda.get_device_name()})"
    return dict(mode="quick" if options.quick else "full", suffix="_quick" if options.quick else "",
                dynlearn=dynlearn.__version__, torch=torch.__version__, python=platform.python_version(), **found,
                device=device, torch_threads=THREADS, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS"),
                machine_cores=os.cpu_count(), date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                seeds=list(options.seeds), max_epochs=options.max_epochs, not_run=NOT_RUN)


def write(rows: list[dict], options: Options, out: Path, command: str, env: dict | None = None) -> tuple[Path, Path]:
    """``real_forecasts[_quick].json`` and ``.md`` in ``out``."""
    env = env or environment(options)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"real_forecasts{env['suffix']}"
    protocol = {s.name: {"source": s.source, "sampling": s.sampling, "period": s.period, "horizon": s.horizon,
                             "arima_seasonal": s.arima_seasonal, "note": s.note}
                for s in SERIES.values() if s.name in options.series}
    payload = {"command": command, "environment": env, "options": asdict(options), "protocol": protocol,
                   "rows": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                         for row in rows]}
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    md_path.write_text(markdown(rows, env, command))
    return json_path, md_path


def merge(json_paths: list[Path], out: Path) -> tuple[Path, Path]:
    """One pair of files from earlier runs' JSON: runs of different ``--series`` side by side, or a later run of
    some ``--estimators`` measured again, whose cells replace the earlier file's (same series, model and seed)."""
    payloads = [json.loads(path.read_text()) for path in json_paths]
    cells: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for payload in payloads:
        for row in payload["rows"]:
            row = {k: (float("nan") if v is None and k in ("mse", "mse_over_naive", "coverage90") else v)
                   for k, v in row.items()}
            cells[(row["series"], row["model"], row["seed"])] = row  # a later file's measurement wins
    rows = list(cells.values())
    first = payloads[0]
    estimators = tuple(dict.fromkeys(name for payload in payloads for name in payload["options"]["estimators"]))
    options = Options(**{**first["options"], "series": tuple(dict.fromkeys(r["series"] for r in rows)),
                         "estimators": estimators, "seeds": tuple(first["options"]["seeds"])})
    command = " & ".join(payload["command"] for payload in payloads)
    return write(rows, options, out, command, env=first["environment"])


# ------------------------------------------------------------------------ main
def parse(argv: list[str]) -> tuple[Options | list[Path], Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: series {', '.join(QUICK_SERIES)}, {QUICK_EPOCHS} epochs, one seed")
    parser.add_argument("--series", nargs="+", choices=list(SERIES), help="run only these series")
    parser.add_argument("--estimators", nargs="+", help=f"run only these models (of {', '.join(available_estimators())})")
    parser.add_argument("--seeds", nargs="+", type=int, help="NeuralODE's seeds (the others use the first)")
    parser.add_argument("--device", default="cpu", help="torch device of the dynlearn models (default cpu)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="fit nothing: merge earlier runs' JSON files into one pair of files in --out")
    args = parser.parse_args(argv)
    if args.merge:
        return args.merge, args.out
    options = default_options(args.quick)
    if args.estimators:
        unknown = sorted(set(args.estimators) - set(available_estimators()))
        if unknown:
            parser.error(f"--estimators: unknown {unknown}; choose from {list(available_estimators())}.")
        options.estimators = tuple(args.estimators)
    if args.series:
        options.series = tuple(args.series)
    if args.seeds:
        options.seeds = tuple(args.seeds)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch; run with --device cpu.")
    options.device = args.device
    return options, args.out


def records(options: Options) -> list:
    """The summary as ``benchmarks/run.py`` records: ``SERIES.MODEL.METRIC`` rows."""
    from dynlearn.bench import Record

    found = []
    for (series, model), entry in summary(run(options)).items():
        prefix = f"{series}.{model}"
        found += [Record(NAME, f"{prefix}.mse_over_naive", entry["median"], "ratio (median over seeds)"),
                  Record(NAME, f"{prefix}.coverage90", entry["coverage90"], "share of held-out points"),
                  Record(NAME, f"{prefix}.fit_time", entry["fit_time_s"], "s")]
        if entry["runs"] > 1:
            found += [Record(NAME, f"{prefix}.mse_over_naive_min", entry["low"], "ratio"),
                      Record(NAME, f"{prefix}.mse_over_naive_max", entry["high"], "ratio")]
        if entry["failed"]:
            found.append(Record(NAME, f"{prefix}.failed_runs", entry["failed"], "runs"))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    missing = missing_extras()
    if missing:
        print(f"real_forecasts needs {', '.join(missing)}: pip install 'dynlearn[bench]'.", file=sys.stderr)
        return 2
    options, out = parse(argv)
    if isinstance(options, list):
        paths = merge(options, out)
    else:
        command = ("OMP_NUM_THREADS=1 python benchmarks/real_forecasts.py " + shlex.join(argv)).strip()
        rows = run(options, after_series=lambda rows: write(rows, options, out, command))
        paths = write(rows, options, out, command)
    print("Wrote " + " and ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
