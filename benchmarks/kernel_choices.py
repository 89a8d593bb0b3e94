"""The kernels and layouts dynlearn's written-out passes choose, timed at the shapes its models use.

A layer's input adjoint is ``grad @ W`` with ``W`` the layer's weight
``(out, in)``. A parameter is row-major; where the layer narrows
(``out > in``: a field's first layer read by a few states, 256 wide to 2, or
the ODE-RNN's gates, 100 or 200 wide to 10), the same product runs several
times faster on CPU with ``W`` column-major. A weight's gradient
``Σ gradᵀ x`` over many rows likewise runs faster with the narrower side as
the left factor, ``(xᵀ grad)ᵀ``. ``dynlearn.solvers._rk_mlp`` chooses both
(``input_gradient_factor``, ``weight_gradient``) for every hand-written
backward pass (the dopri5 step, the Euler–Maruyama solve, the Hamiltonian's
gradient sweep and the ODE-RNN's loop and hidden rows) where the adjoint has
at least 4096 entries; below that the copy costs more than it saves.

For each shape ``(rows, wide, narrow)`` this script times, round by round
in one process with one torch thread (the two layouts alternating first):

- ``input_adjoint``: ``grad (rows, wide) @ W (wide, narrow)`` with ``W``
  row-major (as a parameter is, and as autograd's ``AddmmBackward`` uses it)
  and column-major;
- ``weight_gradient``: ``grad (rows, wide)ᵀ @ x (rows, narrow)`` as written,
  and as ``(xᵀ grad)ᵀ``;
- ``square`` and ``widening`` rows, where the rule keeps the row-major
  layout: the column-major one there, for comparison;
- ``activation``: a hidden tanh layer's activation as ``torch.tanh`` and as
  the sigmoid that a float32 dopri5 step of an MLP field runs instead
  (``MLPLayers.rescaled``: ``tanh(z) = 2 sigmoid(2z) - 1``, the factors
  folded into the weights), each written into an output buffer;
- ``activation, recorded tanh via sigmoid``: a recorded tanh's forward and
  backward as ``torch.tanh`` and as ``tanh_via_sigmoid``, which the
  written-out sweeps of the Hamiltonian and the drift Jacobian take for
  float32 layers of at least 2**15 entries;
- ``row operations``: at the ODE-RNN loop's sizes (a buffer of 90 rows of
  50 series), a row's in-place product and activation over every row with
  grad mode off and in inference mode (``untracked()``, which the ODE-RNN
  loop, the latent SDE solve and the Hamiltonian derivative loss run in);
  the activation gradient through torch's ``OpOverload`` and through its C++
  entry point (``SIGMOID_GRAD``); and splitting the buffer into its rows,
  once (``unbind``) or row by row (indexing);
- ``number operands``: a float32 operation with a Python number as its
  operand, which torch casts to the tensor's dtype in a kernel of its own
  (once per tensor in a ``_foreach`` call), and with a 0-dim tensor of that
  dtype (the same value); as the optimiser's step counts (a list of ones)
  and its clip's coefficient take them.

Run::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/kernel_choices.py [--rounds 30] [--out DIR]

Writes ``results.csv`` (median seconds per call of each choice, and
their ratio) and ``report.md`` to ``benchmarks/results/kernel_choices``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from harness import write_rows

from dynlearn.solvers import tanh_via_sigmoid

RESULTS = Path(__file__).resolve().parent / "results" / "kernel_choices"

# (where, rows, wide, narrow): the products of the written-out backward passes at speed_vs_peers's and the
# ODE-RNN speed comparison's sizes.
SHAPES = [
    ("first layer, 16 series, 32 wide, 2 states (NeuralODE and HamiltonianNN small)", 16, 32, 2),
    ("first layer, 256 series, 256 wide, 2 states (NeuralODE and HamiltonianNN large)", 256, 256, 2),
    ("ODE-RNN loop, gates' first layer (50 series, 200 wide, 10 states)", 50, 200, 10),
    ("ODE-RNN loop, field's first layer (50 series, 100 wide, 10 states)", 50, 100, 10),
    ("ODE-RNN hidden rows, field's first layer (2530 rows, 100 wide, 10 states)", 2530, 100, 10),
]
# Hidden activations of dopri5 fields: (where, rows, width).
ACTIVATIONS = [
    ("NeuralODE small (16 series, 32 wide)", 16, 32),
    ("NeuralODE large (256 series, 256 wide)", 256, 256),
]
# Recorded tanh layers read as they are (tanh_via_sigmoid from 2**15 entries): (where, rows, width).
UNFOLDED = [
    ("below the threshold (16 series, 32 wide)", 16, 32),
    ("at the threshold (128 rows, 256 wide)", 128, 256),
    ("HamiltonianNN and NeuralSDE large (256 series, 256 wide)", 256, 256),
]
# Products the rule leaves row-major: (where, rows, k, n) of grad (rows, k) @ W (k, n).
KEPT = [
    ("square (256 series, 256 to 256)", 256, 256, 256),
    ("square (50 series, 100 to 100)", 50, 100, 100),
    ("widening (50 series, 10 to 100)", 50, 10, 100),
]


def _seconds(functions: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round by round, the order alternating."""
    for function in functions.values():  # warm-up
        for _ in range(per_round):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for r in range(rounds):
        for name in list(functions) if r % 2 == 0 else list(functions)[::-1]:
            begun = time.perf_counter()
            for _ in range(per_round):
                functions[name]()
            times[name].append((time.perf_counter() - begun) / per_round)
    return {name: statistics.median(values) for name, values in times.items()}


