"""NeuralODE(solver="rk4") epochs with the written-out fixed steps against the segment clock, interleaved.

Autonomous fixed-step solves with one step per gap run as written-out steps
(``solvers._ode._solve_fixed_steps``); this script times the same fit with
that path switched off, round by round, with one torch thread, and writes
``benchmarks/results/fixed_steps/results.csv`` and ``report.md``.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fixed_steps_written_out.py [--rounds 3] [--epochs 8]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings
from pathlib import Path

import torch
from harness import write_rows

import dynlearn.solvers._ode as ode  # the switch below is for this measurement only
from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator

RESULTS = Path(__file__).resolve().parent / "results" / "fixed_steps"
PATHS = ("written-out steps", "segment clock")


def fit(path: str, epochs: int, frame) -> tuple[float, float]:
    """Median epoch seconds (after the first) and final validation loss of one fit on ``path``."""
    original = ode._steps_once_per_gap
    if path == "segment clock":
        ode._steps_once_per_gap = lambda *args: False
    try:
        model = NeuralODE(hidden_layer_sizes=(32, 32), solver="rk4", max_epochs=epochs, patience=None,
                          random_state=0, n_threads=1).fit(frame)  # fmt: skip
    finally:
        ode._steps_once_per_gap = original
    history = model.history_.to_frame()
    return statistics.median(history["duration"].iloc[1:]), float(history["valid_loss"].iloc[-1])


def main(rounds: int, epochs: int) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
    load = os.getloadavg()[0]
    rows = []
    for round_ in range(rounds):  # interleaved, so drifting load hits both alike
        for path in PATHS:
            seconds, loss = fit(path, epochs, frame)
            rows.append({"round": round_, "path": path, "epoch_seconds": seconds, "valid_loss": loss})
            print(rows[-1], flush=True)
    median = {p: statistics.median(r["epoch_seconds"] for r in rows if r["path"] == p) for p in PATHS}
    loss = {p: rows[-len(PATHS) + i]["valid_loss"] for i, p in enumerate(PATHS)}
    lines = [
        "# Written-out fixed steps against the segment clock",
        "",
        f"NeuralODE(hidden_layer_sizes=(32, 32), solver='rk4'), {epochs} epochs on make_damped_oscillator(64, 50), "
        f"one torch thread, {rounds} interleaved rounds; 1-minute load average {load:.2f} at the start.",
        "",
        "| path | median epoch (s) | validation loss after the last epoch |",
        "|---|---:|---:|",
        *[f"| {p} | {median[p]:.4f} | {loss[p]:.6g} |" for p in PATHS],
        "",
        f"Written-out ÷ segment clock: {median[PATHS[0]] / median[PATHS[1]]:.2f}x the epoch time.",
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fixed_steps_written_out.py --rounds {rounds} "
        f"--epochs {epochs}`",
    ]
    write_rows(RESULTS, rows, report=lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.epochs)
