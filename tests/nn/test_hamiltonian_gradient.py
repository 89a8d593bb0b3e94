"""The written-out gradient of a Hamiltonian network is autograd's gradient, in values, training gradients and graphs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn.nn import HamiltonianField, make_mlp
from dynlearn.nn._energy import _gradient, _network_gradient, _written_out_layers
from dynlearn.solvers import solve_ode

WRITTEN_OUT = ["tanh", "relu", "softplus", "elu", "silu"]


def _randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` in float64 with standard normal weights: both sides of every kink and saturation are reached."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return module


def _states(n: int, width: int, seed: int = 1) -> torch.Tensor:
    """Standard normal states, and a few scaled by 30 so that softplus passes its linear threshold (20)."""
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:4] *= 30
    return x


def _autograd_gradient(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _gradient(lambda z: net(z).squeeze(-1), x)


def _autograd_field(field: HamiltonianField, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """Hamilton's equations with every gradient of H taken by autograd (the double-backward reference)."""
    d = field.n_coordinates
    q, p = x.split(d, dim=-1)
    if field.separable:
        grad_q, grad_p = _autograd_gradient(field.potential, q)[1], _autograd_gradient(field.kinetic, p)[1]
    else:
        grad_q, grad_p = _autograd_gradient(field.net, x)[1].split(d, dim=-1)
    rate = -grad_q if u is None else field.input_matrix.force(q, u) - grad_q
    return torch.cat([grad_p, rate], dim=-1)


class _AutogradField(nn.Module):
    """``field``'s vector field with autograd's gradients, sharing its parameters."""

    def __init__(self, field: HamiltonianField):
        super().__init__()
        self.field = field

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _autograd_field(self.field, x)


