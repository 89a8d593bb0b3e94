"""A whole Runge–Kutta step of a multilayer-perceptron field as one autograd node, with its backward written out.

Backpropagating through an explicit Runge–Kutta step stage by stage records
every layer of every stage and every multiply-add that combines the stages:
on a small network, autograd's bookkeeping and the many small operations of
that graph, not the arithmetic, are most of a training iteration. When the
field is ``dy/dt = mlp(y)`` (Linear layers with activations whose derivative
follows from their output), :class:`MLPStep` runs the step's stages without
recording, keeps each layer's output, and its backward pass walks the stages
in reverse by hand: the adjoint of each stage's state is the network's
vector-Jacobian product (per layer, a product with its weight and the
activation's derivative from its output), the adjoints of the earlier stages
pick up their tableau weights, and the weight gradients of all stages are
summed together (one product per layer on small layers) instead of each
stage's being added to the parameters' gradients in turn.

The forward pass is the same arithmetic as the stage-by-stage step; the
gradients are the same to rounding. ``benchmarks/written_out_dopri5.py``
times it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

# Hidden activations whose derivative the backward pass writes from the layer's output ``a``:
# tanh 1 - a², relu [a > 0], softplus (β = 1) 1 - exp(-a), elu (α = 1) 1 where a > 0 else a + 1, sigmoid a (1 - a).
OUTPUT_DERIVATIVES = ("tanh", "relu", "softplus", "elu", "sigmoid")

# Above this many entries in a layer's output adjoint and input, its stages' weight gradients are summed by one
# product each into one buffer; below it, the stages are stacked into one product (fewer operations, a copy).
# (hidden (256, 256) on 256 series: 0.84x the stage-by-stage step's time summed, 0.93x stacked).
_ACCUMULATE_ABOVE = 16384

_FORWARD: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": torch.nn.functional.softplus,
    "elu": torch.nn.functional.elu,
    "sigmoid": torch.sigmoid,
}


@dataclass(frozen=True)
class MLPLayers:
    """The layers of a vector field ``dy/dt = mlp([y, columns(t, u)])``, which adaptive Runge–Kutta solves step
    as one node.

    A vector field passed to :func:`solve_ode` or :func:`solve_ode_irregular`
    that has a method ``mlp_layers()`` returning an ``MLPLayers`` (as
    :class:`dynlearn.nn.MLPVectorField` does) declares that it computes
    exactly that network of the state and, where ``columns`` is given, of
    what it reads besides (time, known inputs): each dopri5 step without the
    adjoint then runs as one autograd node whose backward pass is written
    out, with the same states and evaluations and the same gradients to
    rounding, in less time on small networks. What ``columns`` reads enters
    each stage as data: a step whose columns or clock scale need a gradient
    goes stage by stage. ``mlp_layers()`` returning None keeps stage-by-stage
    stepping.

    Parameters
    ----------
    weights : tuple of Tensor
        Each Linear layer's weight, ``(out, in)``, first layer first.
    biases : tuple of Tensor
        Each Linear layer's bias.
    activations : tuple of str
        The activation after each layer but the last: ``"tanh"``, ``"relu"``, ``"softplus"`` or ``"elu"``.
    box : (Tensor, Tensor, float), optional
        ``(lower, upper, rate)``: the field is ``mlp(y) − rate · (y − clamp(y, lower, upper))`` on the first
        ``len(lower)`` components, as :class:`dynlearn.nn.BoxContraction` makes it.
    columns : callable, optional
        ``columns(t, u)``: what the network reads after the state, as a tensor of shape ``(batch, m)``, from
        the field's time ``t`` (a 0-dim tensor, or one time per series) and known inputs ``u`` (None, or
        ``(batch, n_inputs)``): the field is then ``mlp([y, columns(t, u)])``, as
        :class:`dynlearn.nn.MLPVectorField` is with ``time_dependent`` or ``n_inputs``.
    clock : callable, optional
        ``clock(s)``: ``(t, u, scale)`` at the solver's times ``s`` ``(n,)`` (a step's stages), each with a
        leading dimension ``n``, for a solve that runs the field on a clock of its own (the segment clock of
        :func:`solve_ode_irregular`): the slope is then ``scale[:, None] · field(t, y, u)`` (``u`` and
        ``scale`` may be None). Set by that solve.
    second_order : int, default=0
        ``p > 0`` for a second-order field on ``y = [z, v]`` (``p`` columns each): the slope is
        ``[v, mlp(...)]``, as :class:`dynlearn.nn.SecondOrderField` makes it.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import MLPLayers
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> MLPLayers.of(net).activations
    ('tanh',)
    >>> MLPLayers.of(torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))) is None
    True
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    activations: tuple[str, ...]
    box: tuple[torch.Tensor, torch.Tensor, float] | None = None
    columns: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    clock: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] | None = None
    second_order: int = 0

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or len(self.activations) != len(self.weights) - 1:
            raise ValueError(
                f"layers: expected one bias per weight and one activation between layers; got {len(self.weights)} "
                f"weights, {len(self.biases)} biases and {len(self.activations)} activations."
            )
        unknown = sorted(set(self.activations) - set(OUTPUT_DERIVATIVES))
        if unknown:
            raise ValueError(f"activations: expected names among {list(OUTPUT_DERIVATIVES)}; got {unknown}.")

    def parameters(self) -> tuple[torch.Tensor, ...]:
        """``(weight, bias)`` of each layer in turn."""
        return tuple(p for pair in zip(self.weights, self.biases) for p in pair)

    @property
    def reads_time(self) -> bool:
        """Whether the slope depends on the solver's time (through ``columns`` or ``clock``)."""
        return self.columns is not None or self.clock is not None

    def at_each(self, s: torch.Tensor) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """``(columns, scale)`` at each of the solver's times ``s`` ``(n,)``: what the network reads after the
        state, and the per-series factor on the slope (each None where the field has none), the clock read
        once for all of them (the stages of one step)."""
        if self.clock is None:
            return [((None if self.columns is None else self.columns(when, None)), None) for when in s]
        t, u, scale = self.clock(s)
        columns = [None] * len(s) if self.columns is None else [
            self.columns(t[i], None if u is None else u[i]) for i in range(len(s))
        ]  # fmt: skip
        return list(zip(columns, [None] * len(s) if scale is None else scale.unbind(0)))

    def rescaled(self) -> MLPLayers:
        """The same network with its tanh layers run as sigmoids: ``tanh(z) = 2 sigmoid(2z) - 1``, the factors
        folded into the weights and biases on either side (built with autograd from them, so gradients reach
        them). On CPU a sigmoid costs a quarter of a tanh or less (256 × 256 float32: 18 µs against 166 µs,
        ``benchmarks/kernel_choices.py``); the states differ from the tanh network's by rounding.
        """
        if "tanh" not in self.activations:
            return self
        weights, biases, activations = list(self.weights), list(self.biases), list(self.activations)
        for i, name in enumerate(self.activations):
            if name != "tanh":
                continue
            weights[i], biases[i], activations[i] = 2 * weights[i], 2 * biases[i], "sigmoid"
            # The next layer reads 2 s - 1: W (2 s - 1) + b = (2 W) s + (b - W 1).
            biases[i + 1] = biases[i + 1] - weights[i + 1].sum(1)
            weights[i + 1] = 2 * weights[i + 1]
        return replace(self, weights=tuple(weights), biases=tuple(biases), activations=tuple(activations))

    @staticmethod
    def declared_by(field: object) -> MLPLayers | None:
        """What ``field.mlp_layers()`` returns, or None for a field without that method."""
        method = getattr(field, "mlp_layers", None)
        return method() if callable(method) else None

    @classmethod
    def of(cls, net: nn.Sequential) -> MLPLayers | None:
        """``net``'s layers, or None where it is not Linear layers with biases alternating with ``nn.Tanh``,
        ``nn.ReLU``, ``nn.Softplus`` or ``nn.ELU`` at their default settings (softplus β = 1, threshold 20; α = 1)."""
        modules = list(net)
        linears, activations = modules[::2], modules[1::2]
        if len(modules) % 2 == 0 or not all(isinstance(m, nn.Linear) and m.bias is not None for m in linears):
            return None
        names = []
        for module in activations:
            name = _MODULES.get(type(module))
            if name is None or (name == "softplus" and (module.beta != 1 or module.threshold != 20)) or (
                name == "elu" and module.alpha != 1.0
            ):
                return None
            names.append(name)
        return cls(tuple(m.weight for m in linears), tuple(m.bias for m in linears), tuple(names))


