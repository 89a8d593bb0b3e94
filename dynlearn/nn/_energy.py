"""Vector fields derived from a learned scalar: a Hamiltonian H(q, p) or a Lagrangian L(q, q̇).

States are laid out as ``(batch, 2 * n_coordinates)``: the generalised
coordinates first, then their momenta (Hamiltonian) or velocities
(Lagrangian). Derivatives of the scalar are taken with ``torch.autograd``;
while gradients are being recorded they keep their graph, so a loss on the
vector field trains the scalar's weights.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..exceptions import IntegrationError
from ._mlp import make_mlp


def _gradient(scalar: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scalar(x)`` of shape (batch,) and its gradient with respect to ``x``.

    The gradient keeps its graph whenever the caller records gradients (a
    training step, or torchdiffeq's adjoint pass), and is computed without
    one under ``torch.no_grad()`` (prediction).
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        value = scalar(x)
        (grad,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
    return value, grad


class HamiltonianField(nn.Module):
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

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import HamiltonianField
    >>> field = HamiltonianField(1, (16,))
    >>> x = torch.randn(5, 2)
    >>> field(torch.zeros(5), x).shape, field.energy(x).shape
    (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, n_coordinates: int, hidden: Sequence[int], activation: str = "tanh", separable: bool = False):
        super().__init__()
        self.n_coordinates = n_coordinates
        self.separable = separable
        if separable:
            self.kinetic = make_mlp(n_coordinates, 1, hidden, activation)
            self.potential = make_mlp(n_coordinates, 1, hidden, activation)
        else:
            self.net = make_mlp(2 * n_coordinates, 1, hidden, activation)

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
        _, grad = _gradient(self.energy, torch.cat([q, p], dim=-1))
        return grad.split(self.n_coordinates, dim=-1)

    def potential_gradient(self, q: torch.Tensor) -> torch.Tensor:
        """``∂V/∂q`` of shape (batch, d), for ``separable=True``."""
        return _gradient(lambda z: self.potential(z).squeeze(-1), q)[1]

    def kinetic_gradient(self, p: torch.Tensor) -> torch.Tensor:
        """``∂T/∂p`` of shape (batch, d), for ``separable=True``."""
        return _gradient(lambda z: self.kinetic(z).squeeze(-1), p)[1]

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dx/dt`` of shape (batch, 2 d); autonomous, so ``t`` is unused."""
        grad_q, grad_p = self.gradients(*x.split(self.n_coordinates, dim=-1))
        return torch.cat([grad_p, -grad_q], dim=-1)


class LagrangianField(nn.Module):
    """Euler–Lagrange equations of a learned ``L(q, q̇)`` (Cranmer et al., 2020).

    With ``v = q̇``, the accelerations solve
    ``(∂²L/∂v∂vᵀ) q̈ = ∂L/∂q - (∂²L/∂v∂qᵀ) v``; the state ``[q, v]`` moves
    as ``d[q, v]/dt = [v, q̈]``. Along this flow the energy
    ``E = v·∂L/∂v - L`` is conserved.

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

    def __init__(self, n_coordinates: int, hidden: Sequence[int], activation: str = "softplus", rcond: float | None = None):
        super().__init__()
        self.n_coordinates = n_coordinates
        self.rcond = rcond
        self.net = make_mlp(2 * n_coordinates, 1, hidden, activation)

    def lagrangian(self, x: torch.Tensor) -> torch.Tensor:
        """``L`` at states ``x`` of shape (batch, 2 d); returns (batch,)."""
        return self.net(x).squeeze(-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E = v·∂L/∂v - L`` at states ``x`` of shape (batch, 2 d); returns (batch,)."""
        lagrangian, grad = _gradient(self.lagrangian, x)
        velocity = x[:, self.n_coordinates :]
        return (velocity * grad[:, self.n_coordinates :]).sum(-1) - lagrangian

    def acceleration(self, x: torch.Tensor) -> torch.Tensor:
        """``q̈`` of shape (batch, d) at states ``x`` of shape (batch, 2 d)."""
        d = self.n_coordinates
        create_graph = torch.is_grad_enabled()
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
        singular = self._singular(mass)
        acceleration = torch.linalg.solve(mass, force) if not singular.any() else None
        if acceleration is not None:
            singular = ~torch.isfinite(acceleration).all(dim=1)
        if singular.any():
            raise IntegrationError(
                f"The learned Lagrangian's velocity Hessian ∂²L/∂q̇² is singular or too ill-conditioned at "
                f"{int(singular.sum())} of {len(singular)} states, so the Euler–Lagrange equations do not "
                "determine the accelerations there. Use a smooth activation with a nonzero second derivative "
                "('softplus' or 'tanh', not 'relu'), more (or less noisy) data, some weight_decay, or "
                "dtype='float64'."
            )
        return acceleration if create_graph else acceleration.detach()

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``d[q, v]/dt = [v, q̈]`` of shape (batch, 2 d); autonomous, so ``t`` is unused."""
        return torch.cat([x[:, self.n_coordinates :], self.acceleration(x)], dim=-1)

    def _singular(self, mass: torch.Tensor) -> torch.Tensor:
        """Which velocity Hessians ``(batch, d, d)`` lack full numerical rank; returns (batch,) bool."""
        rcond = self.rcond if self.rcond is not None else self.n_coordinates * torch.finfo(mass.dtype).eps
        with torch.no_grad():
            magnitudes = torch.linalg.eigvalsh(0.5 * (mass + mass.transpose(1, 2))).abs()
            largest = magnitudes.max(dim=1).values
            smallest = magnitudes.min(dim=1).values
            return ~(torch.isfinite(largest) & (largest > 0) & (smallest > rcond * largest))
