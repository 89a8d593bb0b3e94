"""Benchmark ``scale``: NeuralODE training throughput with 1 and 2 data-parallel processes (torchrun, gloo, CPU).

Two problems on a damped oscillator, fixed-step rk4, 20 samples per series:

* ``small``: 512 series, hidden layers (256, 256), global minibatches of 128,
  so each process does 64 series per step and per-operation overhead (Python,
  dispatch) is a large share of a step: halving the batch does not halve it;
* ``large``: 2,048 series, hidden layers (512, 512), global minibatches of 512,
  a problem where matrix products dominate, the case the 1.7x goal is set for.

The global batch is the same for every process count, so every run takes the
same steps. Each process count is run under ``torchrun --nproc_per_node=N``
with ``OMP_NUM_THREADS=1`` per process, rounds interleaved (1, 2, 1, 2, ...)
so drifting load hits both alike. Throughput is series per second per epoch,
from the median duration of the epochs after the first (which pays one-off
costs); scaling efficiency is throughput(N) / (N * throughput(1)).

With ``--baseline REV`` (a git revision from before data-parallel training,
e.g. ``de32397``) the rounds also time one plain process (no torchrun) of this
checkout and one of that revision's dynlearn on the small problem, checked out
in a temporary worktree: the single-process path must not have become slower.

Run: ``OMP_NUM_THREADS=1 python benchmarks/scale.py [--rounds 3] [--epochs 6] [--baseline REV]``. Writes
``benchmarks/results/scale/scale.csv`` and ``report.md``, with the load
average seen before and after (other work on the machine slows every run).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale"
N_TIMES = 20
# problem: (series, hidden layer sizes, global minibatch)
PROBLEMS = {"small": (512, (256, 256), 128), "large": (2048, (512, 512), 512)}


def worker(out: Path, epochs: int, problem: str = "small") -> None:
    """Fit under torchrun (or alone) and write rank 0's epoch durations to ``out``."""
    import numpy as np
    import torch

    from dynlearn import ConvergenceWarning, NeuralODE

    n_series, hidden, batch = PROBLEMS[problem]
    rng = np.random.RandomState(0)
    t = np.linspace(0.0, 4.0, N_TIMES)
    phase = rng.uniform(0, 2 * np.pi, size=(n_series, 1))
    X = np.stack([np.exp(-0.2 * t) * np.cos(1.5 * t + phase), np.exp(-0.2 * t) * np.sin(1.5 * t + phase)], axis=-1)
    model = NeuralODE(
        hidden_layer_sizes=hidden, solver="rk4", window_size=None, batch_size=batch, max_epochs=epochs,
        patience=None, validation_fraction=0.0, random_state=0, device="cpu", n_threads=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, t=t)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        durations = model.history_.to_frame()["duration"].tolist()
        out.write_text(
            json.dumps({"world_size": world, "durations": durations, "dynlearn": str(Path(dynlearn_file()))})
        )


def dynlearn_file() -> str:
    import dynlearn

    return dynlearn.__file__


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(n_processes: int, epochs: int, problem: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "durations.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n_processes}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", __file__, "--worker", str(out),
            "--epochs", str(epochs), "--problem", problem,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        subprocess.run(command, env=env, check=True, capture_output=True)
        return json.loads(out.read_text())


def run_plain(epochs: int, root: Path) -> dict:
    """One process without torchrun, importing the dynlearn found at ``root``."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "durations.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
        subprocess.run([sys.executable, __file__, "--worker", str(out), "--epochs", str(epochs)], env=env, check=True,
                       capture_output=True)  # fmt: skip
        result = json.loads(out.read_text())
        if not result["dynlearn"].startswith(str(root)):
            raise RuntimeError(f"the worker imported {result['dynlearn']}, not the dynlearn under {root}")
        return result


def main(rounds: int, epochs: int, baseline: str | None = None) -> None:
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        base_root = Path(scratch) / "baseline"
        if baseline is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_root), baseline],
                           check=True, capture_output=True)  # fmt: skip
        try:
            for round_ in range(rounds):
                runs = [
                    (f"{problem}, torchrun x{n}", problem, n, lambda n=n, p=problem: run(n, epochs, p))
                    for problem in PROBLEMS
                    for n in (1, 2)
                ]
                if baseline is not None:
                    runs += [("small, plain, this checkout", "small", 1, lambda: run_plain(epochs, ROOT)),
                             (f"small, plain, {baseline}", "small", 1, lambda: run_plain(epochs, base_root))]  # fmt: skip
                for label, problem, n, go in runs:
                    seconds = statistics.median(go()["durations"][1:])
                    rows.append({"round": round_, "run": label, "problem": problem, "processes": n,
                                 "epoch_seconds": seconds, "series_per_second": PROBLEMS[problem][0] / seconds})  # fmt: skip
                    print(rows[-1], flush=True)
        finally:
            if baseline is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_root)],
                               capture_output=True)  # fmt: skip
    load_after = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "scale.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    labels = list(dict.fromkeys(r["run"] for r in rows))
    by_label = {label: statistics.median(r["series_per_second"] for r in rows if r["run"] == label) for label in labels}
    lines = [
        "# Data-parallel scaling (benchmark `scale`)",
        "",
        "NeuralODE, rk4, "
        + "; ".join(
            f"{name}: {n} series of {N_TIMES} samples, hidden {h}, global batch {b}"
            for name, (n, h, b) in PROBLEMS.items()
        )
        + ". "
        f"{epochs} epochs per run (median of epochs 2..{epochs}), {rounds} rounds interleaved; "
        "torchrun on the CPU (gloo), OMP_NUM_THREADS=1 per process.",
        f"Machine: {os.cpu_count()} cores shared with other work; load average (1, 5, 15 min) "
        f"{tuple(round(x, 2) for x in load_before)} before, {tuple(round(x, 2) for x in load_after)} after.",
        "",
        "| run | processes | series/s per epoch (median) | per-round series/s |",
        "|---|---|---|---|",
    ]
    for label in labels:
        per_round = ", ".join(f"{r['series_per_second']:.1f}" for r in rows if r["run"] == label)
        n = next(r["processes"] for r in rows if r["run"] == label)
        lines.append(f"| {label} | {n} | {by_label[label]:.1f} | {per_round} |")
    lines.append("")
    for problem in PROBLEMS:
        speed_up = by_label[f"{problem}, torchrun x2"] / by_label[f"{problem}, torchrun x1"]
        lines.append(f"{problem}: speed-up of 2 processes {speed_up:.2f}x, scaling efficiency {speed_up / 2:.0%}.")
    if baseline is not None:
        ratio = by_label["small, plain, this checkout"] / by_label[f"small, plain, {baseline}"]
        lines.append(f"Single process without torchrun, this checkout against {baseline}: {ratio:.2f}x the throughput.")
    lines.append("")
    lines.append(
        "Command: `OMP_NUM_THREADS=1 python benchmarks/scale.py "
        f"--rounds {rounds} --epochs {epochs}"
        + (f" --baseline {baseline}" if baseline else "")
        + "`. With other processes busy on the same two cores, the second process "
        "competes with them, so the efficiency is a lower bound on what an idle two-core machine gives."
    )
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="small", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--baseline", default=None, help="a git revision whose single-process fit is timed beside")
    arguments = parser.parse_args()
    if arguments.worker is not None:
        worker(arguments.worker, arguments.epochs, arguments.problem)
    else:
        main(arguments.rounds, arguments.epochs, arguments.baseline)
