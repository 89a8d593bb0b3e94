"""NeuralSDE's transition likelihood as one autograd node (``_SDEModel.transition_loss``) is the recorded loss: the
same value and weight gradients as an independent reference (autograd's Jacobian, each row's observed block scored by
``torch.distributions``), a differentiable backward through the recorded loss, and the recorded path wherever the
node's formula does not apply."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dynlearn import NeuralSDE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.estimators._neural_sde import _gaussian_nll_per_entry, _SDEModel
from dynlearn.nn import _moment_loss

NODE = "_MomentLossBackward"


def _model(activation: str = "tanh", hidden: tuple[int, ...] = (8, 6), time_dependent: bool = False,
           noise_type: str = "diagonal", d: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64,
           n_inputs: int = 0, interpolation: str = "previous") -> _SDEModel:
    model = _SDEModel(d, hidden, activation, time_dependent, noise_type, 1e-3, n_inputs, interpolation).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # normal weights: both sides of every kink, and softplus past its linear threshold
        for parameter in model.parameters():
            parameter.copy_(0.7 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return model


def _data(n: int = 9, d: int = 2, partial: bool = False, seed: int = 1, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=generator, dtype=torch.float64)
    x0[0] *= 30.0  # a few large states: softplus's linear branch, tanh's saturation
    t0 = torch.rand(n, generator=generator, dtype=torch.float64) * 5
    gap = torch.rand(n, generator=generator, dtype=torch.float64) + 0.3
    values = x0 + torch.randn(n, d, generator=generator, dtype=torch.float64)
    mask = torch.ones(n, d, dtype=torch.float64)
    if partial:
        mask[1, 0] = mask[4, d - 1] = 0.0
    return tuple(t.to(dtype) for t in (x0, t0, gap, values, mask))


def _reference(model: _SDEModel, x0, t0, gap, n_steps, values, mask, control=None) -> torch.Tensor:
    """The loss written independently: autograd's Jacobian of the drift, each row's observed block scored alone, the
    inputs read at each sub-step's start from the path's time."""
    d = x0.shape[1]
    h = (gap / n_steps)[:, None]
    mean, cov = x0, torch.zeros(len(x0), d, d, dtype=x0.dtype)
    for k in range(n_steps):
        t = t0 + k * h[:, 0]
        u = None if control is None else control.at(t)
        y = mean if mean.requires_grad else mean.detach().requires_grad_(True)
        f = model.drift(y, t, u)
        rows = [torch.autograd.grad(f[:, i].sum(), y, create_graph=True)[0] for i in range(d)]
        jacobian = torch.stack(rows, dim=1)
        g = model.diffusion(mean, t, u)
        noise = torch.diag_embed(g**2) if model.noise_type == "diagonal" else g[:, :, None] * g[:, None, :]
        a = torch.eye(d, dtype=x0.dtype) + h[..., None] * jacobian
        cov = a @ cov @ a.transpose(1, 2) + h[..., None] * noise
        mean = mean + h * model.drift(mean, t, u)
    total = 0.0
    for row in range(len(x0)):
        seen = mask[row].bool()
        law = torch.distributions.MultivariateNormal(mean[row, seen], covariance_matrix=cov[row][seen][:, seen])
        total = total - law.log_prob(values[row, seen])
    return total / mask.sum()


CASES = list(itertools.product(["tanh", "relu", "softplus", "elu", "silu"], ["diagonal", "scalar"]))


@pytest.mark.parametrize(("activation", "noise_type"), CASES)
@pytest.mark.parametrize(("hidden", "time_dependent", "partial", "n_steps"),
                         [((8,), False, False, 2), ((7, 9), True, True, 3), ((5, 6, 4), False, True, 1)])
def test_the_transition_loss_node_gives_the_reference_loss_and_weight_gradients(activation, noise_type, hidden,
                                                                              time_dependent, partial, n_steps):
    if noise_type == "scalar" and n_steps == 1:
        n_steps = 2  # one sub-step of scalar noise from a known state leaves a singular covariance
    model = _model(activation, hidden, time_dependent, noise_type)
    x0, t0, gap, values, mask = _data(partial=partial)
    loss = model.transition_loss(x0, t0, gap, n_steps, values, mask)
    assert type(loss.grad_fn).__name__ == NODE
    reference = _reference(model, x0, t0, gap, n_steps, values, mask)
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=0)
    parameters = list(model.parameters())
    found = torch.autograd.grad(loss, parameters)
    wanted = torch.autograd.grad(reference, parameters)
    # The likelihood's gradients lose digits in proportion to the covariance's condition number (scalar noise's
    # rank-one increments make it large); the node and autograd round differently.
    condition = float(torch.linalg.cond(model.moments(x0, t0, gap, n_steps)[1].detach()).max())
    for ours, theirs in zip(found, wanted):
        scale = theirs.abs().max().clamp_min(1.0)
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-14 * max(condition, 1e4))


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
@pytest.mark.parametrize("time_dependent", [False, True])
def test_a_driven_model_takes_the_node_with_its_inputs_read_at_each_sub_step(interpolation, time_dependent):
    model = _model("softplus", (8, 6), time_dependent, n_inputs=2, interpolation=interpolation)
    x0, t0, gap, values, mask = _data(partial=True)
    generator = torch.Generator().manual_seed(3)
    knots = torch.stack([t0, t0 + gap], dim=1)
    control = model.control(knots, torch.randn(len(x0), 2, 2, generator=generator, dtype=torch.float64))
    loss = model.transition_loss(x0, t0, gap, 3, values, mask, control=control)
    assert type(loss.grad_fn).__name__ == NODE
    reference = _reference(model, x0, t0, gap, 3, values, mask, control)
    recorded = _gaussian_nll_per_entry(values, mask, *model.moments(x0, t0, gap, 3, control=control))
    torch.testing.assert_close(loss, recorded, rtol=1e-12, atol=0)
    # The path's time reading rounds the sub-step's fraction apart from the segment reading moments takes.
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)
    parameters = list(model.parameters())
    found = torch.autograd.grad(loss, parameters)
    wanted = torch.autograd.grad(recorded, parameters)
    for ours, theirs in zip(found, wanted):
        scale = theirs.abs().max().clamp_min(1.0)
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="u: expected the known inputs"):
        model.transition_loss(x0, t0, gap, 3, values, mask)  # a driven model without its inputs


def test_the_node_scales_by_the_incoming_gradient_and_keeps_float32_close_where_tanh_runs_as_sigmoids():
    model = _model("tanh", (128,), dtype=torch.float32)  # 256 rows x 128: tanh_via_sigmoid's size
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.2)
    x0, t0, gap, values, mask = _data(n=256, dtype=torch.float32)
    loss = model.transition_loss(x0, t0, gap, 3, values, mask)
    assert type(loss.grad_fn).__name__ == NODE
    recorded = _gaussian_nll_per_entry(values, mask, *model.moments(x0, t0, gap, 3))
    torch.testing.assert_close(loss, recorded, rtol=1e-5, atol=1e-5)
    parameters = list(model.parameters())
    found = torch.autograd.grad(2.5 * loss, parameters)
    wanted = torch.autograd.grad(2.5 * recorded, parameters)
    for ours, theirs in zip(found, wanted):
        scale = theirs.abs().max().clamp_min(1e-3)
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=2e-4)


def test_a_differentiable_backward_differentiates_the_recorded_loss():
    model = _model("softplus", (8, 8))
    data = _data(partial=True)
    parameters = list(model.parameters())

    def penalty(loss: torch.Tensor) -> torch.Tensor:  # a gradient penalty: the backward itself is differentiated
        return sum((g**2).sum() for g in torch.autograd.grad(loss, parameters, create_graph=True))

    node = model.transition_loss(data[0], data[1], data[2], 3, data[3], data[4])
    assert type(node.grad_fn).__name__ == NODE
    found = torch.autograd.grad(penalty(node), parameters)
    wanted = torch.autograd.grad(penalty(_gaussian_nll_per_entry(data[3], data[4],
                                                                 *model.moments(*data[:3], 3))), parameters)
    for ours, theirs in zip(found, wanted):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_the_recorded_loss_is_taken_where_the_node_does_not_apply():
    x0, t0, gap, values, mask = _data(partial=True)

    def recorded(model: _SDEModel, *data) -> torch.Tensor:
        return _gaussian_nll_per_entry(values, mask, *model.moments(x0, t0, gap, 2))

    kinds = {
        "gelu (not written out)": (_model("gelu"), (x0, t0, gap, values, mask)),
        "states that require a gradient": (_model(), (x0.clone().requires_grad_(True), t0, gap, values, mask)),
        "no hidden layer": (_model(hidden=()), (x0, t0, gap, values, mask)),
    }
    for kind, (model, data) in kinds.items():
        loss = model.transition_loss(data[0], data[1], data[2], 2, data[3], data[4])
        assert type(loss.grad_fn).__name__ != NODE, kind
        torch.testing.assert_close(loss, recorded(model), rtol=1e-12, atol=0)
    model = _model()
    with torch.no_grad():
        assert model.transition_loss(x0, t0, gap, 2, values, mask).grad_fn is None
    drift = model.drift
    model.drift = lambda y, t, u=None: 0.5 * drift(y, t, u)  # a method replaced on the instance is what the loss uses
    loss = model.transition_loss(x0, t0, gap, 2, values, mask)
    assert type(loss.grad_fn).__name__ != NODE
    torch.testing.assert_close(loss, recorded(model), rtol=1e-12, atol=0)
    frozen = _model()
    frozen.requires_grad_(False)
    assert frozen.transition_loss(x0, t0, gap, 2, values, mask).grad_fn is None


def test_a_covariance_that_is_not_positive_definite_gives_nan_as_the_recorded_loss_does():
    model = _model(noise_type="scalar")  # one sub-step from a known state: the rank-one h g gᵀ
    x0, t0, gap, values, mask = _data()
    loss = model.transition_loss(x0, t0, gap, 1, values, mask)
    assert math.isnan(float(loss.detach()))
    assert math.isnan(float(_gaussian_nll_per_entry(values, mask, *model.moments(x0, t0, gap, 1))))


def test_fit_trains_through_the_node(monkeypatch):
    calls = []
    apply = _moment_loss._MomentLoss.apply

    def counted(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(_moment_loss._MomentLoss, "apply", counted)
    frame = make_damped_oscillator(n_series=4, n_times=12, random_state=0)
    model = NeuralSDE(hidden_layer_sizes=(8,), max_epochs=2, batch_size=8, random_state=0).fit(frame)
    assert calls and len(model.history_) == 2
    assert all(math.isfinite(row["train_loss"]) for row in model.history_)


def test_a_network_of_other_layers_takes_the_recorded_loss():
    model = _model()
    model.drift_net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2, bias=False)).double()
    x0, t0, gap, values, mask = _data()
    loss = model.transition_loss(x0, t0, gap, 2, values, mask)
    assert type(loss.grad_fn).__name__ != NODE
