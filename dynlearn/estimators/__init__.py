"""scikit-learn estimators wrapping continuous-time models."""

from ._neural_ode import NeuralODE

__all__ = ["NeuralODE"]
