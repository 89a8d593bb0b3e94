"""Numerical integration on tensors: ODE solves over torchdiffeq.

Nothing here knows about pandas, scikit-learn or estimators.
"""

from ._ode import DEFAULT_MAX_NUM_STEPS, SolverStats, solve_ode, solve_ode_irregular
from ._registry import ODE_METHODS, MethodInfo, available_ode_methods, ode_method

__all__ = [
    "DEFAULT_MAX_NUM_STEPS",
    "MethodInfo",
    "ODE_METHODS",
    "SolverStats",
    "available_ode_methods",
    "ode_method",
    "solve_ode",
    "solve_ode_irregular",
]
