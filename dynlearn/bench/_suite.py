"""Run every registered model on every registered task, and the performance rows."""

from __future__ import annotations

import inspect
import math
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..data import ID_COLUMN, SAMPLE_LEVEL, TIME_COLUMN
from ..exceptions import DynlearnError, input_error
from ..metrics import crps_ensemble, interval_coverage
from ._measure import PeakMemory, instrument, masked_mse, n_parameters
from ._models import MODELS, ModelSpec
from ._perf import PERF, suite_rows
from ._tasks import TASKS, Task, TaskData, TaskUnavailable, pick
from ._timing import BenchContext, Environment, Record, warm_up

# metric -> (unit, what it is); the report's columns, in order.
METRICS: dict[str, tuple[str, str]] = {
    "interp_mse": ("data units²", "MSE at held-out rows inside the history's span, observed entries only"),
    "forecast_mse": ("data units²", "MSE at the rows after the history, observed entries only"),
    "crps": ("data units", "CRPS of sampled forecasts (models with sample)"),
    "coverage90": ("fraction", "share of observed forecast entries inside the central 90% sample interval"),
    "energy_drift": ("relative", "mean |H(end) − H(start)| / |H(start)| of the true energy along long rollouts"),
    "fit_time": ("s", "wall-clock seconds of fit"),
    "time_per_iteration": ("s", "fit time / optimizer steps"),
    "iterations": ("steps", "optimizer steps taken by fit"),
    "nfe_forward": ("evaluations / step", "vector-field evaluations of forward solves per training step"),
    "nfe_backward": ("evaluations / step", "evaluations of backward (adjoint) solves per training step"),
    "graph_memory": ("MiB", "largest memory autograd held for one training step's backward pass"),
    "peak_memory": ("MiB", "peak GPU memory allocated during fit above its start (GPU runs only)"),
    "n_parameters": ("parameters", "trainable parameters"),
}


# Sample paths per rollout for models whose simulate draws them (stochastic models).
ROLLOUT_SAMPLES = 8

# Metrics that may be unmeasurable for a cell (no torch module).
_MAY_BE_MISSING = ("n_parameters", "graph_memory")


@dataclass
class Row:
    """One figure of one (model, task, seed) cell; ``status`` is "ok", "n/a", "skipped" or "failed"."""

    model: str
    estimator: str
    family: str
    task: str
    seed: int
    metric: str
    value: float
    unit: str
    status: str = "ok"
    note: str = ""


