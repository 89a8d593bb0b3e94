"""dynlearn against the training loop a user would write by hand on the same backend, family by family.

``speed_vs_peers`` builds each estimator family's training iteration twice:
dynlearn's, exactly as ``fit`` takes it (the loss and prepared minibatches a
fit captures with a public ``Callback``, stepped with
``dynlearn.training.train_step``), and a plain loop written directly on
torchdiffeq / torch.autograd / torchsde (or torchode) that computes the same
loss of the same model on the same minibatches from the same initial weights,
with the same optimiser (AdamW, the estimator's learning rate, gradient norm
clipped at 1): on dynlearn's side the one ``fit`` steps
(``dynlearn.training.adamw``, torch's fused kernel where it has one), on the
peer's the plain ``torch.optim.AdamW`` a hand-written loop constructs. The two are timed round by round in one process, at a small
size (per-step overhead dominates) and a large one (matrix products
dominate), on one torch thread. Each side then trains the same number of
further iterations and its loss on all the training examples is recorded.
ODE-RNN and Latent ODE are compared with the authors' code through
``authors_reference``. How to read the figures: ``benchmarks/README.md``.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from dynlearn import HamiltonianNN, LagrangianNN, LatentSDE, NeuralODE, NeuralSDE
from dynlearn.datasets import make_damped_oscillator, make_forced_oscillator, make_mass_spring, make_pendulum
from dynlearn.solvers import count_evaluations
from dynlearn.training import adamw, train_step

from harness import Context, Record, default_seconds, matrix_product_profile, median, register, time_interleaved
from irregular import TrainingCapture, consecutive_batches
from physics import torch_threads

NAME = "speed_vs_peers"
# (hidden widths, minibatch size) of the two sizes; LatentSDE keeps minibatches of 128 series at both.
SIZES = {"small": ((32, 32), 16), "large": ((256, 256), 256)}
SDE_BATCH = 128
SDE_LOSS_DRAWS = 4
# Iterations each side trains (after the timed rounds) before its loss on all training examples is taken.
ACCURACY_ITERATIONS = {True: 10, False: 100}
# Points over those iterations at which the loss on all training examples is taken and averaged.
LOSS_CHECKPOINTS = 5
# NeuralODE solver settings on both sides: dynlearn's defaults.
RTOL, ATOL = 1e-3, 1e-4
CLIP = 1.0
# Where a family's sides are built unless told otherwise (``peers`` passes the run's device).
CPU = torch.device("cpu")


@dataclass
class Side:
    """One implementation of one family at one size."""

    iteration: Callable[[], float]  # one training step on the next minibatch; returns its loss
    evaluations: Callable[[], int]  # field evaluations (forward) of one training step, counted while it runs
    full_loss: Callable[[], float]  # the loss on all training examples, without a step


class Counter:
    """Counts the forward calls of a module through a forward hook (a public torch API)."""

    def __init__(self, module: nn.Module):
        self.calls = 0
        module.register_forward_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.calls += 1


class CallCounter:
    """Counts the calls of some methods of an object, together (each wrapped on the instance).

    ``per_call(*args)`` is what one call adds (one when None), for a method that evaluates a network several times.
    """

    def __init__(self, owner: Any, *names: str, per_call: Callable[..., int] | None = None):
        self.calls, self.per_call = 0, per_call
        for name in names:
            self._wrap(owner, name)

    def _wrap(self, owner: Any, name: str) -> None:
        method = getattr(owner, name)

        def count(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1 if self.per_call is None else self.per_call(*args)
            return method(*args, **kwargs)

        setattr(owner, name, count)


def counted(counter: Counter | CallCounter, iteration: Callable[[], float]) -> Callable[[], int]:
    def evaluations() -> int:
        before = counter.calls
        iteration()
        return counter.calls - before

    return evaluations


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers with ``activation`` (tanh) between them, as a user writes one."""
    layers: list[nn.Module] = []
    for width_in, width_out in pairwise(sizes):
        layers += [nn.Linear(width_in, width_out), activation()]
    return nn.Sequential(*layers[:-1])


def capture(estimator: Any, frame: Any, device: torch.device, **fit: Any) -> TrainingCapture:
    seen = TrainingCapture()
    estimator.set_params(callbacks=[seen], max_epochs=1, patience=None, validation_fraction=0.0, random_state=0,
                         n_threads=1, device=str(device)).fit(frame, **fit)
    return seen


def dynlearn_side(seen: TrainingCapture, batch: int, count: Callable[[Callable[[], float]], Callable[[], int]]) -> Side:
    module, loss_fn = seen.module, seen.loss_fn
    batches = consecutive_batches(seen.train_data, batch)
    optimizer = adamw(module.parameters(), lr=seen.learning_rate)  # the optimiser fit steps
    calls = 0

    def iteration() -> float:
        nonlocal calls
        calls += 1
        if not module.training:  # as fit's loop: training mode once, not a walk over the modules every step
            module.train()
        return train_step(module, loss_fn, batches[(calls - 1) % len(batches)], optimizer, clip_grad_norm=CLIP)

    def full_loss() -> float:
        module.eval()
        with torch.no_grad():
            return float(loss_fn(module, seen.train_data))

    return Side(iteration, count(iteration), full_loss)


