"""DynamicsPenalty integrates ‖f‖² and ‖εᵀ ∂f/∂z‖² in real time on every clock, without steering the steps."""

from __future__ import annotations

import pytest
import torch

from dynlearn.solvers import DynamicsPenalty, count_evaluations, solve_ode, solve_ode_irregular

A = torch.tensor([[-0.3, 1.2], [-0.8, -0.1]], dtype=torch.float64)
TIGHT = dict(rtol=1e-9, atol=1e-10)


def linear(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return z @ A.T


def exact_kinetic(z0: torch.Tensor, start: float, end: float, n: int = 4001) -> torch.Tensor:
    """∫ ‖A z(t)‖² |dt| along z(t) = exp(A (t - start)) z0, by Simpson's rule on a fine grid."""
    s = torch.linspace(0.0, abs(end - start), n, dtype=torch.float64)
    sign = 1.0 if end >= start else -1.0
    states = torch.linalg.matrix_exp(A * sign * s[:, None, None]) @ z0
    speed = (states @ A.T).pow(2).sum(-1)
    h = float(s[1] - s[0])
    return h / 3 * (speed[0] + speed[-1] + 4 * speed[1:-1:2].sum() + 2 * speed[2:-1:2].sum())


def test_kinetic_integral_of_a_linear_field_matches_the_exact_solution():
    z0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    penalty = DynamicsPenalty(linear, n_state=2)
    t = torch.tensor([0.0, 0.7, 2.5], dtype=torch.float64)
    path = solve_ode(penalty, penalty.initial_state(z0), t, options=penalty.solve_options("dopri5"), **TIGHT)
    states, kinetic, jacobian = penalty.split(path, dim=0)
    assert torch.allclose(kinetic[0], exact_kinetic(z0[0], 0.0, 2.5), rtol=1e-6)
    assert float(jacobian[0]) == 0.0  # no probe: no Jacobian term
    plain = solve_ode(linear, z0, t, **TIGHT)
    assert torch.allclose(states, plain, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("autonomous", [False, True], ids=["segment_clock", "shifted_clock"])
def test_per_series_clocks_integrate_in_each_series_real_time(autonomous):
    # Series of different spans and starts, one with a repeated time; each integral ends at the series' own last
    # time, so the shifted clock, which runs on past a short series, must not add what comes after.
    times = torch.tensor([[0.0, 0.5, 1.0, 3.0], [2.0, 2.2, 2.2, 2.6], [1.0, 1.5, 2.5, 3.5]], dtype=torch.float64)
    z0 = torch.tensor([[1.0, 0.0], [0.3, 0.9], [-0.4, 0.2]], dtype=torch.float64)
    penalty = DynamicsPenalty(linear, n_state=2)
    path = solve_ode_irregular(penalty, penalty.initial_state(z0), times, autonomous=autonomous,
                               options=penalty.solve_options("dopri5"), **TIGHT)  # fmt: skip
    _, kinetic, _ = penalty.split(path, dim=1)
    expected = torch.stack([exact_kinetic(z0[b], float(times[b, 0]), float(times[b, -1])) for b in range(3)])
    assert torch.allclose(kinetic, expected, rtol=1e-5)


def test_a_series_solved_backwards_is_penalised_like_one_solved_forwards():
    times = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], dtype=torch.float64)
    z0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    penalty = DynamicsPenalty(linear, n_state=2)
    path = solve_ode_irregular(penalty, penalty.initial_state(z0), times, options=penalty.solve_options("dopri5"),
                               **TIGHT)  # fmt: skip
    _, kinetic, _ = penalty.split(path, dim=1)
    assert torch.allclose(kinetic[1], exact_kinetic(z0[1], 2.0, 0.0), rtol=1e-5)
    assert float(kinetic[1]) > 0


def test_the_hutchinson_term_is_exact_per_probe_and_averages_to_the_frobenius_norm():
    generator = torch.Generator().manual_seed(0)
    n, span = 4000, 1.5
    probe = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    z0 = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    penalty = DynamicsPenalty(linear, n_state=2, probe=probe)
    t = torch.tensor([0.0, span], dtype=torch.float64)
    path = solve_ode(penalty, penalty.initial_state(z0), t, options=penalty.solve_options("dopri5"))
    jacobian = penalty.split(path, dim=0)[2].detach()
    # ∂f/∂z = A everywhere: each row's integral is span * ‖εᵀ A‖², its mean over probes span * ‖A‖_F².
    assert torch.allclose(jacobian, span * (probe @ A).pow(2).sum(-1), rtol=1e-6)
    assert float(jacobian.mean()) == pytest.approx(span * float(A.pow(2).sum()), rel=0.05)


def test_the_accumulators_do_not_change_the_steps():
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    def field(t, z):
        return 3.0 * net(z)

    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0.0, 4.0, 7)
    with count_evaluations() as plain:
        expected = solve_ode(field, z0, t)
    penalty = DynamicsPenalty(field, n_state=3, probe=torch.ones(5, 3))
    with count_evaluations() as penalised:
        path = solve_ode(penalty, penalty.initial_state(z0), t, options=penalty.solve_options("dopri5"))
    assert penalised.nfe == plain.nfe
    assert torch.equal(penalty.split(path, dim=0)[0], expected)


def test_gradients_flow_to_the_field_through_both_terms():
    weight = torch.tensor(0.7, requires_grad=True)

    def field(t, z):
        return -weight * torch.tanh(z)

    penalty = DynamicsPenalty(field, n_state=2, probe=torch.ones(1, 2))
    path = solve_ode(penalty, penalty.initial_state(torch.ones(1, 2)), torch.tensor([0.0, 1.0]),
                     options=penalty.solve_options("rk4"), method="rk4")  # fmt: skip
    _, kinetic, jacobian = penalty.split(path, dim=0)
    (grad,) = torch.autograd.grad(kinetic.sum() + jacobian.sum(), weight)
    assert float(grad) > 0  # a faster field (larger weight) costs more of both
