"""ODERNNEncoder: masking, per-series exactness against a one-series-at-a-time reference, evolve, gradients."""

from __future__ import annotations

import pytest
import torch

from dynlearn.nn import ODERNNEncoder
from dynlearn.solvers import solve_ode

TIGHT = dict(rtol=1e-10, atol=1e-12, adjoint=False, max_num_steps=10_000)


def _encoder(gru_hidden=None, seed=0):
    torch.manual_seed(seed)
    return ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(16,), gru_hidden=gru_hidden).double()


def _panel(seed=1):
    """Three series of lengths 5, 3, 1 on different irregular clocks, with missing entries and an all-missing row."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1])
    times = torch.zeros(3, 5, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        t = torch.cumsum(0.2 + 1.5 * torch.rand(n, generator=g, dtype=torch.float64), 0) - 0.5 * b
        times[b, :n] = t
        times[b, n:] = t[-1]
    values = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 5, 2, generator=g) < 0.7
    mask[0, 2] = False  # a row without any observed entry
    mask[1, 0] = True
    rows = torch.arange(5)[None, :] < lengths[:, None]
    mask &= rows[..., None]
    values = torch.where(mask, values, torch.zeros_like(values))
    return values, mask, times, lengths


def _reference(encoder, values, mask, times, n, method, reverse, options=None):
    """One series on its own: a solve over each real interval, then a GRU update where anything is observed."""
    order = range(n - 1, -1, -1) if reverse else range(n)
    h = torch.zeros(1, encoder.hidden_dim, dtype=values.dtype)
    states, previous = {}, None
    field = lambda t, y: encoder.field.net(y)  # noqa: E731
    for k in order:
        if previous is not None and times[k] != times[previous]:
            span = torch.stack([times[previous], times[k]])
            h = solve_ode(field, h, span, method=method, options=options, **TIGHT)[-1]
        if mask[k].any():
            x = torch.cat([values[k] * mask[k], mask[k].double()])[None]
            h = encoder.gru(x, h)
        states[k] = h[0]
        previous = k
    return torch.stack([states[k] for k in range(n)]), h[0]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("gru_hidden", [None, 7])
def test_matches_per_series_reference_rk4(reverse, gru_hidden):
    """One inline rk4 step per gap equals torchdiffeq's rk4 over that gap, series by series."""
    encoder = _encoder(gru_hidden)
    values, mask, times, lengths = _panel()
    with torch.no_grad():
        states, final = encoder(values, mask, times, lengths, solve=dict(method="rk4"), reverse=reverse)
        for b, n in enumerate(lengths.tolist()):
            expected, expected_final = _reference(encoder, values[b], mask[b], times[b], n, "rk4", reverse)
            torch.testing.assert_close(states[b, :n], expected, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(final[b], expected_final, rtol=1e-10, atol=1e-12)
            # Padding rows hold the final state.
            torch.testing.assert_close(states[b, n:], final[b].expand(5 - n, -1))


@pytest.mark.parametrize("reverse", [False, True])
def test_matches_per_series_reference_adaptive_and_bounded_steps(reverse):
    """dopri5 on the [0, 1] gap clock and bounded inline steps both converge to the per-series flow."""
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    with torch.no_grad():
        adaptive, _ = encoder(values, mask, times, lengths, solve=dict(method="dopri5", **TIGHT), reverse=reverse)
        bounded, _ = encoder(
            values, mask, times, lengths, solve=dict(method="rk4", options={"step_size": 0.02}), reverse=reverse
        )
        for b, n in enumerate(lengths.tolist()):
            expected, _ = _reference(encoder, values[b], mask[b], times[b], n, "dopri5", reverse)
            torch.testing.assert_close(adaptive[b, :n], expected, rtol=1e-7, atol=1e-8)
            torch.testing.assert_close(bounded[b, :n], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reverse", [False, True])
def test_bounded_steps_when_a_short_series_needs_the_most_steps(reverse):
    """Refining gaps into steps keeps every row in place when a padded series has the longest refined clock."""
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    times = times.clone()
    times[1] = times[1] * 4.0  # series 1 (3 rows, padded) now spans far more time than series 0
    solve = dict(method="rk4", options={"step_size": 0.05})
    with torch.no_grad():
        states, final = encoder(values, mask, times, lengths, solve=solve, reverse=reverse)
        for b, n in enumerate(lengths.tolist()):
            expected, expected_final = _reference(encoder, values[b], mask[b], times[b], n, "dopri5", reverse)
            torch.testing.assert_close(states[b, :n], expected, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(final[b], expected_final, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(states[b, n:], final[b].expand(5 - n, -1))


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "dopri5"])
@pytest.mark.parametrize("reverse", [False, True])
def test_masked_entries_never_change_outputs(method, reverse):
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    noisy = torch.where(mask, values, 1e3 * torch.randn_like(values))
    solve = dict(method=method, rtol=1e-6, atol=1e-8)
    with torch.no_grad():
        states, final = encoder(values, mask, times, lengths, solve=solve, reverse=reverse)
        states2, final2 = encoder(noisy, mask, times, lengths, solve=solve, reverse=reverse)
    assert torch.equal(states, states2) and torch.equal(final, final2)


def test_a_series_does_not_depend_on_its_batch_mates():
    """Changing the other series' times and values leaves series 0 unchanged (bounded inline steps)."""
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    solve = dict(method="rk4", options={"step_size": 0.3})
    other_times = times.clone()
    other_times[1:] = other_times[1:] * 3.7 + 1.0
    other_values = values.clone()
    other_values[1:] += 1.0
    with torch.no_grad():
        alone, _ = encoder(values[:1], mask[:1], times[:1], lengths[:1], solve=solve)
        together, _ = encoder(other_values, mask, other_times, lengths, solve=solve)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-12, atol=1e-14)


def test_unobserved_row_only_moves_the_clock():
    """A row with nothing observed gives the same states as dropping it (up to solver tolerance)."""
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    keep = [0, 1, 3, 4]  # row 2 of series 0 has no observed entry
    solve = dict(method="dopri5", **TIGHT)
    with torch.no_grad():
        full, _ = encoder(values[:1], mask[:1], times[:1], lengths[:1], solve=solve)
        dropped, _ = encoder(values[:1, keep], mask[:1, keep], times[:1, keep], torch.tensor([4]), solve=solve)
    torch.testing.assert_close(full[0, keep], dropped[0], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint", "dopri5", "bosh3"])
def test_evolve_zero_gap_is_identity_and_negative_gap_goes_back(method):
    encoder = _encoder()
    h = torch.randn(4, 5, dtype=torch.float64)
    solve = dict(method=method, **TIGHT)
    with torch.no_grad():
        assert torch.equal(encoder.evolve(h, torch.zeros(4, dtype=torch.float64), solve=solve), h)
        gaps = torch.tensor([0.3, -0.2, 0.0, 0.5], dtype=torch.float64)
        if method in ("rk4", "euler", "midpoint"):
            solve["options"] = {"step_size": 0.01}
        there = encoder.evolve(h, gaps, solve=solve)
        back = encoder.evolve(there, -gaps, solve=solve)
    tolerance = 1e-4 if method == "euler" else 1e-6  # first order: error ~ step * gap
    torch.testing.assert_close(back, h, rtol=tolerance, atol=tolerance)
    assert torch.equal(there[2], h[2])
    assert not torch.allclose(there[0], h[0])


@pytest.mark.parametrize(
    "solve",
    [dict(method="rk4"), dict(method="rk4", options={"step_size": 0.5}), dict(method="dopri5", rtol=1e-5, atol=1e-6, adjoint=True)],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_are_finite_and_reach_every_parameter(solve, reverse):
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    states, final = encoder(values, mask, times, lengths, solve=solve, reverse=reverse)
    (states.pow(2).sum() + final.sum()).backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_rejects_mismatched_shapes():
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    with pytest.raises(ValueError, match="n_times, 2"):
        encoder(values[..., :1], mask[..., :1], times, lengths, solve=dict(method="rk4"))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("gru_hidden", [None, 7, 110])
@pytest.mark.parametrize("step_size", [None, 0.3])
def test_euler_loop_with_its_own_backward_matches_the_recorded_loop(monkeypatch, reverse, activation, gru_hidden, step_size):
    """The Euler loop's hand-written backward gives autograd's values and gradients, masks and padding included; the
    paper's GRU of 7 units runs for every series (masked), of 110 units for the updating series only (gathered)."""
    import dynlearn.nn._odernn as odernn

    torch.manual_seed(3)
    encoder = ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(16, 12), activation=activation, gru_hidden=gru_hidden)
    encoder = encoder.double()
    values, mask, times, lengths = _panel()
    solve = dict(method="euler", options=None if step_size is None else {"step_size": step_size})
    weights = [torch.randn(3, 5, 5, dtype=torch.float64), torch.randn(3, 5, 5, dtype=torch.float64)]

    def run():
        encoder.zero_grad()
        states, final, before = encoder(values, mask, times, lengths, solve=solve, reverse=reverse, return_before=True)
        ((states * weights[0]).sum() + (before * weights[1]).sum() + final.square().sum()).backward()
        return [states.detach(), before.detach(), *(p.grad.clone() for p in encoder.parameters())]

    assert odernn.fusable_field(encoder.field.net)
    fused = run()
    monkeypatch.setattr(odernn, "fusable_field", lambda net: False)
    recorded = run()
    for a, b in zip(fused, recorded):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in fused[2:])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("step_size", [None, 0.3])
def test_velocity_is_the_field_at_the_states_and_evolve_steps_from_it(monkeypatch, reverse, step_size):
    """The encoder's ``velocity`` is ``f`` at every state (padding, inserted steps and the last row included), and
    ``evolve`` from it gives the states and gradients it gives without it, with one field evaluation fewer a row."""
    from dynlearn.nn import mlp_function

    torch.manual_seed(4)
    values, mask, times, lengths = _panel()
    solve = {"method": "euler", "options": None if step_size is None else {"step_size": step_size}}
    small = ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(16, 12), gru_hidden=7).double()
    # A field cheaper to evaluate again than to carry (332 multiply-adds) hands out no values.
    assert small(values, mask, times, lengths, solve=solve, reverse=reverse, return_velocity=True)[2] is None
    encoder = ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(64, 64), gru_hidden=7).double()
    states, _, _, velocity = encoder(
        values, mask, times, lengths, solve=solve, reverse=reverse, return_before=True, return_velocity=True
    )
    f = mlp_function(encoder.field.net, rescaled=True)
    torch.testing.assert_close(velocity, f(states.reshape(-1, 5)).reshape(states.shape), rtol=1e-10, atol=1e-12)
    gaps = torch.tensor([0.0, 0.1, 0.7, 1.3, -0.4], dtype=torch.float64)  # one, one, three and five steps of 0.3
    rows = (torch.tensor([0, 0, 1, 2, 1]), torch.tensor([0, 4, 2, 0, 1]))
    weights = torch.randn(5, 5, dtype=torch.float64)

    def evolved(start_velocity):
        encoder.zero_grad()
        out = encoder.evolve(states[rows], gaps, solve=solve, velocity=start_velocity)
        return [out, *torch.autograd.grad((out * weights).sum(), list(encoder.parameters()), allow_unused=True,
                                                 retain_graph=True)]

    import dynlearn.nn._odernn as odernn

    steps = []
    rollout = odernn.euler_rows
    monkeypatch.setattr(odernn, "euler_rows", lambda h, dt, n, net: steps.append(int(n.sum())) or rollout(h, dt, n, net))
    from_velocity, plain = evolved(velocity[rows]), evolved(None)
    assert steps == ([] if step_size is None else [0 + 0 + 2 + 4 + 1, 1 + 1 + 3 + 5 + 2])
    for a, b in zip(from_velocity, plain):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="velocity"):
        encoder.evolve(states[rows], gaps, solve=solve, velocity=velocity[0, :3])


