"""Vector fields made of multilayer perceptrons."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


def make_mlp(in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """Linear layers of widths ``hidden`` with ``activation`` between them.

    The last layer starts with weights scaled by 0.1: a vector field that
    starts near zero gives short, well-conditioned first solves.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    last = nn.Linear(width, out_dim)
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()
    layers.append(last)
    return nn.Sequential(*layers)


class MLPVectorField(nn.Module):
    """``dy/dt = mlp(y)`` or ``mlp([y, t])``.

    Parameters
    ----------
    state_dim : int
        Dimension of the state ``y``.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : str
        A name of :data:`dynlearn.nn.ACTIVATIONS`.
    time_dependent : bool
        Feed time to the network as an extra input.
    """

    def __init__(self, state_dim: int, hidden: Sequence[int], activation: str = "tanh", time_dependent: bool = False):
        super().__init__()
        self.time_dependent = time_dependent
        self.net = make_mlp(state_dim + int(time_dependent), state_dim, hidden, activation)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dy/dt`` of shape ``(batch, state_dim)`` at states ``y`` (and time ``t`` when time-dependent)."""
        if self.time_dependent:
            t = t.to(y.dtype).reshape(-1, 1).expand(y.shape[0], 1)
            y = torch.cat([y, t], dim=-1)
        return self.net(y)


class SecondOrderField(nn.Module):
    """``d[z, v]/dt = [v, a(z, v[, t])]``: a second-order ODE as a first-order one."""

    def __init__(self, position_dim: int, hidden: Sequence[int], activation: str = "tanh", time_dependent: bool = False):
        super().__init__()
        self.position_dim = position_dim
        self.time_dependent = time_dependent
        self.net = make_mlp(2 * position_dim + int(time_dependent), position_dim, hidden, activation)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[v, a]`` of shape ``(batch, 2 * position_dim)`` at states ``y = [z, v]``."""
        velocity = y[:, self.position_dim :]
        inputs = y
        if self.time_dependent:
            inputs = torch.cat([y, t.to(y.dtype).reshape(-1, 1).expand(y.shape[0], 1)], dim=-1)
        return torch.cat([velocity, self.net(inputs)], dim=-1)
