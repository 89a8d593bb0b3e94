"""Data-parallel training over a ``torch.distributed`` process group (one process per device).

Every process holds the whole training set and the same module. Each global
minibatch (the one a single process would train on, from the same shuffled
order) is cut into one contiguous slice of rows per process; each process
backpropagates its slice and the gradients are summed across processes,
weighted by how much of the batch's loss each slice carries, so the step
taken is the step of the whole batch. Random draws made through
:func:`draw_rows` are drawn for the whole batch and sliced, so they match a
single-process run row for row.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor]


def _torchrun_world_size() -> int:
    """The number of processes ``torchrun`` started (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if "MASTER_ADDR" in os.environ else 1


def _group_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def prepare_process_group(device: torch.device) -> torch.device:
    """Join the run's process group where there is one, and return this process's device.

    Under ``torchrun`` (more than one process) without an initialised group,
    one is initialised from the environment: NCCL for a CUDA device, gloo
    for the CPU. A CUDA device given without an index becomes
    ``cuda:LOCAL_RANK``, so each process of a node drives its own GPU.
    Single-process runs get ``device`` back unchanged.
    """
    if not _group_ready() and _torchrun_world_size() > 1:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not _group_ready() or torch.distributed.get_world_size() < 2:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def data_parallel() -> "DataParallel | None":
    """The process group training shards over, or None for a single process."""
    if not _group_ready() or torch.distributed.get_world_size() < 2:
        return None
    return DataParallel(torch.distributed.get_rank(), torch.distributed.get_world_size())


def is_main_process() -> bool:
    """True in a single-process run and on rank 0 of a process group (the one that writes files)."""
    return not _group_ready() or torch.distributed.get_rank() == 0


def agree_on_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every process, so ``random_state=None`` draws one split, one init, one order."""
    group = data_parallel()
    if group is None:
        return seed
    value = torch.tensor([seed], dtype=torch.int64, device=group.device)
    torch.distributed.broadcast(value, src=0)
    return int(value.item())


@dataclass
class DataParallel:
    """This process's place in the group, and the collectives the training loop needs."""

    rank: int
    world_size: int
    device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        # NCCL moves CUDA tensors only; gloo works on CPU tensors.
        nccl = torch.distributed.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def rows(self, n: int) -> slice:
        """This process's contiguous rows of a global batch of ``n`` examples (sizes differ by at most one)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (a new tensor on ``values``' device)."""
        reduced = values.detach().to(self.device, copy=True)
        torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
        return reduced.to(values.device)

    def check_same_size(self, n: int) -> None:
        """Raise on every process unless all of them hold ``n`` training examples."""
        from ..exceptions import input_error

        sizes = self.all_sum(torch.tensor([n, -n], dtype=torch.int64))
        low, high = -int(sizes[1]), int(sizes[0])
        if low != n * self.world_size or high != n * self.world_size:
            raise input_error(
                "train_data",
                f"the same training examples on each of the {self.world_size} processes",
                f"{n} examples on rank {self.rank}, which the other processes do not all have",
                "Load the same data in every process (each process trains on its own slice of every minibatch).",
            )

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every process."""
        for tensor in module.state_dict().values():
            self.broadcast_tensor(tensor, src=0)

    def broadcast_generators(self, generators: Mapping[str, torch.Generator], src: int) -> None:
        """Rank ``src``'s state of each generator on every process (names sorted, so all send alike)."""
        for name in sorted(generators):
            state = generators[name].get_state()
            self.broadcast_tensor(state, src=src)
            generators[name].set_state(state)

    def broadcast_tensor(self, tensor: torch.Tensor, src: int) -> None:
        """Overwrite ``tensor`` in place with rank ``src``'s."""
        if tensor.device == self.device:
            torch.distributed.broadcast(tensor, src=src)
            return
        moved = tensor.to(self.device)
        torch.distributed.broadcast(moved, src=src)
        tensor.copy_(moved)


@dataclass
class Shard:
    """The global minibatch being trained on and this process's rows of it."""

    data: Batch
    index: torch.Tensor
    rows: slice
    _batch: dict[str, torch.Tensor] | None = None

    @property
    def size(self) -> int:
        """Examples in the global minibatch."""
        return len(self.index)

    @property
    def batch(self) -> dict[str, torch.Tensor]:
        """The whole global minibatch (sliced on first use)."""
        if self._batch is None:
            self._batch = {k: v.index_select(0, self.index.to(v.device)) for k, v in self.data.items()}
        return self._batch


_current: list[Shard] = []


@contextlib.contextmanager
def sharded(data: Batch, index: torch.Tensor, rows: slice) -> Iterator[None]:
    """Within the block, :func:`current_shard` describes the global batch ``index`` of ``data``."""
    _current.append(Shard(data, index, rows))
    try:
        yield
    finally:
        _current.pop()


def current_shard() -> Shard | None:
    """The shard the running loss is computed on, or None outside data-parallel training."""
    return _current[-1] if _current else None


def whole_batch(data: Batch) -> Batch:
    """The global minibatch ``data`` is this process's share of (``data`` itself in a single process).

    A loss whose shapes depend on the batch (the longest series in it) reads
    them here, so that every process computes with the shapes a single
    process would.
    """
    shard = current_shard()
    return shard.batch if shard is not None else data


def draw_rows(draw: Callable[[int], torch.Tensor], n: int, dim: int = 0) -> torch.Tensor:
    """``draw(n)``: a random draw with one entry per example along ``dim``, the same as a single process's.

    In data-parallel training the draw is made for the whole global batch and
    this process's rows are returned, so each example gets the numbers it
    would get in a single-process run and every process's generator moves on
    alike.
    """
    shard = current_shard()
    if shard is None:
        return draw(n)
    return draw(shard.size).narrow(dim, shard.rows.start, n)


def flatten_gradients(module: nn.Module, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every parameter's gradient times ``weight`` in one vector (zeros where there is none), and which had one."""
    parameters = list(module.parameters())
    device = parameters[0].device if parameters else torch.device("cpu")
    dtype = parameters[0].dtype if parameters else torch.float32
    pieces = [
        (p.grad.detach().reshape(-1) * weight) if p.grad is not None else torch.zeros(p.numel(), device=device, dtype=dtype)
        for p in parameters
    ]
    present = torch.tensor([p.grad is not None for p in parameters], dtype=dtype, device=device)
    return (torch.cat(pieces) if pieces else torch.zeros(0, device=device, dtype=dtype)), present


def set_gradients(module: nn.Module, flat: torch.Tensor, present: torch.Tensor) -> None:
    """Write ``flat`` back as the gradients (None for parameters no process had a gradient for)."""
    offset = 0
    for parameter, has in zip(module.parameters(), present.tolist()):
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).to(parameter.dtype).clone() if has else None
        offset += size