def ode_evaluations(iteration: Callable[[], float]) -> Callable[[], int]:
    """dynlearn's own evaluation counter (``dynlearn.solvers.count_evaluations``), forward evaluations."""

    def evaluations() -> int:
        with count_evaluations() as solved:
            iteration()
        return solved.nfe_forward

    return evaluations


def peer_side(module: nn.Module, loss: Callable[[dict], torch.Tensor], data: dict, batch: int, learning_rate: float,
              calls: Callable[[], int], no_grad: bool = True) -> Side:
    """The plain loop: zero, loss, backward, clip, AdamW step; minibatches taken in turn."""
    batches = consecutive_batches(data, batch)
    optimizer = torch.optim.AdamW(module.parameters(), lr=learning_rate)
    step = 0

    def iteration() -> float:
        nonlocal step
        step += 1
        optimizer.zero_grad()
        value = loss(batches[(step - 1) % len(batches)])
        value.backward()
        nn.utils.clip_grad_norm_(module.parameters(), CLIP)
        optimizer.step()
        return float(value.detach())

    def evaluations() -> int:
        before = calls()
        iteration()
        return calls() - before

    def full_loss() -> float:
        if not no_grad:
            return float(loss(data).detach())
        with torch.no_grad():
            return float(loss(data))

    return Side(iteration, evaluations, full_loss)


def masked_mse(predicted: torch.Tensor, data: dict) -> torch.Tensor:
    mask = data["mask"][:, 1:]
    return ((predicted[:, 1:] - data["values"][:, 1:]) ** 2 * mask).sum() / mask.sum().clamp_min(1)


# ------------------------------------------------------------------ NeuralODE
class CountedField(nn.Module):
    """``dx/dt = net(x)``, counting its calls."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(y)


def neural_ode_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's NeuralODE against ``torchdiffeq.odeint`` on the shared grid of 16-row windows."""
    from torchdiffeq import odeint

    frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
    seen = capture(NeuralODE(hidden_layer_sizes=hidden, window_size=16, stabilize=False, rtol=RTOL, atol=ATOL), frame,
                   device)
    data = seen.train_data
    grid = data["times"][0] - data["times"][0, 0]
    if not torch.allclose(data["times"] - data["times"][:, :1], grid.expand_as(data["times"])):
        raise RuntimeError("speed_vs_peers: the NeuralODE windows do not share one time grid; the odeint loop needs one.")
    field = CountedField(mlp([2, *hidden, 2])).to(device)
    field.net.load_state_dict(seen.module.field.net.state_dict())  # same initial weights

    def loss(part: dict) -> torch.Tensor:
        path = odeint(field, part["x0"], grid, rtol=RTOL, atol=ATOL, method="dopri5")  # (T, batch, 2)
        return masked_mse(path.transpose(0, 1), part)

    return {
        "dynlearn": dynlearn_side(seen, batch, ode_evaluations),
        "peer": peer_side(field, loss, data, batch, seen.learning_rate, lambda: field.calls),
    }


class DrivenField(nn.Module):
    """``dx/dt = net([x, u(t)])`` with ``u`` each series' known input on the grid, held from each knot
    (``"previous"``) or interpolated linearly, as a user writes it for ``odeint``; counts its calls."""

    def __init__(self, net: nn.Module, interpolation: str):
        super().__init__()
        self.net, self.interpolation, self.calls = net, interpolation, 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        grid, inputs = self.grid, self.inputs
        k = int((torch.searchsorted(grid, t.reshape(1), right=True) - 1).clamp(0, len(grid) - 2))
        u = inputs[:, k]
        if self.interpolation == "linear":
            u = u + (t - grid[k]) / (grid[k + 1] - grid[k]) * (inputs[:, k + 1] - u)
        return self.net(torch.cat([y, u], dim=-1))