def _plain_euler(encoder, values, mask, times, n, step_size, reverse):
    """One series on its own, written out: ceil(gap / step_size) Euler steps of the field's module, then its GRU."""
    order = list(range(n - 1, -1, -1)) if reverse else list(range(n))
    h = torch.zeros(1, encoder.hidden_dim, dtype=values.dtype)
    states, before = {}, {}
    for i, k in enumerate(order):
        if i > 0:
            gap = times[k] - times[order[i - 1]]
            n_steps = max(1, int(torch.ceil(gap.abs() / step_size - 1e-9)))
            for _ in range(n_steps):
                h = h + gap / n_steps * encoder.field.net(h)
        before[k] = h[0]
        if mask[k].any():
            h = encoder.gru(torch.cat([values[k] * mask[k], mask[k].double()])[None], h)
        states[k] = h[0]
    return torch.stack([states[k] for k in range(n)]), torch.stack([before[k] for k in range(n)])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("gru_hidden", [None, 7])
def test_euler_loop_matches_plain_per_series_steps_in_values_and_gradients(reverse, gru_hidden):
    """The fused Euler loop against the modules' own forward, series by series: states, priors and every gradient."""
    torch.manual_seed(4)
    encoder = ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(16, 12), gru_hidden=gru_hidden).double()
    values, mask, times, lengths = _panel()
    step_size = 0.3
    weights = [torch.randn(3, 5, 5, dtype=torch.float64), torch.randn(3, 5, 5, dtype=torch.float64)]

    def gradients(loss):
        encoder.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in encoder.parameters()]

    solve = dict(method="euler", options={"step_size": step_size})
    states, _, before = encoder(values, mask, times, lengths, solve=solve, reverse=reverse, return_before=True)
    rows = (torch.arange(5)[None, :] < lengths[:, None])[..., None]
    loss = ((states * weights[0] + before * weights[1]) * rows).sum()
    fused = [states.detach(), before.detach(), *gradients(loss)]
    expected_states = torch.zeros(3, 5, 5, dtype=torch.float64)
    expected_before, loss = torch.zeros_like(expected_states), 0.0
    for b, n in enumerate(lengths.tolist()):
        s, p = _plain_euler(encoder, values[b], mask[b], times[b], n, step_size, reverse)
        expected_states[b, :n], expected_before[b, :n] = s.detach(), p.detach()
        loss = loss + (s * weights[0][b, :n]).sum() + (p * weights[1][b, :n]).sum()
    plain = [expected_states, expected_before, *gradients(loss)]
    fused[0], fused[1] = fused[0] * rows, fused[1] * rows
    for got, expected in zip(fused, plain):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in fused[2:])


