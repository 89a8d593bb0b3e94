"""The Euler ODE-RNN loop with a hand-written backward pass.

Recorded by autograd, one loop row (an Euler step of the vector field, then a
GRU update) is about forty tiny graph nodes, and on minibatches of tens of
series the engine's bookkeeping and the per-row weight-gradient products cost
as much as the arithmetic. Here the forward runs without recording, keeping
only the activations the backward needs, and the backward walks the rows in
reverse carrying just the state's gradient; every weight's gradient is then
one matrix product over all rows at once, as recurrent-network libraries
compute it. The function is the same as the recorded loop's (tests check
values and gradients against it).

Hidden ``tanh`` layers that feed a linear layer run as sigmoids with rescaled
weights, ``tanh(x) = 2 sigmoid(2x) - 1`` folded into the layers on either
side: the same function, and on CPU a sigmoid costs a fraction of a tanh.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..solvers._rk_mlp import SIGMOID_GRAD, TANH_GRAD, MLPLayers, input_gradient_factor, untracked, weight_gradient

# Hidden activations the loop runs itself ("tanh" is run as a sigmoid of rescaled weights).
FUSED_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def _linear_after_tanh(weight_t: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')`` with ``s @ W' + b' == (2 s - 1) @ W + b``: a layer fed ``tanh = 2 sigmoid - 1``."""
    return 2 * weight_t, bias - weight_t.sum(0)


def field_layers(net: nn.Sequential) -> tuple[tuple[str, ...], list[torch.Tensor]]:
    """The vector field ``net`` (Linear, activation, ..., Linear) as hidden activations and transposed weights.

    Returns the activation of each hidden layer (``"sigmoid"`` for a tanh
    run as a sigmoid of rescaled weights, :meth:`dynlearn.solvers.MLPLayers.rescaled`,
    or ``"relu"``) and ``[W0ᵀ, b0, W1ᵀ, b1, ...]``, built with autograd from
    the parameters, so gradients reach them.
    """
    layers = MLPLayers.of(net).rescaled()
    tensors = [tensor for weight, bias in zip(layers.weights, layers.biases) for tensor in (weight.t(), bias)]
    return layers.activations, tensors


def fusable_field(net: nn.Sequential) -> bool:
    """Whether ``net`` alternates Linear layers with activations the fused loop runs."""
    layers = list(net)
    return (
        len(layers) % 2 == 1
        and all(isinstance(layer, nn.Linear) and layer.bias is not None for layer in layers[::2])
        and all(type(layer) in FUSED_ACTIVATIONS for layer in layers[1::2])
    )


# The multiply-adds of one evaluation (per state) from which moving rows by index pays: the gathers, their
# gradients and their own Python cost more than a small network's work on the rows they spare. Used for the field
# values the loop hands out to the rows that step from the same states again (``ODERNNEncoder(return_velocity=True)``)
# and for running the paper's GRU on the updating series only. On the paper's minibatch
# (``benchmarks/odernn_loop_before_after.py``): the paper's field, 12,000 multiply-adds, gained 6% of an iteration and
# ODERNN's default field, 2,560, lost 4%; the paper's GRU, 8,000, gained 3%, and one of 20 units on a state of 20,
# 3,200, lost 7%.
MULTIPLY_ADDS_WORTH_INDEXING = 4096


def field_multiply_adds(net: nn.Sequential) -> int:
    """The multiply-adds of one evaluation of the field ``net`` (its Linear layers' weights)."""
    return sum(layer.in_features * layer.out_features for layer in net if isinstance(layer, nn.Linear))


def gru_unit_input_layers(gru: Any) -> list[torch.Tensor]:
    """The inputs' share of the paper's GRU's (``_GRUUnit``) first layers, tanh as sigmoid.

    Returns ``[gates_in, gates_in_bias, candidate_in, candidate_in_bias]``,
    the weights transposed (input_dim, width): both gates' first layers side
    by side, then the candidate's.
    """
    n = gru.hidden_dim
    (update, *_), (reset, *_) = gru.update, gru.reset
    candidate = gru.candidate[0]
    gates_in = 2 * torch.cat([update.weight[:, n:], reset.weight[:, n:]]).t()
    return [gates_in, 2 * torch.cat([update.bias, reset.bias]), 2 * candidate.weight[:, n:].t(), 2 * candidate.bias]