def _per_round(rows: int, k: int, n: int) -> int:
    return max(5, min(2000, int(2e7 / max(1, rows * k * n))))


def _adjoint(grad: torch.Tensor, weight: torch.Tensor) -> dict:
    """``grad @ weight`` with ``weight`` row-major (a parameter's layout) and column-major."""
    column = weight.t().contiguous().t()
    return {"row": lambda: grad @ weight, "column": lambda: grad @ column}


def _weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> dict:
    """``gradᵀ x`` as written and with the narrower ``x`` as the left factor."""
    return {"row": lambda: grad.t() @ x, "column": lambda: (x.t() @ grad).t()}


def _activations(z: torch.Tensor) -> dict:
    """``tanh(z)`` and ``sigmoid(z)``, each written into one output buffer."""
    out = torch.empty_like(z)
    return {"tanh": lambda: torch.tanh(z, out=out), "sigmoid": lambda: torch.sigmoid(z, out=out)}


def _unfolded_tanh(z: torch.Tensor) -> dict:
    """A recorded tanh's forward and backward as ``torch.tanh`` and as ``tanh_via_sigmoid``'s sigmoid form
    (``2 sigmoid(2z) - 1``, one node with tanh's backward; forced at every size, ``min_entries=0``), for an
    activation whose output is read as it is."""
    z = z.clone().requires_grad_(True)
    return {"tanh": lambda: torch.tanh(z).sum().backward(),
            "sigmoid": lambda: tanh_via_sigmoid(z, min_entries=0).sum().backward()}


def _row_operations(n_rows: int = 90, batch: int = 50, width: int = 100, narrow: int = 10) -> list[tuple]:
    """``(product, where, shape, {"written": f, "alternative": g})`` for the per-row costs of the written-out loops:
    each function walks every row of one buffer, as the ODE-RNN loop does."""
    buffer, x, weight = torch.empty(n_rows, batch, width), torch.randn(batch, narrow), torch.randn(narrow, width)
    rows = buffer.unbind(0)
    grads = torch.randn(n_rows, batch, width).unbind(0)
    sigmoid_grad = torch.ops.aten.sigmoid_backward.grad_input

    def rows_under(mode):
        def run():
            with mode():
                for row in rows:
                    row.addmm_(x, weight).sigmoid_()
        return run

    def gradients(kernel):
        def run():
            with torch.no_grad():
                for grad, row in zip(grads, rows):
                    kernel(grad, row, grad_input=grad)
        return run

    shape = f"{n_rows} rows of ({batch}, {narrow}) @ ({narrow}, {width})"
    return [
        ("row operations, grad off / inference mode", "in-place product and sigmoid of each row", shape,
         {"written": rows_under(torch.no_grad), "alternative": rows_under(torch.inference_mode)}),
        ("row operations, overload / entry point", "sigmoid gradient of each row, in place",
         f"{n_rows} rows of ({batch}, {width})",
         {"written": gradients(sigmoid_grad), "alternative": gradients(getattr(sigmoid_grad, "_op", sigmoid_grad))}),
        ("row operations, split once / row by row", "views of every row of a buffer",
         f"({n_rows}, {batch}, {width})",
         {"written": lambda: buffer.unbind(0), "alternative": lambda: [buffer[k] for k in range(n_rows)]}),
    ]


