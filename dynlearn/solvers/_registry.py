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
    they assume a vector field that is smooth across steps.
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
