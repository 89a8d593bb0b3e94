"""Training iterations of HamiltonianNN with the written-out gradient of H against autograd's double backward.

``HamiltonianField`` takes ``∂H/∂(q, p)`` of its networks as a written-out
backward sweep of plain tensor operations (``dynlearn/nn/_energy.py``,
``_network_gradient``), so a loss on the field is differentiated once. The
``autograd`` way is the same field computing that gradient as before, with
``torch.autograd.grad(H(x).sum(), x, create_graph=True)``, so that the
training step backpropagates through autograd's backward graph.

Each way is one training iteration exactly as ``fit`` takes it (the loss and
prepared minibatches of a one-epoch fit on ``make_mass_spring``, captured
with a callback and stepped with ``dynlearn.training.train_step``: AdamW,
gradient norm clipped at 1), a fresh copy from the same weights, rounds
interleaved by ``dynlearn.bench.time_interleaved`` (one warm-up round), one
torch thread. Tasks:

* ``derivatives``: ``HamiltonianNN(fit_on="derivatives")``, the default
  non-separable ``H``: one field evaluation per iteration;
* ``leapfrog``: ``HamiltonianNN(separable=True, solver="leapfrog",
  fit_on="trajectories")``, windows of 10 observations: one gradient of
  ``V`` and one of ``T`` per step, backpropagated through the steps.

The ``derivatives`` task times a third way, ``one node``: the field's
``derivative_loss`` as fit takes it, one autograd node that forms the loss
and the weights' gradient in its forward pass (``dynlearn/nn/_energy_loss.py``);
``written out`` there records the written-out operations and lets autograd
differentiate them, as fit did before.

``small``: hidden (32, 32), minibatches of 16 examples; ``large``:
(256, 256), 256 examples.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_hamiltonian.py [--rounds 200]``. Writes
``benchmarks/results/written_out_hamiltonian/results.csv`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness import compare_iterations, write_rows
from irregular import TrainingCapture, consecutive_batches

from dynlearn import HamiltonianNN
from dynlearn.datasets import make_mass_spring
from dynlearn.nn import HamiltonianField
from dynlearn.training import train_step

RESULTS = Path(__file__).resolve().parent / "results" / "written_out_hamiltonian"
SIZES = {"small": ((32, 32), 16), "large": ((256, 256), 256)}
TASKS = {
    "derivatives": {"fit_on": "derivatives"},
    "leapfrog": {"separable": True, "solver": "leapfrog", "fit_on": "trajectories", "window_size": 10},
}
WAYS = ("autograd", "written out", "one node")


def _gradient(scalar: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[None, torch.Tensor]:
    """The gradient of ``scalar`` at ``x`` as a training step takes it without the written-out path."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(scalar(x).sum(), x, create_graph=True)
    return None, grad


