"""NeuralSDE's transition likelihood with its parameter gradient written out, as one autograd node.

``NeuralSDE`` fits by carrying a Gaussian through Euler–Maruyama sub-steps
of each transition, ``m ← m + h f(m)``, ``P ← A P Aᵀ + h G`` with
``A = I + h ∂f/∂x(m)`` and ``G = diag(g(m)²)`` (diagonal noise) or
``g gᵀ`` (scalar noise), then scoring the observed entries of the
transition's end under ``N(m, P)``. Recorded operation by operation, a
small network's training step is mostly autograd's bookkeeping: the
drift's Jacobian alone is a forward pass of tangents whose reverse is a
second one. :class:`_MomentLoss` is the whole loss as one node: its forward
runs the sub-steps in plain tensor operations, the loss, and in the same
pass the loss's gradient with respect to every weight of both networks;
its backward scales those by the incoming gradient.

The reverse pass, per sub-step from the last: with ``m̄`` and ``P̄`` the
gradients on the sub-step's end (``P̄`` symmetric), ``f̄ = h m̄``,
``Ā = 2 P̄ A P`` so ``J̄ = h Ā``, ``P̄ ← Aᵀ P̄ A``; ``ḡ = 2 h g ⊙ diag(P̄)``
(diagonal) or ``2 h P̄ g`` (scalar); then ``m̄`` gains what the drift
network sends back from ``(f̄, J̄)`` and the diffusion network from ``ḡ``.
The Jacobian is the drift's forward tangents ``ż_0 = W_0[:, j]``,
``ż_{k+1} = (σ'(z_k) ⊙ ż_k) W_{k+1}ᵀ``, so its reverse carries a tangent
adjoint beside the ordinary one and hands ``Σ_j ż̄ ⊙ ż ⊙ σ''`` to ``z``.
The likelihood's gradients are those of a Gaussian: with the marginal
covariance ``S`` and residual ``r``, ``u = S⁻¹ r``, ``r̄ = u / n`` and
``S̄ = (S⁻¹ - u uᵀ) / 2n``.

A backward pass that must itself be differentiable (``create_graph=True``)
differentiates the loss recomputed through recorded operations instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..solvers._rk_mlp import untracked, weight_gradient
from ._energy import _written_out_layers
from ._energy_loss import (
    _curvature,
    activation_slopes,
    forward_tangents,
    hidden_layers,
    loss_node_backward,
    times_derivative,
)

_SOFTPLUS_BACKWARD = torch.ops.aten.softplus_backward.default


def mlp_tensors(linears: Sequence[nn.Linear]) -> list[torch.Tensor]:
    """Every layer's weight and bias in turn."""
    return [t for layer in linears for t in (layer.weight, layer.bias)]


class _Network:
    """One sub-step's pass through a network of Linear layers between hidden activations, kept for its reverse."""

    def __init__(self, activations: Sequence[nn.Module], tensors: Sequence[torch.Tensor], x: torch.Tensor,
                 n_columns: int = 0):
        self.activations, self.x = activations, x
        self.weights, biases = tensors[0::2], tensors[1::2]
        self.zs, self.hs = hidden_layers(activations, self.weights[:-1], biases[:-1], x)
        self.out = F.linear(self.hs[-1], self.weights[-1], biases[-1])
        if n_columns:  # the tangents along the first n_columns inputs, axis-major (columns, rows, width)
            rows = x.shape[0]
            self.slopes = activation_slopes(activations, self.zs, self.hs)
            self.h_dots: list[torch.Tensor] = []  # (columns * rows, width) each
            self.z_dots = forward_tangents(self.weights, self.slopes, slice(None, n_columns), rows, self.h_dots)
            self.jacobian = (self.h_dots[-1].mm(self.weights[-1].t())
                             .view(n_columns, rows, -1).permute(1, 2, 0))  # (rows, out, columns)

    def reverse(self, out_bar: torch.Tensor, jacobian_bar: torch.Tensor | None, grads: _Gradients) -> torch.Tensor:
        """The input's gradient (rows, in), given the output's and (with tangents) the Jacobian's (rows, out,
        columns); the weights' and biases' shares go to ``grads``."""
        pairs, bias_bars = grads.pairs, grads.bias_bars
        n, weights = len(self.activations), self.weights
        rows = self.x.shape[0]
        pairs[n].append((out_bar, self.hs[-1]))
        bias_bars[n].append(out_bar)
        h_bar = out_bar.mm(weights[n])
        tangent = jacobian_bar is not None
        if tangent:
            columns = jacobian_bar.shape[-1]
            t_bar = jacobian_bar.permute(2, 0, 1).reshape(-1, jacobian_bar.shape[1])  # (columns * rows, out)
            pairs[n].append((t_bar, self.h_dots[-1]))
            h_dot_bar = t_bar.mm(weights[n]).view(columns, rows, -1)
        for k in range(n - 1, -1, -1):
            activation, z, h = self.activations[k], self.zs[k], self.hs[k]
            z_bar = times_derivative(activation, h_bar, z, h)
            if tangent:
                q = (h_dot_bar * self.z_dots[k]).sum(0)  # Σ_j ḣ̄_j ⊙ ż_j, (rows, width)
                curvature = _curvature(activation, q, q * self.slopes[k], z, h, self.slopes[k])
                if curvature is not None:  # z_bar is the kernel's fresh output
                    z_bar = z_bar.add_(curvature[0], alpha=curvature[1])
                z_dot_bar = h_dot_bar * self.slopes[k]  # (columns, rows, width)
            below = self.hs[k - 1] if k else self.x
            pairs[k].append((z_bar, below))
            bias_bars[k].append(z_bar)
            if tangent and k:
                flat = z_dot_bar.reshape(-1, z_dot_bar.shape[-1])
                pairs[k].append((flat, self.h_dots[k - 1]))
                h_dot_bar = flat.mm(weights[k]).view(columns, rows, -1)
            elif tangent:
                grads.first_tangent.append(z_dot_bar.sum(1))  # ż_0 = W_0[:, j] on every row
            h_bar = z_bar.mm(weights[k])
        return h_bar


