"""The derivative-regression loss of a Hamiltonian network, with its parameter gradient written out.

Fitting ``HamiltonianNN`` on rates regresses the symplectic gradient of
``H`` on measured time derivatives: the loss is a function of ``∂H/∂x``,
so its gradient with respect to the weights takes second derivatives of
the network. Recorded operation by operation (the written-out gradient of
:func:`._energy._network_gradient`, or autograd's double backward), a small
network's training step is mostly autograd's bookkeeping.
:class:`_DerivativeLoss` is the whole loss as one autograd node: its
forward sweeps the layers once, forms ``∂H/∂x``, the masked mean squared
error and, in the same pass, the gradient of the loss with respect to
every weight; its backward scales those by the incoming gradient.

For a network ``z_k = h_{k-1} W_kᵀ + b_k``, ``h_k = σ(z_k)`` (``h_0 = x``)
with output weights ``W_out``, the gradient sweep is ``g_L = W_out``,
``d_k = g_k ⊙ σ'(z_k)``, ``g_{k-1} = d_k W_k``, and ``∂H/∂x = g_0``. With
``v = ∂loss/∂g_{k-1}`` the reverse of that sweep gives ``∂W_k += d_kᵀ v``,
``∂d_k = v W_kᵀ``, ``∂g_k = ∂d_k ⊙ σ'(z_k)`` and a curvature term
``c_k = ∂d_k ⊙ g_k ⊙ σ''(z_k)`` on ``z_k``; the reverse of the forward
sweep then carries ``e_k = ∂loss/∂z_k`` down the layers
(``e_{k-1} = (e_k W_k) ⊙ σ'(z_{k-1}) + c_{k-1}``, ``∂W_k += e_kᵀ h_{k-1}``,
``∂b_k = Σ e_k``). The output bias does not reach ``∂H/∂x`` and gets no
gradient, as under autograd.

A backward pass that must itself be differentiable (a penalty on the
training gradient, ``create_graph=True``) differentiates the loss
recomputed through recorded operations instead, so higher derivatives are
autograd's; :meth:`HamiltonianField.derivative_loss` takes that recorded
path from the start whenever the states require a gradient.

A Lagrangian network's derivative loss is one node the same way
(:class:`_LagrangianLoss`): its accelerations solve ``M q̈ = r`` with the
velocity Hessian ``M``, so the weights' gradient is that of
``(λ, 0)·∇L - (0, λ)ᵀ H w`` at fixed ``λ = M⁻ᵀ ∂loss/∂q̈`` and
``w = (v, q̈)``, which :func:`hessian_vector_gradients` writes out: third
derivatives of the network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..solvers._rk_mlp import TANH_BACKWARD, input_gradient_factor, tanh_via_sigmoid, transposed_sum, untracked

_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default
_SOFTPLUS_BACKWARD = torch.ops.aten.softplus_backward.default
_ELU_BACKWARD = torch.ops.aten.elu_backward.default


def times_derivative(activation: nn.Module, g: torch.Tensor, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``g ⊙ σ'(z)`` for a hidden activation of ``_WRITTEN_OUT``, from its input ``z`` and output ``h``.

    Each is aten's derivative kernel of the activation (one operation, with
    a derivative of its own), except SiLU's, whose kernel has none:
    ``σ' = s + z s (1 - s) = s + h - h s`` with ``s = sigmoid(z)``.
    """
    kind = type(activation)
    if kind is nn.Tanh:
        return TANH_BACKWARD(g, h)
    if kind is nn.ReLU:
        return _THRESHOLD_BACKWARD(g, h, 0)
    if kind is nn.Softplus:
        return _SOFTPLUS_BACKWARD(g, z, activation.beta, activation.threshold)
    if kind is nn.ELU:
        return _ELU_BACKWARD(g, activation.alpha, 1, 1, True, h)
    s = torch.sigmoid(z)
    return g * torch.addcmul(s + h, h, s, value=-1)


