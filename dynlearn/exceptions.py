"""Exceptions and warnings raised by dynlearn.

Every dynlearn error also subclasses the matching builtin, so code that
catches ``ValueError`` or ``RuntimeError`` keeps working.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning, NotFittedError

__all__ = [
    "DynlearnError",
    "InputError",
    "IntegrationError",
    "ModelFileError",
    "OptionalDependencyError",
    "TrainingError",
    "CheckpointWarning",
    "ConvergenceWarning",
    "DivergenceWarning",
    "ForecastRangeWarning",
    "NoImprovementWarning",
    "SlowFitWarning",
    "NotFittedError",
    "describe_problem",
]


class DynlearnError(Exception):
    """Base class of every error dynlearn raises on purpose."""


class InputError(DynlearnError, ValueError):
    """User input has the wrong shape, type or content."""


class IntegrationError(DynlearnError, RuntimeError):
    """A differential-equation solve failed or ran past its step limit."""


class ModelFileError(DynlearnError, ValueError):
    """A file is not a dynlearn model file, is damaged, or was written by a newer format version."""


class OptionalDependencyError(DynlearnError, ImportError):
    """An optional dependency is missing, broken or of a version that does not work."""


class TrainingError(DynlearnError, RuntimeError):
    """Training stopped because the loss or the gradients became non-finite."""


class DivergenceWarning(ConvergenceWarning):
    """Training ended with a training loss orders of magnitude above where it started.

    A subclass of scikit-learn's ``ConvergenceWarning`` (itself a
    ``UserWarning``): a fit that blew up has failed to converge, so filters
    and tests written for ``ConvergenceWarning`` see it too, while code that
    wants only this case can catch the subclass.
    """


class ForecastRangeWarning(UserWarning):
    """A prediction lies far outside the range of the data the model was fitted on.

    Raised when a forecast or simulation leaves the observed range of a
    feature by more than ten times that range's width: the learned dynamics
    diverge where they were never trained, so the values are not a forecast.
    """


class NoImprovementWarning(ConvergenceWarning):
    """Early stopping restored the weights of a run's first epoch: no later epoch improved on it.

    A subclass of scikit-learn's ``ConvergenceWarning``: the fit ran more
    epochs but the monitored loss was never lower than after the first, so
    the model returned is a one-epoch model.
    """


class SlowFitWarning(UserWarning):
    """A fit without a progress bar is projected, from its first epoch, to run for a long time.

    Raised once per training run after its first epoch when ``verbose=0``
    and the first epoch's duration times the run's epoch limit exceeds
    ``dynlearn.training.SLOW_FIT_SECONDS``. Silence it with
    ``warnings.filterwarnings("ignore", category=SlowFitWarning)`` or show
    progress with ``verbose=1``.
    """


class CheckpointWarning(UserWarning):
    """A training checkpoint could not be written; training went on and the previous checkpoint was kept."""


def describe_problem(argument: str, expected: str, received: str, fix: str) -> str:
    """The one message shape for input errors: argument, expected, received, fix."""
    return f"{argument}: expected {expected}; got {received}. {fix}"


def input_error(argument: str, expected: str, received: str, fix: str) -> InputError:
    return InputError(describe_problem(argument, expected, received, fix))
