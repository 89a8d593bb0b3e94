"""Known inputs inside a solve: ControlPath on the per-series segment clock."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynlearn.exceptions import InputError
from dynlearn.solvers import ControlPath, solve_ode_irregular, solve_sde_irregular

TIMES = torch.tensor([[0.0, 1.0, 3.0, 3.5], [0.0, 0.5, 1.0, 2.0]], dtype=torch.float64)
VALUES = torch.tensor([[[1.0], [2.0], [-1.0], [5.0]], [[0.0], [1.0], [2.0], [3.0]]], dtype=torch.float64)


def _integral_of_u(interpolation, method="dopri5", values=VALUES, times=TIMES, lead=None):
    """Solve dy/dt = u(t), y(0) = 0: the running integral of the path."""
    control = ControlPath(times, values, interpolation, lead)
    y0 = torch.zeros(times.shape[0], 1, dtype=torch.float64)
    return solve_ode_irregular(lambda t, y, u: u, y0, times, method=method, control=control, rtol=1e-10,
                               atol=1e-12, max_num_steps=10_000)[..., 0].numpy()


def _exact(interpolation):
    """Integrals by hand: zero-order hold, trapezoids, and the backward-difference Hermite cubic."""
    if interpolation == "previous":
        return np.array([[0, 1, 1 + 2 * 2, 5 - 0.5], [0, 0, 0.5, 0.5 + 2]])
    if interpolation == "linear":
        return np.array([[0, 1.5, 2.5, 3.5], [0, 0.25, 1.0, 3.5]])
    # Cubic on segment k: u_k + s φ + (2r - 2s) φ² + (s - r) φ³, r the rise, s the previous secant scaled to
    # this gap; its mean over the segment is u_k + s/2 + (2r - 2s)/3 + (s - r)/4.
    def mean(u, r, s):
        return u + s / 2 + (2 * r - 2 * s) / 3 + (s - r) / 4

    first = [0, 1.5, 1.5 + 2 * mean(2, -3, 2), None]
    first[3] = first[2] + 0.5 * mean(-1, 6, -3 * 0.5 / 2)
    second = [0, 0.25, 0.25 + 0.5 * mean(1, 1, 1), None]
    second[3] = second[2] + 1.0 * mean(2, 1, 2)
    return np.array([first, second])


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
@pytest.mark.parametrize("method", ["dopri5", "rk4", "explicit_adams"])
def test_the_path_integrates_exactly(interpolation, method):
    np.testing.assert_allclose(_integral_of_u(interpolation, method), _exact(interpolation), atol=1e-8)


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_a_later_knot_changes_nothing_before_it(interpolation):
    changed = VALUES.clone()
    changed[:, 2] += 10.0
    before, after = _integral_of_u(interpolation), _integral_of_u(interpolation, values=changed)
    np.testing.assert_array_equal(before[:, :2], after[:, :2])
    assert not np.allclose(before[:, 3], after[:, 3])


def test_the_cubic_reads_the_knot_before_the_first_through_lead():
    gap, value = torch.tensor([1.0, 0.5], dtype=torch.float64), torch.tensor([[0.0], [-2.0]], dtype=torch.float64)
    with_lead = _integral_of_u("cubic", lead=(gap, value))
    without = _integral_of_u("cubic")
    # Series 0: slope 1 before its first knot, its own secant 1 too, so the first segment is unchanged; series 1
    # rose by 2 over the half unit before (−2 → 0), twice its first secant, so its first segment bends.
    assert with_lead[0, 1] == pytest.approx(without[0, 1])
    assert with_lead[1, 1] != pytest.approx(without[1, 1])


def test_a_backward_segment_holds_its_earlier_knot():
    times = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[[3.0], [7.0]]], dtype=torch.float64)
    out = _integral_of_u("previous", times=times, values=values)
    # Integrating from 2 back to 1 under u = 7 (held from t = 1 on) gives -7.
    assert out[0, 1] == pytest.approx(-7.0)


def test_a_path_on_other_times_is_refused():
    control = ControlPath(TIMES[:, :3], VALUES[:, :3], "linear")
    with pytest.raises(InputError, match="control"):
        solve_ode_irregular(lambda t, y, u: u, torch.zeros(2, 1, dtype=torch.float64), TIMES, control=control)


class _InputDriven(torch.nn.Module):
    """dy = u dt + 0 dW (a diffusion floor of zero): the SDE solve must integrate the path like the ODE solve."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y, u):
        return u

    def g(self, t, y, u):
        return torch.zeros_like(y)


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_an_sde_solve_reads_the_path_gap_by_gap(interpolation):
    control = ControlPath(TIMES, VALUES, interpolation)
    y0 = torch.zeros(TIMES.shape[0], 1, dtype=torch.float64)
    out = solve_sde_irregular(_InputDriven(), y0, TIMES, step_size=1e-3, seed=0, control=control)
    # Euler steps read u at their starts: first order in the step, exact for the zero-order hold.
    np.testing.assert_allclose(out[..., 0].numpy(), _exact(interpolation), atol=0 if interpolation == "previous"
                               else 5e-3)
    with pytest.raises(InputError, match="control"):
        solve_sde_irregular(_InputDriven(), y0, TIMES[:, :3], control=control)


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_reading_by_time_agrees_with_reading_by_segment(interpolation):
    control = ControlPath(TIMES, VALUES, interpolation)
    for k in range(TIMES.shape[1] - 1):
        for fraction in (0.0, 0.3, 0.9):
            t = TIMES[:, k] + fraction * (TIMES[:, k + 1] - TIMES[:, k])
            expected = control.on_segment(torch.tensor(k), torch.tensor(fraction))
            torch.testing.assert_close(control.at(t), expected)
    # Before the first knot: the first value; a time a hair before a knot, within the tolerance, is at the knot.
    torch.testing.assert_close(control.at(torch.tensor(-1.0)), VALUES[:, 0])
    hair = TIMES[:, 1] - 1e-9
    torch.testing.assert_close(control.at(hair, tolerance=1e-6), control.on_segment(torch.tensor(1), torch.tensor(0.0)))


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_reading_many_times_at_once_agrees_with_reading_each(interpolation):
    """at_each (all the step starts of a fixed-step solve in one call) is at, time by time."""
    control = ControlPath(TIMES, VALUES, interpolation)
    starts = torch.linspace(float(TIMES.min()) - 0.5, float(TIMES.max()) + 0.5, 23, dtype=TIMES.dtype)
    starts = torch.cat([starts, TIMES[0, 1:2] - 1e-9])  # a hair before a knot, within the tolerance
    together = control.at_each(starts, tolerance=1e-6)
    assert together.shape == (len(starts), *VALUES[:, 0].shape)
    for i, start in enumerate(starts):
        torch.testing.assert_close(together[i], control.at(start, tolerance=1e-6))


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_reading_several_segments_at_once_agrees_with_reading_each(interpolation):
    """on_segments (the stages of a solver step in one call) is on_segment, segment by segment, bit for bit."""
    control = ControlPath(TIMES, VALUES, interpolation)
    k = torch.tensor([0, 2, 2, 1, TIMES.shape[1] - 2])
    fractions = torch.tensor([0.0, 0.25, 1.0, 0.6, 0.999], dtype=TIMES.dtype)
    together = control.on_segments(k, fractions)
    assert together.shape == (len(k), *VALUES[:, 0].shape)
    for i in range(len(k)):
        assert torch.equal(together[i], control.on_segment(k[i], fractions[i]))

