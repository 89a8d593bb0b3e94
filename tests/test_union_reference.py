"""The union-of-times reference of benchmarks/ computes what dynlearn's ODE-RNN computes.

The speed benchmark ``irregular_speed`` times dynlearn's ODE-RNN against
``benchmarks/union_reference.py``; these tests show the two formulations
solve the same problem with the same weights, so the comparison is between
ways of putting a batch on a clock, not between models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from union_reference import (  # noqa: E402
    collate_union,
    latent_ode_from_dynlearn,
    make_odernn_model,
    odernn_from_dynlearn,
)

from dynlearn.nn import ODERNNEncoder  # noqa: E402

TIGHT = dict(method="dopri5", rtol=1e-9, atol=1e-11)
# Exact formulation on the union grid: every gap solved to tolerance, no lead-in.
EXACT_UNION = dict(**TIGHT, minimum_step=0.0, lead_in=0.0)


def irregular_batch(n_series=4, n_times=7, n_features=2, *, common_end=False, seed=0):
    """Padded series with their own times (all starting at 0), partly masked, of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    gaps = 0.2 + torch.rand(n_series, n_times - 1, generator=generator, dtype=torch.float64)
    times = torch.cat([torch.zeros(n_series, 1, dtype=torch.float64), gaps.cumsum(1)], dim=1)
    lengths = torch.tensor([n_times, n_times - 2, n_times - 1, 3][:n_series])
    if common_end:
        lengths = torch.full((n_series,), n_times)
        times = times / times[:, -1:] * 3.0
    rows = torch.arange(n_times)[None, :]
    last = times.gather(1, (lengths - 1)[:, None])
    times = torch.where(rows < lengths[:, None], times, last)
    values = torch.randn(n_series, n_times, n_features, generator=generator, dtype=torch.float64)
    mask = torch.rand(n_series, n_times, n_features, generator=generator) > 0.3
    mask[:, 0] = True  # every series is observed at its first time
    mask &= (rows < lengths[:, None])[..., None]
    return values * mask, mask, times, lengths


def encoder(gru_hidden=8):
    torch.manual_seed(0)
    module = ODERNNEncoder(2, 5, ode_hidden=(16,), gru_hidden=gru_hidden).double()
    with torch.no_grad():  # a field strong enough that how the state is evolved matters
        for parameter in module.field.parameters():
            parameter.mul_(3.0)
    return module


@pytest.mark.parametrize("gru_hidden", [None, 8])
def test_forward_states_match_dynlearn_at_every_observation(gru_hidden):
    values, mask, times, lengths = irregular_batch()
    dynlearn_encoder = encoder(gru_hidden)
    with torch.no_grad():
        states, _ = dynlearn_encoder(values, mask, times, lengths, solve=dict(**TIGHT, adjoint=False))
        union = collate_union(values, mask.double(), times, lengths)
        union_states, _ = odernn_from_dynlearn(dynlearn_encoder, **EXACT_UNION)(union)
    compared = 0
    for b in range(len(lengths)):
        for k in range(int(lengths[b])):
            if not mask[b, k].any():
                continue
            j = int(torch.searchsorted(union.times, times[b, k]))
            torch.testing.assert_close(union_states[b, j], states[b, k], rtol=1e-6, atol=1e-7)
            compared += 1
    assert compared >= 15


def test_backward_final_state_matches_dynlearn():
    values, mask, times, lengths = irregular_batch(common_end=True)
    dynlearn_encoder = encoder()
    with torch.no_grad():
        _, final = dynlearn_encoder(values, mask, times, lengths, solve=dict(**TIGHT, adjoint=False), reverse=True)
        union = collate_union(values, mask.double(), times, lengths)
        _, union_final = odernn_from_dynlearn(dynlearn_encoder, **EXACT_UNION)(union, reverse=True)
    torch.testing.assert_close(union_final, final, rtol=1e-6, atol=1e-7)


def test_the_union_loop_keeps_series_apart():
    """A series' states do not depend on its batch mates (whose times add union points it is evolved through)."""
    values, mask, times, lengths = irregular_batch(seed=1)
    model = make_odernn_model(2, hidden_dim=6, **TIGHT).double()
    model.encoder.minimum_step, model.encoder.lead_in = 0.0, 0.0
    with torch.no_grad():
        together, _ = model.encoder(collate_union(values, mask.double(), times, lengths))
        union = collate_union(values, mask.double(), times, lengths)
        for b in range(len(lengths)):
            alone_batch = collate_union(values[b : b + 1], mask[b : b + 1].double(), times[b : b + 1], lengths[b : b + 1])
            alone, _ = model.encoder(alone_batch)
            where = torch.searchsorted(union.times, alone_batch.times)
            torch.testing.assert_close(together[b, where], alone[0], rtol=1e-6, atol=1e-7)


def test_masked_values_change_nothing_in_the_reference():
    values, mask, times, lengths = irregular_batch(seed=2)
    model = make_odernn_model(2, hidden_dim=6).double()
    noisy = torch.where(mask, values, 1e3 * torch.randn_like(values))
    with torch.no_grad():
        first = model.encoder(collate_union(values, mask.double(), times, lengths))[0]
        second = model.encoder(collate_union(noisy, mask.double(), times, lengths))[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_latent_decoder_on_the_union_grid_matches_dynlearn():
    """The latent ODE solved once on the union grid reads each series' own times as dynlearn's per-series clock does."""
    from dynlearn import LatentODE
    from dynlearn.datasets import make_periodic

    small = dict(latent_dim=3, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(16,), max_epochs=1)
    module = LatentODE(**small, random_state=0).fit(make_periodic(n_series=4, n_times=6, random_state=0)).module_
    module = module.double()
    reference = latent_ode_from_dynlearn(module, encoder=EXACT_UNION, latent=TIGHT)
    _, _, times, lengths = irregular_batch(n_features=1, common_end=True, seed=3)
    z0 = torch.randn(1, len(times), 3, dtype=torch.float64)
    with torch.no_grad():
        union = torch.unique(times)
        on_union = reference.decode(z0, union)[0]  # (n_series, n_union, 1)
        own = module.decode(z0[0], times, dict(**TIGHT, adjoint=False, max_num_steps=10_000))
    where = torch.searchsorted(union, times[:, 1:].contiguous())
    torch.testing.assert_close(on_union.gather(1, where[..., None]), own, rtol=1e-6, atol=1e-7)
