"""Training state saved to disk atomically, and read back to resume."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..exceptions import CheckpointWarning, input_error
from ._distributed import is_main_process
from ._loop import Callback, TrainState, training_state

CHECKPOINT_FILE = "checkpoint.pt"
_TEMPORARY_PREFIX = ".checkpoint-"


class Checkpoint(Callback):
    """Save the training state to ``directory`` every ``every`` epochs and at the end of training.

    The file ``directory/checkpoint.pt`` holds everything a run needs to go
    on exactly where it stopped: module weights, optimizer state, the best
    weights and loss so far, the early-stopping counter (through
    ``best_epoch``), the history, every random stream training draws from,
    and the state of the other callbacks. It is written to a temporary file
    in the same directory, flushed to disk and renamed over the previous
    one, so a crash or a full disk never leaves a half-written checkpoint;
    a write that fails warns (:class:`~dynlearn.exceptions.CheckpointWarning`)
    and training goes on. The file holds tensors and plain containers only
    and is read with ``torch.load(weights_only=True)``, which runs no code.

    Estimators take it as ``checkpoint=Checkpoint(directory, every=...)``
    (``checkpoint=directory`` means ``every=1``), and a later ``fit`` with
    the same parameters and data resumes from the file. With
    :func:`dynlearn.training.train`, pass it last in ``callbacks`` and give
    :meth:`read`'s result as ``resume=``.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the checkpoint file lives; created when missing.
    every : int, default=1
        Save after every ``every``-th epoch (counted over the whole run). A
        killed run loses at most this many epochs of work.

    Examples
    --------
    >>> from dynlearn.training import Checkpoint
    >>> Checkpoint("runs/ode", every=5).path.name
    'checkpoint.pt'
    """

    def __init__(self, directory: str | os.PathLike, every: int = 1):
        if not isinstance(directory, (str, os.PathLike)):
            raise input_error("directory", "a path (str or os.PathLike)", repr(directory), "E.g. Checkpoint('runs/ode').")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise input_error("every", "a positive int", repr(every), "E.g. every=1 saves after each epoch.")
        self.directory = directory
        self.every = every
        self.context: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return Path(self.directory) / CHECKPOINT_FILE

    def with_context(self, context: Mapping[str, Any]) -> "Checkpoint":
        """A copy that also saves ``context`` (what the run is, to check on resume)."""
        bound = Checkpoint(self.directory, self.every)
        bound.context = dict(context)
        return bound

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0:
            self.save(state)

    def on_train_end(self, state: TrainState) -> None:
        if state.completed:
            self.save(state)

    def save(self, state: TrainState) -> None:
        """Write ``state`` (and the context) atomically; warn and keep the previous file if that fails.

        In data-parallel training only rank 0 writes: every process holds the same state.
        """
        if not is_main_process():
            return
        try:
            write_atomically({**self.context, **training_state(state)}, self.path)
        except OSError as error:
            warnings.warn(
                f"The checkpoint {self.path} could not be written ({error}); training goes on and the "
                "previous checkpoint is kept. Free disk space or choose another directory.",
                CheckpointWarning,
                stacklevel=2,
            )

    def read(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none; temporary files of interrupted writes are removed."""
        for stale in Path(self.directory).glob(_TEMPORARY_PREFIX + "*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise input_error(
                "checkpoint",
                "a checkpoint file written by dynlearn",
                f"{self.path}, which cannot be read ({type(error).__name__}: {error})",
                "Delete the file or choose another directory to start afresh.",
            ) from None

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, every={self.every})"


def write_atomically(payload: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    Readers see the old file or the new one, never a partial one; on any
    failure the temporary file is removed and the old file is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(dict(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; other systems do not open directories)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
