"""A contraction that keeps a learned vector field from carrying states far outside the data."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..solvers import MLPLayers


class BoxContraction(nn.Module):
    """``f(t, y) − rate · (y − clamp(y, lower, upper))`` on the first ``len(lower)`` state components.

    Inside the box the field is ``f`` unchanged; outside, a pull back to the
    box grows linearly with the distance, so a field that grows more slowly
    than ``rate`` times the distance (any bounded field, e.g. a tanh network)
    cannot carry a state away: trajectories stay within a bounded distance
    of the box. Other components (velocities of second-order states) are
    left as they are.

    Parameters
    ----------
    field : nn.Module
        The vector field ``field(t, y)`` (or ``field(t, y, u)`` with known inputs, passed through).
    lower, upper : Tensor of shape (n_guarded,)
        The box.
    rate : float
        Pull per unit of time and of distance outside the box.
    """

    def __init__(self, field: nn.Module, lower: torch.Tensor, upper: torch.Tensor, rate: float):
        super().__init__()
        self.field = field
        self.lower, self.upper, self.rate = lower, upper, rate
        self.time_dependent = getattr(field, "time_dependent", False)

    def mlp_layers(self) -> MLPLayers | None:
        """The wrapped field's layers with this box, where the field is an MLP (see ``MLPVectorField.mlp_layers``)."""
        layers = MLPLayers.declared_by(self.field)
        if layers is None or layers.box is not None or layers.clock is not None:
            return None  # the box acts on the field's own slope, before any clock's scale
        return dataclasses.replace(layers, box=(self.lower, self.upper, float(self.rate)))

    def forward(self, t: torch.Tensor, y: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """The wrapped field at ``(t, y)`` (and known ``inputs``), pulled back towards the box where ``y`` leaves it."""
        dy = self.field(t, y, *inputs)
        n = self.lower.shape[0]
        guarded = y[:, :n]
        outside = guarded - torch.minimum(torch.maximum(guarded, self.lower), self.upper)
        return torch.cat([dy[:, :n] - self.rate * outside, dy[:, n:]], dim=-1)