@dataclass
class SuiteResult:
    rows: list[Row]
    perf: list[Record]
    environment: Environment
    seconds: float
    command: str
    tasks: list[str]
    models: list[str]
    skipped_tasks: dict[str, str] = field(default_factory=dict)
    curves: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    energy: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (one row per model × task × seed × metric)."""
        return pd.DataFrame([vars(r) for r in self.rows])


def select(only: Sequence[str] | None) -> tuple[list[str], list[str], list[str]]:
    """(tasks, models, perf rows) named by ``--only``; what is not named in a category runs in full.

    Naming only performance rows runs no task; naming tasks or models runs
    no performance row unless one is named too.
    """
    if not only:
        return list(TASKS), list(MODELS), suite_rows()
    known = {**{n: "task" for n in TASKS}, **{n: "model" for n in MODELS}, **{n: "perf" for n in suite_rows()}}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise input_error(
            "--only", f"names of tasks, models or performance rows: {sorted(known)}", repr(unknown),
            "Pick registered names ('dynlearn bench --list' shows them).",
        )
    tasks = [n for n in only if known[n] == "task"]
    models = [n for n in only if known[n] == "model"]
    perf = [n for n in only if known[n] == "perf"]
    if not tasks and models:
        tasks = list(TASKS)
    if not models and tasks:
        models = list(MODELS)
    return tasks, models, perf


def run_suite(
    *,
    size: str = "quick",
    device: str = "cpu",
    seeds: int | None = None,
    tasks: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    perf: Sequence[str] | None = None,
    n_samples: int | None = None,
    command: str = "",
    log: Callable[[str], None] = print,
) -> SuiteResult:
    """Fit every model on every task for each seed and measure; then the performance rows.

    Parameters
    ----------
    size : {"tiny", "quick", "full"}, default="quick"
        "quick": small data and short training (minutes on two cores);
        "full": the published protocols' sizes where they exist; "tiny": a
        smoke test of the machinery (seconds; the numbers mean nothing).
    device : str, default="cpu"
    seeds : int, default=None
        Seeds per cell (default 2, 3 when full); figures are mean ± std over them.
    tasks, models, perf : sequence of str, default=None
        Registered names to run (None: all; no performance row when tiny).
    n_samples : int, default=None
        Samples per forecast for models with ``sample`` (default 32, 100 when full).
    command : str
        The command line, for the report.
    log : callable
        Receives progress lines.

    Returns
    -------
    SuiteResult
    """
    started = time.perf_counter()
    pick(size, tiny=None, quick=None, full=None)  # fails early on an unknown size
    torch_device = torch.device(device)
    seconds = pick(size, tiny=0.2, quick=2.0, full=20.0)
    context = BenchContext(size != "full", torch_device, seconds_per_comparison=seconds)
    seeds = seeds or pick(size, tiny=2, quick=2, full=3)
    n_samples = n_samples or pick(size, tiny=8, quick=32, full=100)
    task_names = list(TASKS) if tasks is None else list(tasks)
    model_names = list(MODELS) if models is None else list(models)
    environment = Environment.detect(context)
    environment.mode = size
    result = SuiteResult([], [], environment, 0.0, command, task_names, model_names)
    warm_up(context, 0.5)
    for task_name in task_names:
        task = TASKS[task_name]
        for seed in range(seeds):
            try:
                data = task.build(size, seed)
            except TaskUnavailable as unavailable:
                result.skipped_tasks[task_name] = str(unavailable)
                log(f"[{task_name}] skipped: {unavailable}")
                break
            for model_name in model_names:
                spec = MODELS[model_name]
                cell = _run_cell(spec, task, data, seed, size, device, n_samples, result)
                result.rows.extend(cell)
                log(_progress(task_name, model_name, seed, cell))
    # A smoke test skips the performance rows unless they are named: they time real workloads.
    for name in (suite_rows() if size != "tiny" else []) if perf is None else perf:
        log(f"[perf {name}] {PERF[name].description}")
        result.perf.extend(PERF[name].function(context))
    result.seconds = time.perf_counter() - started
    return result


def _progress(task: str, model: str, seed: int, cell: list[Row]) -> str:
    head = f"[{task} | {model} | seed {seed}]"
    if cell and cell[0].status != "ok":
        return f"{head} {cell[0].status}: {cell[0].note}"
    shown = {r.metric: r.value for r in cell}
    parts = [f"{m} {shown[m]:.4g}" for m in ("interp_mse", "forecast_mse", "crps", "energy_drift", "fit_time")
             if m in shown]
    return f"{head} " + ", ".join(parts)


def _rows(spec: ModelSpec, task: Task, seed: int, values: dict[str, float]) -> list[Row]:
    return [_row(spec, task, seed, metric, value, METRICS[metric][0]) for metric, value in values.items()]


def _row(spec: ModelSpec, task: Task, seed: int, metric: str, value: float, unit: str, status: str = "ok",
         note: str = "") -> Row:
    return Row(spec.name, spec.estimator or "", spec.family, task.name, seed, metric, float(value), unit, status, note)


def _run_cell(
    spec: ModelSpec, task: Task, data: TaskData, seed: int, size: str, device: str, n_samples: int,
    result: SuiteResult,
) -> list[Row]:
    reason = spec.applies(task, data)
    if reason:
        return [_row(spec, task, seed, "applicable", 0.0, "", "n/a", reason)]
    try:
        values = _measure_cell(spec, task, data, seed, size, device, n_samples, result)
    except Exception as error:  # noqa: BLE001
        # A model that cannot be fitted or integrated on a task is a finding, not a crash of the suite.
        note = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        if not isinstance(error, DynlearnError):
            note += f" ({traceback.extract_tb(error.__traceback__)[-1].name})"
        return [_row(spec, task, seed, "fit", float("nan"), "", "failed", note)]
    return _rows(spec, task, seed, values)


def _measure_cell(
    spec: ModelSpec, task: Task, data: TaskData, seed: int, size: str, device: str, n_samples: int,
    result: SuiteResult,
) -> dict[str, float]:
    model = spec.build(data, size, seed, device)
    if data.covariates and "covariates" in (model.get_params() if hasattr(model, "get_params") else {}):
        model.set_params(covariates=list(data.covariates))
    else:
        data = data.without_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at a fixed epoch budget is expected here
        with instrument() as counts, PeakMemory(torch.device(device)) as memory:
            began = time.perf_counter()
            model.fit(data.train)
            _synchronize(device)
            fit_time = time.perf_counter() - began
    iterations = counts.iterations
    values: dict[str, float] = {}
    if len(data.interpolation):
        interpolated = model.predict(data.history, t=data.queries(data.interpolation))
        values["interp_mse"] = _mse(interpolated, data.interpolation, data.feature_names)
    forecast = _forecast(spec, model, data.history, data.queries(data.future))
    values["forecast_mse"] = _mse(forecast, data.future, data.feature_names)
    if callable(getattr(model, "sample", None)):
        samples = _samples(model, data.history, data.queries(data.future), n_samples, seed, data.feature_names)
        observed = data.future[data.feature_names].to_numpy(float)
        values["crps"] = crps_ensemble(observed, samples)
        lower, upper = np.quantile(samples, [0.05, 0.95], axis=0)
        values["coverage90"] = interval_coverage(observed, lower, upper)
    if data.energy is not None:
        drift = _energy_drift(model, data, seed)
        if drift is not None:
            times, relative = drift
            values["energy_drift"] = float(relative[:, -1].mean())
            if seed == 0:
                result.energy[(task.name, spec.name)] = (times, relative.mean(axis=0))
    values["fit_time"] = fit_time
    if iterations:
        values["time_per_iteration"] = fit_time / iterations
        values["iterations"] = iterations
        if spec.counts_evaluations:
            values["nfe_forward"] = counts.nfe_forward / iterations
            values["nfe_backward"] = counts.nfe_backward / iterations
        values["graph_memory"] = counts.graph_bytes / 2**20
    if math.isfinite(memory.mib):
        values["peak_memory"] = memory.mib
    values["n_parameters"] = n_parameters(model)
    if seed == 0:
        result.curves[(task.name, spec.name)] = _curve(spec, model, data, n_samples, seed)
    bad = [m for m, v in values.items() if not math.isfinite(v) and m not in _MAY_BE_MISSING]
    if bad:
        raise RuntimeError(f"non-finite {bad}")
    # What could not be measured (a model without a torch module) is left out rather than written as NaN.
    return {m: v for m, v in values.items() if math.isfinite(v)}


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _mse(predicted: pd.DataFrame, observed: pd.DataFrame, names: list[str]) -> float:
    return masked_mse(_aligned(predicted, observed, names), observed[names].to_numpy(float))


def _aligned(predicted: pd.DataFrame, observed: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Predicted values in ``observed``'s row order (predictions are matched on series and time)."""
    keys = [ID_COLUMN, TIME_COLUMN]
    merged = observed[keys].merge(predicted[keys + names], on=keys, how="left")
    return merged[names].to_numpy(float)