def gru_unit_state_layers(gru: Any) -> list[torch.Tensor]:
    """The state's share of the paper's GRU's first layers and its last layers, tanh as sigmoid.

    Returns ``[gates_h, gates_out, gates_out_bias, candidate_h,
    candidate_out, candidate_out_bias]`` (weights transposed), both gates'
    last layers as one block-diagonal product. The update gate's last layer
    is negated, so the gates' sigmoid gives ``1 - z`` (``sigmoid(-x) = 1 -
    sigmoid(x)``), then ``r``: the update is then ``h + (1 - z)(c - h)``,
    whose step towards ``c`` a mask can scale.
    """
    n = gru.hidden_dim
    (update, _, update_out, _), (reset, _, reset_out, _) = gru.update, gru.reset
    candidate, _, candidate_out = gru.candidate
    gates_h = 2 * torch.cat([update.weight[:, :n], reset.weight[:, :n]]).t()
    gates_out, gates_out_bias = _linear_after_tanh(
        torch.block_diag(-update_out.weight, reset_out.weight).t(), torch.cat([-update_out.bias, reset_out.bias])
    )
    candidate_h = 2 * candidate.weight[:, :n].t()
    candidate_out_t, candidate_out_bias = _linear_after_tanh(candidate_out.weight.t(), candidate_out.bias)
    return [gates_h, gates_out, gates_out_bias, candidate_h, candidate_out_t, candidate_out_bias]


