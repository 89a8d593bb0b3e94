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

Known inputs ``u`` (a driven model) are data read at every step start:
their share of each network's first layer (and of the diffusion's
pre-activation) is one product over all steps, added to the biases, and
their columns of the weight gradients one product at the end.

The arithmetic is the step-by-step solve's, to rounding: the KL integrand
reads the correction itself rather than the posterior drift minus the
prior drift (the same number up to rounding), and the first layer of the
correction sums its three column blocks separately. The same increments
give the same states, KL increments and gradients to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ._rk_mlp import (
    _ACCUMULATE_ABOVE,
    _FORWARD,
    OUTPUT_DERIVATIVES,
    SIGMOID_GRAD,
    MLPLayers,
    _activation_backward,
    input_gradient_factor,
    transposed_sum,
    untracked,
    weight_gradient,
)

# torchsde's floor on |g| when it divides by the diffusion (misc.stable_division).
_DIVISION_FLOOR = 1e-7


def stable_divisor(g: torch.Tensor) -> torch.Tensor:
    """``g`` with entries nearer zero than torchsde's floor moved out to it, keeping their sign (torchsde's
    ``full_like(g, floor) * sign(g)``: the same numbers, no gradient through the floor)."""
    return torch.where(g.detach().abs() > _DIVISION_FLOOR, g, g.sign() * _DIVISION_FLOOR)


@dataclass(frozen=True)
class PosteriorLayers:
    """A latent SDE whose written-out Euler–Maruyama solve runs as one autograd node.

    An SDE passed to :func:`solve_sde` (fixed-step ``"euler"``, diagonal
    noise, no adjoint, default function names) with a method
    ``posterior_layers()`` returning a ``PosteriorLayers`` declares that its
    functions are exactly

    * prior drift ``h(t, z) = prior(z)``;
    * posterior drift ``f(t, z) = prior(z) + correction([z, table[row(t)], extra(t)])``;
    * diagonal diffusion ``g_i(t, z) = sigmoid(Σ_j σ(z_i w1[i, j] + b1[i, j]) w2[i, j] + b2[i]) + floor``;

    or, with ``inputs`` (a model driven by known inputs ``u(t)``), exactly

    * ``h(t, z) = prior([z, u(t)])``;
    * ``f(t, z) = prior([z, u(t)]) + correction([z, u(t), table[row(t)], extra(t)])``;
    * ``g_i(t, z) = sigmoid(Σ_j σ(z_i w1[i, j] + b1[i, j] + Σ_n u_n(t) wu[n, i, j]) w2[i, j] + b2[i]) + floor``
      (without ``input_diffusion``, the diffusion does not read ``u``).

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
        ``rows(starts)`` for steps starting at ``starts`` ``(n_steps,)``:
        ``(index, extra)``, the table row of each batch row at each step
        ``(n_steps, batch)`` (long) and the extra columns ``(n_steps,
        batch, n_extra)`` (not differentiated).
    diffusion : (Tensor, Tensor, Tensor, Tensor)
        ``(w1, b1, w2, b2)``: ``(d, hidden)`` three times and ``(d,)``.
    activation : str
        The diffusion's activation: "tanh", "relu", "softplus", "elu" or "sigmoid".
    floor : float
        Added to the sigmoid.
    inputs : callable, optional
        ``inputs(starts)``: the known inputs at each step start, ``(n_steps,
        batch, n_inputs)`` (not differentiated: an SDE whose inputs need a
        gradient declares no layers). They follow ``z`` in the first layer of
        both drift networks.
    input_diffusion : Tensor, optional
        ``wu``, ``(n_inputs, d, hidden)``: the inputs' share of the
        diffusion's pre-activation (with ``inputs`` only).

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import MLPLayers, PosteriorLayers
    >>> def net(n_in):
    ...     return torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> def rows(starts):  # every batch row reads table row 0, no extra columns
    ...     return torch.zeros(len(starts), 4, dtype=torch.long), torch.zeros(len(starts), 4, 0)
    >>> diffusion = (torch.ones(2, 4), torch.zeros(2, 4), torch.ones(2, 4), torch.zeros(2))
    >>> layers = PosteriorLayers(MLPLayers.of(net(2)), MLPLayers.of(net(2 + 3)), torch.randn(10, 3), rows, diffusion,
    ...                          "tanh", 1e-3)
    >>> len(layers.parameters())
    12
    """

    prior: MLPLayers
    correction: MLPLayers
    table: torch.Tensor
    rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    diffusion: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    activation: str
    floor: float
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None
    input_diffusion: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.activation not in OUTPUT_DERIVATIVES:
            raise ValueError(f"activation: expected one of {list(OUTPUT_DERIVATIVES)}; got {self.activation!r}.")
        if self.prior.box is not None or self.correction.box is not None:
            raise ValueError("prior, correction: expected networks without a box contraction; got a box.")
        if self.input_diffusion is not None and self.inputs is None:
            raise ValueError("input_diffusion: expected None without inputs; got a tensor. Pass inputs too.")

    @staticmethod
    def declared_by(sde: object) -> PosteriorLayers | None:
        """What ``sde.posterior_layers()`` returns, or None for an SDE without that method."""
        method = getattr(sde, "posterior_layers", None)
        return method() if callable(method) else None

    def rescaled(self) -> PosteriorLayers:
        """The same functions with every tanh layer run as a sigmoid, ``tanh(z) = 2 sigmoid(2z) - 1``: the
        drift networks' by :meth:`MLPLayers.rescaled`, the diffusion's folded into ``w1``, ``b1`` and ``wu``
        (doubled) and into ``w2``, ``b2`` (``Σ_j (2 s_j - 1) w2_j + b2 = Σ_j 2 w2_j s_j + b2 - Σ_j w2_j``),
        built with autograd from these parameters so that gradients reach them. On CPU a sigmoid costs
        about a tenth of a tanh; the states differ from the tanh functions' by rounding."""
        diffusion, wu, activation = self.diffusion, self.input_diffusion, self.activation
        if activation == "tanh":
            w1, b1, w2, b2 = diffusion
            diffusion, activation = (2 * w1, 2 * b1, 2 * w2, b2 - w2.sum(-1)), "sigmoid"
            wu = None if wu is None else 2 * wu
        return replace(self, prior=self.prior.rescaled(), correction=self.correction.rescaled(), diffusion=diffusion,
                       activation=activation, input_diffusion=wu)  # fmt: skip

    def parameters(self) -> tuple[torch.Tensor, ...]:
        """The prior's, then the correction's layer parameters, then the diffusion's (``wu`` last)."""
        wu = () if self.input_diffusion is None else (self.input_diffusion,)
        return (*self.prior.parameters(), *self.correction.parameters(), *self.diffusion, *wu)


