"""subnormal_gradients: its count finds subnormal numbers a backward pass hands on, and its rows are written."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import subnormal_gradients

from dynlearn.estimators._latent_ode import importance_logsumexp


class _Draws(torch.nn.Module):
    """Three draws' log-likelihoods per series, 95 nats apart: logsumexp's weights for the far ones are subnormal."""

    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(1))

    def forward(self, terms: torch.Tensor) -> torch.Tensor:
        return terms + self.offset


def _loss(bound):
    return lambda module, batch: -bound(module(batch["terms"])).sum()


def test_count_finds_subnormal_weights_and_none_after_the_importance_bound():
    terms = torch.tensor([[0.0] * 8, [-95.0] * 8, [-96.0] * 8])
    module, batch = _Draws(), {"terms": terms}
    plain = subnormal_gradients.subnormal_gradients(module, _loss(lambda t: torch.logsumexp(t, dim=0)), batch)
    assert plain >= 16  # the two far draws of each of the 8 series
    assert subnormal_gradients.subnormal_gradients(module, _loss(importance_logsumexp), batch) == 0
    assert module.offset.grad is None  # the count leaves no gradient behind


def test_subnormal_entries_counts_only_nonzero_entries_below_the_smallest_normal():
    tiny = torch.finfo(torch.float32).tiny
    values = torch.tensor([0.0, tiny, tiny / 2, -tiny / 4, 1.0, math.inf])
    assert subnormal_gradients.subnormal_entries(values) == 2
    assert subnormal_gradients.subnormal_entries(torch.tensor([1, 0])) == 0
    assert subnormal_gradients.subnormal_entries(None) == 0


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormal numbers")
def test_a_model_row_is_measured():
    row = subnormal_gradients.measure("hamiltonian", rounds=2, counted_batches=1)
    assert row["model"] == "hamiltonian" and row["minibatches_counted"] == 1
    assert row["subnormal_gradient_entries"] == 0
    assert row["seconds_per_iteration"] > 0 and row["seconds_per_iteration_flushed"] > 0
    assert math.isfinite(row["ratio_flushed_over_not"]) and row["ratio_flushed_over_not"] > 0
