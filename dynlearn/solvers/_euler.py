"""Fixed-step Euler–Maruyama solves written out: torchsde's steps and KL integrand with fewer tensor operations.

``torchsde.sdeint(method="euler")`` with fixed steps keeps its clock in
0-dim tensors, queries a ``BrownianInterval`` (a binary tree searched and
split in Python, two small normal draws per step) for every increment and,
with ``logqp``, appends the KL integrand to the state, so every step
concatenates the drift and the diffusion with an extra column. For a latent
SDE of 128 series the Brownian queries alone are about a fifth of the
forward solve.

Here the step grid is torchsde's, built with its own tensor arithmetic once
per (output times, step) and reused: steps of ``dt`` from ``ts[0]``, the
last one cut at ``ts[-1]``, outputs inside a step linear interpolants of
its ends. Each step is ``y + f dt + g dW`` (``g * dW`` for diagonal noise,
``g @ dW`` otherwise) and the KL integrand ``|(f - h) / g|² / 2`` (with
torchsde's floor on ``|g|``; the pseudo-inverse of ``g`` for non-diagonal
noise) is accumulated beside the state with the same operations torchsde
applies to its extra column. Given the same Brownian increments, states,
KL increments and gradients are torchsde's to rounding.

The increments of the default Brownian motion are drawn in one call,
``N(0, 1) * sqrt(step)`` from a generator seeded with the solve's entropy;
a Brownian motion the caller passes is queried step by step as torchsde
queries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import torch

from ._euler_fused import PosteriorLayers, solve_posterior, stable_divisor


def writes_out(method: str, adaptive: bool, adjoint: bool, options: dict[str, Any] | None) -> bool:
    """Whether a solve runs written out: fixed-step Euler–Maruyama, no adjoint, no torchsde options."""
    return method == "euler" and not adaptive and not adjoint and not options


@dataclass(frozen=True)
class StepGrid:
    """torchsde's fixed steps over some output times.

    ``times[k]`` starts step ``k`` (the drift and diffusion are evaluated
    there), ``steps[k]`` is its length and ``bounds[k]`` its ends as floats
    (the Brownian query). ``reports[k]`` lists the outputs reported once
    ``k`` steps are taken: ``None`` for an output on the step end, else the
    interpolation weights of the step's start and end states.
    """

    times: tuple[torch.Tensor, ...]
    steps: tuple[torch.Tensor, ...]
    bounds: tuple[tuple[float, float], ...]
    reports: tuple[tuple[tuple[torch.Tensor, torch.Tensor] | None, ...], ...]


def step_grid(ts: torch.Tensor, dt: float) -> StepGrid:
    """The steps torchsde takes from ``ts[0]`` to ``ts[-1]`` with step ``dt`` (cached by value)."""
    return _step_grid(tuple(ts.tolist()), float(dt), ts.dtype, ts.device)


@lru_cache(maxsize=64)
def _step_grid(values: tuple[float, ...], dt: float, dtype: torch.dtype, device: torch.device) -> StepGrid:
    # The same tensor operations as torchsde's BaseSDESolver.integrate, so the same times bit for bit.
    ts = torch.tensor(values, dtype=dtype, device=device)
    end = ts[-1]
    current = ts[0]
    times, reports = [current], [[]]
    for out in ts[1:]:
        while current < out:
            following = current + dt
            current = min(following, end)
            times.append(current)
            reports.append([])
        start, stop = times[-2], times[-1]
        on_end = bool(out == stop)
        reports[-1].append(None if on_end else ((stop - out) / (stop - start), (out - start) / (stop - start)))
    steps = tuple(b - a for a, b in pairwise(times))
    floats = [float(t) for t in times]
    return StepGrid(tuple(times[:-1]), steps, tuple(pairwise(floats)), tuple(map(tuple, reports)))


def default_increments(grid: StepGrid, batch: int, channels: int, entropy: int, dtype: torch.dtype,
                       device: torch.device) -> torch.Tensor:
    """``(n_steps, batch, channels)`` Brownian increments on ``grid``, all drawn in one call from ``entropy``."""
    generator = torch.Generator(device=device).manual_seed(entropy)
    normal = torch.randn((len(grid.steps), batch, channels), generator=generator, dtype=dtype, device=device)
    return normal * torch.stack(grid.steps).sqrt()[:, None, None]


def queried_increments(bm: Any, grid: StepGrid) -> list[torch.Tensor]:
    """The increments of a caller's Brownian motion over each step, queried in torchsde's order."""
    return [bm(start, stop) for start, stop in grid.bounds]


def solve_euler(sde: Any, y0: torch.Tensor, grid: StepGrid, increments: Any, logqp: bool) -> Any:
    """Euler–Maruyama over ``grid`` with the given increments: ``ys`` (and the KL increments with ``logqp``).

    ``sde`` has ``f``, ``g`` (and ``h`` with ``logqp``) and ``noise_type``;
    they are called in torchsde's order, drift then diffusion then prior
    drift, once per step. Increments wider than the state with diagonal
    noise (torchsde's extra channel for the KL term) have it dropped: its
    diffusion is zero. An SDE that declares :class:`PosteriorLayers` (and
    increments without gradients) is solved as one autograd node instead,
    without calling ``f``, ``g`` or ``h`` (``_euler_fused``).
    """
    diagonal = sde.noise_type == "diagonal"
    d = y0.shape[1]
    layers = PosteriorLayers.declared_by(sde) if diagonal else None
    if layers is not None and len(grid.steps) > 0:
        if not torch.is_tensor(increments):
            increments = torch.stack(list(increments))
        if not increments.requires_grad:
            return _solve_fused(sde, layers, y0, grid, increments[..., :d], logqp)
    y, before = y0, y0
    kl = y0.new_zeros(y0.shape[0], 1) if logqp else None
    kl_before = kl
    states, kls = [y0], [kl]
    if torch.is_tensor(increments):
        increments = increments.unbind(0)
    for k, (t, step, dw) in enumerate(zip(grid.times, grid.steps, increments)):
        f = sde.f(t, y)
        g = sde.g(t, y)
        before, kl_before = y, kl
        if logqp:
            kl = kl + _kl_integrand(f, g, sde.h(t, y), diagonal) * step
        if diagonal:
            noise = g * (dw[:, :d] if dw.shape[1] != d else dw)
        else:
            noise = torch.bmm(g, dw.unsqueeze(-1)).squeeze(-1)
        y = y + f * step + noise
        for weights in grid.reports[k + 1]:
            if weights is None:
                states.append(y)
                kls.append(kl)
            else:
                states.append(weights[0] * before + weights[1] * y)
                kls.append(weights[0] * kl_before + weights[1] * kl if logqp else None)
    ys = torch.stack(states)
    if not logqp:
        return ys
    ratio = torch.stack(kls)
    return ys, (ratio[1:] - ratio[:-1]).squeeze(2)


def _solve_fused(sde: Any, layers: PosteriorLayers, y0: torch.Tensor, grid: StepGrid, increments: torch.Tensor,
                 logqp: bool) -> Any:
    """:func:`solve_euler` with every step in one autograd node (see ``_euler_fused``)."""
    counted = getattr(sde, "counted", None)
    if counted is not None:
        counted(len(grid.steps))
    ends, kl_ends = solve_posterior(layers, y0, grid.times, grid.steps, increments, logqp)
    states, kls = [y0], [kl_ends[0] if logqp else None]
    for k in range(len(grid.steps)):
        for weights in grid.reports[k + 1]:
            if weights is None:
                states.append(ends[k + 1])
                kls.append(kl_ends[k + 1] if logqp else None)
            else:
                states.append(weights[0] * ends[k] + weights[1] * ends[k + 1])
                kls.append(weights[0] * kl_ends[k] + weights[1] * kl_ends[k + 1] if logqp else None)
    ys = torch.stack(states)
    if not logqp:
        return ys
    ratio = torch.stack(kls)
    return ys, (ratio[1:] - ratio[:-1]).squeeze(2)


def _kl_integrand(f: torch.Tensor, g: torch.Tensor, h: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """``|u|² / 2`` with ``g u = f - h``: torchsde's logqp drift, (batch, 1)."""
    if diagonal:
        u = (f - h) / stable_divisor(g)
    else:
        u = torch.bmm(g.pinverse(), (f - h).unsqueeze(-1)).squeeze(-1)
    return 0.5 * (u**2).sum(dim=1, keepdim=True)
