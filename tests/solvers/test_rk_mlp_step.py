"""A dopri5 step of an MLP field as one autograd node (dynlearn.solvers._rk_mlp) against stage-by-stage stepping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn.nn import MLPVectorField
from dynlearn.solvers import SolverStats, count_evaluations, solve_ode, solve_ode_irregular
from dynlearn.solvers._rk import DOPRI5
from dynlearn.solvers import MLPLayers
from dynlearn.solvers._rk_mlp import _FORWARD, _TANH_VIA_SIGMOID_FROM, MLPStep, mlp_step, tanh_via_sigmoid

ACTIVATIONS = ["tanh", "relu", "softplus", "elu"]


def _pair(activation: str, seed: int = 0) -> tuple[MLPVectorField, nn.Module]:
    """A field that steps through MLPStep, and the same field hidden behind a plain module (stage by stage)."""
    torch.manual_seed(seed)
    fused = MLPVectorField(3, (16, 12), activation).double()
    with torch.no_grad():
        fused.net[-1].weight.mul_(10.0)  # make_mlp's shrunken last layer would leave the dynamics nearly still

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = fused

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(t, y)

    return fused, Plain()


def _solve_and_differentiate(field: nn.Module, regular: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    stats = SolverStats()
    if regular:
        t = torch.linspace(0.0, 2.0, 6, dtype=torch.float64)
        out = solve_ode(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, stats=stats)
    else:  # row-by-row outputs of the shifted clock
        times = torch.tensor([[0.0, 0.3, 1.7], [0.5, 0.6, 2.9], [0.0, 1.1, 1.2], [0.2, 2.0, 2.1], [0.0, 0.1, 0.4]],
                             dtype=torch.float64)  # fmt: skip
        out = solve_ode_irregular(field, y0, times, rtol=1e-6, atol=1e-8, autonomous=True, stats=stats)
    weights = torch.linspace(-1.0, 2.0, out.numel(), dtype=torch.float64).reshape(out.shape)
    grads = torch.autograd.grad((out.sin() * weights).sum(), list(field.parameters()))
    return out, list(grads), stats.nfe


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("regular", [True, False])
def test_fused_steps_give_the_stage_by_stage_states_gradients_and_evaluations(activation, regular):
    fused, plain = _pair(activation)
    assert fused.mlp_layers() is not None and not hasattr(plain, "mlp_layers")
    ours, our_grads, our_nfe = _solve_and_differentiate(fused, regular)
    theirs, their_grads, their_nfe = _solve_and_differentiate(plain, regular)
    assert our_nfe == their_nfe >= 14  # several steps
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-14)
    for mine, other in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)


def test_gradients_reach_the_start_state_and_a_slope_given_from_outside():
    """MLPStep's own adjoints of y0 and k1, and of a stage a loss reads, against autograd through the stages."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    layers = MLPLayers((net[0].weight, net[2].weight), (net[0].bias, net[2].bias), ("tanh",))
    y0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    k1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h = 0.3

    def by_stages():
        stages, state = [k1], y0
        for row in DOPRI5.coupling:
            state = y0 + sum(w * h * k for w, k in zip(row, stages))
            stages.append(net(state))
        return [state, *stages[1:]]

    for step in (lambda: mlp_step(DOPRI5.coupling, h, layers, y0, k1), by_stages):
        out = step()
        loss = out[0].square().sum() + (out[3] * 0.5).sum()  # the state and one stage
        grads = torch.autograd.grad(loss, [y0, k1, *net.parameters()])
        if step is by_stages:
            for mine, other in zip(first, grads):
                torch.testing.assert_close(mine, other, rtol=1e-12, atol=1e-13)
        first = grads


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_an_autonomous_field_told_of_jumps_takes_each_far_side_slope_in_its_next_fused_step(activation):
    """``jump_t`` without a clock: the step after each jump takes the slope there as a stage (no reads)."""
    from dynlearn.solvers import _rk

    fused, plain = _pair(activation, seed=2)
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    options = {"jump_t": torch.tensor([0.35, 0.8, 1.55], dtype=torch.float64)}
    results, couplings, original = [], [], _rk.mlp_step
    _rk.mlp_step = lambda coupling, *args: couplings.append(len(coupling)) or original(coupling, *args)
    try:
        for field in (fused, plain):
            stats = SolverStats()
            out = solve_ode(field, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, options=options, stats=stats)
            grads = torch.autograd.grad((out.sin() * t[:, None, None]).sum(), list(fused.parameters()))
            results.append((out, grads, stats.nfe))
    finally:
        _rk.mlp_step = original
    assert couplings.count(len(DOPRI5.coupling) + 1) >= 3  # one fused step after each jump
    (ours, our_grads, our_nfe), (theirs, their_grads, their_nfe) = results
    assert our_nfe == their_nfe
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-14)
    for mine, other in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)


