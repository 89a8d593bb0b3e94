"""A latent SDE's whole fixed-step Euler–Maruyama solve as one autograd node, with its backward written out.

Recorded step by step, each Euler–Maruyama step of a latent SDE (Li et al.
2020) is dozens of autograd nodes: the prior drift network, the correction
network on the state and a context row, the diffusion networks, the KL
integrand and the step's adds, and a gather from the context table whose
backward fills a context-sized buffer of zeros every step. Over some two
hundred steps of a small network that bookkeeping, not the arithmetic, is
most of a training iteration.

When the SDE declares its functions as :class:`PosteriorLayers`, the
written-out solve runs every step without recording, keeping each layer's
output, and one backward pass walks the steps in reverse by hand: per step
the vector-Jacobian products of the two drift networks and the diffusion
with the state's adjoint (per layer, a product with its weight and the
activation's derivative from its output), and, after the last, each
weight's gradient as one product over all steps. The context table's share
of the correction's first layer is projected once per solve, and its
gradient gathered back with one ``index_add``.

The arithmetic is the step-by-step solve's, to rounding: the KL integrand
reads the correction itself rather than the posterior drift minus the
prior drift (the same number up to rounding), and the first layer of the
correction sums its three column blocks separately. The same increments
give the same states, KL increments and gradients to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ._rk_mlp import _FORWARD, OUTPUT_DERIVATIVES, MLPLayers, _activation_backward

# torchsde's floor on |g| when it divides by the diffusion (misc.stable_division), as in _euler.
_DIVISION_FLOOR = 1e-7


@dataclass(frozen=True)
class PosteriorLayers:
    """A latent SDE whose written-out Euler–Maruyama solve runs as one autograd node.

    An SDE passed to :func:`solve_sde` (fixed-step ``"euler"``, diagonal
    noise, no adjoint, default function names) with a method
    ``posterior_layers()`` returning a ``PosteriorLayers`` declares that its
    functions are exactly

    * prior drift ``h(t, z) = prior(z)``;
    * posterior drift ``f(t, z) = prior(z) + correction([z, table[row(t)], extra(t)])``;
    * diagonal diffusion ``g_i(t, z) = sigmoid(Σ_j σ(z_i w1[i, j] + b1[i, j]) w2[i, j] + b2[i]) + floor``.

    The solve then gives the same states, KL increments and gradients to
    rounding as calling ``f``, ``g`` and ``h`` step by step, in less time;
    ``posterior_layers()`` returning None keeps step-by-step calls. No
    forward hook of the networks runs on the fused path.

    Parameters
    ----------
    prior, correction : MLPLayers
        The two drift networks (without a box). The correction's first
        layer reads ``z``, then a row of ``table``, then ``extra``.
    table : Tensor
        ``(n_rows, width)`` context rows (gradients flow back to it).
    rows : callable
        ``rows(t)`` for a step starting at ``t``: ``(index, extra)``, the
        table row of each batch row ``(batch,)`` (long) and the extra
        columns ``(batch, n_extra)`` (not differentiated).
    diffusion : (Tensor, Tensor, Tensor, Tensor)
        ``(w1, b1, w2, b2)``: ``(d, hidden)`` three times and ``(d,)``.
    activation : str
        The diffusion's activation, among :data:`OUTPUT_DERIVATIVES`.
    floor : float
        Added to the sigmoid.
    """

    prior: MLPLayers
    correction: MLPLayers
    table: torch.Tensor
    rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    diffusion: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    activation: str
    floor: float

    def __post_init__(self) -> None:
        if self.activation not in OUTPUT_DERIVATIVES:
            raise ValueError(f"activation: expected one of {list(OUTPUT_DERIVATIVES)}; got {self.activation!r}.")
        if self.prior.box is not None or self.correction.box is not None:
            raise ValueError("prior, correction: expected networks without a box contraction; got a box.")

    @staticmethod
    def declared_by(sde: object) -> PosteriorLayers | None:
        """What ``sde.posterior_layers()`` returns, or None for an SDE without that method."""
        method = getattr(sde, "posterior_layers", None)
        return method() if callable(method) else None

    def parameters(self) -> tuple[torch.Tensor, ...]:
        """The prior's, then the correction's layer parameters, then the diffusion's."""
        return (*self.prior.parameters(), *self.correction.parameters(), *self.diffusion)


