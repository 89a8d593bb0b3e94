"""solve_hamiltonian: convergence order, energy over long times, per-series clocks, reversibility, gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from scipy.integrate import solve_ivp

from dynlearn.solvers import solve_hamiltonian, solve_ode

Gradient = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ORDERS = {"leapfrog": 2, "yoshida4": 4, "implicit_midpoint": 2}
# Step sizes whose errors stay far above rounding (yoshida4 at 0.025: ~1e-7).
STEPS = (0.2, 0.1, 0.05, 0.025)
HORIZON = 5.0


def _f64(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@dataclass(frozen=True)
class Hamiltonian:
    """``∂H/∂q``, ``∂H/∂p``, initial states and the solution at ``HORIZON`` (from ``t = 0``)."""

    grad_q: Gradient
    grad_p: Gradient
    q0: torch.Tensor
    p0: torch.Tensor
    final: tuple[torch.Tensor, torch.Tensor]
    separable: bool = True


def _oscillator() -> Hamiltonian:
    """``H = (q² + p²) / 2``: rotation at unit angular frequency."""
    q0, p0 = _f64([[1.0, 0.0], [0.3, -0.2]]), _f64([[0.0, 1.0], [-0.5, 0.7]])
    c, s = math.cos(HORIZON), math.sin(HORIZON)
    return Hamiltonian(lambda q, p, t: q, lambda q, p, t: p, q0, p0, (c * q0 + s * p0, c * p0 - s * q0))


def _pendulum() -> Hamiltonian:
    """``H = p² / 2 - cos q``, with a tightly integrated reference (scipy DOP853)."""
    q0, p0 = _f64([[1.0], [2.5], [-0.4]]), _f64([[0.0], [0.3], [1.2]])

    def field(t: float, y):
        q, p = y[:3], y[3:]
        return [*p, *(-math.sin(x) for x in q)]

    reference = solve_ivp(field, (0.0, HORIZON), [*q0[:, 0], *p0[:, 0]], method="DOP853", rtol=1e-13, atol=1e-13)
    end = torch.as_tensor(reference.y[:, -1], dtype=torch.float64)
    return Hamiltonian(lambda q, p, t: torch.sin(q), lambda q, p, t: p, q0, p0, (end[:3, None], end[3:, None]))


def _quartic_rotor() -> Hamiltonian:
    """Non-separable ``H = (q² + p²)² / 4``: a rotation whose speed is ``r² = q² + p²``."""
    q0, p0 = _f64([[1.0], [0.6]]), _f64([[0.2], [-0.9]])
    angle = (q0**2 + p0**2) * HORIZON
    final = (q0 * torch.cos(angle) + p0 * torch.sin(angle), p0 * torch.cos(angle) - q0 * torch.sin(angle))
    return Hamiltonian(
        lambda q, p, t: (q**2 + p**2) * q, lambda q, p, t: (q**2 + p**2) * p, q0, p0, final, separable=False
    )


PROBLEMS = {"oscillator": _oscillator(), "pendulum": _pendulum(), "quartic_rotor": _quartic_rotor()}
CONVERGENCE_CASES = [
    (method, name)
    for method in ORDERS
    for name in PROBLEMS
    if PROBLEMS[name].separable or method == "implicit_midpoint"
]


def _final_error(problem: Hamiltonian, method: str, step_size: float) -> float:
    times = torch.tensor([0.0, HORIZON], dtype=torch.float64).expand(len(problem.q0), -1)
    q, p = solve_hamiltonian(
        problem.grad_q,
        problem.grad_p,
        problem.q0,
        problem.p0,
        times,
        method=method,
        step_size=step_size,
        separable=problem.separable,
    )
    q_end, p_end = problem.final
    return max(float((q[:, -1] - q_end).abs().max()), float((p[:, -1] - p_end).abs().max()))


@pytest.mark.parametrize("method, name", CONVERGENCE_CASES)
def test_observed_convergence_order_matches_the_method(method, name):
    errors = [_final_error(PROBLEMS[name], method, h) for h in STEPS]
    observed = [math.log2(coarse / fine) for coarse, fine in zip(errors, errors[1:])]
    assert observed == pytest.approx([ORDERS[method]] * len(observed), abs=0.1), (errors, observed)


# --------------------------------------------------------------- long times
ENERGY_STEP = 0.25
ENERGY_STEPS = 100_000


def _oscillator_energy_error(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``|H - H(0)|`` along one unit oscillator started at ``q = 1, p = 0`` (``H(0) = 1/2``)."""
    return ((q**2 + p**2) / 2 - 0.5).abs().flatten()


def _tenths(error: torch.Tensor) -> tuple[float, float]:
    """Largest error over the first and over the last tenth of the run."""
    tenth = len(error) // 10
    return float(error[:tenth].max()), float(error[-tenth:].max())


