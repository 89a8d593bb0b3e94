"""Torch modules: vector fields and their building blocks."""

from ._energy import HamiltonianField, LagrangianField
from ._mlp import ACTIVATIONS, MLPVectorField, SecondOrderField, make_mlp
from ._odernn import ODERNNEncoder

__all__ = ["ACTIVATIONS", "HamiltonianField", "LagrangianField", "MLPVectorField", "ODERNNEncoder", "SecondOrderField", "make_mlp"]
