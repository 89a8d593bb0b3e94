"""ODE-RNN and Latent ODE on the union of a batch's times: the reference dynlearn is timed against.

Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series"
(NeurIPS 2019) describe the ODE-RNN as: between observations the hidden
state follows ``dh/dt = f(h)``; at an observation a GRU cell updates it from
the observation and its mask. Their public implementation runs a batch on
one time axis: the series are collated onto the sorted union of all their
observation times, with a mask saying which series holds a value at which
union time, and a Python loop walks that union. At every union time *every*
series is advanced (by one Euler step when the gap to the previous union
time is shorter than a minimum step, ``total_time / 50``, else by an ODE
solve through intermediate points spaced about one minimum step apart) and
the GRU update is applied where the mask says a value is present. The Latent
ODE runs that encoder backwards in time, maps its last state to a Gaussian
over ``z0``, draws a few trajectories, integrates the latent ODE with dopri5
on the union grid and decodes every latent state linearly.

This module is that formulation, written from the paper's description. It
is a *cost* reference: it runs the same networks as dynlearn (it can take
dynlearn's own modules, so both compute the same function with the same
weights) in the union-of-times loop, with torchdiffeq called directly as
the authors do. What differs from dynlearn is only how the batch is put on
a clock: dynlearn advances every series from its own k-th observation to
its own (k+1)-th, all series at once, on a normalised clock.

Sizes of the paper's toy periodic runs (``run_models.py --niters 500 -n 1000
-s 50 -l 10 --dataset periodic`` in the authors' README, with the defaults of
that script): latent dimension 10; recognition ODE-RNN state 20 (the
ODE-RNN model's own state is the latent dimension, 10); every ODE function
an MLP with two hidden layers of 100 tanh units; GRU gates MLPs with one
hidden layer of 100 tanh units; z0 head an MLP with one hidden layer of 100
units; linear decoder; observation noise 0.01; batch 50; 3 trajectories per
series in training; dopri5 at rtol 1e-3, atol 1e-4. Details of the authors'
code that the paper does not describe and that this reference leaves out:
the ODE-RNN also carries a standard-deviation channel beside its state
(about doubling the GRU input), and the recognition network steps with
Euler through its intermediate points instead of an adaptive solver
(``encoder_method="euler"`` reproduces that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchdiffeq import odeint

from dynlearn.nn import make_mlp

# The paper's toy periodic sizes (see the module docstring).
PAPER_SIZES = dict(latent_dim=10, recognition_dim=20, ode_hidden=(100, 100), gru_hidden=100, head_hidden=100)
PAPER_SOLVER = dict(method="dopri5", rtol=1e-3, atol=1e-4)
OBSERVATION_STD = 0.01
TRAINING_SAMPLES = 3
# The authors' loop starts every series this far before the first union time
# (after it, when running backwards) with a zero state.
LEAD_IN = 0.01
# Floor of the posterior standard deviation (as in dynlearn's LatentODE).
MIN_STD = 1e-4
# Gaps shorter than total_time / MINIMUM_STEP_FRACTION take one Euler step.
MINIMUM_STEP_FRACTION = 50


# ------------------------------------------------------------------ networks
class Autonomous(nn.Module):
    """``dh/dt = net(h)``, called as torchdiffeq calls a vector field."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class GRUUpdate(nn.Module):
    """The GRU jump at an observation: ``h' = (1 - u) c + u h``.

    ``u`` and the reset gate ``r`` are sigmoids of MLPs of ``[h, x, m]``; the
    candidate ``c`` is an MLP of ``[r h, x, m]`` (x zero where m is 0). This
    is the paper's GRU with gates made of one-hidden-layer networks.
    """

    def __init__(self, hidden_dim: int, n_features: int, gru_hidden: int):
        super().__init__()
        width = hidden_dim + 2 * n_features
        self.update_gate = nn.Sequential(make_mlp(width, hidden_dim, (gru_hidden,)), nn.Sigmoid())
        self.reset_gate = nn.Sequential(make_mlp(width, hidden_dim, (gru_hidden,)), nn.Sigmoid())
        self.candidate = make_mlp(width, hidden_dim, (gru_hidden,))

    def forward(self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([h, x * m, m], dim=-1)
        u, r = self.update_gate(inputs), self.reset_gate(inputs)
        c = self.candidate(torch.cat([h * r, x * m, m], dim=-1))
        return (1 - u) * c + u * h


class CellUpdate(nn.Module):
    """A recurrent cell called as ``cell([x, m], h)``, the convention of ``torch.nn.GRUCell``.

    dynlearn's ``ODERNNEncoder`` calls its cell (``encoder.gru``) this way;
    wrapping it lets the union loop run the very same cell.
    """

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, h: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.cell(torch.cat([x * m, m], dim=-1), h)


# ----------------------------------------------------------------- collation
@dataclass
class UnionBatch:
    """A batch collated onto the sorted union of its series' observation times.

    Attributes
    ----------
    times : Tensor of shape (n_union,)
    values, mask : Tensor of shape (n_series, n_union, n_features)
        Values (0 where not observed) and the observation mask.
    observed : Tensor of bool, shape (n_series, n_union)
        True where the series has an observed entry at that union time: the
        GRU update applies there.
    """

    times: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    observed: torch.Tensor


def collate_union(values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, lengths: torch.Tensor) -> UnionBatch:
    """Put padded per-series rows ``(n_series, max_len, ...)`` onto the union of their times.

    Rows past a series' length are dropped; a series must not have two rows
    at one time (a union grid cannot hold them).
    """
    n_series, max_len, n_features = values.shape
    real = torch.arange(max_len, device=times.device)[None, :] < lengths[:, None]
    union, where = torch.unique(times[real], return_inverse=True)
    series = torch.arange(n_series, device=times.device)[:, None].expand(n_series, max_len)[real]
    on_union = values.new_zeros(n_series, len(union), n_features)
    on_mask = mask.new_zeros(n_series, len(union), n_features)
    on_union[series, where] = values[real]
    on_mask[series, where] = mask[real]
    on_mask = on_mask.to(values.dtype)
    return UnionBatch(union, on_union * on_mask, on_mask, on_mask.sum(-1) > 0)


# ------------------------------------------------------------------- ODE-RNN
class Counter(nn.Module):
    """Counts evaluations of a vector field (``calls``)."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, h)


class UnionODERNN(nn.Module):
    """ODE-RNN that walks the union of a batch's times in a Python loop.

    Parameters
    ----------
    field : nn.Module
        ``field(t, h) -> dh/dt`` on states ``(n_series, hidden_dim)``.
    update : callable ``(h, x, m) -> h'``
        The jump at an observation (``x`` zero where ``m`` is 0); applied
        only to series observed at the union time, the others keep ``h``.
    hidden_dim : int
    method, rtol, atol : solver of the gaps at least one minimum step long.
    minimum_step : float or None
        Gaps shorter than this take one Euler step; longer ones are solved
        through ``max(2, int(gap / minimum_step))`` evenly spaced points.
        None: ``(last union time - first) / 50``, as in the authors' code;
        0: every gap is solved by ``method``.
    lead_in : float
        The zero initial state sits this far before the first union time
        (after the last one when running backwards) and is advanced to it.
    """

    def __init__(
        self,
        field: nn.Module,
        update: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        hidden_dim: int,
        *,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        minimum_step: float | None = None,
        lead_in: float = LEAD_IN,
    ):
        super().__init__()
        self.field = Counter(field)
        self.update = update
        self.hidden_dim = hidden_dim
        self.method, self.rtol, self.atol = method, rtol, atol
        self.minimum_step = minimum_step
        self.lead_in = lead_in

    def forward(self, batch: UnionBatch, *, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """States ``(n_series, n_union, hidden_dim)`` after each union time, and the last state.

        ``states[:, j]`` is the state just after union time ``j`` was
        processed (in the order of processing; for ``reverse=True`` it holds
        what was seen from the last time back to ``j``).
        """
        times = batch.times
        n_series, n_union = batch.observed.shape
        span = float(times[-1] - times[0])
        minimum = span / MINIMUM_STEP_FRACTION if self.minimum_step is None else self.minimum_step
        order = range(n_union - 1, -1, -1) if reverse else range(n_union)
        h = batch.values.new_zeros(n_series, self.hidden_dim)
        previous = float(times[-1]) + self.lead_in if reverse else float(times[0]) - self.lead_in
        states: list[torch.Tensor] = [h] * n_union
        for j in order:
            now = float(times[j])
            h = self.advance(h, previous, now, minimum)
            jumped = self.update(h, batch.values[:, j], batch.mask[:, j])
            h = torch.where(batch.observed[:, j, None], jumped, h)
            states[j] = h
            previous = now
        return torch.stack(states, dim=1), h

    def advance(self, h: torch.Tensor, start: float, end: float, minimum: float) -> torch.Tensor:
        """Every series' state from ``start`` to ``end``: one Euler step below ``minimum``, else a solve."""
        gap = end - start
        if gap == 0:
            return h
        if abs(gap) < minimum:
            return h + self.field(torch.tensor(start, dtype=h.dtype, device=h.device), h) * gap
        n_points = max(2, int(abs(gap) / minimum)) if minimum > 0 else 2
        grid = torch.linspace(start, end, n_points, dtype=h.dtype, device=h.device)
        return odeint(self.field, h, grid, method=self.method, rtol=self.rtol, atol=self.atol)[-1]


class ODERNNModel(nn.Module):
    """The ODE-RNN model: forward ODE-RNN, a linear readout of each state.

    As in the authors' code, the prediction at an observation time is the
    readout of the state after the *previous* union time (the first union
    time predicts from the zero state advanced to it); the loss is the
    Gaussian negative log-likelihood (std ``OBSERVATION_STD``) of the target
    entries, which is the masked MSE up to constants.
    """

    def __init__(self, encoder: UnionODERNN, readout: nn.Module):
        super().__init__()
        self.encoder, self.readout = encoder, readout

    def predictions(self, observed: UnionBatch) -> torch.Tensor:
        """``(n_series, n_union, n_features)`` one-step-ahead readouts."""
        states, _ = self.encoder(observed)
        start = self.encoder.advance(
            observed.values.new_zeros(states.shape[0], states.shape[2]),
            float(observed.times[0]) - self.encoder.lead_in,
            float(observed.times[0]),
            math.inf,
        )
        shifted = torch.cat([start[:, None], states[:, :-1]], dim=1)
        return self.readout(shifted)

    def loss(self, observed: UnionBatch, target: UnionBatch) -> torch.Tensor:
        """Masked Gaussian NLL of ``target`` (which must share ``observed``'s union times)."""
        predicted = self.predictions(observed)
        squared = (predicted - target.values) ** 2 * target.mask
        return squared.sum() / target.mask.sum().clamp_min(1) / (2 * OBSERVATION_STD**2)


def make_odernn_model(n_features: int, hidden_dim: int = 10, **solver) -> ODERNNModel:
    """The paper's ODE-RNN at the toy sizes, with freshly initialised weights."""
    field = Autonomous(make_mlp(hidden_dim, hidden_dim, PAPER_SIZES["ode_hidden"]))
    update = GRUUpdate(hidden_dim, n_features, PAPER_SIZES["gru_hidden"])
    encoder = UnionODERNN(field, update, hidden_dim, **{**PAPER_SOLVER, **solver})
    return ODERNNModel(encoder, nn.Linear(hidden_dim, n_features))


# ----------------------------------------------------------------- Latent ODE
class UnionLatentODE(nn.Module):
    """VAE: backwards ODE-RNN → q(z0) → latent ODE on the union grid → linear decoder.

    Parameters
    ----------
    encoder : UnionODERNN
        Run backwards over the observed points; its last state (at the first
        union time) feeds ``head``.
    head : nn.Module
        Encoder state → ``[mean, pre-std]`` of ``z0`` (std = softplus).
    latent_field : nn.Module
        ``latent_field(t, z) -> dz/dt``.
    readout : nn.Module
        Latent state → observation mean.
    method, rtol, atol : the latent solve.
    """

    def __init__(
        self,
        encoder: UnionODERNN,
        head: nn.Module,
        latent_field: nn.Module,
        readout: nn.Module,
        *,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
    ):
        super().__init__()
        self.encoder, self.head, self.readout = encoder, head, readout
        self.latent_field = Counter(latent_field)
        self.method, self.rtol, self.atol = method, rtol, atol

    def posterior(self, observed: UnionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``(n_series, latent_dim)`` of q(z0 | observations)."""
        _, last = self.encoder(observed, reverse=True)
        mean, raw = self.head(last).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw) + MIN_STD

    def decode(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Observation means ``(n_samples, n_series, n_times, n_features)`` from ``z0`` at ``times[0]``."""
        n_samples, n_series, latent = z0.shape
        z = odeint(self.latent_field, z0.reshape(-1, latent), times, method=self.method, rtol=self.rtol, atol=self.atol)
        return self.readout(z).reshape(len(times), n_samples, n_series, -1).permute(1, 2, 0, 3)

    def loss(
        self,
        observed: UnionBatch,
        target: UnionBatch,
        *,
        n_samples: int = TRAINING_SAMPLES,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Negative importance-weighted ELBO per series, averaged over the batch.

        ``target`` holds the points to reconstruct on its own union grid;
        as in the authors' code, ``z0`` is taken as the latent state at the
        first target time (for interpolation, the first observed time). The
        likelihood is Gaussian with std ``OBSERVATION_STD``
        over the target's observed entries, averaged per series.
        """
        mean, std = self.posterior(observed)
        noise = torch.randn((n_samples, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
        z0 = mean + std * noise
        predicted = self.decode(z0, target.times)
        log_density = -0.5 * ((predicted - target.values) / OBSERVATION_STD) ** 2 - math.log(
            OBSERVATION_STD * math.sqrt(2 * math.pi)
        )
        per_series = (log_density * target.mask).sum(dim=(2, 3)) / target.mask.sum(dim=(1, 2)).clamp_min(1)
        kl = (0.5 * (mean**2 + std**2 - 1) - torch.log(std)).sum(dim=-1)
        bound = torch.logsumexp(per_series - kl_weight * kl, dim=0) - math.log(n_samples)
        return -bound.mean()


def make_latent_ode(n_features: int, **solver) -> UnionLatentODE:
    """The paper's Latent ODE at the toy sizes, with freshly initialised weights."""
    latent, recognition = PAPER_SIZES["latent_dim"], PAPER_SIZES["recognition_dim"]
    hidden = PAPER_SIZES["ode_hidden"]
    encoder = UnionODERNN(
        Autonomous(make_mlp(recognition, recognition, hidden)),
        GRUUpdate(recognition, n_features, PAPER_SIZES["gru_hidden"]),
        recognition,
        **{**PAPER_SOLVER, **solver},
    )
    head = make_mlp(recognition, 2 * latent, (PAPER_SIZES["head_hidden"],))
    return UnionLatentODE(
        encoder, head, Autonomous(make_mlp(latent, latent, hidden)), nn.Linear(latent, n_features),
        **{**PAPER_SOLVER, **solver},
    )


# ------------------------------------------------------- dynlearn's networks
def odernn_from_dynlearn(encoder: nn.Module, **settings) -> UnionODERNN:
    """The union loop around a ``dynlearn.nn.ODERNNEncoder``'s own field and GRU (shared, not copied).

    ``settings`` are :class:`UnionODERNN`'s keywords (``method``, ``rtol``,
    ``atol``, ``minimum_step``, ``lead_in``).
    """
    return UnionODERNN(encoder.field, CellUpdate(encoder.gru), encoder.hidden_dim, **settings)


def latent_ode_from_dynlearn(module: nn.Module, *, encoder: dict, latent: dict) -> UnionLatentODE:
    """The union formulation around the networks of a fitted ``dynlearn.LatentODE``'s ``module_``.

    ``encoder`` holds the :class:`UnionODERNN` settings of the recognition
    network, ``latent`` the solver of the latent ODE (``method``, ``rtol``,
    ``atol``).
    """
    return UnionLatentODE(
        odernn_from_dynlearn(module.encoder, **encoder), module.posterior, module.field, module.decoder, **latent
    )
