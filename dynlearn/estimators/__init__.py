"""scikit-learn estimators wrapping continuous-time models."""

from ._hamiltonian import HamiltonianNN
from ._lagrangian import LagrangianNN
from ._latent_sde import LatentSDE
from ._neural_ode import NeuralODE
from ._neural_sde import NeuralSDE

__all__ = ["HamiltonianNN", "LagrangianNN", "LatentSDE", "NeuralODE", "NeuralSDE"]
