"""NeuralSDE training iterations with its transition likelihood as one node against the recorded loss, interleaved.

``_SDEModel.transition_loss`` computes the loss and every weight's gradient
in one autograd node where it can (``dynlearn/nn/_moment_loss.py``); this
script times the same training step with the node switched off, in one
process, round by round with one torch thread: undriven at
``speed_vs_peers``' two sizes beside its hand-written peer, and driven by a
known input (``make_forced_oscillator``), which has no peer there. It writes
``benchmarks/results/neural_sde_loss_node/results.csv`` and ``report.md``.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/neural_sde_loss_node.py [--rounds 300] [--large-rounds 40]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from harness import write_rows
from irregular import TrainingCapture, consecutive_batches
from speed_vs_peers import CLIP, FAMILIES, SIZES

from dynlearn import NeuralSDE
from dynlearn.datasets import make_forced_oscillator
from dynlearn.estimators._neural_sde import _SDEModel  # the switch below is for this measurement only
from dynlearn.training import adamw, train_step

RESULTS = Path(__file__).resolve().parent / "results" / "neural_sde_loss_node"
_NODE_MAY_APPLY = _SDEModel._node_may_apply


def switched(on: bool, iteration: Callable[[], float]) -> Callable[[], float]:
    """``iteration`` with the node allowed (``on``) or every loss recorded."""

    def run() -> float:
        _SDEModel._node_may_apply = _NODE_MAY_APPLY if on else (lambda self, *args: False)
        try:
            return iteration()
        finally:
            _SDEModel._node_may_apply = _NODE_MAY_APPLY

    return run


def driven_iteration(hidden: tuple[int, ...], batch: int) -> Callable[[], float]:
    """One training step of a NeuralSDE driven by the forced oscillator's input, as fit takes it."""
    seen = TrainingCapture()
    NeuralSDE(covariates=["u"], covariate_interpolation="linear", hidden_layer_sizes=hidden, callbacks=[seen],
              max_epochs=1, patience=None, validation_fraction=0.0, random_state=0,
              n_threads=1).fit(make_forced_oscillator(n_series=64, n_times=50, random_state=0))  # fmt: skip
    batches = consecutive_batches(seen.train_data, batch)
    optimizer = adamw(seen.module.parameters(), lr=seen.learning_rate)
    step = 0

    def iteration() -> float:
        nonlocal step
        step += 1
        return train_step(seen.module, seen.loss_fn, batches[step % len(batches)], optimizer, clip_grad_norm=CLIP)

    return iteration


def timed(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds per iteration of each side, one iteration of each in turn per round."""
    for side in sides.values():
        for _ in range(10):
            side()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            start = time.perf_counter()
            side()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(rounds: int, large_rounds: int) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    rows = []
    for size, (hidden, batch) in SIZES.items():
        node, recorded = FAMILIES["neural_sde"](hidden, batch, torch.device("cpu")), FAMILIES["neural_sde"](
            hidden, batch, torch.device("cpu"))
        sides = {"node": switched(True, node["dynlearn"].iteration),
                 "recorded": switched(False, recorded["dynlearn"].iteration), "peer": node["peer"].iteration}
        median = timed(sides, rounds if size == "small" else large_rounds)
        rows += [{"case": f"undriven {size}", "side": name, "seconds_per_iteration": value} for name, value in median.items()]
    hidden, batch = SIZES["small"]
    median = timed({"node": switched(True, driven_iteration(hidden, batch)),
                    "recorded": switched(False, driven_iteration(hidden, batch))}, rounds)
    rows += [{"case": "driven small", "side": name, "seconds_per_iteration": value} for name, value in median.items()]
    for row in rows:
        print(row, flush=True)
    by = {(row["case"], row["side"]): row["seconds_per_iteration"] for row in rows}
    lines = [
        "# NeuralSDE's transition likelihood: one node against the recorded loss",
        "",
        ("Training steps as fit takes them (fused AdamW, gradient norm clipped at 1), one torch thread, the sides "
         f"interleaved round by round in one process ({rounds} rounds; {large_rounds} at the large size); 1-minute "
         f"load average {load:.2f} at the start. undriven: speed_vs_peers' neural_sde family (the transitions of "
         "make_damped_oscillator(64, 50); small: hidden (32, 32), minibatch 16; large: (256, 256), 256) and its "
         "hand-written peer; driven: NeuralSDE(covariates=['u'], covariate_interpolation='linear') on "
         "make_forced_oscillator(64, 50), hidden (32, 32), minibatch 16."),
        "",
        "| case | node (ms) | recorded (ms) | peer (ms) | node ÷ recorded | node ÷ peer | recorded ÷ peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in (*(f"undriven {size}" for size in SIZES), "driven small"):
        n, r, p = by[(case, "node")], by[(case, "recorded")], by.get((case, "peer"))
        peer_cells = f"{p * 1e3:.3f} | {n / r:.2f} | {n / p:.2f} | {r / p:.2f}" if p else f"– | {n / r:.2f} | – | –"
        lines.append(f"| {case} | {n * 1e3:.3f} | {r * 1e3:.3f} | {peer_cells} |")
    lines += ["", (f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/neural_sde_loss_node.py --rounds {rounds} "
                   f"--large-rounds {large_rounds}`")]
    write_rows(RESULTS, rows, report=lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--large-rounds", type=int, default=40)
    arguments = parser.parse_args()
    main(arguments.rounds, arguments.large_rounds)
