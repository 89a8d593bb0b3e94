"""fixed_step: the written-out Euler, midpoint and rk4 steps ODE-RNN's inline loop takes."""

from __future__ import annotations

import math

import pytest
import torch

from dynlearn.exceptions import InputError
from dynlearn.solvers import FIXED_STEP_METHODS, fixed_step


def _error(method: str, n_steps: int) -> float:
    """Error at t=1 of dy/dt = -y from y(0) = 1 after n_steps equal steps, in float64."""
    y = torch.ones(1, 1, dtype=torch.float64)
    dt = torch.full((1, 1), 1.0 / n_steps, dtype=torch.float64)
    for _ in range(n_steps):
        y = fixed_step(method, lambda x: -x, y, dt)
    return abs(y.item() - math.exp(-1.0))


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_observed_convergence_order(method, order):
    observed = math.log2(_error(method, 16) / _error(method, 32))
    assert abs(observed - order) < 0.15, f"{method}: observed order {observed:.3f}, expected {order}"


def test_rows_take_their_own_steps_and_a_zero_step_holds():
    y = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    dt = torch.tensor([[0.1], [0.0], [-0.1]], dtype=torch.float64)
    for method in sorted(FIXED_STEP_METHODS):
        out = fixed_step(method, lambda x: -x, y, dt)
        assert out[1, 0].item() == 2.0
        assert out[0, 0].item() == pytest.approx(math.exp(-0.1), abs=1e-2)
        assert out[2, 0].item() == pytest.approx(3.0 * math.exp(0.1), abs=4e-2)


def test_unknown_method_is_refused_by_name():
    with pytest.raises(InputError, match="method.*'dopri5'"):
        fixed_step("dopri5", lambda x: -x, torch.ones(1, 1), torch.ones(1, 1))
