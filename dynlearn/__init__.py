"""dynlearn: learn dynamical systems from time series with scikit-learn estimators.

The estimators wrap continuous-time models (neural ODEs and their
variants) integrated by torchdiffeq, and accept time series the way users
have them: long pandas frames with series ids and irregular times, or
arrays.
"""

from importlib.metadata import PackageNotFoundError, version

from .estimators import (
    HamiltonianNN,
    LagrangianNN,
    LatentODE,
    LatentODEClassifier,
    LatentSDE,
    NeuralODE,
    NeuralSDE,
    ODERNN,
    ODERNNClassifier,
)
from .exceptions import ConvergenceWarning, DynlearnError, InputError, IntegrationError, TrainingError
from .preprocessing import SeriesScaler

try:
    __version__ = version("dynlearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ConvergenceWarning",
    "DynlearnError",
    "HamiltonianNN",
    "InputError",
    "IntegrationError",
    "LagrangianNN",
    "LatentODE",
    "LatentODEClassifier",
    "LatentSDE",
    "NeuralODE",
    "NeuralSDE",
    "ODERNN",
    "ODERNNClassifier",
    "SeriesScaler",
    "TrainingError",
    "__version__",
]
