"""Symplectic steppers with a known input force: dp/dt = -∂H/∂q + F(q, u(t))."""

from __future__ import annotations

import math

import pytest
import torch

from dynlearn.exceptions import InputError
from dynlearn.solvers import ControlPath, solve_hamiltonian

ORDERS = {"leapfrog": 2, "yoshida4": 4, "implicit_midpoint": 2}


def _held_oscillator():
    """A unit oscillator pushed by levels held between knots, and its exact states at the knots.

    On a gap with force u the motion is a rotation about (u, 0): (q - u) + i p turns by minus the gap.
    """
    g = torch.Generator().manual_seed(0)
    times = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)[None]
    u = torch.rand(1, 9, 1, generator=g, dtype=torch.float64) * 2 - 1
    z = complex(1.0, 0.0)
    exact = [z]
    for k in range(8):
        level = float(u[0, k, 0])
        z = (z - level) * complex(math.cos(-0.5), math.sin(-0.5)) + level
        exact.append(z)
    exact_q = torch.tensor([w.real for w in exact], dtype=torch.float64)
    exact_p = torch.tensor([w.imag for w in exact], dtype=torch.float64)
    return times, u, exact_q, exact_p


def _solve(method, times, u, step_size, interpolation="previous"):
    q0 = torch.ones(1, 1, dtype=torch.float64)
    p0 = torch.zeros(1, 1, dtype=torch.float64)
    control = ControlPath(times, u, interpolation)
    return solve_hamiltonian(lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, method=method,
                             step_size=step_size, force=lambda q, v: v, control=control)


@pytest.mark.parametrize("method", list(ORDERS))
def test_a_held_force_converges_at_the_methods_order(method):
    times, u, exact_q, exact_p = _held_oscillator()
    errors = []
    for step in (0.1, 0.05):
        q, p = _solve(method, times, u, step)
        errors.append(float(torch.hypot(q[0, :, 0] - exact_q, p[0, :, 0] - exact_p).max()))
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - ORDERS[method]) < 0.3, (errors, observed)


def test_zero_input_is_the_unforced_solve_and_later_inputs_change_no_earlier_state():
    times, u, _, _ = _held_oscillator()
    q0, p0 = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    free = solve_hamiltonian(lambda q, p, t: q, lambda q, p, t: p, q0, p0, times, step_size=0.1)
    zero = _solve("leapfrog", times, torch.zeros_like(u), 0.1)
    torch.testing.assert_close(zero, free, rtol=0, atol=1e-15)
    for interpolation in ("previous", "linear", "cubic"):
        changed = u.clone()
        changed[:, 5:] += 3.0
        a, b = _solve("yoshida4", times, u, 0.1, interpolation), _solve("yoshida4", times, changed, 0.1, interpolation)
        # Knot 5 may read its own input (linear, cubic); the states before it read none of the changed ones.
        assert torch.equal(a[0][:, :5], b[0][:, :5]) and torch.equal(a[1][:, :5], b[1][:, :5])
        assert not torch.allclose(a[0][:, 6:], b[0][:, 6:])


def test_a_force_needs_a_control_of_the_solve_and_a_state_shaped_output():
    times, u, _, _ = _held_oscillator()
    q0, p0 = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    grads = (lambda q, p, t: q, lambda q, p, t: p)
    with pytest.raises(InputError, match="control"):
        solve_hamiltonian(*grads, q0, p0, times, force=lambda q, v: v)
    with pytest.raises(InputError, match="force"):
        solve_hamiltonian(*grads, q0, p0, times, control=ControlPath(times, u))
    with pytest.raises(InputError, match="knots"):
        solve_hamiltonian(*grads, q0, p0, times, force=lambda q, v: v, control=ControlPath(times[:, :4], u[:, :4]))
    with pytest.raises(InputError, match="force"):
        solve_hamiltonian(*grads, q0, p0, times, force=lambda q, v: v.repeat(1, 2), control=ControlPath(times, u))
