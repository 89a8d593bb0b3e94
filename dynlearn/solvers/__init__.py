"""Numerical integration on tensors: ODE solves over torchdiffeq, symplectic Hamiltonian solves.

Nothing here knows about pandas, scikit-learn or estimators.
"""

from ._ode import DEFAULT_MAX_NUM_STEPS, SolverStats, solve_ode, solve_ode_irregular
from ._registry import (
    ODE_METHODS,
    SYMPLECTIC_METHODS,
    MethodInfo,
    available_methods,
    available_ode_methods,
    available_symplectic_methods,
    ode_method,
    symplectic_method,
)
from ._symplectic import solve_hamiltonian

__all__ = [
    "DEFAULT_MAX_NUM_STEPS",
    "MethodInfo",
    "ODE_METHODS",
    "SYMPLECTIC_METHODS",
    "SolverStats",
    "available_methods",
    "available_ode_methods",
    "available_symplectic_methods",
    "ode_method",
    "solve_hamiltonian",
    "solve_ode",
    "solve_ode_irregular",
    "symplectic_method",
]