def test_paper_step_rule_takes_one_step_up_to_three_nominal_steps_then_about_one_per_step():
    from dynlearn.nn._odernn import _substeps

    gaps = torch.tensor([0.05, 0.1, 0.29, 0.3, 0.45, 1.0, -0.35], dtype=torch.float64)
    assert _substeps(gaps, 0.1, 100, "paper").tolist() == [1, 1, 1, 2, 3, 9, 2]
    assert _substeps(gaps, 0.1, 100, "bound").tolist() == [1, 1, 3, 3, 5, 10, 4]


def test_paper_step_rule_is_the_same_rows_stepped_as_evolve():
    """The rows the loop inserts under the paper's rule take the steps ``evolve`` takes on the same gaps."""
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    solve = dict(method="euler", options={"step_size": 0.3, "step_rule": "paper"})
    states, _, before = encoder(values, mask, times, lengths, solve=solve, return_before=True)
    for b, n in enumerate(lengths.tolist()):
        for k in range(1, n):
            gap = (times[b, k] - times[b, k - 1]).reshape(1)
            evolved = encoder.evolve(states[b, k - 1][None], gap, solve=solve)
            torch.testing.assert_close(evolved[0], before[b, k], rtol=1e-12, atol=1e-12)


def test_unknown_step_rule_is_an_input_error():
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    with pytest.raises(ValueError, match="step_rule"):
        encoder(values, mask, times, lengths, solve=dict(method="euler", options={"step_size": 0.3, "step_rule": "x"}))


