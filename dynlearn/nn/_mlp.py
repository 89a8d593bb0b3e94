"""Vector fields made of multilayer perceptrons."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..solvers import MLPLayers
from ._odernn_fused import field_layers, fusable_field

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


def make_mlp(in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """Linear layers of widths ``hidden`` with ``activation`` between them.

    The last layer starts with weights scaled by 0.1: a vector field that
    starts near zero gives short, well-conditioned first solves.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    last = nn.Linear(width, out_dim)
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()
    layers.append(last)
    return nn.Sequential(*layers)


def _network_input(t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None, time_dependent: bool,
                   n_inputs: int) -> torch.Tensor:
    """``[y, u, t]``: the state, the known inputs (when the field takes any) and time (when it depends on it)."""
    if not (n_inputs or time_dependent):
        return y
    return torch.cat([y, _columns(t, u, time_dependent, n_inputs, y.shape[0], y.dtype)], dim=-1)


def _columns(t: torch.Tensor, u: torch.Tensor | None, time_dependent: bool, n_inputs: int, batch: int | None,
             dtype: torch.dtype) -> torch.Tensor:
    """``[u, t]``: what the network reads after the state, ``(batch, m)`` (``(1, 1)`` for one time and no
    ``u`` when ``batch`` is None: it broadcasts over the batch)."""
    parts = []
    if n_inputs:
        if u is None or u.dim() != 2 or u.shape[1] != n_inputs or (batch is not None and u.shape[0] != batch):
            received = "none" if u is None else f"shape {tuple(u.shape)}"
            raise ValueError(
                f"u: expected inputs of shape (batch={batch if batch is not None else 'n_series'}, "
                f"n_inputs={n_inputs}); got {received}. Solve the field with a ControlPath of its inputs."
            )
        parts.append(u.to(dtype))
        batch = u.shape[0]
    if time_dependent:
        time = t.to(dtype).reshape(-1, 1)
        parts.append(time if batch is None else time.expand(batch, 1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _declared(net: nn.Sequential, time_dependent: bool, n_inputs: int, second_order: int = 0) -> MLPLayers | None:
    """``net``'s layers reading ``[y, u, t]`` (see :class:`MLPLayers`), None where its activations do not allow."""
    layers = MLPLayers.of(net)
    if layers is None:
        return None
    dtype = net[0].weight.dtype
    columns = None
    if time_dependent or n_inputs:
        columns = lambda t, u: _columns(t, u, time_dependent, n_inputs, None, dtype)  # noqa: E731
    return dataclasses.replace(layers, columns=columns, second_order=second_order)


class MLPVectorField(nn.Module):
    """``dy/dt = mlp(y)``, ``mlp([y, t])``, ``mlp([y, u])`` or ``mlp([y, u, t])``.

    Parameters
    ----------
    state_dim : int
        Dimension of the state ``y``.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : str
        A name of :data:`dynlearn.nn.ACTIVATIONS`.
    time_dependent : bool
        Feed time to the network as an extra input.
    n_inputs : int, default=0
        Known inputs ``u`` the field is driven by (``forward(t, y, u)``).
    """

    def __init__(self, state_dim: int, hidden: Sequence[int], activation: str = "tanh", time_dependent: bool = False,
                 n_inputs: int = 0):
        super().__init__()
        self.time_dependent = time_dependent
        self.n_inputs = n_inputs
        self.net = make_mlp(state_dim + n_inputs + int(time_dependent), state_dim, hidden, activation)

    def forward(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``dy/dt`` of shape ``(batch, state_dim)`` at states ``y`` (time ``t`` when time-dependent, inputs ``u``)."""
        return self.net(_network_input(t, y, u, self.time_dependent, getattr(self, "n_inputs", 0)))

    def mlp_layers(self) -> MLPLayers | None:
        """The layers, where their activations are ones an adaptive Runge–Kutta step can run itself.

        A field of time or of known inputs declares what its network reads
        after the state (``MLPLayers.columns``: ``[u, t]``). None with other
        activations; adaptive Runge–Kutta solves then evaluate the field
        stage by stage (see :class:`dynlearn.solvers.MLPLayers`).
        """
        if type(self).forward is not MLPVectorField.forward:
            return None  # a subclass that computes something else must not be stepped as the plain network
        return _declared(self.net, self.time_dependent, getattr(self, "n_inputs", 0))


class SecondOrderField(nn.Module):
    """``d[z, v]/dt = [v, a(z, v[, u][, t])]``: a second-order ODE as a first-order one."""

    def __init__(self, position_dim: int, hidden: Sequence[int], activation: str = "tanh", time_dependent: bool = False,
                 n_inputs: int = 0):
        super().__init__()
        self.position_dim = position_dim
        self.time_dependent = time_dependent
        self.n_inputs = n_inputs
        self.net = make_mlp(2 * position_dim + n_inputs + int(time_dependent), position_dim, hidden, activation)

    def forward(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``[v, a]`` of shape ``(batch, 2 * position_dim)`` at states ``y = [z, v]`` (inputs ``u``)."""
        velocity = y[:, self.position_dim :]
        acceleration = self.net(_network_input(t, y, u, self.time_dependent, getattr(self, "n_inputs", 0)))
        return torch.cat([velocity, acceleration], dim=-1)

    def mlp_layers(self) -> MLPLayers | None:
        """The acceleration network's layers with ``second_order`` set (see :meth:`MLPVectorField.mlp_layers`)."""
        if type(self).forward is not SecondOrderField.forward:
            return None
        return _declared(self.net, self.time_dependent, getattr(self, "n_inputs", 0), self.position_dim)


# Parameter-free activations called as functions by mlp_function.
_FUNCTIONAL = {nn.Tanh: torch.tanh, nn.ReLU: torch.relu, nn.SiLU: nn.functional.silu}


def mlp_function(net: nn.Sequential, *, rescaled: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` as a plain function of its current parameters, without a module call per layer.

    Solvers call a vector field many times per step; on small batches the
    cost is the per-module call overhead, not the arithmetic.

    Parameters
    ----------
    net : torch.nn.Sequential
        Linear layers and parameter-free activations, as :func:`make_mlp` builds.
    rescaled : bool, default=False
        Where ``net`` alternates Linear layers with tanh or ReLU, run hidden
        tanh layers as sigmoids of rescaled weights: the same function,
        cheaper on CPU, but the weights are read when this is called, so the
        function must be rebuilt after every parameter update.

    Returns
    -------
    callable
        ``x -> net(x)`` on tensors of shape ``(..., in_dim)``; gradients reach
        ``net``'s parameters.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import make_mlp, mlp_function
    >>> net = make_mlp(2, 2, (8,))
    >>> x = torch.randn(5, 2)
    >>> torch.allclose(mlp_function(net, rescaled=True)(x), net(x), atol=1e-6)
    True
    """
    if rescaled and fusable_field(net):
        activations, tensors = field_layers(net)
        hidden = [(tensors[2 * i], tensors[2 * i + 1], act) for i, act in enumerate(activations)]
        last_t, last_bias = tensors[-2], tensors[-1]

        def apply_rescaled(x: torch.Tensor) -> torch.Tensor:
            for weight_t, bias, act in hidden:
                x = torch.addmm(bias, x, weight_t)
                x = torch.sigmoid(x) if act == "sigmoid" else torch.relu(x)
            return torch.addmm(last_bias, x, last_t)

        return apply_rescaled
    layers: list[Any] = []
    for layer in net:
        if isinstance(layer, nn.Linear):
            layers.append((layer.weight, layer.bias))
        else:
            layers.append(_FUNCTIONAL.get(type(layer), layer))

    def apply(x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = nn.functional.linear(x, *layer) if isinstance(layer, tuple) else layer(x)
        return x

    return apply
