"""Vector fields with known solutions, shared by the solver tests.

Every field accepts ``t`` either as a scalar (``solve_ode``) or as one time
per series of shape (batch,) (``solve_ode_irregular``), and every exact
solution takes per-series start times, so one table serves both entry points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

from dynlearn.nn import MLPVectorField

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Exact = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

OMEGA = 2.0
DECAY_RATE = 0.7


@dataclass(frozen=True)
class KnownProblem:
    """A vector field, initial states and the exact flow.

    ``exact(y0, t0, t)`` maps initial states (batch, dim) at per-series
    start times (batch,) to the states at times (batch, n_times), as a
    tensor of shape (batch, n_times, dim).
    """

    name: str
    field: Field
    y0: torch.Tensor
    exact: Exact


def _per_series(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t`` as a (batch, 1) column whether it came as a scalar or one time per series."""
    return t.to(y.dtype).reshape(-1, 1).expand(y.shape[0], 1)


def _states(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -DECAY_RATE * y


def _decay_exact(y0: torch.Tensor, t0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return y0[:, None, :] * torch.exp(-DECAY_RATE * (t - t0[:, None]))[..., None]


def _oscillator(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[:, 1], -(OMEGA**2) * y[:, 0]], dim=-1)


def _oscillator_exact(y0: torch.Tensor, t0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    phase = OMEGA * (t - t0[:, None])
    x0, v0 = y0[:, None, 0], y0[:, None, 1]
    x = x0 * torch.cos(phase) + v0 / OMEGA * torch.sin(phase)
    v = -x0 * OMEGA * torch.sin(phase) + v0 * torch.cos(phase)
    return torch.stack([x, v], dim=-1)


def _forced(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cos(_per_series(t, y)).expand_as(y)


def _forced_exact(y0: torch.Tensor, t0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return y0[:, None, :] + (torch.sin(t) - torch.sin(t0)[:, None])[..., None]


PROBLEMS = {
    "decay": KnownProblem("decay", _decay, _states([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25], [2.0, 0.1]]), _decay_exact),
    "oscillator": KnownProblem(
        "oscillator", _oscillator, _states([[1.0, 0.0], [0.0, 1.0], [-0.5, 2.0], [0.3, -0.7]]), _oscillator_exact
    ),
    "forced": KnownProblem("forced", _forced, _states([[0.0], [1.0], [-2.0], [0.5]]), _forced_exact),
}


@pytest.fixture(params=sorted(PROBLEMS))
def problem(request: pytest.FixtureRequest) -> KnownProblem:
    """Each problem with a known solution in turn."""
    return PROBLEMS[request.param]


@pytest.fixture(params=["decay", "oscillator"])
def autonomous_problem(request: pytest.FixtureRequest) -> KnownProblem:
    """Each problem whose field does not depend on time, in turn."""
    return PROBLEMS[request.param]


@pytest.fixture
def oscillator() -> KnownProblem:
    return PROBLEMS["oscillator"]


class MLPField(nn.Module):
    """A small time-dependent tanh network ``dy/dt = net(y) * (1 + sin t / 2)``."""

    def __init__(self, dim: int = 2, width: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, dim)).to(dtype)
        # Seeded from a local generator: the global torch seed stays untouched.
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=dtype) / math.sqrt(width))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y) * (1 + 0.5 * torch.sin(_per_series(t, y)))


@pytest.fixture
def mlp_field() -> MLPField:
    """A fresh float64 two-layer tanh vector field on a 2-D state."""
    return MLPField()


@pytest.fixture
def wide_field() -> MLPVectorField:
    """dynlearn's own float32 tanh field, 8-D state, hidden (32, 32), with O(1) dynamics."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # layer construction draws from the global generator
        field = MLPVectorField(8, (32, 32), "tanh")
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1]))
    return field


@pytest.fixture
def irregular_times() -> torch.Tensor:
    """(4, 6) per-series times: forwards, a repeated time, backwards, and a late start.

    Each row is one series' clock; they share no grid.
    """
    return torch.tensor(
        [
            [0.0, 0.3, 0.9, 1.7, 2.0, 3.1],
            [0.5, 1.0, 1.0, 1.4, 2.2, 2.5],
            [3.0, 2.5, 1.9, 1.0, 0.4, -0.3],
            [-1.0, -0.2, 0.0, 0.1, 0.15, 2.0],
        ],
        dtype=torch.float64,
    )
