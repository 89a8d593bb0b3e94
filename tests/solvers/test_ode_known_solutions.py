"""solve_ode against exact solutions, and the convergence order of fixed-step methods."""

from __future__ import annotations

import math

import pytest
import torch

from dynlearn.solvers import solve_ode

# (method, rtol = atol, largest error allowed at any output time). The bounds
# are a few hundred times the tolerance: global error accumulates over steps.
ADAPTIVE = [("dopri5", 1e-10, 1e-7), ("dopri8", 1e-10, 1e-7), ("bosh3", 1e-8, 2e-6)]
# (method, step size, largest error allowed): ~C h^order with C of order one.
FIXED = [("rk4", 1e-2, 1e-7), ("midpoint", 1e-3, 2e-5), ("euler", 1e-3, 2e-2)]
OUTPUT_TIMES = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)


def _max_error(problem, t: torch.Tensor, **solve) -> float:
    solution = solve_ode(problem.field, problem.y0, t, **solve)
    exact = problem.exact(problem.y0, t[:1].expand(len(problem.y0)), t.expand(len(problem.y0), -1))
    return float((solution.movedim(0, 1) - exact).abs().max())


@pytest.mark.parametrize("method, tol, bound", ADAPTIVE)
def test_adaptive_methods_match_the_exact_solution_at_every_output_time(problem, method, tol, bound):
    assert _max_error(problem, OUTPUT_TIMES, method=method, rtol=tol, atol=tol) < bound


@pytest.mark.parametrize("method, tol, bound", ADAPTIVE)
def test_adaptive_methods_integrate_backwards_in_time(problem, method, tol, bound):
    backwards = OUTPUT_TIMES.flip(0)
    assert _max_error(problem, backwards, method=method, rtol=tol, atol=tol) < bound


@pytest.mark.parametrize("method, step_size, bound", FIXED)
def test_fixed_step_methods_match_the_exact_solution(problem, method, step_size, bound):
    assert _max_error(problem, OUTPUT_TIMES, method=method, options={"step_size": step_size}) < bound


def test_float32_state_stays_float32_and_accurate(problem):
    y0 = problem.y0.float()
    solution = solve_ode(problem.field, y0, OUTPUT_TIMES.float(), rtol=1e-6, atol=1e-6)
    exact = problem.exact(problem.y0, OUTPUT_TIMES[:1].expand(len(y0)), OUTPUT_TIMES.expand(len(y0), -1))
    assert solution.dtype == torch.float32
    assert float((solution.movedim(0, 1).double() - exact).abs().max()) < 1e-4


def test_rk45_alias_gives_dopri5_results(problem):
    solve = dict(rtol=1e-8, atol=1e-8)
    by_alias = solve_ode(problem.field, problem.y0, OUTPUT_TIMES, method="rk45", **solve)
    by_name = solve_ode(problem.field, problem.y0, OUTPUT_TIMES, method="dopri5", **solve)
    torch.testing.assert_close(by_alias, by_name, rtol=0, atol=0)


def _observed_orders(problem, t: torch.Tensor, method: str, steps: tuple[float, ...]) -> list[float]:
    """log2 of the error ratio each time the step is halved."""
    errors = [_max_error(problem, t, method=method, options={"step_size": h}) for h in steps]
    return [math.log2(coarse / fine) for coarse, fine in zip(errors, errors[1:])]


@pytest.mark.parametrize(
    "method, order, steps",
    [
        ("euler", 1, (0.02, 0.01, 0.005)),
        ("midpoint", 2, (0.1, 0.05, 0.025)),
        ("rk4", 4, (0.1, 0.05, 0.025)),
        ("explicit_adams", 4, (0.02, 0.01, 0.005)),
    ],
)
def test_fixed_step_methods_converge_at_their_order(method, order, steps, problem):
    span = torch.tensor([0.0, 2.0], dtype=torch.float64)
    assert _observed_orders(problem, span, method, steps) == pytest.approx([order, order], abs=0.15)


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_outputs_between_grid_points_keep_the_order(method, order, problem):
    """Output times every 0.1 with steps that do not divide 0.1: no interpolation may cap the order."""
    steps = (0.013, 0.0065, 0.00325) if method == "euler" else (0.03, 0.015, 0.0075)
    # The short steps that end on output times make the errors a little
    # pre-asymptotic (measured 3.86 then 3.94 for rk4): allow 0.2.
    assert _observed_orders(problem, OUTPUT_TIMES, method, steps) == pytest.approx([order, order], abs=0.2)