@dataclass(frozen=True)
class _Plan:
    """What the solve needs besides tensors with gradients."""

    steps: tuple[torch.Tensor, ...]
    prior_activations: tuple[str, ...]
    correction_activations: tuple[str, ...]
    activation: str
    floor: float
    logqp: bool


def _unpack(plan: _Plan, params: tuple[torch.Tensor, ...]):
    n_prior = 2 * (len(plan.prior_activations) + 1)
    n_correction = 2 * (len(plan.correction_activations) + 1)
    prior, correction = params[:n_prior], params[n_prior : n_prior + n_correction]
    return prior[0::2], prior[1::2], correction[0::2], correction[1::2], params[n_prior + n_correction :]


def _run(plan: _Plan, y0, table, index, extra, dw, params):
    """The solve in plain tensor operations: states ``(n + 1, batch, d)``, KL ``(n + 1, batch, 1)`` (or None),
    and what the backward pass reads."""
    prior_w, prior_b, corr_w, corr_b, (w1, b1, w2, b2) = _unpack(plan, params)
    d, width = y0.shape[1], table.shape[1]
    first = corr_w[0]
    projected = table @ first[:, d : d + width].t()  # the context's share of the first layer, once per row
    base = projected[index] + extra @ first[:, d + width :].t() + corr_b[0]  # (n, batch, hidden)
    weight_z = first[:, :d]
    act, floor, logqp = _FORWARD[plan.activation], plan.floor, plan.logqp
    y = y0
    kl = y0.new_zeros(y0.shape[0], 1) if logqp else None
    states, kls = [y0], [kl]
    prior_hidden: list[list[torch.Tensor]] = [[] for _ in plan.prior_activations]
    corr_hidden: list[list[torch.Tensor]] = [[] for _ in plan.correction_activations]
    hiddens, sigmoids, ratios = [], [], []
    for k, step in enumerate(plan.steps):
        x = y
        for j, (weight, bias, name) in enumerate(zip(prior_w, prior_b, plan.prior_activations)):
            x = _FORWARD[name](torch.addmm(bias, x, weight.t()))
            prior_hidden[j].append(x)
        p = torch.addmm(prior_b[-1], x, prior_w[-1].t())
        x = torch.addmm(base[k], y, weight_z.t())
        for j, name in enumerate(plan.correction_activations):
            x = _FORWARD[name](x)
            corr_hidden[j].append(x)
            x = torch.addmm(corr_b[j + 1], x, corr_w[j + 1].t())
        c = x
        hidden = act(y.unsqueeze(-1) * w1 + b1)
        sigmoid = torch.sigmoid((hidden * w2).sum(-1) + b2)
        g = sigmoid + floor
        hiddens.append(hidden)
        sigmoids.append(sigmoid)
        if logqp:
            u = c / torch.where(g.detach().abs() > _DIVISION_FLOOR, g, g.sign() * _DIVISION_FLOOR)
            ratios.append(u)
            kl = kl + 0.5 * (u**2).sum(dim=1, keepdim=True) * step
            kls.append(kl)
        y = y + (p + c) * step + g * dw[k]
        states.append(y)
    saved = (
        [torch.stack(h) for h in prior_hidden]
        + [torch.stack(h) for h in corr_hidden]
        + [torch.stack(hiddens), torch.stack(sigmoids)]
        + ([torch.stack(ratios)] if logqp else [])
    )
    return torch.stack(states), (torch.stack(kls) if logqp else None), saved


