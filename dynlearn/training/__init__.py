"""One training loop for every estimator, with callbacks, history and checkpoints."""

from ._batch import BASE_BATCH_SIZE, auto_batch_size
from ._callbacks import CSVLogger, StepDecay
from ._checkpoint import Checkpoint
from ._device import resolve_device, resolve_dtype
from ._distributed import agree_on_seed, current_shard, draw_rows, is_main_process, prepare_process_group, whole_batch
from ._loop import (
    SLOW_FIT_SECONDS,
    Callback,
    ChunkedData,
    History,
    LearningRateDecay,
    ProgressBar,
    TrainState,
    train,
    train_step,
)
from ._optim import adamw
from ._threads import (
    PARALLEL_WORK,
    auto_threads,
    budget_active,
    caller_threads,
    dask_task_threads,
    largest_product,
    other_runnable,
    thread_budget,
    usable_cores,
)

__all__ = [
    "BASE_BATCH_SIZE", "CSVLogger", "Callback", "Checkpoint", "ChunkedData", "History", "LearningRateDecay",
    "PARALLEL_WORK", "ProgressBar", "SLOW_FIT_SECONDS", "StepDecay", "TrainState", "adamw", "agree_on_seed",
    "auto_batch_size", "auto_threads", "budget_active", "caller_threads", "current_shard", "dask_task_threads",
    "draw_rows", "is_main_process", "largest_product", "other_runnable", "prepare_process_group", "resolve_device",
    "resolve_dtype", "thread_budget", "train", "train_step", "usable_cores", "whole_batch",
]  # fmt: skip
