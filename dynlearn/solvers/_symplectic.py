"""Symplectic integrators for Hamiltonian systems, differentiable in PyTorch.

A Hamiltonian system ``dq/dt = ∂H/∂p``, ``dp/dt = -∂H/∂q`` has a flow that
preserves the symplectic form; a symplectic integrator does too, so it
conserves a modified energy ``H + O(h^order)`` for exponentially long times
instead of letting the energy drift step after step as Runge–Kutta methods
do. The schemes are textbook:

- ``"leapfrog"``: Störmer–Verlet, order 2, explicit, for separable
  ``H = T(p) + V(q)`` [1]_;
- ``"yoshida4"``: the symmetric "triple jump" composition of leapfrog
  steps, order 4, explicit, for separable ``H`` [2]_ [3]_;
- ``"implicit_midpoint"``: the implicit midpoint rule, order 2, for any
  ``H`` [1]_.

References
----------
.. [1] E. Hairer, C. Lubich and G. Wanner, *Geometric Numerical Integration:
   Structure-Preserving Algorithms for Ordinary Differential Equations*,
   2nd ed., Springer, 2006. Chapters I and II (the schemes and composition
   methods) and VI (their symplecticity).
.. [2] H. Yoshida, "Construction of higher order symplectic integrators",
   Physics Letters A 150 (1990), 262–268.
.. [3] E. Forest and R. D. Ruth, "Fourth-order symplectic integration",
   Physica D 43 (1990), 105–117.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..exceptions import IntegrationError, input_error
from ._control import ControlPath
from ._ode import DEFAULT_MAX_NUM_STEPS
from ._registry import symplectic_method

Gradient = Callable[[Tensor, Tensor, Tensor], Tensor]
Force = Callable[[Tensor, Tensor], Tensor]

# Triple-jump weights: w1 + w0 + w1 = 1 keeps consistency and
# 2 w1^3 + w0^3 = 0 cancels the leapfrog's third-order error term; the
# composition is symmetric, so the fourth-order term vanishes as well.
_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = 1.0 - 2.0 * _W1

# Methods whose explicit steps split H into a kinetic and a potential part.
_SEPARABLE_ONLY = frozenset({"leapfrog", "yoshida4"})

_STEP_ADVICE = (
    "Use a smaller step_size (explicit schemes are stable only while step_size "
    "times the fastest angular frequency stays below 2), rescale time so the "
    "oscillations are of order one, or check grad_q/grad_p for infinities."
)


@dataclass(frozen=True)
class _Hamiltonian:
    """The user's gradients, the input force and the settings of the implicit solve, passed to every step.

    Steps evaluate at nodes ``(t, u)``: each series' time and the inputs
    there (None without a force). A kick subtracts ``kick_gradient``,
    ``∂H/∂q - F(q, u)``; a drift adds ``velocity``, ``∂H/∂p``.
    """

    grad_q: Gradient
    grad_p: Gradient
    tol: float
    max_iter: int
    force: Force | None = None

    def kick_gradient(self, q: Tensor, p: Tensor, node: tuple[Tensor, Tensor | None]) -> Tensor:
        gradient = self.grad_q(q, p, node[0])
        return gradient if node[1] is None else gradient - self.force(q, node[1])

    def velocity(self, q: Tensor, p: Tensor, node: tuple[Tensor, Tensor | None]) -> Tensor:
        return self.grad_p(q, p, node[0])


@dataclass(frozen=True)
class _Scheme:
    """How one method advances every series by its own step ``h``.

    ``coefficients`` are the multiples of ``h`` the step scales gradients by
    and ``nodes`` the fractions of the step at which gradients are
    evaluated; both become per-series tensors once per segment, so a step
    does no scalar arithmetic. With ``reuses_force`` the last ``dH/dq`` of a
    step is the first of the next (same ``q``, same time) and is carried over.
    """

    step: Callable[..., tuple[Tensor, Tensor, Tensor | None]]
    coefficients: tuple[float, ...]
    nodes: tuple[float, ...]
    reuses_force: bool


def _leapfrog_step(
    ham: _Hamiltonian, q: Tensor, p: Tensor, force: Tensor, c: tuple[Tensor, ...], t: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    # c = (-h/2, h); t = (t_n + h/2, t_n + h); force = ∂H/∂q at (q_n, t_n).
    p = torch.addcmul(p, c[0], force)
    q = torch.addcmul(q, c[1], ham.velocity(q, p, t[0]))
    force = ham.kick_gradient(q, p, t[1])
    return q, torch.addcmul(p, c[0], force), force


def _yoshida4_step(
    ham: _Hamiltonian, q: Tensor, p: Tensor, force: Tensor, c: tuple[Tensor, ...], t: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    # Leapfrog steps of w1 h, w0 h, w1 h with the touching half-kicks merged:
    # c = (-w1 h/2, w1 h, -(w1 + w0) h/2, w0 h).
    outer_kick, outer_drift, inner_kick, inner_drift = c
    p = torch.addcmul(p, outer_kick, force)
    q = torch.addcmul(q, outer_drift, ham.velocity(q, p, t[0]))
    force = ham.kick_gradient(q, p, t[1])
    p = torch.addcmul(p, inner_kick, force)
    q = torch.addcmul(q, inner_drift, ham.velocity(q, p, t[2]))
    force = ham.kick_gradient(q, p, t[3])
    p = torch.addcmul(p, inner_kick, force)
    q = torch.addcmul(q, outer_drift, ham.velocity(q, p, t[4]))
    force = ham.kick_gradient(q, p, t[5])
    return q, torch.addcmul(p, outer_kick, force), force


def _implicit_midpoint_step(
    ham: _Hamiltonian, q: Tensor, p: Tensor, force: None, c: tuple[Tensor, ...], t: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, None]:
    # c = (h/2, -h/2); t = (t_n + h/2,). Iterates on the midpoint
    # Z = z_n + (h/2) J∇H(Z), starting from Z = z_n (so the first iterate is
    # an explicit Euler half step). Gradients flow through every iteration.
    half, minus_half = c
    mid_q, mid_p = q, p
    change = math.inf
    for _ in range(ham.max_iter):
        new_q = torch.addcmul(q, half, ham.velocity(mid_q, mid_p, t[0]))
        new_p = torch.addcmul(p, minus_half, ham.kick_gradient(mid_q, mid_p, t[0]))
        change = _relative_change(new_q, mid_q, new_p, mid_p)
        mid_q, mid_p = new_q, new_p
        if change <= ham.tol:
            # z_{n+1} = 2 Z - z_n, one fused op.
            return torch.lerp(q, mid_q, 2.0), torch.lerp(p, mid_p, 2.0), None
        if not math.isfinite(change):
            break
    raise IntegrationError(
        f"The implicit midpoint iteration did not converge in {ham.max_iter} iterations "
        f"(last relative change {change:.2g}, implicit_tol {ham.tol:.2g}). It contracts only while "
        "step_size times the Lipschitz constant of ∇H stays below 2: use a smaller step_size, "
        "or raise implicit_max_iter / implicit_tol."
    )


def _relative_change(new_q: Tensor, old_q: Tensor, new_p: Tensor, old_p: Tensor) -> float:
    """Largest change between iterates, relative to ``1 + |value|`` (absolute near 0, relative far from it)."""
    with torch.no_grad():
        dq = ((new_q - old_q).abs() / (1.0 + new_q.abs())).amax()
        dp = ((new_p - old_p).abs() / (1.0 + new_p.abs())).amax()
        return float(torch.maximum(dq, dp))


_SCHEMES = {
    "leapfrog": _Scheme(_leapfrog_step, (-0.5, 1.0), (0.5, 1.0), reuses_force=True),
    "yoshida4": _Scheme(
        _yoshida4_step,
        (-_W1 / 2, _W1, -(_W1 + _W0) / 2, _W0),
        (_W1 / 2, _W1, _W1 + _W0 / 2, _W1 + _W0, _W1 + _W0 + _W1 / 2, 1.0),
        reuses_force=True,
    ),
    "implicit_midpoint": _Scheme(_implicit_midpoint_step, (0.5, -0.5), (0.5,), reuses_force=False),
}


def solve_hamiltonian(
    grad_q: Gradient,
    grad_p: Gradient,
    q0: Tensor,
    p0: Tensor,
    times: Tensor,
    *,
    method: str = "leapfrog",
    step_size: float | None = None,
    separable: bool = True,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    implicit_tol: float = 1e-10,
    implicit_max_iter: int = 50,
    force: Force | None = None,
    control: ControlPath | None = None,
) -> tuple[Tensor, Tensor]:
    """Integrate Hamilton's equations with a symplectic method, series by series.

    Solves ``dq/dt = ∂H/∂p(q, p, t)``, ``dp/dt = -∂H/∂q(q, p, t)`` where series
    ``b`` starts from ``(q0[b], p0[b])`` at ``times[b, 0]`` and is reported at
    ``times[b, :]``. Every operation is a differentiable torch operation, so
    gradients reach ``q0``, ``p0`` and any parameter the gradient functions use.

    With a ``force`` and a ``control``, known inputs ``u(t)`` push the
    momenta: ``dp/dt = -∂H/∂q + F(q, u(t))``. Every method takes such a
    force (it depends on ``q`` and ``t`` only, so ``H - q·F`` stays
    separable for the explicit methods): a kick reads ``u`` at its own time
    (leapfrog at both ends of a step, the implicit midpoint rule at its
    middle). A ``"previous"`` control holds ``u`` over each segment, so the
    force at a segment's start is evaluated anew instead of carried over
    from the previous segment's end. The energy is then no longer
    conserved: it changes by the work of the force, ``∫ ∂H/∂p · F dt``.

    With step ``h`` from ``t_n`` the methods are

    ``"leapfrog"`` (Störmer–Verlet, kick–drift–kick, order 2)::

        p_{n+1/2} = p_n       - h/2 ∂H/∂q(q_n, t_n)
        q_{n+1}   = q_n       + h   ∂H/∂p(p_{n+1/2}, t_n + h/2)
        p_{n+1}   = p_{n+1/2} - h/2 ∂H/∂q(q_{n+1}, t_n + h)

    ``"yoshida4"`` (triple jump, order 4): three leapfrog steps
    ``Φ_h = L_{w1 h} ∘ L_{w0 h} ∘ L_{w1 h}`` with
    ``w1 = 1 / (2 - 2^{1/3})`` and ``w0 = 1 - 2 w1`` (a negative step).

    ``"implicit_midpoint"`` (order 2, any ``H``), with
    ``Q = (q_n + q_{n+1})/2``, ``P = (p_n + p_{n+1})/2``::

        q_{n+1} = q_n + h ∂H/∂p(Q, P, t_n + h/2)
        p_{n+1} = p_n - h ∂H/∂q(Q, P, t_n + h/2)

    solved for the midpoint by fixed-point iteration, which contracts while
    ``h`` times the Lipschitz constant of ``∇H`` stays below 2.

    Each series runs on its own clock: its segment ``k`` (gap
    ``Δ = times[b, k+1] - times[b, k]``, which may be zero or negative) is
    crossed in ``m`` steps of ``Δ / m``, where ``m`` is shared by the batch,
    so all series advance together. Every series' step is still exactly
    one step of the method for its own Hamiltonian.

    Parameters
    ----------
    grad_q, grad_p : callable ``(q, p, t) -> Tensor``
        ``∂H/∂q`` and ``∂H/∂p``, each of shape (batch, d), given ``q`` and
        ``p`` of shape (batch, d) and ``t`` of shape (batch,): every
        series' own time. With ``separable=True``, ``grad_q`` may depend on
        ``q`` and ``t`` only and ``grad_p`` on ``p`` only (the other argument
        is passed but must not matter).
    q0, p0 : Tensor of shape (batch, d)
        Initial positions and momenta, floating point.
    times : Tensor of shape (batch, n_times)
        Each series' output times; ``times[:, 0]`` are the start times. A
        row may run forwards or backwards and repeat a time (a zero-length
        segment keeps the state).
    method : {"leapfrog", "yoshida4", "implicit_midpoint"}, default="leapfrog"
        See above; aliases ``"verlet"`` and ``"stormer_verlet"`` name the
        leapfrog.
    step_size : float, default=None
        Largest step in real time: ``m = ceil(max |Δ| / step_size)``. The
        default, ``m = 1``, takes one step per gap between output times.
    separable : bool, default=True
        Whether ``H = T(p) + V(q, t)``. The explicit methods need it; pass
        ``False`` (with ``method="implicit_midpoint"``) for any other ``H``.
    max_num_steps : int, default=10000
        Steps allowed in total, ``(n_times - 1) * m``; a solve that would
        take more raises :class:`~dynlearn.exceptions.IntegrationError` before any work.
    implicit_tol : float, default=1e-10
        Stop the fixed-point iteration once no coordinate of the midpoint
        changes by more than ``implicit_tol * (1 + |value|)``. Raised to 16
        machine epsilons of the state's dtype, below which iterates only
        trade rounding errors. What the iteration leaves adds up over steps
        (about ``2e-11`` of energy per step of 0.25 on a unit oscillator at
        the default), so tighten it for long runs where invariants matter.
    implicit_max_iter : int, default=50
        Iterations allowed per step before :class:`~dynlearn.exceptions.IntegrationError`.
    force : callable ``(q, u) -> Tensor``, default=None
        The generalised force ``F(q, u)`` of shape (batch, d), given ``q``
        of shape (batch, d) and ``u`` of shape (batch, n_inputs). Needs
        ``control``.
    control : ControlPath, default=None
        The inputs of each series over ``times`` (one knot per output
        time): see :class:`~dynlearn.solvers.ControlPath`. Needs ``force``.

    Returns
    -------
    q, p : Tensor of shape (batch, n_times, d)
        Positions and momenta at ``times``.

    Raises
    ------
    InputError
        Unknown method, an explicit method with ``separable=False``,
        a ``force`` without a ``control`` (or the reverse), or arguments
        (or gradients, forces, controls) of the wrong shape.
    IntegrationError
        Too many steps, a non-converging implicit iteration, or non-finite
        states.

    Examples
    --------
    A unit harmonic oscillator, ``H = (q² + p²) / 2``, over one period:

    >>> import math, torch
    >>> from dynlearn.solvers import solve_hamiltonian
    >>> q0, p0 = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    >>> times = torch.tensor([[0.0, 2 * math.pi]], dtype=torch.float64)
    >>> q, p = solve_hamiltonian(
    ...     lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, method="yoshida4", step_size=0.1
    ... )
    >>> round(float(q[0, -1, 0]), 6), round(float(p[0, -1, 0]), 4)
    (1.0, 0.0)
    """
    info = symplectic_method(method)
    _check_states(q0, p0)
    times = _check_times(times, q0)
    _check_settings(step_size, separable, max_num_steps, implicit_tol, implicit_max_iter)
    if not separable and info.name in _SEPARABLE_ONLY:
        raise input_error(
            "separable",
            f"True for method={info.name!r}, which splits H into T(p) + V(q)",
            "separable=False",
            "Use method='implicit_midpoint' for a non-separable H.",
        )
    _check_control(force, control, times)
    if times.shape[1] == 1:
        return q0.unsqueeze(1), p0.unsqueeze(1)
    gaps = times.diff(dim=1)
    substeps = _substeps_per_segment(gaps, step_size)
    _check_budget((times.shape[1] - 1) * substeps, max_num_steps)
    tol = max(float(implicit_tol), 16 * torch.finfo(q0.dtype).eps)
    ham = _Hamiltonian(
        _shape_checked(grad_q, "grad_q", "∂H/∂q", q0.shape),
        _shape_checked(grad_p, "grad_p", "∂H/∂p", q0.shape),
        tol,
        int(implicit_max_iter),
        None if force is None else _force_checked(force, q0.shape),
    )
    q, p = _integrate(_SCHEMES[info.name], ham, q0, p0, times, gaps, substeps, control)
    if not (torch.isfinite(q).all() and torch.isfinite(p).all()):
        raise IntegrationError(f"The {info.name} solve produced non-finite states. {_STEP_ADVICE}")
    return q, p


# ----------------------------------------------------------------- internals
def _integrate(
    scheme: _Scheme, ham: _Hamiltonian, q0: Tensor, p0: Tensor, times: Tensor, gaps: Tensor, substeps: int,
    control: ControlPath | None = None,
) -> tuple[Tensor, Tensor]:
    """All series through all segments, ``substeps`` steps each; states at segment ends."""
    coefficients = torch.tensor(scheme.coefficients, dtype=q0.dtype, device=q0.device)
    n_nodes = len(scheme.nodes)
    nodes = torch.tensor(scheme.nodes, dtype=q0.dtype, device=q0.device)
    # Fractions of a segment at which each substep evaluates, (substeps * n_nodes,).
    fractions = ((torch.arange(substeps, dtype=q0.dtype, device=q0.device)[:, None] + nodes) / substeps).reshape(-1)
    steps = gaps / substeps
    q, p = q0, p0
    # A held input jumps at every knot: the force carried over from a segment's end is not the next one's start.
    fresh_start = control is not None and control.interpolation == "previous"
    force = None
    qs, ps = [q0], [p0]
    for k in range(gaps.shape[1]):
        # Per-series (batch, 1) step coefficients and (batch,) evaluation times.
        c = (steps[:, k : k + 1] * coefficients).T.unsqueeze(-1).unbind(0)
        clock = torch.addcmul(times[:, k : k + 1], gaps[:, k : k + 1], fractions).T.unbind(0)
        inputs = _segment_inputs(control, k, fractions)
        nodes_k = list(zip(clock, inputs))
        if scheme.reuses_force and (force is None or fresh_start):
            force = ham.kick_gradient(q, p, (times[:, k], _segment_inputs(control, k, fractions.new_zeros(1))[0]))
        for j in range(0, len(nodes_k), n_nodes):
            q, p, force = scheme.step(ham, q, p, force, c, nodes_k[j : j + n_nodes])
        qs.append(q)
        ps.append(p)
    return torch.stack(qs, dim=1), torch.stack(ps, dim=1)


def _segment_inputs(control: ControlPath | None, k: int, fractions: Tensor) -> list[Tensor | None]:
    """The inputs ``(batch, n_inputs)`` on segment ``k`` at each fraction (None each without a control)."""
    if control is None:
        return [None] * len(fractions)
    segments = torch.full((len(fractions),), k, device=control.coefficients.device)
    return list(control.on_segments(segments, fractions).unbind(0))  # one read for every fraction


def _check_control(force: Any, control: Any, times: Tensor) -> None:
    if force is None and control is None:
        return
    if force is None or control is None:
        given, missing = ("force", "control") if control is None else ("control", "force")
        raise input_error(
            missing,
            f"a {missing} together with the {given} (the force F(q, u) reads the inputs u of the control)",
            "None",
            "Pass both force=(q, u) -> F and control=ControlPath(times, inputs), or neither.",
        )
    if not isinstance(control, ControlPath):
        raise input_error("control", "a ControlPath", type(control).__name__, "Build one with ControlPath(times, inputs).")
    if control.coefficients.shape[:2] != (times.shape[0], times.shape[1] - 1):
        raise input_error(
            "control",
            f"a path over the output times: {times.shape[0]} series of {times.shape[1]} knots",
            f"{control.coefficients.shape[0]} series of {control.coefficients.shape[1] + 1} knots",
            "Build the ControlPath on the same times as the solve.",
        )


def _force_checked(func: Force, shape: torch.Size) -> Force:
    """``func`` with its output checked against the state's shape."""
    if not callable(func):
        raise input_error("force", "a callable (q, u) -> F(q, u)", type(func).__name__, "Pass a function.")

    def checked(q: Tensor, u: Tensor) -> Tensor:
        value = func(q, u)
        if not isinstance(value, Tensor) or value.shape != shape:
            raise input_error(
                "force",
                f"the force as a tensor of shape (batch={shape[0]}, d={shape[1]}), like q0",
                _describe(value),
                "Return one generalised force per series and coordinate.",
            )
        return value

    return checked


