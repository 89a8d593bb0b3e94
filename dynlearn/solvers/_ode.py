"""ODE solves over torchdiffeq with step limits, error mapping and per-series clocks."""

from __future__ import annotations

import bisect
import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

try:  # torchdiffeq's own input handling and solver table, to collect adaptive outputs (see _odeint_stacked)
    from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
    from torchdiffeq._impl.odeint import _check_inputs as _torchdiffeq_inputs
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver as _RKSolver
except ImportError:  # pragma: no cover - another torchdiffeq layout: plain odeint
    _TORCHDIFFEQ_SOLVERS = None

from ..exceptions import IntegrationError, input_error
from ._control import ControlPath
from ._compiled import fixed_rollout
from ._fixed import FIXED_STEP_METHODS
from ._registry import MethodInfo, ode_method
from ._rk import StepFailure, solve_written_out, writes_out
from ._rk_mlp import MLPLayers

DEFAULT_MAX_NUM_STEPS = 10_000

_ADVICE = (
    "Try a looser rtol/atol, a larger max_num_steps, rescaling time so "
    "observation gaps are of order one, or another solver (e.g. 'rk4' with a "
    "fixed step)."
)

# torchdiffeq reports a time that falls inside a step with a quartic
# interpolant. For dopri5 that matches the step's accuracy; for these methods
# it is orders of magnitude worse than the steps (dopri8 at rtol=1e-10 on an
# oscillator: ~1e-6 interpolated, ~1e-12 at step ends, for the same work), so
# their steps are made to end on the output times.
_STEP_TO_OUTPUTS = frozenset({"bosh3", "dopri8"})

# Options dynlearn sets unless the caller does. torchdiffeq's explicit Adams
# climbs to order 11 by default, whose stability interval is so short that
# dy/dt = -y with step 0.01 returns 0.74 for e^-1 = 0.37; capped at the
# order-4 formula the registry advertises, it is stable at ordinary steps.
_DEFAULT_OPTIONS = {"explicit_adams": {"max_order": 5}}


@dataclass
class SolverStats:
    """Counts of vector-field evaluations, filled in by the solve functions.

    ``nfe_forward`` is the count at the end of the forward solve; whatever is
    counted later (the adjoint's backward solve) is ``nfe_backward``.
    """

    nfe: int = 0
    nfe_forward: int = 0

    @property
    def nfe_backward(self) -> int:
        return self.nfe - self.nfe_forward


# The stats of every open count_evaluations() block; the guarded field adds to them.
_OPEN_COUNTS: list[SolverStats] = []


@contextmanager
def count_evaluations() -> Iterator[SolverStats]:
    """Count the vector-field evaluations of every ODE solve made inside the block.

    Counts every solve of :func:`solve_ode` and :func:`solve_ode_irregular`,
    also those an estimator makes inside ``fit`` or ``predict``, without
    passing ``stats`` to each. Evaluations made while autograd runs a
    backward pass (the adjoint's backward solve) count as backward ones:
    ``nfe`` is the total, ``nfe_forward`` those outside a backward pass and
    ``nfe_backward`` the rest. Blocks may nest; each counts everything
    inside it. SDE and symplectic solves are not counted.

    Yields
    ------
    SolverStats
        Updated as evaluations happen; read it inside or after the block.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import count_evaluations, solve_ode
    >>> with count_evaluations() as counted:
    ...     _ = solve_ode(lambda t, y: -y, torch.ones(1, 1), torch.tensor([0.0, 1.0]), method="rk4",
    ...                   options={"step_size": 0.1})
    >>> counted.nfe
    40
    """
    stats = SolverStats()
    _OPEN_COUNTS.append(stats)
    try:
        yield stats
    finally:
        _OPEN_COUNTS.remove(stats)


def _count_open(backward: bool, n: int = 1) -> None:
    for stats in _OPEN_COUNTS:
        stats.nfe += n
        if not backward:
            stats.nfe_forward += n


def _in_backward_pass() -> bool:
    # torch has no public way to ask whether autograd's engine is running; -1 means it is not.
    return torch._C._current_graph_task_id() != -1