class AutogradHamiltonianField(HamiltonianField):
    """The field with ``∂H/∂(q, p)`` taken by ``torch.autograd.grad(..., create_graph=True)``, as before."""

    def forward(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        q, p = x.split(self.n_coordinates, dim=-1)
        grad_q, grad_p = self.gradients(q, p)
        if self.n_inputs:
            return torch.cat([grad_p, self.input_matrix.force(q, u) - grad_q], dim=-1)
        return torch.cat([grad_p, -grad_q], dim=-1)

    def gradients(self, q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.separable:
            return self.potential_gradient(q), self.kinetic_gradient(p)
        _, grad = _gradient(self.energy, torch.cat([q, p], dim=-1))
        return grad.split(self.n_coordinates, dim=-1)

    def potential_gradient(self, q: torch.Tensor) -> torch.Tensor:
        return _gradient(lambda z: self.potential(z).squeeze(-1), q)[1]

    def kinetic_gradient(self, p: torch.Tensor) -> torch.Tensor:
        return _gradient(lambda z: self.kinetic(z).squeeze(-1), p)[1]


class RecordedHamiltonianField(HamiltonianField):
    """The field whose derivative loss is the written-out gradient's operations, recorded and differentiated."""

    def derivative_loss(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                        u: torch.Tensor | None = None) -> torch.Tensor:
        return self._recorded_loss(x, rates, mask, u)


def _counted(field: HamiltonianField, node: bool = False) -> list[int]:
    """Count the field's network gradients (one per network) through instance attributes shadowing its methods.

    ``node``: the derivative loss's own calls (one field evaluation each), which never call ``forward``.
    """
    calls = [0]
    names = ("potential_gradient", "kinetic_gradient") if field.separable else ("forward",)
    names = ("derivative_loss",) if node else names
    for name in names:
        method = getattr(field, name)

        def wrapped(*args: Any, _method: Callable = method) -> Any:
            calls[0] += 1
            return _method(*args)

        object.__setattr__(field, name, wrapped)
    return calls


def _iteration(field: HamiltonianField, seen: TrainingCapture, batch: int,
               node: bool = False) -> Callable[[], tuple[float, int]]:
    batches = consecutive_batches(seen.train_data, batch)
    optimizer = torch.optim.AdamW(field.parameters(), lr=seen.learning_rate)
    calls = _counted(field, node)
    step = 0

    def run() -> tuple[float, int]:
        nonlocal step
        step += 1
        calls[0] = 0
        field.train()
        loss = train_step(field, seen.loss_fn, batches[(step - 1) % len(batches)], optimizer, clip_grad_norm=1.0)
        return loss, calls[0]

    return run


def main(rounds: int) -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    frame = make_mass_spring(n_series=32, n_times=50, random_state=0)
    rows = []
    for task, settings in TASKS.items():
        for size, (hidden, batch) in SIZES.items():
            seen = TrainingCapture()
            HamiltonianNN(hidden_layer_sizes=hidden, callbacks=[seen], max_epochs=1, patience=None,
                          validation_fraction=0.0, random_state=0, n_threads=1, device="cpu", **settings).fit(frame)  # fmt: skip
            start = seen.module.state_dict()
            written = copy.deepcopy(seen.module)
            written.__class__ = RecordedHamiltonianField  # the written-out operations, recorded by autograd
            baseline = copy.deepcopy(seen.module)
            baseline.__class__ = AutogradHamiltonianField  # the same module, its gradients taken by autograd
            node = copy.deepcopy(seen.module)  # the derivative loss as one node (fit_on="derivatives" only)
            for field in (written, baseline, node):
                field.load_state_dict(start)
            steps = {"autograd": _iteration(baseline, seen, batch), "written out": _iteration(written, seen, batch)}
            if settings["fit_on"] == "derivatives":
                steps["one node"] = _iteration(node, seen, batch, node=True)
            timed = rounds if size == "small" else max(5, rounds // 8)
            for row in compare_iterations(steps, timed, "autograd"):
                rows.append({"task": task, "size": size, "batch": batch, **row})
                print(rows[-1], flush=True)
    table = [
        f"| {r['task']} | {r['size']} | {r['way']} | {r['rounds']} | {r['seconds_per_iteration']:.5f} | "
        f"{r['ratio_to_autograd']:.3f} | {r['evaluations_per_iteration']:.0f} | {r['final_loss']:.6g} |"
        for r in rows
    ]
    report = [
        "# Written-out gradient of H against autograd's double backward",
        "",
        (
            "One HamiltonianNN training iteration (loss, backward, clip, AdamW) on make_mass_spring (32 series of "
            f"50), float32, one torch thread, rounds interleaved; 1-minute load average {load:.2f} at the start. "
            "small: hidden (32, 32), minibatches of 16; large: (256, 256), 256. derivatives: non-separable H, "
            "derivative loss; leapfrog: separable H, windows of 10 through leapfrog. ratio: seconds ÷ autograd's, "
            "median of per-round ratios (< 1: faster). gradients: network gradients per iteration."
        ),
        "",
        "| task | size | way | rounds | s per iteration | ratio to autograd | gradients | loss of the last |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *table,
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_hamiltonian.py --rounds {rounds}`",
    ]
    write_rows(RESULTS, rows, report=report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    arguments = parser.parse_args()
    main(arguments.rounds)
