"""dopri5 solves written out (dynlearn.solvers._rk) against torchdiffeq's own stepping of the same method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn.exceptions import IntegrationError
from dynlearn.solvers import DynamicsPenalty, SolverStats, solve_ode, solve_ode_irregular
from dynlearn.solvers._ode import _odeint_stacked
from dynlearn.solvers._rk import DOPRI5, solve_written_out, writes_out

# An option the written-out solve does not take sends a solve through torchdiffeq's own solver object.
TORCHDIFFEQ = {"dtype": torch.float64}


def _field(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.times: list[float] = []

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.times.append(t.detach().reshape(-1).tolist())
            return self.net(torch.cat([y, torch.sin(t).reshape(-1, 1).expand(y.shape[0], 1)], -1))

    return Field()


def test_only_dopri5_with_the_options_it_honours_runs_written_out():
    y0 = torch.zeros(2, 2)
    assert writes_out("dopri5", y0, 1e-3, 1e-4, {"max_num_steps": 10, "first_step": 0.1, "norm": abs})
    assert writes_out("dopri5", y0, 1e-3, 1e-4, {"step_t": torch.tensor([0.5]), "jump_t": torch.tensor([0.2])})
    assert not writes_out("dopri5", y0, 1e-3, 1e-4, {"dtype": torch.float64})
    assert not writes_out("bosh3", y0, 1e-3, 1e-4, {})
    assert not writes_out("dopri5", y0, torch.tensor([1e-3, 1e-2]), 1e-4, {})


def test_dense_output_weights_end_on_the_solution_and_start_at_zero():
    solution = list(DOPRI5.coupling[-1]) + [0.0]
    assert DOPRI5.dense.sum(axis=0) == pytest.approx(solution, abs=1e-14)  # x = 1
    assert DOPRI5.dense[0] == pytest.approx([1.0] + [0.0] * 6)  # slope at x = 0 is the first stage


@pytest.mark.parametrize("reverse", [False, True])
def test_field_is_read_at_torchdiffeqs_times(reverse):
    """Same stages at the same times: the last two just before the step's end, as torchdiffeq reads them.

    Step sizes agree to rounding amplified by the error estimate (a sum of
    stages that cancels down to about the tolerance), not bitwise: on some
    CPUs a time late in the reversed solve differs by 1.1e-9 of itself. A
    different rule for the stages' times or the step sizes would differ by
    far more than 1e-8.
    """
    t = torch.linspace(0.0, 3.0, 9, dtype=torch.float64)
    t = t.flip(0) if reverse else t
    y0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, theirs = _field(), _field()
    a = solve_written_out(ours, y0, t, "dopri5", 1e-7, 1e-9, {})
    b = _odeint_stacked(theirs, y0, t, method="dopri5", rtol=1e-7, atol=1e-9, options=dict(TORCHDIFFEQ))
    assert len(ours.times) == len(theirs.times)
    assert [t for (t,) in ours.times] == pytest.approx([t for (t,) in theirs.times], rel=1e-8, abs=1e-12)
    before_end = [i for i in range(1, len(ours.times)) if ours.times[i] == ours.times[i - 1]]
    assert len(before_end) >= 3  # the two last stages of each step share their time
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("autonomous", [True, False])
def test_irregular_solves_match_torchdiffeqs_stepping_in_values_gradients_and_work(autonomous):
    """Row-by-row outputs of the shifted clock, and the segment clock's steps ending on every knot (step_t, jump_t)."""
    times = torch.tensor([[0.0, 0.4, 0.9, 2.0], [0.0, 1.3, 1.4, 2.6], [0.0, 0.2, 3.1, 3.2]], dtype=torch.float64)
    y0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = []
    for options in ({"first_step": 0.05}, {"first_step": 0.05, **TORCHDIFFEQ}):
        field, stats = _field(), SolverStats()
        out = solve_ode_irregular(field, y0, times, rtol=1e-6, atol=1e-8, options=options, stats=stats,
                                  autonomous=autonomous)  # fmt: skip
        weights = torch.arange(1.0, 5.0, dtype=torch.float64)[:, None]
        grads = torch.autograd.grad((out * weights).sum(), list(field.parameters()))
        results.append((out, grads, stats.nfe))
    (ours, our_grads, our_nfe), (theirs, their_grads, their_nfe) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)
    for mine, other in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)
    assert our_nfe == their_nfe


