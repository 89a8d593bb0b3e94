"""NeuralCDE on forced oscillators: accuracy and fit time against NeuralODE(covariates), and against torchcde.

Data as ``benchmarks/forced_oscillator_inputs.py``: 24 series of
``make_forced_oscillator`` (60 samples over 15 time units, a multisine
force per series); fit on 16, forecast the second half of the other 8 from
their first half under input signals never seen in training.

Rows:

- ``NeuralCDE`` with and without the input ``u``, on its default rk4 and on
  midpoint (the tests' setting), cubic and linear paths;
- ``NeuralODE(covariates=["u"])`` with the settings of
  ``forced_oscillator_inputs.py``;
- with torchcde 0.2.5 installed (``pip install torchcde==0.2.5``; optional,
  dynlearn does not use it): the same network trained on the same examples
  with the same loop, the CDE solved either by dynlearn (ControlPath
  derivative on the segment clock) or by ``torchcde.cdeint`` over
  ``hermite_cubic_coefficients_with_backward_differences`` (rk4, one step
  per gap, direct backpropagation). torchcde needs one time grid shared by
  a batch and strictly increasing, so both of these rows train only on the
  examples whose windows lie inside their series (no padded rows); their
  forecasts (and conformal calibration) are made by ``NeuralCDE.predict``
  with dynlearn's solve, which the last table shows gives the same states. They read 8 rows and train
  on 15-row forecasts, so that enough windows lie inside the series;
- rk4 (the default) against midpoint over seeds 0, 1 and 2;
- with torchcde, the two solves of the same 64 paths with the same
  weights: largest difference of the states, seconds per forward and
  backward pass.

    OMP_NUM_THREADS=1 python benchmarks/neural_cde.py

writes ``benchmarks/results/neural_cde/report.md``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "neural_cde"
STATES = ["q", "p"]
CDE = dict(history_length=16, horizon=7.5, max_epochs=40, random_state=0, device="cpu", n_threads=1)
# The torchcde comparison trains on windows inside their series only; shorter ones leave enough of them (about
# 300: 38 cuts per series every second row) where 16 + 30 rows would leave 15 cuts per series.
FULL = dict(CDE, covariates=["u"], history_length=8, horizon=3.75)
ODE = dict(hidden_layer_sizes=(32, 32), max_epochs=40, random_state=0, device="cpu", n_threads=1)


def _torchcde():
    try:
        import torchcde
    except ImportError:
        return None
    return torchcde


def _torchcde_model(model_class, torchcde):
    """A subclass of the estimator's module class (``type(estimator.module_)``) that trains through torchcde."""

    class TorchcdeModel(model_class):
        def forward(self, times, path, solve):
            if not self.training:  # forecasts and calibration: NeuralCDE.predict's own solve
                return super().forward(times, path, solve)
            relative = times[0] - times[0, 0]
            if not torch.allclose(times - times[:, :1], relative.expand_as(times)) or not (relative.diff() > 0).all():
                raise ValueError("torchcde needs one strictly increasing time grid per batch")
            coefficients = torchcde.hermite_cubic_coefficients_with_backward_differences(path, t=relative)
            spline = torchcde.CubicSpline(coefficients, t=relative)
            field = self.field

            def matrix(t, z):
                return torch.tanh(field.net(z)).view(z.shape[0], field.hidden_dim, field.n_channels)

            z0 = self.initial(path[:, 0, 1:])
            return torchcde.cdeint(X=spline, func=matrix, z0=z0, t=relative, adjoint=False, method="rk4",
                                   options=dict(step_size=float(relative[1] - relative[0])))  # fmt: skip

    return TorchcdeModel


def _full_window_model(base, torchcde=None):
    """A NeuralCDE training only on windows without padding; with ``torchcde``, solving through it."""

    class FullWindows(base):
        def _examples(self, batch):
            examples = super()._examples(batch)
            gaps = np.diff(examples["times"], axis=1)
            keep = (gaps > 0).all(axis=1)
            return {k: v[keep] for k, v in examples.items()}

        def _build_module(self):
            module = super()._build_module()
            if torchcde is None:
                return module
            swapped_class = _torchcde_model(type(module), torchcde)
            swapped = swapped_class.__new__(swapped_class)
            swapped.__dict__ = module.__dict__
            return swapped

    return FullWindows


def _forecast(model, history, future, driven):
    query = future[["series_id", "time", "u"]] if driven else future[["series_id", "time"]]
    return model.predict(history if driven else history.drop(columns="u"), t=query)


