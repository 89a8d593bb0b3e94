"""The method registry mirrors torchdiffeq; SolverStats counts the work of each pass."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq._impl.odeint import SOLVERS

from dynlearn.exceptions import InputError
from dynlearn.solvers import ODE_METHODS, SolverStats, available_ode_methods, ode_method, solve_ode, solve_ode_irregular

# torchdiffeq methods dynlearn does not offer: no gradients, or extra arguments.
NOT_OFFERED = {"scipy_solver", "fixed_adams"}
T = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)


def test_registry_lists_every_installed_torchdiffeq_method():
    assert set(ODE_METHODS) == set(SOLVERS) - NOT_OFFERED
    assert set(ODE_METHODS) <= set(available_ode_methods())


@pytest.mark.parametrize(
    "alias, target",
    [("rk45", "dopri5"), ("RK45", "dopri5"), ("rk23", "bosh3"), ("rk8", "dopri8"), ("DOPRI5", "dopri5")],
)
def test_aliases_and_case_resolve_to_the_backend_name(alias, target):
    assert ode_method(alias).name == target


def test_aliases_are_advertised_next_to_the_backend_names():
    assert {"rk45", "rk23", "rk8"} <= set(available_ode_methods())


def test_fixed_and_adaptive_flags_follow_the_backend():
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

    for name, info in ODE_METHODS.items():
        assert info.adaptive == issubclass(SOLVERS[name], AdaptiveStepsizeODESolver), name


@pytest.mark.parametrize("name", available_ode_methods())
def test_every_advertised_method_solves_a_decay(name):
    """A name that is listed but fails to integrate would break a grid search over solvers."""
    info = ode_method(name)
    options = None if info.adaptive else {"step_size": 0.01}
    solution = solve_ode(lambda t, y: -y, Y0, T, method=name, rtol=1e-7, atol=1e-7, options=options)
    expected = Y0 * torch.exp(-T)[:, None, None]
    # Loose enough for first order at step 0.01 (euler: ~2e-3 relative).
    torch.testing.assert_close(solution, expected, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("name", available_ode_methods())
def test_every_advertised_method_solves_irregular_series(name):
    """Per-series clocks change speed at every observation; no method may smear that."""
    times = torch.tensor([[0.0, 0.1, 0.7, 0.8, 2.0], [1.0, 0.9, 0.2, 0.2, -1.0]], dtype=torch.float64)
    info = ode_method(name)
    options = None if info.adaptive else {"step_size": 0.01}
    solution = solve_ode_irregular(lambda t, y: -y, Y0, times, method=name, rtol=1e-7, atol=1e-7, options=options)
    expected = Y0[:, None] * torch.exp(-(times - times[:, :1]))[..., None]
    torch.testing.assert_close(solution, expected, rtol=1e-2, atol=1e-4)


def test_non_string_method_is_an_input_error():
    with pytest.raises(InputError, match="method"):
        ode_method(5)


class _Decay(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.rate * y


@pytest.mark.parametrize("irregular", [False, True], ids=["solve_ode", "solve_ode_irregular"])
def test_stats_count_backward_evaluations_only_with_the_adjoint(irregular):
    times = torch.stack([T, T.flip(0)]) if irregular else T
    solve = solve_ode_irregular if irregular else solve_ode
    counts = {}
    for adjoint in (False, True):
        stats = SolverStats()
        solution = solve(_Decay(), Y0, times, adjoint=adjoint, stats=stats)
        forward_only = stats.nfe
        solution.sum().backward()
        counts[adjoint] = stats
        assert stats.nfe_forward == forward_only > 0
    assert counts[False].nfe_backward == 0
    assert counts[True].nfe_backward > 0
    # Both passes integrate the same dynamics: the forward work is identical.
    assert counts[True].nfe_forward == counts[False].nfe_forward


def test_stats_count_the_evaluations_of_a_fixed_grid():
    stats = SolverStats()
    # Outputs every 0.25 lie on the grid of step 0.125: no extra steps.
    solve_ode(lambda t, y: -y, Y0, T, method="rk4", options={"step_size": 0.125}, stats=stats)
    assert stats.nfe == 8 * 4  # eight steps of four stages
