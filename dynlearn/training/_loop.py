"""The one training loop every estimator uses."""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..exceptions import (
    ConvergenceWarning,
    DivergenceWarning,
    IntegrationError,
    NoImprovementWarning,
    SlowFitWarning,
    TrainingError,
    input_error,
)
from ._distributed import DataParallel, data_parallel, flatten_gradients, is_main_process, set_gradients, sharded
from ._optim import adamw, clip_gradients, optimizer_step, stepped_parameters, zero_gradients

if TYPE_CHECKING:
    import pandas as pd

Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
WeightFn = Callable[[Batch], Any]

# An epoch counts as an improvement when the monitored loss drops by more
# than this fraction of the best loss so far.
RELATIVE_IMPROVEMENT = 1e-3

# A run without a progress bar whose first epoch, times its epoch limit, exceeds this many seconds says so.
SLOW_FIT_SECONDS = 60.0


def _clock() -> float:
    """Seconds on the loop's timer (one name, so tests can stand a fake clock in for it)."""
    return time.perf_counter()


class ChunkedData:
    """Examples loaded a chunk at a time, for data that do not fit in memory at once.

    ``load(k)`` returns chunk ``k`` (0 <= k < ``n_chunks``) as a dict of
    tensors with the examples on their first axis, like ``train_data``; a
    chunk may be empty. :func:`train` visits the chunks of a training epoch
    in an order drawn from ``order`` (a fixed one when None) and shuffles
    the examples within each chunk with its minibatch generator, so a
    minibatch never mixes two chunks. With a single chunk the chunk is kept
    after its first load and an epoch is the same as on ``load(0)`` in memory.
    ``chunks`` limits evaluation to some chunks (e.g. those holding the
    validation examples).
    """

    def __init__(self, load: Callable[[int], Batch], n_chunks: int, order: torch.Generator | None = None,
                 chunks: Sequence[int] | None = None):
        self.load, self.n_chunks, self.order = load, n_chunks, order
        self.chunks = list(range(n_chunks)) if chunks is None else list(chunks)
        self._kept: Batch | None = None
        self._sizes: tuple[list[int], int] | None = None

    def sizes(self) -> tuple[list[int], int]:
        """Examples in each chunk and the most values one example holds, from one read of the chunks (kept).

        What a minibatch size or a per-step schedule needs to know before
        training; with a single chunk the read is the one training keeps.
        """
        if self._sizes is None:
            counts, values = [], 1
            for chunk in self:
                counts.append(_n_examples(chunk) if chunk else 0)
                if chunk:
                    values = max(values, max(math.prod(t.shape[1:]) for t in chunk.values()))
            self._sizes = counts, values
        return self._sizes

    def _get(self, k: int) -> Batch:
        if self.n_chunks == 1:
            self._kept = self._kept if self._kept is not None else self.load(k)
            return self._kept
        return self.load(k)

    def __iter__(self) -> Any:
        for k in self.chunks:
            yield self._get(k)

    def shuffled(self) -> Any:
        """The chunks in an order drawn from ``order``."""
        if self.order is None or len(self.chunks) < 2:
            yield from self
            return
        for i in torch.randperm(len(self.chunks), generator=self.order).tolist():
            yield self._get(self.chunks[i])


class History(list):
    """Per-epoch records (dicts) of a training run; ``to_frame()`` tabulates them."""

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(list(self)).set_index("epoch") if self else pd.DataFrame()