def test_times_that_need_a_gradient_get_one_from_the_euler_loop():
    encoder = _encoder()
    values, mask, times, lengths = _panel()
    times = times.clone().requires_grad_(True)
    states, _ = encoder(values, mask, times, lengths, solve=dict(method="euler"))
    (gradient,) = torch.autograd.grad(states.sum(), times)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


@pytest.mark.parametrize("gru_hidden", [7, 110])
def test_euler_loop_gives_inputs_that_need_one_the_recorded_loops_gradient(gru_hidden):
    """The paper's GRU's inputs, projected inside the hand-written loop, get the gradient a recorded loop gives them;
    so do the field's weights through the field values the loop hands out (``velocity``). 110 units run for the
    updating series only (a row where no series updates included), 7 for every series."""
    from dynlearn.nn._odernn import _GRUUnit
    from dynlearn.nn._odernn_fused import euler_gru_loop

    torch.manual_seed(5)
    n_rows, batch, n_inputs, hidden = 4, 3, 3, 5
    gru = _GRUUnit(n_inputs, hidden, gru_hidden).double()
    field = torch.nn.Sequential(torch.nn.Linear(hidden, 8), torch.nn.Tanh(), torch.nn.Linear(8, hidden)).double()
    gaps = torch.rand(n_rows, batch, 1, dtype=torch.float64)
    gaps[0] = 0.0
    update = torch.rand(n_rows, batch, 1) > 0.3
    update[2] = False  # a row where no series updates
    inputs = torch.randn(n_rows, batch, n_inputs, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, n_rows, batch, hidden, dtype=torch.float64)
    updates_all = [bool(row.all()) for row in update]
    moves = [True, True, False, True]  # no series moves into row 2: the loop evaluates no field at row 1
    wrt = (inputs, *field.parameters())
    states, priors, velocity = euler_gru_loop(gaps, update, moves, updates_all, field, gru, inputs)
    fused = torch.autograd.grad(sum((out * w).sum() for out, w in zip((states, priors, velocity), weights)), wrt)
    h, loss, field_values = torch.zeros(batch, hidden, dtype=torch.float64), 0.0, []
    for k in range(n_rows):
        if moves[k]:
            h = h + gaps[k] * field(h)
        loss = loss + (h * weights[1][k]).sum()
        h = torch.where(update[k], gru(inputs[k], h), h)
        loss = loss + (h * weights[0][k]).sum()
        if k + 1 < n_rows and moves[k + 1]:
            field_values.append(field(h))
            loss = loss + (field_values[-1] * weights[2][k]).sum()
        else:
            field_values.append(torch.zeros_like(h))
    recorded = torch.autograd.grad(loss, wrt)
    assert not all(updates_all) and fused[0].abs().sum() > 0
    torch.testing.assert_close(velocity, torch.stack(field_values), rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(fused, recorded):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("gru_hidden", [None, 7])
def test_euler_loop_with_its_own_backward_runs_on_cuda_as_on_cpu(gru_hidden):
    encoder = _encoder(gru_hidden)
    values, mask, times, lengths = _panel()
    solve = dict(method="euler", options={"step_size": 0.3})
    results = []
    for device in ("cpu", "cuda"):
        moved = encoder.to(device)
        moved.zero_grad()
        inputs = [tensor.to(device) for tensor in (values, mask, times, lengths)]
        states, final = moved(*inputs, solve=solve)
        (states.square().sum() + final.sum()).backward()
        results.append([states.detach().cpu(), *(p.grad.cpu() for p in moved.parameters())])
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cpu, cuda, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method, options", [("euler", {"step_size": 0.05}), ("rk4", {"step_size": 0.05}),
                                             ("dopri5", None)])
