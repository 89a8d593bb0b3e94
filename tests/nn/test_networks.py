"""The vector fields and encoders of ``dynlearn.nn``: the structure each one promises, at random weights."""

from __future__ import annotations

import pytest
import torch

from dynlearn.exceptions import InputError
from dynlearn.nn import (
    BoxContraction,
    HamiltonianField,
    HistoryEncoder,
    LagrangianField,
    MLPVectorField,
    SecondOrderField,
    make_mlp,
    mlp_function,
)


def _seeded(build, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().double()


def _random_input_matrix(field, seed=7):
    """Random weights for the input matrix, which starts at zero (no input effect before training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in field.input_matrix.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return field


def _time_derivative(quantity, field, x, u=None):
    """``d quantity / dt = ∇quantity(x) · field(x)`` along the field's flow, per state."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(quantity(x).sum(), x)
    velocity = field(torch.zeros(len(x), dtype=x.dtype), x) if u is None else field(torch.zeros(len(x)), x, u)
    return (grad * velocity.detach()).sum(-1)


@pytest.mark.parametrize("separable", [False, True])
def test_hamiltonian_field_conserves_its_energy_exactly(separable):
    field = _seeded(lambda: HamiltonianField(2, (16, 16), separable=separable))
    x = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rate = _time_derivative(field.energy, field, x)
    assert field(torch.zeros(64), x).abs().max() > 1e-2  # the states move
    assert rate.abs().max() < 1e-12


@pytest.mark.parametrize("kind", ["constant", "positions"])
def test_hamiltonian_field_inputs_change_energy_at_the_input_power(kind):
    field = _random_input_matrix(_seeded(lambda: HamiltonianField(2, (16,), n_inputs=1, input_matrix=kind)))
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(32, 4, dtype=torch.float64, generator=generator)
    u = torch.randn(32, 1, dtype=torch.float64, generator=generator)
    rate = _time_derivative(field.energy, field, x, u)
    power = field.input_power(x, u).detach()
    assert power.abs().max() > 1e-3  # the inputs do work here, so the check below can fail
    torch.testing.assert_close(rate, power, rtol=1e-9, atol=1e-12)


def test_lagrangian_field_conserves_its_energy():
    field = _seeded(lambda: LagrangianField(2, (32,)))
    x = 0.5 * torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rate = _time_derivative(field.energy, field, x)
    assert rate.abs().max() < 1e-9


def test_lagrangian_field_inputs_change_energy_at_the_input_power():
    field = _random_input_matrix(_seeded(lambda: LagrangianField(1, (32,), n_inputs=1)))
    generator = torch.Generator().manual_seed(4)
    x = 0.5 * torch.randn(16, 2, dtype=torch.float64, generator=generator)
    u = torch.randn(16, 1, dtype=torch.float64, generator=generator)
    power = field.input_power(x, u).detach()
    assert power.abs().max() > 1e-3
    torch.testing.assert_close(_time_derivative(field.energy, field, x, u), power, rtol=1e-7, atol=1e-10)


def test_second_order_field_moves_positions_by_the_velocities():
    field = _seeded(lambda: SecondOrderField(3, (8,)))
    y = torch.randn(5, 6, dtype=torch.float64)
    dy = field(torch.zeros(5), y)
    assert dy.shape == (5, 6)
    torch.testing.assert_close(dy[:, :3], y[:, 3:], rtol=0, atol=0)


def test_mlp_field_reads_time_and_inputs_only_when_asked():
    y, u = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    autonomous = _seeded(lambda: MLPVectorField(2, (8,)))
    torch.testing.assert_close(autonomous(torch.zeros(4), y), autonomous(torch.full((4,), 7.0), y), rtol=0, atol=0)
    timed = _seeded(lambda: MLPVectorField(2, (8,), time_dependent=True))
    assert not torch.allclose(
        timed(torch.zeros(4, dtype=torch.float64), y), timed(torch.full((4,), 7.0, dtype=torch.float64), y)
    )
    driven = _seeded(lambda: MLPVectorField(2, (8,), n_inputs=1))
    assert not torch.allclose(driven(torch.zeros(4), y, u), driven(torch.zeros(4), y, -u))


@pytest.mark.parametrize("rescaled", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_mlp_function_is_the_network(rescaled, activation):
    net = _seeded(lambda: make_mlp(3, 2, (8, 8), activation))
    x = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(mlp_function(net, rescaled=rescaled)(x), net(x), rtol=1e-10, atol=1e-12)


def test_box_contraction_leaves_the_box_alone_and_pulls_back_outside():
    inner = _seeded(lambda: MLPVectorField(3, (8,)))
    lower, upper = torch.tensor([-1.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    guarded = BoxContraction(inner, lower, upper, rate=5.0)
    inside = torch.tensor([[0.5, -0.5, 9.0]], dtype=torch.float64)
    torch.testing.assert_close(guarded(torch.zeros(1), inside), inner(torch.zeros(1), inside), rtol=0, atol=0)
    outside = torch.tensor([[3.0, -4.0, 9.0]], dtype=torch.float64)
    pull = guarded(torch.zeros(1), outside) - inner(torch.zeros(1), outside)
    torch.testing.assert_close(pull, torch.tensor([[-10.0, 15.0, 0.0]], dtype=torch.float64))


def _history(generator, batch=3, length=6, n_features=2, n_inputs=1):
    values = torch.randn(batch, length, n_features, generator=generator)
    mask = (torch.rand(batch, length, n_features, generator=generator) > 0.3).float()
    gaps = torch.rand(batch, length, generator=generator)
    present = torch.ones(batch, length)
    inputs = torch.randn(batch, length, n_inputs, generator=generator)
    return values, mask, gaps, present, inputs


def test_history_encoder_ignores_masked_values_and_slots_before_the_start():
    encoder = _seeded(lambda: HistoryEncoder(2, 4, hidden_size=8, n_inputs=1)).float()
    generator = torch.Generator().manual_seed(5)
    values, mask, gaps, present, inputs = _history(generator)
    reference = encoder(values, mask, gaps, present, inputs)
    changed = values + 100.0 * (1 - mask)  # only where unobserved
    torch.testing.assert_close(encoder(changed, mask, gaps, present, inputs), reference, rtol=0, atol=0)
    # Two slots before the start, filled with anything, leave the code as it is.
    padded = [
        torch.cat([torch.randn(3, 2, *x.shape[2:], generator=generator), x], dim=1)
        for x in (values, mask, gaps.unsqueeze(-1), inputs)
    ]
    padded_present = torch.cat([torch.zeros(3, 2), present], dim=1)
    torch.testing.assert_close(
        encoder(padded[0], padded[1], padded[2].squeeze(-1), padded_present, padded[3]), reference, rtol=1e-6, atol=1e-6
    )
    # The inputs are read: other inputs give another code.
    assert not torch.allclose(encoder(values, mask, gaps, present, -inputs), reference)


def test_history_encoder_refuses_missing_inputs():
    encoder = HistoryEncoder(2, 4, n_inputs=1)
    values, mask, gaps, present, _ = _history(torch.Generator().manual_seed(6))
    with pytest.raises(InputError, match="inputs"):
        encoder(values, mask, gaps, present)