def test_a_norm_option_controls_steps_as_in_torchdiffeq():
    """The dynamics penalty's norm leaves its accumulators out of the control: same steps both ways."""
    field = _field()
    penalty = DynamicsPenalty(field, n_state=2)
    y0 = penalty.initial_state(torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    outs = []
    for extra in ({}, TORCHDIFFEQ):
        stats = SolverStats()
        options = penalty.solve_options("dopri5", dict(extra))
        outs.append((solve_ode(penalty, y0, t, rtol=1e-6, atol=1e-8, options=options, stats=stats), stats.nfe))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-13)
    assert outs[0][1] == outs[1][1]


def test_non_finite_states_and_step_limits_raise_integration_errors_with_advice():
    y0 = torch.ones(2, 2, dtype=torch.float64)
    t = torch.linspace(0.0, 5.0, 3, dtype=torch.float64)
    with pytest.raises(IntegrationError, match="dopri5 solve failed: non-finite error estimate.*rtol/atol"):
        solve_ode(lambda t, y: -y if float(t) < 1.0 else y * float("nan"), y0, t, method="dopri5")
    with pytest.raises(IntegrationError, match="dopri5 solve failed.*rtol/atol"):
        solve_ode(lambda t, y: y**3 * 1e3, y0, t, method="dopri5")
    with pytest.raises(IntegrationError, match="dopri5 solve failed: max_num_steps exceeded"):
        solve_ode(lambda t, y: -50.0 * y + torch.sin(40.0 * t), y0, t, method="dopri5", rtol=1e-10, atol=1e-12,
                  max_num_steps=5)  # fmt: skip


def test_float32_solves_agree_with_torchdiffeq_at_float32_rounding():
    """In float32 the error estimate of an easy step is near rounding, so steps may differ: states stay within tolerance."""
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    y0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    t = torch.linspace(0.0, 3.0, 7)
    ours = solve_ode(lambda t, y: net(y), y0, t, method="dopri5", rtol=1e-5, atol=1e-6)
    theirs = solve_ode(lambda t, y: net(y), y0, t, method="dopri5", rtol=1e-5, atol=1e-6, options=dict(TORCHDIFFEQ))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["previous", "linear"])
def test_controlled_solves_read_held_inputs_as_torchdiffeq_does(interpolation):
    """A zero-order hold jumps at every knot: the step before reads the old value, the slope after the new one."""
    from dynlearn.solvers import ControlPath

    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    times = torch.tensor([[0.0, 0.5, 1.1, 2.0], [0.0, 0.3, 1.9, 2.4]], dtype=torch.float64)
    inputs = torch.randn(2, 4, 1, dtype=torch.float64)
    y0 = torch.randn(2, 2, dtype=torch.float64)
    outs = []
    for extra in ({}, TORCHDIFFEQ):
        stats = SolverStats()
        path = ControlPath(times, inputs, interpolation)
        out = solve_ode_irregular(lambda t, y, u: net(torch.cat([y, u], -1)), y0, times, rtol=1e-7, atol=1e-9,
                                  control=path, options=dict(extra), stats=stats)  # fmt: skip
        outs.append((out, stats.nfe))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-11, atol=1e-12)
    assert outs[0][1] == outs[1][1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_written_out_solves_on_cuda_match_the_cpu_and_torchdiffeq():
    """Same steps on the GPU: states, gradients and evaluations as on the CPU, and as torchdiffeq's on the GPU."""
    times = torch.tensor([[0.0, 0.4, 0.9, 2.0], [0.0, 1.3, 1.4, 2.6]], dtype=torch.float64)
    y0 = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    results = {}
    for device, options in (("cpu", {}), ("cuda", {}), ("cuda", dict(TORCHDIFFEQ))):
        field, stats = _field().to(device), SolverStats()
        out = solve_ode_irregular(field, y0.to(device), times.to(device), rtol=1e-7, atol=1e-9,
                                  options={"first_step": 0.05, **options}, stats=stats)  # fmt: skip
        grads = torch.autograd.grad(out.square().sum(), list(field.parameters()))
        results[(device, bool(options))] = (out.cpu(), [g.cpu() for g in grads], stats.nfe)
    reference = results[("cpu", False)]
    for key in (("cuda", False), ("cuda", True)):
        out, grads, nfe = results[key]
        torch.testing.assert_close(out, reference[0], rtol=1e-10, atol=1e-12)
        for mine, other in zip(grads, reference[1]):
            torch.testing.assert_close(mine, other, rtol=1e-9, atol=1e-11)
        assert nfe == reference[2]
