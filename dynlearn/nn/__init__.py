"""Torch modules: vector fields and their building blocks."""

from ._energy import INPUT_MATRICES, HamiltonianField, InputMatrix, LagrangianField, jacobian_columns
from ._guard import BoxContraction
from ._history import HistoryEncoder
from ._mlp import ACTIVATIONS, MLPVectorField, SecondOrderField, make_mlp, mlp_function
from ._odernn import ODERNNEncoder

__all__ = [
    "ACTIVATIONS",
    "INPUT_MATRICES",
    "BoxContraction",
    "HamiltonianField",
    "HistoryEncoder",
    "InputMatrix",
    "LagrangianField",
    "MLPVectorField",
    "ODERNNEncoder",
    "SecondOrderField",
    "jacobian_columns",
    "make_mlp",
    "mlp_function",
]