class _GuardedField(nn.Module):
    """Counts evaluations and stops a solve that runs past its budget."""

    def __init__(self, func: Callable, limit: int, stats: SolverStats | None):
        super().__init__()
        self.func = func
        self.limit = limit
        self.stats = stats
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.counted(1)
        return self.func(t, y)

    def counted(self, n: int) -> None:
        """Count ``n`` evaluations (a solver that evaluates the field itself reports them here)."""
        self.calls += n
        if self.stats is not None:
            self.stats.nfe += n
        if _OPEN_COUNTS:
            _count_open(_in_backward_pass(), n)
        if self.calls > self.limit:
            raise IntegrationError(
                f"A solve exceeded its step limit ({self.limit} vector-field evaluations). "
                f"Raise max_num_steps if the dynamics are stiff. {_ADVICE}"
            )

    def mlp_layers(self) -> MLPLayers | None:
        """The field's ``mlp_layers()`` (see :class:`MLPLayers`), None where it has none."""
        return MLPLayers.declared_by(self.func)


class _SegmentClock(nn.Module):
    """Runs every series on its own observation times with one shared clock.

    Segment ``k`` of series ``b`` (from ``times[b, k]`` to ``times[b, k+1]``)
    is mapped to ``s`` in ``[knots[k], knots[k+1]]``; with ``w`` that
    interval's length, ``dy/ds = gap[b, k] / w * f(t(s), y)``. Every series
    then reaches its own ``k``-th time at ``s = knots[k]`` exactly, so the
    batch is integrated once on ``knots`` instead of on the union of all
    series' times. The vector field jumps at every knot; the solver is told
    so (``jump_t`` / perturbed grid evaluations), and the segment of a knot
    is the one *ending* there (left-continuous), which is what both the
    forward pass and the adjoint's reversed pass evaluate at segment ends.
    The solver hands ``s`` over in the state's dtype, so knots are compared
    in that dtype too: a knot then always falls on its own boundary.

    With a ``control`` (a :class:`ControlPath` over the same times), the
    field is called as ``f(t, y, u)`` with ``u`` read on the segment the
    clock is on, at the fraction of it covered.
    """

    def __init__(self, func: Callable, times: torch.Tensor, knots: torch.Tensor, control: ControlPath | None = None):
        super().__init__()
        self.func = func
        self.control = control
        self.register_buffer("starts", times[:, :-1].contiguous(), persistent=False)
        self.register_buffer("gaps", (times[:, 1:] - times[:, :-1]).contiguous(), persistent=False)
        self.register_buffer("knots", knots, persistent=False)
        self.last = times.shape[1] - 2

    def forward(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t, u, scale = self.read(s.to(y.dtype))
        shape = (-1,) + (1,) * (y.dim() - 1)
        return (self.func(t, y) if u is None else self.func(t, y, u)) * scale.reshape(shape)

    def read(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(t, u, scale)`` at clock time ``s``: each series' own time ``(batch,)``, its inputs ``(batch,
        n_inputs)`` (None without a control) and ``dt/ds`` (``gap / w``, ``(batch,)``), in ``s``'s dtype.

        At several clock times ``s`` ``(n,)`` (the stages of a step, read in
        one call) each gains a leading dimension ``n``.
        """
        many = s.dim() > 0
        s = s.reshape(-1)
        knots = self.knots.to(s.dtype)
        k = (torch.searchsorted(knots, s, side="left") - 1).clamp(0, self.last)
        left, width = knots[k], knots[k + 1] - knots[k]
        gap = self.gaps.index_select(1, k).t().to(s.dtype)  # (n, batch)
        start = self.starts.index_select(1, k).t().to(s.dtype)
        fraction = (s - left) / width
        u = None if self.control is None else self.control.on_segments(k, fraction)
        t, scale = start + fraction[:, None] * gap, gap / width[:, None]
        return (t, u, scale) if many else (t[0], None if u is None else u[0], scale[0])

    def mlp_layers(self) -> MLPLayers | None:
        """The field's layers (see :class:`MLPLayers`) read on this clock, None where it has none."""
        layers = MLPLayers.declared_by(self.func)
        if layers is None or layers.clock is not None:
            return None
        return dataclasses.replace(layers, clock=self.read)


def _adaptive_knots(n: int, device: torch.device) -> torch.Tensor:
    """``n`` knots whose spacing shrinks steadily, from 1 to about 1/2.

    With equal spacing, an accepted step that the controller keeps at the
    same size (it does, for error ratios in (0.59, 1]) lands exactly on the
    next knot; torchdiffeq 0.2.5 then neither re-evaluates the field past the
    jump nor clips later steps at the following jumps, so every later step
    straddles discontinuities (measured: 5-10x the evaluations, and lost
    accuracy). After an accepted step the next is never shorter, so with
    shrinking segments it always overshoots the next knot and is clipped to
    it, and no step is wasted on a sliver left before a longer segment.
    """
    widths = 1.0 / (1.0 + torch.arange(n - 1, dtype=torch.float64, device=device) / max(n - 1, 1))
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), widths.cumsum(0)])


