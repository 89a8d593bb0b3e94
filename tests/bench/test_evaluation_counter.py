"""benchmarks/irregular.py's EvaluationCounter sees every product form the fused loops use with a watched weight."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from irregular import EvaluationCounter


def test_every_product_form_with_a_watched_or_derived_weight_is_one_evaluation():
    torch.manual_seed(0)
    net, other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), nn.Linear(3, 4)
    x = torch.randn(5, 3)
    with torch.no_grad(), EvaluationCounter(field=net) as counter:  # the fused loops' forward runs unrecorded
        derived = net[0].weight.t() * 2  # as the fused loops rescale and transpose weights once per solve
        nn.functional.linear(x, net[0].weight, net[0].bias)
        torch.addmm(net[0].bias, x, derived)
        torch.zeros(5, 4).addmm_(x, derived)  # in place into a preallocated buffer
        torch.addmm(net[0].bias, x, derived, out=torch.empty(5, 4))
        x.mm(derived)
        torch.mm(x, derived)
        torch.matmul(x, derived)
        other(x)  # an unwatched network's product is not counted
        torch.zeros(5, 4).addmm_(x, other.weight.t())
    assert counter.counts == {"field": 7}
