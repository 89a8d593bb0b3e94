"""Written-out derivatives of networks are autograd's, in values, training gradients and graphs: the Hessian rows of
a Lagrangian network (``Sweep.hessian_rows``), its derivative loss as one node with the weights' gradients written out
(``LagrangianField.derivative_loss``), and the Jacobian columns of a vector-valued one (``jacobian_columns``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn.exceptions import IntegrationError
from dynlearn.nn import LagrangianField, _energy, jacobian_columns, make_mlp
from dynlearn.nn._energy_loss import Sweep, network_tensors

WRITTEN_OUT = ["tanh", "relu", "softplus", "elu", "silu"]


def _randomised(module: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """``module`` in float64 with normal weights: both sides of every kink and saturation are reached."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return module


def _states(n: int, width: int, seed: int = 1) -> torch.Tensor:
    """Standard normal states, and a few scaled by 30 so that softplus passes its linear threshold (20)."""
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:3] *= 30
    return x


def _autograd_rows(net: nn.Module, x: torch.Tensor, first: int) -> torch.Tensor:
    """Rows ``first..`` of ``∂²net/∂x²`` by autograd's double backward, with their graph."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    rows = [torch.autograd.grad(grad[:, j].sum(), x, create_graph=True)[0] for j in range(first, x.shape[1])]
    return torch.stack(rows, dim=1)


def _recorded(monkeypatch) -> None:
    """Every Lagrangian field below takes autograd's derivatives (the field's own recorded path)."""
    monkeypatch.setattr(_energy, "_written_out_layers", lambda net: None)


def _reference_field(field: LagrangianField, x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """``[v, q̈]`` written independently: autograd's Hessian rows and a general linear solve."""
    d = field.n_coordinates
    (grad,) = torch.autograd.grad(field.net(x).sum(), x, create_graph=True)
    rows = torch.stack([torch.autograd.grad(grad[:, d + j].sum(), x, create_graph=True)[0] for j in range(d)], 1)
    force = grad[:, :d] - (rows[:, :, :d] @ x[:, d:].unsqueeze(-1)).squeeze(-1)
    if u is not None:
        force = force + field.input_matrix.force(x[:, :d], u)
    return torch.cat([x[:, d:], torch.linalg.solve(rows[:, :, d:], force)], dim=-1)