def _shape_checked(func: Gradient, argument: str, what: str, shape: torch.Size) -> Gradient:
    """``func`` with its output checked against the state's shape, naming the culprit."""
    if not callable(func):
        raise input_error(argument, f"a callable (q, p, t) -> {what}", type(func).__name__, "Pass a function.")

    def checked(q: Tensor, p: Tensor, t: Tensor) -> Tensor:
        value = func(q, p, t)
        if not isinstance(value, Tensor) or value.shape != shape:
            raise input_error(
                argument,
                f"{what} as a tensor of shape (batch={shape[0]}, d={shape[1]}), like q0",
                _describe(value),
                f"Return one {what} per series and coordinate.",
            )
        return value

    return checked


def _describe(value: Any) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _check_states(q0: Any, p0: Any) -> None:
    for name, value in (("q0", q0), ("p0", p0)):
        if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
            raise input_error(
                name,
                "a floating-point tensor of shape (batch, d)",
                _describe(value) if not isinstance(value, Tensor) or value.dim() != 2 else f"dtype {value.dtype}",
                "Stack one row per series, e.g. q0.reshape(batch, -1).double().",
            )
    if p0.shape != q0.shape or p0.dtype != q0.dtype or p0.device != q0.device:
        raise input_error(
            "p0",
            f"the shape, dtype and device of q0: {tuple(q0.shape)}, {q0.dtype}, {q0.device}",
            f"{tuple(p0.shape)}, {p0.dtype}, {p0.device}",
            "Give one momentum per position coordinate.",
        )


