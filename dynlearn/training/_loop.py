"""The one training loop every estimator uses."""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..exceptions import ConvergenceWarning, IntegrationError, TrainingError

Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]

# An epoch counts as an improvement when the monitored loss drops by more
# than this fraction of the best loss so far.
RELATIVE_IMPROVEMENT = 1e-3


class History(list):
    """Per-epoch records (dicts) of a training run; ``to_frame()`` tabulates them."""

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self)).set_index("epoch") if self else pd.DataFrame()


class Callback:
    """Hooks into :func:`train`; every hook is a no-op unless overridden."""

    def on_train_begin(self, state: "TrainState") -> None:
        pass

    def on_epoch_end(self, state: "TrainState") -> None:
        pass

    def on_train_end(self, state: "TrainState") -> None:
        pass


class LearningRateDecay(Callback):
    """Decay the learning rate by ``decay`` per minibatch, never below ``floor`` times ``learning_rate``.

    The schedule of Rubanova et al. (2019): in epoch ``e`` (counted over warm
    starts too) the rate is ``learning_rate * decay ** ((e - 1) * n_batches)``,
    floored at ``floor * learning_rate``; it is set before the first epoch
    and after each one. ``decay=1`` keeps the rate constant.
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
            group["lr"] = self.rate(epoch)

    def on_train_begin(self, state: "TrainState") -> None:
        self.set_epoch(state, len(state.history) + 1)

    def on_epoch_end(self, state: "TrainState") -> None:
        self.set_epoch(state, state.epoch + 1)


@dataclass
class TrainState:
    """What callbacks see; setting ``stop`` ends training after this epoch.

    ``optimizer`` is the one being stepped: a callback may change its
    learning rates between epochs.
    """

    module: nn.Module
    history: History
    max_epochs: int
    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    stop: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = None


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
        Global gradient-norm clip.
    patience : int or None
        Stop after this many epochs without improvement of the monitored loss
        and restore the best weights; None trains for ``max_epochs`` (and
        still restores the best weights).
    generator : torch.Generator
        Source of minibatch order, so runs are reproducible without touching
        the global seed.
    verbose : int
        Show a progress bar when positive.
    epochs_name : str
        How the ``ConvergenceWarning`` names the epoch limit, for estimators
        whose stages derive it from their own ``max_epochs``.

    Raises
    ------
    TrainingError
        The loss or its gradients became non-finite; the best weights seen are
        restored first.
    IntegrationError
        A solve failed; the best weights seen are restored first.
    """
    history = history if history is not None else History()
    state = TrainState(module=module, history=history, max_epochs=max_epochs)
    optimizer = optimizer or torch.optim.AdamW(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    state.optimizer = optimizer
    callbacks = list(callbacks) + ([ProgressBar()] if verbose else [])
    n_train = _n_examples(train_data)
    best_weights = copy.deepcopy(module.state_dict())
    first_epoch = len(history) + 1
    for callback in callbacks:
        callback.on_train_begin(state)
    try:
        for epoch in range(first_epoch, first_epoch + max_epochs):
            state.epoch = epoch
            started = time.perf_counter()
            module.train()
            train_loss = _run_epoch(module, loss_fn, train_data, n_train, batch_size, optimizer, clip_grad_norm, generator, epoch)
            valid_loss = _evaluate(module, loss_fn, valid_data, batch_size) if valid_data is not None else math.nan
            monitored = valid_loss if valid_data is not None else train_loss
            if not math.isfinite(monitored):
                raise _Diverged(epoch, "validation loss" if valid_data is not None else "training loss")
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "duration": time.perf_counter() - started,
                }
            )
            if _improved(monitored, state.best_loss):
                state.best_loss, state.best_epoch = monitored, epoch
                best_weights = copy.deepcopy(module.state_dict())
            for callback in callbacks:
                callback.on_epoch_end(state)
            if patience is not None and epoch - state.best_epoch >= patience:
                state.stop = True
            if state.stop:
                break
    except _Diverged as diverged:
        module.load_state_dict(best_weights)
        raise TrainingError(
            f"Training diverged at epoch {diverged.epoch}: the {diverged.what} became non-finite. "
            f"The weights of the best epoch ({state.best_epoch or 'the initial weights'}) were restored. "
            "Try a smaller learning_rate, a tighter clip, standardize=True, or a smaller rtol."
        ) from None
    except IntegrationError:
        module.load_state_dict(best_weights)
        raise
    finally:
        for callback in callbacks:
            callback.on_train_end(state)
    module.load_state_dict(best_weights)
    module.eval()
    if not state.stop and patience is not None:
        warnings.warn(
            f"Training stopped at {epochs_name}={max_epochs} while the loss was still improving "
            f"(best at epoch {state.best_epoch}). Increase max_epochs or learning_rate.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return state


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
    data: Batch,
    n: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    clip_grad_norm: float | None,
    generator: torch.Generator | None,
    epoch: int,
) -> float:
    order = torch.randperm(n, generator=generator)
    total, seen = 0.0, 0
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(module, _slice(data, index))
        if not torch.isfinite(loss):
            raise _Diverged(epoch, "training loss")
        try:
            loss.backward()
        except AssertionError as error:  # torchdiffeq's adjoint pass asserts on failure
            raise IntegrationError(f"The adjoint solve failed during backpropagation: {error}.") from None
        if clip_grad_norm is not None and not _clip_gradients(module.parameters(), clip_grad_norm):
            raise _Diverged(epoch, "gradient norm")
        optimizer.step()
        total += float(loss.detach()) * len(index)
        seen += len(index)
    return total / seen


def _clip_gradients(parameters: Any, max_norm: float) -> bool:
    """Scale the gradients to a total norm of at most ``max_norm``; False if any entry is not finite.

    A gradient whose entries are all finite can still have a norm that
    overflows float32 (entries above about 1e19, which a stiff stretch of a
    solve produces in an otherwise healthy fit); its direction is then
    found after dividing by its largest entry, instead of reporting a
    divergence that did not happen.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return True
    grads = [p.grad for p in parameters]
    norm = nn.utils.get_total_norm(grads)
    if torch.isfinite(norm):
        nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
        return True
    largest = torch.stack([g.detach().abs().max() for g in grads]).max()
    if not torch.isfinite(largest):
        return False
    # The norm overflowed, so it is far above max_norm: scale to exactly max_norm.
    for g in grads:
        g.div_(largest)
    scaled = nn.utils.get_total_norm(grads)
    for g in grads:
        g.mul_(max_norm / scaled)
    return True


def _evaluate(module: nn.Module, loss_fn: LossFn, data: Batch, batch_size: int) -> float:
    module.eval()
    n = _n_examples(data)
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            total += float(loss_fn(module, _slice(data, index))) * len(index)
    return total / n