@pytest.mark.parametrize("hidden", [(), (8,), (7, 9), (5, 6, 4)])
@pytest.mark.parametrize("activation", WRITTEN_OUT)
@pytest.mark.parametrize("d", [1, 2])
def test_hessian_rows_and_their_parameter_gradients_are_autograds(d, activation, hidden):
    net = _randomised(make_mlp(2 * d, 1, hidden, activation))
    plan = _energy._written_out_layers(net)
    assert plan is not None
    linears, activations = plan
    x = _states(11, 2 * d)
    rows = Sweep(activations, network_tensors(linears), x).hessian_rows(d)
    assert rows.shape == (11, d, 2 * d)
    if not hidden:  # a linear network: no curvature, and nothing for autograd to differentiate
        assert not rows.any()
        return
    expected = _autograd_rows(net, x, d)
    torch.testing.assert_close(rows, expected, rtol=1e-10, atol=1e-12)
    # A loss on the rows trains the weights the same way (third derivatives of the network).
    weights = torch.randn(rows.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    parameters = list(net.parameters())
    def gradients(of: torch.Tensor) -> tuple:  # None where nothing reaches the weights (ReLU: zero curvature)
        if not of.requires_grad:
            return (None,) * len(parameters)
        return torch.autograd.grad((of * weights).sum(), parameters, allow_unused=True)

    found, wanted = gradients(rows), gradients(expected)
    for ours, theirs, parameter in zip(found, wanted, parameters):
        ours = torch.zeros_like(parameter) if ours is None else ours
        theirs = torch.zeros_like(parameter) if theirs is None else theirs
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n_inputs", [0, 1])
@pytest.mark.parametrize("activation", ["softplus", "tanh", "silu"])
@pytest.mark.parametrize("d", [1, 2])
def test_field_values_gradients_and_state_gradients_match_the_recorded_field(monkeypatch, d, activation, n_inputs):
    field = _randomised(LagrangianField(d, (8, 8), activation=activation, n_inputs=n_inputs), scale=0.5)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(9, 2 * d, generator=generator, dtype=torch.float64, requires_grad=True)
    u = torch.randn(9, n_inputs, generator=generator, dtype=torch.float64) if n_inputs else None
    rates = torch.randn(9, 2 * d, generator=generator, dtype=torch.float64)
    inputs = [x, *field.parameters()]

    def run(reference: bool = False) -> tuple[torch.Tensor, ...]:
        value = _reference_field(field, x, u) if reference else field(None, x, *([u] if n_inputs else []))
        grads = torch.autograd.grad(((value - rates) ** 2).sum(), inputs, create_graph=True, allow_unused=True)
        (second,) = torch.autograd.grad(grads[0].square().sum(), x)  # through a differentiable backward
        with torch.no_grad():
            unrecorded = field(None, x, *([u] if n_inputs else []))
        return value, unrecorded, second, *(g if g is not None else torch.zeros(()) for g in grads)

    ours = run()
    assert not ours[1].requires_grad
    _recorded(monkeypatch)
    for found, recorded, wanted in zip(ours, run(), run(reference=True)):
        scale = wanted.abs().max().clamp_min(1.0)
        torch.testing.assert_close(found / scale, wanted / scale, rtol=0, atol=1e-10)
        torch.testing.assert_close(recorded / scale, wanted / scale, rtol=0, atol=1e-10)


def test_a_network_without_curvature_in_the_velocities_raises_like_the_recorded_field(monkeypatch):
    for hidden, activation in (((), "softplus"), ((8,), "relu")):
        for d in (1, 2):
            field = _randomised(LagrangianField(d, hidden, activation=activation))
            x = torch.randn(6, 2 * d, dtype=torch.float64)
            with pytest.raises(IntegrationError, match="singular"):
                field(None, x)
    # One coordinate: the rank test reads the Hessian itself, with rcond's meaning unchanged.
    field = _randomised(LagrangianField(1, (8,)))
    x = torch.randn(6, 2, dtype=torch.float64)
    field(None, x)
    field.rcond = 1.0  # no number exceeds itself: every state is singular
    with pytest.raises(IntegrationError, match="at 6 of 6 states"):
        field(None, x)
    _recorded(monkeypatch)
    with pytest.raises(IntegrationError, match="at 6 of 6 states"):
        field(None, x)


def _derivative_problem(d: int, activation: str, hidden: tuple, seed: int = 4) -> tuple:
    """A float64 Lagrangian field and states, rates and a mask with holes, as LagrangianNN's derivative loss sees.

    Seed 4: with other draws a one-layer ELU field on two coordinates is often singular at one of the 13 states.
    """
    field = _randomised(LagrangianField(d, hidden, activation=activation.removesuffix("_beta2")), seed=seed, scale=0.5)
    if activation.endswith("_beta2"):  # make_mlp's softplus has beta 1; a network of its own may not
        for i, layer in enumerate(field.net):
            if isinstance(layer, nn.Softplus):
                field.net[i] = nn.Softplus(beta=2.0)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(13, 2 * d, generator=generator, dtype=torch.float64)
    rates = torch.randn(13, 2 * d, generator=generator, dtype=torch.float64)
    mask = (torch.rand(13, 2 * d, generator=generator) > 0.25).double()
    return field, x, rates, mask


@pytest.mark.parametrize("hidden", [(8,), (7, 9), (5, 6, 4)])
@pytest.mark.parametrize("activation", ["softplus", "softplus_beta2", "tanh", "elu", "silu"])
@pytest.mark.parametrize("d", [1, 2])
def test_the_derivative_loss_node_gives_the_recorded_loss_and_weight_gradients(d, activation, hidden):
    field, x, rates, mask = _derivative_problem(d, activation, hidden)
    parameters = list(field.parameters())
    loss = field.derivative_loss(x, rates, mask)
    assert type(loss.grad_fn).__name__ == "_LagrangianLossBackward"  # the node, not the recorded operations
    recorded = field._recorded_loss(x, rates, mask, None)
    # Independently: the masked error of autograd's Hessian rows and a general solve.
    reference = ((_reference_field(field, x.clone().requires_grad_(True), None) - rates) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, recorded, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=0)
    found = torch.autograd.grad(loss, parameters, allow_unused=True)
    wanted = torch.autograd.grad(reference, parameters, allow_unused=True)
    for ours, theirs, parameter in zip(found, wanted, parameters):
        if parameter is field.net[-1].bias:  # L's constant reaches no acceleration
            assert ours is None and theirs is None
            continue
        scale = theirs.abs().max().clamp_min(1.0)
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-11)