_MODULES = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Softplus: "softplus", nn.ELU: "elu", nn.Sigmoid: "sigmoid"}


def _direct(overload: Any) -> Any:
    """``overload``'s C++ entry point where torch exposes it (``_op``), else the overload itself.

    Called through the Python ``OpOverload`` wrapper, one of these kernels
    costs about a microsecond more than a tensor method; the loops that call
    them once per step and layer take the entry point directly.
    """
    return getattr(overload, "_op", overload)


def untracked() -> Any:
    """Inference mode for the written-out passes' own tensor operations, unless gradients are being recorded.

    Grad mode is off in an autograd function's forward and in a backward
    without ``create_graph``: there each small operation can also skip
    autograd's view and version bookkeeping (about 0.4 µs of the two or so
    it costs, ``benchmarks/kernel_choices.py``). What is made inside is an
    inference tensor: a caller writes into buffers made before, or hands
    back ordinary copies.
    """
    return contextlib.nullcontext() if torch.is_grad_enabled() else torch.inference_mode()


# From this many entries up, a float32 tanh on CPU runs as ``2 sigmoid(2z) - 1`` (tanh_via_sigmoid); below it the
# extra operations cost more than the slow kernel. One thread, forward and backward: (128, 256) 57 µs against
# 105 µs for torch.tanh, (256, 256) 78 against 191; (16, 32) 38 against 20 (benchmarks/kernel_choices.py).
_TANH_VIA_SIGMOID_FROM = 2**15