@pytest.mark.parametrize("hidden", [(), (8,), (8, 9)])
@pytest.mark.parametrize("activation", WRITTEN_OUT)
def test_value_and_gradient_are_autograds(activation, hidden):
    net = _randomised(make_mlp(3, 1, hidden, activation))
    assert _written_out_layers(net) is not None
    x = _states(32, 3)
    value, gradient = _network_gradient(net, x)
    expected_value, expected_gradient = _autograd_gradient(net, x)
    torch.testing.assert_close(value, net(x).squeeze(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(value, expected_value, rtol=0, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=1e-12)
    assert gradient.abs().max() > 1e-3  # a gradient that can be wrong
    assert _network_gradient(net, x, value=False)[0] is None


def _parameter_gradients(module: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    parameters = list(module.parameters())
    found = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found)]


@pytest.mark.parametrize("n_inputs", [0, 1])
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("activation", WRITTEN_OUT)
def test_training_gradients_are_the_double_backward_ones(activation, separable, n_inputs):
    field = _randomised(HamiltonianField(2, (8, 9), activation, separable, n_inputs, "positions"), seed=2)
    x = _states(24, 4)
    u = torch.randn(24, n_inputs, generator=torch.Generator().manual_seed(3), dtype=torch.float64) if n_inputs else None
    target = torch.randn(24, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = field(torch.zeros(()), x, u)
    reference = _autograd_field(field, x, u)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    written = _parameter_gradients(field, ((ours - target) ** 2).sum())
    double_backward = _parameter_gradients(field, ((reference - target) ** 2).sum())
    assert max(g.abs().max() for g in double_backward) > 1e-3
    for g, expected in zip(written, double_backward):
        torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("separable", [False, True])
def test_gradients_and_input_power_match_autograd(separable):
    field = _randomised(HamiltonianField(2, (8,), "softplus", separable, 1, "constant"), seed=5)
    x = _states(16, 4)
    u = torch.randn(16, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    q, p = x.split(2, dim=-1)
    reference = _autograd_field(field, x)
    grad_q, grad_p = field.gradients(q, p)
    torch.testing.assert_close(torch.cat([grad_p, -grad_q], dim=-1), reference, rtol=0, atol=1e-12)
    power = (reference[:, :2] * field.input_matrix.force(q, u)).sum(-1)
    torch.testing.assert_close(field.input_power(x, u), power, rtol=0, atol=1e-12)
    if separable:
        torch.testing.assert_close(field.potential_gradient(q), -reference[:, 2:], rtol=0, atol=1e-12)
        torch.testing.assert_close(field.kinetic_gradient(p), reference[:, :2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("separable", [False, True])
def test_no_graph_is_kept_under_no_grad(separable):
    field = _randomised(HamiltonianField(2, (8, 8), "tanh", separable))
    x = _states(8, 4)
    with torch.no_grad():
        rate = field(torch.zeros(()), x)
        value, gradient = _network_gradient(field.potential if separable else field.net, x[:, :2] if separable else x)
    assert rate.grad_fn is None and not rate.requires_grad
    assert gradient.grad_fn is None and value.grad_fn is None
    torch.testing.assert_close(rate, _autograd_field(field, x).detach(), rtol=0, atol=1e-12)


def test_a_state_that_requires_grad_gets_its_second_derivatives():
    """d(field)/dx is the Hessian of H, through the written-out operations as through autograd's."""
    field = _randomised(HamiltonianField(2, (8,), "tanh"))
    x = _states(4, 4).requires_grad_(True)
    ours = torch.autograd.grad(field(torch.zeros(()), x).pow(2).sum(), x)[0]
    reference = torch.autograd.grad(_autograd_field(field, x).pow(2).sum(), x)[0]
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("hidden", [(8,), (8, 9), (5, 6, 7)])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_hand_written_second_derivatives_are_autograds(activation, hidden):
    """The field's gradients with respect to the state and every parameter, one hidden layer to three."""
    field = _randomised(HamiltonianField(2, hidden, activation), seed=9)
    x = _states(12, 4).requires_grad_(True)
    target = torch.randn(12, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    wrt = [x, *field.parameters()]
    ours = torch.autograd.grad(((field(torch.zeros(()), x) - target) ** 2).sum(), wrt, allow_unused=True)
    reference = torch.autograd.grad(((_autograd_field(field, x) - target) ** 2).sum(), wrt, allow_unused=True)
    for mine, expected, tensor in zip(ours, reference, wrt):
        zero = torch.zeros_like(tensor)
        torch.testing.assert_close(zero if mine is None else mine, zero if expected is None else expected,
                                   rtol=1e-10, atol=1e-10)
    assert ours[1].abs().max() > 1e-3


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_recorded_backward_gives_third_derivatives(activation):
    """A penalty on the training gradient (``create_graph=True``) is differentiated as through autograd's field."""
    field = _randomised(HamiltonianField(2, (8, 9), activation), seed=11)
    x = _states(10, 4)
    parameters = list(field.parameters())

    def penalty(rate: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(rate.pow(2).sum(), parameters, create_graph=True, allow_unused=True)
        return sum(g.pow(2).sum() for g in grads if g is not None)

    ours = torch.autograd.grad(penalty(field(torch.zeros(()), x)), parameters, allow_unused=True)
    reference = torch.autograd.grad(penalty(_autograd_field(field, x)), parameters, allow_unused=True)
    for mine, expected, p in zip(ours, reference, parameters):
        zero = torch.zeros_like(p)
        torch.testing.assert_close(zero if mine is None else mine, zero if expected is None else expected,
                                   rtol=1e-9, atol=1e-9)
    assert max(g.abs().max() for g in ours if g is not None) > 1e-3


def test_a_batch_of_states_with_more_dimensions_takes_the_general_path():
    field = _randomised(HamiltonianField(1, (8,), "tanh"))
    x = _states(12, 2).reshape(3, 4, 2)
    torch.testing.assert_close(field(torch.zeros(()), x), _autograd_field(field, x.reshape(12, 2)).reshape(3, 4, 2),
                               rtol=0, atol=1e-12)


def test_gelu_and_other_networks_fall_back_to_autograd():
    gelu = _randomised(make_mlp(3, 1, (8,), "gelu"))
    two_outputs = make_mlp(3, 2, (8,))
    softplus_beta = nn.Sequential(nn.Linear(3, 8), nn.Softplus(beta=2.0), nn.Linear(8, 1))
    no_bias = nn.Sequential(nn.Linear(3, 8, bias=False), nn.Tanh(), nn.Linear(8, 1))
    extra = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.0), nn.Linear(8, 1))
    for net in (gelu, two_outputs, no_bias, extra):
        assert _written_out_layers(net) is None
    assert _written_out_layers(softplus_beta) is not None  # beta and threshold are passed to its derivative
    x = _states(16, 3)
    for net in (gelu, _randomised(softplus_beta)):
        value, gradient = _network_gradient(net, x)
        expected_value, expected_gradient = _autograd_gradient(net, x)
        torch.testing.assert_close(value, expected_value, rtol=0, atol=1e-12)
        torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=1e-12)
    field = _randomised(HamiltonianField(1, (8,), "gelu"))
    x = _states(8, 2)
    torch.testing.assert_close(field(torch.zeros(()), x), _autograd_field(field, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
@pytest.mark.parametrize("separable", [False, True])
def test_adjoint_gradients_through_the_written_out_field(separable, activation):
    """torchdiffeq's adjoint differentiates the field's output w.r.t. state and parameters: the same as autograd's.

    The initial state requires grad, so the adjoint's forward solve (under no_grad) hands the separable
    field q and p as views that claim to require grad: autograd's gradient (gelu) must not follow them.
    """
    field = _randomised(HamiltonianField(1, (8,), activation, separable), seed=8)
    reference = _AutogradField(field)
    times = torch.linspace(0.0, 0.5, 4, dtype=torch.float64)
    y0 = 0.5 * _states(4, 2)
    y0[:4] /= 30
    wrt = [y0, *field.parameters()]
    found = {}
    for name, module, adjoint in [("adjoint", field, True), ("direct", field, False), ("autograd", reference, True)]:
        start = y0.clone().requires_grad_(True)
        solution = solve_ode(module, start, times, method="rk4", options={"step_size": 0.01}, adjoint=adjoint)
        gradients = torch.autograd.grad(solution.pow(2).sum(), [start, *field.parameters()], allow_unused=True)
        found[name] = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, gradients)]  # H's last bias
    for a, b, c in zip(found["adjoint"], found["autograd"], found["direct"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------- the derivative loss as one node (HamiltonianField)
def _reference_loss(field: HamiltonianField, x, rates, mask, u=None) -> torch.Tensor:
    return ((_autograd_field(field, x, u) - rates) ** 2 * mask).sum() / mask.sum().clamp_min(1)


def _regression_batch(n: int = 24, seed: int = 4):
    generator = torch.Generator().manual_seed(seed)
    rates = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    mask = (torch.rand(n, 4, generator=generator) > 0.3).double()  # missing rates are masked out
    return _states(n, 4), rates, mask


def _is_node(loss: torch.Tensor) -> bool:
    return type(loss.grad_fn).__name__ == "_DerivativeLossBackward"


@pytest.mark.parametrize("hidden", [(), (8,), (8, 9), (5, 6, 7)])
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("activation", WRITTEN_OUT)
def test_the_derivative_loss_node_gives_the_double_backward_loss_and_gradients(activation, separable, hidden):
    field = _randomised(HamiltonianField(2, hidden, activation, separable), seed=2)
    x, rates, mask = _regression_batch()
    parameters = list(field.parameters())
    loss = field.derivative_loss(x, rates, mask)
    assert _is_node(loss)
    reference = _reference_loss(field, x, rates, mask)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=0)
    ours = torch.autograd.grad(loss, parameters, allow_unused=True)
    expected = torch.autograd.grad(reference, parameters, allow_unused=True)
    for mine, theirs in zip(ours, expected):
        assert (mine is None) == (theirs is None)  # each network's output bias gets none, as under autograd
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    assert max(g.abs().max() for g in ours if g is not None) > 1e-3
    # The node works in inference mode inside; what it hands out is ordinary (autograd and in-place updates take it).
    assert not loss.is_inference() and not any(g.is_inference() for g in ours if g is not None)


def test_the_derivative_loss_node_scales_by_the_incoming_gradient_and_keeps_float32_close():
    field = _randomised(HamiltonianField(1, (16, 16), "tanh"), seed=3).float()
    x, rates, mask = (t.float() for t in _regression_batch())
    x, rates, mask = x[:, :2] / 30, rates[:, :2], mask[:, :2]
    parameters = list(field.parameters())
    ours = torch.autograd.grad(3.5 * field.derivative_loss(x, rates, mask), parameters, allow_unused=True)
    expected = torch.autograd.grad(3.5 * _reference_loss(field, x, rates, mask), parameters, allow_unused=True)
    for mine, theirs in zip(ours, expected):
        if theirs is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_the_derivative_loss_takes_the_field_where_the_node_does_not_apply():
    """No gradients recorded, states that need one, inputs, other activations: the recorded field, same value."""
    x, rates, mask = _regression_batch()
    field = _randomised(HamiltonianField(2, (8,), "tanh"), seed=5)
    with torch.no_grad():
        value = field.derivative_loss(x, rates, mask)
    assert value.grad_fn is None
    torch.testing.assert_close(value, _reference_loss(field, x, rates, mask).detach(), rtol=1e-12, atol=0)
    state = x.clone().requires_grad_(True)  # a loss differentiated with respect to the states
    loss = field.derivative_loss(state, rates, mask)
    assert not _is_node(loss)
    torch.testing.assert_close(torch.autograd.grad(loss, state)[0],
                               torch.autograd.grad(_reference_loss(field, state, rates, mask), state)[0])
    class Damped(HamiltonianField):  # a field of its own: its loss is its own, not the node's
        def forward(self, t, x, u=None):
            return super().forward(t, x, u) - 0.1 * x

    damped = _randomised(Damped(2, (8,), "tanh"), seed=5)
    loss = damped.derivative_loss(x, rates, mask)
    assert not _is_node(loss)
    expected = ((_autograd_field(damped, x) - 0.1 * x - rates) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    gelu = _randomised(HamiltonianField(2, (8,), "gelu"), seed=6)
    driven = _randomised(HamiltonianField(2, (8,), "tanh", n_inputs=1), seed=7)
    u = torch.randn(24, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    for other, inputs in ((gelu, None), (driven, u)):
        loss = other.derivative_loss(x, rates, mask, inputs)
        assert loss.grad_fn is not None and not _is_node(loss)
        torch.testing.assert_close(loss, _reference_loss(other, x, rates, mask, inputs), rtol=1e-12, atol=0)


def test_the_derivative_loss_node_skips_frozen_weights_and_gives_third_derivatives_through_the_recorded_loss():
    field = _randomised(HamiltonianField(2, (8, 9), "tanh"), seed=9)
    x, rates, mask = _regression_batch()
    field.net[0].weight.requires_grad_(False)
    trained = [p for p in field.parameters() if p.requires_grad]
    loss = field.derivative_loss(x, rates, mask)
    assert _is_node(loss)
    ours = torch.autograd.grad(loss, trained, allow_unused=True)
    expected = torch.autograd.grad(_reference_loss(field, x, rates, mask), trained, allow_unused=True)
    for mine, theirs in zip(ours, expected):
        if theirs is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    for p in field.parameters():
        p.requires_grad_(False)
    assert field.derivative_loss(x, rates, mask).grad_fn is None  # nothing to train: the field, without a graph
    for p in field.parameters():
        p.requires_grad_(True)

    def penalty(loss: torch.Tensor) -> torch.Tensor:  # a penalty on the training gradient (create_graph=True)
        gradients = torch.autograd.grad(loss, trained, create_graph=True, allow_unused=True)
        return sum(g.pow(2).sum() for g in gradients if g is not None)

    loss = field.derivative_loss(x, rates, mask)
    assert _is_node(loss)
    ours = torch.autograd.grad(penalty(loss) + loss, trained, allow_unused=True)
    expected = torch.autograd.grad(penalty(_reference_loss(field, x, rates, mask)) + _reference_loss(field, x, rates, mask),
                                   trained, allow_unused=True)
    for mine, theirs in zip(ours, expected):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