class _Gradients:
    """The weight and bias gradients of one network, gathered over the sub-steps and summed at the end: each layer's
    (output adjoint, input) pairs and bias adjoints, and the first layer's weight gradient through its tangents,
    ``Σ_rows ż̄_0`` (columns, width)."""

    def __init__(self, n_layers: int):
        self.pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(n_layers)]
        self.bias_bars: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        self.first_tangent: list[torch.Tensor] = []

    def result(self) -> list[torch.Tensor]:
        found = []
        for k, (pairs, bars) in enumerate(zip(self.pairs, self.bias_bars)):  # every sub-step reaches every layer
            weight = weight_gradient([g for g, _ in pairs], [x for _, x in pairs])
            if k == 0 and self.first_tangent:
                columns = self.first_tangent[0].shape[0]
                tangent = self.first_tangent[0] if len(self.first_tangent) == 1 else torch.stack(self.first_tangent).sum(0)
                weight[:, :columns] += tangent.t()
            bias = functools.reduce(torch.Tensor.add_, [bar.sum(0) for bar in bars])  # a cat would copy them
            found += [weight, bias]
        return found


class _MomentLoss(torch.autograd.Function):
    """:func:`moment_loss_node`'s loss, with every weight's gradient formed in its forward pass."""

    @staticmethod
    def forward(ctx, plans, setup, recorded, columns, x0, gap, values, mask, *tensors):
        ctx.recorded, ctx.tensors = recorded, tensors
        (drift_acts, n_drift), (diffusion_acts, _) = plans
        n_steps, scalar_noise, floor = setup
        drift_tensors, diffusion_tensors = tensors[:n_drift], tensors[n_drift:]
        with untracked():
            loss, gradients = _forward_and_gradients(drift_acts, diffusion_acts, drift_tensors, diffusion_tensors,
                                                     n_steps, scalar_noise, floor, columns, x0, gap, values, mask)
            ctx.gradients = gradients
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        return loss_node_backward(ctx, grad_loss, 8)