def solve_ode(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-3,
    atol: float = 1e-4,
    adjoint: bool = False,
    options: dict[str, Any] | None = None,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    adjoint_params: tuple[torch.Tensor, ...] | None = None,
    stats: SolverStats | None = None,
) -> torch.Tensor:
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` and return ``y`` at times ``t``.

    Parameters
    ----------
    func : callable ``(t, y) -> dy/dt``
        The vector field; an ``nn.Module`` when ``adjoint=True`` (or pass
        ``adjoint_params``).
    y0 : Tensor of shape (batch, ...)
        Initial state at ``t[0]``.
    t : Tensor of shape (n_times,)
        Strictly increasing or strictly decreasing output times.
    method : str, default="dopri5"
        A name from :func:`available_ode_methods`.
    rtol, atol : float
        Tolerances of adaptive methods.
    adjoint : bool, default=False
        Backpropagate by solving the adjoint ODE backwards (memory does not
        grow with the number of steps) instead of through the solver's
        operations.
    options : dict, default=None
        Backend options, e.g. ``{"step_size": 0.1}`` for fixed-step methods
        (one-step methods then also end a step on every output time, so
        outputs keep the method's order instead of being interpolated).
    max_num_steps : int, default=10000
        Steps allowed per solve beyond one per output time (forward, and
        again for the adjoint's backward solve); past it
        :class:`~dynlearn.exceptions.IntegrationError` is raised, so no solve hangs.
    adjoint_params : tuple of Tensor, default=None
        Tensors to differentiate with the adjoint when ``func`` is not a module.
    stats : SolverStats, default=None
        Receives evaluation counts.

    Returns
    -------
    Tensor of shape (n_times, batch, ...)

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import solve_ode
    >>> y = solve_ode(lambda t, y: -y, torch.ones(1, 1), torch.tensor([0.0, 1.0]), rtol=1e-8, atol=1e-8)
    >>> round(float(y[-1, 0, 0]), 4)
    0.3679
    """
    info = ode_method(method)
    t = _check_times(t, y0)
    if y0.numel() == 0:  # no series (or no state): nothing moves, and a solver's error norm of nothing is NaN
        return y0.unsqueeze(0).expand(t.shape[0], *y0.shape).clone()
    options = _with_defaults(info, options)
    if not info.adaptive:
        steps = _fixed_steps(options, t)
        _check_fixed_budget(steps, max_num_steps)
        if not info.multistep and "step_size" in options and "grid_constructor" not in options:
            # Outputs between grid points would be interpolated linearly,
            # capping every method at second order there.
            options["grid_constructor"] = _grid_through_outputs(options.pop("step_size"))
    elif info.name in _STEP_TO_OUTPUTS and t.numel() > 1 and "step_t" not in options:
        options["step_t"] = _outside(t, options.get("jump_t"))
    return _integrate(func, y0, t, info, rtol, atol, adjoint, options, max_num_steps, adjoint_params, stats)


def solve_ode_irregular(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    times: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-3,
    atol: float = 1e-4,
    adjoint: bool = False,
    options: dict[str, Any] | None = None,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    adjoint_params: tuple[torch.Tensor, ...] | None = None,
    stats: SolverStats | None = None,
    autonomous: bool = False,
    control: ControlPath | None = None,
) -> torch.Tensor:
    """Integrate a batch where every series has its own output times.

    Series ``b`` starts from ``y0[b]`` at ``times[b, 0]`` and is reported at
    ``times[b, :]``. Each series may run forwards or backwards and may repeat
    a time (a zero-length segment keeps the state); the batch is solved once
    on a shared normalised clock (see ``_SegmentClock``) rather than on
    the union of every series' times.

    ``func(t, y)`` receives ``t`` of shape (batch,): each series' own time.
    For fixed-step methods ``options["step_size"]`` bounds the step in real
    time; the default takes one step per segment (a ResNet-like unrolling).

    ``autonomous=True`` declares that ``func`` does not depend on ``t``.
    Then, for the adaptive Runge–Kutta methods whose interpolant keeps their
    accuracy (``dopri5``, ``adaptive_heun``, ``fehlberg2``) without the
    adjoint, and when every series' times are non-decreasing, each series is
    shifted to start at 0 and the batch takes one solve on that shared clock:
    its steps follow the dynamics, and each series' outputs are interpolated
    within the steps that contain them, row by row. The segment clock must
    instead end a step on every output time of every series (with dopri5 at
    least six evaluations per segment), which costs far more when series
    have many times.

    ``control`` drives the field with known inputs: a :class:`ControlPath`
    whose knots are ``times``; ``func(t, y, u)`` then receives ``u`` of
    shape (batch, n_inputs), read on the segment being integrated (so a
    zero-order hold switches exactly at the knots, where every step ends).
    A controlled solve always takes the segment clock.

    Returns
    -------
    Tensor of shape (batch, n_times, ...)
    """
    info = ode_method(method)
    if control is not None and control.coefficients.shape[:2] != (times.shape[0], times.shape[1] - 1):
        raise input_error(
            "control",
            f"a ControlPath over the solve's times: {times.shape[0]} series of {times.shape[1]} knots",
            f"one of {control.coefficients.shape[0]} series of {control.coefficients.shape[1] + 1} knots",
            "Build the path on the same times you pass to the solve.",
        )
    if times.dim() != 2 or times.shape[0] != y0.shape[0]:
        raise input_error(
            "times",
            f"a tensor of shape (batch={y0.shape[0]}, n_times)",
            f"shape {tuple(times.shape)}",
            "Give one row of times per initial state.",
        )
    n = times.shape[1]
    if n == 1 or y0.numel() == 0:
        return y0.unsqueeze(1).expand(y0.shape[0], n, *y0.shape[1:]).clone()
    times = times.to(y0.device)
    if autonomous and control is None and _shifts_exactly(info, adjoint, times):
        return _solve_shifted(func, y0, times, info, rtol, atol, options, max_num_steps, stats)
    if autonomous and control is None and _steps_once_per_gap(info, adjoint, options):
        return _solve_fixed_steps(func, y0, times, info, max_num_steps, stats)
    if info.adaptive:
        s = _adaptive_knots(n, y0.device)
    else:  # fixed grids are built with whole steps per unit (_integer_aligned_grid)
        s = torch.arange(n, dtype=torch.float64, device=y0.device)
    clock = _SegmentClock(func, times.to(y0.device), s, control)
    options = _with_defaults(info, options)
    if info.adaptive:
        if n > 2:
            options.setdefault("jump_t", s[1:-1])
        # The last step must end on the last time too: past it the solver
        # would report an interpolated state (see _STEP_TO_OUTPUTS).
        options.setdefault("step_t", _outside(s[-1:], options["jump_t"] if n > 2 else None))
    else:
        step_size = options.pop("step_size", None)
        longest = float(times.diff(dim=1).abs().max()) if step_size else 0.0
        per_segment = max(1, math.ceil(longest / step_size - 1e-9)) if step_size else 1
        _check_fixed_budget((n - 1) * per_segment, max_num_steps)
        options["grid_constructor"] = _integer_aligned_grid(per_segment)
        options["perturb"] = True
    if adjoint and adjoint_params is None and isinstance(func, nn.Module):
        adjoint_params = tuple(p for p in func.parameters() if p.requires_grad)
    solve = (info, rtol, atol, adjoint)
    if info.multistep:
        # The clock changes speed at every knot, which a multistep formula
        # would straddle (first-order results): restart it on each segment.
        states = [y0]
        for k in range(n - 1):
            segment = s[k : k + 2]
            piece = _integrate(clock, states[-1], segment, *solve, dict(options), max_num_steps, adjoint_params, stats)
            states.append(piece[-1])
        return torch.stack(states, dim=1)
    out = _integrate(clock, y0, s, *solve, options, max_num_steps, adjoint_params, stats)
    return out.movedim(0, 1)


def _shifts_exactly(info: MethodInfo, adjoint: bool, times: torch.Tensor) -> bool:
    """Whether :func:`_solve_shifted` applies: see ``autonomous`` in :func:`solve_ode_irregular`."""
    return (
        _TORCHDIFFEQ_SOLVERS is not None
        and info.adaptive
        and not info.multistep
        and info.name not in _STEP_TO_OUTPUTS
        and not adjoint
        and bool((times.diff(dim=1) >= 0).all())
    )


def _steps_once_per_gap(info: MethodInfo, adjoint: bool, options: dict[str, Any] | None) -> bool:
    """Whether :func:`_solve_fixed_steps` applies: one fixed step per gap, no adjoint (autonomous ``func``)."""
    return info.name in FIXED_STEP_METHODS and not adjoint and not (options or {}).get("step_size")


def _solve_fixed_steps(
    func: Callable, y0: torch.Tensor, times: torch.Tensor, info: MethodInfo, max_num_steps: int,
    stats: SolverStats | None,
) -> torch.Tensor:
    """The segment clock's steps for an autonomous ``func`` (one step of each series' own gap), written out.

    The same states as the segment clock to rounding, without its knot
    search and torchdiffeq's grid per evaluation: about twice as fast per
    training step on small networks (``benchmarks/compile_paths.py``).
    Evaluations are counted and bounded, and non-finite states refused,
    as in every other solve.
    """
    n = times.shape[1]
    _check_fixed_budget(n - 1, max_num_steps)
    guarded = _GuardedField(func, (n - 1) * info.stages + 2 * info.stages + 2, stats)
    start = times[:, 0].to(y0.dtype)  # the field does not read it
    solution = fixed_rollout(info.name, lambda y: guarded(start, y), y0, times)
    if stats is not None:
        stats.nfe_forward = stats.nfe
    if not torch.isfinite(solution).all():
        raise IntegrationError(
            f"The {info.name} solve produced non-finite states (the vector field blew up). {_ADVICE}"
        )
    return solution


def _solve_shifted(
    func: Callable,
    y0: torch.Tensor,
    times: torch.Tensor,
    info: MethodInfo,
    rtol: float,
    atol: float,
    options: dict[str, Any] | None,
    max_num_steps: int,
    stats: SolverStats | None,
) -> torch.Tensor:
    """Every series on its own clock shifted to start at 0, in one adaptive solve (autonomous ``func``)."""
    batch, n = times.shape
    start = times[:, 0]
    elapsed = (times - start[:, None]).reshape(-1)
    if not bool(elapsed.max() > 0):  # nothing moves: every output is the start state
        return y0.unsqueeze(1).repeat(1, n, *([1] * (y0.dim() - 1)))
    order = torch.sort(elapsed, stable=True).indices
    rows = torch.div(order, n, rounding_mode="floor")

    def shifted(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return func(start + t.to(start.dtype), y)

    layers = MLPLayers.declared_by(func)
    if layers is not None and not layers.reads_time:  # an autonomous field is the same function on any clock
        shifted.mlp_layers = lambda: layers  # type: ignore[attr-defined]

    outputs = _integrate(
        shifted, y0, elapsed[order], info, rtol, atol, False, _with_defaults(info, options), max_num_steps, None,
        stats, rows=rows,
    )  # fmt: skip
    return outputs[torch.argsort(order)].reshape(batch, n, *y0.shape[1:])


# ----------------------------------------------------------------- internals
def _check_times(t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
    if t.dim() != 1 or t.numel() < 1:
        raise input_error("t", "a 1-D tensor of output times", f"shape {tuple(t.shape)}", "Pass t of shape (n_times,).")
    if not torch.isfinite(t).all():
        raise input_error("t", "finite output times", "NaN or inf", "Remove non-finite times.")
    if t.numel() > 1:
        d = t.diff()
        if not ((d > 0).all() or (d < 0).all()):
            raise input_error(
                "t",
                "strictly increasing or strictly decreasing output times",
                "repeated or unordered times",
                "Sort the times and drop duplicates.",
            )
    return t.to(y0.device)


def _with_defaults(info: MethodInfo, options: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the caller's options over dynlearn's defaults for ``info``."""
    return {**_DEFAULT_OPTIONS.get(info.name, {}), **(options or {})}


def _grid_through_outputs(step_size: float) -> Callable:
    """Steps of ``step_size`` from the first time, with every output time a step end."""

    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        span = float(t[-1] - t[0])
        n_steps = max(1, math.ceil(abs(span) / step_size - 1e-9))
        uniform = t[0] + torch.arange(n_steps, dtype=t.dtype, device=t.device) * math.copysign(step_size, span)
        # A uniform point within rounding of an output time would add a step of ~1e-16.
        ordered = t.sort().values
        right = torch.searchsorted(ordered, uniform).clamp(1, len(ordered) - 1)
        gap = torch.minimum((uniform - ordered[right - 1]).abs(), (uniform - ordered[right]).abs())
        merged = torch.cat([uniform[gap > 1e-9 * step_size], t]).unique()
        # torchdiffeq asks reversed solves for a decreasing grid.
        return merged if span >= 0 else merged.flip(0)

    return grid


def _outside(t: torch.Tensor, excluded: Any) -> torch.Tensor:
    """``t`` without the times in ``excluded``: torchdiffeq refuses a time in both step_t and jump_t."""
    if excluded is None:
        return t
    excluded = torch.as_tensor(excluded, dtype=t.dtype, device=t.device)
    return t[~torch.isin(t, excluded)]


def _integer_aligned_grid(per_unit: int) -> Callable:
    """A fixed-step grid with ``per_unit`` steps per unit that hits every integer."""

    def grid(func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo, hi = round(float(t[0]) * per_unit), round(float(t[-1]) * per_unit)
        step = 1 if hi >= lo else -1  # torchdiffeq asks reversed solves for a decreasing grid
        return torch.arange(lo, hi + step, step, dtype=t.dtype, device=t.device) / per_unit

    return grid


def _fixed_steps(options: dict[str, Any], t: torch.Tensor) -> int:
    step_size = options.get("step_size")
    if step_size is None:
        return max(t.numel() - 1, 1)
    if not step_size > 0:
        raise input_error("options['step_size']", "a positive step", repr(step_size), "Pass e.g. 0.01.")
    # Output times between grid points become step ends too.
    return math.ceil(float((t[-1] - t[0]).abs()) / step_size) + max(t.numel() - 2, 0)


def _check_fixed_budget(steps: int, max_num_steps: int) -> None:
    if steps > max_num_steps:
        raise IntegrationError(
            f"A fixed-step solve would take {steps} steps, more than max_num_steps={max_num_steps}. "
            "Use a larger step_size, an adaptive solver, or raise max_num_steps."
        )


def _integrate(
    func: Callable,
    y0: torch.Tensor,
    t: torch.Tensor,
    info: MethodInfo,
    rtol: float,
    atol: float,
    adjoint: bool,
    options: dict[str, Any],
    max_num_steps: int,
    adjoint_params: tuple[torch.Tensor, ...] | None,
    stats: SolverStats | None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    # Every output time ends a step, so a solve with many outputs is allowed
    # one step per output on top of the budget: the limit is for stalls, not
    # for dense output grids. (Row by row outputs, see _odeint_stacked, are
    # interpolated and end no step.)
    limit = (max_num_steps + (len(t) if rows is None else 1)) * info.stages + 2 * info.stages + 2
    guarded = _GuardedField(func, limit, stats)
    if info.adaptive:
        options.setdefault("max_num_steps", max_num_steps)
    kwargs = dict(rtol=rtol, atol=atol, method=info.name, options=options)
    try:
        if adjoint:
            if adjoint_params is None and not isinstance(func, nn.Module):
                raise input_error(
                    "func",
                    "an nn.Module when adjoint=True",
                    type(func).__name__,
                    "Wrap the vector field in an nn.Module or pass adjoint_params.",
                )
            solution = odeint_adjoint(
                guarded,
                y0,
                t,
                adjoint_params=adjoint_params if adjoint_params is not None else tuple(func.parameters()),
                **kwargs,
            )
        elif info.adaptive:
            solution = _odeint_stacked(guarded, y0, t, rows=rows, **kwargs)
        else:
            solution = odeint(guarded, y0, t, **kwargs)
    except (AssertionError, StepFailure) as error:
        raise IntegrationError(f"The {info.name} solve failed: {error}. {_ADVICE}") from None
    if stats is not None:
        stats.nfe_forward = stats.nfe
    guarded.calls = 0  # the adjoint's backward solve gets its own budget
    if not torch.isfinite(solution).all():
        raise IntegrationError(
            f"The {info.name} solve produced non-finite states (the vector field blew up). {_ADVICE}"
        )
    return solution


def _odeint_stacked(
    func: Callable, y0: torch.Tensor, t: torch.Tensor, *, rows: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    """``torchdiffeq.odeint`` for an adaptive method, with the outputs stacked instead of written into a buffer.

    torchdiffeq writes output ``i`` into row ``i`` of a preallocated tensor;
    backpropagating through each of those writes copies the gradient of the
    whole buffer, so the backward pass costs O(n_times²) memory traffic. A
    latent ODE decoded at 100 times spent about a third of its training
    iteration there. Here the same solver takes the same steps, and the
    outputs that fall in one step are interpolated together, with the same
    arithmetic per output as torchdiffeq's (a few operations per step
    instead of per output), then concatenated once: same states, same
    evaluations, O(n_times) backward.

    With ``rows`` (one batch row per time), ``t`` need only be
    non-decreasing from the start time and output ``i`` is row ``rows[i]``
    at ``t[i]``: the result has shape ``(len(t), *y0.shape[1:])``. The
    solver then runs from ``t[0]`` to ``t[-1]`` without ending a step on
    any output.
    """
    if writes_out(kwargs["method"], y0, kwargs["rtol"], kwargs["atol"], kwargs["options"]):
        return solve_written_out(func, y0, t, kwargs["method"], kwargs["rtol"], kwargs["atol"], kwargs["options"], rows)
    if _TORCHDIFFEQ_SOLVERS is None:  # pragma: no cover
        return odeint(func, y0, t, **kwargs)
    span = t if rows is None else torch.stack([t[0], t[-1]])
    shapes, func, y0, span, rtol, atol, method, options, _, _ = _torchdiffeq_inputs(
        func, y0, span, kwargs["rtol"], kwargs["atol"], kwargs["method"], kwargs["options"], None,
        _TORCHDIFFEQ_SOLVERS,
    )  # fmt: skip
    solver = _TORCHDIFFEQ_SOLVERS[method](func=func, y0=y0, rtol=rtol, atol=atol, **options)
    if shapes is not None or not isinstance(solver, _RKSolver):  # pragma: no cover - every adaptive method is RK
        if rows is not None:
            raise RuntimeError(f"row-by-row outputs need a Runge-Kutta solver with an interpolant, not {method}")
        return solver.integrate(t)
    # torchdiffeq's input handling negates decreasing times (and the field); rows come non-decreasing.
    t = (span if rows is None else t).to(solver.dtype)
    solver._before_integrate(span.to(solver.dtype))
    at_start = 1 if rows is None else int(torch.searchsorted(t, t[0], right=True))
    pieces = [solver.y0.unsqueeze(0) if rows is None else solver.y0[rows[:at_start]]]
    times = t.tolist()
    i = at_start
    step_end = float(solver.rk_state.t1.detach())
    while i < len(times):
        steps = 0
        while times[i] > step_end:
            if steps >= solver.max_num_steps:
                raise AssertionError(f"max_num_steps exceeded ({steps}>={solver.max_num_steps})")
            solver.rk_state = solver._adaptive_step(solver.rk_state)
            step_end = float(solver.rk_state.t1.detach())
            steps += 1
        end = bisect.bisect_right(times, step_end, i)
        inside = None if rows is None else rows[i:end]
        pieces.append(_interpolate(solver.rk_state, t[i:end], inside).to(solver.y0.dtype))
        i = end
    return torch.cat(pieces)


def _interpolate(state: Any, times: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """torchdiffeq's quartic interpolant of one step at several ``times`` at once (the same arithmetic per time).

    Without ``rows`` every batch row is reported at every time, shape
    ``(len(times), *state_shape)``; with ``rows``, row ``rows[i]`` at
    ``times[i]``, shape ``(len(times), *state_shape[1:])``.
    """
    coefficients = state.interp_coeff
    x = ((times - state.t0) / (state.t1 - state.t0)).to(coefficients[0].dtype)
    if rows is not None:
        coefficients = [coefficient[rows] for coefficient in coefficients]
        x = x.reshape((-1,) + (1,) * (coefficients[0].dim() - 1))
    else:
        x = x.reshape((-1,) + (1,) * coefficients[0].dim())
    total = coefficients[0] + x * coefficients[1]
    power = x
    for coefficient in coefficients[2:]:
        power = power * x
        total = total + power * coefficient
    return total
