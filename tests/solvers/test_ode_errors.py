"""Failures the user must see as dynlearn errors with advice, never as a hang or garbage."""

from __future__ import annotations

import math

import pytest
import torch

from dynlearn.exceptions import InputError, IntegrationError
from dynlearn.solvers import DEFAULT_MAX_NUM_STEPS, ODE_METHODS, SolverStats, solve_ode, solve_ode_irregular

Y0 = torch.ones(2, 1, dtype=torch.float64)
T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
BLOW_UP_SPAN = torch.tensor([0.0, 2.0], dtype=torch.float64)  # past the singularity at t = 1


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y


def _blow_up(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dy/dt = y²``: from ``y(0) = 1`` the solution ``1 / (1 - t)`` is infinite at t = 1."""
    return y**2


class _CountingField:
    def __init__(self):
        self.calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -y


def test_unknown_method_is_an_input_error_listing_the_available_methods():
    with pytest.raises(InputError, match="method") as error:
        solve_ode(_decay, Y0, T, method="runge_kutta_99")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "runge_kutta_99" in message
    for name in ODE_METHODS:
        assert name in message


def test_irregular_solve_rejects_unknown_methods_too():
    with pytest.raises(InputError, match="dopri5"):
        solve_ode_irregular(_decay, Y0, T.expand(2, -1), method="nope")


@pytest.mark.parametrize(
    "method, options",
    [("dopri5", None), ("bosh3", None), ("euler", {"step_size": 0.01})],
    ids=["dopri5", "bosh3", "euler"],
)
def test_a_blow_up_raises_integration_error_with_advice_and_bounded_work(method, options):
    stats = SolverStats()
    with pytest.raises(IntegrationError) as error:
        solve_ode(_blow_up, Y0, BLOW_UP_SPAN, method=method, options=options, stats=stats)
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert "rtol" in message and "max_num_steps" in message and "solver" in message
    # No hang: the evaluation budget bounds the work whatever the dynamics do.
    assert stats.nfe <= (DEFAULT_MAX_NUM_STEPS + 2) * ODE_METHODS[method].stages + 2


def test_irregular_blow_up_raises_integration_error():
    times = torch.tensor([[0.0, 0.5, 2.0], [0.0, 0.1, 0.2]], dtype=torch.float64)
    with pytest.raises(IntegrationError, match="rtol"):
        solve_ode_irregular(_blow_up, Y0, times)


def test_too_small_max_num_steps_raises_integration_error():
    oscillator = lambda t, y: torch.cat([y[:, 1:], -y[:, :1]], dim=-1)  # noqa: E731
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 50.0, 3, dtype=torch.float64)
    with pytest.raises(IntegrationError, match="max_num_steps"):
        solve_ode(oscillator, y0, t, rtol=1e-8, atol=1e-8, max_num_steps=5)
    # The same solve with the default budget succeeds: the limit, not the problem, failed it.
    assert torch.isfinite(solve_ode(oscillator, y0, t, rtol=1e-8, atol=1e-8)).all()


def test_irregular_too_small_max_num_steps_raises_integration_error():
    times = torch.tensor([[0.0, 30.0, 60.0]], dtype=torch.float64)
    oscillator = lambda t, y: torch.cat([y[:, 1:], -y[:, :1]], dim=-1)  # noqa: E731
    with pytest.raises(IntegrationError, match="max_num_steps"):
        solve_ode_irregular(oscillator, torch.tensor([[1.0, 0.0]]), times, rtol=1e-8, atol=1e-8, max_num_steps=5)


def test_fixed_step_budget_is_checked_before_any_evaluation():
    field = _CountingField()
    with pytest.raises(IntegrationError, match="max_num_steps"):
        solve_ode(field, Y0, T, method="rk4", options={"step_size": 1e-9})
    assert field.calls == 0


def test_irregular_fixed_step_budget_is_checked_before_any_evaluation():
    field = _CountingField()
    with pytest.raises(IntegrationError, match="max_num_steps"):
        solve_ode_irregular(field, Y0, T.expand(2, -1), method="euler", options={"step_size": 1e-6}, max_num_steps=100)
    assert field.calls == 0


@pytest.mark.parametrize(
    "t",
    [[0.0, 1.0, 0.5], [0.0, 1.0, 1.0], [[0.0, 1.0]], [0.0, float("nan")]],
    ids=["non-monotone", "repeated", "2-D", "nan"],
)
def test_bad_output_times_are_input_errors_naming_t(t):
    with pytest.raises(InputError, match="^t:"):
        solve_ode(_decay, Y0, torch.tensor(t, dtype=torch.float64))


def test_irregular_times_of_the_wrong_shape_are_input_errors():
    with pytest.raises(InputError, match="^times:"):
        solve_ode_irregular(_decay, Y0, torch.zeros(3, 4, dtype=torch.float64))


def test_non_positive_step_size_is_an_input_error():
    with pytest.raises(InputError, match="step_size"):
        solve_ode(_decay, Y0, T, method="rk4", options={"step_size": 0.0})


def test_adjoint_with_a_plain_function_needs_adjoint_params():
    with pytest.raises(InputError, match="nn.Module"):
        solve_ode(_decay, Y0, T, adjoint=True)
    theta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    solution = solve_ode(lambda t, y: -theta * y, Y0, T, adjoint=True, adjoint_params=(theta,))
    solution.sum().backward()
    assert theta.grad is not None and float(theta.grad) < 0  # faster decay, smaller states


def test_user_jump_t_on_an_output_time_is_accepted():
    """dopri8 steps to every output time; a user's jump there must not collide with that in the backend."""
    solution = solve_ode(_decay, Y0, T, method="dopri8", rtol=1e-10, atol=1e-10, options={"jump_t": T[1:2]})
    torch.testing.assert_close(solution[:, 0, 0], torch.exp(-T), rtol=1e-8, atol=1e-10)



def test_dense_output_grid_is_not_a_stall():
    """Many output times need many steps; the step budget counts steps beyond one per output."""
    times = torch.linspace(0.0, 10.0, 3001, dtype=torch.float64)[None]  # the per-series clock ends a step at each
    y = solve_ode_irregular(lambda t, y: -y, torch.ones(1, 1, dtype=torch.float64), times, max_num_steps=100)
    assert y.shape == (1, 3001, 1)
    assert abs(float(y[0, -1, 0]) - math.exp(-10.0)) < 1e-5


@pytest.mark.parametrize("method", ["dopri5", "rk4", "bosh3"])
def test_an_empty_batch_gives_empty_outputs_instead_of_a_misleading_step_failure(method):
    """The error norm of no states is NaN: a solve of zero series used to fail with 'underflow in dt nan'."""
    from dynlearn.solvers import solve_ode_irregular

    field = torch.nn.Linear(2, 2)
    out = solve_ode(lambda t, y: field(y), torch.zeros(0, 2), torch.linspace(0.0, 1.0, 5), method=method)
    assert out.shape == (5, 0, 2)
    irregular = solve_ode_irregular(lambda t, y: field(y), torch.zeros(0, 2), torch.zeros(0, 4), method=method)
    assert irregular.shape == (0, 4, 2)
