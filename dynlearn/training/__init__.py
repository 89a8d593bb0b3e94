"""One training loop for every estimator, with callbacks, history and checkpoints."""

from ._callbacks import CSVLogger, StepDecay
from ._checkpoint import Checkpoint
from ._device import resolve_device, resolve_dtype
from ._loop import SLOW_FIT_SECONDS, Callback, ChunkedData, History, LearningRateDecay, ProgressBar, TrainState, train
from ._threads import (
    PARALLEL_WORK,
    auto_threads,
    budget_active,
    largest_product,
    other_runnable,
    thread_budget,
    usable_cores,
)

__all__ = [
    "CSVLogger", "Callback", "Checkpoint", "ChunkedData", "History", "LearningRateDecay", "PARALLEL_WORK", "ProgressBar", "SLOW_FIT_SECONDS",
    "StepDecay", "TrainState", "auto_threads", "budget_active", "largest_product", "other_runnable", "resolve_device",
    "resolve_dtype", "thread_budget", "train", "usable_cores",
]  # fmt: skip
