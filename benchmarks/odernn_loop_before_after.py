"""ODERNN's Euler-GRU loop and hidden rows (``dynlearn/nn/_odernn_fused.py``) against an earlier version of the file.

Times, round by round in one process with one torch thread, (1) one
training iteration of the paper's ODE-RNN (``irregular.ODERNN_SPEED``,
minibatches of 50 of the toy periodic data's 800 training series, as
``authors_reference.py`` times it) at the fit's initial weights stepped at a
learning rate of 0, so every round does the same work, and (2) the loop
alone, forward and backward, on the first minibatch's rows. The only
difference between the two sides is the module that ``ODERNNEncoder`` calls
for the loop; the values and gradients of both are compared first. With
``DYNLEARN_AUTHORS_LATENT_ODE`` naming a checkout of the authors' code, their
ODE-RNN iteration at its initial weights (``authors_reference.py``'s equal-work
comparison) is timed in the same rounds.

The training loss also evolves the rows hidden from the encoder to their
times (``ODERNNEncoder.evolve``, fixed Euler steps, each row its own number
of them). Where the earlier file has no ``euler_rows`` (the written-out
rollout of those rows), its side steps them as ``evolve`` did before it:
every row once, then only the rows with steps left, recorded by autograd
(the encoder's ``stepped_rows``), so the iteration compares the two versions
whole. Where the earlier file's loop returns no field values (its third
output, from which the hidden rows take their first step), its side's hidden
rows evaluate the field at their first step too, as before. The report also
gives the relative size of the largest difference, the GRU's updates in the
loop, and the hidden rows and their rollout's field evaluations in one
iteration of each side (the rows are drawn afresh each iteration).

Run::

    git show main:dynlearn/nn/_odernn_fused.py > /tmp/odernn_fused_before.py
    [DYNLEARN_AUTHORS_LATENT_ODE=/path/to/latent_ode] OMP_NUM_THREADS=1 PYTHONPATH=. \\
        python benchmarks/odernn_loop_before_after.py \\
        --before /tmp/odernn_fused_before.py [--rounds 20] [--per-round 10]

Writes ``benchmarks/results/odernn_loop/results.csv`` (seconds per round and side) and ``report.md``
(medians). ``--default-sizes`` times ``ODERNN()``'s own sizes instead (hidden
state 20, one hidden layer of 64, ``torch.nn.GRUCell``), with no authors' side,
into ``results/odernn_loop/default_sizes``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
import warnings
from pathlib import Path

import torch
from authors_reference import authors_library, authors_training
from harness import write_rows
from irregular import (
    ODERNN_SPEED,
    ONE_EPOCH,
    SHARED_TRAIN_SERIES,
    SPEED_BATCH,
    TrainingCapture,
    dynlearn_iteration,
    speed_minibatch,
)

import dynlearn.nn._odernn as odernn
import dynlearn.nn._odernn_fused as after
from dynlearn import ODERNN
from dynlearn.nn import mlp_function
from dynlearn.solvers import fixed_step

RESULTS = Path(__file__).resolve().parent / "results" / "odernn_loop"


def _module(path: str):
    spec = importlib.util.spec_from_file_location("odernn_fused_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stepped_row_by_row(h: torch.Tensor, dt: torch.Tensor, n_steps: torch.Tensor, net: torch.nn.Sequential):
    """The hidden rows as ``evolve`` stepped them before ``euler_rows``: every row once, then only the rows with
    steps left, each step recorded by autograd (the encoder's own ``stepped_rows``)."""
    f = mlp_function(net, rescaled=True)
    return odernn.stepped_rows(lambda x, step, _: fixed_step("euler", f, x, step), h, dt, n_steps)


def _three_outputs(loop):
    """``loop`` returning states, priors and the field values (None from a file whose loop returns no field values,
    so the hidden rows evaluate the field at their first step, as before)."""
    def run(*args):
        out = loop(*args)
        return out if len(out) == 3 else (*out, None)

    return run


def _use(module) -> None:
    """Point the encoder at ``module``'s loop and hidden-row rollout (the recorded rows where it has none); None
    for the authors' side."""
    if module is None:
        return
    odernn.euler_gru_loop = _three_outputs(module.euler_gru_loop)
    odernn.euler_rows = getattr(module, "euler_rows", _stepped_row_by_row)


def _hidden_rows(module, iteration) -> tuple[int, int]:
    """The rows hidden from the encoder in one ``iteration`` with ``module``'s loop, and the field evaluations their
    rollout takes (the Euler steps ``euler_rows`` is asked for)."""
    _use(module)
    rollout, seen = odernn.euler_rows, []

    def counted(h, dt, n_steps, net):
        seen.append((h.shape[0], int(n_steps.sum())))
        return rollout(h, dt, n_steps, net)

    odernn.euler_rows = counted
    try:
        iteration()
    finally:
        odernn.euler_rows = rollout
    return sum(rows for rows, _ in seen), sum(steps for _, steps in seen)


def _interleaved(sides: dict, run, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per call of ``run`` with each side's loop, sides alternating first and second round by round."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for name, module in sides.items():  # warm-up
        _use(module)
        run(module)
    for r in range(rounds):
        for name, module in sides.items() if r % 2 == 0 else reversed(sides.items()):
            _use(module)
            start = time.perf_counter()
            for _ in range(per_round):
                run(module)
            seconds[name].append((time.perf_counter() - start) / per_round)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="path of the earlier _odernn_fused.py")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--default-sizes", action="store_true",
                        help="time ODERNN's default sizes (GRUCell) instead of the paper's, without the authors' side")
    parser.add_argument("--gru-hidden-size", type=int, default=None,
                        help="with --default-sizes: the paper's GRU of this width instead of GRUCell")
    args = parser.parse_args()
    if args.gru_hidden_size and not args.default_sizes:
        parser.error("--gru-hidden-size sets the GRU of --default-sizes; the paper's sizes fix their own")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sides = {"before": _module(args.before), "after": after}
    seen = TrainingCapture()
    frame = speed_minibatch("shared_times", SHARED_TRAIN_SERIES)
    sizes = ({"gru_hidden_size": args.gru_hidden_size} if args.gru_hidden_size else {}) if args.default_sizes else ODERNN_SPEED
    ODERNN(**sizes, **ONE_EPOCH, callbacks=[seen], device="cpu").fit(frame)
    iteration = dynlearn_iteration(seen, SPEED_BATCH, frozen=True)
    lib = None if args.default_sizes else authors_library()
    authors = None if lib is None else authors_training(lib, "ode_rnn", torch.device("cpu"), frozen=True)[0]

    captured = []

    def capture(*loop_args):
        captured.append(loop_args)
        return after.euler_gru_loop(*loop_args)

    odernn.euler_gru_loop = capture
    iteration()
    loop_args = captured[0]
    states, priors = after.euler_gru_loop(*loop_args)[:2]
    weights = [torch.randn_like(states), torch.randn_like(priors)]
    parameters = list(iteration.module.parameters())

    def loop(module) -> list[torch.Tensor]:
        for parameter in parameters:
            parameter.grad = None
        states, priors = module.euler_gru_loop(*loop_args)[:2]
        ((states * weights[0]).sum() + (priors * weights[1]).sum()).backward()
        return [states.detach(), priors.detach(), *(p.grad for p in parameters if p.grad is not None)]

    pairs = list(zip(loop(sides["before"]), loop(after)))
    difference = max((a - b).abs().max().item() for a, b in pairs)
    relative = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in pairs)
    largest = f"{difference:.3g} ({relative:.3g} of the largest magnitude of the same tensor)"
    report = [f"largest difference in values and gradients, loop alone: {largest}"]
    update = loop_args[1]
    report.append(f"GRU updates in the loop: {int(update.sum())} of {update.numel()} rows x series")
    for name, module in sides.items():
        rows, steps = _hidden_rows(module, iteration)
        report.append(f"{name}: {rows} hidden rows, {steps} field evaluations in their rollout")
    rows = []
    def one_iteration(module) -> None:
        if module is None:
            authors()
        else:
            iteration()

    for what, run in (("iteration", one_iteration), ("loop", loop)):
        timed = {**sides, "authors": None} if what == "iteration" and authors is not None else sides
        seconds = _interleaved(timed, run, args.rounds, args.per_round)
        before, now = statistics.median(seconds["before"]), statistics.median(seconds["after"])
        report.append(f"{what}: before {before:.4f} s, after {now:.4f} s, {before / now:.2f}x ({args.rounds} rounds)")
        if "authors" in seconds:
            theirs = statistics.median(seconds["authors"])
            report.append(f"authors' iteration {theirs:.4f} s: {theirs / before:.2f}x before, {theirs / now:.2f}x now")
        rows += [
            {"what": what, "side": side, "round": r, "seconds": value}
            for side in timed
            for r, value in enumerate(seconds[side])
        ]
    folder = f"default_sizes_gru_{args.gru_hidden_size}" if args.gru_hidden_size else "default_sizes"
    write_rows(RESULTS / folder if args.default_sizes else RESULTS, rows, report=report)


if __name__ == "__main__":
    main()
