"""dynlearn: learn dynamical systems from time series with scikit-learn estimators.

The estimators wrap continuous-time models (neural ODEs and their
variants) integrated by torchdiffeq, and accept time series the way users
have them: long pandas frames with series ids and irregular times, or
arrays.

Names are imported on first use (PEP 562), so ``import dynlearn`` and
``dynlearn --help`` do not wait for torch and scikit-learn.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._auto import AutoForecaster, LastValueForecaster, SeasonalNaiveForecaster
    from ._ensemble import SeedEnsemble
    from ._persistence import load
    from .estimators import (
        HamiltonianNN,
        LagrangianNN,
        LatentODE,
        LatentODEClassifier,
        LatentSDE,
        NeuralCDE,
        NeuralCDEClassifier,
        NeuralODE,
        NeuralSDE,
        ODERNN,
        ODERNNClassifier,
    )
    from .exceptions import (
        ConvergenceWarning,
        DynlearnError,
        InputError,
        IntegrationError,
        ModelFileError,
        TrainingError,
    )
    from .preprocessing import SeriesScaler

try:
    __version__ = version("dynlearn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> the submodule that defines it
_LAZY = {
    **dict.fromkeys(
        ["HamiltonianNN", "LagrangianNN", "LatentODE", "LatentODEClassifier", "LatentSDE", "NeuralCDE",
         "NeuralCDEClassifier", "NeuralODE", "NeuralSDE", "ODERNN", "ODERNNClassifier"],
        "estimators",
    ),
    **dict.fromkeys(
        ["ConvergenceWarning", "DynlearnError", "InputError", "IntegrationError", "ModelFileError", "TrainingError"],
        "exceptions",
    ),
    "SeedEnsemble": "_ensemble",
    "SeriesScaler": "preprocessing",
    **dict.fromkeys(["AutoForecaster", "LastValueForecaster", "SeasonalNaiveForecaster"], "_auto"),
    "load": "_persistence",
}
_SUBMODULES = {
    "bench", "cli", "data", "datasets", "estimators", "exceptions", "metrics", "nn", "plotting", "preprocessing",
    "solvers", "training",
}

__all__ = [
    "AutoForecaster",
    "ConvergenceWarning",
    "DynlearnError",
    "HamiltonianNN",
    "InputError",
    "IntegrationError",
    "LagrangianNN",
    "LastValueForecaster",
    "LatentODE",
    "LatentODEClassifier",
    "LatentSDE",
    "ModelFileError",
    "NeuralCDE",
    "NeuralCDEClassifier",
    "NeuralODE",
    "NeuralSDE",
    "ODERNN",
    "ODERNNClassifier",
    "SeasonalNaiveForecaster",
    "SeedEnsemble",
    "SeriesScaler",
    "TrainingError",
    "__version__",
    "load",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
