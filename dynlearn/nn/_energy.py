"""Vector fields derived from a learned scalar: a Hamiltonian H(q, p) or a Lagrangian L(q, q̇).

States are laid out as ``(batch, 2 * n_coordinates)``: the generalised
coordinates first, then their momenta (Hamiltonian) or velocities
(Lagrangian). Derivatives of the scalar are taken with ``torch.autograd``;
while gradients are being recorded they keep their graph, so a loss on the
vector field trains the scalar's weights.

The gradient of a Hamiltonian network (Linear layers between the
activations of ``_WRITTEN_OUT``, one output) is written out
instead: a backward sweep through the layers in plain tensor operations,
``g = W_L``, then ``g = (g σ'(z_i)) W_i`` from the last hidden layer to the
first. It is the same function as autograd's gradient, but a loss on the
field is then differentiated once through ordinary operations rather than
twice through autograd's backward graph, which on small layers costs more
bookkeeping than arithmetic. A Lagrangian network of the same kind
writes out its gradient the same way, and the velocity rows of its Hessian
as the gradient sweep's directional derivatives
(``Sweep.hessian_rows``): the Euler–Lagrange
accelerations then take no call of ``torch.autograd.grad`` at all.

Known inputs ``u`` (``n_inputs > 0``) act as generalised forces
``B(q) u`` on the momenta (Hamiltonian) or in the Euler–Lagrange equations
(Lagrangian), through a learned :class:`InputMatrix`: with ``u = 0`` the
field is exactly the conservative one, and the energy changes at the rate
``q̇ · B(q) u`` (:meth:`HamiltonianField.input_power`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import IntegrationError
from ._energy_loss import (
    Sweep,
    activation_slopes,
    derivative_loss_node,
    forward_tangents,
    hidden_layers,
    lagrangian_loss_node,
    network_tensors,
    solve_mass,
)
from ._mlp import make_mlp


def _gradient(scalar: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scalar(x)`` of shape (batch,) and its gradient with respect to ``x``.

    The gradient keeps its graph whenever the caller records gradients (a
    training step, or torchdiffeq's adjoint pass), and is computed without
    one under ``torch.no_grad()`` (prediction).
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Under no_grad a view of a tensor that requires grad (a state split into q and p during
        # torchdiffeq's adjoint solve) says it does but leads nowhere, so no graph is ever taken from x there.
        if not create_graph or not x.requires_grad:
            x = x.detach().requires_grad_(True)
        value = scalar(x)
        (grad,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
    return value, grad


# Hidden activations whose derivative the written-out gradient forms (nn.GELU, for one, is left to autograd).
_WRITTEN_OUT = (nn.Tanh, nn.ReLU, nn.Softplus, nn.ELU, nn.SiLU)

def _written_out_layers(net: nn.Module, scalar: bool = True) -> tuple[list[nn.Linear], list[nn.Module]] | None:
    """``net``'s Linear layers and hidden activations when its derivatives can be written out, else None.

    That is an ``nn.Sequential`` alternating Linear layers with biases and
    activations of ``_WRITTEN_OUT`` (an ELU of nonnegative ``alpha``), and
    ending in a Linear layer (of one output when ``scalar``), as :func:`make_mlp` builds.
    """
    if type(net) is not nn.Sequential:
        return None
    layers = list(net)
    linears, activations = layers[::2], layers[1::2]
    if not len(layers) % 2 or any(type(layer) is not nn.Linear or layer.bias is None for layer in linears):
        return None
    if scalar and linears[-1].out_features != 1:
        return None
    if any(type(layer) not in _WRITTEN_OUT or (type(layer) is nn.ELU and layer.alpha < 0) for layer in activations):
        return None
    return linears, activations


def _network_gradient(net: nn.Module, x: torch.Tensor, value: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``net(x).squeeze(-1)`` of shape (batch,) and its gradient with respect to ``x`` (batch, in), as :func:`_gradient`.

    For a network of :func:`_written_out_layers` the gradient is written out:
    a forward sweep keeping each hidden layer's input ``z`` and output ``h``,
    then ``g = W_L`` and ``g = (g σ'(z)) W`` back through the hidden layers.
    (:class:`Sweep`, shared with the derivative loss's node). Anything else
    goes through :func:`_gradient`. Either way the gradient
    keeps its graph while gradients are recorded and has none under
    ``torch.no_grad()``. With ``value=False`` the written-out path skips the
    last layer and returns None for the value.
    """
    plan = _written_out_layers(net) if x.dim() == 2 else None
    if plan is None:
        return _gradient(lambda z: net(z).squeeze(-1), x)
    linears, activations = plan
    sweep = Sweep(activations, network_tensors(linears), x)
    energy = None
    if value:
        top = sweep.hs[-1] if sweep.hs else x
        energy = torch.addmm(linears[-1].bias, top, linears[-1].weight.t()).squeeze(-1)
    return energy, sweep.gradient