def test_fields_that_are_not_a_plain_mlp_are_stepped_stage_by_stage():
    assert MLPVectorField(2, (8,), "tanh", time_dependent=True).mlp_layers().columns is not None
    assert MLPVectorField(2, (8,), "tanh", n_inputs=1).mlp_layers().reads_time
    assert MLPVectorField(2, (8,), "tanh").mlp_layers().columns is None
    assert MLPVectorField(2, (8,), "gelu").mlp_layers() is None  # its derivative needs the layer's input
    assert MLPVectorField(2, (8,), "softplus").mlp_layers().activations == ("softplus",)

    class Damped(MLPVectorField):  # a subclass with its own forward is not the plain network any more
        def forward(self, t, y, u=None):
            return super().forward(t, y, u) - 0.1 * y

    assert Damped(2, (8,)).mlp_layers() is None


def test_evaluations_are_counted():
    fused, _ = _pair("tanh")
    y0 = torch.randn(2, 3, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    with count_evaluations() as counted:
        solve_ode(fused, y0, t, method="dopri5")
    assert counted.nfe == counted.nfe_forward > 7 and (counted.nfe - 2) % 6 == 0  # start, first-step trial, 6 a step


def test_second_derivatives_through_fused_steps_are_exact():
    """A recorded backward pass (create_graph=True) recomputes the step through autograd: the same Hessian products."""
    results = []
    for field in _pair("softplus"):
        y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_()
        out = solve_ode(field, y0, torch.linspace(0.0, 1.5, 4, dtype=torch.float64), method="dopri5", rtol=1e-7,
                        atol=1e-9)  # fmt: skip
        (grad,) = torch.autograd.grad(out.square().sum(), [y0], create_graph=True)
        second = torch.autograd.grad((grad * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum(),
                                     [y0, *field.parameters()])  # fmt: skip
        results.append(second)
    for mine, other in zip(*results):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)


def test_a_step_limit_stops_a_fused_solve():
    from dynlearn.exceptions import IntegrationError

    fused, _ = _pair("tanh")
    with pytest.raises(IntegrationError, match="max_num_steps|step limit"):
        solve_ode(fused, torch.ones(2, 3, dtype=torch.float64), torch.tensor([0.0, 50.0], dtype=torch.float64),
                  method="dopri5", rtol=1e-12, atol=1e-14, max_num_steps=3)  # fmt: skip


def test_the_step_needs_a_consistent_layer_description():
    w = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="activations"):
        MLPLayers((w, w), (w[0], w[0]), ("gelu",))
    with pytest.raises(ValueError, match="one activation between layers"):
        MLPLayers((w, w), (w[0], w[0]), ())
    assert MLPStep is not None