def test_the_derivative_loss_node_differentiates_the_recorded_loss_for_a_differentiable_backward():
    field, x, rates, mask = _derivative_problem(1, "softplus", (8, 8))
    parameters = list(field.parameters())[:-1]  # the output bias reaches nothing
    def penalty(loss: torch.Tensor) -> torch.Tensor:  # a gradient penalty: the backward itself is differentiated
        grads = torch.autograd.grad(loss, parameters, create_graph=True)
        return sum((g**2).sum() for g in grads)

    found = torch.autograd.grad(penalty(field.derivative_loss(x, rates, mask)), parameters)
    wanted = torch.autograd.grad(penalty(field._recorded_loss(x, rates, mask, None)), parameters)
    for ours, theirs in zip(found, wanted):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_the_derivative_loss_takes_the_recorded_field_where_its_node_does_not_apply():
    field, x, rates, mask = _derivative_problem(1, "softplus", (8,))
    kinds = {
        "states that require a gradient": lambda: field.derivative_loss(x.clone().requires_grad_(True), rates, mask),
        "no gradients recorded": lambda: torch.no_grad()(field.derivative_loss)(x, rates, mask),
        "a broadcast mask": lambda: field.derivative_loss(x, rates, mask[:, :1]),
    }
    for kind, loss in kinds.items():
        value = loss()
        assert value.grad_fn is None or type(value.grad_fn).__name__ != "_LagrangianLossBackward", kind
    wide = _randomised(LagrangianField(1, (1024, 1024)), scale=0.01)  # past the node's size: autograd's products
    states = torch.randn(32, 2, dtype=torch.float64)
    value = wide.derivative_loss(states, states, torch.ones_like(states))
    assert type(value.grad_fn).__name__ != "_LagrangianLossBackward"
    driven = _randomised(LagrangianField(1, (8,), n_inputs=1))
    value = driven.derivative_loss(x, rates, mask, torch.ones(13, 1, dtype=torch.float64))
    assert type(value.grad_fn).__name__ != "_LagrangianLossBackward"
    torch.testing.assert_close(value, ((_reference_field(driven, x.clone().requires_grad_(True),
                                                         torch.ones(13, 1, dtype=torch.float64)) - rates) ** 2
                                       * mask).sum() / mask.sum())


def test_the_derivative_loss_node_raises_like_the_field_on_a_singular_hessian():
    field, x, rates, mask = _derivative_problem(1, "softplus", (8,))
    field.rcond = 1.0  # no number exceeds itself: every state is singular
    with pytest.raises(IntegrationError, match="at 13 of 13 states"):
        field.derivative_loss(x, rates, mask)


def _autograd_jacobian(net: nn.Module, x: torch.Tensor, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` and its Jacobian in the first ``n_columns`` inputs, one reverse pass per output, with their graph."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    value = net(x)
    rows = [torch.autograd.grad(value[:, i].sum(), x, create_graph=True)[0] for i in range(value.shape[1])]
    return value, torch.stack(rows, dim=1)[:, :, :n_columns]


@pytest.mark.parametrize("hidden", [(), (8,), (7, 9)])
@pytest.mark.parametrize("activation", [*WRITTEN_OUT, "gelu"])
def test_jacobian_columns_and_their_parameter_gradients_are_autograds(activation, hidden):
    net = _randomised(make_mlp(4, 3, hidden, activation))
    # GELU's derivative is left to autograd; a network without hidden layers has no activation to write out.
    assert (_energy._written_out_layers(net, scalar=False) is None) == (activation == "gelu" and bool(hidden))
    x = _states(10, 4)
    value, jacobian = jacobian_columns(net, x, 2)
    expected_value, expected = _autograd_jacobian(net, x, 2)
    assert jacobian.shape == (10, 3, 2)
    torch.testing.assert_close(value, expected_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jacobian, expected, rtol=1e-10, atol=1e-12)
    generator = torch.Generator().manual_seed(5)
    weights = torch.randn(jacobian.shape, generator=generator, dtype=torch.float64)
    parameters = list(net.parameters())

    def gradients(v: torch.Tensor, j: torch.Tensor) -> list[torch.Tensor]:
        found = torch.autograd.grad((j * weights).sum() + v.square().sum(), parameters, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(found, parameters)]

    for ours, theirs in zip(gradients(value, jacobian), gradients(expected_value, expected)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    with torch.no_grad():  # no graph, the same numbers
        unrecorded = jacobian_columns(net, x, 2)
    assert not unrecorded[1].requires_grad
    torch.testing.assert_close(unrecorded[1], jacobian.detach(), rtol=0, atol=0)
    # A state that requires a gradient gets the Jacobian's own (a second derivative, through recorded operations).
    y = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad((jacobian_columns(net, y, 2)[1] * weights).sum(), y, materialize_grads=True)
    z = x.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad((_autograd_jacobian(net, z, 2)[1] * weights).sum(), z, materialize_grads=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
