"""Adaptive Runge–Kutta solves written out: torchdiffeq's steps with a fraction of its tensor operations.

torchdiffeq keeps every time-like quantity of an adaptive solve in tensors,
writes each stage into one buffer through a custom autograd function, sums
the stages along that buffer's last axis and fits a quartic per step. On a
small network that bookkeeping, not the network, is much of a training
iteration: written out, an iteration of a 2-32-32-2 field on 16 series takes
0.50x the time of a plain ``odeint`` loop, of a 2-256-256-2 field on 256
series 0.80x (``benchmarks/written_out_dopri5.py``, one thread).

Here the step-size control runs on Python floats (one read from the device
per step, which torchdiffeq's accept/reject test makes too), each stage is a
chain of multiply-adds on the stages before it, the error estimate is taken
without autograd, and the outputs that fall inside an accepted step are its
dense output in one matrix product: torchdiffeq's interpolant through the
step's ends and midpoint, written as polynomial weights on the stages.

Same method, same step-size rule, same interpolant, so the same steps,
evaluations and states to rounding. Where the field jumps (``jump_t``),
the slope on its far side is taken by the next step, not when the step
reaching the jump is accepted: for a field of one network it is then a
stage of that step's fused node, and a solve that ends on a jump skips it.
One difference: step sizes are
constants to backpropagation here (as they are to the adjoint method), while
torchdiffeq lets gradients flow through the first step size, which it
chooses from the initial state and slope. Given the same ``first_step``, the
gradients agree too.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np
import torch

from ._rk_mlp import MLPLayers, mlp_step


@dataclass(frozen=True)
class Tableau:
    """An explicit embedded Runge–Kutta pair whose last stage is the solution's slope (first same as last).

    ``coupling[i]`` holds stage ``i + 1``'s weights on the stages before it;
    its last row gives the solution, so the last stage is evaluated there, at
    the end of the step. ``error`` is the difference of the two solutions'
    weights, ``midpoint`` the weights of the state halfway through the step,
    and ``order`` sets the step-size exponent ``-1 / order``.
    """

    order: int
    nodes: tuple[float, ...]
    coupling: tuple[tuple[float, ...], ...]
    error: tuple[float, ...]
    midpoint: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.coupling) + 1

    @cached_property
    def dense(self) -> np.ndarray:
        """``(4, stages)``: the weight of stage ``i`` at fraction ``x`` of a step is ``Σ_p dense[p, i] x^(p+1)``.

        The interpolant is the quartic through the state and slope at both
        ends of the step and the state at its middle (torchdiffeq's, Hairer
        et al. II.6). Every term is the start state plus a weighted sum of
        the stages times the step, so the quartic is too: its coefficients
        are linear in the stages with the weights below.
        """
        first = np.eye(self.stages)[0]
        last = np.eye(self.stages)[-1]
        solution = np.append(self.coupling[-1], 0.0)
        middle = np.asarray(self.midpoint)
        return np.stack([
            first,
            last - 4 * first - 5 * solution + 16 * middle,
            5 * first - 3 * last + 14 * solution - 32 * middle,
            2 * (last - first) - 8 * solution + 16 * middle,
        ])  # fmt: skip


# Dormand & Prince (1980), RK5(4)7FM, with Shampine's (1986) error estimate and midpoint weights.
DOPRI5 = Tableau(
    order=5,
    nodes=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    coupling=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    # The fifth-order weights less the embedded fourth-order ones Shampine pairs with his midpoint (the
    # estimate torchdiffeq uses: two thirds of the original pair's, so the same steps as torchdiffeq).
    error=(
        35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
        -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60,
    ),  # fmt: skip
    midpoint=(
        6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2,
    ),  # fmt: skip
)

TABLEAUS = {"dopri5": DOPRI5}

# Each tableau's coupling with the first slope as a stage of its own, weighted 0 on a first slope passed in: the
# step after a jump takes the field's other side of it with the step's other stages, as one fused node.
_FRESH = {name: ((0.0,), *((0.0, *row) for row in tableau.coupling)) for name, tableau in TABLEAUS.items()}

# Options the written-out solve honours; any other option goes to torchdiffeq's own solver.
_OPTIONS = frozenset({"max_num_steps", "norm", "first_step", "step_t", "jump_t"})

# torchdiffeq's step-size rule: safety factor, largest growth and largest shrink per step.
_SAFETY, _GROW, _SHRINK = 0.9, 10.0, 0.2


class StepFailure(ArithmeticError):
    """A written-out solve cannot go on (non-finite error estimate, vanishing step, step limit)."""


def writes_out(method: str, y0: Any, rtol: Any, atol: Any, options: dict[str, Any]) -> bool:
    """Whether a solve with these arguments runs written out (the rest goes to torchdiffeq's solver)."""
    return (
        method in TABLEAUS
        and isinstance(y0, torch.Tensor)
        and y0.is_floating_point()
        and isinstance(rtol, (int, float))
        and isinstance(atol, (int, float))
        and set(options) <= _OPTIONS
    )


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


def solve_written_out(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    method: str,
    rtol: float,
    atol: float,
    options: dict[str, Any],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The states at ``t`` (stacked on a new first axis), or row ``rows[i]`` at ``t[i]`` given ``rows``.

    ``t`` runs one way (with ``rows``, non-decreasing from the start time).
    ``options`` may hold ``max_num_steps`` (steps between outputs),
    ``norm`` (a callable on the scaled error, root mean square by default),
    ``first_step``, and torchdiffeq's ``step_t`` (times a step must end on)
    and ``jump_t`` (the same, where the field jumps: the slope after the
    time is evaluated afresh). Raises :class:`StepFailure` where torchdiffeq
    would fail an assertion.
    """
    tableau = TABLEAUS[method]
    norm = options.get("norm", _rms)
    max_steps = int(options.get("max_num_steps", 2**31 - 1))
    times = t.tolist()
    marks = {key: [] if options.get(key) is None else torch.as_tensor(options[key]).tolist()
             for key in ("step_t", "jump_t")}  # fmt: skip
    if rows is None and len(times) > 1 and times[-1] < times[0]:
        # Backwards in time: solve s = -t forwards with the field negated, as torchdiffeq does.
        field = lambda s, y: -func(-s, y)  # noqa: E731
        times = [-x for x in times]
        marks = {key: [-x for x in values] for key, values in marks.items()}
    else:
        field = func
    # Step and jump times from the start on, in order, each passed once, as torchdiffeq keeps them.
    ends, jumps = (sorted(x for x in marks[key] if x >= times[0]) for key in ("step_t", "jump_t"))
    next_end = next_jump = 0
    dtype, device = y0.dtype, y0.device
    # A filled 0-dim tensor, not torch.tensor: on a GPU a fill is launched with the value, no copy from the host.
    clock = lambda s: torch.full((), s, dtype=dtype, device=device)  # noqa: E731
    before, after = clock(-float("inf")), clock(float("inf"))

    # A field mlp([y, columns(t, u)]) steps through MLPStep (forwards in time; a backwards solve negates the field).
    layers = MLPLayers.declared_by(func) if field is func else None
    if layers is not None and dtype == torch.float32:  # tanh layers as sigmoids (a float64 solve keeps tanh's rounding)
        layers = layers.rescaled()
    counted = getattr(func, "counted", None)

    s0 = times[0]
    slope = field(clock(s0), y0)
    h = options.get("first_step")
    h = _first_step(field, clock, s0, y0, slope, tableau.order, rtol, atol, norm) if h is None else float(h)

    at_start = 1 if rows is None else bisect.bisect_right(times, s0)
    pieces = [y0.unsqueeze(0) if rows is None else y0[rows[:at_start]]]
    i, steps, y = at_start, 0, y0
    exponent = -1.0 / tableau.order
    while i < len(times):
        if steps >= max_steps:
            raise StepFailure(f"max_num_steps exceeded ({steps}>={max_steps})")
        if not s0 + h > s0:
            raise StepFailure(f"underflow in dt {h}")
        s1 = s0 + h
        on_end = bool(ends) and s0 < ends[next_end] < s1
        if on_end:
            s1 = ends[next_end]
            h = s1 - s0
        on_jump = bool(jumps) and s0 < jumps[next_jump] < s1
        if on_jump:
            on_end, s1 = False, jumps[next_jump]
            h = s1 - s0
        # The last stage is taken just before the step's end, as torchdiffeq does (a field that jumps at the
        # end time is read on the side the step comes from). After a jump the first slope is still to be taken,
        # just after s0: a step of one node takes it as a stage of its own (``_FRESH``), read with the others.
        fresh = slope is None
        whens = None if layers is not None and not layers.reads_time else _stage_times(
            tableau.nodes, s0, s1, h, before, after if fresh and layers is not None else None
        )  # fmt: skip
        reads = None if whens is None or layers is None else layers.at_each(whens)
        if layers is not None and not (reads is not None and _recorded(reads)):
            coupling = _FRESH[method] if fresh else tableau.coupling
            if counted is not None:
                counted(len(coupling))
            state, *later = mlp_step(coupling, h, layers, y, torch.zeros_like(y) if fresh else slope, reads)
            stages = later if fresh else [slope, *later]
            slope = stages[0]  # kept for a retry from s0 if this step is rejected
        else:
            if fresh:
                whens = whens if whens is None or layers is None else whens[1:]
                slope = field(torch.nextafter(clock(s0), after), y)
            stages = [slope]
            for when, weights in zip(whens, tableau.coupling):
                state = y
                for stage, weight in zip(stages, weights):
                    if weight != 0.0:
                        state = torch.add(state, stage, alpha=weight * h)
                stages.append(field(when, state))
        steps += 1
        with torch.no_grad():
            estimate = None
            for stage, weight in zip(stages, tableau.error):
                if weight != 0.0:
                    estimate = stage * (weight * h) if estimate is None else estimate.add(stage, alpha=weight * h)
            tolerance = torch.maximum(y.abs(), state.abs()).mul_(rtol).add_(atol)
            ratio = float(norm(estimate / tolerance))
        if ratio != ratio or ratio == float("inf"):
            raise StepFailure(f"non-finite error estimate in the step from t={s0:g} (the state blew up)")
        if ratio <= 1.0:
            done = bisect.bisect_right(times, s1, i)
            if done > i:
                pieces.append(_dense_output(tableau, y, stages, h, [(x - s0) / h for x in times[i:done]],
                                            None if rows is None else rows[i:done]))  # fmt: skip
                i, steps = done, 0
            s0, y, slope = s1, state, stages[-1]
            if on_end and next_end < len(ends) - 1:
                next_end += 1
            if on_jump:
                next_jump += int(next_jump < len(jumps) - 1)
                slope = None  # the field's other side of the jump, taken by the next step
        if ratio == 0.0:
            h *= _GROW
        else:
            h *= min(_GROW, max(_SAFETY * ratio**exponent, 1.0 if ratio < 1.0 else _SHRINK))
    return torch.cat(pieces)


def _stage_times(nodes: tuple[float, ...], s0: float, s1: float, h: float, before: torch.Tensor,
                 after: torch.Tensor | None = None) -> torch.Tensor:
    """A step's stage times ``s0 + node · h`` in ``before``'s dtype, one tensor; a stage at the step's end is
    taken just before ``s1`` (on the side the step comes from). Given ``after``, a first time just after
    ``s0`` (the first slope after a jump at ``s0``) comes before them."""
    if after is not None:
        nodes = (0.0, *nodes)
    times = torch.tensor([s1 if node == 1.0 else s0 + node * h for node in nodes], dtype=before.dtype,
                         device=before.device)  # fmt: skip
    ends = [i for i, node in enumerate(nodes) if node == 1.0]
    if ends:
        times[ends] = torch.nextafter(times[ends], before)
    if after is not None:
        times[0] = torch.nextafter(times[0], after)
    return times


def _recorded(reads: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> bool:
    """Whether a gradient must reach what the field reads besides the state (then the step goes stage by stage)."""
    return any(x is not None and x.requires_grad for pair in reads for x in pair)


def _first_step(
    field: Callable, clock: Callable, s0: float, y0: torch.Tensor, slope: torch.Tensor, order: int, rtol: float,
    atol: float, norm: Callable,
) -> float:
    """torchdiffeq's starting step (Hairer, Nørsett & Wanner, II.4), from one trial evaluation."""
    with torch.no_grad():
        scale = y0.abs() * rtol + atol
        d0, d1 = float(norm(y0 / scale)), float(norm(slope / scale))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        trial = field(clock(s0 + h0), y0 + slope * h0)
        d2 = float(norm((trial - slope) / scale)) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
    return min(100 * h0, h1)


def _dense_output(
    tableau: Tableau, y: torch.Tensor, stages: list[torch.Tensor], h: float, fractions: list[float],
    rows: torch.Tensor | None,
) -> torch.Tensor:
    """States at ``fractions`` of the step: ``(len(fractions), *y.shape)``, or row ``rows[j]`` at each."""
    x = np.asarray(fractions)[:, None]
    weights = np.concatenate([x, x**2, x**3, x**4], axis=1) @ tableau.dense * h
    weights = torch.as_tensor(weights, dtype=y.dtype, device=y.device)
    if rows is None:
        stacked = torch.stack(stages).reshape(len(stages), -1)
        return y.reshape(1, -1).add(weights @ stacked).reshape(len(fractions), *y.shape)
    start = y.index_select(0, rows)
    stacked = torch.stack(stages).index_select(1, rows).reshape(len(stages), len(fractions), -1)  # (stages, m, rest)
    return start.add(torch.einsum("ms,smd->md", weights, stacked).reshape(start.shape))