def tanh_via_sigmoid(z: torch.Tensor, min_entries: int = _TANH_VIA_SIGMOID_FROM) -> torch.Tensor:
    """``tanh(z)``; a float32 CPU tensor's of at least ``min_entries`` entries (default 2^15) as
    ``2 sigmoid(2z) - 1``, the same function to float32 rounding.

    On CPU torch's float32 tanh kernel costs several times its sigmoid
    kernel (``benchmarks/kernel_choices.py``). Where the layers around an
    activation can absorb the factors (:meth:`MLPLayers.rescaled`) the
    solvers fold them into the weights; this is for activations whose
    output is read as it is, such as a network's forward sweep beside its
    written-out derivatives. Recorded, it is one autograd node whose
    backward is tanh's, ``g (1 - h²)``, itself differentiable.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import tanh_via_sigmoid
    >>> z = torch.randn(256, 256)
    >>> bool((tanh_via_sigmoid(z) - torch.tanh(z)).abs().max() < 1e-6)
    True
    """
    if z.dtype != torch.float32 or z.device.type != "cpu" or z.numel() < min_entries:
        return torch.tanh(z)
    if torch.is_grad_enabled() and z.requires_grad:
        return _TanhViaSigmoid.apply(z)
    return torch.mul(z, 2.0).sigmoid_().mul_(2.0).sub_(1.0)