def test_wide_layers_sum_their_stage_gradients_in_place_to_the_same_result():
    """Above _ACCUMULATE_ABOVE entries the weight gradients are summed stage by stage instead of stacked."""
    from dynlearn.solvers import _rk_mlp

    torch.manual_seed(3)
    fused = MLPVectorField(3, (160,), "tanh").double()
    y0 = torch.randn(120, 3, dtype=torch.float64)
    assert 120 * 160 > _rk_mlp._ACCUMULATE_ABOVE
    results = []
    for field in (fused, lambda t, y: fused(t, y)):
        out = solve_ode(field, y0, torch.linspace(0.0, 1.0, 3, dtype=torch.float64), method="dopri5")
        results.append(torch.autograd.grad(out.sin().sum(), list(fused.parameters())))
    for mine, other in zip(*results):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("guarded", [3, 2])
def test_a_box_contraction_steps_fused_with_the_same_states_and_gradients(guarded):
    """NeuralODE's default stabilize=True field: mlp(y) pulled back to a box on the first components."""
    from dynlearn.nn import BoxContraction

    fused, _ = _pair("tanh", seed=2)
    lower = torch.full((guarded,), -0.3, dtype=torch.float64)
    box = BoxContraction(fused, lower, -lower, 2.0)
    assert box.mlp_layers().box is not None

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = box

        def forward(self, t, y):
            return self.inner(t, y)

    results = []
    for field in (box, Plain()):
        out, grads, nfe = _solve_and_differentiate(field, regular=True)
        results.append((out, grads, nfe))
    (ours, our_grads, our_nfe), (theirs, their_grads, their_nfe) = results
    assert our_nfe == their_nfe
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-14)
    for mine, other in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert ((y0[:, :guarded] < -0.3) | (y0[:, :guarded] > 0.3)).any()  # the pull is exercised


