"""Subnormal numbers in training gradients, and what they cost: counted per backward pass, timed by flushing them.

On x86 CPUs an arithmetic instruction that meets a subnormal float (below
1.2e-38 in float32) takes a slow path, many times slower than a normal one;
a few such entries in a matrix slow the whole product. For each model this
script captures the training state of a short fit (its loss, module and
prepared minibatches, through a public ``Callback``) and, at the fit's
initial weights (or, with ``--train-iterations N``, at the weights of the
captured state after N further training iterations),

- counts the subnormal entries that the nodes of one backward pass hand on
  (autograd node hooks: the gradients each node passes to its inputs),
  summed over the minibatches the timed iterations step through, and
- times training iterations stepped at a learning rate of 0 (the same work
  every round) with ``torch.set_flush_denormal`` off and on, alternating round
  by round: the ratio on / off is what subnormal numbers cost the iteration
  (1.0: nothing; below 1: flushing them to zero is faster, so they occur).

It also times one ``(150, 100) @ (100, 100)`` product on normal and on
subnormal entries. Models: the paper's Latent ODE (3 draws, obs_std 0.01, the toy data of
``authors_reference.py``) and ODE-RNN at those sizes, and the small sizes
of ``speed_vs_peers``'s NeuralODE, HamiltonianNN and LatentSDE (the states its
rows start from). One torch thread.

Run::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/subnormal_gradients.py [--rounds 30] [--train-iterations 0] \\
        [--models latent_ode ...] [--out DIR]

Writes ``results.csv`` and ``report.md`` to ``benchmarks/results/subnormal_gradients`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from harness import write_rows
from irregular import (
    LATENT_SPEED,
    ODERNN_SPEED,
    ONE_EPOCH,
    SHARED_TRAIN_SERIES,
    SPEED_BATCH,
    TrainingCapture,
    consecutive_batches,
    dynlearn_iteration,
    speed_minibatch,
)  # fmt: skip
from speed_vs_peers import SDE_BATCH, SIZES, capture

from dynlearn import ODERNN, HamiltonianNN, LatentODE, LatentSDE, NeuralODE
from dynlearn.datasets import make_damped_oscillator, make_mass_spring

RESULTS = Path(__file__).resolve().parent / "results" / "subnormal_gradients"


def subnormal_entries(tensor: torch.Tensor | None) -> int:
    """Nonzero entries of ``tensor`` smaller in magnitude than its dtype's smallest normal number."""
    if tensor is None or not tensor.is_floating_point():
        return 0
    magnitude = tensor.abs()
    return int(((magnitude > 0) & (magnitude < torch.finfo(tensor.dtype).tiny)).sum())


def subnormal_gradients(module: torch.nn.Module, loss_fn, batch: dict) -> int:
    """Subnormal entries in the gradients every node of ``loss_fn(module, batch)``'s graph hands on."""
    loss = loss_fn(module, batch)
    counts: list[int] = []
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        node.register_hook(lambda grads_in, _: counts.append(sum(subnormal_entries(g) for g in grads_in)))
        stack += [parent for parent, _ in node.next_functions]
    loss.backward()
    module.zero_grad(set_to_none=True)
    return sum(counts)


def captured(name: str) -> tuple[TrainingCapture, int]:
    """The training state of a short fit of model ``name``, and its minibatch size."""
    seen = TrainingCapture()
    if name in ("latent_ode", "odernn"):
        estimator, sizes = (LatentODE, LATENT_SPEED) if name == "latent_ode" else (ODERNN, ODERNN_SPEED)
        estimator(**sizes, **ONE_EPOCH, callbacks=[seen], device="cpu").fit(
            speed_minibatch("shared_times", SHARED_TRAIN_SERIES))
        return seen, SPEED_BATCH
    hidden, batch = SIZES["small"]
    cpu = torch.device("cpu")
    if name == "neural_ode":
        frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
        return capture(NeuralODE(hidden_layer_sizes=hidden, window_size=16, stabilize=False), frame, cpu), batch
    if name == "hamiltonian":
        frame = make_mass_spring(n_series=32, n_times=50, random_state=0)
        return capture(HamiltonianNN(hidden_layer_sizes=hidden, fit_on="derivatives"), frame, cpu), batch
    frame = make_damped_oscillator(n_series=SDE_BATCH, n_times=50, random_state=0)
    estimator = LatentSDE(hidden_layer_sizes=hidden, kl_anneal_epochs=0, batch_size=SDE_BATCH, dt=0.25)
    return capture(estimator, frame, cpu), SDE_BATCH


