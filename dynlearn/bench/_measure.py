"""What the suite measures around a fit: iterations, vector-field evaluations, peak memory; and scores."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..solvers import SolverStats, count_evaluations


@dataclass
class Counts:
    """What :func:`instrument` saw: optimizer steps, vector-field evaluations, autograd memory.

    ``graph_bytes`` is the largest number of bytes autograd held for one
    training step's backward pass (distinct storages saved between two
    optimizer steps): what direct backpropagation through a solver costs
    and the adjoint method saves, on any device.
    """

    iterations: int = 0
    graph_bytes: int = 0
    solver: SolverStats = field(default_factory=SolverStats)
    _other_forward: int = 0
    _other_backward: int = 0
    _step_storages: dict[int, int] = field(default_factory=dict)

    @property
    def nfe_forward(self) -> int:
        """Evaluations outside a backward pass: dynlearn's ODE solves and the suite's discrete-depth models."""
        return self.solver.nfe_forward + self._other_forward

    @property
    def nfe_backward(self) -> int:
        """Evaluations during a backward pass (the adjoint's backward solve)."""
        return self.solver.nfe_backward + self._other_backward

    def _saved(self, tensor: torch.Tensor) -> torch.Tensor:
        if torch._C._current_graph_task_id() == -1:  # graphs built inside a backward pass die with it
            storage = tensor.untyped_storage()
            self._step_storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def _step(self) -> None:
        self.iterations += 1
        self.graph_bytes = max(self.graph_bytes, sum(self._step_storages.values()))
        self._step_storages.clear()


_ACTIVE: list[Counts] = []


def record_evaluation() -> None:
    """Count one evaluation of a field stepped outside ``dynlearn.solvers`` in every open :func:`instrument`.

    The discrete-depth models of the suite step their fields themselves;
    dynlearn's own solves are counted by :func:`dynlearn.solvers.count_evaluations`.
    """
    if not _ACTIVE:
        return
    backward = torch._C._current_graph_task_id() != -1
    for counts in _ACTIVE:
        if backward:
            counts._other_backward += 1
        else:
            counts._other_forward += 1


@contextmanager
def instrument() -> Iterator[Counts]:
    """Count optimizer steps (any torch optimizer), evaluations of every dynlearn ODE solve and autograd memory.

    Evaluations are counted by :func:`dynlearn.solvers.count_evaluations`
    (plus the discrete-depth models' own steps, :func:`record_evaluation`).
    Solves outside ``dynlearn.solvers``' ODE functions (SDE solvers) are
    not counted.
    """
    counts = Counts()
    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: counts._step())
    _ACTIVE.append(counts)
    try:
        with count_evaluations() as counts.solver:
            with torch.autograd.graph.saved_tensors_hooks(counts._saved, lambda tensor: tensor):
                yield counts
    finally:
        _ACTIVE.remove(counts)
        handle.remove()


class PeakMemory:
    """Peak GPU memory allocated in a block above what was allocated when it began, in MiB (NaN on a CPU).

    On a CPU the resident set is too coarse a gauge (the allocator keeps
    freed pages); :class:`Counts.graph_bytes` is the figure to compare there.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20


def n_parameters(model: Any) -> float:
    """Trainable parameters of an estimator's ``module_`` (NaN for models without one)."""
    module = getattr(model, "module_", None)
    if not isinstance(module, torch.nn.Module):
        return float("nan")
    return float(sum(p.numel() for p in module.parameters() if p.requires_grad))


def masked_mse(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean squared error over the finite entries of ``observed``."""
    mask = np.isfinite(observed)
    if not mask.any():
        return float("nan")
    return float(np.mean((predicted[mask] - observed[mask]) ** 2))
