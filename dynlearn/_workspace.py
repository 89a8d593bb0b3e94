"""Large scratch buffers that a training loop keeps from one step to the next.

A fused solve (the latent SDE's whole Euler–Maruyama solve, for one) writes
the activations its backward pass reads into a few buffers over all steps,
tens of megabytes each on a wide network. Allocated afresh every training
step, such a buffer is memory the C allocator has just handed back to the
system, and writing it faults in every page again: 40,000 page faults and
about a sixth of an iteration for the latent SDE at (256, 256)
(``benchmarks/README.md``, "Scratch buffers kept between steps").

While a :class:`Workspace` is active (:func:`using`, which the training step
enters once per step, with one workspace per optimiser), :func:`scratch`
hands out a buffer of the shape asked for that it allocated in an earlier
step, once nothing but the workspace holds it: not handed out yet in this
step, and no saved tensor of a graph still alive and no view of it. The
last is read from the tensor's reference count (``Tensor._use_count``, a
private torch method, checked by ``tests/test_private_internals.py``),
which sees torch's references but not Python names; the names are the
solve's own during a step, hence the first condition. Where that method is
missing or does not count as expected, every buffer is allocated afresh, as
without a workspace. Outside an active workspace, :func:`scratch` is
``torch.empty``.

Only buffers a solve keeps to itself (saved for its backward pass, never
returned) may come from here: a buffer handed to the caller would be
written over by a later step while the caller still reads it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch

# Buffers of one shape kept at most: as many graphs as a step keeps alive at once (a loss of several draws).
_KEPT_PER_SHAPE = 4


def _counts_references() -> bool:
    """Whether ``Tensor._use_count`` counts what holds a tensor: its views and its other references."""
    try:
        buffer = torch.empty(2)
        alone = buffer._use_count()
        view = buffer[:1]
        viewed = buffer._use_count()
        del view
        other = buffer
        shared = buffer._use_count()
        del other
        return alone == 1 and viewed == 2 and shared == 1 and buffer._use_count() == 1
    except (AttributeError, RuntimeError, TypeError):
        return False


class Workspace:
    """Buffers by shape, dtype and device, each handed out again once nothing but the workspace holds it."""

    def __init__(self) -> None:
        self._kept: dict[tuple, list[torch.Tensor]] = {}
        self._taken: set[int] = set()  # ids of the buffers handed out in this step
        self.reuses = self.allocations = 0

    def begin_step(self) -> None:
        """A new step: every kept buffer nothing else holds may be handed out again."""
        self._taken.clear()

    def empty(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised buffer: a kept one nothing else holds, else a new one (kept while there is room)."""
        key = (tuple(shape), dtype, device)
        kept = self._kept.setdefault(key, [])
        if _REFERENCES_COUNTED:
            for buffer in kept:
                # 1: no view of it and no saved tensor holds it (Python names are not counted: see the notes).
                if id(buffer) not in self._taken and buffer._use_count() == 1:
                    self._taken.add(id(buffer))
                    self.reuses += 1
                    return buffer
        buffer = torch.empty(tuple(shape), dtype=dtype, device=device)
        self.allocations += 1
        if _REFERENCES_COUNTED and len(kept) < _KEPT_PER_SHAPE:
            kept.append(buffer)
            self._taken.add(id(buffer))
        return buffer

    def clear(self) -> None:
        """Let go of every kept buffer."""
        self._kept.clear()


_REFERENCES_COUNTED = _counts_references()
_ACTIVE: ContextVar[Workspace | None] = ContextVar("dynlearn_workspace", default=None)
_OWNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def workspace_of(owner: object) -> Workspace:
    """The workspace of ``owner`` (an optimiser): made on first use, gone with the owner."""
    workspace = _OWNED.get(owner)
    if workspace is None:
        workspace = _OWNED[owner] = Workspace()
    return workspace


@contextmanager
def using(workspace: Workspace) -> Iterator[Workspace]:
    """Make ``workspace`` the one :func:`scratch` draws from inside the block, one training step."""
    workspace.begin_step()
    token = _ACTIVE.set(workspace)
    try:
        yield workspace
    finally:
        _ACTIVE.reset(token)


def scratch(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised buffer in ``like``'s dtype and device: from the active workspace, else a new one."""
    workspace = _ACTIVE.get()
    if workspace is None:
        return like.new_empty(tuple(shape))
    return workspace.empty(shape, like.dtype, like.device)