def jacobian_columns(net: nn.Module, x: torch.Tensor, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``net(x)`` of shape (batch, out) and its Jacobian in the first ``n_columns`` inputs, (batch, out, n_columns).

    For Linear layers between the activations of a written-out gradient
    (tanh, ReLU, softplus, ELU, SiLU; as :func:`make_mlp` builds) the
    Jacobian is the forward pass's tangent along each of those inputs,
    written out: ``ż_0 = W_0[:, i]``, ``ż_{k+1} = (σ'(z_k) ⊙ ż_k) W_{k+1}ᵀ``,
    all columns in the same products. Any other network takes one reverse
    pass of autograd per output. Either way the Jacobian keeps its graph
    while gradients are recorded (a loss on it trains the weights) and has
    none under ``torch.no_grad()``.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import jacobian_columns, make_mlp
    >>> net = make_mlp(3, 2, (8,), "tanh").double()
    >>> x = torch.randn(5, 3, dtype=torch.float64)
    >>> value, jacobian = jacobian_columns(net, x, 2)
    >>> jacobian.shape
    torch.Size([5, 2, 2])
    >>> torch.allclose(jacobian[0], torch.autograd.functional.jacobian(net, x[:1])[0, :, 0, :2])
    True
    """
    plan = _written_out_layers(net, scalar=False) if x.dim() == 2 else None
    if plan is None:
        recording = torch.is_grad_enabled()
        with torch.enable_grad():
            if not recording or not x.requires_grad:
                x = x.detach().requires_grad_(True)
            value = net(x)
            rows = [torch.autograd.grad(value[:, i].sum(), x, create_graph=recording, retain_graph=True)[0]
                    for i in range(value.shape[1])]
        jacobian = torch.stack(rows, dim=1)[:, :, :n_columns]
        return (value, jacobian) if recording else (value.detach(), jacobian.detach())
    linears, activations = plan
    batch = x.shape[0]
    weights = [layer.weight for layer in linears]
    zs, hs = hidden_layers(activations, weights, [layer.bias for layer in linears], x)
    value = F.linear(hs[-1] if hs else x, linears[-1].weight, linears[-1].bias)
    out = linears[-1].weight.t()
    if activations:
        slopes = activation_slopes(activations, zs, hs)
        h_dots: list[torch.Tensor] = []  # every hidden layer's output tangent; the last one's reaches the output
        forward_tangents(weights, slopes, slice(None, n_columns), batch, h_dots)
        jacobian = h_dots[-1].mm(out).view(n_columns, batch, -1).permute(1, 2, 0)
    else:  # a view of the weight, which keeps requiring a gradient under no_grad
        jacobian = out[:n_columns].t().expand(batch, -1, -1)
        jacobian = jacobian if torch.is_grad_enabled() else jacobian.detach()
    return value, jacobian


# The activations whose third derivative LagrangianField.derivative_loss's node writes out.
_SMOOTH = (nn.Tanh, nn.Softplus, nn.ELU, nn.SiLU)
# Above this many multiply-adds per call (rows times the network's weights) LagrangianField.derivative_loss takes
# the recorded path: its node runs 14 products of a wide layer's size where autograd runs 12, which pays only while
# per-operation costs weigh more. speed_vs_peers' lagrangian family (peers(..., sizes=..., iterations=0), one
# thread, two cores), dynlearn / peer on the recorded path and with the node: hidden (32, 32) and 16 rows 0.79 and
# 0.59, (64, 64) and 64 rows 0.82 and 0.63, (256, 256) and 64 rows (4.2 million) 0.88 and 0.80, 128 rows (8.5
# million) 0.92 and 0.89; at 256 rows (17 million) 0.955, 0.956, 0.957 and 0.961, 1.026, 0.983 (three runs each).
_NODE_MULTIPLY_ADDS = 2**24

# What HamiltonianField.derivative_loss's node computes in one pass, so a field that changes them takes its own.
_FIELD_METHODS = ("forward", "gradients", "potential_gradient", "kinetic_gradient")

# The kinds of InputMatrix: its ``kind`` argument and the estimators' ``input_matrix`` choices.
INPUT_MATRICES = ("constant", "positions")


class InputMatrix(nn.Module):
    """The map ``B(q)``, ``(d, n_inputs)``, from known inputs to generalised forces ``B(q) u``.

    Parameters
    ----------
    n_coordinates : int
        Number ``d`` of positions.
    n_inputs : int
        Number of inputs.
    kind : {"constant", "positions"}, default="constant"
        ``"constant"``: ``B`` is a learned matrix, started at zero (the
        untrained model is the unforced one). ``"positions"``: ``B(q)`` is a
        multilayer perceptron of the positions (a force whose lever arm
        depends on the configuration, e.g. a horizontal push on a
        pendulum's bob is a torque ``ℓ cos θ u``). It never reads the
        momenta or velocities, so a forced separable ``H`` keeps explicit
        symplectic steppers.
    hidden : sequence of int, default=()
        Hidden widths of the perceptron of ``"positions"``.
    activation : str, default="tanh"
        A key of :data:`ACTIVATIONS`, for ``"positions"``.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import InputMatrix
    >>> B = InputMatrix(2, 1, "positions", (8,))
    >>> B.force(torch.zeros(5, 2), torch.ones(5, 1)).shape
    torch.Size([5, 2])
    """

    def __init__(self, n_coordinates: int, n_inputs: int, kind: str = "constant", hidden: Sequence[int] = (),
                 activation: str = "tanh"):
        super().__init__()
        if kind not in INPUT_MATRICES:
            raise ValueError(f"kind: expected one of {list(INPUT_MATRICES)}; got {kind!r}. Pick one of them.")
        self.n_coordinates, self.n_inputs, self.kind = n_coordinates, n_inputs, kind
        if kind == "constant":
            self.matrix = nn.Parameter(torch.zeros(n_coordinates, n_inputs))
        else:
            self.net = make_mlp(n_coordinates, n_coordinates * n_inputs, hidden, activation)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``B(q)`` of shape (batch, d, n_inputs) at positions ``q`` of shape (batch, d)."""
        if self.kind == "constant":
            return self.matrix.to(q.dtype).expand(q.shape[0], -1, -1)
        return self.net(q).reshape(q.shape[0], self.n_coordinates, self.n_inputs)

    def force(self, q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The generalised force ``B(q) u`` of shape (batch, d), for inputs ``u`` of shape (batch, n_inputs)."""
        if u is None or u.shape != (q.shape[0], self.n_inputs):
            received = "none" if u is None else f"shape {tuple(u.shape)}"
            raise ValueError(
                f"u: expected inputs of shape (batch={q.shape[0]}, n_inputs={self.n_inputs}); got {received}. "
                "Solve the field with a ControlPath of its inputs."
            )
        u = u.to(q.dtype)
        if self.kind == "constant":
            return u @ self.matrix.to(q.dtype).T
        return (self(q) @ u.unsqueeze(-1)).squeeze(-1)


class _RegressedField(nn.Module):
    """A field whose derivative loss may run as one node: the recorded loss, and when the node's inputs allow it."""

    n_inputs: int

    def _recorded_loss(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                       u: torch.Tensor | None) -> torch.Tensor:
        """``derivative_loss`` through the field's recorded operations."""
        predicted = self(None, x, *([] if u is None else [u]))
        return ((predicted - rates) ** 2 * mask).sum() / mask.sum().clamp_min(1)

    def _node_may_apply(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor, u: torch.Tensor | None,
                        methods: Sequence[str], base: type) -> bool:
        """Whether the loss's inputs and this field leave the node's formula exact: no inputs, gradients recorded
        for the weights only, the shapes it assumes, and ``methods`` as ``base`` defines them (a field changed by a
        subclass or on the instance takes its own loss)."""
        if u is not None or self.n_inputs or not torch.is_grad_enabled() or x.dim() != 2:
            return False
        if any(getattr(type(self), name) is not getattr(base, name) or name in self.__dict__ for name in methods):
            return False
        if x.requires_grad or rates.requires_grad or mask.requires_grad:
            return False
        return rates.shape == x.shape and mask.shape == x.shape  # the formula's broadcasting is the recorded path's


class HamiltonianField(_RegressedField):
    """Hamilton's equations of a learned ``H(q, p)``: ``dq/dt = ∂H/∂p``, ``dp/dt = -∂H/∂q``.

    The vector field is the symplectic gradient of one scalar, so its flow
    conserves ``H`` exactly and preserves phase-space volume, whatever the
    weights (Greydanus, Dzamba & Yosinski, 2019).

    Parameters
    ----------
    n_coordinates : int
        Number ``d`` of positions (and of momenta); states are ``(batch, 2 d)``.
    hidden : sequence of int
        Hidden widths of each multilayer perceptron.
    activation : str, default="tanh"
        A key of :data:`ACTIVATIONS`; it must be differentiable (the field is
        the gradient of the network).
    separable : bool, default=False
        Learn ``H = T(p) + V(q)`` as two networks, so that ``∂H/∂q`` depends
        on ``q`` only and ``∂H/∂p`` on ``p`` only (what explicit symplectic
        steppers such as leapfrog need).
    n_inputs : int, default=0
        Known inputs ``u`` driving the momenta as generalised forces:
        ``dp/dt = -∂H/∂q + B(q) u``. ``forward`` then takes ``u``.
    input_matrix : {"constant", "positions"}, default="constant"
        How ``B`` is learned; see :class:`InputMatrix`.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import HamiltonianField
    >>> field = HamiltonianField(1, (16,))
    >>> x = torch.randn(5, 2)
    >>> field(torch.zeros(5), x).shape, field.energy(x).shape
    (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, n_coordinates: int, hidden: Sequence[int], activation: str = "tanh", separable: bool = False,
                 n_inputs: int = 0, input_matrix: str = "constant"):
        super().__init__()
        self.n_coordinates = n_coordinates
        self.separable = separable
        if separable:
            self.kinetic = make_mlp(n_coordinates, 1, hidden, activation)
            self.potential = make_mlp(n_coordinates, 1, hidden, activation)
        else:
            self.net = make_mlp(2 * n_coordinates, 1, hidden, activation)
        self.n_inputs = n_inputs
        if n_inputs:
            self.input_matrix = InputMatrix(n_coordinates, n_inputs, input_matrix, hidden, activation)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``H`` at states ``x`` of shape (batch, 2 d); returns (batch,)."""
        if self.separable:
            q, p = x.split(self.n_coordinates, dim=-1)
            return (self.kinetic(p) + self.potential(q)).squeeze(-1)
        return self.net(x).squeeze(-1)

    def gradients(self, q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(∂H/∂q, ∂H/∂p)``, each of shape (batch, d)."""
        if self.separable:
            return self.potential_gradient(q), self.kinetic_gradient(p)
        _, grad = _network_gradient(self.net, torch.cat([q, p], dim=-1), value=False)
        return grad.split(self.n_coordinates, dim=-1)

    def potential_gradient(self, q: torch.Tensor) -> torch.Tensor:
        """``∂V/∂q`` of shape (batch, d), for ``separable=True``."""
        return _network_gradient(self.potential, q, value=False)[1]

    def kinetic_gradient(self, p: torch.Tensor) -> torch.Tensor:
        """``∂T/∂p`` of shape (batch, d), for ``separable=True``."""
        return _network_gradient(self.kinetic, p, value=False)[1]

    def forward(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``dx/dt`` of shape (batch, 2 d) under inputs ``u`` (batch, n_inputs); ``t`` is unused."""
        if self.separable:
            q, p = x.split(self.n_coordinates, dim=-1)
            grad_q, grad_p = self.gradients(q, p)
        else:  # the network reads the state as it comes, not re-joined from q and p
            grad_q, grad_p = _network_gradient(self.net, x, value=False)[1].split(self.n_coordinates, dim=-1)
            q = x[..., : self.n_coordinates]
        if self.n_inputs:
            return torch.cat([grad_p, self.input_matrix.force(q, u) - grad_q], dim=-1)
        return torch.cat([grad_p, -grad_q], dim=-1)

    def derivative_loss(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                        u: torch.Tensor | None = None) -> torch.Tensor:
        """The masked mean squared error of the field at ``x`` against measured ``rates``, a scalar.

        ``((self(t, x, u) - rates) ** 2 * mask).sum() / max(mask.sum(), 1)``
        for states, rates and mask of shape (batch, 2 d). While gradients
        are recorded, a field without inputs whose networks are Linear
        layers between tanh, ReLU, softplus, ELU or SiLU activations
        computes the loss and its gradient with respect to the weights in
        one pass, as one autograd node (the same values to rounding as
        differentiating the field; a backward pass with
        ``create_graph=True`` differentiates the field's recorded loss
        instead). States that require a gradient, other networks, inputs,
        and evaluation without gradients take the field itself.
        """
        plans = self._loss_plans(x, rates, mask, u)
        if plans is not None:
            return derivative_loss_node(plans, self.n_coordinates, x, rates, mask,
                                        lambda: self._recorded_loss(x, rates, mask, u))
        return self._recorded_loss(x, rates, mask, u)

    def _loss_plans(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                    u: torch.Tensor | None) -> list | None:
        """The networks' written-out plans when :meth:`derivative_loss` can be one node, else None."""
        if not self._node_may_apply(x, rates, mask, u, _FIELD_METHODS, HamiltonianField):
            return None
        networks = [self.kinetic, self.potential] if self.separable else [self.net]
        plans = [_written_out_layers(net) for net in networks]
        if any(plan is None for plan in plans):
            return None
        if not any(layer.weight.requires_grad for linears, _ in plans for layer in linears):
            return None
        return plans

    def input_power(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``dH/dt = q̇ · B(q) u`` of shape (batch,): the power the inputs put into the system."""
        q, p = x.split(self.n_coordinates, dim=-1)
        grad_p = self.kinetic_gradient(p) if self.separable else self.gradients(q, p)[1]
        return (grad_p * self.input_matrix.force(q, u)).sum(-1)


class LagrangianField(_RegressedField):
    """Euler–Lagrange equations of a learned ``L(q, q̇)`` (Cranmer et al., 2020).

    With ``v = q̇``, the accelerations solve
    ``(∂²L/∂v∂vᵀ) q̈ = ∂L/∂q - (∂²L/∂v∂qᵀ) v [+ B(q) u]``; the state
    ``[q, v]`` moves as ``d[q, v]/dt = [v, q̈]``. Without inputs the energy
    ``E = v·∂L/∂v - L`` is conserved along this flow; known inputs ``u``
    change it at the rate ``v · B(q) u``.

    Parameters
    ----------
    n_coordinates : int
        Number ``d`` of positions (and of velocities); states are ``(batch, 2 d)``.
    hidden : sequence of int
        Hidden widths of the multilayer perceptron.
    activation : str, default="softplus"
        A key of :data:`ACTIVATIONS` with a nonzero second derivative: the
        velocity Hessian of a piecewise-linear network (``"relu"``) is zero.
    rcond : float, default=None
        A velocity Hessian whose smallest absolute eigenvalue is at most
        ``rcond`` times its largest is treated as singular; None uses
        ``d`` times the machine epsilon of the state's dtype (the numerical
        rank test of ``numpy.linalg.matrix_rank``), below which the solve
        has no correct digits.
    n_inputs : int, default=0
        Known inputs ``u`` entering the Euler–Lagrange equations as the
        generalised force ``B(q) u``. ``forward`` then takes ``u``.
    input_matrix : {"constant", "positions"}, default="constant"
        How ``B`` is learned; see :class:`InputMatrix`.

    Raises
    ------
    IntegrationError
        From ``forward`` / ``acceleration`` when the velocity Hessian is
        numerically singular at some state, or the accelerations overflow,
        so the dynamics are not determined.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import LagrangianField
    >>> field = LagrangianField(2, (16,))
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> field.double()(torch.zeros(5), x).shape, field.energy(x).shape
    (torch.Size([5, 4]), torch.Size([5]))
    """

    def __init__(self, n_coordinates: int, hidden: Sequence[int], activation: str = "softplus",
                 rcond: float | None = None, n_inputs: int = 0, input_matrix: str = "constant"):
        super().__init__()
        self.n_coordinates = n_coordinates
        self.rcond = rcond
        self.net = make_mlp(2 * n_coordinates, 1, hidden, activation)
        self.n_inputs = n_inputs
        if n_inputs:
            self.input_matrix = InputMatrix(n_coordinates, n_inputs, input_matrix, hidden, activation)

    def lagrangian(self, x: torch.Tensor) -> torch.Tensor:
        """``L`` at states ``x`` of shape (batch, 2 d); returns (batch,)."""
        return self.net(x).squeeze(-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E = v·∂L/∂v - L`` at states ``x`` of shape (batch, 2 d); returns (batch,)."""
        lagrangian, grad = _network_gradient(self.net, x)
        velocity = x[:, self.n_coordinates :]
        return (velocity * grad[:, self.n_coordinates :]).sum(-1) - lagrangian

    def acceleration(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``q̈`` of shape (batch, d) at states ``x`` of shape (batch, 2 d) under inputs ``u`` (batch, n_inputs)."""
        d = self.n_coordinates
        create_graph = torch.is_grad_enabled()
        plan = _written_out_layers(self.net) if x.dim() == 2 else None
        if plan is not None:  # the gradient and the Hessian's velocity rows as plain (recorded) operations
            linears, activations = plan
            sweep = Sweep(activations, network_tensors(linears), x)
            grad, hessian = sweep.gradient, sweep.hessian_rows(d)
        else:
            with torch.enable_grad():
                if not x.requires_grad:
                    x = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.lagrangian(x).sum(), x, create_graph=True)
                # Row j holds ∂/∂x of ∂L/∂v_j: the mixed block, then the velocity block.
                rows = [
                    torch.autograd.grad(grad[:, d + j].sum(), x, create_graph=create_graph, retain_graph=True)[0]
                    for j in range(d)
                ]
            hessian = torch.stack(rows, dim=1)
        mixed, mass = hessian[:, :, :d], hessian[:, :, d:]
        velocity = x[:, d:]
        force = grad[:, :d] - (mixed @ velocity.unsqueeze(-1)).squeeze(-1)
        if self.n_inputs:
            force = force + self.input_matrix.force(x[:, :d], u)
        acceleration = solve_mass(mass, force)  # one coordinate: the Hessian is a number per state
        self._check_determined(mass, acceleration)
        return acceleration if create_graph else acceleration.detach()

    def _check_determined(self, mass: torch.Tensor, acceleration: torch.Tensor) -> None:
        """Raise ``IntegrationError`` where a velocity Hessian is singular or an acceleration not finite (one sync)."""
        # One coordinate: the Hessian is its own eigenvalue, of full rank where finite and nonzero, and a zero one
        # leaves a non-finite acceleration; so one finiteness test of both decides (the count below is for the error).
        if (mass.shape[-1] == 1 and self._rcond(mass.dtype) < 1
                and bool(torch.isfinite(torch.cat([mass.flatten(1), acceleration], dim=1)).all())):
            return
        determined = self._determined(mass) & torch.isfinite(acceleration).all(dim=1)
        if not bool(determined.all()):
            raise IntegrationError(
                f"The learned Lagrangian's velocity Hessian ∂²L/∂q̇² is singular or too ill-conditioned at "
                f"{int((~determined).sum())} of {len(determined)} states, so the Euler–Lagrange equations do not "
                "determine the accelerations there. Use a smooth activation with a nonzero second derivative "
                "('softplus' or 'tanh', not 'relu'), more (or less noisy) data, some weight_decay, or "
                "dtype='float64'."
            )

    def derivative_loss(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                        u: torch.Tensor | None = None) -> torch.Tensor:
        """The masked mean squared error of the field at ``x`` against measured ``rates``, a scalar.

        ``((self(t, x, u) - rates) ** 2 * mask).sum() / max(mask.sum(), 1)``
        for states, rates and mask of shape (batch, 2 d). While gradients
        are recorded, a field without inputs whose network is Linear layers
        between tanh, softplus, ELU or SiLU activations computes the loss
        and its gradient with respect to the weights in one pass, as one
        autograd node (the same values to rounding as differentiating the
        field; a backward pass with ``create_graph=True`` differentiates the
        field's recorded loss instead), up to 2^24 multiply-adds a call
        (rows times the network's weights), past which autograd's products
        are the cheaper. States that require a gradient, other networks,
        inputs, and evaluation without gradients take the field itself.

        Examples
        --------
        >>> import torch
        >>> from dynlearn.nn import LagrangianField
        >>> field = LagrangianField(1, (16,)).double()
        >>> x, rates = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
        >>> loss = field.derivative_loss(x, rates, torch.ones_like(x))
        >>> torch.allclose(loss, ((field(None, x) - rates) ** 2).mean())
        True
        """
        plan = self._loss_plan(x, rates, mask, u)
        if plan is not None:
            return lagrangian_loss_node(*plan, self.n_coordinates, self._check_determined, x, rates, mask,
                                        lambda: self._recorded_loss(x, rates, mask, u))
        return self._recorded_loss(x, rates, mask, u)

    def _loss_plan(self, x: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor,
                   u: torch.Tensor | None) -> tuple | None:
        """The network's written-out plan when :meth:`derivative_loss` can be one node, else None."""
        if not self._node_may_apply(x, rates, mask, u, ("forward", "acceleration", "lagrangian"), LagrangianField):
            return None
        plan = _written_out_layers(self.net)
        if plan is None or not plan[1] or any(type(activation) not in _SMOOTH for activation in plan[1]):
            return None  # without a hidden layer or with ReLU the Hessian is zero, and the field raises
        if not any(layer.weight.requires_grad for layer in plan[0]):
            return None
        if x.shape[0] * sum(layer.in_features * layer.out_features for layer in plan[0]) > _NODE_MULTIPLY_ADDS:
            return None
        return plan

    def forward(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``d[q, v]/dt = [v, q̈]`` of shape (batch, 2 d) under inputs ``u`` (batch, n_inputs); ``t`` is unused."""
        return torch.cat([x[:, self.n_coordinates :], self.acceleration(x, u)], dim=-1)

    def input_power(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``dE/dt = v · B(q) u`` of shape (batch,): the power the inputs put into the system."""
        d = self.n_coordinates
        return (x[:, d:] * self.input_matrix.force(x[:, :d], u)).sum(-1)

    def _rcond(self, dtype: torch.dtype) -> float:
        return self.rcond if self.rcond is not None else self.n_coordinates * torch.finfo(dtype).eps

    def _determined(self, mass: torch.Tensor) -> torch.Tensor:
        """Which velocity Hessians ``(batch, d, d)`` have full numerical rank; returns (batch,) bool."""
        rcond = self._rcond(mass.dtype)
        with torch.no_grad():
            if mass.shape[-1] == 1:  # one coordinate: the Hessian is its own eigenvalue
                magnitudes = mass.abs().flatten(1)
            else:
                magnitudes = torch.linalg.eigvalsh(0.5 * (mass + mass.transpose(1, 2))).abs()
            largest = magnitudes.max(dim=1).values
            smallest = magnitudes.min(dim=1).values
            return torch.isfinite(largest) & (largest > 0) & (smallest > rcond * largest)