def test_leapfrog_energy_stays_bounded_where_rk4_drifts():
    """10^5 steps of h = 0.25 on a unit oscillator.

    Leapfrog conserves ``H̃ = p²/2 + (1 - h²/4) q²/2`` exactly, so its energy
    error oscillates in ``[0, h²/8]`` forever; rk4 damps the oscillator by a
    factor ``1 - h⁶/72`` of energy per step, a loss that keeps growing.
    """
    every = 10
    times = (torch.arange(ENERGY_STEPS // every + 1, dtype=torch.float64) * (every * ENERGY_STEP))[None]
    q0, p0 = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    q, p = solve_hamiltonian(
        lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, step_size=ENERGY_STEP, max_num_steps=ENERGY_STEPS
    )
    leapfrog = _oscillator_energy_error(q, p)
    first, last = _tenths(leapfrog)
    assert last <= 1.05 * first
    assert float(leapfrog.max()) <= 1.01 * ENERGY_STEP**2 / 8

    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # y @ rotation = (p, -q)
    coarse_times = times[0, ::10]
    with torch.no_grad():
        y = solve_ode(
            lambda t, y: y @ rotation,
            torch.tensor([[1.0, 0.0]], dtype=torch.float64),
            coarse_times,
            method="rk4",
            options={"step_size": ENERGY_STEP},
            max_num_steps=ENERGY_STEPS + len(coarse_times),
        )
    rk4 = _oscillator_energy_error(y[:, 0, 0], y[:, 0, 1])
    rk4_first, rk4_last = _tenths(rk4)
    assert rk4_last >= 5 * rk4_first
    # Roughly linear: about twice the halfway loss at the end (1.8 once saturation bends it).
    assert 1.5 <= float(rk4[-1] / rk4[len(rk4) // 2]) <= 2.5
    assert float(rk4[-1]) >= 10 * float(leapfrog.max())


def test_implicit_midpoint_conserves_the_quadratic_energy_of_an_oscillator():
    """The midpoint rule keeps quadratic invariants exactly; what is left is the iteration's tolerance.

    Each step stops the iteration up to ``implicit_tol``, always on the same
    side, so over 1000 steps the energy error grows with the tolerance.
    """
    times = torch.linspace(0.0, 250.0, 101, dtype=torch.float64)[None]
    q0, p0 = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    solve = dict(method="implicit_midpoint", step_size=0.25)
    errors = {}
    for tol in (1e-14, 1e-10):
        q, p = solve_hamiltonian(lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, implicit_tol=tol, **solve)
        errors[tol] = float(_oscillator_energy_error(q, p).max())
    assert errors[1e-14] < 1e-12
    assert errors[1e-10] < 1e-7


def test_implicit_midpoint_converges_in_float32_with_the_default_tolerance():
    """1e-10 is below float32 resolution; the tolerance is raised to what the dtype can resolve.

    Held to 1e-10, iterates of this batch keep trading ulps (changes ~4e-8)
    and the solve would fail for want of precision, not of convergence.
    """
    generator = torch.Generator().manual_seed(0)
    q0, p0 = torch.randn(64, 3, generator=generator), torch.randn(64, 3, generator=generator)
    times = torch.linspace(0.0, 2.0, 11).expand(64, -1)
    q, p = solve_hamiltonian(
        lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, method="implicit_midpoint", step_size=0.05
    )
    assert q.dtype == torch.float32
    energy = (q**2 + p**2).sum(-1) / 2
    torch.testing.assert_close(energy, energy[:, :1].expand_as(energy), rtol=1e-5, atol=0)


# ---------------------------------------------------------- per-series clocks
def _forced_grad_q(q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``H = p²/2 - q cos t``: a force that only the series' own time can give."""
    return -torch.cos(t)[:, None].expand_as(q)


def _forced_exact(q0: torch.Tensor, p0: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t0 = times[:, :1]
    p = p0 + torch.sin(times) - torch.sin(t0)
    q = q0 + (p0 - torch.sin(t0)) * (times - t0) - torch.cos(times) + torch.cos(t0)
    return q[..., None], p[..., None]


def _solve_forced(q0, p0, times, **options):
    return solve_hamiltonian(_forced_grad_q, lambda q, p, t: p, q0, p0, times, **options)


# The batch iterates the implicit midpoint until its slowest series converges,
# so a series solved alone stops earlier, within the iteration's tolerance.
@pytest.mark.parametrize("method, atol", [("leapfrog", 1e-14), ("yoshida4", 1e-14), ("implicit_midpoint", 1e-9)])
def test_irregular_batch_equals_separate_solves_of_each_series(irregular_times, method, atol):
    q0, p0 = _f64([[1.0], [-0.5], [0.2], [2.0]]), _f64([[0.0], [0.4], [-1.0], [0.3]])
    q, p = _solve_forced(q0, p0, irregular_times, method=method)
    for b in range(len(q0)):
        q_b, p_b = _solve_forced(q0[b : b + 1], p0[b : b + 1], irregular_times[b : b + 1], method=method)
        torch.testing.assert_close(q[b : b + 1], q_b, rtol=0, atol=atol)
        torch.testing.assert_close(p[b : b + 1], p_b, rtol=0, atol=atol)


@pytest.mark.parametrize("method, bound", [("leapfrog", 2e-5), ("yoshida4", 1e-9), ("implicit_midpoint", 2e-5)])
def test_irregular_batch_follows_each_series_own_clock(irregular_times, method, bound):
    """Forwards, backwards, a repeated time, a late start: every row against its exact solution."""
    q0, p0 = _f64([[1.0], [-0.5], [0.2], [2.0]]), _f64([[0.0], [0.4], [-1.0], [0.3]])
    q, p = _solve_forced(q0, p0, irregular_times, method=method, step_size=0.01)
    q_exact, p_exact = _forced_exact(q0, p0, irregular_times)
    assert float((q - q_exact).abs().max()) < bound
    assert float((p - p_exact).abs().max()) < bound
    # The repeated time 1.0 in row 1 is a zero-length segment: the state is kept as it was.
    assert torch.equal(q[1, 1], q[1, 2]) and torch.equal(p[1, 1], p[1, 2])


def test_a_single_output_time_returns_the_initial_state():
    q0, p0 = _f64([[1.0, 2.0]]), _f64([[3.0, 4.0]])
    q, p = solve_hamiltonian(lambda q, p, t: q, lambda q, p, t: p, q0, p0, _f64([[0.7]]))
    assert torch.equal(q, q0[:, None]) and torch.equal(p, p0[:, None])


# ---------------------------------------------------------- reversibility
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_symmetric_methods_retrace_their_steps_backwards(method):
    """Forward to t = 10 and back, both in one solve and as two solves: the start comes back."""
    pendulum = PROBLEMS["pendulum"]
    there_and_back = torch.tensor([0.0, 10.0, 0.0], dtype=torch.float64).expand(len(pendulum.q0), -1)
    solve = dict(method=method, step_size=0.1)
    q, p = solve_hamiltonian(pendulum.grad_q, pendulum.grad_p, pendulum.q0, pendulum.p0, there_and_back, **solve)
    # The pendulum really moved, so coming back is not trivial.
    assert float((q[:, 1] - pendulum.q0).abs().max()) > 0.1
    torch.testing.assert_close(q[:, 2], pendulum.q0, rtol=0, atol=1e-10)
    torch.testing.assert_close(p[:, 2], pendulum.p0, rtol=0, atol=1e-10)

    back = there_and_back[:, 1:]
    q_back, p_back = solve_hamiltonian(pendulum.grad_q, pendulum.grad_p, q[:, 1], p[:, 1], back, **solve)
    torch.testing.assert_close(q_back[:, -1], pendulum.q0, rtol=0, atol=1e-10)
    torch.testing.assert_close(p_back[:, -1], pendulum.p0, rtol=0, atol=1e-10)


# ---------------------------------------------------------- gradients
GRAD_TIMES = _f64([[0.0, 0.3, 0.8], [1.0, 0.6, 0.6]])


def _inputs() -> list[torch.Tensor]:
    q0, p0 = _f64([[0.5, -0.2], [1.0, 0.3]]), _f64([[0.1, 0.4], [-0.3, 0.2]])
    stiffness, mass = torch.tensor(1.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    return [x.requires_grad_(True) for x in (q0, p0, stiffness, mass)]


def test_leapfrog_gradients_pass_gradcheck():
    """Through q0, p0, a parameter of grad_q (stiffness) and one of grad_p (mass)."""

    def solution(q0, p0, stiffness, mass):
        return solve_hamiltonian(
            lambda q, p, t: stiffness * q + 0.1 * q**3,
            lambda q, p, t: p / mass,
            q0,
            p0,
            GRAD_TIMES,
            step_size=0.1,
        )

    assert torch.autograd.gradcheck(solution, _inputs())


def test_implicit_midpoint_gradients_pass_gradcheck():
    """Gradients flow through the fixed-point iteration; a tight tolerance makes it exact to rounding."""

    def solution(q0, p0, stiffness, mass):
        # H = |p|² / (2 mass) + stiffness |q|² / 2 + |q|² |p|² / 20
        return solve_hamiltonian(
            lambda q, p, t: stiffness * q + 0.1 * (p**2).sum(1, keepdim=True) * q,
            lambda q, p, t: p / mass + 0.1 * (q**2).sum(1, keepdim=True) * p,
            q0,
            p0,
            GRAD_TIMES,
            method="implicit_midpoint",
            separable=False,
            step_size=0.1,
            implicit_tol=1e-14,
        )

    assert torch.autograd.gradcheck(solution, _inputs())


@pytest.mark.parametrize("method, per_step", [("leapfrog", 2), ("yoshida4", 6)])
def test_explicit_methods_evaluate_as_many_gradients_per_step_as_registered(method, per_step):
    from dynlearn.solvers import symplectic_method

    calls = {"q": 0, "p": 0}

    def grad_q(q, p, t):
        calls["q"] += 1
        return q

    def grad_p(q, p, t):
        calls["p"] += 1
        return p

    steps = 40
    times = _f64([[0.0, 1.0, 2.0]])
    solve_hamiltonian(grad_q, grad_p, _f64([[1.0]]), _f64([[0.0]]), times, method=method, step_size=2.0 / steps)
    assert symplectic_method(method).stages == per_step
    # One dH/dq before the first step; every later one is shared by two steps.
    assert calls["q"] + calls["p"] == per_step * steps + 1
