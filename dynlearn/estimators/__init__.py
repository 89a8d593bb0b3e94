"""scikit-learn estimators wrapping continuous-time models."""

from ._hamiltonian import HamiltonianNN
from ._lagrangian import LagrangianNN
from ._latent_ode import LatentODE
from ._latent_ode_classifier import LatentODEClassifier
from ._latent_sde import LatentSDE
from ._neural_cde import NeuralCDE, NeuralCDEClassifier
from ._neural_ode import NeuralODE
from ._neural_sde import NeuralSDE
from ._odernn import ODERNN, ODERNNClassifier

__all__ = [
    "HamiltonianNN",
    "LagrangianNN",
    "LatentODE",
    "LatentODEClassifier",
    "LatentSDE",
    "NeuralCDE",
    "NeuralCDEClassifier",
    "NeuralODE",
    "NeuralSDE",
    "ODERNN",
    "ODERNNClassifier",
]
