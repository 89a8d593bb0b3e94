"""One training loop for every estimator, with callbacks and history."""

from ._device import resolve_device, resolve_dtype
from ._loop import Callback, History, LearningRateDecay, ProgressBar, TrainState, train

__all__ = ["Callback", "History", "LearningRateDecay", "ProgressBar", "TrainState", "resolve_device", "resolve_dtype", "train"]
