"""The comparison suite (dynlearn.bench): every model on every task, the report, the CSV, registration."""

from __future__ import annotations

import csv
import math
import inspect
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import BaseEstimator

import dynlearn
from dynlearn import NeuralODE
from dynlearn.bench import (
    MODELS,
    PENDULUM_PATH_VARIABLE,
    PHYSIONET_PATH_VARIABLE,
    TASKS,
    LinearMultistepODE,
    ModelSpec,
    Task,
    TaskData,
    adams_bashforth2,
    instrument,
    register_model,
    register_task,
    run_suite,
    select,
    split_series,
    write_report,
)
from dynlearn.bench._perf import saved_tensor_bytes
from dynlearn.datasets import make_damped_oscillator
from dynlearn.nn import MLPVectorField
from dynlearn.solvers import solve_ode

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EXPECTED_COLUMNS = [
    "model", "estimator", "family", "task", "seed", "metric", "value", "unit", "status", "note",
    "dynlearn_version", "torch_version", "device", "date", "mode",
]  # fmt: skip


def public_estimator_names() -> list[str]:
    """Every estimator dynlearn exports, found independently of dynlearn.bench."""
    names = []
    for name in dynlearn.__all__:
        value = getattr(dynlearn, name)
        is_estimator = isinstance(value, type) and issubclass(value, BaseEstimator)
        parameters = inspect.signature(value).parameters if is_estimator else {}
        # A wrapper such as SeedEnsemble is measured through the estimator it wraps; a seasonal baseline needs a
        # calendar season, which the suite's simulated systems do not have (benchmarks/real_forecasts.py has it).
        wraps = "estimator" in parameters or "period" in parameters
        if isinstance(value, type) and issubclass(value, BaseEstimator) and hasattr(value, "predict") and not wraps:
            names.append(name)
    return names


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole registered suite at smoke-test size, one seed, with the shared real data when present."""
    saved = {k: os.environ.get(k) for k in (PENDULUM_PATH_VARIABLE, PHYSIONET_PATH_VARIABLE)}
    if (SHARED / "lipson_pendulum_real").is_dir():
        os.environ[PENDULUM_PATH_VARIABLE] = str(SHARED / "lipson_pendulum_real")
    if (SHARED / "physionet2012_seta_slice").is_dir():
        os.environ[PHYSIONET_PATH_VARIABLE] = str(SHARED / "physionet2012_seta_slice")
    try:
        result = run_suite(size="tiny", seeds=1, command="pytest", log=lambda line: None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    out = tmp_path_factory.mktemp("suite")
    return result, write_report(result, out)


def test_every_cell_has_finite_metrics_or_says_why_not(tiny_run):
    result, _ = tiny_run
    frame = result.frame()
    ran = [t for t in TASKS if t not in result.skipped_tasks]
    assert {"periodic", "mass_spring", "lorenz", "ou", "lynx_hare", "forced_oscillator"} <= set(ran)
    for task in ran:
        for model in MODELS:
            cell = frame[(frame["task"] == task) & (frame["model"] == model)]
            assert len(cell), (task, model)
            assert set(cell["status"]) <= {"ok", "n/a"}, cell[["status", "note"]].to_dict("records")
            if cell["status"].iloc[0] == "n/a":
                assert len(cell) == 1 and len(cell["note"].iloc[0]) > 20
                continue
            values = cell.set_index("metric")["value"]
            for metric in ("interp_mse", "forecast_mse", "fit_time"):
                assert math.isfinite(values[metric]) and values[metric] >= 0, (task, model, metric)
            if "energy_drift" in values:
                assert TASKS[task].kind == "conservative" and values["energy_drift"] >= 0
    # Energy-based models do not apply to data that is not a phase space; they do to the mass-spring.
    hnn = frame[frame["model"] == "HamiltonianNN"].groupby("task")["status"].first()
    assert hnn["lorenz"] == "n/a" and hnn["mass_spring"] == "ok"
    assert frame[(frame["model"] == "HamiltonianNN") & (frame["task"] == "mass_spring")]["metric"].eq(
        "energy_drift").any()


def test_report_lists_every_public_estimator(tiny_run):
    result, written = tiny_run
    report = written["report"].read_text()
    estimators = public_estimator_names()
    assert {"NeuralODE", "HamiltonianNN", "LagrangianNN"} <= set(estimators)
    table = [line for line in report.splitlines() if line.startswith("| ") and " | " in line]
    built_on = {line.split(" | ")[1].strip() for line in table}
    for name in estimators:
        assert name in {spec.estimator for spec in MODELS.values()}, f"{name} has no registered model"
        assert name in built_on, f"{name} is missing from the report's model table"
        assert (result.frame()["estimator"] == name).any()
    # The discrete-depth counterparts and the baseline are there too, with their figures.
    for section in ("## periodic", "| ResNet |", "| LM-ResNet |", "| LastValue |", "## Performance"):
        assert section in report or (section == "## Performance" and not result.perf)


def test_csv_has_one_row_per_model_task_seed_metric_with_the_environment(tiny_run):
    result, written = tiny_run
    with written["csv"].open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == EXPECTED_COLUMNS
    assert {r["status"] for r in rows} <= {"ok", "n/a", "skipped"}
    assert all(r["dynlearn_version"] == dynlearn.__version__ and r["torch_version"] == torch.__version__ for r in rows)
    assert all(r["device"] == "cpu" and r["mode"] == "tiny" for r in rows)
    ok = [r for r in rows if r["status"] == "ok" and r["model"] != "(performance)"]
    assert all(math.isfinite(float(r["value"])) for r in ok)
    keys = [(r["model"], r["task"], r["seed"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {"interp_mse", "forecast_mse", "fit_time", "time_per_iteration", "nfe_forward", "n_parameters"} <= {
        r["metric"] for r in ok}


def test_figures_are_written(tiny_run):
    _, written = tiny_run
    figures = [p for k, p in written.items() if k.startswith("figure")]
    names = {p.name for p in figures}
    assert {"cost_vs_accuracy.png", "forecast_periodic.png", "energy_mass_spring.png"} <= names
    assert all(p.stat().st_size > 5_000 for p in figures)


class _Zero:
    """A toy model: predicts 0 everywhere."""

    def fit(self, X, y=None):
        self.names_ = [c for c in X.columns if c not in ("series_id", "time")]
        return self

    def predict(self, X, t):
        return t[["series_id", "time"]].assign(**{name: 0.0 for name in self.names_})


def _constant_task(size: str, seed: int) -> TaskData:
    rng = np.random.RandomState(seed)
    levels = rng.uniform(1.0, 2.0, size=6)
    times = np.arange(8.0)
    frame = pd.DataFrame({"series_id": np.repeat(np.arange(6), 8), "time": np.tile(times, 6),
                          "x": np.repeat(levels, 8)})
    return TaskData(*split_series(frame, split_time=4.0, seed=seed, test_fraction=0.5))


def test_a_model_and_a_task_are_one_registration_each(tmp_path, monkeypatch):
    task = register_task(Task("constant", "toy", "Constant series.", _constant_task))
    register_model(ModelSpec("Zero", None, "toy", "Predicts zero.", lambda data, size, seed, device: _Zero(),
                             counts_evaluations=False))
    try:
        assert select(["constant", "Zero"]) == (["constant"], ["Zero"], [])
        result = run_suite(size="tiny", seeds=2, tasks=["constant"], models=["Zero", "LastValue"], perf=[],
                           log=lambda line: None)
        written = write_report(result, tmp_path)
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
        without = write_report(result, tmp_path / "without_matplotlib")
    finally:
        TASKS.pop("constant")
        MODELS.pop("Zero")
    frame = result.frame().set_index(["model", "seed", "metric"])["value"]
    for seed in (0, 1):
        data = task.build("tiny", seed)
        # Persistence is exact on constant series; predicting zero costs the mean square of the levels.
        assert frame["LastValue", seed, "forecast_mse"] == 0.0
        assert frame["Zero", seed, "forecast_mse"] == pytest.approx(float((data.future["x"] ** 2).mean()))
    report = written["report"].read_text()
    assert "## constant" in report and "| Zero |" in report
    zero_row = next(line for line in report.splitlines() if line.startswith("| Zero | ") and "±" in line)
    assert zero_row.count("±") >= 2  # mean ± std over the two seeds
    assert "Figures skipped: matplotlib is not installed" in without["report"].read_text()
    assert not list((tmp_path / "without_matplotlib").glob("*.png"))


class _Echo(_Zero):
    """A toy driven model: forecasts the input itself as every state; it records what the suite gave it."""

    def __init__(self, covariates=None):
        self.covariates = covariates

    def get_params(self, deep=True):
        return {"covariates": self.covariates}

    def set_params(self, **params):
        self.covariates = params["covariates"]
        return self

    def fit(self, X, y=None):
        self.seen_ = list(X.columns)
        self.names_ = [c for c in X.columns if c not in ("series_id", "time", *(self.covariates or ()))]
        return self

    def predict(self, X, t):
        return t[["series_id", "time"]].assign(**{name: t["u"].to_numpy() for name in self.names_})


def test_a_task_with_inputs_gives_them_to_models_that_read_them_and_drops_them_for_the_others():
    data = TASKS["forced_oscillator"].build("tiny", 0)
    assert data.covariates == ("u",) and data.feature_names == ["q", "p"]
    built = []

    def echo(data, size, seed, device):
        built.append(_Echo())
        return built[-1]

    register_model(ModelSpec("Echo", None, "toy", "Forecasts the input.", echo, counts_evaluations=False))
    register_model(ModelSpec("Zero", None, "toy", "Predicts zero.", lambda data, size, seed, device: _Zero(),
                             counts_evaluations=False))
    try:
        result = run_suite(size="tiny", seeds=1, tasks=["forced_oscillator"], models=["Echo", "Zero"], perf=[],
                           log=lambda line: None)
    finally:
        MODELS.pop("Echo")
        MODELS.pop("Zero")
    frame = result.frame().set_index(["model", "metric"])["value"]
    assert built[0].covariates == ["u"] and "u" in built[0].seen_
    # Scored on the states only: the echo's error is the mean square of (state - u) over the future rows.
    future = data.future
    expected = float((((future[["q", "p"]].to_numpy() - future[["u"]].to_numpy()) ** 2)).mean())
    assert frame["Echo", "forecast_mse"] == pytest.approx(expected)
    assert frame["Zero", "forecast_mse"] == pytest.approx(float((future[["q", "p"]].to_numpy() ** 2).mean()))


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model(MODELS["NeuralODE"])
    with pytest.raises(ValueError, match="already registered"):
        register_task(TASKS["lorenz"])


def test_select_routes_names_and_refuses_unknown_ones():
    assert select(["lorenz"]) == (["lorenz"], list(MODELS), [])
    assert select(["NeuralODE"]) == (list(TASKS), ["NeuralODE"], [])
    assert select(["long_frame_load"]) == ([], [], ["long_frame_load"])
    with pytest.raises(ValueError, match="--only"):
        select(["no_such_thing"])


def test_adams_bashforth_unrolling_is_second_order_on_uneven_gaps():
    class Decay(torch.nn.Module):
        def forward(self, t, y):
            return -y

    rng = np.random.RandomState(0)
    errors = []
    for n in (20, 40, 80):
        base = np.sort(rng.uniform(0, 1, size=n - 2))
        # Refinement keeps the ratio of neighbouring gaps bounded: halve every gap of one uneven grid.
        gaps = np.diff(np.concatenate([[0.0], np.linspace(0, 1, n)[1:-1] + 0.3 / n * np.sin(7 * base), [1.0]]))
        times = torch.tensor(np.concatenate([[0.0], np.cumsum(gaps)]))[None]
        y = adams_bashforth2(Decay(), torch.ones(1, 1, dtype=torch.float64), times)
        errors.append(abs(float(y[0, -1, 0]) - math.exp(-float(times[0, -1]))))
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0  # second order: ~4x per halving


def test_linear_multistep_model_trains_pickles_and_forecasts():
    frame = make_damped_oscillator(n_series=8, n_times=20, random_state=0)
    model = LinearMultistepODE(hidden_layer_sizes=(16,), max_epochs=15, learning_rate=1e-2, random_state=0,
                               device="cpu", patience=None)
    model.fit(frame)
    history = model.history_.to_frame()
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    restored = pickle.loads(pickle.dumps(model))
    x0 = frame[frame["series_id"] == frame["series_id"].iloc[0]][["q", "p"]].to_numpy()[0]
    path = restored.simulate(x0, np.linspace(0, 5, 11))
    assert np.allclose(path, model.simulate(x0, np.linspace(0, 5, 11)))
    assert np.isfinite(path).all() and path.shape == (11, 2)


def test_instrument_counts_steps_and_forward_and_backward_evaluations():
    frame = make_damped_oscillator(n_series=6, n_times=12, random_state=0)
    counts = {}
    for adjoint in (False, True):
        model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, batch_size=4, adjoint=adjoint, patience=None,
                          validation_fraction=0.0, random_state=0, device="cpu")
        with instrument() as counts[adjoint]:
            model.fit(frame)
    direct, adjoint = counts[False], counts[True]
    # Small data gives at least 64 training windows: 16 minibatches of 4 per epoch.
    assert direct.iterations == adjoint.iterations == 32
    assert direct.nfe_forward > 0 and direct.nfe_backward == 0
    assert adjoint.nfe_backward > 0
    # Direct backpropagation keeps every step's activations (20 evaluations per iteration here), the adjoint none.
    assert direct.graph_bytes > 5 * adjoint.graph_bytes > 0


def test_direct_backpropagation_memory_grows_with_steps_and_the_adjoint_does_not():
    field = MLPVectorField(4, (16,), "tanh")
    y0 = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 1.0])
    graph = {}
    for steps in (10, 100):
        for adjoint in (False, True):
            solve = lambda: solve_ode(field, y0, t, method="rk4", adjoint=adjoint,  # noqa: E731
                                      options={"step_size": 1.0 / steps}, max_num_steps=steps + 5)
            out, graph[steps, adjoint] = saved_tensor_bytes(solve)
            out.sum().backward()
    assert 8 < graph[100, False] / graph[10, False] < 12
    assert graph[100, True] == graph[10, True]