# ------------------------------------------------------------ fields that read time or known inputs
class _Hidden(nn.Module):
    """A field behind a plain module: solves step it stage by stage."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, t, y, *inputs):
        return self.inner(t, y, *inputs)


def _driven(time_dependent: bool, n_inputs: int, seed: int = 0) -> MLPVectorField:
    torch.manual_seed(seed)
    field = MLPVectorField(3, (16, 12), "softplus", time_dependent=time_dependent, n_inputs=n_inputs).double()
    with torch.no_grad():
        field.net[-1].weight.mul_(10.0)
    return field


def _compare(solve, fused: nn.Module, leaves: list[torch.Tensor], steps_fused: bool = True) -> None:
    """The same states, evaluations and gradients (parameters and ``leaves``) from ``fused`` (which takes
    MLPStep, or not where ``steps_fused`` is False) and stage by stage."""
    from dynlearn.solvers import _rk

    results, original = [], _rk.mlp_step
    for field in (fused, _Hidden(fused)):
        stats, taken = SolverStats(), []
        _rk.mlp_step = lambda *args: taken.append(1) or original(*args)
        try:
            out = solve(field, stats)
        finally:
            _rk.mlp_step = original
        assert bool(taken) == (steps_fused and field is fused)
        weights = torch.linspace(-1.0, 2.0, out.numel(), dtype=torch.float64).reshape(out.shape)
        grads = torch.autograd.grad((out.sin() * weights).sum(), [*fused.parameters(), *leaves], allow_unused=True)
        results.append((out, grads, stats.nfe))
    (ours, our_grads, our_nfe), (theirs, their_grads, their_nfe) = results
    assert our_nfe == their_nfe >= 14
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-14)
    for mine, other in zip(our_grads, their_grads):
        assert (mine is None) == (other is None)
        if mine is not None:
            torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)


def test_a_field_of_time_steps_fused_on_the_solver_clock():
    field = _driven(time_dependent=True, n_inputs=0)
    y0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    t = torch.linspace(0.3, 2.3, 6, dtype=torch.float64)
    _compare(lambda f, stats: solve_ode(f, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, stats=stats), field, [y0])


_TIMES = torch.tensor([[0.0, 0.3, 1.7, 1.7, 2.0], [0.5, 0.6, 2.9, 3.0, 3.5], [0.0, 1.1, 1.2, 2.5, 2.6]],
                      dtype=torch.float64)  # fmt: skip


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
@pytest.mark.parametrize("time_dependent", [False, True])
def test_driven_fields_step_fused_on_the_segment_clock(interpolation, time_dependent):
    """A field of known inputs (and time) on each series' own segments: the clock's scale and inputs per stage."""
    from dynlearn.solvers import ControlPath

    field = _driven(time_dependent, n_inputs=2)
    values = torch.randn(3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)

    def solve(f, stats):
        control = ControlPath(_TIMES, values, interpolation)
        return solve_ode_irregular(f, y0, _TIMES, control=control, rtol=1e-6, atol=1e-8, stats=stats)

    _compare(solve, field, [y0])


def test_a_step_rejected_just_after_a_jump_is_retried_with_the_slope_its_fused_node_took():
    """After a jump the next step takes the field's other side as a stage of its own; when that step is rejected,
    the retry starts from the slope it took (same states, gradients and evaluations as stage by stage)."""
    from dynlearn.solvers import ControlPath, _rk

    field = _driven(time_dependent=False, n_inputs=1, seed=4)
    values = torch.zeros(3, 5, 1, dtype=torch.float64)
    values[:, 1:] = 100.0  # a held input that leaps at each series' second time: the step after it is too long
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    calls, original = [], _rk.mlp_step

    def recorded(coupling, h, layers, y, k1, reads=None):
        calls.append((len(coupling), y))
        return original(coupling, h, layers, y, k1, reads)

    def solve(f, stats):
        return solve_ode_irregular(f, y0, _TIMES, control=ControlPath(_TIMES, values, "previous"), rtol=1e-6,
                                   atol=1e-8, stats=stats)  # fmt: skip

    _rk.mlp_step = recorded
    try:
        _compare(solve, field, [y0])
    finally:
        _rk.mlp_step = original
    fresh = [i for i, (n, _) in enumerate(calls) if n == len(DOPRI5.coupling) + 1]
    assert fresh  # steps after a jump took its slope themselves
    assert any(i + 1 < len(calls) and calls[i + 1][1] is calls[i][1] for i in fresh)  # and one was retried


def test_a_driven_field_in_a_box_steps_fused_on_the_segment_clock():
    """NeuralODE's default with covariates: BoxContraction around a driven field, scaled by the clock."""
    from dynlearn.nn import BoxContraction
    from dynlearn.solvers import ControlPath

    inner = _driven(time_dependent=False, n_inputs=1, seed=3)
    lower = torch.full((2,), -0.3, dtype=torch.float64)
    box = BoxContraction(inner, lower, -lower, 2.0)
    layers = box.mlp_layers()
    assert layers.box is not None and layers.columns is not None
    values = torch.randn(3, 5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert ((y0[:, :2] < -0.3) | (y0[:, :2] > 0.3)).any()  # the pull is exercised
    _compare(lambda f, stats: solve_ode_irregular(f, y0, _TIMES, control=ControlPath(_TIMES, values, "linear"),
                                                  rtol=1e-6, atol=1e-8, stats=stats), box, [])  # fmt: skip


def test_inputs_that_need_a_gradient_are_stepped_stage_by_stage_and_get_it():
    """A control path built from tensors that require grad: the fused step would drop their gradient."""
    from dynlearn.solvers import ControlPath

    field = _driven(time_dependent=False, n_inputs=2)
    values = torch.randn(3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def solve(f, stats):
        return solve_ode_irregular(f, y0, _TIMES, control=ControlPath(_TIMES, values, "cubic"), rtol=1e-6,
                                   atol=1e-8, stats=stats)  # fmt: skip

    _compare(solve, field, [values], steps_fused=False)
    out = solve(field, SolverStats())
    (grad,) = torch.autograd.grad(out.square().sum(), [values])
    assert grad.abs().sum() > 0


def test_a_field_of_time_declared_autonomous_is_not_stepped_on_the_shifted_clock_as_if_it_were():
    """The shifted clock moves each series' start to 0: a field that reads time must see its own times there."""
    field = _driven(time_dependent=True, n_inputs=0)
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _compare(lambda f, stats: solve_ode_irregular(f, y0, _TIMES, autonomous=True, rtol=1e-6, atol=1e-8,
                                                  stats=stats), field, [], steps_fused=False)  # fmt: skip


def test_a_driven_field_refuses_inputs_of_the_wrong_shape_by_name():
    layers = _driven(time_dependent=False, n_inputs=2).mlp_layers()
    with pytest.raises(ValueError, match=r"u: expected inputs of shape .*n_inputs=2.*got none"):
        layers.columns(torch.zeros(()), None)
    with pytest.raises(ValueError, match=r"u: expected .*got shape \(3, 1\)"):
        layers.columns(torch.zeros(3), torch.zeros(3, 1))


def test_the_step_refuses_scales_on_some_stages_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    reads = [(None, torch.ones(3, dtype=torch.float64))] + [(None, None)] * 5
    with pytest.raises(ValueError, match="a scale for every stage or for none"):
        mlp_step(DOPRI5.coupling, 0.1, MLPLayers.of(net), torch.zeros(3, 2, dtype=torch.float64),
                 torch.zeros(3, 2, dtype=torch.float64), reads)  # fmt: skip


@pytest.mark.parametrize("driven", [False, True])
@pytest.mark.parametrize("boxed", [False, True])
def test_a_second_order_field_steps_fused_with_the_same_states_and_gradients(driven, boxed):
    """NeuralODE(second_order=True): the slope is [v, mlp([z, v, u])], optionally in the default box."""
    from dynlearn.nn import BoxContraction, SecondOrderField
    from dynlearn.solvers import ControlPath

    torch.manual_seed(4)
    inner = SecondOrderField(2, (16, 12), "tanh", n_inputs=1 if driven else 0).double()
    with torch.no_grad():
        inner.net[-1].weight.mul_(10.0)
    field = BoxContraction(inner, torch.full((2,), -0.3, dtype=torch.float64), torch.full((2,), 0.3,
                           dtype=torch.float64), 2.0) if boxed else inner  # fmt: skip
    assert field.mlp_layers().second_order == 2
    y0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    if driven:
        values = torch.randn(3, 5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        solve = lambda f, stats: solve_ode_irregular(f, y0, _TIMES, control=ControlPath(_TIMES, values, "cubic"),  # noqa: E731
                                                     rtol=1e-6, atol=1e-8, stats=stats)  # fmt: skip
    else:
        t = torch.linspace(0.0, 2.0, 6, dtype=torch.float64)
        solve = lambda f, stats: solve_ode(f, y0, t, method="dopri5", rtol=1e-6, atol=1e-8, stats=stats)  # noqa: E731
    _compare(solve, field, [y0])


def _run_layers(layers: MLPLayers, x: torch.Tensor) -> torch.Tensor:
    for weight, bias, name in zip(layers.weights, layers.biases, layers.activations):
        x = _FORWARD[name](x @ weight.t() + bias)
    return x @ layers.weights[-1].t() + layers.biases[-1]


def test_rescaled_layers_are_the_same_network_with_sigmoids_for_tanh():
    """tanh(z) = 2 sigmoid(2z) - 1 folded into the layers on either side, two tanh layers in a row included."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(),
                        nn.Linear(5, 3)).double()  # fmt: skip
    layers = MLPLayers.of(net)
    rescaled = layers.rescaled()
    assert rescaled.activations == ("sigmoid", "sigmoid", "relu")
    x = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(_run_layers(rescaled, x), net(x), rtol=1e-12, atol=1e-13)
    folded = torch.autograd.grad(_run_layers(rescaled, x).square().sum(), list(net.parameters()))
    direct = torch.autograd.grad(net(x).square().sum(), list(net.parameters()))
    for mine, other in zip(folded, direct):
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)
    without_tanh = MLPLayers.of(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert without_tanh.rescaled() is without_tanh


def test_tanh_via_sigmoid_is_tanh_with_its_derivatives_to_float32_rounding():
    z = torch.randn(_TANH_VIA_SIGMOID_FROM // 64, 64, generator=torch.Generator().manual_seed(0)) * 3
    z.requires_grad_(True)
    h = tanh_via_sigmoid(z)
    assert type(h.grad_fn).__name__ == "_TanhViaSigmoidBackward"  # the sigmoid path: one node
    torch.testing.assert_close(h, torch.tanh(z), rtol=0, atol=3e-7)
    weights = torch.linspace(-1.0, 2.0, z.numel()).reshape(z.shape)
    firsts = [torch.autograd.grad((f(z) * weights).sum(), z, create_graph=True)[0] for f in (tanh_via_sigmoid, torch.tanh)]
    torch.testing.assert_close(firsts[0], firsts[1], rtol=0, atol=2e-6)
    seconds = [torch.autograd.grad(first.square().sum(), z)[0] for first in firsts]  # σ'' through the saved output
    torch.testing.assert_close(seconds[0], seconds[1], rtol=1e-4, atol=2e-5)
    with torch.no_grad():  # unrecorded: the same numbers in place
        torch.testing.assert_close(tanh_via_sigmoid(z), h.detach(), rtol=0, atol=0)
    # Small, float64 or not on the CPU: torch's own tanh, bit for bit; a small one by the sigmoid when asked.
    for x in (z.detach()[:4], z.detach().double()):
        assert torch.equal(tanh_via_sigmoid(x), torch.tanh(x))
    small = z.detach()[:4].clone().requires_grad_(True)
    assert type(tanh_via_sigmoid(small, min_entries=0).grad_fn).__name__ == "_TanhViaSigmoidBackward"


def test_a_float32_solve_runs_tanh_layers_as_sigmoids_to_the_tanh_steps_rounding(monkeypatch):
    calls = []
    rescaled = MLPLayers.rescaled
    monkeypatch.setattr(MLPLayers, "rescaled", lambda self: calls.append(1) or rescaled(self))
    fused, plain = _pair("tanh")
    fused.float()
    y0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    t = torch.linspace(0.0, 2.0, 6)
    results = []
    for field in (fused, plain):
        stats = SolverStats()
        out = solve_ode(field, y0, t, method="dopri5", rtol=1e-4, atol=1e-5, stats=stats)
        grads = torch.autograd.grad(out.square().sum(), list(fused.parameters()))
        results.append((out, grads, stats.nfe))
    assert calls == [1]  # the written-out steps only; the plain module steps stage by stage with tanh
    (ours, our_grads, our_nfe), (theirs, their_grads, their_nfe) = results
    assert our_nfe == their_nfe >= 14
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # float32 rounding over the steps
    for mine, other in zip(our_grads, their_grads):
        # Float32 gradients through 14+ dopri5 steps: 1e-3 of an entry (one of 36 entries differed by 4.8e-4 of
        # itself on one machine); a wrong fold of the factors would differ by order one.
        torch.testing.assert_close(mine, other, rtol=1e-3, atol=1e-4)


def test_sigmoid_layers_step_as_one_node_like_the_stage_by_stage_step():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 10), nn.Sigmoid(), nn.Linear(10, 3)).double()
    layers = MLPLayers.of(net)
    assert layers is not None and layers.activations == ("sigmoid",)
    y0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    k1 = net(y0)
    coupling = ((0.5,), (0.0, 1.0))  # the midpoint rule's stages, the solution's weights last
    y1, *_ = mlp_step(coupling, 0.1, layers, y0, k1)
    k2 = net(y0 + 0.05 * k1)
    expected = y0 + 0.1 * k2
    torch.testing.assert_close(y1, expected, rtol=1e-13, atol=1e-14)
    for mine, other in zip(torch.autograd.grad(y1.sum(), [y0, *net.parameters()], retain_graph=True),
                           torch.autograd.grad(expected.sum(), [y0, *net.parameters()])):  # fmt: skip
        torch.testing.assert_close(mine, other, rtol=1e-10, atol=1e-12)
