"""Written-out Euler–Maruyama: torchsde's states, KL increments and gradients given the same Brownian motion."""

from __future__ import annotations

import pytest
import torch
import torchsde
from torch import nn

from dynlearn.exceptions import InputError, IntegrationError
from dynlearn.solvers import SolverStats, _euler, solve_sde, solve_sde_irregular

D, M, BATCH = 3, 2, 5
# Output gaps that the step does not divide: torchsde then interpolates, and the last step is cut at ts[-1].
TIMES = [0.0, 0.13, 0.5, 0.51, 1.2]
DT = 0.07


class Field(nn.Module):
    """Nonlinear drift, prior drift and state-dependent diffusion of every noise type."""

    sde_type = "ito"

    def __init__(self, noise_type: str, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.noise_type = noise_type
        generator = torch.Generator().manual_seed(0)
        self.a = nn.Parameter(0.5 * torch.randn(D, D, generator=generator, dtype=dtype))
        self.b = nn.Parameter(0.5 * torch.randn(D, D, generator=generator, dtype=dtype))
        self.c = nn.Parameter(0.3 * torch.randn(D, M, generator=generator, dtype=dtype))

    def f(self, t, y):
        return torch.tanh(y @ self.a) - 0.5 * y + 0.1 * t.reshape(-1, 1)

    def h(self, t, y):
        return -y @ self.b

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.3 + 0.2 * torch.sigmoid(y)
        if self.noise_type == "additive":
            return self.c.expand(len(y), D, M)
        if self.noise_type == "scalar":
            return (0.3 + 0.2 * torch.sigmoid(y)).unsqueeze(-1)
        return 0.2 + torch.sigmoid(y).unsqueeze(-1) * self.c


class IncrementTable(torchsde.BaseBrownian):
    """A Brownian motion known by its increments over torchsde's steps (what the default solve draws)."""

    def __init__(self, increments: torch.Tensor, grid: _euler.StepGrid):
        super().__init__()
        self.increments, self.starts = increments, {start: k for k, (start, _) in enumerate(grid.bounds)}

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self.increments[self.starts[float(ta)]]

    def __repr__(self):
        return "IncrementTable"

    dtype = property(lambda self: self.increments.dtype)
    device = property(lambda self: self.increments.device)
    shape = property(lambda self: self.increments.shape[1:])
    levy_area_approximation = property(lambda self: "none")


def _channels(noise_type: str, logqp: bool) -> int:
    return D + int(logqp) if noise_type == "diagonal" else (1 if noise_type == "scalar" else M)


def _y0(dtype=torch.float64):
    return torch.randn(BATCH, D, generator=torch.Generator().manual_seed(1), dtype=dtype).requires_grad_()


def _interval(noise_type: str, logqp: bool, dtype=torch.float64):
    return torchsde.BrownianInterval(t0=TIMES[0], t1=TIMES[-1], size=(BATCH, _channels(noise_type, logqp)),
                                     dtype=dtype, entropy=7, dt=DT)  # fmt: skip


def _outputs_and_gradients(out, sde, y0):
    parts = out if isinstance(out, tuple) else (out,)
    loss = sum((part * torch.linspace(0.5, 1.5, part.numel(), dtype=part.dtype).reshape(part.shape)).sum()
               for part in parts)  # fmt: skip
    return parts, torch.autograd.grad(loss, (y0, *sde.parameters()), allow_unused=True)


@pytest.mark.parametrize("noise_type", ["diagonal", "general", "additive", "scalar"])
@pytest.mark.parametrize("logqp", [False, True])
def test_same_brownian_interval_gives_torchsdes_states_kl_and_gradients(noise_type, logqp):
    sde, y0, ts = Field(noise_type), _y0(), torch.tensor(TIMES, dtype=torch.float64)
    ours = solve_sde(sde, y0, ts, dt=DT, bm=_interval(noise_type, logqp), logqp=logqp)
    theirs = torchsde.sdeint(sde, y0, ts, bm=_interval(noise_type, logqp), method="euler", dt=DT, logqp=logqp)
    (ours, our_grads), (theirs, their_grads) = _outputs_and_gradients(ours, sde, y0), _outputs_and_gradients(
        theirs, sde, y0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    for a, b in zip(our_grads, their_grads):
        if a is None or b is None:
            assert a is None and b is None or float((a if b is None else b).abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_float32_step_grid_and_states_are_torchsdes():
    # float32 step ends accumulate rounding: the grid is built with torchsde's own arithmetic, so it matches.
    sde, y0 = Field("diagonal", torch.float32), _y0(torch.float32)
    ts = torch.linspace(0.0, 7.3, 11)
    bm = {"t0": 0.0, "t1": float(ts[-1]), "size": (BATCH, D + 1), "dtype": torch.float32, "entropy": 3, "dt": 0.1}
    ours = solve_sde(sde, y0, ts, dt=0.1, bm=torchsde.BrownianInterval(**bm), logqp=True)
    theirs = torchsde.sdeint(sde, y0, ts, bm=torchsde.BrownianInterval(**bm), method="euler", dt=0.1, logqp=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
def test_default_brownian_motion_is_the_seeded_increment_table(noise_type):
    sde, y0, ts = Field(noise_type), _y0(), torch.tensor(TIMES, dtype=torch.float64)
    ours = solve_sde(sde, y0, ts, dt=DT, seed=11, logqp=True)
    grid = _euler.step_grid(ts, DT)
    # The default draws one channel per noise channel; torchsde's logqp wants an extra (ignored) one with diagonal noise.
    increments = _euler.default_increments(grid, BATCH, D if noise_type == "diagonal" else M, 11, torch.float64,
                                           y0.device)  # fmt: skip
    if noise_type == "diagonal":
        increments = torch.cat([increments, torch.zeros(len(grid.steps), BATCH, 1, dtype=torch.float64)], dim=-1)
    theirs = torchsde.sdeint(sde, y0, ts, bm=IncrementTable(increments, grid), method="euler", dt=DT, logqp=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    again = solve_sde(sde, y0, ts, dt=DT, seed=11, logqp=True)
    other = solve_sde(sde, y0, ts, dt=DT, seed=12, logqp=True)
    assert torch.equal(ours[0], again[0]) and not torch.equal(ours[0], other[0])


def test_default_increments_have_the_law_of_brownian_steps():
    grid = _euler.step_grid(torch.tensor([0.0, 1.0], dtype=torch.float64), 0.3)  # steps 0.3, 0.3, 0.3, 0.1
    increments = _euler.default_increments(grid, 20_000, 1, 0, torch.float64, torch.device("cpu"))
    variances = increments.var(dim=1).squeeze(-1)
    torch.testing.assert_close(variances, torch.tensor([0.3, 0.3, 0.3, 0.1], dtype=torch.float64), rtol=0.05, atol=0)


def test_written_out_solve_counts_one_drift_evaluation_per_step():
    stats = SolverStats()
    solve_sde(Field("diagonal"), _y0().detach(), torch.tensor([0.0, 1.0], dtype=torch.float64), dt=0.125, seed=0,
              stats=stats)  # fmt: skip
    assert stats.nfe_forward == 8
    # torchsde's clock adds dt in floating point: ten steps of 0.1 end at 0.9999999999999999, and an eleventh,
    # tiny step reaches 1. The written-out grid takes the same steps.
    assert len(_euler.step_grid(torch.tensor([0.0, 1.0], dtype=torch.float64), 0.1).steps) == 11


def test_written_out_solve_refuses_non_finite_states():
    class Explodes(Field):
        def f(self, t, y):
            return y**3 * 1e6

    with pytest.raises(IntegrationError, match="non-finite"):
        solve_sde(Explodes("diagonal"), torch.ones(2, D, dtype=torch.float64),
                  torch.tensor([0.0, 1.0], dtype=torch.float64), dt=0.01, seed=0)  # fmt: skip


def test_brownian_motion_of_the_wrong_width_is_refused_by_name():
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(BATCH, D), dtype=torch.float64, entropy=0)
    with pytest.raises(InputError, match="bm"):
        solve_sde(Field("diagonal"), _y0().detach(), torch.tensor([0.0, 1.0], dtype=torch.float64), dt=0.1, bm=bm,
                  logqp=True)  # fmt: skip


def test_only_fixed_step_euler_without_adjoint_or_options_is_written_out():
    assert _euler.writes_out("euler", False, False, None)
    assert not _euler.writes_out("milstein", False, False, None)
    assert not _euler.writes_out("euler", True, False, None)
    assert not _euler.writes_out("euler", False, True, None)
    assert not _euler.writes_out("euler", False, False, {"grad_free": True})


def test_irregular_solve_is_written_out_with_each_gaps_seed():
    # One step per gap on the shared clock: the same rows and draws with a caller's seed, run after run.
    sde = Field("diagonal")
    times = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 0.25]], dtype=torch.float64)
    y0 = _y0()[:2]
    first = solve_sde_irregular(sde, y0, times, step_size=0.1, seed=3, logqp=True)
    second = solve_sde_irregular(sde, y0, times, step_size=0.1, seed=3, logqp=True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # A zero gap holds the state (up to the diffusion's floor of sqrt(1e-30) that keeps the KL term finite).
    torch.testing.assert_close(first[0][1, 2], first[0][1, 1], rtol=0, atol=1e-12)
    assert float(first[1][1, 1].detach().abs().max()) == 0.0