def _forward_and_gradients(drift_acts, diffusion_acts, drift_tensors, diffusion_tensors, n_steps, scalar_noise,
                           floor, columns, x0, gap, values, mask):
    """The loss and the gradients of both networks' tensors (drift's, then diffusion's), in plain operations."""
    d = x0.shape[1]
    h = (gap / n_steps)[:, None]
    hh = h[..., None]
    eye = torch.eye(d, dtype=x0.dtype, device=x0.device)
    mean, cov = x0, None
    steps = []
    for k in range(n_steps):
        x = mean if columns is None else torch.cat([mean, columns[k]], dim=-1)
        drift = _Network(drift_acts, drift_tensors, x, d if cov is not None else 0)
        diffusion = _Network(diffusion_acts, diffusion_tensors, x)
        g = F.softplus(diffusion.out) + floor
        noise = g[:, :, None] * g[:, None, :] if scalar_noise else torch.diag_embed(g * g)
        noise = hh * noise
        a = None
        if cov is None:
            start, cov = None, noise
        else:
            start, a = cov, eye + hh * drift.jacobian
            cov = a @ cov @ a.transpose(1, 2) + noise
        steps.append((drift, diffusion, g, a, start))
        mean = mean + h * drift.out

    # The observed entries' marginal, scored as _gaussian_nll_per_entry does.
    residual = values - mean
    full = bool(mask.all())
    if full:
        marginal, observed = cov, mask.numel()
        entries = float(max(observed, 1))
    else:
        m = mask.to(cov.dtype)
        both = m[:, :, None] * m[:, None, :]
        marginal = cov * both + torch.diag_embed(1.0 - m)
        residual = residual * m
        observed = m.sum()
        entries = observed.clamp_min(1)
    chol, info = torch.linalg.cholesky_ex(marginal)
    if bool(info.any()):  # not positive definite: NaN, which the training loop turns into an error
        nan = cov.new_tensor(float("nan"))
        return nan, [torch.zeros_like(t) for t in (*drift_tensors, *diffusion_tensors)]
    z = torch.linalg.solve_triangular(chol, residual.unsqueeze(-1), upper=False)
    half_log_det = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum()
    loss = ((z * z).sum() * 0.5 + half_log_det + observed * (0.5 * math.log(2 * math.pi))) / entries

    # The reverse pass.
    # S⁻¹ - u uᵀ = L⁻ᵀ (I - z zᵀ) L⁻¹ with u = S⁻¹ r = L⁻ᵀ z: taken through L, as autograd's Cholesky backward
    # is, it keeps its digits where S is ill-conditioned (the two terms cancel).
    upper = chol.transpose(1, 2)
    both_solved = torch.linalg.solve_triangular(upper, torch.cat([eye - z * z.transpose(1, 2), z], dim=2), upper=True)
    left, u = both_solved[:, :, :d], both_solved[:, :, d]  # L⁻ᵀ (I - z zᵀ), and u
    cov_bar = torch.linalg.solve_triangular(upper, left.transpose(1, 2), upper=True).transpose(1, 2)
    cov_bar = cov_bar * (0.5 / entries)
    mean_bar = u / -entries
    if not full:
        cov_bar = cov_bar * both
        mean_bar = mean_bar * m
    drift_grads, diffusion_grads = _Gradients(len(drift_acts) + 1), _Gradients(len(diffusion_acts) + 1)
    two_h = h + h  # a Python number as an operand costs a float32 operation a cast of its own
    for drift, diffusion, g, a, start in reversed(steps):
        if scalar_noise:
            g_bar = (cov_bar @ g.unsqueeze(-1)).squeeze(-1).mul_(two_h)
        else:
            g_bar = torch.diagonal(cov_bar, dim1=1, dim2=2).mul(g).mul_(two_h)
        jacobian_bar = None
        if start is not None:
            jacobian_bar = (cov_bar @ a @ start).mul_(two_h[..., None])
            cov_bar = a.transpose(1, 2) @ cov_bar @ a
        x_bar = drift.reverse(h * mean_bar, jacobian_bar, drift_grads)
        out_bar = _SOFTPLUS_BACKWARD(g_bar, diffusion.out, 1, 20)
        x_bar = x_bar + diffusion.reverse(out_bar, None, diffusion_grads)
        mean_bar = mean_bar + x_bar[:, :d]
    return loss, drift_grads.result() + diffusion_grads.result()


def moment_loss_node(drift_net: nn.Module, diffusion_net: nn.Module, n_steps: int, scalar_noise: bool, floor: float,
                     columns: Sequence[torch.Tensor] | None, x0: torch.Tensor, gap: torch.Tensor, values: torch.Tensor,
                     mask: torch.Tensor, recorded: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """The transition likelihood of ``_SDEModel.moments`` and ``_gaussian_nll_per_entry`` as one node, or None.

    The networks read ``[m, columns[k]]`` at sub-step ``k`` (the time and
    known inputs, (batch, extra) each; just ``m`` when ``columns`` is None).
    None where the networks are not Linear layers between activations of a
    written-out derivative with at least one hidden layer each
    (``_written_out_layers``), or none of their weights is trained: the
    caller then records the loss. ``recorded`` recomputes the loss through
    recorded operations, for a backward pass with ``create_graph=True``.
    """
    plans = [_written_out_layers(net, scalar=False) for net in (drift_net, diffusion_net)]
    if any(plan is None or not plan[1] for plan in plans):
        return None
    if not any(layer.weight.requires_grad for plan in plans for layer in plan[0]):
        return None
    (drift_linears, drift_acts), (diffusion_linears, diffusion_acts) = plans
    drift_tensors, diffusion_tensors = mlp_tensors(drift_linears), mlp_tensors(diffusion_linears)
    layout = ((list(drift_acts), len(drift_tensors)), (list(diffusion_acts), len(diffusion_tensors)))
    return _MomentLoss.apply(layout, (n_steps, scalar_noise, floor), recorded, columns, x0, gap, values, mask,
                             *drift_tensors, *diffusion_tensors)