class EulerPosterior(torch.autograd.Function):
    """The whole written-out solve of a :class:`PosteriorLayers` SDE: ``(states, kl)`` at every step's end.

    Arguments: ``(plan, index, extra, y0, table, dw, *parameters)``. A
    recorded backward pass (``create_graph=True``) solves again through
    autograd and differentiates that, so higher derivatives are exact too,
    at autograd's cost.
    """

    @staticmethod
    def forward(ctx, plan, index, extra, y0, table, dw, *params):  # noqa: D102
        ctx.set_materialize_grads(False)
        states, kls, saved = _run(plan, y0, table, index, extra, dw, params)
        ctx.plan = plan
        ctx.n_params = len(params)
        ctx.save_for_backward(index, extra, y0, table, dw, *params, states, *saved)
        return (states, kls) if plan.logqp else (states, states.new_zeros(0))

    @staticmethod
    def backward(ctx, grad_states, grad_kls):  # noqa: D102
        if torch.is_grad_enabled():
            return (None, None, None, *_recorded_backward(ctx, grad_states, grad_kls))
        return (None, None, None, *_backward(ctx, grad_states, grad_kls if ctx.plan.logqp else None))


def _backward(ctx, grad_states, grad_kls):
    plan = ctx.plan
    saved = ctx.saved_tensors
    index, extra, y0, table, dw = saved[:5]
    params = saved[5 : 5 + ctx.n_params]
    states = saved[5 + ctx.n_params]
    rest = saved[6 + ctx.n_params :]
    n_prior, n_corr = len(plan.prior_activations), len(plan.correction_activations)
    prior_hidden, corr_hidden = rest[:n_prior], rest[n_prior : n_prior + n_corr]
    hiddens, sigmoids = rest[n_prior + n_corr], rest[n_prior + n_corr + 1]
    ratios = rest[n_prior + n_corr + 2] if plan.logqp else None
    prior_w, prior_b, corr_w, corr_b, (w1, b1, w2, b2) = _unpack(plan, params)
    d, width = y0.shape[1], table.shape[1]
    weight_z = corr_w[0][:, :d]
    n = len(plan.steps)
    floor = plan.floor

    a_y = grad_states[n] if grad_states is not None else torch.zeros_like(y0)
    a_kl = grad_kls[n] if grad_kls is not None else None
    prior_deltas: list[list[torch.Tensor]] = [[] for _ in prior_w]
    corr_deltas: list[list[torch.Tensor]] = [[] for _ in corr_w]
    sigmoid_grads, pre_grads = [], []
    for k in reversed(range(n)):
        step = plan.steps[k]
        a_p = a_y * step
        a_c, a_g = a_p, a_y * dw[k]
        if a_kl is not None:
            g = sigmoids[k] + floor
            above = g.abs() > _DIVISION_FLOOR
            divisor = torch.where(above, g, g.sign() * _DIVISION_FLOOR)
            u = ratios[k]
            scaled = (a_kl * step) * u  # the adjoint of u: a_kl · step · u
            a_c = a_c + scaled / divisor
            a_g = a_g - torch.where(above, scaled * u / divisor, 0.0)
        grad_z = _mlp_backward(a_p, prior_w, plan.prior_activations, [h[k] for h in prior_hidden], prior_deltas,
                               prior_w[0])  # fmt: skip
        grad_z = grad_z + _mlp_backward(a_c, corr_w, plan.correction_activations, [h[k] for h in corr_hidden],
                                        corr_deltas, weight_z)  # fmt: skip
        a_s = torch.ops.aten.sigmoid_backward(a_g, sigmoids[k])
        a_pre = _activation_backward(plan.activation, a_s.unsqueeze(-1) * w2, hiddens[k])
        sigmoid_grads.append(a_s)
        pre_grads.append(a_pre)
        a_y = a_y + grad_z + (a_pre * w1).sum(-1)
        if grad_states is not None:
            a_y = a_y + grad_states[k]
        if grad_kls is not None:
            a_kl = a_kl + grad_kls[k] if a_kl is not None else grad_kls[k]

    inputs = states[:n].reshape(n * y0.shape[0], d)
    grads = []
    for deltas, hidden, first_input in ((prior_deltas, prior_hidden, inputs), (corr_deltas, corr_hidden, None)):
        for j, layer in enumerate(deltas):
            delta = torch.cat(layer[::-1])  # step order
            if j == 0 and first_input is None:  # the correction's first layer: state, context row, extra columns
                scattered = delta.new_zeros(table.shape[0], delta.shape[1]).index_add_(0, index.reshape(-1), delta)
                projection = corr_w[0][:, d : d + width]
                grad_table = scattered @ projection
                weight = torch.cat([delta.t() @ inputs, scattered.t() @ table,
                                    delta.t() @ extra.reshape(delta.shape[0], -1)], dim=1)  # fmt: skip
            else:
                source = first_input if j == 0 else hidden[j - 1].reshape(delta.shape[0], -1)
                weight = delta.t() @ source
            grads += [weight, delta.sum(0)]
    a_s = torch.stack(sigmoid_grads[::-1])
    a_pre = torch.stack(pre_grads[::-1])
    grads += [
        (a_pre * states[:n].unsqueeze(-1)).sum((0, 1)),
        a_pre.sum((0, 1)),
        (a_s.unsqueeze(-1) * hiddens).sum((0, 1)),
        a_s.sum((0, 1)),
    ]
    return (a_y, grad_table, None, *grads)