class Callback:
    """Hooks into :func:`train`; every hook is a no-op unless overridden.

    Hooks, in the order the loop calls them:

    - ``on_train_begin(state)``: before the first epoch of a run (also of a
      run resumed from a checkpoint, with ``state.epoch`` the last epoch done).
    - ``on_batch_end(state, batch, loss)``: after each optimizer step, once
      per minibatch, with the minibatch (a dict of tensors) and its mean
      loss (a float). The loop looks for this hook once per epoch, so
      callbacks that do not override it cost nothing per minibatch.
    - ``on_epoch_end(state)``: after each epoch, once its record is in
      ``state.history`` and early stopping has decided ``state.stop``; setting
      ``state.stop = True`` ends training after this epoch, and a change to
      ``state.optimizer``'s learning rates applies to the next epoch.
    - ``on_train_end(state)``: once, however the run ends: ``state.completed``
      after a normal end (the best weights restored), ``state.interrupted``
      after a ``KeyboardInterrupt``; after a failure both are False.
    - ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint saves
      of the callback and gives back on resume (a dict of tensors, numbers,
      strings, lists and dicts); the default saves nothing.

    Examples
    --------
    >>> from dynlearn.training import Callback
    >>> class StopBelow(Callback):
    ...     def __init__(self, threshold):
    ...         self.threshold = threshold
    ...     def on_epoch_end(self, state):
    ...         state.stop = state.stop or state.history[-1]["train_loss"] < self.threshold
    """

    def on_train_begin(self, state: "TrainState") -> None:
        pass

    def on_batch_end(self, state: "TrainState", batch: Batch, loss: float) -> None:
        pass

    def on_epoch_end(self, state: "TrainState") -> None:
        pass

    def on_train_end(self, state: "TrainState") -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class LearningRateDecay(Callback):
    """Decay the learning rate by ``decay`` per minibatch, never below ``floor`` times ``learning_rate``.

    The schedule of Rubanova et al. (2019): in epoch ``e`` (counted over warm
    starts too) the rate is ``learning_rate * decay ** ((e - 1) * n_batches)``,
    floored at ``floor * learning_rate``; it is set before the first epoch
    and after each one. ``decay=1`` keeps the rate constant. A parameter
    group with an ``lr_scale`` entry gets that multiple of the rate.
    """

    def __init__(self, learning_rate: float, decay: float, n_batches: int, floor: float = 0.1):
        self.learning_rate = learning_rate
        self.decay = decay
        self.n_batches = n_batches
        self.floor = floor

    def rate(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based)."""
        return max(self.learning_rate * self.decay ** ((epoch - 1) * self.n_batches), self.floor * self.learning_rate)

    def set_epoch(self, state: "TrainState", epoch: int) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] = self.rate(epoch) * group.get("lr_scale", 1.0)

    def on_train_begin(self, state: "TrainState") -> None:
        self.set_epoch(state, state.epoch + 1)

    def on_epoch_end(self, state: "TrainState") -> None:
        self.set_epoch(state, state.epoch + 1)


@dataclass
class TrainState:
    """What callbacks see; setting ``stop`` ends training after this epoch.

    ``optimizer`` is the one being stepped: a callback may change its
    learning rates between epochs. ``epoch`` is the epoch being trained (the
    last one done, in ``on_train_begin``); ``first_epoch`` is the first epoch
    of this run (epochs count on over warm starts). ``best_weights`` is a
    copy of the module's ``state_dict`` at ``best_epoch``.
    ``random_streams`` are the generators training draws from (saved and
    restored by a checkpoint), ``callbacks`` every callback of the run.
    ``loss_fn`` and ``train_data`` are what the run minimises and over which
    examples, so a callback can evaluate or time :func:`train_step` on them.
    """

    module: nn.Module
    history: History
    max_epochs: int
    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    stop: bool = False
    optimizer: torch.optim.Optimizer | None = None
    first_epoch: int = 1
    best_weights: dict[str, torch.Tensor] | None = None
    random_streams: dict[str, torch.Generator] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    completed: bool = False
    interrupted: bool = False
    loss_fn: LossFn | None = None
    train_data: Batch | None = None

    @property
    def last_epoch(self) -> int:
        """The epoch at which this run ends unless it stops early."""
        return self.first_epoch + self.max_epochs - 1


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the latest losses."""

    def on_train_begin(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_epochs, unit="epoch", leave=False)

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history[-1]
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k.endswith("loss") and np.isfinite(v)})
        self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


