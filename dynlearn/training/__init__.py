"""One training loop for every estimator, with callbacks and history."""

from ._device import resolve_device, resolve_dtype
from ._loop import Callback, History, ProgressBar, TrainState, train

__all__ = ["Callback", "History", "ProgressBar", "TrainState", "resolve_device", "resolve_dtype", "train"]