class _TanhViaSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        h = torch.mul(z, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
        ctx.save_for_backward(h)
        return h

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        return TANH_BACKWARD(grad, h)


# Activation-gradient kernels writing into ``grad_input=`` (autograd's own kernels for these activations).
TANH_GRAD = _direct(torch.ops.aten.tanh_backward.grad_input)
# The same kernel returning a new tensor, differentiable (tanh_via_sigmoid's backward, the written-out sweeps).
TANH_BACKWARD = torch.ops.aten.tanh_backward.default
SIGMOID_GRAD = _direct(torch.ops.aten.sigmoid_backward.grad_input)
_THRESHOLD_GRAD = _direct(torch.ops.aten.threshold_backward.grad_input)
_ELU_GRAD = _direct(torch.ops.aten.elu_backward.grad_input)


def _activation_backward(name: str, grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``grad * σ'(z)`` from the activation's output ``out = σ(z)``, written over ``grad``.

    ``grad`` must be a temporary of the caller's (a product's fresh output):
    on CPU a new tensor of a large layer's size lands on memory not touched
    yet, whose first writes cost more than the kernel's arithmetic.
    """
    if name == "tanh":
        return TANH_GRAD(grad, out, grad_input=grad)  # autograd's own kernel for it: grad (1 - out²)
    if name == "relu":
        return _THRESHOLD_GRAD(grad, out, 0, grad_input=grad)
    if name == "softplus":
        return grad.mul_(torch.expm1(-out).neg_())
    if name == "sigmoid":
        return SIGMOID_GRAD(grad, out, grad_input=grad)  # grad out (1 - out)
    return _ELU_GRAD(grad, 1.0, 1, 1, True, out, grad_input=grad)  # α = 1, from the output


# Below this many entries in a layer's output adjoint (rows × out), the layouts below save less than the copy or
# the extra dispatch costs (16 series of a 32-wide layer: 512; benchmarks/kernel_choices.py).
_RELAYOUT_ABOVE = 4096


def transposed_sum(rows: int, n_in: int, n_out: int) -> bool:
    """Whether a layer's weight gradient over ``rows`` rows is summed transposed, ``(Σ xᵀ grad)ᵀ``: where the
    layer reads fewer columns than it writes and the products are large enough for the layout to pay."""
    return n_in < n_out and rows * n_out >= _RELAYOUT_ABOVE


def input_gradient_factor(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` (out, in) as the right factor of ``grad @ weight``, a layer's input adjoint over ``rows`` rows,
    laid out for speed.

    On CPU that product runs several times faster with its right factor
    column-major where it narrows (``out > in``: a field's first layer read
    by a few states, 256 wide to 2, about 4x; the ODE-RNN's 100 or 200 wide
    to 10, about 2x), and as fast either way otherwise (``weight`` is then
    returned as it is). A parameter is row-major, so a narrowing one is
    copied, once per backward pass, where the products are large enough to
    pay for the copy (``benchmarks/kernel_choices.py``).
    """
    if weight.shape[0] > weight.shape[1] and rows * weight.shape[0] >= _RELAYOUT_ABOVE:
        return weight if weight.stride(0) == 1 else weight.t().contiguous().t()
    return weight


def weight_gradient(grads: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_k grads[k]ᵀ inputs[k]`` (out, in): a Linear layer's weight gradient from its output adjoints and inputs.

    Where :func:`transposed_sum` says so, each product is taken with the
    inputs, the narrower side, as its left factor (``(Σ inputsᵀ grads)ᵀ``, as
    for a first layer reading a few states): on CPU that runs the same sum
    up to five times as fast. Pairs after the first are added in place.
    """
    transposed = transposed_sum(grads[0].shape[0], inputs[0].shape[-1], grads[0].shape[-1])
    left, right = (inputs, grads) if transposed else (grads, inputs)
    total = left[0].t() @ right[0]
    for a, b in zip(left[1:], right[1:]):
        total.addmm_(a.t(), b)
    return total.t() if transposed else total


def _stages(coupling, h, activations, box, reads, second_order, y0, k1, weights, biases):
    """``(y1, [k2, ..., ks], layer outputs of each stage)``: the step, stage by stage, in plain tensor operations.

    ``reads`` holds each stage's ``(columns, scale)`` (see :meth:`MLPLayers.at_each`), or is None. A stage's first
    layer output is its network input: the state, then the columns.
    """
    stages, outputs = [k1], []
    for i, row in enumerate(coupling):
        state = y0
        for stage, weight in zip(stages, row):
            if weight != 0.0:
                state = torch.add(state, stage, alpha=weight * h)
        columns, scale = (None, None) if reads is None else reads[i]
        if columns is not None:
            columns = columns.to(state.dtype).expand(state.shape[0], -1)
        x = state if columns is None else torch.cat([state, columns], dim=-1)
        layers = [x]
        for weight, bias, name in zip(weights, biases, activations):
            x = _FORWARD[name](torch.addmm(bias, x, weight.t()))
            layers.append(x)
        slope = torch.addmm(biases[-1], x, weights[-1].t())
        if second_order:
            slope = torch.cat([state[:, second_order:], slope], dim=-1)
        if box is not None:
            slope = _contracted(slope, state, *box)
        if scale is not None:
            slope = slope * scale.reshape(-1, 1)
        stages.append(slope)
        outputs.append(layers)
    return state, stages[1:], outputs


def _contracted(slope: torch.Tensor, state: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, rate: float):
    """``slope − rate · (y − clamp(y, lower, upper))`` on the first ``len(lower)`` components (BoxContraction's)."""
    n = lower.shape[0]
    guarded = state[:, :n]
    outside = guarded - torch.minimum(torch.maximum(guarded, lower), upper)
    pulled = slope[:, :n] - rate * outside
    return pulled if n == slope.shape[1] else torch.cat([pulled, slope[:, n:]], dim=-1)


class MLPStep(torch.autograd.Function):
    """One explicit Runge–Kutta step of ``dy/dt = mlp(y)``: ``(y1, k2, ..., ks)`` from ``(y0, k1)``.

    ``coupling[i]`` are stage ``i + 2``'s weights on the stages before it and
    its last row the solution's, so that ``y1`` is the last stage's state
    (first same as last: ``ks`` is the slope at ``y1``). Arguments:
    ``(coupling, h, activations, box, reads, second_order, y0, k1,
    *parameters)`` with the parameters as ``MLPLayers.parameters()`` orders
    them, ``reads`` each later stage's ``(columns, scale)`` or None (data:
    no gradient reaches them) and ``second_order`` as in
    :class:`MLPLayers`.

    A backward pass that is itself recorded (``create_graph=True``, for a
    second derivative) recomputes the step stage by stage and differentiates
    that, so higher derivatives are exact too, at autograd's cost.
    """

    @staticmethod
    def forward(ctx, coupling, h, activations, box, reads, second_order, y0, k1, *parameters):  # noqa: D102
        ctx.set_materialize_grads(False)  # an output no loss reads (a last slope) gets no adjoint to carry
        state, stages, outputs = _stages(coupling, h, activations, box, reads, second_order, y0, k1,
                                         parameters[0::2], parameters[1::2])  # fmt: skip
        ctx.coupling, ctx.h, ctx.activations, ctx.box, ctx.reads = coupling, h, activations, box, reads
        ctx.second_order = second_order
        ctx.n_inputs = 2 + len(parameters)
        scales = [] if reads is None else [scale for _, scale in reads if scale is not None]
        if scales and len(scales) != len(coupling):
            raise ValueError(f"reads: expected a scale for every stage or for none; got {len(scales)} of "
                             f"{len(coupling)}.")  # fmt: skip
        ctx.scaled = bool(scales)
        # Every layer output (and scale) is saved through autograd (so saved-tensor hooks, e.g. offloading, see them).
        ctx.save_for_backward(y0, k1, *parameters, *(x for layers in outputs for x in layers), *scales)
        return (state, *stages)

    @staticmethod
    def backward(ctx, grad_y1, *grad_stages):  # noqa: D102
        if torch.is_grad_enabled():
            return (None, None, None, None, None, None, *_recorded_backward(ctx, grad_y1, grad_stages))
        coupling, h, activations, box = ctx.coupling, ctx.h, ctx.activations, ctx.box
        saved = ctx.saved_tensors
        weights = saved[2 : ctx.n_inputs : 2]
        n = len(coupling)
        per_stage = len(activations) + 1  # the stage's network input, then each hidden layer's output
        outputs = [saved[ctx.n_inputs + i * per_stage : ctx.n_inputs + (i + 1) * per_stage] for i in range(n)]
        scales = saved[ctx.n_inputs + n * per_stage :] if ctx.scaled else None
        width = saved[0].shape[-1]  # the state's: the network input's columns after it are data
        adjoints: list[torch.Tensor | None] = [None] * n  # of each stage's state, stage 2 to s
        backs: list[torch.Tensor | None] = [None] * len(weights)  # each weight as its input adjoint's right factor
        layer_grads: list[list[torch.Tensor]] = [[] for _ in weights]  # per layer: its output's adjoint, per stage
        layer_inputs: list[list[torch.Tensor]] = [[] for _ in weights]
        for i in reversed(range(n)):
            grad = grad_stages[i]  # the adjoint of stage i + 2: its own, then what later states took from it
            for later in range(i + 1, n):
                weight = coupling[later][i + 1]
                if weight != 0.0 and adjoints[later] is not None:
                    grad = adjoints[later] * (weight * h) if grad is None else grad.add(adjoints[later], alpha=weight * h)
            layers = outputs[i]
            adjoint = None
            if grad is not None:
                if scales is not None:
                    grad = grad * scales[i].reshape(-1, 1)
                pulled = None if box is None else _contraction_backward(grad, layers[0], *box)
                if ctx.second_order:  # the slope's first p columns are the state's velocities
                    carried, grad = grad[:, : ctx.second_order], grad[:, ctx.second_order :]
                for depth in reversed(range(len(weights))):
                    layer_grads[depth].append(grad)
                    layer_inputs[depth].append(layers[depth])
                    if backs[depth] is None:
                        backs[depth] = input_gradient_factor(weights[depth], grad.shape[0])
                    grad = grad @ backs[depth]
                    if depth > 0:
                        grad = _activation_backward(activations[depth - 1], grad, layers[depth])
                if grad.shape[-1] != width:
                    grad = grad[:, :width]
                adjoint = grad if pulled is None else grad.add_(pulled)
                if ctx.second_order:
                    adjoint[:, ctx.second_order :] += carried
            if i == n - 1 and grad_y1 is not None:  # y1 is the last stage's state
                adjoint = grad_y1 if adjoint is None else adjoint + grad_y1
            adjoints[i] = adjoint
        present = [a for a in adjoints if a is not None]
        grad_y0 = torch.stack(present).sum(0) if len(present) > 1 else (present[0] if present else None)
        grad_k1 = None
        for row, adjoint in zip(coupling, adjoints):
            if row[0] != 0.0 and adjoint is not None:
                grad_k1 = adjoint * (row[0] * h) if grad_k1 is None else grad_k1.add(adjoint, alpha=row[0] * h)
        grads = []
        for depth in range(len(weights)):
            if not layer_grads[depth]:
                grads += [None, None]
                continue
            outs, inps = layer_grads[depth], layer_inputs[depth]
            if len(outs) > 1 and outs[0].numel() + inps[0].numel() > _ACCUMULATE_ABOVE:
                grads += [weight_gradient(outs, inps), torch.stack([out.sum(0) for out in outs]).sum(0)]
                continue
            out = torch.cat(outs) if len(outs) > 1 else outs[0]
            inp = torch.cat(inps) if len(inps) > 1 else inps[0]
            grads += [weight_gradient([out], [inp]), out.sum(0)]
        return (None, None, None, None, None, None, grad_y0, grad_k1, *grads)


def _contraction_backward(grad: torch.Tensor, state: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                          rate: float) -> torch.Tensor:
    """The contraction's share of a stage state's adjoint: ``−rate · grad`` where a guarded component is outside."""
    n = lower.shape[0]
    guarded = state[:, :n]
    outside = (guarded < lower) | (guarded > upper)
    pulled = grad[:, :n] * outside * -rate
    return pulled if n == grad.shape[1] else torch.cat([pulled, torch.zeros_like(grad[:, n:])], dim=-1)


def _recorded_backward(ctx, grad_y1, grad_stages) -> tuple:
    """The step's vector-Jacobian product as a recorded graph: the stages again, through autograd."""
    # Views, so that each derivative is the partial one: k1 is itself a function of y0 and the weights.
    inputs = tuple(x.view_as(x) for x in ctx.saved_tensors[: ctx.n_inputs])
    y0, k1, parameters = inputs[0], inputs[1], inputs[2:]
    state, stages, _ = _stages(ctx.coupling, ctx.h, ctx.activations, ctx.box, ctx.reads, ctx.second_order, y0, k1,
                               parameters[0::2], parameters[1::2])  # fmt: skip
    pairs = [(out, grad) for out, grad in zip([state, *stages], [grad_y1, *grad_stages]) if grad is not None]
    wanted = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not pairs or not wanted:
        return (None,) * len(inputs)
    found = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)  # fmt: skip
    grads: list[torch.Tensor | None] = [None] * len(inputs)
    for i, grad in zip(wanted, found):
        grads[i] = grad
    return tuple(grads)


def mlp_step(
    coupling: tuple[tuple[float, ...], ...], h: float, layers: MLPLayers, y0: torch.Tensor, k1: torch.Tensor,
    reads: list[tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
) -> list[torch.Tensor]:
    """``[y1, k2, ..., ks]`` of one step of ``dy/dt = mlp(y)`` (see :class:`MLPStep`); ``reads`` as there."""
    return list(MLPStep.apply(coupling, h, layers.activations, layers.box, reads, layers.second_order, y0, k1,
                              *layers.parameters()))  # fmt: skip