def _forecast(spec: ModelSpec, model: Any, history: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    if spec.rollout and callable(getattr(model, "simulate", None)):
        return _rollout(model, history, queries)
    return model.predict(history, t=queries)


def _rollout(model: Any, history: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """``simulate`` from each series' last observed state through its query times, in order.

    Columns of ``queries`` beside series and time are known inputs: the
    rollout reads them from the last history row on.
    """
    inputs = [c for c in queries.columns if c not in (ID_COLUMN, TIME_COLUMN)]
    names = [c for c in history.columns if c not in (ID_COLUMN, TIME_COLUMN, *inputs)]
    ordered = history.sort_values([ID_COLUMN, TIME_COLUMN])
    last = ordered.groupby(ID_COLUMN)[names].ffill().groupby(ordered[ID_COLUMN]).last()
    last_time = ordered.groupby(ID_COLUMN)[TIME_COLUMN].last()
    pieces = []
    for series, rows in queries.sort_values([ID_COLUMN, TIME_COLUMN]).groupby(ID_COLUMN, sort=False):
        state = last.loc[series].to_numpy(float)
        if not np.isfinite(state).all():
            pieces.append(model.predict(history[history[ID_COLUMN] == series], t=rows))
            continue
        times = np.concatenate([[last_time.loc[series]], rows[TIME_COLUMN].to_numpy(float)])
        driven = {}
        if inputs:
            start = ordered[ordered[ID_COLUMN] == series][inputs].iloc[-1].to_numpy(float)
            driven["covariates"] = np.vstack([start, rows[inputs].to_numpy(float)])
        path = model.simulate(state, times, **driven)[1:]
        pieces.append(pd.concat([rows[[ID_COLUMN, TIME_COLUMN]].reset_index(drop=True),
                                 pd.DataFrame(path, columns=names)], axis=1))
    return pd.concat(pieces, ignore_index=True)


def _samples(
    model: Any, history: pd.DataFrame, queries: pd.DataFrame, n_samples: int, seed: int, names: list[str]
) -> np.ndarray:
    """(n_samples, n_queries, n_features) sampled forecasts of ``names`` in ``queries``' row order."""
    kwargs: dict[str, Any] = {"t": queries, "n_samples": n_samples}
    if "random_state" in inspect.signature(model.sample).parameters:
        kwargs["random_state"] = seed
    drawn = model.sample(history, **kwargs)
    if not isinstance(drawn, pd.DataFrame) or SAMPLE_LEVEL not in (drawn.index.names or []):
        raise TypeError(f"{type(model).__name__}.sample must return a frame with a {SAMPLE_LEVEL!r} index level")
    draws = drawn.groupby(level=SAMPLE_LEVEL, sort=True)
    return np.stack([_aligned(part.reset_index(drop=True), queries, names) for _, part in draws])


def _energy_drift(model: Any, data: TaskData, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Relative change of the true energy along ``simulate`` rollouts from the task's initial states.

    Returns the rollout times and ``|H(t) - H(0)| / |H(0)|`` per rollout
    ``(n_series, n_times)``; for models that simulate sample paths (a
    leading sample axis), the mean over ``ROLLOUT_SAMPLES`` paths.
    """
    if not callable(getattr(model, "simulate", None)) or data.rollout_x0 is None:
        return None
    kwargs: dict[str, Any] = {}
    parameters = inspect.signature(model.simulate).parameters
    if "n_samples" in parameters:
        kwargs["n_samples"] = ROLLOUT_SAMPLES
    if "random_state" in parameters:
        kwargs["random_state"] = seed
    path = np.asarray(model.simulate(data.rollout_x0, data.rollout_times, **kwargs), dtype=float)
    start = data.energy(data.rollout_x0)[:, None]
    relative = np.abs(data.energy(path) - start) / np.abs(start)  # (..., n_series, n_times)
    return data.rollout_times, relative.reshape((-1,) + relative.shape[-2:]).mean(axis=0)


def _curve(spec: ModelSpec, model: Any, data: TaskData, n_samples: int, seed: int) -> dict[str, Any]:
    """A dense forecast of the first test series (and a 90% band for models with ``sample``), for figures."""
    series = data.history[ID_COLUMN].iloc[0]
    history = data.history[data.history[ID_COLUMN] == series]
    future = data.future[data.future[ID_COLUMN] == series]
    end = future[TIME_COLUMN].max() if len(future) else history[TIME_COLUMN].max()
    if data.covariates:  # the inputs are known at the future rows only
        queries = data.queries(future).reset_index(drop=True)
        dense = queries[TIME_COLUMN].to_numpy(float)
    else:
        dense = np.linspace(history[TIME_COLUMN].max(), end, 60)[1:]
        queries = pd.DataFrame({ID_COLUMN: series, TIME_COLUMN: dense})
    curve: dict[str, Any] = {"history": history, "future": future, "times": dense, "names": data.feature_names}
    try:
        curve["mean"] = _aligned(_forecast(spec, model, history, queries), queries, data.feature_names)
        if callable(getattr(model, "sample", None)):
            drawn = _samples(model, history, queries, n_samples, seed, data.feature_names)
            curve["band"] = np.quantile(drawn, [0.05, 0.95], axis=0)
    except (DynlearnError, ValueError, RuntimeError):
        curve.pop("mean", None)
    return curve