def gru_unit_tensors(gru: Any, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The paper's GRU (``_GRUUnit``) for the rows of ``inputs`` (n_rows, batch, input_dim), tanh as sigmoid.

    Returns ``[gates_x, candidate_x, *gru_unit_state_layers(gru)]``: the
    inputs' share of the first layers for every row
    (:func:`gru_unit_input_layers`), then the state's share and the last
    layers (:func:`gru_unit_state_layers`).
    """
    gates_in, gates_in_bias, candidate_in, candidate_in_bias = gru_unit_input_layers(gru)
    gates_x = nn.functional.linear(inputs, gates_in.t(), gates_in_bias)
    candidate_x = nn.functional.linear(inputs, candidate_in.t(), candidate_in_bias)
    return [gates_x, candidate_x, *gru_unit_state_layers(gru)]


def gru_cell_tensors(cell: nn.GRUCell, inputs: torch.Tensor) -> list[torch.Tensor]:
    """:class:`torch.nn.GRUCell` for the rows of ``inputs`` (n_rows, batch, input_dim).

    Returns ``[projected_x, weight_hh_t, bias_hh]``: the input projection of
    every row (reset, update and candidate parts), then the state's weights.
    """
    projected = nn.functional.linear(inputs, cell.weight_ih, cell.bias_ih)
    return [projected, cell.weight_hh.t(), cell.bias_hh]


def _weight_grads(inputs: torch.Tensor, grads: torch.Tensor, bias: bool = True) -> list[torch.Tensor]:
    """A layer's weight (transposed) and bias gradients over every row: ``Σ_k inputs[k]ᵀ grads[k]``, ``Σ grads``.

    Without ``bias``, only the weight's (a layer whose bias another product carries).
    """
    flat_grads, flat_inputs = grads.reshape(-1, grads.shape[-1]), inputs.reshape(-1, inputs.shape[-1])
    weight = weight_gradient([flat_grads], [flat_inputs]).t()
    return [weight, flat_grads.sum(0)] if bias else [weight]


class _EulerGRULoop(torch.autograd.Function):
    """Rows of ``h ← h + gap·f(h)`` then ``h ← GRU(x_k, h)`` (where the row observes something).

    The forward writes every activation the backward needs into one buffer
    per layer (rows first), and the backward writes each layer's gradient into
    another, so the deferred weight products read them without copying. Every
    buffer is split into its rows once (``unbind``): indexing a row inside the
    loop would dispatch one operation per row and buffer.

    With the paper's GRU, the gate gives ``1 - z`` directly (see
    :func:`gru_unit_state_layers`) and the update is ``h + (1 - z)(c - h)``.
    A paper's GRU of at least ``MULTIPLY_ADDS_WORTH_INDEXING`` multiply-adds
    an update runs only for the series that observe something at a row
    (about half of them at each row on the paper's data): its buffers hold
    the updates row after row, each row's rows gathered from the state
    (``index_select``) and written back (``index_copy``), and the weights'
    gradients are products over the updates alone. A smaller one runs for
    every series, and a ``-inf`` logit of the update gate keeps the state of
    those that observe nothing: ``1 - z = sigmoid(-inf) = 0``, its gradient
    exactly 0.

    Each Euler step's field value ``f(h)`` is written into a third output
    (at the row of the state it was evaluated at) instead of a temporary:
    callers that step the same states again, as the ODE-RNN's loss does for
    the rows it hid from the encoder, take their first step from it, and its
    gradient joins the step's own in the operation that scales it by the gap.
    """

    @staticmethod
    def forward(ctx: Any, config: tuple, gaps: torch.Tensor, update: torch.Tensor, *tensors: torch.Tensor):
        activations, gru_kind, moves, updates_all, compact = config
        n_field = 2 * (len(activations) + 1)
        field, gru = tensors[:n_field], tensors[n_field:]
        n_rows, batch, _ = gaps.shape
        hidden_dim = field[-1].shape[0]
        moving = [k for k in range(1, n_rows) if moves[k]]
        new = gaps.new_empty
        states, priors = new(n_rows, batch, hidden_dim), new(n_rows, batch, hidden_dim)
        # The field at each state, where the next row's Euler step evaluates it; 0 at the rows where none does.
        velocity = new(n_rows, batch, hidden_dim)
        for k in range(n_rows):
            if k + 1 == n_rows or not moves[k + 1]:
                velocity[k].zero_()
        # Each hidden layer's output at every moving row, then the update's lever: c - h for the paper's GRU,
        # h - c for GRUCell. Buffers that a row's product adds to start out holding what it adds to (the bias, the
        # input's share), so the loop adds the product in place: no copy of the bias into every row first.
        layer_outputs = [
            _filled(new(len(moving), batch, field[2 * i].shape[1]), field[2 * i + 1]) for i in range(len(activations))
        ]
        weight = update.to(gaps.dtype)
        gap_k, state_k, prior_k, velocity_k = _rows(gaps, states, priors, velocity)
        outputs_j = [_rows(buffer)[0] for buffer in layer_outputs]
        if gru_kind == "unit":
            inputs, gates_in, gates_in_bias, candidate_in, candidate_in_bias, *state_layers = gru
            gates_h, gates_out, gates_out_bias, candidate_h, candidate_out, candidate_bias = state_layers
            # A GRU with enough work per state runs only for the series that observe something at a row: the
            # updates, row after row, are the rows of compact buffers, counts[k] of them at row k (series_k[k]
            # say which series). A smaller one runs for every series, as the updates of all of them, and a -inf
            # logit of the update gate keeps the others' state: 1 - z = sigmoid(-inf) = 0, gradient exactly 0.
            updates, counts, series_k = _updates(update) if compact else (None, [batch] * n_rows, None)
            flat_inputs = inputs.reshape(-1, inputs.shape[-1])
            # The inputs' share of the first layers, for every update at once, straight into the rows' buffers.
            compact_inputs = flat_inputs if updates is None else flat_inputs.index_select(0, updates)
            n_updates = len(compact_inputs)
            gates = _projected(compact_inputs, gates_in, gates_in_bias)
            hidden_c = _projected(compact_inputs, candidate_in, candidate_in_bias)
            zr, hr = _filled(new(n_updates, 2 * hidden_dim), gates_out_bias), new(n_updates, hidden_dim)
            lever = _filled(new(n_updates, hidden_dim), candidate_bias)
            # The GRU's input states: gathered into a buffer of their own, or the priors themselves.
            gru_h = new(n_updates, hidden_dim) if compact else None
            if not compact and not all(updates_all):
                zr[:, :hidden_dim].masked_fill_(~update.reshape(-1, 1), -math.inf)
            buffers = [gates, zr, hr, hidden_c] + ([gru_h] if compact else [])
            gates_k, zr_k, hr_k, hidden_c_k, lever_k, keep_k, r_k = (
                buffer.split(counts) for buffer in (*buffers[:4], lever, zr[:, :hidden_dim], zr[:, hidden_dim:])
            )
            gru_h_k = gru_h.split(counts) if compact else None
        else:
            lever = new(n_rows, batch, hidden_dim)
            (lever_k,) = _rows(lever)
            projected, weight_hh_t, bias_hh = gru
            two = 2 * hidden_dim
            hh, rz, c_out = _filled(new(*projected.shape), bias_hh), new(n_rows, batch, two), new(*states.shape)
            buffers = [hh, rz, c_out]
            hh_k, rz_k, c_out_k = _rows(hh, rz, c_out)
            gates_x_k, candidate_x_k = _rows(projected[..., :two], projected[..., two:])
            hh_gates_k, hh_candidate_k = _rows(hh[..., :two], hh[..., two:])
            r_k, z_k = _rows(rz[..., :hidden_dim], rz[..., hidden_dim:])
        h = gaps.new_zeros(batch, hidden_dim)
        j = 0
        with untracked():
            for k in range(n_rows):
                if k > 0 and moves[k]:
                    a = _hidden_forward(h, field, activations, outputs_j, j)
                    f = torch.addmm(field[-1], a, field[-2], out=velocity_k[k - 1])
                    h = torch.addcmul(h, gap_k[k], f, out=prior_k[k])
                    j += 1
                else:
                    h = prior_k[k].copy_(h)
                if gru_kind == "unit":
                    n = counts[k]
                    if n == 0:
                        h = state_k[k].copy_(h)
                        continue
                    if n < batch:
                        x = torch.index_select(h, 0, series_k[k], out=gru_h_k[k])
                    else:  # every series (the priors' row itself when the GRU runs for every series anyway)
                        x = gru_h_k[k].copy_(h) if compact else h
                    hidden = gates_k[k].addmm_(x, gates_h).sigmoid_()
                    zr_k[k].addmm_(hidden, gates_out).sigmoid_()
                    h_reset = torch.mul(x, r_k[k], out=hr_k[k])
                    candidate = hidden_c_k[k].addmm_(h_reset, candidate_h).sigmoid_()
                    step = lever_k[k].addmm_(candidate, candidate_out).sub_(x)
                    if n == batch:
                        h = torch.addcmul(x, keep_k[k], step, out=state_k[k])
                    else:
                        h = torch.index_copy(h, 0, series_k[k], torch.addcmul(x, keep_k[k], step), out=state_k[k])
                else:
                    hh_k[k].addmm_(h, weight_hh_t)
                    torch.add(hh_gates_k[k], gates_x_k[k], out=rz_k[k]).sigmoid_()
                    c = torch.addcmul(candidate_x_k[k], r_k[k], hh_candidate_k[k], out=c_out_k[k]).tanh_()
                    d = torch.sub(h, c, out=lever_k[k])
                    if updates_all[k]:
                        h = torch.addcmul(c, z_k[k], d, out=state_k[k])
                    else:
                        h = torch.where(update[k], torch.addcmul(c, z_k[k], d), h, out=state_k[k])
        ctx.config = config
        ctx.moving = moving
        ctx.set_materialize_grads(False)  # an output the caller leaves unused costs its backward nothing
        ctx.save_for_backward(gaps, weight, states, priors, lever, *layer_outputs, *buffers, *tensors)
        # The saved buffers' rows as the forward split them, for the backward to read: splitting a buffer into
        # its rows costs about a microsecond a row (views of the saved buffers: no memory of their own). Not the
        # priors': rows split before the tensor became this function's output made the backward slower.
        if gru_kind == "unit":
            ctx.rows = (gap_k, lever_k, outputs_j, gates_k, zr_k, hidden_c_k, keep_k, r_k, gru_h_k, counts, series_k)
            ctx.updates = updates
        else:
            ctx.rows = (gap_k, lever_k, outputs_j, rz_k, c_out_k, r_k, z_k, hh_candidate_k)
        return states, priors, velocity

    @staticmethod
    def backward(ctx: Any, grad_states: torch.Tensor | None, grad_priors: torch.Tensor | None,
                 grad_velocity: torch.Tensor | None):
        activations, gru_kind, moves, updates_all, compact = ctx.config
        n_hidden = len(activations)
        _, weight, states, priors, _, *rest = ctx.saved_tensors  # the gaps and the lever: read by rows (ctx.rows)
        layer_outputs, rest = rest[:n_hidden], rest[n_hidden:]
        n_buffers = (5 if compact else 4) if gru_kind == "unit" else 3
        buffers, tensors = rest[:n_buffers], rest[n_buffers:]
        n_field = 2 * (n_hidden + 1)
        field, gru = tensors[:n_field], tensors[n_field:]
        n_rows, batch, hidden_dim = states.shape
        moving = ctx.moving
        new = states.new_empty
        field_back = [input_gradient_factor(field[2 * i].t(), batch) for i in range(n_hidden + 1)]
        # Each layer's gradient at its pre-activation (the last layer's: at the field's output), per moving row.
        field_grads = [new(len(moving), batch, field[2 * i].shape[1]) for i in range(n_hidden + 1)]
        field_grads_j = [_rows(buffer)[0] for buffer in field_grads]
        grad_states, grad_priors = (torch.zeros_like(states) if g is None else g for g in (grad_states, grad_priors))
        grad_states_k, grad_priors_k = _rows(grad_states, grad_priors)
        grad_velocity_k = None if grad_velocity is None else _rows(grad_velocity)[0]
        gap_k, lever_k, outputs_j, *gru_rows = ctx.rows
        if gru_kind == "unit":
            gates, zr, hr, hidden_c = buffers[:4]
            gates_k, zr_k, hidden_c_k, keep_k, r_k, gru_h_k, counts, series_k = gru_rows
            if compact:
                gru_h = buffers[4]
            else:  # the GRU ran for every series, from the priors' rows
                gru_h = priors.reshape(-1, hidden_dim)
                gru_h_k = gru_h.split(counts)
            gates_back, gates_out_back, candidate_h_back, candidate_out_back = (
                input_gradient_factor(gru[i].t(), batch) for i in (5, 6, 8, 9)
            )
            g_gates, g_zr, g_hidden_c, g_c = new(*gates.shape), new(*zr.shape), new(*hidden_c.shape), new(*gru_h.shape)
            g_gates_k, g_zr_k, g_hidden_c_k, g_c_k, g_keep_k, g_r_k = (
                buffer.split(counts) for buffer in (g_gates, g_zr, g_hidden_c, g_c, g_zr[:, :hidden_dim], g_zr[:, hidden_dim:])
            )
        else:
            hh = buffers[0]
            rz_k, c_out_k, r_k, z_k, hh_candidate_k = gru_rows
            weight_hh = gru[1].t()
            two = 2 * hidden_dim
            g_projected, g_hh = new(*hh.shape), new(*hh.shape)
            weight_k = None if all(updates_all) else _rows(weight)[0]
            (g_hh_k,) = _rows(g_hh)
            (g_hh_candidate_k,) = _rows(g_hh[..., two:])
            g_gates_k, g_r_k, g_z_k, g_candidate_k = _rows(
                g_projected[..., :two], g_projected[..., :hidden_dim], g_projected[..., hidden_dim:two],
                g_projected[..., two:],
            )
        # Every g below is a temporary of this loop, so sums and products accumulate into it in place.
        g = torch.zeros_like(grad_states_k[0])
        j = len(moving)
        with untracked():
            for k in range(n_rows - 1, -1, -1):
                g.add_(grad_states_k[k])
                if gru_kind == "unit":
                    # x' = x + (1 - z) (c - x) for the series that update (x: their prior rows); the others keep g.
                    n = counts[k]
                    if n:
                        x = gru_h_k[k]
                        g_x = g if n == batch else g.index_select(0, series_k[k])
                        torch.mul(g_x, lever_k[k], out=g_keep_k[k])  # lever holds c - x, the gate's first half 1 - z
                        g_candidate = torch.mul(g_x, keep_k[k], out=g_c_k[k])
                        back = torch.mm(g_candidate, candidate_out_back, out=g_hidden_c_k[k])
                        g_pre_c = SIGMOID_GRAD(back, hidden_c_k[k], grad_input=back)
                        g_hr = g_pre_c.mm(candidate_h_back)
                        torch.mul(g_hr, x, out=g_r_k[k])
                        g_pre_zr = SIGMOID_GRAD(g_zr_k[k], zr_k[k], grad_input=g_zr_k[k])
                        back = torch.mm(g_pre_zr, gates_out_back, out=g_gates_k[k])
                        g_pre_gates = SIGMOID_GRAD(back, gates_k[k], grad_input=back)
                        g_x = torch.sub(g_x, g_candidate).addcmul_(g_hr, r_k[k]).addmm_(g_pre_gates, gates_back)
                        g = g_x if n == batch else g.index_copy_(0, series_k[k], g_x)
                    g_h = g
                else:
                    # h' = c + z (h - c) where the row updates, h elsewhere; lever holds h - c.
                    g_new = g if updates_all[k] else g * weight_k[k]
                    g_h = g_new * z_k[k]
                    g_pre_c = TANH_GRAD(g_new - g_h, c_out_k[k], grad_input=g_candidate_k[k])
                    torch.mul(g_pre_c, r_k[k], out=g_hh_candidate_k[k])
                    torch.mul(g_pre_c, hh_candidate_k[k], out=g_r_k[k])
                    torch.mul(g_new, lever_k[k], out=g_z_k[k])
                    g_pre_rz = SIGMOID_GRAD(g_gates_k[k], rz_k[k], grad_input=g_gates_k[k])
                    g_hh_k[k][:, :two].copy_(g_pre_rz)
                    if not updates_all[k]:
                        g_h = g_h + (g - g_new)
                    g_h = g_h.addmm_(g_hh_k[k], weight_hh)
                g = g_h.add_(grad_priors_k[k])
                if k > 0 and moves[k]:
                    j -= 1
                    g = _euler_step_backward(g, gap_k[k], field_back, activations, outputs_j, field_grads_j, j,
                                             None if grad_velocity_k is None else grad_velocity_k[k - 1])
        grads: list[torch.Tensor] = []
        if moving:
            before_step = states[[k - 1 for k in moving]]
            for i, layer_grads in enumerate(field_grads):
                grads += _weight_grads(before_step if i == 0 else layer_outputs[i - 1], layer_grads)
        else:
            grads += [torch.zeros_like(tensor) for tensor in field]
        if gru_kind == "unit":
            gates_out_grads = _weight_grads(gates, g_zr)
            candidate_out_grads = _weight_grads(hidden_c, g_c)
            inputs, gates_in, _, candidate_in = gru[:4]
            flat_inputs = inputs.reshape(-1, inputs.shape[-1])
            compact_inputs = flat_inputs if ctx.updates is None else flat_inputs.index_select(0, ctx.updates)
            g_inputs = None
            if ctx.needs_input_grad[3 + n_field]:
                g_compact = g_gates.matmul(gates_in.t()).add_(g_hidden_c.matmul(candidate_in.t()))
                if ctx.updates is not None:
                    g_compact = torch.zeros_like(flat_inputs).index_copy_(0, ctx.updates, g_compact)
                g_inputs = g_compact.view_as(inputs)
            grads += [
                g_inputs,
                *_weight_grads(compact_inputs, g_gates),
                *_weight_grads(compact_inputs, g_hidden_c),
                *_weight_grads(gru_h, g_gates, bias=False),
                *gates_out_grads,
                *_weight_grads(hr, g_hidden_c, bias=False),
                *candidate_out_grads,
            ]
        else:
            grads += [g_projected, *_weight_grads(priors, g_hh)]
        return (None, None, None, *grads)


class _EulerRows(torch.autograd.Function):
    """Rows of states, each taking its own number of equal Euler steps ``h ← h + dt·f(h)``, as one node.

    The rows come sorted by their number of steps, most first, so the rows
    still stepping at step ``i`` are the first ``counts[i]``: each step is a
    few products on a prefix of one state buffer, with no gather or scatter.
    The forward keeps every step's input and hidden layer outputs in one
    buffer per layer (the steps one after another); the backward walks the
    steps in reverse carrying the states' gradient, and each weight's
    gradient is one product over every row of every step (as
    :class:`_EulerGRULoop` does for its rows).
    """

    @staticmethod
    def forward(ctx: Any, activations: tuple, counts: tuple, dt: torch.Tensor, h0: torch.Tensor, *field: torch.Tensor):
        new = h0.new_empty
        total = sum(counts)
        inputs = new(total, h0.shape[1])
        layer_outputs = [_filled(new(total, field[2 * i].shape[1]), field[2 * i + 1]) for i in range(len(activations))]
        h, start = h0.clone(), 0
        with untracked():
            for m in counts:
                rows = slice(start, start + m)
                a = _hidden_forward(inputs[rows].copy_(h[:m]), field, activations, layer_outputs, rows)
                h[:m].addcmul_(dt[:m], torch.addmm(field[-1], a, field[-2]))
                start += m
        ctx.activations, ctx.counts = activations, counts
        ctx.save_for_backward(dt, inputs, *layer_outputs, *field)
        return h

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor):
        activations, counts = ctx.activations, ctx.counts
        n_hidden = len(activations)
        dt, inputs, *rest = ctx.saved_tensors
        layer_outputs, field = rest[:n_hidden], rest[n_hidden:]
        back = [input_gradient_factor(field[2 * i].t(), counts[0] if counts else 0) for i in range(n_hidden + 1)]
        field_grads = [inputs.new_empty(inputs.shape[0], field[2 * i].shape[1]) for i in range(n_hidden + 1)]
        g, end = grad_h.clone(), inputs.shape[0]
        with untracked():
            for m in reversed(counts):
                _euler_step_backward(g[:m], dt[:m], back, activations, layer_outputs, field_grads, slice(end - m, end))
                end -= m
        grads: list[torch.Tensor] = []
        for i, layer_grads in enumerate(field_grads):
            grads += _weight_grads(inputs if i == 0 else layer_outputs[i - 1], layer_grads)
        return (None, None, None, g, *grads)


def euler_rows(h: torch.Tensor, dt: torch.Tensor, n_steps: torch.Tensor, field_net: nn.Sequential) -> torch.Tensor:
    """Each row of ``h`` after its ``n_steps`` Euler steps of length ``dt`` of the vector field ``field_net``.

    The same states as stepping every row once, then only the rows with
    steps left, by :func:`dynlearn.solvers.fixed_step` (tests check values
    and gradients against it), with one autograd node for the whole rollout.
    ``dt`` gets no gradient: callers with steps that need one step the
    recorded way.

    Parameters
    ----------
    h : Tensor of shape (n_rows, hidden_dim)
    dt : Tensor of shape (n_rows, 1)
        Each row's step (zero holds the row).
    n_steps : Tensor of shape (n_rows, 1)
        Each row's number of steps, at least one.
    field_net : nn.Sequential
        The vector field (see :func:`fusable_field`).

    Returns
    -------
    Tensor of shape (n_rows, hidden_dim)
    """
    activations, field = field_layers(field_net)
    steps = n_steps.reshape(-1).long()
    order = torch.argsort(steps, descending=True, stable=True)
    # counts[i]: the rows with more than i steps, which step at step i (one host sync for all of them).
    counts = tuple(torch.bincount(steps).flip(0).cumsum(0).flip(0)[1:].tolist())
    stepped = _EulerRows.apply(activations, counts, dt.index_select(0, order), h.index_select(0, order), *field)
    return torch.empty_like(stepped).index_copy(0, order, stepped)  # back in the rows' own order


def _hidden_forward(x: torch.Tensor, field: Sequence[torch.Tensor], activations: tuple, outputs: Sequence, at: Any):
    """The field's hidden layers at ``x``, each added in place into ``outputs[i][at]`` (which holds its bias):
    the last hidden layer's output. ``at``: a row of a tuple of rows, or a slice of a buffer."""
    for i, act in enumerate(activations):
        x = outputs[i][at].addmm_(x, field[2 * i])
        x = x.sigmoid_() if act == "sigmoid" else x.relu_()
    return x


def _euler_step_backward(g: torch.Tensor, gap: torch.Tensor, backs: Sequence[torch.Tensor], activations: tuple,
                         outputs: Sequence, grads: Sequence, at: Any, grad_f: torch.Tensor | None = None) -> torch.Tensor:
    """``g + J_fᵀ (gap g)`` written over ``g``, the state's gradient before an Euler step ``h + gap f(h)``.

    ``backs`` are the field's weights as its input adjoints' right factors,
    ``outputs[i][at]`` the hidden layers' outputs at that step, and each
    layer's pre-activation gradient (the last's: at the field's output) is
    written into ``grads[i][at]``, for the weights' gradients. ``grad_f``:
    a gradient of ``f(h)`` itself, where the step's field value is also an
    output (``J_fᵀ (gap g + grad_f)``, in the same one operation).
    """
    if grad_f is None:
        g_layer = torch.mul(g, gap, out=grads[-1][at])
    else:
        g_layer = torch.addcmul(grad_f, g, gap, out=grads[-1][at])
    for i in range(len(activations) - 1, -1, -1):
        back = torch.mm(g_layer, backs[i + 1], out=grads[i][at])
        if activations[i] == "sigmoid":
            g_layer = SIGMOID_GRAD(back, outputs[i][at], grad_input=back)
        else:
            g_layer = back.mul_(outputs[i][at] > 0)
    return g.addmm_(g_layer, backs[0])


def _projected(inputs: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``inputs @ weight_t + bias`` for ``inputs`` (n_rows, batch, input_dim), in a new buffer of its own."""
    out = inputs.new_empty(*inputs.shape[:-1], weight_t.shape[1])
    torch.addmm(bias, inputs.reshape(-1, inputs.shape[-1]), weight_t, out=out.view(-1, weight_t.shape[1]))
    return out


def _filled(buffer: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``buffer`` with ``bias`` written into every row (one copy for all rows, not one per row)."""
    return buffer.copy_(bias.expand_as(buffer))


def _updates(update: torch.Tensor) -> tuple[torch.Tensor, list[int], tuple[torch.Tensor, ...]]:
    """The updates of ``update`` (n_rows, batch, 1), bool, row after row: their flat indices ``row * batch +
    series``, how many each row has, and each row's series (one host sync)."""
    flat = update.reshape(-1)
    updates = flat.nonzero().squeeze(1)
    counts = update.reshape(update.shape[0], -1).sum(1).tolist()
    return updates, counts, (updates % update.shape[1]).split(counts)


def _rows(*buffers: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Each buffer (rows first) as a tuple of its rows, split once."""
    return [buffer.unbind(0) for buffer in buffers]


def euler_gru_loop(
    gaps: torch.Tensor,
    update: torch.Tensor,
    moves: Sequence[bool],
    updates_all: Sequence[bool],
    field_net: nn.Sequential,
    gru: Any,
    inputs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the ODE-RNN rows with Euler steps: states after each row's update, priors before it, and the field
    at each state.

    Parameters
    ----------
    gaps : Tensor of shape (n_rows, batch, 1)
        Each row's Euler step (0 for the first row and for padding).
    update : Tensor of shape (n_rows, batch, 1), bool
        Rows whose GRU update applies.
    moves, updates_all : sequences of bool, one per row
        Rows where any gap is non-zero / where every series updates.
    field_net : nn.Sequential
        The vector field (see :func:`fusable_field`).
    gru : ``_GRUUnit`` or :class:`torch.nn.GRUCell`
    inputs : Tensor of shape (n_rows, batch, input_dim)
        The GRU's input at each row.

    Returns
    -------
    states, priors : Tensors of shape (n_rows, batch, hidden_dim)
    velocity : Tensor of shape (n_rows, batch, hidden_dim)
        ``f(states[k])``, which the Euler step into row ``k + 1`` evaluates,
        at every row ``k`` followed by a moving row; 0 at the others (the
        last row, and rows before one where no series moves).
    """
    activations, field = field_layers(field_net)
    if isinstance(gru, nn.GRUCell):
        gru_kind, gru_tensors = "cell", gru_cell_tensors(gru, inputs)
    else:
        gru_kind, gru_tensors = "unit", [inputs, *gru_unit_input_layers(gru), *gru_unit_state_layers(gru)]
    # The paper's GRU per update: the state's share of both gates' first layers (H x 2U), their block-diagonal last
    # layer (2U x 2H), the candidate's layers (H x U, U x H).
    compact = gru_kind == "unit" and 8 * gru.hidden_dim * gru.update[0].out_features >= MULTIPLY_ADDS_WORTH_INDEXING
    config = (activations, gru_kind, tuple(moves), tuple(updates_all), compact)
    return _EulerGRULoop.apply(config, gaps, update, *field, *gru_tensors)
