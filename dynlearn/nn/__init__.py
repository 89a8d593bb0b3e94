"""Torch modules: vector fields and their building blocks."""

from ._energy import HamiltonianField, LagrangianField
from ._mlp import ACTIVATIONS, MLPVectorField, SecondOrderField, make_mlp

__all__ = ["ACTIVATIONS", "HamiltonianField", "LagrangianField", "MLPVectorField", "SecondOrderField", "make_mlp"]