@dataclass(frozen=True)
class _Plan:
    """What the solve needs besides tensors with gradients."""

    steps: tuple[torch.Tensor, ...]
    prior_activations: tuple[str, ...]
    correction_activations: tuple[str, ...]
    activation: str
    floor: float
    logqp: bool
    n_inputs: int = 0
    input_diffusion: bool = False


def _unpack(plan: _Plan, params: tuple[torch.Tensor, ...]):
    n_prior = 2 * (len(plan.prior_activations) + 1)
    n_correction = 2 * (len(plan.correction_activations) + 1)
    prior, correction = params[:n_prior], params[n_prior : n_prior + n_correction]
    diffusion = params[n_prior + n_correction :]
    return prior[0::2], prior[1::2], correction[0::2], correction[1::2], diffusion[:4], (
        diffusion[4] if plan.input_diffusion else None)


def _input_shares(plan: _Plan, u, prior_w, prior_b, corr_w, wu, d: int):
    """The inputs' share of the prior's first layer plus its bias ``(n, batch, hidden)`` (None when the prior
    reads no inputs), of the correction's first layer ``(n, batch, hidden)`` and of the diffusion's
    pre-activation ``(n, batch, d, hidden)`` (or None)."""
    m = plan.n_inputs
    if not m:
        return None, None, None
    prior = u @ prior_w[0][:, d : d + m].t() + prior_b[0]
    correction = u @ corr_w[0][:, d : d + m].t()
    diffusion = None if wu is None else (u @ wu.reshape(m, -1)).reshape(*u.shape[:2], *wu.shape[1:])
    return prior, correction, diffusion