def _number_operands() -> list[tuple]:
    """``(product, where, shape, {"written": f, "alternative": g})``: a Python number as an operand of float32
    operations (written) against a 0-dim tensor of the same value (alternative)."""
    x, c = torch.randn(16, 32), torch.tensor(2.0)
    shapes = [(32, 2), (32,), (32, 32), (32,), (2, 32), (2,)] * 2  # NeuralSDE small's drift and diffusion tensors
    steps, ones = [torch.tensor(1.0) for _ in shapes], [torch.tensor(1.0) for _ in shapes]
    grads, one = [torch.randn(shape) for shape in shapes], torch.tensor(1.0)
    return [
        ("number operands", "x * 2.0 against x * c (c a 0-dim float32 tensor)", "(16, 32)",
         {"written": lambda: x * 2.0, "alternative": lambda: x * c}),
        ("number operands", "the fused AdamW's step counts: _foreach_add_(steps, 1) against a list of ones",
         f"{len(steps)} counts", {"written": lambda: torch._foreach_add_(steps, 1),
                                  "alternative": lambda: torch._foreach_add_(steps, ones)}),
        ("number operands", "the clip: _foreach_mul_(grads, 1.0) against a 0-dim tensor",
         f"{len(grads)} gradients of NeuralSDE small", {"written": lambda: torch._foreach_mul_(grads, 1.0),
                                                        "alternative": lambda: torch._foreach_mul_(grads, one)}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    header = (f"torch {torch.__version__}, one thread, median of {args.rounds} rounds. ratio = alternative / as "
              "written (below 1: the alternative is faster). dynlearn takes the alternative layout of a narrowing "
              "layer's products where the adjoint has at least 4096 entries (rows × wide; the first row's 512 "
              "stay as written), and keeps square and widening products row-major.")
    rows_out, report = [], [
        "# Kernels and layouts of the written-out passes",
        "",
        header,
        "",
        "| product | shape | as written (µs) | alternative (µs) | ratio |",
        "|---|---|---:|---:|---:|",
    ]

    def record(product: str, where: str, shape: str, written: float, other: float) -> None:
        rows_out.append({"product": product, "where": where, "shape": shape, "seconds_as_written": written,
                         "seconds_alternative": other, "ratio_alternative_over_written": other / written})
        report.append(f"| {product}: {where} | {shape} | {written * 1e6:.1f} | {other * 1e6:.1f} | "
                      f"{other / written:.2f} |")

    for where, rows, wide, narrow in SHAPES:
        grad, x = torch.randn(rows, wide), torch.randn(rows, narrow)
        per_round = _per_round(rows, wide, narrow)
        seconds = _seconds(_adjoint(grad, torch.randn(wide, narrow)), args.rounds, per_round)
        record("input adjoint", where, f"({rows}, {wide}) @ ({wide}, {narrow})", seconds["row"], seconds["column"])
        seconds = _seconds(_weight_gradient(grad, x), args.rounds, per_round)
        record("weight gradient", where, f"({rows}, {wide})ᵀ @ ({rows}, {narrow})", seconds["row"], seconds["column"])
    for where, rows, k, n in KEPT:
        seconds = _seconds(_adjoint(torch.randn(rows, k), torch.randn(k, n)), args.rounds, _per_round(rows, k, n))
        record("kept row-major", where, f"({rows}, {k}) @ ({k}, {n})", seconds["row"], seconds["column"])
    for where, rows, width in ACTIVATIONS:
        seconds = _seconds(_activations(torch.randn(rows, width)), args.rounds, _per_round(rows, width, 1))
        record("activation, tanh as sigmoid", where, f"({rows}, {width})", seconds["tanh"], seconds["sigmoid"])
    for where, rows, width in UNFOLDED:
        seconds = _seconds(_unfolded_tanh(torch.randn(rows, width)), args.rounds, _per_round(rows, width, 4))
        record("activation, recorded tanh via sigmoid", where, f"({rows}, {width})", seconds["tanh"],
               seconds["sigmoid"])
    for product, where, shape, functions in _row_operations() + _number_operands():
        seconds = _seconds(functions, args.rounds, 20)
        record(product, where, shape, seconds["written"], seconds["alternative"])
    write_rows(args.out, rows_out, report=report)


if __name__ == "__main__":
    main()