def driven_pair(hidden: tuple[int, ...], batch: int, interpolation: str, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's NeuralODE driven by a known input (forced oscillators) against an ``odeint`` loop whose field
    reads the input itself, on the shared grid of 16-row windows.

    The loop tells torchdiffeq where the input changes (``jump_t`` at the
    samples), as dynlearn's segment clock does, so both solve to the
    tolerance asked. A loop that does not (``naive``) steps across the
    samples in fewer evaluations and misses the tolerance by far: the peer
    side's ``extra()`` measures both against a tight solve.
    """
    from torchdiffeq import odeint

    frame = make_forced_oscillator(n_series=64, n_times=50, t_span=(0.0, 15.0), random_state=0)
    seen = capture(NeuralODE(hidden_layer_sizes=hidden, window_size=16, stabilize=False, rtol=RTOL, atol=ATOL,
                             covariates=["u"], covariate_interpolation=interpolation), frame, device)  # fmt: skip
    data = seen.train_data
    grid = data["times"][0] - data["times"][0, 0]
    if not torch.allclose(data["times"] - data["times"][:, :1], grid.expand_as(data["times"])):
        raise RuntimeError("speed_vs_peers: the driven windows do not share one time grid; the odeint loop needs one.")
    field = DrivenField(mlp([3, *hidden, 2]), interpolation).to(device)
    field.net.load_state_dict(seen.module.field.net.state_dict())
    samples = {"jump_t": grid[1:-1]}

    def solve(part: dict, rtol: float = RTOL, atol: float = ATOL, options: dict | None = None) -> torch.Tensor:
        field.grid, field.inputs = grid.to(part["x0"].dtype), part["inputs"]  # the scaled inputs dynlearn reads
        options = samples if options is None else options
        return odeint(field, part["x0"], field.grid, rtol=rtol, atol=atol, method="dopri5", options=options)

    def errors(prefix: str) -> list[Record]:
        """At the initial weights, on the first minibatch: the largest state error of the loop's solve with and
        without ``jump_t`` against the same solve at rtol 1e-9 in float64, and the naive loop's evaluations."""
        first = consecutive_batches(data, batch)[0]
        wide = {key: value.double() if torch.is_tensor(value) and value.is_floating_point() else value
                for key, value in first.items()}  # fmt: skip
        with torch.no_grad():
            state = copy.deepcopy(field.net.state_dict())
            field.net.double()
            reference = solve(wide, 1e-9, 1e-11, {"jump_t": grid[1:-1].double()})
            field.net.float().load_state_dict(state)
            records = []
            for name, options in (("peer", None), ("naive", {})):
                before = field.calls
                error = float((solve(first, options=options).double() - reference).abs().max())
                records.append(Record(NAME, f"{prefix}.solve_error.{name}", error, "max |state - tight solve|"))
            records.append(Record(NAME, f"{prefix}.evaluations_per_iteration.naive", field.calls - before,
                                  "evaluations"))  # fmt: skip
        return records

    peer = peer_side(field, lambda part: masked_mse(solve(part).transpose(0, 1), part), data, batch,
                     seen.learning_rate, lambda: field.calls)  # fmt: skip
    peer.extra = errors  # type: ignore[attr-defined]
    return {"dynlearn": dynlearn_side(seen, batch, ode_evaluations), "peer": peer}


def torchode_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's per-series irregular solve against torchode's batched solve with per-series steps."""
    import torchode

    frame = make_damped_oscillator(n_series=64, n_times=50, irregular=True, random_state=0)
    seen = capture(NeuralODE(hidden_layer_sizes=hidden, window_size=16, stabilize=False, rtol=RTOL, atol=ATOL), frame,
                   device)
    data = seen.train_data
    field = CountedField(mlp([2, *hidden, 2])).to(device)
    field.net.load_state_dict(seen.module.field.net.state_dict())
    term = torchode.ODETerm(field)
    solver = torchode.AutoDiffAdjoint(
        torchode.Dopri5(term=term), torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    )

    def loss(part: dict) -> torch.Tensor:
        clocks = part["times"] - part["times"][:, :1]  # each window on its own clock, from 0
        solution = solver.solve(torchode.InitialValueProblem(y0=part["x0"], t_eval=clocks))
        return masked_mse(solution.ys, part)

    return {
        "dynlearn": dynlearn_side(seen, batch, ode_evaluations),
        "peer": peer_side(field, loss, data, batch, seen.learning_rate, lambda: field.calls),
    }


# --------------------------------------------------------------- HamiltonianNN
def hamiltonian_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's HamiltonianNN (derivative regression) against a plain autograd HNN step on the same rows."""
    frame = make_mass_spring(n_series=32, n_times=50, random_state=0)
    seen = capture(HamiltonianNN(hidden_layer_sizes=hidden, fit_on="derivatives"), frame, device)
    energy = mlp([2, *hidden, 1]).to(device)
    energy.load_state_dict(seen.module.net.state_dict())
    counter = Counter(energy)

    def loss(part: dict) -> torch.Tensor:
        x = part["x"].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
        field = torch.cat([grad[:, 1:], -grad[:, :1]], dim=-1)  # dq/dt = dH/dp, dp/dt = -dH/dq
        return ((field - part["rates"]) ** 2 * part["mask"]).sum() / part["mask"].sum().clamp_min(1)

    # One field evaluation per loss: the field's derivative_loss forms it and the weights' gradient in one
    # pass, without calling the field module or net; its calls are counted.
    ours = CallCounter(seen.module, "derivative_loss")
    side = dynlearn_side(seen, batch, lambda iteration: counted(ours, iteration))
    # The derivative loss needs gradients of H even when evaluated.
    side.full_loss = lambda: float(seen.loss_fn(seen.module, seen.train_data).detach())
    return {
        "dynlearn": side,
        "peer": peer_side(energy, loss, seen.train_data, batch, seen.learning_rate, lambda: counter.calls, False),
    }


def lagrangian_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's LagrangianNN (derivative regression) against a plain autograd LNN step on the same rows.

    The peer is the Euler–Lagrange solve of Cranmer et al. (2020) written on torch.autograd: ``∂L/∂x`` with its
    graph, one more reverse pass per velocity for the rows of the Hessian, then ``q̈`` from
    ``(∂²L/∂v²) q̈ = ∂L/∂q - (∂²L/∂v∂q) v``. It checks nothing; dynlearn also tests each velocity Hessian's
    rank and the accelerations' finiteness, to raise ``IntegrationError`` where the dynamics are undetermined.
    dynlearn's loss is one autograd node: the gradient and the Hessian's velocity rows as plain operations
    (``Sweep.hessian_rows``), and the weights' gradient written out in the same pass
    (``LagrangianField.derivative_loss``; at the large size, past the node's size rule, the same operations
    recorded instead).
    """
    frame = make_pendulum(n_series=32, n_times=50, random_state=0).rename(columns={"p": "dq"})  # m = l = 1: p = dq/dt
    seen = capture(LagrangianNN(hidden_layer_sizes=hidden, fit_on="derivatives"), frame, device)
    lagrangian = mlp([2, *hidden, 1], nn.Softplus).to(device)  # LagrangianNN's default activation
    lagrangian.load_state_dict(seen.module.net.state_dict())
    counter, d = Counter(lagrangian), 1

    def loss(part: dict) -> torch.Tensor:
        x = part["x"].detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(lagrangian(x).sum(), x, create_graph=True)
        hessian = torch.stack([torch.autograd.grad(grad[:, d + j].sum(), x, create_graph=True)[0] for j in range(d)], 1)
        velocity = x[:, d:]
        force = grad[:, :d] - (hessian[:, :, :d] @ velocity.unsqueeze(-1)).squeeze(-1)
        field = torch.cat([velocity, torch.linalg.solve(hessian[:, :, d:], force)], dim=-1)
        return ((field - part["rates"]) ** 2 * part["mask"]).sum() / part["mask"].sum().clamp_min(1)

    ours = CallCounter(seen.module, "derivative_loss")  # one node: it calls neither the network module nor acceleration
    side = dynlearn_side(seen, batch, lambda iteration: counted(ours, iteration))
    side.full_loss = lambda: float(seen.loss_fn(seen.module, seen.train_data).detach())  # needs gradients of L
    return {
        "dynlearn": side,
        "peer": peer_side(lagrangian, loss, seen.train_data, batch, seen.learning_rate, lambda: counter.calls, False),
    }


class PeerMomentSDE(nn.Module):
    """NeuralSDE's training loss written by hand: a Gaussian carried through Euler–Maruyama sub-steps.

    ``m ← m + h f(m)``, ``P ← A P Aᵀ + h diag(g(m)²)`` with ``A = I + h ∂f/∂x(m)``, the drift's Jacobian taken
    by autograd, one reverse pass per feature with its graph; then the negative log-density of the observed
    entries of each transition's end under ``N(m, P)``, per observed entry.
    """

    def __init__(self, hidden: tuple[int, ...], features: int = 2, step: float = 0.5, floor: float = 1e-3):
        super().__init__()
        self.drift_net, self.diffusion_net = mlp([features, *hidden, features]), mlp([features, *hidden, features])
        self.step, self.floor, self.calls = step, floor, 0

    def loss(self, part: dict) -> torch.Tensor:
        gap, values, mask = part["gap"], part["values"], part["mask"].to(part["values"].dtype)
        n_steps = max(1, math.ceil(float(gap.max()) / self.step - 1e-9))
        h = (gap / n_steps)[:, None]
        mean = part["x0"].detach().requires_grad_(True)
        d = mean.shape[1]
        cov, eye = mean.new_zeros(len(mean), d, d), torch.eye(d, dtype=mean.dtype, device=mean.device)
        for _ in range(n_steps):
            self.calls += 1
            f = self.drift_net(mean)
            jacobian = torch.stack([torch.autograd.grad(f[:, i].sum(), mean, create_graph=True)[0] for i in range(d)], 1)
            g = nn.functional.softplus(self.diffusion_net(mean)) + self.floor
            a = eye + h[..., None] * jacobian
            cov = a @ cov @ a.transpose(1, 2) + h[..., None] * torch.diag_embed(g**2)
            mean = mean + h * f
        # The observed entries' marginal: the missing rows and columns replaced by the identity's.
        marginal = cov * (mask[:, :, None] * mask[:, None, :]) + torch.diag_embed(1.0 - mask)
        chol = torch.linalg.cholesky(marginal)
        z = torch.linalg.solve_triangular(chol, ((values - mean) * mask).unsqueeze(-1), upper=False).squeeze(-1)
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        nll = 0.5 * ((z**2).sum(1) + log_det + mask.sum(1) * math.log(2 * math.pi)).sum()
        return nll / mask.sum().clamp_min(1)


def neural_sde_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's NeuralSDE (Gaussian moment propagation over each transition) against the same loss by hand.

    dynlearn takes the drift's Jacobian as the network's forward tangents, written out
    (``dynlearn.nn.jacobian_columns``), and skips it on each transition's first sub-step, where the covariance
    it would carry is still zero; the peer takes it at every sub-step, as autograd's reverse passes.
    """
    frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
    seen = capture(NeuralSDE(hidden_layer_sizes=hidden), frame, device)
    peer = PeerMomentSDE(hidden).to(device)
    peer.load_state_dict(seen.module.state_dict())  # same initial weights, same names
    # One drift evaluation per sub-step (the first, from a known state, takes the drift alone: its Jacobian would be
    # unused); transition_loss(x0, t0, gap, n_steps, ...) takes n_steps of them, in one node or recorded.
    ours = CallCounter(seen.module, "transition_loss", per_call=lambda x0, t0, gap, n_steps, *rest: n_steps)
    return {
        "dynlearn": dynlearn_side(seen, batch, lambda iteration: counted(ours, iteration)),
        "peer": peer_side(peer, peer.loss, seen.train_data, batch, seen.learning_rate, lambda: peer.calls, False),
    }


# ------------------------------------------------------------------- LatentSDE
class PeerLatentSDE(nn.Module):
    """A latent SDE written directly on torchsde (Li et al. 2020), the model dynlearn's LatentSDE fits.

    A GRU reads each series backwards; the posterior drift is the prior
    drift plus a correction that reads the context of the next observation
    and the time left until it; each latent dimension has its own diffusion
    network; ``sdeint(..., logqp=True)`` accumulates the path KL.
    """

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, hidden: tuple[int, ...], latent: int = 4, context: int = 16, gru: int = 32, diffusion: int = 16):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.gru = nn.GRU(5, gru, batch_first=True)
        self.encoder.out = nn.Linear(gru, context)
        self.initial = nn.Linear(context + 4, 2 * latent)
        self.prior_mean = nn.Parameter(torch.zeros(latent))
        self.prior_log_std = nn.Parameter(torch.zeros(latent))
        self.dynamics = nn.Module()
        self.dynamics.correction = mlp([latent + context + 4 + 1, *hidden, latent])
        self.dynamics.prior = mlp([latent, *hidden, latent])
        self.dynamics.diffusion = nn.Module()
        for name in ("w1", "b1", "w2"):
            setattr(self.dynamics.diffusion, name, nn.Parameter(torch.zeros(latent, diffusion)))
        self.dynamics.diffusion.b2 = nn.Parameter(torch.zeros(latent))
        self.decoder = nn.Linear(latent, 2)
        self.obs_raw = nn.Parameter(torch.zeros(2))
        self.calls = 0

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        # Between two observations, the context of the later one (a step starting at one heads for the next).
        row = torch.searchsorted(self.ts, (t + 1e-3 * self.dt).reshape(1), right=True).clamp(max=len(self.ts) - 1)[0]
        remaining = (self.ts[row] - t).clamp_min(0.0).expand(len(z), 1)
        correction = self.dynamics.correction(torch.cat([z, self.context[:, row], remaining], dim=-1))
        return self.h(t, z) + correction

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.dynamics.prior(z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        d = self.dynamics.diffusion
        return torch.sigmoid((torch.tanh(z.unsqueeze(-1) * d.w1 + d.b1) * d.w2).sum(-1) + d.b2) + 1e-3

    def loss(self, part: dict, dt: float) -> torch.Tensor:
        import torchsde

        values, mask = part["values"], part["mask"]
        self.ts, self.dt = part["times"][0], dt
        inputs = torch.cat([values * mask, mask, torch.diff(self.ts, append=self.ts[-1:])[:, None].expand(len(values), -1, 1)
                            ], dim=-1)  # fmt: skip
        outputs, _ = self.encoder.gru(inputs.flip(1))  # read backwards in time
        self.context = torch.cat([self.encoder.out(outputs.flip(1)), values * mask, mask], dim=-1)
        mean, log_std = self.initial(self.context[:, 0]).chunk(2, dim=-1)
        std = log_std.clamp(-10.0, 5.0).exp()
        z0 = mean + std * torch.randn_like(mean)
        paths, log_ratio = torchsde.sdeint(self, z0, self.ts, method="euler", dt=dt, logqp=True)
        decoded = self.decoder(paths.transpose(0, 1))
        obs_std = nn.functional.softplus(self.obs_raw) + 1e-3
        log_lik = (-0.5 * ((values - decoded) / obs_std) ** 2 - obs_std.log() - 0.5 * math.log(2 * math.pi)) * mask
        prior_std = self.prior_log_std.exp()
        initial_kl = torch.log(prior_std / std) + (std**2 + (mean - self.prior_mean) ** 2) / (2 * prior_std**2) - 0.5
        elbo = log_lik.sum() - initial_kl.sum() - log_ratio.sum()
        return -elbo / mask.sum().clamp_min(1)


def latent_sde_pair(hidden: tuple[int, ...], batch: int, device: torch.device = CPU) -> dict[str, Side]:
    """dynlearn's LatentSDE against the torchsde loop above, Euler steps of 0.25 (196 per iteration)."""
    frame = make_damped_oscillator(n_series=SDE_BATCH, n_times=50, random_state=0)
    estimator = LatentSDE(hidden_layer_sizes=hidden, kl_anneal_epochs=0, batch_size=SDE_BATCH, dt=0.25)
    seen = capture(estimator, frame, device)
    torch.manual_seed(0)
    peer = PeerLatentSDE(hidden).to(device)
    peer.load_state_dict(seen.module.state_dict(), strict=True)  # same initial weights, same names
    ours = Counter(seen.module.dynamics.correction)  # one call per posterior drift evaluation
    count_fused_steps(seen.module.dynamics, ours)
    sides = {
        "dynlearn": dynlearn_side(seen, SDE_BATCH, lambda iteration: counted(ours, iteration)),
        "peer": peer_side(peer, lambda part: peer.loss(part, 0.25), seen.train_data, SDE_BATCH, seen.learning_rate,
                          lambda: peer.calls),
    }
    for side in sides.values():  # the loss is one draw of the ELBO's noise: the mean of a few draws
        side.full_loss = averaged(side.full_loss, SDE_LOSS_DRAWS)
    return sides


def count_fused_steps(dynamics: nn.Module, counter: Counter) -> None:
    """Counts the steps of a fused solve too: it runs no forward hook, but looks the context rows up once per step
    start (``PosteriorLayers.rows``)."""
    declared = type(dynamics).posterior_layers

    def counted_layers() -> Any:
        layers = declared(dynamics)
        if layers is None:
            return None

        def rows(starts: torch.Tensor) -> Any:
            counter.calls += len(starts)
            return layers.rows(starts)

        return replace(layers, rows=rows)

    dynamics.posterior_layers = counted_layers


def averaged(loss: Callable[[], float], draws: int) -> Callable[[], float]:
    return lambda: sum(loss() for _ in range(draws)) / draws


# ---------------------------------------------------------------- comparison
def compare(family: str, size: str, sides: dict[str, Side], context: Context, iterations: int) -> list[Record]:
    """Evaluations per iteration, seconds per iteration (interleaved) and their ratio, then the loss after
    ``iterations`` more training iterations of each side."""
    prefix = f"{family}.{size}"
    records = []
    for side in sides.values():  # records of a family's own, taken at the initial weights (driven: solve errors)
        records += getattr(side, "extra", lambda prefix: [])(prefix)
    records += [Record(NAME, f"{prefix}.evaluations_per_iteration.{who}", side.evaluations(), "evaluations")
                for who, side in sides.items()]  # fmt: skip
    seconds = time_interleaved({who: side.iteration for who, side in sides.items()}, context)
    ratios = [ours / theirs for ours, theirs in zip(seconds["dynlearn"], seconds["peer"])]
    records += [Record(NAME, f"{prefix}.seconds_per_iteration.{who}", median(seconds[who]), "s") for who in sides]
    records += [
        Record(NAME, f"{prefix}.ratio_dynlearn_over_peer", median(ratios), "x"),
        Record(NAME, f"{prefix}.rounds", len(ratios), "rounds"),
    ]
    back_to_back, block_iterations = _back_to_back(prefix, sides, seconds, ratios, context)
    records += back_to_back
    if context.device.type != "cpu":  # the floors read CPU self time, which on a GPU is launch time, not kernel time
        return records + _trained(prefix, sides, len(ratios) + 2 + block_iterations, iterations)
    profiled = matrix_product_profile({who: side.iteration for who, side in sides.items()}, PROFILED)
    for who, figures in profiled.items():
        records += [
            Record(NAME, f"{prefix}.matrix_product_seconds_per_iteration.{who}", figures.product_seconds, "s"),
            Record(NAME, f"{prefix}.matrix_products_per_iteration.{who}", figures.products, "calls"),
            Record(NAME, f"{prefix}.activation_seconds_per_iteration.{who}", figures.activation_seconds, "s"),
        ]
    # The ratio dynlearn would reach if its iteration were its products (and activations) alone, the peer's as timed.
    ours, theirs = profiled["dynlearn"], median(seconds["peer"])
    records += [
        Record(NAME, f"{prefix}.ratio_floor_matrix_products_only", ours.product_seconds / theirs, "x"),
        Record(NAME, f"{prefix}.ratio_floor_products_and_activations",
               (ours.product_seconds + ours.activation_seconds) / theirs, "x"),
    ]  # fmt: skip
    # The evaluation count, the warm-up, the back-to-back blocks and the profiled rounds were iterations too.
    return records + _trained(prefix, sides, len(ratios) + 2 + block_iterations + PROFILED, iterations)


def _back_to_back(prefix: str, sides: dict[str, Side], seconds: dict[str, list[float]], ratios: list[float],
                  context: Context) -> tuple[list[Record], int]:
    """Seconds per iteration with each side run for a block of consecutive iterations, the blocks interleaved
    (A A A…, B B B…, A A A…), and their ratio; and the iterations that took.

    The rounds of :func:`compare` alternate single iterations, so each
    starts with the caches holding the other side's code and tensors: on a
    small model that costs both sides a large share of an iteration, which
    a fit, running its iterations back to back, does not pay. A block lasts
    at least ``BLOCK_SECONDS`` of the faster side. Where one iteration
    already does (most large rows), the rounds above are back to back and
    their figures are recorded again, without more timing.
    """
    fastest = min(median(values) for values in seconds.values())
    block = max(1, math.ceil(BLOCK_SECONDS / max(fastest, 1e-9)))
    if block == 1:
        per_iteration, block_ratios, done = seconds, ratios, 0
    else:
        def run(iteration: Callable[[], float]) -> Callable[[], None]:
            def blocked() -> None:
                for _ in range(block):
                    iteration()
            return blocked

        timed = time_interleaved({who: run(side.iteration) for who, side in sides.items()}, context)
        per_iteration = {who: [t / block for t in values] for who, values in timed.items()}
        block_ratios = [ours / theirs for ours, theirs in zip(per_iteration["dynlearn"], per_iteration["peer"])]
        done = (len(block_ratios) + 1) * block  # the timed blocks and time_interleaved's warm-up block
    records = [Record(NAME, f"{prefix}.seconds_per_iteration_back_to_back.{who}", median(per_iteration[who]), "s")
               for who in sides]  # fmt: skip
    return records + [
        Record(NAME, f"{prefix}.ratio_back_to_back", median(block_ratios), "x"),
        Record(NAME, f"{prefix}.iterations_per_block", block, "iterations"),
    ], done


def _trained(prefix: str, sides: dict[str, Side], done: int, iterations: int) -> list[Record]:
    """Each side's loss on all its training examples over ``iterations`` more iterations (``done`` before).

    ``final_loss`` is the mean of that loss at ``LOSS_CHECKPOINTS`` points spread evenly over the iterations
    (at their end when there are none): one snapshot of a noisy likelihood swings with the last steps, and the
    sides are compared on where their training has got to. ``final_loss_range`` is the spread of those points.
    """
    every = max(1, iterations // LOSS_CHECKPOINTS)
    losses: dict[str, list[float]] = {who: [] for who in sides}
    for step in range(1, iterations + 1):
        for side in sides.values():
            side.iteration()
        if step % every == 0 and step > iterations - every * LOSS_CHECKPOINTS:
            for who, side in sides.items():
                losses[who].append(side.full_loss())
    if not iterations:
        losses = {who: [side.full_loss()] for who, side in sides.items()}
    records = []
    for who, values in losses.items():
        records += [Record(NAME, f"{prefix}.final_loss.{who}", sum(values) / len(values), "training loss"),
                    Record(NAME, f"{prefix}.final_loss_range.{who}", max(values) - min(values), "training loss")]
    return records + [Record(NAME, f"{prefix}.iterations_trained", done + iterations, "iterations")]


# Iterations of each side profiled for the time inside matrix products.
PROFILED = 4
# Shortest block of consecutive iterations (of the faster side) in the back-to-back timing.
BLOCK_SECONDS = 0.02

FAMILIES: dict[str, Callable[[tuple[int, ...], int, torch.device], dict[str, Side]]] = {
    "neural_ode": neural_ode_pair,
    "hamiltonian": hamiltonian_pair,
    "lagrangian": lagrangian_pair,
    "neural_sde": neural_sde_pair,
    "latent_sde": latent_sde_pair,
    "neural_ode_irregular_torchode": torchode_pair,
    "neural_ode_driven_held": lambda hidden, batch, device: driven_pair(hidden, batch, "previous", device),
    "neural_ode_driven_linear": lambda hidden, batch, device: driven_pair(hidden, batch, "linear", device),
}


def peers(context: Context, sizes: dict[str, tuple[tuple[int, ...], int]] | None = None,
          iterations: int | None = None, families: list[str] | None = None) -> list[Record]:
    """Every family at every size; torchode's row is skipped, with the reason, when torchode is not installed."""
    sizes = SIZES if sizes is None else sizes
    iterations = ACCURACY_ITERATIONS[context.quick] if iterations is None else iterations
    records = [Record(NAME, "torch_threads", 1, "threads")]
    with torch_threads(1), torch.random.fork_rng(devices=[]):
        for family in families or list(FAMILIES):
            if family.endswith("torchode") and importlib.util.find_spec("torchode") is None:
                records.append(Record(NAME, f"{family}.skipped", 1, "torchode is not installed (pip install torchode)"))
                continue
            for size, (hidden, batch) in sizes.items():
                torch.manual_seed(0)
                records += compare(family, size, FAMILIES[family](hidden, batch, context.device), context, iterations)
    return records


def authors_rows(context: Context) -> list[Record]:
    """ODE-RNN and Latent ODE against the authors' code: ``authors_reference``'s timed comparison, relabelled."""
    import authors_reference as authors

    lib = authors.authors_library()
    if lib is None:
        return [Record(NAME, "authors.skipped", 1, authors.SKIPPED)]
    records = []
    for record in authors.authors_comparisons(lib, context, threads=1, curve=False):
        if ".speedup_dynlearn_over_" in record.metric:  # authors / dynlearn: turned into dynlearn / peer
            metric = record.metric.replace("speedup_dynlearn_over_", "ratio_dynlearn_over_")
            records.append(Record(NAME, f"authors.{metric}", 1.0 / record.value, "x"))
        elif "matrix_product" not in record.metric and "torch_operators" not in record.metric:
            records.append(replace(record, benchmark=NAME, metric=f"authors.{record.metric}"))
    return records


@register(
    NAME,
    "dynlearn against a plain hand-written training loop on the same backend, one torch thread for both, timed "
    "round by round in one process: NeuralODE (dopri5, rtol 1e-3, atol 1e-4, dynlearn's defaults; stabilize=False, "
    "16-row windows of make_damped_oscillator(64, 50)) vs torchdiffeq.odeint on the shared grid; HamiltonianNN "
    "(derivative regression on make_mass_spring(32, 50)) vs an autograd HNN step (create_graph=True); LagrangianNN "
    "(derivative regression on make_pendulum(32, 50)) vs the Euler-Lagrange solve on autograd (a reverse pass per "
    "Hessian row); NeuralSDE (Gaussian moments over the transitions of make_damped_oscillator(64, 50)) vs the same "
    "loss by hand (the drift's Jacobian from a reverse pass per feature); LatentSDE "
    "(128 series, 196 Euler steps, logqp) vs torchsde.sdeint; on an irregular panel, NeuralODE vs torchode's batched "
    "per-series steps (skipped without torchode); neural_ode_driven_held / _linear: NeuralODE driven by the known "
    "input of make_forced_oscillator(64, 50) (held, the default, or linear) vs odeint of a field that reads the input "
    "itself, told where it changes (jump_t at the samples, where dynlearn's segment clock ends its steps too); "
    "solve_error: max state error at the initial weights against a tight solve, of that loop (peer) and of one that "
    "steps across the samples (naive). small: hidden (32, 32), minibatch 16; large: (256, 256), 256 "
    "(LatentSDE: 128 at both). Same prepared minibatches, same initial weights, AdamW at the estimator's rate "
    "(dynlearn: fit's fused AdamW; peer: torch.optim.AdamW), gradient norm clipped at 1. ratio = dynlearn / peer seconds per iteration (median of per-round ratios; < 1: "
    "dynlearn faster), rounds of one iteration of each side in turn. ratio_back_to_back: the same from rounds of a "
    "block of consecutive iterations of each side (iterations_per_block, at least 20 ms of the faster side; 1, and "
    "the ratio above, where one iteration takes that long), as a fit runs them: a single iteration after the other "
    "side's starts with its caches holding the other side's code and data. evaluations_per_iteration: field evaluations of one forward pass (dynlearn's "
    "count_evaluations for ODE solves, calls of HamiltonianField.derivative_loss for the HNN, of "
    "LagrangianField.derivative_loss and of NeuralSDE's drift (with or without its Jacobian); forward hooks / the "
    "peer's own counter otherwise). final_loss: the loss on "
    "all training examples, the mean at 5 points spread over the last 100 iterations (10 with --quick; "
    "iterations_trained in all, the same for both sides); final_loss_range: their spread. "
    "matrix_product_seconds_per_iteration: self time of the matrix-product operators (torch profiler, 4 iterations "
    "of each side after the timed rounds); ratio_floor_matrix_products_only = dynlearn's matrix-product seconds / "
    "the peer's seconds per iteration: the ratio dynlearn would reach if its iteration were nothing but its matrix "
    "products; ratio_floor_products_and_activations adds the activation kernels and their derivatives' "
    "(activation_seconds_per_iteration). A floor above 0.5 says the 2x goal needs fewer or cheaper kernels, not "
    "less overhead; on a GPU (--device cuda) both sides are built there and the floors, which read CPU self time, are "
    "not recorded. authors.*: ODERNN / LatentODE against the authors' "
    "code (irregular_speed_authors' comparison; skipped without $DYNLEARN_AUTHORS_LATENT_ODE).",
)
def speed_vs_peers(context: Context) -> list[Record]:
    started = time.perf_counter()
    records = peers(context) + authors_rows(context)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    records.append(Record(NAME, "load_average_1min_at_end", load, "runnable processes"))
    return records + [Record(NAME, "wall_time", time.perf_counter() - started, "s")]


def main() -> None:
    """Family by family, each family's rows appended to ``--out``'s CSV as soon as it is done (``gpu_checks.sh``:
    a run cut short by its time limit keeps the families it finished)."""
    import argparse
    import csv
    from pathlib import Path

    parser = argparse.ArgumentParser(description="speed_vs_peers family by family, rows written as each finishes.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="2 s per comparison and 10 accuracy iterations")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--out", type=Path, required=True, help="CSV file the rows are appended to")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("speed_vs_peers: --device cuda, but torch sees no CUDA device; run with --device cpu.")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    context = Context(quick=args.quick, device=device, seconds_per_comparison=default_seconds(args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        started = time.perf_counter()
        records = peers(context, {size: SIZES[size] for size in args.sizes}, families=[family])
        with open(args.out, "a", newline="") as handle:
            writer = csv.writer(handle)
            if handle.tell() == 0:
                writer.writerow(["benchmark", "metric", "value", "unit", "device", "quick"])
            writer.writerows([r.benchmark, r.metric, r.value, r.unit, name, args.quick] for r in records)
        print(f"{family}: {len(records)} rows, {time.perf_counter() - started:.0f} s", flush=True)
        for record in records:
            if ".ratio_dynlearn_over_peer" in record.metric:
                print(f"  {record.metric} {record.value:.3f}", flush=True)


if __name__ == "__main__":
    main()
