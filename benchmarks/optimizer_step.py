"""The optimiser's side of a training step: the fused AdamW kernel called directly against ``optimizer.step()``.

Once the fused AdamW ``fit`` builds (``dynlearn.training.adamw``) has made
its moments, ``dynlearn.training.train_step`` calls the fused kernel
itself (``dynlearn/training/_optim.py``) and forms the clip's coefficient
on the host, with torch's iterates and clipped gradients bit for bit
(``tests/training/test_optimizer.py``). ``optimizer.step()`` is what the
step took before: the same kernel behind ``torch.optim``'s profiler
range, hook registries and regrouping of the tensors. A step hook that
does nothing sends a step through ``optimizer.step()`` (a hooked
optimiser is always stepped by torch), so the two ways differ only there.

Each way is one training iteration exactly as ``fit`` takes it (loss and
prepared minibatches captured from a one-epoch fit, ``train_step``,
gradient norm clipped at 1), from the same weights, rounds interleaved by
``dynlearn.bench.time_interleaved`` (one warm-up round), one torch thread:

* ``hamiltonian``: ``HamiltonianNN(fit_on="derivatives")`` on
  ``make_mass_spring(32, 50)``, where the step is a large part of the
  iteration;
* ``neural_ode``: ``NeuralODE`` (dopri5) on 16-row windows of
  ``make_damped_oscillator(64, 50)``, where the solve is most of it.

``small``: hidden (32, 32), minibatches of 16; ``large``: (256, 256), 256.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/optimizer_step.py [--rounds 2000]``. Writes
``benchmarks/results/optimizer_step/results.csv`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from harness import compare_iterations, write_rows
from irregular import TrainingCapture, consecutive_batches
from speed_vs_peers import CPU, capture

from dynlearn import HamiltonianNN, NeuralODE
from dynlearn.datasets import make_damped_oscillator, make_mass_spring
from dynlearn.training import adamw, train_step

RESULTS = Path(__file__).resolve().parent / "results" / "optimizer_step"
SIZES = {"small": ((32, 32), 16), "large": ((256, 256), 256)}


def _captured(family: str, hidden: tuple[int, ...]) -> TrainingCapture:
    """A one-epoch fit's loss and minibatches, as ``speed_vs_peers`` captures them."""
    if family == "hamiltonian":
        frame = make_mass_spring(n_series=32, n_times=50, random_state=0)
        return capture(HamiltonianNN(hidden_layer_sizes=hidden, fit_on="derivatives"), frame, CPU)
    frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
    return capture(NeuralODE(hidden_layer_sizes=hidden, stabilize=False), frame, CPU)


def _iteration(seen: TrainingCapture, batch: int, through_step: bool) -> Callable[[], tuple[float, int]]:
    module = copy.deepcopy(seen.module)
    module.train()
    batches = consecutive_batches(seen.train_data, batch)
    optimizer = adamw(module.parameters(), lr=seen.learning_rate)  # the optimiser fit steps
    if through_step:
        optimizer.register_step_post_hook(lambda *_: None)
    step = 0

    def run() -> tuple[float, int]:
        nonlocal step
        step += 1
        return train_step(module, seen.loss_fn, batches[(step - 1) % len(batches)], optimizer), 0

    return run


def main(rounds: int) -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    for family in ("hamiltonian", "neural_ode"):
        for size, (hidden, batch) in SIZES.items():
            seen = _captured(family, hidden)
            steps = {"optimizer.step()": _iteration(seen, batch, True), "kernel called": _iteration(seen, batch, False)}
            timed = rounds if family == "hamiltonian" and size == "small" else max(20, rounds // 20)
            for row in compare_iterations(steps, timed, "optimizer.step()"):
                row.pop("evaluations_per_iteration")
                rows.append({"family": family, "size": size, "batch": batch, **row})
                print(rows[-1], flush=True)
    table = [
        f"| {r['family']} | {r['size']} | {r['way']} | {r['rounds']} | {r['seconds_per_iteration']:.6f} | "
        f"{r['ratio_to_optimizer.step()']:.3f} | {r['final_loss']:.6g} |"
        for r in rows
    ]
    report = [
        "# The fused AdamW kernel called directly against optimizer.step()",
        "",
        (
            "One training iteration as fit takes it (train_step: loss, backward, clip at 1, fused AdamW), float32, "
            f"one torch thread, rounds interleaved; 1-minute load average {load:.2f} at the start. optimizer.step(): "
            "a no-op step hook sends each step through torch's step; kernel called: dynlearn calls the fused kernel "
            "itself. small: hidden (32, 32), minibatches of 16; large: (256, 256), 256. ratio: seconds ÷ "
            "optimizer.step()'s, median of per-round ratios (< 1: faster). The losses of the last iteration are equal "
            "where the two ways take the same steps bit for bit."
        ),
        "",
        "| family | size | way | rounds | s per iteration | ratio | loss of the last |",
        "|---|---|---|---:|---:|---:|---:|",
        *table,
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/optimizer_step.py --rounds {rounds}`",
    ]
    write_rows(RESULTS, rows, report=report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    arguments = parser.parse_args()
    main(arguments.rounds)