def train(
    module: nn.Module,
    loss_fn: LossFn,
    train_data: Batch,
    *,
    valid_data: Batch | None = None,
    max_epochs: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    clip_grad_norm: float | None = 1.0,
    patience: int | None = 10,
    generator: torch.Generator | None = None,
    verbose: int = 0,
    callbacks: Sequence[Callback] = (),
    history: History | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    epochs_name: str = "max_epochs",
    random_streams: Mapping[str, torch.Generator] | None = None,
    resume: Mapping[str, Any] | None = None,
    batch_weight: WeightFn | None = None,
) -> TrainState:
    """Fit ``module`` by minimising ``loss_fn`` over minibatches of ``train_data``.

    Parameters
    ----------
    module : nn.Module
        Trained in place; on return it holds the weights of the best epoch.
    loss_fn : callable ``(module, batch) -> scalar Tensor``
        Mean loss of a batch (a dict of tensors sliced along their first axis).
    train_data, valid_data : dict of str to Tensor
        Tensors with the examples on their first axis, already on the
        module's device. Without ``valid_data`` the training loss is monitored.
    max_epochs, batch_size, learning_rate, weight_decay :
        Optimisation settings (AdamW; ``weight_decay=0`` is Adam).
    clip_grad_norm : float or None
        Clip of the global norm of the gradients the optimiser steps.
    patience : int or None
        Stop after this many epochs without improvement of the monitored loss
        and restore the best weights; None trains for ``max_epochs`` (and
        still restores the best weights).
    generator : torch.Generator
        Source of minibatch order, so runs are reproducible without touching
        the global seed.
    verbose : int
        Show a progress bar when positive.
    callbacks : sequence of Callback
        Called in order at each hook (a :class:`Checkpoint` goes last, so it
        saves what the others set).
    epochs_name : str
        How the ``ConvergenceWarning`` names the epoch limit, for estimators
        whose stages derive it from their own ``max_epochs``.
    random_streams : dict of str to torch.Generator, default=None
        Other generators ``loss_fn`` draws from (noise, subsets), saved by a
        checkpoint with the minibatch generator and restored on resume.
    resume : dict, default=None
        A state written by :class:`Checkpoint` for this same run: training
        goes on from it (weights, optimizer, history, random streams,
        callbacks) as if it had never stopped; a state written at the end of
        a run restores its result without training.
    batch_weight : callable ``batch -> number``, default=None
        What ``loss_fn``'s mean of a batch divides by (the observed entries
        it averages over, say); None means the number of examples. Used in
        data-parallel training only, where each process's share of a batch
        weighs by it, so that the gradient is that of the whole batch.

    Raises
    ------
    TrainingError
        The loss or its gradients became non-finite; the best weights seen are
        restored first.
    IntegrationError
        A solve failed; the best weights seen are restored first.
    KeyboardInterrupt
        Re-raised after restoring the best weights seen and switching the
        module to eval mode (``on_train_end`` sees ``state.interrupted``).

    Warns
    -----
    ConvergenceWarning
        ``max_epochs`` ended training while the monitored loss still improved.
    DivergenceWarning
        The last training loss is orders of magnitude above the first one.
    NoImprovementWarning
        The run trained more than one epoch but its first epoch stayed the
        best, so the weights of that epoch were restored.
    SlowFitWarning
        With ``verbose=0``, the first epoch's duration times ``max_epochs``
        exceeds ``SLOW_FIT_SECONDS`` (said once, after the first epoch).

    Notes
    -----
    When a ``torch.distributed`` process group of two or more processes is
    initialised (as :func:`torch.distributed.init_process_group` under
    ``torchrun`` does), every process must call ``train`` with the same
    data: rank 0's weights and random streams are sent to all, each global
    minibatch is split into one slice of examples per process, gradients
    and losses are summed across processes, and every process ends with the
    same weights and history. Checkpoints and the progress bar are rank 0's.
    """
    history = history if history is not None else History()
    group = data_parallel()
    if group is not None:
        group.broadcast_module(module)
    optimizer = optimizer or adamw(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    streams = ({"minibatch": generator} if generator is not None else {}) | dict(random_streams or {})
    state = TrainState(
        module=module,
        history=history,
        max_epochs=max_epochs,
        epoch=len(history),
        first_epoch=len(history) + 1,
        optimizer=optimizer,
        best_weights=copy.deepcopy(module.state_dict()),
        random_streams=streams,
        callbacks=list(callbacks) + ([ProgressBar()] if verbose and is_main_process() else []),
        loss_fn=loss_fn,
        train_data=train_data,
    )
    if group is not None:
        group.broadcast_generators(state.random_streams, src=0)
    if resume is not None:
        load_training_state(state, resume)
        if state.completed:
            module.eval()
            return state
    n_train = _n_examples(train_data) if not isinstance(train_data, ChunkedData) else 0
    if group is not None:
        if isinstance(train_data, ChunkedData):
            raise input_error(
                "train_data", "examples in memory for a data-parallel run", "a chunked (streamed) dataset",
                "Stream a Parquet dataset in one process, or read it into memory (pandas.read_parquet) for torchrun.",
            )  # fmt: skip
        group.check_same_size(n_train)
    for callback in state.callbacks:
        callback.on_train_begin(state)
    try:
        while not state.stop and state.epoch < state.last_epoch:
            _train_epoch(
                state, loss_fn, train_data, valid_data, n_train, batch_size, clip_grad_norm, patience, group, batch_weight
            )
            if state.epoch == state.first_epoch and not verbose:
                _warn_if_slow(state, epochs_name, patience)
    except BaseException as error:
        module.load_state_dict(state.best_weights)
        module.eval()
        state.interrupted = isinstance(error, KeyboardInterrupt)
        _end(state)
        if isinstance(error, _Diverged):
            raise TrainingError(
                f"Training diverged at epoch {error.epoch}: the {error.what} became non-finite. "
                f"The weights of the best epoch ({state.best_epoch or 'the initial weights'}) were restored. "
                "Try a smaller learning_rate, a tighter clip, standardize=True, or a smaller rtol."
            ) from None
        raise
    module.load_state_dict(state.best_weights)
    module.eval()
    state.completed = True
    _end(state)
    if not state.stop and patience is not None:
        warnings.warn(
            f"Training stopped at {epochs_name}={max_epochs} while the loss was still improving "
            f"(best at epoch {state.best_epoch} of the {len(state.history)} in history_, counting any earlier "
            "training stages). Increase max_epochs or learning_rate.",
            ConvergenceWarning,
            stacklevel=3,
        )
    _warn_if_diverged(state)
    _warn_if_never_improved(state, patience)
    return state


def _train_epoch(
    state: TrainState,
    loss_fn: LossFn,
    train_data: Batch,
    valid_data: Batch | None,
    n_train: int,
    batch_size: int,
    clip_grad_norm: float | None,
    patience: int | None,
    group: DataParallel | None = None,
    batch_weight: WeightFn | None = None,
) -> None:
    """One epoch: train, validate, record, keep the best weights, decide on stopping, call the callbacks."""
    module, epoch = state.module, state.epoch + 1
    state.epoch = epoch
    started = _clock()
    module.train()
    generator = state.random_streams.get("minibatch")
    on_batch = [c for c in state.callbacks if type(c).on_batch_end is not Callback.on_batch_end]
    shards = None if group is None else _Shards(group, batch_weight, {
        k: g for k, g in state.random_streams.items() if g is not generator})  # fmt: skip
    train_loss = _run_epoch(
        module, loss_fn, train_data, n_train, batch_size, state.optimizer, clip_grad_norm, generator, epoch,
        state, on_batch, shards,
    )  # fmt: skip
    if group is None:
        valid_loss = _evaluate(module, loss_fn, valid_data, batch_size) if valid_data is not None else math.nan
    else:
        valid_loss = (
            _evaluate_sharded(module, loss_fn, valid_data, batch_size, group, batch_weight)
            if valid_data is not None
            else math.nan
        )
    monitored = valid_loss if valid_data is not None else train_loss
    if not math.isfinite(monitored):
        raise _Diverged(epoch, "validation loss" if valid_data is not None else "training loss")
    state.history.append(
        {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "duration": _clock() - started}
    )
    if _improved(monitored, state.best_loss):
        state.best_loss, state.best_epoch = monitored, epoch
        state.best_weights = copy.deepcopy(module.state_dict())
    # Decided before the callbacks run, so a checkpoint written by one of them records it.
    if patience is not None and epoch - state.best_epoch >= patience:
        state.stop = True
    for callback in state.callbacks:
        callback.on_epoch_end(state)


def _end(state: TrainState) -> None:
    for callback in state.callbacks:
        callback.on_train_end(state)


# A run whose last training loss exceeds its first by more than this many times the first's size has blown up.
DIVERGENCE_FACTOR = 100.0


def _warn_if_diverged(state: TrainState) -> None:
    run = [r for r in state.history if r["epoch"] >= state.first_epoch]
    if len(run) < 2:
        return
    first, last = run[0]["train_loss"], run[-1]["train_loss"]
    if last - first > DIVERGENCE_FACTOR * max(abs(first), 1e-12):
        warnings.warn(
            f"The training loss rose from {first:.4g} (epoch {run[0]['epoch']}) to {last:.4g} (epoch "
            f"{run[-1]['epoch']}): training diverged. The weights of the best epoch ({state.best_epoch}) were kept. "
            "Lower learning_rate (by a factor of 10 to start with), or use standardize=True.",
            DivergenceWarning,
            stacklevel=3,
        )


def _warn_if_never_improved(state: TrainState, patience: int | None) -> None:
    """Warn when the weights restored are those of the run's first epoch although later epochs ran."""
    ran = state.epoch - state.first_epoch + 1
    if ran < 2 or state.best_epoch != state.first_epoch:
        return
    stopped = f"early stopping (patience={patience}) ended it" if state.stop else "it ran to its epoch limit"
    warnings.warn(
        f"Training never improved on its first epoch: {ran} epochs ran, {stopped}, and the weights of epoch "
        f"{state.best_epoch} (the best monitored loss, {state.best_loss:.4g}) were restored. The model is a "
        "one-epoch model. Try a lower learning_rate (by a factor of 10 to start with), more series or longer "
        "ones, or check the scaling of values and times (standardize=True).",
        NoImprovementWarning,
        stacklevel=4,
    )


def _warn_if_slow(state: TrainState, epochs_name: str, patience: int | None) -> None:
    """After a run's first epoch: warn when that epoch's duration times the epoch limit is long."""
    seconds = state.history[-1]["duration"]
    projected = seconds * state.max_epochs
    if projected <= SLOW_FIT_SECONDS:
        return
    early = f"; early stopping (patience={patience}) may end it sooner" if patience is not None else ""
    warnings.warn(
        f"This fit is projected to take about {_duration(projected)}: its first epoch took {seconds:.3g} s and "
        f"{epochs_name}={state.max_epochs}{early}. To shorten it lower {epochs_name} or patience, or raise "
        "batch_size (fewer, larger minibatches); verbose=1 shows a progress bar instead of this message, and "
        'warnings.filterwarnings("ignore", category=dynlearn.exceptions.SlowFitWarning) silences it.',
        SlowFitWarning,
        stacklevel=4,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------- saved state
def training_state(state: TrainState) -> dict[str, Any]:
    """What resumes ``state``'s run: a dict of tensors and plain containers (loadable with ``weights_only=True``)."""
    return {
        "module": state.module.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "best_weights": state.best_weights,
        "history": [{k: _plain(v) for k, v in record.items()} for record in state.history],
        "epoch": state.epoch,
        "first_epoch": state.first_epoch,
        "best_loss": float(state.best_loss),
        "best_epoch": state.best_epoch,
        "stop": state.stop,
        "completed": state.completed,
        "random_streams": {name: g.get_state() for name, g in state.random_streams.items()},
        "callbacks": {_callback_key(i, c): c.state_dict() for i, c in enumerate(state.callbacks)},
    }


def load_training_state(state: TrainState, saved: Mapping[str, Any]) -> None:
    """Put ``state`` (module, optimizer, history, streams, callbacks included) back where ``saved`` left it."""
    missing = sorted(set(state.random_streams) - set(saved["random_streams"]))
    if missing:
        raise ValueError(f"The saved training state has no random streams {missing}; it is from another kind of run.")
    state.module.load_state_dict(saved["module"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.best_weights = saved["best_weights"]
    state.history[:] = [dict(record) for record in saved["history"]]
    state.epoch, state.first_epoch = saved["epoch"], saved["first_epoch"]
    state.best_loss, state.best_epoch = saved["best_loss"], saved["best_epoch"]
    state.stop, state.completed = saved["stop"], saved["completed"]
    for name, generator in state.random_streams.items():
        generator.set_state(saved["random_streams"][name])
    for i, callback in enumerate(state.callbacks):
        key = _callback_key(i, callback)
        if key in saved["callbacks"]:
            callback.load_state_dict(saved["callbacks"][key])


def _callback_key(index: int, callback: Callback) -> str:
    return f"{index}:{type(callback).__qualname__}"


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, so a saved history loads without unpickling numpy."""
    return value.item() if isinstance(value, np.generic) else value


def _improved(loss: float, best: float) -> bool:
    return not math.isfinite(best) or loss < best - RELATIVE_IMPROVEMENT * abs(best)


class _Diverged(Exception):
    def __init__(self, epoch: int, what: str):
        self.epoch, self.what = epoch, what


def _n_examples(data: Batch) -> int:
    sizes = {v.shape[0] for v in data.values()}
    if len(sizes) != 1:
        raise ValueError(f"train_data tensors disagree on the number of examples: {sorted(sizes)}")
    return sizes.pop()


def _slice(data: Batch, index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.index_select(0, index.to(v.device)) for k, v in data.items()}


def _run_epoch(
    module: nn.Module,
    loss_fn: LossFn,
    data: Batch | ChunkedData,
    n: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    clip_grad_norm: float | None,
    generator: torch.Generator | None,
    epoch: int,
    state: TrainState,
    on_batch: list[Callback],
    shards: _Shards | None = None,
) -> float:
    """One pass over ``data`` in minibatches of a seeded order; the mean training loss.

    With ``shards`` (a data-parallel run) each global minibatch is split
    across the processes and every process takes the same step; step hooks
    see the whole global minibatch and its loss, as in a single-process run.
    """
    if isinstance(data, ChunkedData):
        total, seen = 0.0, 0
        for chunk in data.shuffled():
            size = _n_examples(chunk) if chunk else 0
            if size:
                loss = _run_epoch(
                    module, loss_fn, chunk, size, batch_size, optimizer, clip_grad_norm, generator, epoch, state, on_batch
                )  # a streamed dataset is refused in a data-parallel run, so there are no shards here
                total, seen = total + loss * size, seen + size
        if not seen:
            raise ValueError("train_data has no examples in any chunk")
        return total / seen
    order = torch.randperm(n, generator=generator)  # the same order everywhere: the generators were synchronised
    if shards is not None and generator is None:  # drawn from each process's global generator: take rank 0's
        shards.group.broadcast_tensor(order, src=0)
    total, seen = 0.0, 0
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if shards is None:
            batch = _slice(data, index)
            loss = _step(module, loss_fn, batch, optimizer, clip_grad_norm, epoch)
        else:
            loss = shards.step(module, loss_fn, data, index, optimizer, clip_grad_norm, epoch)
            batch = _slice(data, index) if on_batch else None
        for callback in on_batch:
            callback.on_batch_end(state, batch, loss)
        total += loss * len(index)
        seen += len(index)
    return total / seen


def train_step(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    clip_grad_norm: float | None = 1.0,
) -> float:
    """One optimisation step on one minibatch, exactly as :func:`train` takes it.

    Zero the gradients, evaluate ``loss_fn(module, batch)``, backpropagate,
    clip the global norm of the gradients ``optimizer`` steps, step
    ``optimizer``. ``module`` is left in the mode it is in (``train`` puts
    it in training mode first).

    Parameters
    ----------
    module : nn.Module
        The model whose parameters ``optimizer`` updates, in place.
    loss_fn : callable ``(module, batch) -> scalar Tensor``
        Mean loss of the minibatch.
    batch : dict of str to Tensor
        One minibatch, on the module's device.
    optimizer : torch.optim.Optimizer
        Steps the parameters once.
    clip_grad_norm : float or None, default=1.0
        Clip of the global norm of the gradients ``optimizer`` steps (None:
        no clip). Parameters it does not step are left as they are.

    Returns
    -------
    float
        The minibatch's loss before the step.

    Raises
    ------
    TrainingError
        The loss or the gradient norm is not finite (the step is not taken).
    IntegrationError
        The adjoint solve failed during backpropagation.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.training import train_step
    >>> module = torch.nn.Linear(2, 1)
    >>> batch = {"x": torch.ones(4, 2), "y": torch.zeros(4, 1)}
    >>> loss_fn = lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean()
    >>> optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    >>> first = train_step(module, loss_fn, batch, optimizer)
    >>> train_step(module, loss_fn, batch, optimizer) < first
    True
    """
    try:
        return _step(module, loss_fn, batch, optimizer, clip_grad_norm, epoch=0)
    except _Diverged as error:
        raise TrainingError(
            f"The {error.what} of this step is not finite, so the step was not taken. "
            "Try a smaller learning rate, a tighter clip_grad_norm, or check the batch for non-finite values."
        ) from None


def _step(
    module: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    clip_grad_norm: float | None,
    epoch: int,
) -> float:
    parameters = stepped_parameters(optimizer)
    zero_gradients(optimizer, parameters)
    loss = loss_fn(module, batch)
    value = float(loss.detach())  # one read of the scalar; torch.isfinite would be two more operations a step
    if not math.isfinite(value):
        raise _Diverged(epoch, "training loss")
    try:
        loss.backward()
    except AssertionError as error:  # torchdiffeq's adjoint pass asserts on failure
        raise IntegrationError(f"The adjoint solve failed during backpropagation: {error}.") from None
    if clip_grad_norm is not None and not clip_gradients(parameters, clip_grad_norm):
        raise _Diverged(epoch, "gradient norm")
    optimizer_step(optimizer)
    return value


@dataclass
class _Shards:
    """How a data-parallel run splits each global minibatch: its process group, slice weights and other streams."""

    group: DataParallel
    batch_weight: WeightFn | None
    streams: Mapping[str, torch.Generator]

    def step(self, module: nn.Module, loss_fn: LossFn, data: Batch, index: torch.Tensor,
             optimizer: torch.optim.Optimizer, clip_grad_norm: float | None, epoch: int) -> float:
        """:func:`_step` on the global minibatch ``index``, each process computing its slice's gradient."""
        parameters = stepped_parameters(optimizer)
        zero_gradients(optimizer, parameters)
        loss = _shared_gradient_step(module, loss_fn, data, index, self.group, self.batch_weight, epoch)
        if clip_grad_norm is not None and not clip_gradients(parameters, clip_grad_norm):
            raise _Diverged(epoch, "gradient norm")
        optimizer_step(optimizer)
        # Draws not made through draw_rows depend on each process's share; the last rank always has one.
        self.group.broadcast_generators(self.streams, src=self.group.world_size - 1)
        return loss


def _shared_gradient_step(
    module: nn.Module,
    loss_fn: LossFn,
    data: Batch,
    index: torch.Tensor,
    group: DataParallel,
    batch_weight: WeightFn | None,
    epoch: int,
) -> float:
    """Backpropagate this process's share of the batch ``index`` and leave the whole batch's gradient.

    Each share's mean loss is weighted by what it averages over (its
    ``batch_weight``), so the summed, reweighted gradients are those of the
    batch's mean loss. A failure on any process (non-finite loss, failed
    adjoint solve) is raised on all of them, so none waits forever.
    """
    rows = group.rows(len(index))
    local = index[rows]
    weight, loss_value, failure = 0.0, 0.0, ""
    if len(local):
        with sharded(data, index, rows):
            share = _slice(data, local)
            weight = float(batch_weight(share)) if batch_weight is not None else float(len(local))
            try:
                loss = loss_fn(module, share)
                if torch.isfinite(loss):
                    loss.backward()
                    loss_value = float(loss.detach())
                else:
                    loss_value = math.nan
            except AssertionError as error:  # torchdiffeq's adjoint pass asserts on failure
                failure = f"The adjoint solve failed during backpropagation: {error}."
            except IntegrationError as error:
                failure = str(error)
    flat, present = flatten_gradients(module, weight)
    tail = torch.tensor([loss_value * weight, weight, float(bool(failure))], dtype=flat.dtype, device=flat.device)
    reduced = group.all_sum(torch.cat([flat, present, tail]))
    loss_sum, total_weight, failed = (float(v) for v in reduced[-3:])
    if failed:
        raise IntegrationError(failure or "A solve failed on another process of the data-parallel run.")
    if not math.isfinite(loss_sum):
        raise _Diverged(epoch, "training loss")
    scale = 1.0 / total_weight if total_weight > 0 else 0.0
    set_gradients(module, reduced[: flat.numel()] * scale, reduced[flat.numel() : -3])
    return loss_sum * scale


def _evaluate_sharded(
    module: nn.Module, loss_fn: LossFn, data: Batch, batch_size: int, group: DataParallel, batch_weight: WeightFn | None
) -> float:
    """:func:`_evaluate` with each batch split across ``group``; every process gets the same figure."""
    module.eval()
    n = _n_examples(data)
    starts = range(0, n, batch_size)
    shares = torch.zeros(2 * len(starts) + 1, dtype=torch.float64)  # the last entry counts failed solves
    failure = ""
    with torch.no_grad():
        for i, start in enumerate(starts):
            index = torch.arange(start, min(start + batch_size, n))
            rows = group.rows(len(index))
            local = index[rows]
            if not len(local):
                continue
            with sharded(data, index, rows):
                share = _slice(data, local)
                weight = float(batch_weight(share)) if batch_weight is not None else float(len(local))
                try:
                    shares[2 * i] = float(loss_fn(module, share)) * weight
                except IntegrationError as error:
                    failure, shares[-1] = str(error), 1.0
                    break
                shares[2 * i + 1] = weight
    reduced = group.all_sum(shares)
    if reduced[-1] > 0:
        raise IntegrationError(failure or "A solve failed on another process of the data-parallel run.")
    reduced = reduced[:-1].view(-1, 2)
    sizes = torch.tensor([min(start + batch_size, n) - start for start in starts], dtype=torch.float64)
    losses = torch.where(reduced[:, 1] > 0, reduced[:, 0] / reduced[:, 1].clamp_min(1e-300), torch.zeros(()))
    return float((losses * sizes).sum()) / n


def _evaluate(module: nn.Module, loss_fn: LossFn, data: Batch | ChunkedData, batch_size: int) -> float:
    if isinstance(data, ChunkedData):
        total, seen = 0.0, 0
        for chunk in data:
            size = _n_examples(chunk) if chunk else 0
            if size:
                total, seen = total + _evaluate(module, loss_fn, chunk, batch_size) * size, seen + size
        return total / seen if seen else math.nan
    module.eval()
    n = _n_examples(data)
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            total += float(loss_fn(module, _slice(data, index))) * len(index)
    return total / n
