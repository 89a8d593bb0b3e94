"""Kinetic and Jacobian regularisation of learned dynamics: solver evaluations against accuracy.

Finlay et al. (2020) and Kelly et al. (2020) penalise the kinetic energy
``∫ ‖f‖² dt`` and the Jacobian norm ``∫ ‖∂f/∂z‖_F² dt`` of a neural ODE so
that an adaptive solver needs fewer steps. This measures dynlearn's
``kinetic_weight`` / ``jacobian_weight`` on two problems, each weight
against the unregularised fit with the same seed:

- ``latent``: LatentODE on the toy periodic data of Rubanova et al. (2019)
  (``make_periodic``, 100 points on [0, 5], noise 0.01, 80% of the series
  train; the paper's sizes, dopri5 rtol 1e-3 atol 1e-4, batch 50), trained
  for interpolation with half of each series' points shown to the encoder.
  Latent field evaluations per training iteration (``count_evaluations``;
  the encoder steps with Euler, which is not counted), early (first epoch)
  and late (last epoch), seconds per iteration, and the test series'
  interpolation MSE (50% shown, scored at all 100 points) and
  extrapolation MSE (50% of the first half shown, scored on the second),
  in the data's units, posterior-mean predictions (no refinement).
- ``neural_ode``: NeuralODE (dopri5, hidden (64, 64)) on
  ``make_damped_oscillator``: evaluations per iteration, fit time, and the
  MSE of forecasts of the last 20% of each held-out series from its first
  80%.

A weight is recommended where the MSE stays within 10% of the
unregularised one while late evaluations drop.

    OMP_NUM_THREADS=1 python benchmarks/regularised_dynamics.py [--quick]
    OMP_NUM_THREADS=1 python benchmarks/regularised_dynamics.py --size longer --problems latent \
        --weights 1,0 10,0 --out benchmarks/results/regularised_dynamics/longer

writes ``results.csv`` and ``report.md`` in
``benchmarks/results/regularised_dynamics/`` (or ``--out``); ``python benchmarks/run.py
--only regularised_dynamics`` runs it within the suite (figures in the
suite's table).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynlearn import LatentODE, NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.solvers import count_evaluations
from dynlearn.training import Callback, TrainState

from harness import Context, Record, register
from irregular import (
    LATENT_TOY,
    SPEED_BATCH,
    TRAIN_FRACTION,
    first_half,
    keep_fraction,
    masked_mse,
    split_series,
    toy_frame,
)
from physics import single_thread

NAME = "regularised_dynamics"
OUT = Path(__file__).resolve().parent / "results" / NAME
# (kinetic_weight, jacobian_weight) per problem; the first is the reference every other is judged against.
# LatentODE's loss is minus the bound per target entry, about 0.5 * MSE / obs_std² = 5,000 * MSE, so its
# penalties need larger weights than NeuralODE's, whose loss is the MSE itself.
WEIGHTS = {
    "latent": ((0.0, 0.0), (0.1, 0.0), (1.0, 0.0), (10.0, 0.0), (0.0, 0.1), (0.0, 1.0)),
    "neural_ode": ((0.0, 0.0), (0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (0.0, 0.01), (0.0, 0.1)),
}
SHOWN = 0.5  # share of each series' points given to the encoder, in training and when scored
EQUAL_ACCURACY = 1.10  # a weight keeps accuracy when its MSE is at most this times the reference's
# Workloads: (toy series, LatentODE epochs, oscillator series, NeuralODE epochs).
# "longer" trains the latent model further, to see whether a saving holds as the reference fit improves.
SIZES = {"quick": (200, 6, 32, 15), "full": (1000, 15, 64, 40), "longer": (1000, 40, 64, 40)}
OSCILLATOR_TEST_SHARE = 0.25  # held-out series of the oscillator problem
FORECAST_SHARE = 0.2  # the last 20% of each held-out series' times is forecast


class IterationLog(Callback):
    """Evaluations and seconds of each training iteration, read from an open ``count_evaluations`` block."""

    def __init__(self, counted: Any):
        self.counted = counted
        self.rows: list[dict[str, float]] = []

    def on_train_begin(self, state: TrainState) -> None:
        self._nfe, self._clock = self.counted.nfe, time.perf_counter()

    def on_batch_end(self, state: TrainState, batch: Any, loss: float) -> None:
        now = time.perf_counter()
        self.rows.append({"epoch": state.epoch, "nfe": self.counted.nfe - self._nfe, "seconds": now - self._clock})
        self._nfe, self._clock = self.counted.nfe, now

    def on_epoch_end(self, state: TrainState) -> None:
        self._clock = time.perf_counter()  # the epoch's bookkeeping is not an iteration's


def summary(log: IterationLog) -> dict[str, float]:
    """Evaluations per iteration in the first and last epochs, median seconds per iteration of the last."""
    frame = pd.DataFrame(log.rows)
    first, last = frame[frame["epoch"] == frame["epoch"].min()], frame[frame["epoch"] == frame["epoch"].max()]
    return {
        "nfe_early": float(first["nfe"].mean()),
        "nfe_late": float(last["nfe"].mean()),
        "nfe_max": float(frame["nfe"].max()),
        "seconds_per_iteration": float(last["seconds"].median()),
    }


def fit_logged(model: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, float]]:
    with count_evaluations() as counted, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of short fits
        log = IterationLog(counted)
        model.set_params(callbacks=[log]).fit(*args, **kwargs)
    return model, {**summary(log), "fit_time": model.training_time_, "epochs": model.n_epochs_}


def latent_row(weights: tuple[float, float], n_series: int, epochs: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    train, test = split_series(toy_frame(n_series, seed), TRAIN_FRACTION, rng)
    model = LatentODE(
        **LATENT_TOY, observed_fraction=SHOWN, task="interpolation", max_epochs=epochs, batch_size=SPEED_BATCH,
        patience=None, validation_fraction=0.0, random_state=seed, device="cpu", n_threads=1,
        kinetic_weight=weights[0], jacobian_weight=weights[1],
    )  # fmt: skip
    model, row = fit_logged(model, train)
    interpolation_given = keep_fraction(test, SHOWN, rng)
    early, later = first_half(test)
    extrapolation_given = keep_fraction(early, SHOWN, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpolated = model.predict(interpolation_given, t=test[["series_id", "time"]])
        extrapolated = model.predict(extrapolation_given, t=later[["series_id", "time"]])
    row["mse_interpolation"] = masked_mse(interpolated, test, ["y"])
    row["mse_extrapolation"] = masked_mse(extrapolated, later, ["y"])
    return row


def neural_ode_row(weights: tuple[float, float], n_series: int, epochs: int, seed: int) -> dict[str, Any]:
    frame = make_damped_oscillator(n_series=n_series, n_times=50, irregular=True, noise=0.01, random_state=seed)
    ids = frame["series_id"].unique()
    test_ids = np.random.default_rng(seed).permutation(ids)[: max(1, int(round(OSCILLATOR_TEST_SHARE * len(ids))))]
    held = frame["series_id"].isin(test_ids)
    train, test = frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
    model = NeuralODE(
        hidden_layer_sizes=(64, 64), solver="dopri5", max_epochs=epochs, patience=None, random_state=seed,
        device="cpu", n_threads=1, kinetic_weight=weights[0], jacobian_weight=weights[1],
    )  # fmt: skip
    model, row = fit_logged(model, train)
    cut = test.groupby("series_id")["time"].transform(lambda t: t.quantile(1 - FORECAST_SHARE))
    history, future = test[test["time"] <= cut].reset_index(drop=True), test[test["time"] > cut].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forecast = model.predict(history, t=future[["series_id", "time"]])
    row["mse_forecast"] = masked_mse(forecast, future, ["q", "p"])
    return row


def measure(size: str, seed: int = 0, problems: tuple[str, ...] = tuple(WEIGHTS),
            weights: tuple[tuple[float, float], ...] | None = None) -> pd.DataFrame:
    """Rows of every problem and weight (each problem's own grid unless ``weights`` is given; (0, 0) is always run)."""
    toy_series, latent_epochs, oscillators, node_epochs = SIZES[size]
    rows = []
    runs = {
        "latent": lambda weights: latent_row(weights, toy_series, latent_epochs, seed),
        "neural_ode": lambda weights: neural_ode_row(weights, oscillators, node_epochs, seed),
    }
    with single_thread():
        for problem in problems:
            grid = WEIGHTS[problem] if weights is None else ((0.0, 0.0), *[w for w in weights if any(w)])
            for kinetic, jacobian in grid:
                row = runs[problem]((kinetic, jacobian))
                rows.append({"problem": problem, "kinetic_weight": kinetic, "jacobian_weight": jacobian, **row})
                print(rows[-1], flush=True)
    return judged(pd.DataFrame(rows))


def judged(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's MSE and late evaluations relative to its problem's unregularised row, and the verdict."""
    frame = frame.copy()
    for problem, rows in frame.groupby("problem"):
        reference = rows[(rows["kinetic_weight"] == 0) & (rows["jacobian_weight"] == 0)].iloc[0]
        mse_columns = [c for c in rows.columns if c.startswith("mse_") and pd.notna(reference[c])]
        ratios = pd.concat([rows[c] / reference[c] for c in mse_columns], axis=1).max(axis=1)
        frame.loc[rows.index, "worst_mse_ratio"] = ratios
        frame.loc[rows.index, "nfe_late_ratio"] = rows["nfe_late"] / reference["nfe_late"]
    frame["equal_accuracy_fewer_nfe"] = (frame["worst_mse_ratio"] <= EQUAL_ACCURACY) & (frame["nfe_late_ratio"] < 1)
    return frame


def report(frame: pd.DataFrame, command: str, size: str, seed: int = 0) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: f"{v:.4g}")
    lines = [
        "# Kinetic and Jacobian regularisation: evaluations against accuracy",
        "",
        f"Command: `{command}` ({size} workload: toy series, LatentODE epochs, oscillator series, NeuralODE "
        f"epochs = {SIZES[size]}; NeuralODE's count adds its warm-up stages), torch on one thread, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average at the end "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores. One seed ({seed}).",
        "",
        "nfe_early / nfe_late: vector-field evaluations of the training solves per iteration in the first / last "
        "epoch (LatentODE: latent field only); seconds_per_iteration: median of the last epoch; worst_mse_ratio: "
        f"the largest of the row's MSEs over the unregularised row's; a weight qualifies when it is at most "
        f"{EQUAL_ACCURACY} and nfe_late drops.",
        "",
        markdown_table(shown),
        "",
    ]
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write(frame: pd.DataFrame, command: str, size: str, out: Path = OUT, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    (out / "report.md").write_text(report(frame, command, size, seed))


@register(
    NAME,
    "kinetic_weight / jacobian_weight of LatentODE (toy periodic, paper sizes, dopri5) and NeuralODE (dopri5, damped "
    "oscillator) against no regularisation: evaluations per training iteration early and late, seconds per "
    "iteration, interpolation / extrapolation / forecast MSE; benchmarks/regularised_dynamics.py runs it alone and "
    "writes results/regularised_dynamics/.",
)
def regularised_dynamics(context: Context) -> list[Record]:
    frame = measure("quick" if context.quick else "full")
    records = []
    for _, row in frame.iterrows():
        label = f"{row['problem']}.K{row['kinetic_weight']:g}.J{row['jacobian_weight']:g}"
        for column, unit in (("nfe_early", "evaluations"), ("nfe_late", "evaluations"),
                             ("seconds_per_iteration", "s"), ("fit_time", "s"), ("mse_interpolation", "mse"),
                             ("mse_extrapolation", "mse"), ("mse_forecast", "mse"), ("worst_mse_ratio", "ratio")):
            if column in row and pd.notna(row[column]):
                records.append(Record(NAME, f"{label}.{column}", float(row[column]), unit))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (a few minutes on one core)")
    parser.add_argument("--size", choices=sorted(SIZES), help="workload (default: quick with --quick, else full)")
    parser.add_argument("--problems", nargs="+", choices=sorted(WEIGHTS), default=sorted(WEIGHTS))
    parser.add_argument("--weights", nargs="+", metavar="K,J", help="kinetic,jacobian pairs instead of the grids")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the split and the models")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    weights = None if args.weights is None else tuple(tuple(float(v) for v in pair.split(",")) for pair in args.weights)
    frame = measure(size, seed=args.seed, problems=tuple(args.problems), weights=weights)
    arguments = shlex.join(sys.argv[1:] if argv is None else argv)
    command = f"OMP_NUM_THREADS=1 python benchmarks/regularised_dynamics.py {arguments}"
    write(frame, command.strip(), size, args.out, args.seed)
    print(f"Wrote {args.out / 'results.csv'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