def _check_times(times: Any, q0: Tensor) -> Tensor:
    if not isinstance(times, Tensor):
        times = torch.as_tensor(times, dtype=q0.dtype)
    batch = q0.shape[0]
    if times.dim() != 2 or times.shape[0] != batch or times.shape[1] < 1:
        raise input_error(
            "times",
            f"a tensor of shape (batch={batch}, n_times)",
            f"shape {tuple(times.shape)}",
            "Give one row of output times per initial state.",
        )
    if not torch.isfinite(times).all():
        raise input_error("times", "finite output times", "NaN or inf", "Remove non-finite times.")
    # Steps are taken in the state's dtype, as the ODE per-series clock does.
    return times.to(device=q0.device, dtype=q0.dtype)


def _check_settings(
    step_size: Any, separable: Any, max_num_steps: Any, implicit_tol: Any, implicit_max_iter: Any
) -> None:
    if step_size is not None and (
        isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not 0 < step_size < math.inf
    ):
        raise input_error("step_size", "None or a positive number", repr(step_size), "Pass e.g. step_size=0.01.")
    if not isinstance(separable, bool):
        raise input_error("separable", "True or False", repr(separable), "Pass a bool.")
    for name, value in (("max_num_steps", max_num_steps), ("implicit_max_iter", implicit_max_iter)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise input_error(name, "a positive int", repr(value), f"Pass e.g. {name}=100.")
    if isinstance(implicit_tol, bool) or not isinstance(implicit_tol, numbers.Real) or not implicit_tol > 0:
        raise input_error("implicit_tol", "a positive number", repr(implicit_tol), "Pass e.g. implicit_tol=1e-10.")


def _substeps_per_segment(gaps: Tensor, step_size: float | None) -> int:
    if step_size is None:
        return 1
    longest = float(gaps.abs().max())
    # A gap that is a whole number of steps up to rounding takes that many steps.
    return max(1, math.ceil(longest / float(step_size) - 1e-9))


def _check_budget(steps: int, max_num_steps: int) -> None:
    if steps > max_num_steps:
        raise IntegrationError(
            f"A symplectic solve would take {steps} steps, more than max_num_steps={max_num_steps}. "
            "Use a larger step_size, fewer output times, or raise max_num_steps."
        )
