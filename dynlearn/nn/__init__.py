"""Torch modules: vector fields and their building blocks."""

from ._mlp import ACTIVATIONS, MLPVectorField, SecondOrderField, make_mlp

__all__ = ["ACTIVATIONS", "MLPVectorField", "SecondOrderField", "make_mlp"]
