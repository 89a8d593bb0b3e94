"""Adjoint gradients agree with backpropagation through the solver, and with finite differences."""

from __future__ import annotations

import pytest
import torch

from dynlearn.solvers import solve_ode, solve_ode_irregular

T = torch.linspace(0.0, 1.5, 7, dtype=torch.float64)
Y0 = torch.tensor([[0.5, -1.0], [1.0, 0.3], [-0.2, 0.8], [0.0, 1.2]], dtype=torch.float64)

# (method, solve keywords): adaptive at tight tolerances, fixed step with a
# small step, so the continuous adjoint and the discrete gradient coincide to
# well below the test tolerance (measured: ~1e-7 relative).
SETTINGS = [
    ("dopri5", dict(rtol=1e-10, atol=1e-10)),
    ("rk4", dict(options={"step_size": 0.05})),
]


def _gradients(field, solve_fn, times, adjoint: bool, **solve) -> list[torch.Tensor]:
    """d(sum of the solution)/d(y0, parameters of field)."""
    y0 = Y0.clone().requires_grad_(True)
    parameters = list(field.parameters())
    solution = solve_fn(field, y0, times, adjoint=adjoint, **solve)
    return list(torch.autograd.grad(solution.sum(), [y0, *parameters]))


@pytest.mark.parametrize("method, solve", SETTINGS, ids=[m for m, _ in SETTINGS])
def test_solve_ode_adjoint_gradients_match_backpropagation(mlp_field, method, solve):
    direct = _gradients(mlp_field, solve_ode, T, adjoint=False, method=method, **solve)
    adjoint = _gradients(mlp_field, solve_ode, T, adjoint=True, method=method, **solve)
    for d, a in zip(direct, adjoint):
        torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method, solve", SETTINGS, ids=[m for m, _ in SETTINGS])
def test_solve_ode_irregular_adjoint_gradients_match_backpropagation(mlp_field, irregular_times, method, solve):
    direct = _gradients(mlp_field, solve_ode_irregular, irregular_times, adjoint=False, method=method, **solve)
    adjoint = _gradients(mlp_field, solve_ode_irregular, irregular_times, adjoint=True, method=method, **solve)
    for d, a in zip(direct, adjoint):
        torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-7)


def test_solve_ode_irregular_gradient_is_the_gradient_of_separate_solves(mlp_field, irregular_times):
    """The shared clock must not leak gradient between series."""
    solve = dict(method="dopri5", rtol=1e-10, atol=1e-10)
    together = _gradients(mlp_field, solve_ode_irregular, irregular_times, adjoint=False, **solve)
    y0 = Y0.clone().requires_grad_(True)
    loss = sum(
        solve_ode_irregular(mlp_field, y0[b : b + 1], irregular_times[b : b + 1], **solve).sum() for b in range(len(Y0))
    )
    separate = torch.autograd.grad(loss, [y0, *mlp_field.parameters()])
    for t, s in zip(together, separate):
        torch.testing.assert_close(t, s, rtol=1e-7, atol=1e-9)


def _linear_field(theta: torch.Tensor):
    """``dy/dt = -theta * y + sin t``: a plain function whose only parameter is ``theta``."""
    return lambda t, y: -theta * y + torch.sin(t).reshape(-1, 1)


def test_fixed_step_direct_gradient_passes_gradcheck():
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)

    def solution(y0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return solve_ode(_linear_field(theta), y0, t, method="rk4", options={"step_size": 0.1})

    inputs = (torch.tensor([[1.0, -0.5]], dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64))
    assert torch.autograd.gradcheck(solution, [x.requires_grad_(True) for x in inputs])


def test_adjoint_gradient_passes_gradcheck():
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)

    def solution(y0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        field = _linear_field(theta)
        return solve_ode(field, y0, t, rtol=1e-12, atol=1e-12, adjoint=True, adjoint_params=(theta,))

    inputs = (torch.tensor([[1.0, -0.5]], dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64))
    # The adaptive solution is exact only to ~1e-12, so finite differences
    # carry ~1e-6 noise: compare at that level.
    assert torch.autograd.gradcheck(solution, [x.requires_grad_(True) for x in inputs], atol=1e-5, rtol=1e-4)


def test_irregular_adjoint_gradient_passes_gradcheck():
    times = torch.tensor([[0.0, 0.5, 0.5, 1.2], [2.0, 1.5, 0.7, 0.0]], dtype=torch.float64)

    def solution(y0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        field = _linear_field(theta)
        return solve_ode_irregular(field, y0, times, rtol=1e-10, atol=1e-10, adjoint=True, adjoint_params=(theta,))

    inputs = (torch.tensor([[1.0, -0.5], [0.2, 0.4]], dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64))
    assert torch.autograd.gradcheck(solution, [x.requires_grad_(True) for x in inputs], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_solve_matches_torchdiffeq_odeint_in_values_gradients_and_work(mlp_field, method, reverse):
    """Adaptive outputs are collected by stacking, not by writes into a buffer: nothing else may change.

    dopri5 runs written out (dynlearn.solvers._rk): the same steps and
    evaluations, states and gradients to rounding. Its step sizes are
    constants to backpropagation, so the gradients are compared from a
    given first step (torchdiffeq differentiates through the one it picks;
    see the next test).
    """
    from torchdiffeq import odeint

    from dynlearn.solvers import SolverStats

    times = T.flip(0) if reverse else T
    solve = dict(method=method, rtol=1e-6, atol=1e-8)
    written_out = method == "dopri5"
    stats = SolverStats()
    y0 = Y0.clone().requires_grad_(True)
    ours = solve_ode(mlp_field, y0, times, stats=stats, options={"first_step": 0.05} if written_out else None, **solve)
    ours_grads = torch.autograd.grad((ours * torch.arange(1.0, 8.0, dtype=torch.float64)[:, None, None]).sum(), [y0])
    calls = []

    def counted(t, y):
        calls.append(t)
        return mlp_field(t, y)

    options = {"step_t": times} if method == "bosh3" else {"first_step": 0.05} if written_out else None
    theirs = odeint(counted, y0, times, options=options, **solve)
    theirs_grads = torch.autograd.grad(
        (theirs * torch.arange(1.0, 8.0, dtype=torch.float64)[:, None, None]).sum(), [y0]
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12 if written_out else 0, atol=1e-13 if written_out else 0)
    torch.testing.assert_close(ours_grads, theirs_grads, rtol=1e-11 if written_out else 1e-12, atol=1e-13)
    assert stats.nfe_forward == len(calls)


@pytest.mark.parametrize("reverse", [False, True])
def test_written_out_dopri5_takes_torchdiffeqs_steps_from_its_own_first_step(mlp_field, reverse):
    """Without a first step both pick the same one; only its sensitivity, which torchdiffeq keeps, is dropped."""
    from torchdiffeq import odeint

    from dynlearn.solvers import SolverStats

    times = T.flip(0) if reverse else T
    stats = SolverStats()
    y0 = Y0.clone().requires_grad_(True)
    ours = solve_ode(mlp_field, y0, times, method="dopri5", rtol=1e-6, atol=1e-8, stats=stats)
    calls = []
    theirs = odeint(lambda t, y: calls.append(t) or mlp_field(t, y), y0, times, method="dopri5", rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)
    assert stats.nfe_forward == len(calls)
    ours_grad, theirs_grad = (torch.autograd.grad(x.square().sum(), [y0])[0] for x in (ours, theirs))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-8)