def _solver_table(model, train, torchcde, lines):
    """Same weights, same paths: dynlearn's solve against torchcde's, states and seconds per pass."""
    batch = model._check_input(train)
    examples = model._examples(batch)
    keep = (np.diff(examples["times"], axis=1) > 0).all(axis=1)
    times = torch.as_tensor(examples["times"][keep][:64], dtype=torch.float32)
    path = torch.as_tensor(examples["path"][keep][:64], dtype=torch.float32)
    ours = model.module_
    theirs = _full_window_model(type(model), torchcde)(**model.get_params())
    theirs.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    theirs.module_ = theirs._build_module()
    theirs.module_.load_state_dict(model.module_.state_dict())
    solve = model._solve_options()
    lines += ["", "## One solve of 64 training paths, same weights", "",
              "| solver | max abs difference of z | s per forward | s per forward + backward |", "|---|---:|---:|---:|"]
    reference = None
    for name, module in (("dynlearn", ours), ("torchcde 0.2.5", theirs.module_)):
        module.train()
        forward, both = [], []
        for _ in range(5):
            started = time.perf_counter()
            z = module(times, path, solve)
            forward.append(time.perf_counter() - started)
            z.pow(2).mean().backward()
            both.append(time.perf_counter() - started)
            module.zero_grad()
        reference = z.detach() if reference is None else reference
        difference = float((z.detach() - reference).abs().max())
        lines.append(f"| {name} | {difference:.2g} | {np.median(forward):.3f} | {np.median(both):.3f} |")
        print(lines[-1], flush=True)


def _seed_spread(train, history, future, truth, lines):
    """The defaults' rk4 against midpoint over three seeds: is one step per gap of a cheaper method enough?"""
    from dynlearn import NeuralCDE
    from dynlearn.metrics import r2_score

    lines += ["", "## rk4 against midpoint, NeuralCDE with inputs, cubic, three seeds", "",
              "| solver | R² seeds 0, 1, 2 | mean fit s |", "|---|---|---:|"]  # fmt: skip
    for solver in ("rk4", "midpoint"):
        scores, seconds = [], []
        for seed in (0, 1, 2):
            model = NeuralCDE(**{**CDE, "covariates": ["u"], "solver": solver, "random_state": seed})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                started = time.perf_counter()
                model.fit(train)
                seconds.append(time.perf_counter() - started)
                scores.append(r2_score(truth, _forecast(model, history, future, True)))
        lines.append(f"| {solver} | {', '.join(f'{r:.3f}' for r in scores)} | {np.mean(seconds):.1f} |")
        print(lines[-1], flush=True)


def main() -> None:
    from dynlearn import NeuralCDE, NeuralODE
    from dynlearn.datasets import make_forced_oscillator
    from dynlearn.metrics import r2_score

    torchcde = _torchcde()
    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), random_state=0)
    train, test = frame[frame.series_id < 16], frame[frame.series_id >= 16]
    history, future = test[test.time <= 7.5], test[test.time > 7.5]
    truth = future[["series_id", "time", *STATES]]
    runs = [
        ("NeuralCDE, inputs, cubic, rk4", NeuralCDE, dict(CDE, covariates=["u"]), True),
        ("NeuralCDE, inputs, linear, rk4", NeuralCDE, dict(CDE, covariates=["u"], interpolation="linear"), True),
        ("NeuralCDE, inputs, cubic, midpoint", NeuralCDE, dict(CDE, covariates=["u"], solver="midpoint"), True),
        ("NeuralCDE, no inputs, cubic, rk4", NeuralCDE, dict(CDE), False),
        ("NeuralODE, inputs, linear, rk4", NeuralODE,
         dict(ODE, covariates=["u"], covariate_interpolation="linear", solver="rk4"), True),
        ("NeuralCDE, inputs, full windows, dynlearn solve", _full_window_model(NeuralCDE), FULL, True),
    ]  # fmt: skip
    if torchcde is not None:
        runs.append(("NeuralCDE, inputs, full windows, torchcde solve", _full_window_model(NeuralCDE, torchcde),
                     FULL, True))  # fmt: skip
    lines = ["# NeuralCDE on forced oscillators", "",
             f"`benchmarks/neural_cde.py`, OMP_NUM_THREADS=1, torch threads 1, CPU, torch {torch.__version__}, "
             f"torchcde {getattr(torchcde, '__version__', 'not installed')}. 8 held-out series, second half "
             "forecast from the first under unseen inputs. NeuralCDE: state 32, f 1 × 64, history 16 rows, "
             "horizon 7.5, 40 epochs at most (patience 10); full-window rows: history 8 rows, horizon 3.75.", "",
             "| model | R² | MSE | fit s | epochs | s per epoch |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    fitted = None
    for name, estimator, options, driven in runs:
        model = estimator(**options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            model.fit(train if driven else train.drop(columns="u"))
            seconds = time.perf_counter() - started
            predicted = _forecast(model, history, future, driven)
        mse = float(np.mean((predicted[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2))
        epochs = model.n_epochs_
        lines.append(f"| {name} | {r2_score(truth, predicted):.3f} | {mse:.3g} | {seconds:.1f} | {epochs} | "
                     f"{seconds / epochs:.2f} |")  # fmt: skip
        print(lines[-1], flush=True)
        if name.startswith("NeuralCDE, inputs, cubic, rk4"):
            fitted = model
    _seed_spread(train, history, future, truth, lines)
    if torchcde is not None:
        _solver_table(fitted, train, torchcde, lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
