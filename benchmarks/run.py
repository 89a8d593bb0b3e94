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
from typing import Callable

import numpy as np
import torch
from torchdiffeq import odeint

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.nn import MLPVectorField
from dynlearn.solvers import SolverStats, solve_ode, solve_ode_irregular

# harness.py sits beside this file, which Python puts on sys.path when run as a script.
from harness import BENCHMARKS, Context, Environment, Record, median, register, run_all, time_interleaved, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# ------------------------------------------------------------ solve_overhead
BATCH, STATE_DIM, HIDDEN = 256, 8, (64, 64)
N_OUTPUT_TIMES, N_SERIES_TIMES, T_END = 50, 20, 5.0
SOLVE = dict(method="dopri5", rtol=1e-5, atol=1e-6)
# Backpropagating through the union formulation grows with the square of the
# number of union times (torchdiffeq writes each output into one tensor in
# place): about a minute for 256 series on two cores. Quick runs use fewer.
QUICK_IRREGULAR_SERIES = 64


def _vector_field(device: torch.device) -> MLPVectorField:
    """dynlearn's 2-layer tanh MLP on an 8-D state, with weights large enough for non-trivial dynamics."""
    generator = torch.Generator().manual_seed(0)
    field = MLPVectorField(STATE_DIM, HIDDEN, "tanh")
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
    return field.to(device)


class _Counted(torch.nn.Module):
    """Counts evaluations of a field called straight from torchdiffeq (untimed runs only)."""

    def __init__(self, field: torch.nn.Module):
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, y)


def _forward_only(solve: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A candidate that solves without building a graph, as prediction does."""

    def run() -> None:
        with torch.no_grad():
            solve()

    return run


def _forward_and_backward(solve: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A candidate that solves and backpropagates the sum of the solution, as training does."""

    def run() -> None:
        solve().sum().backward()

    return run


def _compare(
    benchmark: str, names: tuple[str, str], solves: tuple[Callable, Callable], context: Context
) -> list[Record]:
    """Median seconds of two solves, forward and forward+backward, and their paired ratio first/second."""
    first, second = names
    records = []
    for mode, wrap in (("forward", _forward_only), ("forward_backward", _forward_and_backward)):
        seconds = time_interleaved({name: wrap(solve) for name, solve in zip(names, solves)}, context)
        # The ratio is the median of per-round ratios: each round's A and B
        # ran back to back, so load that drifts between rounds cancels out.
        ratios = [a / b for a, b in zip(seconds[first], seconds[second])]
        records += [
            Record(benchmark, f"{mode}_{first}", median(seconds[first]), "s"),
            Record(benchmark, f"{mode}_{second}", median(seconds[second]), "s"),
            Record(benchmark, f"{mode}_ratio_{first}_over_{second}", median(ratios), "x"),
            Record(benchmark, f"{mode}_rounds_{first}_vs_{second}", len(seconds[first]), "runs"),
        ]
    return records


def _wrapper_overhead(field: torch.nn.Module, context: Context) -> list[Record]:
    """solve_ode against torchdiffeq.odeint on one shared time grid."""
    generator = torch.Generator().manual_seed(1)
    y0 = torch.randn(BATCH, STATE_DIM, generator=generator).to(context.device)
    t = torch.linspace(0.0, T_END, N_OUTPUT_TIMES, device=context.device)
    records = _compare(
        "solve_overhead",
        ("dynlearn", "direct"),
        (lambda: solve_ode(field, y0, t, **SOLVE), lambda: odeint(field, y0, t, **SOLVE)),
        context,
    )
    stats, counted = SolverStats(), _Counted(field)
    with torch.no_grad():
        solve_ode(field, y0, t, stats=stats, **SOLVE)
        odeint(counted, y0, t, **SOLVE)
    return records + [
        Record("solve_overhead", "nfe_dynlearn", stats.nfe, "evaluations"),
        Record("solve_overhead", "nfe_direct", counted.calls, "evaluations"),
    ]


def _per_series_times(n_series: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n_series, N_SERIES_TIMES) sorted times, all starting at 0 (the union formulation needs one start)."""
    draws = torch.rand(n_series, N_SERIES_TIMES - 1, generator=generator) * T_END
    return torch.cat([torch.zeros(n_series, 1), draws.sort(dim=1).values], dim=1).to(device)


def _solve_on_union(field, y0: torch.Tensor, times: torch.Tensor, stats: SolverStats | None = None) -> torch.Tensor:
    """Solve once on the sorted union of every series' times, then pick each series' own rows."""
    union, where = torch.unique(times, return_inverse=True)
    on_union = solve_ode(field, y0, union, stats=stats, **SOLVE)  # (n_union, batch, dim)
    return on_union[where, torch.arange(len(y0), device=y0.device)[:, None]]


def _irregular_vs_union(field: torch.nn.Module, context: Context) -> list[Record]:
    """The per-series clock against the union of all times, on series that each have their own times."""
    n_series = QUICK_IRREGULAR_SERIES if context.quick else BATCH
    generator = torch.Generator().manual_seed(2)
    y0 = torch.randn(n_series, STATE_DIM, generator=generator).to(context.device)
    times = _per_series_times(n_series, generator, context.device)
    records = _compare(
        "solve_overhead",
        ("irregular", "union"),
        (lambda: solve_ode_irregular(field, y0, times, **SOLVE), lambda: _solve_on_union(field, y0, times)),
        context,
    )
    clock_stats, union_stats = SolverStats(), SolverStats()
    with torch.no_grad():
        on_clock = solve_ode_irregular(field, y0, times, stats=clock_stats, **SOLVE)
        on_union = _solve_on_union(field, y0, times, stats=union_stats)
    difference = float((on_clock - on_union).abs().max())
    return records + [
        Record("solve_overhead", "irregular_n_series", n_series, "series"),
        Record("solve_overhead", "union_n_times", len(torch.unique(times)), "times"),
        Record("solve_overhead", "nfe_irregular", clock_stats.nfe, "evaluations"),
        Record("solve_overhead", "nfe_union", union_stats.nfe, "evaluations"),
        Record("solve_overhead", "max_abs_difference_irregular_vs_union", difference, "state units"),
    ]


@register(
    "solve_overhead",
    "dynlearn.solvers.solve_ode vs torchdiffeq.odeint on the same problem (2-layer tanh MLP, batch 256, "
    "state 8, dopri5, rtol 1e-5, 50 output times); then solve_ode_irregular (per-series clock; each series "
    "has its own 20 sorted random times in [0, 5]) vs solve_ode on the sorted union of all times, then gather.",
)
def solve_overhead(context: Context) -> list[Record]:
    field = _vector_field(context.device)
    return _wrapper_overhead(field, context) + _irregular_vs_union(field, context)


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


# ---------------------------------------------------------------------- main
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run dynlearn's benchmarks and write their figures to files.")
    parser.add_argument("--quick", action="store_true", help="small workloads, 2 s per comparison (seconds in all)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
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
    seconds = args.seconds or (2.0 if args.quick else 20.0)
    context = Context(args.quick, torch.device(args.device), seconds_per_comparison=seconds, repeats=args.repeats)
    names = args.only or list(BENCHMARKS)
    records, spent = run_all(names, context)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    table, report = write_results(records, Environment.detect(context), spent, args.out, command.strip())
    print(f"Wrote {table} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