def _activate(activation: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``activation(z)`` without the module call."""
    kind = type(activation)
    if kind is nn.Tanh:
        return tanh_via_sigmoid(z)
    if kind is nn.ReLU:
        return torch.relu(z)
    return activation(z)


def _curvature(activation: nn.Module, g: torch.Tensor, d: torch.Tensor, z: torch.Tensor,
               h: torch.Tensor, slope: torch.Tensor | None = None) -> tuple[torch.Tensor, float] | None:
    """``(a, c)`` with ``g ⊙ σ''(z) = c a`` (None where σ'' is zero), given ``d = g ⊙ σ'(z)`` (and ``σ'(z)``
    itself, ``slope``, where the caller has it).

    σ'' is what autograd differentiates :func:`times_derivative`'s kernels
    to: ``-2 h σ'`` for tanh, zero for ReLU, ``β s (1 - s)`` below the
    threshold for softplus (``s = sigmoid(β z)``), ``σ'`` where ``h ≤ 0``
    for ELU, and ``s (1 - s) (2 + z (1 - 2 s))`` for SiLU. Softplus's
    slope is ``s`` below its threshold and exactly 1 past it, so with the
    slope given, ``d - d σ'`` is ``g s (1 - s)`` there and zero past it, in
    one operation.
    """
    kind = type(activation)
    if kind is nn.Tanh:
        return h * d, -2.0
    if kind is nn.ReLU:
        return None
    if kind is nn.ELU:
        return d * (h <= 0), 1.0
    if kind is nn.Softplus and slope is not None:
        return torch.addcmul(d, d, slope, value=-1.0), activation.beta
    if kind is nn.Softplus:
        beta, scaled = activation.beta, z * activation.beta
        s = torch.sigmoid(scaled)
        second = torch.addcmul(s, s, s, value=-1.0).mul_(scaled <= activation.threshold)
        return second.mul_(g), beta
    s = torch.sigmoid(z)  # SiLU
    return torch.addcmul(s, s, s, value=-1.0).mul_(z * (1.0 - 2.0 * s) + 2.0).mul_(g), 1.0


def hidden_layers(activations: Sequence[nn.Module], weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                  x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each hidden layer's input ``z_k = h_{k-1} W_kᵀ + b_k`` and output ``h_k = σ(z_k)`` (``h_{-1} = x``)."""
    zs, hs, h = [], [], x
    for activation, weight, bias in zip(activations, weights, biases):
        z = F.linear(h, weight, bias)
        h = _activate(activation, z)
        zs.append(z)
        hs.append(h)
    return zs, hs