def _run(plan: _Plan, y0, table, index, extra, u, dw, params, record: bool = False):
    """The solve in plain tensor operations: states ``(n + 1, batch, d)``, KL ``(n + 1, batch, 1)`` (or None),
    and what the backward pass reads. Unrecorded, each step writes into buffers over all steps; recorded
    (``record``, for a second derivative), the steps are stacked at the end."""
    prior_w, prior_b, corr_w, corr_b, (w1, b1, w2, b2), wu = _unpack(plan, params)
    (batch, d), width, n, m = y0.shape, table.shape[1], len(plan.steps), plan.n_inputs
    prior_base, corr_inputs, diffusion_inputs = _input_shares(plan, u, prior_w, prior_b, corr_w, wu, d)
    prior_z = prior_w[0][:, :d]
    first = corr_w[0]
    projected = table @ first[:, d + m : d + m + width].t()  # the context's share of the first layer, once per row
    # (n, batch, hidden), summed in place: each new tensor of this size is fresh memory, slow to touch first.
    base = projected[index].add_(extra @ first[:, d + m + width :].t()).add_(corr_b[0])
    if corr_inputs is not None:
        base = base.add_(corr_inputs)
    weight_z = first[:, :d]
    floor, logqp = plan.floor, plan.logqp
    new = (lambda *shape: None) if record else (lambda *shape: y0.new_empty(shape))
    states = _Buffer(new(n + 1, batch, d), y0)
    kls = _Buffer(new(n + 1, batch, 1), y0.new_zeros(batch, 1)) if logqp else None
    # Each hidden layer's outputs over all steps, the buffer holding the layer's bias to start with (the first
    # layers' per-step biases are themselves such tensors of this solve), so each step adds its product in place.
    prior_hidden = [_Buffer.biased(None if record else (prior_base if j == 0 and prior_base is not None else b),
                                   (n, batch, w.shape[0])) for j, (w, b) in enumerate(zip(prior_w[:-1], prior_b))]
    corr_hidden = [_Buffer.biased(None if record else (base if j == 0 else b), (n, batch, w.shape[0]))
                   for j, (w, b) in enumerate(zip(corr_w[:-1], corr_b))]
    hiddens, sigmoids = _Buffer(new(n, batch, *w1.shape)), _Buffer(new(n, batch, d))
    ratios = _Buffer(new(n, batch, d)) if logqp else None
    y, kl = y0, kls.last if logqp else None
    # The steps write into the buffers above; recording, they must be recorded (untracked then does nothing).
    with untracked():
        for k, step in enumerate(plan.steps):
            x = y
            for j, (weight, bias, name) in enumerate(zip(prior_w, prior_b, plan.prior_activations)):
                if j == 0 and prior_base is not None:
                    weight, bias = prior_z, prior_base[k]
                x = prior_hidden[j].activated(k, name, bias, x, weight)
            if prior_base is None or prior_hidden:
                p = torch.addmm(prior_b[-1], x, prior_w[-1].t())
            else:
                p = torch.addmm(prior_base[k], y, prior_z.t())
            x = y
            for j, name in enumerate(plan.correction_activations):
                x = corr_hidden[j].activated(
                    k, name, base[k] if j == 0 else corr_b[j], x, weight_z if j == 0 else corr_w[j]
                )
            if corr_hidden:
                c = torch.addmm(corr_b[-1], x, corr_w[-1].t())
            else:
                c = torch.addmm(base[k], y, weight_z.t())
            shift = b1 if diffusion_inputs is None else diffusion_inputs[k] + b1
            hidden = hiddens.put(k, _FORWARD[plan.activation](torch.addcmul(shift, y.unsqueeze(-1), w1)))
            sigmoid = sigmoids.put(k, torch.sigmoid((hidden * w2).sum(-1) + b2))
            g = sigmoid + floor
            if logqp:
                u = ratios.put(k, c / stable_divisor(g))
                kl = kls.put(k + 1, kl + 0.5 * (u**2).sum(dim=1, keepdim=True) * step)
            y = states.put(k + 1, y + (p + c) * step + g * dw[k])
    saved = [h.whole() for h in prior_hidden + corr_hidden] + [hiddens.whole(), sigmoids.whole()]
    return states.whole(), (kls.whole() if logqp else None), saved + ([ratios.whole()] if logqp else [])