MODELS = ("latent_ode", "odernn", "neural_ode", "hamiltonian", "latent_sde")


def measure(name: str, rounds: int, counted_batches: int | None = None, train_iterations: int = 0) -> dict:
    seen, batch = captured(name)
    torch.manual_seed(0)
    iteration = dynlearn_iteration(seen, batch, frozen=True)  # a copy at the fit's initial weights, rate 0
    if train_iterations:  # or at the weights of the captured state trained on
        training = dynlearn_iteration(seen, batch)
        for _ in range(train_iterations):
            training()
        iteration.module.load_state_dict(seen.module.state_dict())
    module = iteration.module
    module.train()
    batches = consecutive_batches(seen.train_data, batch)[:counted_batches]
    count = sum(subnormal_gradients(module, seen.loss_fn, part) for part in batches)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    try:
        for flush in (False, True):  # warm-up
            torch.set_flush_denormal(flush)
            iteration()
        for r in range(rounds):
            for flush in (False, True) if r % 2 == 0 else (True, False):
                torch.set_flush_denormal(flush)
                start = time.perf_counter()
                iteration()
                seconds[flush].append(time.perf_counter() - start)
    finally:
        torch.set_flush_denormal(False)
    ratios = [on / off for on, off in zip(seconds[True], seconds[False])]
    return {
        "model": name, "trained_iterations": train_iterations, "minibatches_counted": len(batches), "subnormal_gradient_entries": count,
        "seconds_per_iteration": statistics.median(seconds[False]),
        "seconds_per_iteration_flushed": statistics.median(seconds[True]),
        "ratio_flushed_over_not": statistics.median(ratios), "rounds": rounds,
    }  # fmt: skip


def product_cost(rounds: int) -> dict:
    """Seconds of one ``(150, 100) @ (100, 100)`` float32 product (the Latent ODE's latent layer on 3 draws of 50
    series) on normal entries and on entries all subnormal, alternating, median of ``rounds`` rounds of 20."""
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(150, 100, generator=generator)
    weight = torch.randn(100, 100, generator=generator)
    inputs = {"normal": normal, "subnormal": normal * 1e-39}
    assert subnormal_entries(inputs["subnormal"]) == normal.count_nonzero()
    seconds: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(rounds):
        for name, a in inputs.items():
            start = time.perf_counter()
            for _ in range(20):
                a @ weight
            seconds[name].append((time.perf_counter() - start) / 20)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--train-iterations", type=int, default=0,
                        help="training iterations after the captured state, before counting and timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not torch.set_flush_denormal(False):
        raise SystemExit("subnormal_gradients: this CPU cannot flush subnormal numbers (no SSE3), so nothing to time.")
    torch.set_num_threads(1)
    rows = [measure(name, args.rounds, train_iterations=args.train_iterations) for name in args.models]
    product = product_cost(args.rounds)
    report = [
        "# Subnormal numbers in training gradients",
        "",
        (f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/subnormal_gradients.py --rounds {args.rounds} "
         f"--train-iterations {args.train_iterations} --models {' '.join(args.models)}`, "
         "one torch thread. Counts: subnormal entries handed on by the backward pass's nodes, summed over the "
         "minibatches; ratio: median per-round seconds with subnormals flushed to zero over without "
         "(below 1: they cost that much)."),
        "",
        "| model | subnormal entries | s per iteration | flushed | ratio |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r['model']} | {r['subnormal_gradient_entries']} ({r['minibatches_counted']} minibatches) | "
          f"{r['seconds_per_iteration']:.4f} | {r['seconds_per_iteration_flushed']:.4f} | "
          f"{r['ratio_flushed_over_not']:.3f} |" for r in rows),
        "",
        (f"One (150, 100) @ (100, 100) float32 product: {product['normal'] * 1e6:.1f} µs on normal entries, "
         f"{product['subnormal'] * 1e6:.1f} µs on subnormal ones (median of {args.rounds} rounds of 20)."),
    ]  # fmt: skip
    write_rows(args.out, rows, report=report)


if __name__ == "__main__":
    main()
