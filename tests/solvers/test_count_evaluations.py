"""count_evaluations: every ODE solve inside the block is counted, forward and backward apart."""

from __future__ import annotations

import pytest
import torch

from dynlearn.nn import MLPVectorField
from dynlearn.solvers import SolverStats, count_evaluations, solve_ode, solve_ode_irregular


def _field(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPVectorField(3, (8,), "tanh")


def _y0(batch=5, seed=1):
    return torch.randn(batch, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("n_steps", "n_outputs"), [(8, 2), (16, 5)])
def test_a_fixed_rk4_solve_of_n_steps_counts_four_evaluations_per_step(n_steps, n_outputs):
    t = torch.linspace(0.0, 1.0, n_outputs)  # steps of 1/8 and 1/16 end exactly on the outputs
    with torch.no_grad(), count_evaluations() as counted:
        solve_ode(_field(), _y0(), t, method="rk4", options={"step_size": 1.0 / n_steps})
    assert counted.nfe == counted.nfe_forward == 4 * n_steps
    assert counted.nfe_backward == 0


@pytest.mark.parametrize("adjoint", [False, True])
def test_dopri5_counts_equal_the_solve_stats_forward_and_backward(adjoint):
    field, y0 = _field(), _y0().requires_grad_()
    stats = SolverStats()
    with count_evaluations() as counted:
        out = solve_ode(field, y0, torch.linspace(0.0, 2.0, 7), method="dopri5", adjoint=adjoint, stats=stats)
        assert counted.nfe == stats.nfe > 0  # read inside the block: updated as the solve runs
        out.sum().backward()
    assert (counted.nfe, counted.nfe_forward, counted.nfe_backward) == (stats.nfe, stats.nfe_forward, stats.nfe_backward)
    assert (counted.nfe_backward > 0) == adjoint


def test_every_solve_in_the_block_adds_up_and_nested_blocks_count_their_own_part():
    field, y0 = _field(), _y0()
    first, second = SolverStats(), SolverStats()
    times = torch.sort(torch.rand(5, 6, generator=torch.Generator().manual_seed(2)) * 3, dim=1).values
    with torch.no_grad(), count_evaluations() as outer:
        solve_ode(field, y0, torch.linspace(0.0, 1.0, 3), stats=first)
        with count_evaluations() as inner:
            solve_ode_irregular(field, y0, times, stats=second)
    assert inner.nfe == second.nfe > 0
    assert outer.nfe == first.nfe + second.nfe


def test_nothing_is_counted_outside_a_block():
    with count_evaluations() as counted:
        pass
    with torch.no_grad():
        solve_ode(_field(), _y0(), torch.linspace(0.0, 1.0, 3))
    assert counted.nfe == 0


def test_the_block_closes_when_the_solve_fails():
    from dynlearn.exceptions import IntegrationError
    from dynlearn.solvers import _ode

    with pytest.raises(IntegrationError), count_evaluations():
        solve_ode(lambda t, y: y * 0 + float("inf"), _y0(), torch.linspace(0.0, 1.0, 3), method="rk4",
                  options={"step_size": 0.5})
    assert _ode._OPEN_COUNTS == []