class _Buffer:
    """Per-step tensors: written into one ``(n, ...)`` tensor, or (``buffer`` None, recording) stacked at the end."""

    def __init__(self, buffer: torch.Tensor | None, first: torch.Tensor | None = None):
        self.buffer, self.items, self.last = buffer, [], first
        if first is not None:
            self.put(0, first)

    def put(self, k: int, value: torch.Tensor) -> torch.Tensor:
        if self.buffer is None:
            self.items.append(value)
            return value
        self.buffer[k] = value
        return self.buffer[k]

    @classmethod
    def biased(cls, bias: torch.Tensor | None, shape: tuple[int, int, int]) -> _Buffer:
        """A hidden layer's buffer ``(n, batch, width)`` holding its bias at every step to start with (``bias``
        ``(width,)``, copied in once; or ``(n, batch, width)``, a tensor of the solve's own, taken as the buffer),
        for :meth:`activated`; recording (``bias`` None), a list."""
        if bias is None:
            return cls(None)
        return cls(bias if bias.dim() == 3 else bias.new_empty(shape).copy_(bias.expand(shape)))

    def activated(self, k: int, name: str, bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``σ(bias + x weightᵀ)``; unrecorded, added in place to step ``k``'s slot, which holds ``bias``
        (:meth:`biased`): one pass over fresh memory for all steps instead of a copy of the bias into each."""
        if self.buffer is None:
            return self.put(k, _FORWARD[name](torch.addmm(bias, x, weight.t())))
        out = self.buffer[k].addmm_(x, weight.t())
        return out.copy_(_FORWARD[name](out)) if name == "softplus" else _IN_PLACE[name](out)

    def whole(self) -> torch.Tensor:
        return torch.stack(self.items) if self.buffer is None else self.buffer


_IN_PLACE = {
    "tanh": torch.Tensor.tanh_,
    "relu": torch.Tensor.relu_,
    "elu": lambda x: torch.nn.functional.elu_(x),
    "sigmoid": torch.Tensor.sigmoid_,
}


class EulerPosterior(torch.autograd.Function):
    """The whole written-out solve of a :class:`PosteriorLayers` SDE: ``(states, kl)`` at every step's end.

    Arguments: ``(plan, index, extra, inputs, y0, table, dw, *parameters)`` (``inputs`` None undriven). A
    recorded backward pass (``create_graph=True``) solves again through
    autograd and differentiates that, so higher derivatives are exact too,
    at autograd's cost.
    """

    @staticmethod
    def forward(ctx, plan, index, extra, inputs, y0, table, dw, *params):
        ctx.set_materialize_grads(False)
        states, kls, saved = _run(plan, y0, table, index, extra, inputs, dw, params)
        ctx.plan = plan
        ctx.n_params = len(params)
        ctx.save_for_backward(index, extra, inputs, y0, table, dw, *params, states, *saved)
        return (states, kls) if plan.logqp else (states, states.new_zeros(0))

    @staticmethod
    def backward(ctx, grad_states, grad_kls):
        if torch.is_grad_enabled():
            return (None, None, None, None, *_recorded_backward(ctx, grad_states, grad_kls))
        return (None, None, None, None, *_backward(ctx, grad_states, grad_kls if ctx.plan.logqp else None))


def _backward(ctx, grad_states, grad_kls):
    plan = ctx.plan
    saved = ctx.saved_tensors
    index, extra, known, y0, table, dw = saved[:6]
    params = saved[6 : 6 + ctx.n_params]
    states = saved[6 + ctx.n_params]
    rest = saved[7 + ctx.n_params :]
    n_prior, n_corr = len(plan.prior_activations), len(plan.correction_activations)
    prior_hidden, corr_hidden = rest[:n_prior], rest[n_prior : n_prior + n_corr]
    hiddens, sigmoids = rest[n_prior + n_corr], rest[n_prior + n_corr + 1]
    ratios = rest[n_prior + n_corr + 2] if plan.logqp else None
    prior_w, _prior_b, corr_w, _corr_b, (w1, _b1, w2, _b2), wu = _unpack(plan, params)
    d, width, m = y0.shape[1], table.shape[1], plan.n_inputs
    weight_z = corr_w[0][:, :d]
    # Each weight as the right factor of its input adjoint's product (the first layers': their state columns).
    batch = y0.shape[0]
    prior_back = [input_gradient_factor(w if j else w[:, :d], batch) for j, w in enumerate(prior_w)]
    corr_back = [input_gradient_factor(w if j else weight_z, batch) for j, w in enumerate(corr_w)]
    n = len(plan.steps)
    floor = plan.floor

    a_y = grad_states[n] if grad_states is not None else torch.zeros_like(y0)
    a_kl = grad_kls[n] if grad_kls is not None else None
    inputs = torch.cat([states[:n], known], dim=-1) if m else states[:n]  # what both first layers read
    prior_grads = [_LayerGrads(inputs if j == 0 else prior_hidden[j - 1], w.shape[0]) for j, w in enumerate(prior_w)]
    corr_grads = [_FirstLayerGrads(inputs, table, index, extra, corr_w[0].shape[0])]
    corr_grads += [_LayerGrads(corr_hidden[j - 1], w.shape[0]) for j, w in enumerate(corr_w) if j > 0]
    sigmoid_grads, pre_grads = [], []
    # Inference mode for the steps (see untracked); what they leave behind is made ordinary below.
    with untracked():
        for k in reversed(range(n)):
            step = plan.steps[k]
            a_p = a_y * step
            a_c, a_g = a_p, a_y * dw[k]
            if a_kl is not None:
                g = sigmoids[k] + floor
                above, divisor = g.abs() > _DIVISION_FLOOR, stable_divisor(g)  # no gradient where the floor holds
                u = ratios[k]
                scaled = (a_kl * step) * u  # the adjoint of u: a_kl · step · u
                a_c = a_c + scaled / divisor
                a_g = a_g - torch.where(above, scaled * u / divisor, 0.0)
            grad_z = _mlp_backward(k, a_p, prior_back, plan.prior_activations, prior_hidden, prior_grads)
            grad_z = grad_z + _mlp_backward(k, a_c, corr_back, plan.correction_activations, corr_hidden, corr_grads)
            a_s = SIGMOID_GRAD(a_g, sigmoids[k], grad_input=a_g)  # a_g is this step's own temporary
            a_pre = _activation_backward(plan.activation, a_s.unsqueeze(-1) * w2, hiddens[k])
            sigmoid_grads.append(a_s)
            pre_grads.append(a_pre)
            a_y = a_y + grad_z + (a_pre * w1).sum(-1)
            if grad_states is not None:
                a_y = a_y + grad_states[k]
            if grad_kls is not None:
                a_kl = a_kl + grad_kls[k] if a_kl is not None else grad_kls[k]

    grads = [g for layer in prior_grads for g in layer.result()]
    grad_table, first = corr_grads[0].result(corr_w[0][:, d + m : d + m + width])
    grads += [*first, *(g for layer in corr_grads[1:] for g in layer.result())]
    a_s = torch.stack(sigmoid_grads[::-1])
    a_pre = torch.stack(pre_grads[::-1])
    grads += [
        (a_pre * states[:n].unsqueeze(-1)).sum((0, 1)),
        a_pre.sum((0, 1)),
        (a_s.unsqueeze(-1) * hiddens).sum((0, 1)),
        a_s.sum((0, 1)),
    ]
    if wu is not None:
        grads.append((known.reshape(-1, m).t() @ a_pre.reshape(-1, a_pre[0, 0].numel())).reshape(wu.shape))
    # Sums that the steps began (accumulated weight gradients, the state's adjoint) are inference tensors: copies
    # go out, which autograd and the optimiser's in-place updates accept.
    return tuple(_ordinary(x) for x in (a_y, grad_table, None, *grads))


def _ordinary(x: torch.Tensor | None) -> torch.Tensor | None:
    """``x``, or an ordinary copy of it where it was made in inference mode."""
    return x.clone() if x is not None and x.is_inference() else x


def _mlp_backward(k, grad, backs, activations, hidden, layers):
    """The adjoint of an MLP's input at step ``k``, ``backs`` each layer's weight as its input adjoint's right
    factor (the first layer's: its columns that the adjoint is wanted for); each layer's output adjoint handed to
    its ``layers`` entry."""
    for j in reversed(range(len(backs))):
        layers[j].add(k, grad)
        grad = grad @ backs[j]
        if j > 0:
            grad = _activation_backward(activations[j - 1], grad, hidden[j - 1][k])
    return grad


class _LayerGrads:
    """A Linear layer's weight and bias gradients over all steps, from its output adjoint at each step.

    ``source`` holds its input at every step, ``(n, batch, in)``. Small layers keep the adjoints and
    take one product over all steps at the end; above ``_ACCUMULATE_ABOVE`` entries each step's product
    is added into one buffer (no copy of every step's adjoint)."""

    def __init__(self, source: torch.Tensor, width: int):
        self.source = source
        self.accumulate = source.shape[1] * (source.shape[2] + width) > _ACCUMULATE_ABOVE
        # Accumulated as (sourceᵀ adjoint)ᵀ where the layer reads fewer columns than it writes (weight_gradient's
        # narrower left factor).
        self.transposed = transposed_sum(source.shape[1], source.shape[2], width)
        self.deltas: list[torch.Tensor] = []
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def add(self, k: int, delta: torch.Tensor) -> None:
        if not self.accumulate:
            self.deltas.append(delta)
            return
        left, right = (self.source[k], delta) if self.transposed else (delta, self.source[k])
        if self.weight is None:
            self.weight, self.bias = left.t() @ right, delta.sum(0)
        else:
            self.weight.addmm_(left.t(), right)
            self.bias.add_(delta.sum(0))

    def stacked(self) -> torch.Tensor:
        return torch.cat(self.deltas[::-1])  # step order

    def result(self) -> list[torch.Tensor]:
        if self.accumulate:
            return [self.weight.t() if self.transposed else self.weight, self.bias]
        delta = self.stacked()
        return [weight_gradient([delta], [self.source.reshape(delta.shape[0], -1)]), delta.sum(0)]


class _FirstLayerGrads(_LayerGrads):
    """The correction's first layer, reading the state (and the inputs: ``states`` holds both), a context-table
    row and the extra columns."""

    def __init__(self, states: torch.Tensor, table: torch.Tensor, index: torch.Tensor, extra: torch.Tensor, width: int):
        super().__init__(states, width)
        self.table, self.index, self.extra = table, index, extra
        self.scattered = states.new_zeros(table.shape[0], width)
        self.extra_weight: torch.Tensor | None = None

    def add(self, k: int, delta: torch.Tensor) -> None:
        super().add(k, delta)
        if self.accumulate:
            self.scattered.index_add_(0, self.index[k], delta)
            product = delta.t() @ self.extra[k]
            self.extra_weight = product if self.extra_weight is None else self.extra_weight.add_(product)

    def result(self, projection: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The table's gradient (``projection``: the first layer's table columns) and ``[weight, bias]``."""
        if self.accumulate:
            weight, bias, extra = self.weight.t() if self.transposed else self.weight, self.bias, self.extra_weight
        else:
            delta = self.stacked()
            self.scattered.index_add_(0, self.index.reshape(-1), delta)
            weight, bias = weight_gradient([delta], [self.source.reshape(delta.shape[0], -1)]), delta.sum(0)
            extra = delta.t() @ self.extra.reshape(delta.shape[0], -1)
        grad_table = self.scattered @ projection
        return grad_table, [torch.cat([weight, self.scattered.t() @ self.table, extra], dim=1), bias]


def _recorded_backward(ctx, grad_states, grad_kls) -> tuple:
    """The solve's vector-Jacobian product as a recorded graph: the steps again, through autograd."""
    saved = ctx.saved_tensors
    index, extra, u = saved[0], saved[1], saved[2]
    inputs = tuple(x.view_as(x) for x in saved[3 : 6 + ctx.n_params])
    y0, table, dw, params = inputs[0], inputs[1], inputs[2], inputs[3:]
    states, kls, _ = _run(ctx.plan, y0, table, index, extra, u, dw, params, record=True)
    pairs = [
        (out, grad) for out, grad in ((states, grad_states), (kls, grad_kls)) if grad is not None and out is not None
    ]
    wanted = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not pairs or not wanted:
        return (None,) * len(inputs)
    found = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)  # fmt: skip
    grads: list[Any] = [None] * len(inputs)
    for i, grad in zip(wanted, found):
        grads[i] = grad
    return tuple(grads)


def solve_posterior(
    layers: PosteriorLayers,
    y0: torch.Tensor,
    times: tuple[torch.Tensor, ...],
    steps: tuple[torch.Tensor, ...],
    dw: torch.Tensor,
    logqp: bool,
):
    """States ``(n + 1, batch, d)`` and KL ``(n + 1, batch, 1)`` (None without ``logqp``) at every step's end."""
    with torch.no_grad():
        starts = torch.stack(times)
        index, extra = layers.rows(starts)
        extra = extra.to(y0.dtype)
        inputs = None if layers.inputs is None else layers.inputs(starts).to(y0.dtype).contiguous()
    if y0.dtype == torch.float32:  # tanh layers as sigmoids (a float64 solve keeps tanh's rounding), as in solve_ode
        layers = layers.rescaled()
    plan = _Plan(tuple(steps), layers.prior.activations, layers.correction.activations, layers.activation,
                 float(layers.floor), logqp, 0 if inputs is None else inputs.shape[-1],
                 layers.input_diffusion is not None)  # fmt: skip
    states, kls = EulerPosterior.apply(plan, index, extra, inputs, y0, layers.table, dw, *layers.parameters())
    return states, (kls if logqp else None)
