"""Names of the integration methods the installed backends provide."""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import input_error


@dataclass(frozen=True)
class MethodInfo:
    """What dynlearn needs to know about one ODE method.

    ``stages`` bounds the vector-field evaluations per step, which turns a
    step limit into an evaluation limit for methods the backend cannot limit
    itself. ``multistep`` methods reuse evaluations from earlier steps, so
    they assume a vector field that is smooth across steps. ``backend`` is
    ``"torchdiffeq"`` for ODE methods and ``"symplectic"`` for dynlearn's
    Hamiltonian steppers, whose stages are gradient evaluations.
    """

    name: str
    adaptive: bool
    order: int | None
    stages: int
    backend: str = "torchdiffeq"
    multistep: bool = False


# Stage counts and orders of torchdiffeq's methods (its classes do not all
# expose them); names the installed version lacks are dropped below.
_KNOWN = {
    "dopri8": (True, 8, 13),
    "dopri5": (True, 5, 7),
    "bosh3": (True, 3, 4),
    "fehlberg2": (True, 2, 3),
    "adaptive_heun": (True, 2, 2),
    "euler": (False, 1, 1),
    "midpoint": (False, 2, 2),
    "heun2": (False, 2, 2),
    "heun3": (False, 3, 3),
    "rk4": (False, 4, 4),
    "explicit_adams": (False, 4, 1),
    "implicit_adams": (False, 4, 8),
}
_MULTISTEP = {"explicit_adams", "implicit_adams", "fixed_adams"}
# Methods that cannot carry gradients or need extra arguments are not offered.
_EXCLUDED = {"scipy_solver", "fixed_adams"}
ALIASES = {"rk45": "dopri5", "rk8": "dopri8", "rk23": "bosh3", "forward_euler": "euler"}


def _build_ode_registry() -> dict[str, MethodInfo]:
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

    registry = {}
    for name, cls in SOLVERS.items():
        if name in _EXCLUDED:
            continue
        adaptive, order, stages = _KNOWN.get(
            name, (issubclass(cls, AdaptiveStepsizeODESolver), getattr(cls, "order", None), 16)
        )
        registry[name] = MethodInfo(name, adaptive, order, stages, multistep=name in _MULTISTEP)
    return registry


ODE_METHODS: dict[str, MethodInfo] = _build_ode_registry()


def available_ode_methods() -> list[str]:
    """Names accepted by ``solver=`` / ``method=``, aliases included."""
    return sorted(ODE_METHODS) + sorted(a for a, target in ALIASES.items() if target in ODE_METHODS)


def ode_method(name: str, argument: str = "method") -> MethodInfo:
    """Look up ``name`` (or an alias); raise an error listing the real choices."""
    if not isinstance(name, str):
        raise input_error(argument, "a method name (str)", repr(name), f"Use one of {available_ode_methods()}.")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ODE_METHODS:
        raise input_error(
            argument,
            f"one of {available_ode_methods()}",
            repr(name),
            "Pick an installed method; 'dopri5' is a good default.",
        )
    return ODE_METHODS[key]


# dynlearn's own steppers for Hamiltonian systems (torchdiffeq has no
# symplectic methods; they live in _symplectic.py). ``stages`` counts
# gradient evaluations per step, dH/dq and dH/dp together: the dH/dq that
# ends one leapfrog or yoshida4 step is reused to start the next, and the
# implicit midpoint rule spends its two per fixed-point iteration.
SYMPLECTIC_METHODS: dict[str, MethodInfo] = {
    "leapfrog": MethodInfo("leapfrog", adaptive=False, order=2, stages=2, backend="symplectic"),
    "yoshida4": MethodInfo("yoshida4", adaptive=False, order=4, stages=6, backend="symplectic"),
    "implicit_midpoint": MethodInfo("implicit_midpoint", adaptive=False, order=2, stages=2, backend="symplectic"),
}
SYMPLECTIC_ALIASES = {"verlet": "leapfrog", "stormer_verlet": "leapfrog"}


def available_symplectic_methods() -> list[str]:
    """Names accepted by :func:`~dynlearn.solvers.solve_hamiltonian`, aliases included."""
    return sorted(SYMPLECTIC_METHODS) + sorted(SYMPLECTIC_ALIASES)


def available_methods() -> list[str]:
    """Every integration method name: ODE methods first, then symplectic ones."""
    return available_ode_methods() + available_symplectic_methods()


def symplectic_method(name: str, argument: str = "method") -> MethodInfo:
    """Look up a symplectic method (or an alias); raise an error listing the real choices."""
    choices = available_symplectic_methods()
    if not isinstance(name, str):
        raise input_error(argument, f"a method name (str), one of {choices}", repr(name), "Pass e.g. 'leapfrog'.")
    key = SYMPLECTIC_ALIASES.get(name.lower(), name.lower())
    if key not in SYMPLECTIC_METHODS:
        fix = "Pick 'leapfrog' for a separable H = T(p) + V(q), 'implicit_midpoint' for any H."
        if ALIASES.get(name.lower(), name.lower()) in ODE_METHODS:
            fix = f"{name!r} is an ODE method (use solve_ode); symplectic solves take a symplectic method. " + fix
        raise input_error(argument, f"one of {choices}", repr(name), fix)
    return SYMPLECTIC_METHODS[key]
