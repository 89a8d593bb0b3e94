"""One training loop for every estimator, with callbacks, history and checkpoints."""

from ._callbacks import CSVLogger, StepDecay
from ._checkpoint import Checkpoint
from ._device import resolve_device, resolve_dtype
from ._loop import Callback, History, LearningRateDecay, ProgressBar, TrainState, train

__all__ = [
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "History",
    "LearningRateDecay",
    "ProgressBar",
    "StepDecay",
    "TrainState",
    "resolve_device",
    "resolve_dtype",
    "train",
]
