"""Numerical integration on tensors: ODE solves over torchdiffeq, SDE solves over torchsde,
symplectic Hamiltonian solves.

Nothing here knows about pandas, scikit-learn or estimators.
"""

from ._compiled import COMPILE_MODES, CompiledFunction, fixed_rollout
from ._control import CONTROL_INTERPOLATIONS, ControlPath
from ._euler_fused import PosteriorLayers
from ._fixed import FIXED_STEP_METHODS, fixed_step
from ._ode import DEFAULT_MAX_NUM_STEPS, SolverStats, count_evaluations, solve_ode, solve_ode_irregular
from ._penalty import DynamicsPenalty
from ._rk_mlp import MLPLayers, tanh_via_sigmoid
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
from ._sde import SDE_METHODS, SDEMethodInfo, available_sde_methods, sde_method, solve_sde, solve_sde_irregular
from ._symplectic import solve_hamiltonian

__all__ = [
    "COMPILE_MODES",
    "CompiledFunction",
    "CONTROL_INTERPOLATIONS",
    "ControlPath",
    "DEFAULT_MAX_NUM_STEPS",
    "DynamicsPenalty",
    "FIXED_STEP_METHODS",
    "MLPLayers",
    "MethodInfo",
    "ODE_METHODS",
    "PosteriorLayers",
    "SDEMethodInfo",
    "SDE_METHODS",
    "SYMPLECTIC_METHODS",
    "SolverStats",
    "available_methods",
    "available_ode_methods",
    "available_sde_methods",
    "available_symplectic_methods",
    "count_evaluations",
    "fixed_rollout",
    "fixed_step",
    "ode_method",
    "sde_method",
    "solve_hamiltonian",
    "solve_ode",
    "solve_ode_irregular",
    "solve_sde",
    "solve_sde_irregular",
    "symplectic_method",
    "tanh_via_sigmoid",
]