def test_evolve_with_bounds_follows_the_projected_flow(method, options):
    encoder = _encoder()
    with torch.no_grad():  # a constant drift of 3 per unit time along every dimension
        last = encoder.field.net[-1]
        last.weight.zero_()
        last.bias.fill_(3.0)
    h = torch.zeros(4, 5, dtype=torch.float64)
    gaps = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=torch.float64)
    solve = dict(method=method, options=options, **TIGHT)
    lower, upper = torch.full((5,), -0.5, dtype=torch.float64), torch.full((5,), 1.0, dtype=torch.float64)
    lower[0], upper[0] = -2.0, 2.0
    out = encoder.evolve(h, gaps, solve=solve, bounds=(lower, upper))
    free = encoder.evolve(h, gaps, solve=solve)
    # Inside the box the flow is untouched; pushed outwards the state stops on the face it reaches.
    torch.testing.assert_close(out[:2], free[:2])
    torch.testing.assert_close(out[2], torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[3], torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert float(free[3, 0].detach()) == pytest.approx(30.0)
    # A state that starts outside is first clamped into the box; backwards in time the drift pulls it to the lower face.
    start = torch.full((1, 5), 4.0, dtype=torch.float64)
    back = encoder.evolve(start, torch.tensor([-10.0], dtype=torch.float64), solve=solve, bounds=(lower, upper))
    torch.testing.assert_close(back[0], lower)


def _stepped_row_by_row(net, h, dt, n_steps):
    """Every row stepped once, then only the rows with steps left, each step recorded (``evolve``'s other path)."""
    from dynlearn.nn import mlp_function
    from dynlearn.nn._odernn import stepped_rows
    from dynlearn.solvers import fixed_step

    f = mlp_function(net, rescaled=True)
    return stepped_rows(lambda x, step, _: fixed_step("euler", f, x, step), h, dt, n_steps)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_written_out_euler_rows_match_rows_stepped_one_at_a_time(activation, dtype):
    """Rows with their own number of Euler steps, as one node: the recorded steps' values and gradients."""
    from dynlearn.nn import make_mlp
    from dynlearn.nn._odernn_fused import euler_rows

    torch.manual_seed(3)
    net = make_mlp(5, 5, (16, 12), activation=activation).to(dtype)
    n_rows = 40
    h = torch.randn(n_rows, 5, dtype=dtype, requires_grad=True)
    n_steps = torch.randint(1, 6, (n_rows, 1)).to(dtype)
    dt = 0.1 * torch.rand(n_rows, 1, dtype=dtype)
    dt[:4] = 0.0  # rows that stay where they are
    weights = torch.randn(n_rows, 5, dtype=dtype)
    results = []
    for stepped in (_stepped_row_by_row, euler_rows):
        out = stepped(net, h, dt, n_steps) if stepped is _stepped_row_by_row else stepped(h, dt, n_steps, net)
        grads = torch.autograd.grad((out * weights).sum(), [h, *net.parameters()])
        results.append([out.detach(), *grads])
    assert torch.equal(results[1][0][:4], h.detach()[:4])
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for recorded, written_out in zip(*results):
        assert written_out.abs().sum() > 0
        torch.testing.assert_close(written_out, recorded, **tolerance)


def test_evolve_takes_the_written_out_rows_only_where_they_apply(monkeypatch):
    """Unbounded fixed Euler steps of an unforced encoder take one node; bounded steps and gaps that need a
    gradient step the recorded way, to the same states."""
    import dynlearn.nn._odernn as odernn

    calls = []
    written_out = odernn.euler_rows
    monkeypatch.setattr(odernn, "euler_rows", lambda *args: calls.append(1) or written_out(*args))
    encoder = _encoder(gru_hidden=7)
    h = torch.randn(6, 5, dtype=torch.float64)
    gaps = torch.tensor([0.0, 0.04, 0.3, 0.7, 1.3, -0.5], dtype=torch.float64)
    solve = {"method": "euler", "options": {"step_size": 0.25}}
    fast = encoder.evolve(h, gaps, solve=solve)
    assert calls == [1]
    needing = gaps.clone().requires_grad_(True)
    recorded = encoder.evolve(h, needing, solve=solve)
    wide = (torch.full((5,), -1e6, dtype=torch.float64), torch.full((5,), 1e6, dtype=torch.float64))
    bounded = encoder.evolve(h, gaps, solve=solve, bounds=wide)
    assert calls == [1]
    torch.testing.assert_close(fast, recorded.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, bounded, rtol=1e-12, atol=1e-12)
    (gap_gradient,) = torch.autograd.grad(recorded.sum(), needing)
    assert gap_gradient[1:].abs().min() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_written_out_euler_rows_run_on_cuda_as_on_cpu():
    from dynlearn.nn import make_mlp
    from dynlearn.nn._odernn_fused import euler_rows

    torch.manual_seed(4)
    net = make_mlp(5, 5, (16,)).double()
    h = torch.randn(30, 5, dtype=torch.float64)
    n_steps = torch.randint(1, 5, (30, 1)).double()
    dt = 0.1 * torch.rand(30, 1, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        moved, start = net.to(device), h.to(device).requires_grad_(True)
        out = euler_rows(start, dt.to(device), n_steps.to(device), moved)
        grads = torch.autograd.grad(out.square().sum(), [start, *moved.parameters()])
        results.append([out.detach().cpu(), *(g.cpu() for g in grads)])
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cpu, cuda, rtol=1e-9, atol=1e-10)


def test_written_out_euler_rows_take_no_rows():
    from dynlearn.nn import make_mlp
    from dynlearn.nn._odernn_fused import euler_rows

    net = make_mlp(3, 3, (8,))
    h = torch.zeros(0, 3, requires_grad=True)
    out = euler_rows(h, torch.zeros(0, 1), torch.ones(0, 1), net)
    out.sum().backward()
    assert out.shape == (0, 3) and h.grad.shape == (0, 3)


@pytest.mark.parametrize("gru_hidden", [None, 7])
def test_written_out_loops_hand_back_ordinary_tensors_whatever_the_callers_grad_mode(gru_hidden):
    """The loops run their rows in inference mode; what they return (states, the hidden rows, every gradient) is
    an ordinary tensor that autograd and in-place updates accept, and no_grad or inference mode around the call
    gives the same states."""
    encoder = ODERNNEncoder(n_features=2, hidden_dim=5, ode_hidden=(16,), gru_hidden=gru_hidden)
    values, mask, times, lengths = (x.float() if x.is_floating_point() else x for x in _panel())
    solve = {"method": "euler", "options": {"step_size": 0.3}}
    states, final = encoder(values, mask, times, lengths, solve=solve)
    rows = encoder.evolve(final, torch.tensor([0.2, 0.7, 1.1]), solve=solve)
    assert not any(x.is_inference() for x in (states, final, rows))
    (states.square().sum() + rows.square().sum()).backward()
    with torch.no_grad():
        for p in encoder.parameters():
            assert p.grad is not None and not p.grad.is_inference()
            p.sub_(0.01 * p.grad)  # an optimiser's in-place step
    states, final = encoder(values, mask, times, lengths, solve=solve)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            again, _ = encoder(values, mask, times, lengths, solve=solve)
        torch.testing.assert_close(again, states.detach(), rtol=0, atol=0)
