"""Public callbacks: a learning-rate schedule and a CSV logger."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ..exceptions import input_error
from ._distributed import is_main_process
from ._loop import Callback, TrainState


class StepDecay(Callback):
    """Multiply the learning rate by ``factor`` every ``every`` epochs.

    Epoch ``e`` (counted over warm starts and resumes, like the history)
    trains at ``learning_rate * factor ** ((e - 1) // every)``, where
    ``learning_rate`` is the rate the optimizer was built with. The rate is
    set before each epoch, so it replaces an estimator's own per-epoch
    schedule (``learning_rate_decay``) when both are used. It depends on the
    epoch alone, so a resumed fit continues the same schedule.

    Parameters
    ----------
    every : int, default=10
        Epochs between two decays.
    factor : float, default=0.5
        What the rate is multiplied by, in (0, 1].

    Examples
    --------
    >>> from dynlearn import NeuralODE
    >>> from dynlearn.training import StepDecay
    >>> model = NeuralODE(callbacks=[StepDecay(every=20, factor=0.3)])
    """

    def __init__(self, every: int = 10, factor: float = 0.5):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise input_error("every", "a positive int", repr(every), "E.g. every=10.")
        if not isinstance(factor, (int, float)) or not 0 < factor <= 1:
            raise input_error("factor", "a number in (0, 1]", repr(factor), "E.g. factor=0.5 halves the rate.")
        self.every = every
        self.factor = factor

    def rate(self, base: float, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based) for an optimizer built with rate ``base``."""
        return base * self.factor ** ((epoch - 1) // self.every)

    def _set(self, state: TrainState, epoch: int) -> None:
        base = state.optimizer.defaults["lr"]
        for group in state.optimizer.param_groups:
            group["lr"] = self.rate(base, epoch) * group.get("lr_scale", 1.0)

    def on_train_begin(self, state: TrainState) -> None:
        self._set(state, state.epoch + 1)

    def on_epoch_end(self, state: TrainState) -> None:
        self._set(state, state.epoch + 1)

    def __repr__(self) -> str:
        return f"StepDecay(every={self.every}, factor={self.factor})"


class CSVLogger(Callback):
    """Write the training history to a CSV file, one row per epoch, as training goes.

    At the start of each run the file is rewritten with the history so far
    (earlier warm starts, or the epochs a resumed fit restored), then each
    epoch appends its row and flushes it, so the file can be watched during
    training and never holds rows of epochs a resumed fit trained again.
    In data-parallel training only rank 0 writes (every process has the
    same history).

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file; its directory must exist.
    columns : tuple of str, default=("epoch", "train_loss", "valid_loss", "duration")
        Which fields of each history record to write.

    Examples
    --------
    >>> from dynlearn import NeuralODE
    >>> from dynlearn.training import CSVLogger
    >>> model = NeuralODE(callbacks=[CSVLogger("history.csv")])
    """

    def __init__(
        self, path: str | os.PathLike, columns: tuple[str, ...] = ("epoch", "train_loss", "valid_loss", "duration")
    ):
        if not isinstance(path, (str, os.PathLike)):
            raise input_error("path", "a path (str or os.PathLike)", repr(path), "E.g. CSVLogger('history.csv').")
        self.path = path
        self.columns = tuple(columns)

    def on_train_begin(self, state: TrainState) -> None:
        if not is_main_process():
            return
        with open(Path(self.path), "w", newline="") as handle:
            writer = self._writer(handle)
            writer.writeheader()
            writer.writerows(state.history)

    def on_epoch_end(self, state: TrainState) -> None:
        if not is_main_process():
            return
        with open(Path(self.path), "a", newline="") as handle:
            self._writer(handle).writerow(state.history[-1])

    def _writer(self, handle: Any) -> csv.DictWriter:
        return csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")

    def __repr__(self) -> str:
        return f"CSVLogger({str(self.path)!r})"
