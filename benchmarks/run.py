"""Run dynlearn's benchmarks and write their figures to files.

Usage::

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--out DIR] [--only NAME ...]

Each benchmark below is one function registered with ``@register``; see
``benchmarks/README.md`` for how to read the figures and add a benchmark.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator

# harness.py sits beside this file, which Python puts on sys.path when run as a script.
from harness import PERF, Context, Environment, Record, default_seconds, register, run_all, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# solve_overhead, adjoint_memory and long_frame_load are the package's performance
# rows (dynlearn.bench, also run by `dynlearn bench`): they are in PERF, first,
# from the import of dynlearn.bench, so both write the same rows.


# ------------------------------------------------------------ neuralode_epoch
@register(
    "neuralode_epoch",
    "Seconds per training epoch of NeuralODE(hidden_layer_sizes=(64, 64)) on "
    "make_damped_oscillator(n_series=64, n_times=50, irregular=True, random_state=0).",
)
def neuralode_epoch(context: Context) -> list[Record]:
    frame = make_damped_oscillator(n_series=64, n_times=50, irregular=True, random_state=0)
    epochs = 3 if context.quick else 20
    model = NeuralODE(
        hidden_layer_sizes=(64, 64), max_epochs=epochs, patience=None, random_state=0, device=context.device.type
    ).fit(frame)
    history = model.history_.to_frame()
    # The first epoch pays one-off costs (allocations, lazy initialisation):
    # the median of the rest is the steady-state figure.
    steady = history["duration"].iloc[1:] if len(history) > 1 else history["duration"]
    name = "neuralode_epoch"
    return [
        Record(name, "epochs", len(history), "epochs"),
        Record(name, "epoch_median", float(np.median(steady)), "s"),
        Record(name, "first_epoch", float(history["duration"].iloc[0]), "s"),
        Record(name, "fit_total", model.training_time_, "s"),
        Record(name, "final_train_loss", float(history["train_loss"].iloc[-1]), "mse (standardised)"),
        Record(name, "final_valid_loss", float(history["valid_loss"].iloc[-1]), "mse (standardised)"),
    ]


# ----------------------------------------------- energy-based estimators
# Imported here so that they register (and run) after the benchmarks above.
from physics import PENDULUM_PATH_VARIABLE  # noqa: E402
import irregular  # noqa: E402,F401  (ODE-RNN and Latent ODE: speed against the union of times, published tables)
import authors_reference  # noqa: E402,F401  (the same, against the authors' code from a local checkout)
import stochastic  # noqa: E402,F401  (NeuralSDE, LatentSDE: probabilistic forecasts, mocap, adjoint cost)
import threads  # noqa: E402,F401  (n_threads: epoch time at one and two torch threads, alone and beside a busy core)
import batch_size  # noqa: E402,F401  (batch_size="auto" against 64 on tens of thousands of windows)
import horizon_vs_one_step  # noqa: E402,F401  (NeuralODE: multi-step rollout training against one-step training)
import classifiers  # noqa: E402,F401  (ODERNNClassifier, LatentODEClassifier against a feature baseline on UCR/UEA sets)
import speed_vs_peers  # noqa: E402,F401  (every family against a hand-written torchdiffeq / autograd / torchsde loop)
import compile_paths  # noqa: E402,F401  (torch.compile against eager: per-iteration time, compile time, break-even)
import regularised_dynamics  # noqa: E402,F401  (kinetic_weight / jacobian_weight: training evaluations against MSE)
import real_forecasts  # noqa: E402  (every forecaster against naive, ETS and auto-ARIMA on real series)


@register(
    real_forecasts.NAME,
    "MSE over naive, 90% interval coverage and fit time of every dynlearn forecaster at its defaults, ETS, "
    "auto-ARIMA and (seasonal) naive on real series shipped in wheels; quick: "
    f"{', '.join(real_forecasts.QUICK_SERIES)} at {real_forecasts.QUICK_EPOCHS} epochs. "
    "benchmarks/real_forecasts.py runs it alone and writes real_forecasts.{json,md}.",
)
def real_forecasts_benchmark(context: Context) -> list[Record]:
    missing = real_forecasts.missing_extras()
    if missing:
        reason = f"skipped: needs {', '.join(missing)} (pip install 'dynlearn[bench]')"
        return [Record(real_forecasts.NAME, "skipped", 1, reason)]
    options = real_forecasts.default_options(context.quick)
    options.device = context.device.type
    return real_forecasts.records(options)


# ---------------------------------------------------------------------- main
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run dynlearn's benchmarks and write their figures to files.")
    parser.add_argument("--quick", action="store_true", help="small workloads, 2 s per comparison (seconds in all)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=sorted(PERF), help="run only these benchmarks")
    parser.add_argument(
        "--seconds", type=float, help="time to spend per comparison (default: 2 quick, 20 full)"
    )
    parser.add_argument("--repeats", type=int, help="a fixed number of timed rounds per comparison instead")
    parser.add_argument(
        "--pendulum-path",
        type=Path,
        help=f"local copy of the real pendulum for hnn_table1 (default: ${PENDULUM_PATH_VARIABLE}, else the cache)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible to torch; run with --device cpu.", file=sys.stderr)
        return 2
    if args.pendulum_path is not None:
        # The benchmarks share one Context; the variable is how hnn_table1 learns the path.
        os.environ[PENDULUM_PATH_VARIABLE] = str(args.pendulum_path)
    seconds = args.seconds or default_seconds(args.quick)
    context = Context(args.quick, torch.device(args.device), seconds_per_comparison=seconds, repeats=args.repeats)
    names = args.only or list(PERF)
    records, spent = run_all(names, context)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    table, report = write_results(records, Environment.detect(context), spent, args.out, command.strip())
    print(f"Wrote {table} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