def activation_slopes(activations: Sequence[nn.Module], zs: Sequence[torch.Tensor],
                      hs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``σ'(z_k)`` of every hidden layer."""
    return [times_derivative(a, torch.ones_like(z), z, h) for a, z, h in zip(activations, zs, hs)]


def forward_tangents(weights: Sequence[torch.Tensor], slopes: Sequence[torch.Tensor], columns: slice,
                     rows: int, h_dots: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The hidden layers' input tangents ``ż_k`` along the input axes ``columns``: ``ż_0 = W_0[:, i]``,
    ``ż_{k+1} = (σ'(z_k) ⊙ ż_k) W_{k+1}ᵀ``. Axis-major, (axes, rows, width_k), flattened to (axes * rows, width)
    for the products; ``ż_0`` is (axes, 1, width_0), the same for every row. A list ``h_dots`` receives every
    hidden layer's output tangent ``ḣ_k = σ'(z_k) ⊙ ż_k``, flattened, the last one's included."""
    z_dots = [weights[0][:, columns].t().unsqueeze(1)]
    for k in range(1, len(slopes) + (h_dots is not None)):
        h_dot = slopes[k - 1] * z_dots[k - 1]
        h_dot = h_dot.reshape(-1, h_dot.shape[-1])
        if h_dots is not None:
            h_dots.append(h_dot)
        if k < len(slopes):
            z_dots.append(h_dot.mm(weights[k].t()).view(-1, rows, weights[k].shape[0]))
    return z_dots


class Sweep:
    """One network's forward and gradient sweeps at ``x``: its layers' inputs and outputs, and ``∂H/∂x``.

    ``tensors`` are the hidden layers' weights and biases in turn, then the
    output weights (:func:`network_tensors`); ``activations`` the hidden
    activations. The operations are recorded when gradients are (the
    field's written-out gradient, ``_network_gradient``) and not inside
    :class:`_DerivativeLoss`, which differentiates them itself
    (:meth:`parameter_gradients`).
    """

    def __init__(self, activations: Sequence[nn.Module], tensors: Sequence[torch.Tensor], x: torch.Tensor):
        self.activations, self.x = activations, x
        n = len(activations)
        self.weights = tensors[0:-1:2]
        self.zs, self.hs = hidden_layers(activations, self.weights, tensors[1:-1:2], x)
        g = tensors[-1]  # (1, width): the kernels broadcast it over the batch
        if not n:
            g = g.expand(x.shape[0], g.shape[1])
        self.gs, self.ds = [None] * n, [None] * n
        for k in range(n - 1, -1, -1):
            self.gs[k] = g
            self.ds[k] = times_derivative(activations[k], g, self.zs[k], self.hs[k])
            g = self.ds[k].mm(input_gradient_factor(self.weights[k], x.shape[0]))
        self.gradient = g  # ∂H/∂x, (batch, in)

    @functools.cached_property
    def slopes(self) -> list[torch.Tensor]:
        """``σ'(z_k)`` of every hidden layer, formed once for the derivatives that need it."""
        return activation_slopes(self.activations, self.zs, self.hs)

    def hessian_rows(self, first: int) -> torch.Tensor:
        """Rows ``first, first + 1, ...`` of the Hessian ``∂²H/∂x²``, shape (batch, in - first, in).

        The directional derivative of the gradient sweep along each input
        axis ``i ≥ first`` (forward over reverse, written out): the forward
        tangent ``ż_0 = W_0[:, i]``, ``ż_{k+1} = (ż_k ⊙ σ'(z_k)) W_{k+1}ᵀ``,
        and the gradient sweep's tangent ``ḋ_k = ġ_k ⊙ σ'(z_k) + g_k ⊙ σ''(z_k)
        ⊙ ż_k`` (``ġ`` zero at the output), ``ġ_{k-1} = ḋ_k W_k``. Every axis
        is one more row of the same products. Recorded like the sweep itself.
        """
        activations, weights, n = self.activations, self.weights, len(self.activations)
        rows, width = self.x.shape
        if not n:  # H linear in x
            return self.x.new_zeros(rows, width - first, width)
        slopes = self.slopes
        z_dots = forward_tangents(weights, slopes, slice(first, None), rows)
        g_dot = None  # the output weights are constant: ġ_{n-1} = 0
        for k in range(n - 1, -1, -1):
            d_dot = None if g_dot is None else slopes[k] * g_dot
            curvature = _curvature(activations[k], self.gs[k], self.ds[k], self.zs[k], self.hs[k], slopes[k])
            if curvature is not None:  # g_k ⊙ σ''(z_k) = c a
                a, c = curvature
                term = a * z_dots[k] if c == 1.0 else a.mul(c) * z_dots[k]
                d_dot = term if d_dot is None else d_dot + term
            if d_dot is None:  # σ'' = 0 all the way down so far (ReLU): no tangent yet
                continue
            g_dot = d_dot.reshape(-1, d_dot.shape[-1]).mm(weights[k]).view(-1, rows, weights[k].shape[1])
        if g_dot is None:
            return self.x.new_zeros(rows, width - first, width)
        return g_dot.transpose(0, 1)

    def parameter_gradients(self, v: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of a loss with ``∂loss/∂(∂H/∂x) = v``, in the order of ``tensors``."""
        activations, weights, n = self.activations, self.weights, len(self.activations)
        if not n:  # H linear in x: only the output weights reach its (constant) gradient
            return [v.sum(0, keepdim=True)]
        found: list[torch.Tensor] = [None] * (2 * n + 1)
        curvatures = [None] * n
        # A layer reading fewer columns than it writes (the first, on a few coordinates) sums its weight's
        # gradient transposed, the narrower side as the products' left factor (weight_gradient's rule).
        rows = self.x.shape[0]
        narrow = [transposed_sum(rows, (self.hs[k - 1] if k else self.x).shape[1], weights[k].shape[0]) for k in range(n)]
        for k in range(n):  # the reverse of the gradient sweep, first layer to last
            found[2 * k] = v.t().mm(self.ds[k]) if narrow[k] else self.ds[k].t().mm(v)
            dd = F.linear(v, weights[k])
            curvature = _curvature(activations[k], self.gs[k], self.ds[k], self.zs[k], self.hs[k])
            if curvature is not None:
                curvatures[k] = (curvature[0], dd, curvature[1])
            v = times_derivative(activations[k], dd, self.zs[k], self.hs[k])
        found[2 * n] = v.sum(0, keepdim=True)
        e = None
        for k in range(n - 1, -1, -1):  # the reverse of the forward sweep, last layer to first: e = ∂loss/∂z_k
            if e is not None:
                e = times_derivative(activations[k], e.mm(weights[k + 1]), self.zs[k], self.hs[k])
            if curvatures[k] is not None:
                a, b, c = curvatures[k]
                e = torch.mul(a, b).mul_(c) if e is None else e.addcmul_(a, b, value=c)
            elif e is None:
                e = torch.zeros_like(self.zs[k])
            source = self.hs[k - 1] if k else self.x
            if narrow[k]:
                found[2 * k] = found[2 * k].addmm_(source.t(), e).t()
            else:
                found[2 * k] = found[2 * k].addmm_(e.t(), source)
            found[2 * k + 1] = e.sum(0)
        return found


@functools.lru_cache(maxsize=8)
def _symplectic_transpose(n_coordinates: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``Jᵀ`` for Hamilton's ``J = [[0, I], [-I, 0]]``: a row of gradients times it is ``[∂H/∂p, -∂H/∂q]``."""
    d = n_coordinates
    eye = torch.eye(d, dtype=dtype, device=device)
    zero = torch.zeros(d, d, dtype=dtype, device=device)
    return torch.cat([torch.cat([zero, -eye], dim=1), torch.cat([eye, zero], dim=1)], dim=0)


class _DerivativeLoss(torch.autograd.Function):
    """``mean over mask of (Hamilton's field - rates)²`` for networks of ``_written_out_layers``, as one node.

    ``recorded()`` is the same loss through recorded operations (for a
    differentiable backward). ``activations`` holds each network's hidden activations: one network
    (``H(x)``) or two (``T(p)`` then ``V(q)``); ``tensors`` are each
    network's hidden weights and biases in turn, then its output weights
    (its output bias does not reach the field).
    """

    @staticmethod
    def forward(ctx, activations, n_coordinates, recorded, x, rates, mask, *tensors):
        ctx.recorded, ctx.tensors = recorded, tensors  # the parameters, for a differentiable backward
        d = n_coordinates
        # J is cached for every caller, so it is made outside the inference mode below.
        symplectic = _symplectic_transpose(d, x.dtype, x.device) if len(activations) == 1 else None
        with untracked():  # what is made here stays in this node; the loss goes out as an ordinary copy
            if symplectic is not None:  # the field is J ∂H/∂x, one product with the signed permutation J
                sweep = Sweep(activations[0], tensors, x)
                error = torch.addmm(rates, sweep.gradient, symplectic, beta=-1)
            else:
                split = 2 * len(activations[0]) + 1
                sweeps = [Sweep(activations[0], tensors[:split], x[:, d:]),
                          Sweep(activations[1], tensors[split:], x[:, :d])]
                error = torch.cat([sweeps[0].gradient, sweeps[1].gradient.neg()], dim=1).sub_(rates)
            weighted = error * mask
            count = mask.sum().clamp_min_(1)
            loss = error.mul_(weighted).sum().div_(count)
            weighted = weighted.div_(count).mul_(2.0)  # ∂loss/∂field
            if symplectic is not None:
                ctx.gradients = sweep.parameter_gradients(weighted.mm(symplectic.t()))
            else:  # ∂loss/∂(∂T/∂p), then ∂loss/∂(∂V/∂q)
                ctx.gradients = sweeps[0].parameter_gradients(weighted[:, :d]) + sweeps[1].parameter_gradients(
                    weighted[:, d:].neg())
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        return loss_node_backward(ctx, grad_loss, 6)


def loss_node_backward(ctx, grad_loss: torch.Tensor, n_leading: int) -> tuple:
    """The backward of a loss node whose forward formed ``ctx.gradients`` of ``ctx.tensors``, its last inputs after
    ``n_leading`` others that get none: those gradients scaled by the incoming one. A backward that must itself be
    differentiable (``create_graph=True``) differentiates ``ctx.recorded()``, the loss through recorded operations."""
    if torch.is_grad_enabled():
        found = torch.autograd.grad(ctx.recorded(), ctx.tensors, grad_loss, create_graph=True, allow_unused=True)
        return (None,) * n_leading + tuple(found)
    return (None,) * n_leading + tuple(torch._foreach_mul(ctx.gradients, grad_loss))


def network_tensors(linears: Sequence[nn.Linear]) -> list[torch.Tensor]:
    """The tensors a :class:`Sweep` reads: each hidden layer's weight and bias, then the output weight.

    The output bias does not reach ``∂H/∂x``.
    """
    return [*(t for layer in linears[:-1] for t in (layer.weight, layer.bias)), linears[-1].weight]


def derivative_loss_node(networks: Sequence[tuple[list[nn.Linear], list[nn.Module]]], n_coordinates: int,
                         x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                         recorded: Callable[[], torch.Tensor]) -> torch.Tensor:
    """:class:`_DerivativeLoss` of ``networks`` (plans of ``_written_out_layers``, one or two) at ``x``.

    ``recorded()`` computes the same loss through recorded operations on
    the same parameters: a backward pass that must itself be
    differentiable (``create_graph=True``) differentiates it instead.
    """
    tensors = [tensor for linears, _ in networks for tensor in network_tensors(linears)]
    activations = [activations for _, activations in networks]
    return _DerivativeLoss.apply(activations, n_coordinates, recorded, x, rates, mask, *tensors)


def solve_mass(mass: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mass⁻¹ b`` for velocity Hessians ``mass`` (batch, d, d) and ``b`` (batch, d): one coordinate divides."""
    return b / mass[:, :, 0] if mass.shape[-1] == 1 else torch.linalg.solve_ex(mass, b)[0]


class _LagrangianLoss(torch.autograd.Function):
    """``mean over mask of ([v, q̈] - rates)²`` for a Lagrangian network of ``_written_out_layers``, as one node.

    The forward pass forms the Euler–Lagrange accelerations as the field does
    (the gradient sweep, its Hessian rows, ``M q̈ = r`` with ``M = ∂²L/∂v²``,
    ``r = ∂L/∂q - (∂²L/∂v∂q) v``), checks them with ``check(mass, q̈)``, and
    the loss; then every weight's gradient in the same pass. With
    ``g = ∂loss/∂q̈`` and ``λ = M⁻ᵀ g``, ``∂loss/∂θ = λ·∂r/∂θ - λ·(∂M/∂θ) q̈``,
    which is ``∂/∂θ`` of ``(λ, 0)·∇L - (0, λ)ᵀ H w`` at fixed ``λ`` and
    ``w = (v, q̈)`` (:func:`hessian_vector_gradients`). The backward scales
    those gradients by the incoming one; a backward that must itself be
    differentiable (``create_graph=True``) differentiates ``recorded()``
    instead.
    """

    @staticmethod
    def forward(ctx, activations, n_coordinates, check, recorded, x, rates, mask, *tensors):
        ctx.recorded, ctx.tensors = recorded, tensors
        d = n_coordinates
        with untracked():  # what is made here stays in this node; the loss goes out as an ordinary copy
            sweep = Sweep(activations, tensors, x)
            hessian = sweep.hessian_rows(d)
            mixed, mass = hessian[:, :, :d], hessian[:, :, d:]
            velocity = x[:, d:]
            force = sweep.gradient[:, :d] - (mixed @ velocity.unsqueeze(-1)).squeeze(-1)
            acceleration = solve_mass(mass, force)
            check(mass, acceleration)
            field = torch.cat([velocity, acceleration], dim=1)
            error = field - rates
            weighted = error * mask
            count = mask.sum().clamp_min_(1)
            loss = error.mul_(weighted).sum().div_(count)
            lam = solve_mass(mass.transpose(1, 2), weighted[:, d:].div(count).mul_(2.0))  # M⁻ᵀ ∂loss/∂q̈
            zeros = torch.zeros_like(lam)
            ctx.gradients = hessian_vector_gradients(sweep, field, torch.cat([lam, zeros], dim=1),
                                                     torch.cat([zeros, lam.neg()], dim=1))
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss):
        return loss_node_backward(ctx, grad_loss, 7)


def lagrangian_loss_node(linears: Sequence[nn.Linear], activations: Sequence[nn.Module], n_coordinates: int,
                         check: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, rates: torch.Tensor,
                         mask: torch.Tensor, recorded: Callable[[], torch.Tensor]) -> torch.Tensor:
    """:class:`_LagrangianLoss` of a Lagrangian network (a plan of ``_written_out_layers``) at ``x``."""
    return _LagrangianLoss.apply(list(activations), n_coordinates, check, recorded, x, rates, mask,
                                 *network_tensors(linears))


def _second_and_third(activation: nn.Module, z: torch.Tensor, h: torch.Tensor,
                      slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ'' and σ''' at ``z`` of a smooth activation of ``_WRITTEN_OUT`` (not ReLU), given ``h = σ(z)`` and σ'.

    tanh: ``σ'' = -2 h σ'``, ``σ''' = σ' (6 h² - 2)``; softplus (``s = sigmoid(β z)``, linear past its
    threshold): ``β s (1 - s)`` and ``β² s (1 - s)(1 - 2 s)``, from σ', which is ``s`` below the threshold and
    1 past it, where both vanish; ELU: both σ' where ``h ≤ 0``; SiLU
    (``s' = s (1 - s)``): ``s' (2 + z (1 - 2 s))`` and ``s' ((1 - 2 s)(2 + z (1 - 2 s)) + 1 - 2 s - 2 z s')``.
    """
    kind = type(activation)
    if kind is nn.Tanh:
        return -2.0 * h * slope, slope * (6.0 * h * h - 2.0)
    if kind is nn.ELU:
        below = slope * (h <= 0)
        return below, below
    if kind is nn.Softplus:  # the slope is s below the threshold and exactly 1 past it, where both vanish
        ds = torch.addcmul(slope, slope, slope, value=-1.0)  # s (1 - s)
        third = torch.addcmul(ds, ds, slope, value=-2.0)  # s (1 - s)(1 - 2 s)
        beta = activation.beta
        return (ds, third) if beta == 1 else (ds.mul_(beta), third.mul_(beta * beta))
    s = torch.sigmoid(z)  # SiLU
    ds, odd = s * (1.0 - s), 1.0 - 2.0 * s
    curve = 2.0 + z * odd
    return ds * curve, ds * (odd * curve + odd - 2.0 * z * ds)


def hessian_vector_gradients(sweep: Sweep, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """The weights' gradients of ``Σ_rows a·∇L(x) + b·(H(x) w)``, in the order of the sweep's ``tensors``.

    ``sweep`` is the network's sweep at ``x`` (at least one hidden layer, of
    a smooth activation); ``w``, ``a`` and ``b`` are (batch, in). ``H w`` is
    the gradient sweep's tangent along ``w``: the forward tangents
    ``ż_0 = w W_0ᵀ``, ``ż_{k+1} = (s_k ⊙ ż_k) W_{k+1}ᵀ`` (``s = σ'``,
    ``c = σ''``), then ``ḋ_k = ġ_k ⊙ s_k + g_k ⊙ c_k ⊙ ż_k`` and
    ``ġ_{k-1} = ḋ_k W_k`` (``ġ`` zero at the output). The reverse pass goes
    back through the gradient sweep and its tangent together (one product
    per layer for both), then through the forward tangents, then through
    the forward sweep, where ``s`` and ``c`` hand their gradients to ``z``
    through ``c`` and σ'''.
    """
    activations, weights, x = sweep.activations, sweep.weights, sweep.x
    n, rows = len(activations), x.shape[0]
    zs, hs, gs, ds, slopes = sweep.zs, sweep.hs, sweep.gs, sweep.ds, sweep.slopes
    curves, thirds = zip(*(_second_and_third(*layer) for layer in zip(activations, zs, hs, slopes)))
    gcs = [g * c for g, c in zip(gs, curves)]  # g_k ⊙ σ''(z_k)
    z_dots, h_dots = [w.mm(weights[0].t())], []
    for k in range(1, n):
        h_dots.append(slopes[k - 1] * z_dots[k - 1])
        z_dots.append(h_dots[-1].mm(weights[k].t()))
    d_dots: list[torch.Tensor] = [None] * n
    g_dots: list[torch.Tensor | None] = [None] * n  # ġ_k; zero at the last layer
    for k in range(n - 1, -1, -1):
        d_dots[k] = gcs[k] * z_dots[k]
        if g_dots[k] is not None:
            d_dots[k] = d_dots[k].addcmul_(g_dots[k], slopes[k])
        if k:
            g_dots[k - 1] = d_dots[k].mm(weights[k])
    found: list[torch.Tensor] = [None] * (2 * n + 1)
    g_bar, g_dot_bar = a, b  # the gradients on g_{k-1} and ġ_{k-1}, from k = 0 up
    slope_bars, curve_bars, z_dot_bars = [None] * n, [None] * n, [None] * n
    for k in range(n):
        bars = torch.cat([g_bar, g_dot_bar])
        found[2 * k] = torch.cat([ds[k], d_dots[k]]).t().mm(bars)
        both = bars.mm(weights[k].t())
        d_bar, d_dot_bar = both[:rows], both[rows:]
        curve_bars[k] = d_dot_bar * gs[k] * z_dots[k]
        z_dot_bars[k] = d_dot_bar * gcs[k]
        slope_bars[k] = d_bar * gs[k]
        if g_dots[k] is not None:
            slope_bars[k] = slope_bars[k].addcmul_(d_dot_bar, g_dots[k])
        g_bar = (d_bar * slopes[k]).addcmul_(d_dot_bar, curves[k] * z_dots[k])
        g_dot_bar = d_dot_bar * slopes[k]
    found[2 * n] = g_bar.sum(0, keepdim=True)  # g_{n-1} is the output weight, the same for every row
    for k in range(n - 1, 0, -1):  # back through the forward tangents
        found[2 * k] = found[2 * k].addmm_(z_dot_bars[k].t(), h_dots[k - 1])
        h_dot_bar = z_dot_bars[k].mm(weights[k])
        z_dot_bars[k - 1] = z_dot_bars[k - 1].addcmul_(h_dot_bar, slopes[k - 1])
        slope_bars[k - 1] = slope_bars[k - 1].addcmul_(h_dot_bar, z_dots[k - 1])
    found[0] = found[0].addmm_(z_dot_bars[0].t(), w)
    h_bar = None
    for k in range(n - 1, -1, -1):  # back through the forward sweep: e = ∂/∂z_k
        e = (slope_bars[k] * curves[k]).addcmul_(curve_bars[k], thirds[k])
        if h_bar is not None:
            e = e.addcmul_(h_bar, slopes[k])
        found[2 * k] = found[2 * k].addmm_(e.t(), hs[k - 1] if k else x)
        found[2 * k + 1] = e.sum(0)
        if k:
            h_bar = e.mm(weights[k])
    return found
