"""solve_ode_irregular: every series on its own clock, checked three independent ways."""

from __future__ import annotations

import copy

import pytest
import torch

from dynlearn.exceptions import IntegrationError
from dynlearn.solvers import SolverStats, count_evaluations, solve_ode, solve_ode_irregular

# (method, solve keywords, largest error allowed against the exact solution).
SETTINGS = [
    ("dopri5", dict(rtol=1e-10, atol=1e-10), 1e-7),
    ("dopri8", dict(rtol=1e-10, atol=1e-10), 1e-7),
    ("bosh3", dict(rtol=1e-8, atol=1e-8), 1e-5),
    ("rk4", dict(options={"step_size": 0.01}), 1e-7),
    ("midpoint", dict(options={"step_size": 0.002}), 1e-4),
    ("euler", dict(options={"step_size": 0.001}), 5e-2),
    ("explicit_adams", dict(options={"step_size": 0.01}), 1e-6),
    ("implicit_adams", dict(options={"step_size": 0.01}), 1e-8),
]
IDS = [method for method, _, _ in SETTINGS]


def _exact(problem, times: torch.Tensor) -> torch.Tensor:
    return problem.exact(problem.y0, times[:, 0], times)


@pytest.mark.parametrize("method, solve, bound", SETTINGS, ids=IDS)
def test_every_series_matches_its_exact_solution(problem, irregular_times, method, solve, bound):
    solution = solve_ode_irregular(problem.field, problem.y0, irregular_times, method=method, **solve)
    assert solution.shape == (len(problem.y0), irregular_times.shape[1], problem.y0.shape[1])
    assert float((solution - _exact(problem, irregular_times)).abs().max()) < bound


@pytest.mark.parametrize(
    "method, solve", [("dopri5", dict(rtol=1e-6, atol=1e-6)), ("rk4", dict(options={"step_size": 0.02}))]
)
def test_float32_state_stays_float32_and_accurate(problem, irregular_times, method, solve):
    y0 = problem.y0.float()
    solution = solve_ode_irregular(problem.field, y0, irregular_times.float(), method=method, **solve)
    assert solution.dtype == torch.float32
    assert float((solution.double() - _exact(problem, irregular_times)).abs().max()) < 1e-4


@pytest.mark.parametrize("method, solve", [("dopri5", dict(rtol=1e-6, atol=1e-6)), ("rk4", dict())])
def test_a_repeated_time_keeps_the_state(problem, irregular_times, method, solve):
    solution = solve_ode_irregular(problem.field, problem.y0, irregular_times, method=method, **solve)
    # Series 1 is observed twice at t = 1.0 (columns 1 and 2). A fixed step
    # adds exactly zero; an adaptive method reads both from its interpolant,
    # which is exact only up to rounding.
    atol = 0.0 if method == "rk4" else 1e-12
    torch.testing.assert_close(solution[1, 2], solution[1, 1], rtol=0.0, atol=atol)


@pytest.mark.parametrize(
    "method, solve", [("dopri5", dict(rtol=1e-10, atol=1e-10)), ("rk4", dict(options={"step_size": 0.01}))]
)
def test_matches_solving_each_series_on_its_own(problem, irregular_times, method, solve):
    together = solve_ode_irregular(problem.field, problem.y0, irregular_times, method=method, **solve)
    for b, times in enumerate(irregular_times):
        # solve_ode needs strictly monotone times: solve on the distinct ones
        # (in the series' direction) and read the repeats back.
        distinct, position = torch.unique(times, return_inverse=True)
        if times[-1] < times[0]:
            distinct, position = distinct.flip(0), len(distinct) - 1 - position
        alone = solve_ode(problem.field, problem.y0[b : b + 1], distinct, method=method, **solve)[position, 0]
        torch.testing.assert_close(together[b], alone, rtol=1e-7, atol=1e-8)


