"""The input gradient of an energy network as one autograd node: its value and every derivative are autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn import HamiltonianNN
from dynlearn.datasets import make_mass_spring
from dynlearn.nn import _energy, make_mlp
from dynlearn.nn._energy import _FusedGradient, _gradient, _network_gradient, _written_out_layers

ACTIVATIONS = ["tanh", "relu", "softplus", "elu", "silu"]


def _net(activation: str, hidden: tuple[int, ...] = (8, 9), seed: int = 0) -> nn.Sequential:
    net = make_mlp(3, 1, hidden, activation).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return net


def _states(n: int = 24, seed: int = 1) -> torch.Tensor:
    """Standard normal states, a few scaled by 30 so that softplus passes its linear threshold (20)."""
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:3] *= 30
    return x


def _fused(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    linears, activations = _written_out_layers(net)
    parameters = [p for layer in linears[:-1] for p in (layer.weight, layer.bias)] + [linears[-1].weight]
    return _FusedGradient.apply(tuple(activations), x, *parameters)


def _double_backward(net: nn.Sequential, x: torch.Tensor, fused: bool) -> list[torch.Tensor]:
    """The gradient at ``x`` and the derivatives of ``Σ v ∇ₓH`` for ``x`` and every weight and bias but the last."""
    x = x.clone().requires_grad_(True)
    gradient = _fused(net, x) if fused else _gradient(lambda z: net(z).squeeze(-1), x)[1]
    v = torch.randn(gradient.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    wanted = [x, *list(net.parameters())[:-1]]
    found = torch.autograd.grad((gradient * v).sum(), wanted, allow_unused=True)
    return [gradient.detach(), *(torch.zeros_like(w) if g is None else g for w, g in zip(wanted, found))]


@pytest.mark.parametrize("hidden", [(8,), (8, 9), (6, 7, 5)])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_value_and_every_gradient_are_the_double_backward_ones(activation, hidden):
    net = _net(activation, hidden)
    x = _states()
    ours, reference = _double_backward(net, x, True), _double_backward(net, x, False)
    assert len(ours) == 3 + 2 * len(hidden)  # the gradient, x, each hidden layer's weight and bias, W_L
    for found, expected in zip(ours, reference):
        torch.testing.assert_close(found, expected, rtol=1e-10, atol=1e-10)
    assert max(g.abs().max() for g in reference[2:]) > 1e-2  # weight gradients that can be wrong


@pytest.mark.parametrize("activation", ["tanh", "softplus", "elu", "silu"])
def test_a_wrong_curvature_term_is_caught(activation, monkeypatch):
    """The comparison above sees the σ'' term: with its sign flipped the gradients differ."""
    net = _net(activation)
    x = _states()
    reference = _double_backward(net, x, False)
    terms = _energy._activation_terms

    def flipped(*args):
        delta, curvature, d = terms(*args)
        return delta, -curvature, d

    monkeypatch.setattr(_energy, "_activation_terms", flipped)
    ours = _double_backward(net, x, True)
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-10, atol=1e-10)  # the gradient itself is untouched
    assert any(not torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(ours[1:], reference[1:]))


@pytest.mark.parametrize("activation", ["tanh", "softplus", "silu"])
def test_second_derivatives_through_create_graph(activation):
    net = _net(activation, (4, 3))
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    parameters = list(net.parameters())[:-1]
    _, activations = _written_out_layers(net)

    def op(x, *parameters):
        return _FusedGradient.apply(tuple(activations), x, *parameters)

    assert torch.autograd.gradcheck(op, (x, *parameters))
    assert torch.autograd.gradgradcheck(op, (x, *parameters))


def test_prediction_keeps_no_graph_and_the_recorded_path_is_one_node():
    net = _net("tanh")
    x = _states()
    with torch.no_grad():
        value, gradient = _network_gradient(net, x, value=False)
    assert value is None and gradient.grad_fn is None
    recorded = _network_gradient(net, x, value=False)[1]
    assert type(recorded.grad_fn).__name__ == "_FusedGradientBackward"
    torch.testing.assert_close(gradient, recorded.detach(), rtol=0, atol=1e-12)
    assert _network_gradient(net, x)[0] is not None  # the value keeps the plain operations


@pytest.mark.parametrize("settings", [
    {"fit_on": "derivatives"},
    {"separable": True, "solver": "leapfrog", "fit_on": "trajectories", "window_size": 5},
    {"fit_on": "trajectories", "window_size": 5, "adjoint": True, "solver": "rk4"},
])  # fmt: skip
def test_a_fit_has_the_unfused_history(settings, monkeypatch):
    frame = make_mass_spring(n_series=4, n_times=20, random_state=0)

    def history(fused: bool) -> list[float]:
        monkeypatch.setattr(_energy, "_FUSED", fused)
        model = HamiltonianNN(hidden_layer_sizes=(16,), max_epochs=3, patience=None, validation_fraction=0.0,
                              random_state=0, n_threads=1, device="cpu", dtype="float64", **settings)  # fmt: skip
        return list(model.fit(frame).history_.to_frame()["train_loss"])

    fused, plain = history(True), history(False)
    assert len(fused) == 3
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-9, atol=0)