def _mlp_backward(grad, weights, activations, hidden, deltas, first_weight):
    """The adjoint of an MLP's input (through ``first_weight``'s columns); each layer's output adjoint noted."""
    for j in reversed(range(len(weights))):
        deltas[j].append(grad)
        grad = grad @ (weights[j] if j > 0 else first_weight)
        if j > 0:
            grad = _activation_backward(activations[j - 1], grad, hidden[j - 1])
    return grad


def _recorded_backward(ctx, grad_states, grad_kls) -> tuple:
    """The solve's vector-Jacobian product as a recorded graph: the steps again, through autograd."""
    saved = ctx.saved_tensors
    index, extra = saved[0], saved[1]
    inputs = tuple(x.view_as(x) for x in saved[2 : 5 + ctx.n_params])
    y0, table, dw, params = inputs[0], inputs[1], inputs[2], inputs[3:]
    states, kls, _ = _run(ctx.plan, y0, table, index, extra, dw, params)
    pairs = [(out, grad) for out, grad in ((states, grad_states), (kls, grad_kls)) if grad is not None and out is not None]
    wanted = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not pairs or not wanted:
        return (None,) * len(inputs)
    found = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)  # fmt: skip
    grads: list[Any] = [None] * len(inputs)
    for i, grad in zip(wanted, found):
        grads[i] = grad
    return tuple(grads)


def solve_posterior(layers: PosteriorLayers, y0: torch.Tensor, times: tuple[torch.Tensor, ...],
                    steps: tuple[torch.Tensor, ...], dw: torch.Tensor, logqp: bool):
    """States ``(n + 1, batch, d)`` and KL ``(n + 1, batch, 1)`` (None without ``logqp``) at every step's end."""
    with torch.no_grad():
        found = [layers.rows(t) for t in times]
        index = torch.stack([i for i, _ in found])
        extra = torch.stack([e for _, e in found]).to(y0.dtype)
    plan = _Plan(tuple(steps), layers.prior.activations, layers.correction.activations, layers.activation,
                 float(layers.floor), logqp)  # fmt: skip
    states, kls = EulerPosterior.apply(plan, index, extra, y0, layers.table, dw, *layers.parameters())
    return states, (kls if logqp else None)