def test_matches_the_union_of_times_formulation(problem):
    """Solving on the sorted union of every series' times and picking each series' own."""
    generator = torch.Generator().manual_seed(0)
    n_series, n_times = len(problem.y0), 7
    draws = torch.rand(n_series, n_times - 1, generator=generator, dtype=torch.float64).sort(dim=1).values * 3.0
    times = torch.cat([torch.zeros(n_series, 1, dtype=torch.float64), draws], dim=1)
    times[0, 3] = times[0, 2]  # a repeated observation time
    union, where = torch.unique(times, return_inverse=True)
    on_union = solve_ode(problem.field, problem.y0, union, rtol=1e-10, atol=1e-10)  # (n_union, batch, dim)
    picked = on_union[where, torch.arange(n_series)[:, None]]
    irregular = solve_ode_irregular(problem.field, problem.y0, times, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(irregular, picked, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("forward_only", [False, True], ids=["segment_clock", "shifted_clock"])
def test_states_with_extra_axes_keep_their_shape(irregular_times, forward_only):
    # The third series runs backwards; dropping it leaves times the shifted clock takes (autonomous=True).
    if forward_only:
        irregular_times = irregular_times[[0, 1, 3, 3]]
    y0 = torch.arange(24, dtype=torch.float64).reshape(4, 2, 3) / 10
    solution = solve_ode_irregular(
        lambda t, y: -y, y0, irregular_times, rtol=1e-10, atol=1e-10, autonomous=forward_only
    )
    gaps = irregular_times - irregular_times[:, :1]
    expected = y0[:, None] * torch.exp(-gaps)[..., None, None]
    assert solution.shape == (4, 6, 2, 3)
    torch.testing.assert_close(solution, expected, rtol=1e-7, atol=1e-8)


def test_a_single_time_returns_the_initial_state(problem):
    times = torch.zeros(len(problem.y0), 1, dtype=torch.float64)
    solution = solve_ode_irregular(problem.field, problem.y0, times)
    assert torch.equal(solution, problem.y0[:, None])


def test_field_receives_each_series_own_time(irregular_times):
    """A field that records t sees one time per series, inside that series' span."""
    seen = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return torch.zeros_like(y)

    solve_ode_irregular(field, torch.zeros(4, 1, dtype=torch.float64), irregular_times, method="rk4")
    seen = torch.stack(seen)
    assert seen.shape[1:] == (4,)
    low, high = irregular_times.min(dim=1).values, irregular_times.max(dim=1).values
    assert bool(((seen >= low - 1e-9) & (seen <= high + 1e-9)).all())



def test_work_grows_with_segments_not_with_batch_size(wide_field):
    """A batch of smooth series costs a few steps per segment, at the tolerance's accuracy.

    With equal-length segments on the clock, a step that lands exactly on a
    segment boundary made the backend stop honouring later boundaries: steps
    straddled the jumps, took five times the evaluations and lost accuracy.
    """
    generator = torch.Generator().manual_seed(1)
    n_series, n_times = 128, 20
    y0 = torch.randn(n_series, 8, generator=generator)
    draws = torch.rand(n_series, n_times - 1, generator=generator).sort(dim=1).values * 5.0
    times = torch.cat([torch.zeros(n_series, 1), draws], dim=1)
    with torch.no_grad():
        stats = SolverStats()
        together = solve_ode_irregular(wide_field, y0, times, rtol=1e-5, atol=1e-6, stats=stats)
        union, where = torch.unique(times, return_inverse=True)
        exact_field = copy.deepcopy(wide_field).double()
        reference = solve_ode(exact_field, y0.double(), union.double(), rtol=1e-10, atol=1e-10)
    # A dopri5 step is 6 evaluations; about 3 steps per segment (measured: 230 in all).
    assert stats.nfe <= 20 * (n_times - 1)
    # States reach ~10; rtol=1e-5 per step accumulates to ~1e-3 over 19 segments.
    expected = reference[where, torch.arange(n_series)[:, None]]
    assert float((together.double() - expected).abs().max()) < 3e-3


# ------------------------------------------------- autonomous fields: one shifted clock
FORWARD_TIMES = torch.tensor(
    [
        [0.0, 0.3, 0.9, 1.7, 2.0, 3.1],
        [0.5, 1.0, 1.0, 1.4, 2.2, 2.5],  # a repeated time, as padding gives
        [-1.0, -0.2, 0.0, 0.1, 0.15, 2.0],
        [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # a series that never moves
    ],
    dtype=torch.float64,
)


# Outputs inside a step come from the method's interpolant, as in solve_ode; the segment clock ends a step on each.
SHIFTED = [("dopri5", 1e-9), ("adaptive_heun", 1e-6), ("fehlberg2", 1e-6)]


@pytest.mark.parametrize("method, tolerance", SHIFTED, ids=[method for method, _ in SHIFTED])
def test_autonomous_series_share_a_shifted_clock_as_accurate_as_the_segment_clock(autonomous_problem, method, tolerance):
    problem, exact = autonomous_problem, _exact(autonomous_problem, FORWARD_TIMES)
    solve = dict(method=method, rtol=tolerance, atol=tolerance)
    shifted = solve_ode_irregular(problem.field, problem.y0, FORWARD_TIMES, autonomous=True, **solve)
    on_segments = solve_ode_irregular(problem.field, problem.y0, FORWARD_TIMES, **solve)
    assert shifted.shape == on_segments.shape == (4, 6, problem.y0.shape[1])
    error, segment_error = float((shifted - exact).abs().max()), float((on_segments - exact).abs().max())
    assert error < 3 * segment_error + 10 * tolerance
    assert torch.equal(shifted[3], problem.y0[3].expand(6, -1))  # never moves: the start state, exactly


def test_shifted_clock_costs_the_dynamics_not_the_outputs(wide_field):
    """128 series with 20 times each of their own: one solve, far fewer evaluations, the same states."""
    generator = torch.Generator().manual_seed(1)
    n_series, n_times = 128, 20
    y0 = torch.randn(n_series, 8, generator=generator)
    draws = torch.rand(n_series, n_times - 1, generator=generator).sort(dim=1).values * 5.0
    times = torch.cat([torch.zeros(n_series, 1), draws], dim=1) + torch.rand(n_series, 1, generator=generator)
    segment, shifted = SolverStats(), SolverStats()
    with torch.no_grad():
        on_segments = solve_ode_irregular(wide_field, y0, times, rtol=1e-5, atol=1e-6, stats=segment)
        together = solve_ode_irregular(wide_field, y0, times, rtol=1e-5, atol=1e-6, autonomous=True, stats=shifted)
        exact_field = copy.deepcopy(wide_field).double()
        reference = solve_ode_irregular(exact_field, y0.double(), times.double(), rtol=1e-10, atol=1e-10)
    assert shifted.nfe * 3 < segment.nfe  # measured: 56 against 230
    assert float((together.double() - reference).abs().max()) < 3e-3
    assert float((on_segments.double() - reference).abs().max()) < 3e-3


def test_shifted_clock_gradients_match_the_segment_clock(mlp_field, oscillator):
    """The time-dependent test field is wrapped to ignore t, so both clocks solve the same problem."""

    def autonomous_field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mlp_field.net(y)

    gradients = []
    for autonomous in (False, True):
        y0 = oscillator.y0.clone().requires_grad_(True)
        solution = solve_ode_irregular(
            autonomous_field, y0, FORWARD_TIMES, rtol=1e-10, atol=1e-12, autonomous=autonomous
        )
        weights = torch.arange(1.0, 7.0, dtype=torch.float64)[None, :, None]
        gradients.append(torch.autograd.grad((solution * weights).sum(), [y0, *mlp_field.parameters()]))
    for segment, shifted in zip(*gradients):
        torch.testing.assert_close(shifted, segment, rtol=1e-6, atol=1e-8)


def test_shifted_field_still_receives_each_series_own_time():
    seen = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return -y

    solve_ode_irregular(field, torch.ones(4, 1, dtype=torch.float64), FORWARD_TIMES, autonomous=True)
    seen = torch.stack(seen)
    elapsed = seen - FORWARD_TIMES[:, 0]
    assert seen.shape[1:] == (4,) and torch.allclose(elapsed, elapsed[:, :1].expand_as(elapsed))
    assert float(elapsed.min()) == 0.0


@pytest.mark.parametrize(
    "times, solve",
    [
        (FORWARD_TIMES.flip(1), dict(method="dopri5")),  # backwards in time: segment clock
        (FORWARD_TIMES, dict(method="rk4", options={"step_size": 0.05})),  # fixed steps end on outputs
        (FORWARD_TIMES, dict(method="bosh3")),  # an interpolant too coarse for its steps
        (FORWARD_TIMES, dict(method="dopri5", adjoint=True)),
    ],
    ids=["backwards", "rk4", "bosh3", "adjoint"],
)
def test_autonomous_falls_back_to_the_segment_clock_where_shifting_does_not_apply(oscillator, times, solve):
    module = _FieldModule(oscillator.field)
    default = solve_ode_irregular(module, oscillator.y0, times, **solve)
    declared = solve_ode_irregular(module, oscillator.y0, times, autonomous=True, **solve)
    assert torch.equal(default, declared)


class _FieldModule(torch.nn.Module):
    def __init__(self, field):
        super().__init__()
        self.field = field
        self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale * self.field(t, y)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_autonomous_fixed_steps_match_the_segment_clock(method, wide_field, irregular_times):
    """One written-out step per gap (autonomous=True) gives the segment clock's states, counted alike."""
    field = wide_field.double()
    y0 = torch.randn(irregular_times.shape[0], 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    times = irregular_times.double()
    with count_evaluations() as fast_count:
        fast = solve_ode_irregular(field, y0, times, method=method, autonomous=True)
    with count_evaluations() as clock_count:
        clocked = solve_ode_irregular(field, y0, times, method=method, autonomous=False)
    torch.testing.assert_close(fast, clocked, rtol=1e-10, atol=1e-12)
    stages = {"euler": 1, "midpoint": 2, "rk4": 4}[method]
    assert fast_count.nfe == stages * (times.shape[1] - 1)
    assert clock_count.nfe >= fast_count.nfe
    (fast_grad,) = torch.autograd.grad(solve_ode_irregular(field, y0, times, method=method, autonomous=True).sum(),
                                       next(field.parameters()))  # fmt: skip
    (clock_grad,) = torch.autograd.grad(solve_ode_irregular(field, y0, times, method=method).sum(),
                                        next(field.parameters()))  # fmt: skip
    torch.testing.assert_close(fast_grad, clock_grad, rtol=1e-9, atol=1e-11)


def test_autonomous_fixed_steps_refuse_non_finite_states():
    with pytest.raises(IntegrationError, match="non-finite"):
        solve_ode_irregular(lambda t, y: y**5, torch.full((1, 1), 100.0), torch.tensor([[0.0, 1.0, 2.0]]),
                            method="euler", autonomous=True)  # fmt: skip
