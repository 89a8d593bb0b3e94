"""Integrals of a vector field's kinetic energy and Jacobian norm along its own solve.

Finlay et al. 2020 ("How to train your neural ODE: the world of Jacobian
and kinetic regularization") penalise ``∫ ‖f(z, t)‖² dt`` and
``∫ ‖∂f/∂z‖_F² dt`` to train dynamics that an adaptive solver integrates in
fewer steps. Both integrals are computed exactly as the solver's own: the
state is augmented by two accumulators whose derivatives are those
quantities, so every clock that reparametrises time (the segment clock
multiplies the field by ``gap / width``) scales them by the same factor and
they integrate in each series' real time.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ._registry import ode_method

# Accumulators appended to the state: the kinetic energy's integral, then the Jacobian norm's.
N_ACCUMULATORS = 2


class DynamicsPenalty(nn.Module):
    """A vector field on its state augmented by ``∫ ‖f‖² dt`` and ``∫ ‖εᵀ ∂f/∂z‖² dt``.

    Integrate this module from :meth:`initial_state` with
    :meth:`solve_options` passed as the solve's ``options`` and read the
    states and the two integrals back with :meth:`split`. ``‖εᵀ ∂f/∂z‖²``
    with a standard normal probe ``ε`` is an unbiased (Hutchinson) estimate
    of the squared Frobenius norm ``‖∂f/∂z‖_F²``; it costs one
    vector-Jacobian product per evaluation and is computed only when a
    ``probe`` is given (otherwise its accumulator stays 0). The accumulators
    do not enter the adaptive step-size control (:meth:`solve_options`), so
    the solver takes the same steps as on the field alone.

    Parameters
    ----------
    func : callable ``(t, z) -> dz/dt`` or ``(t, z, u) -> dz/dt``
        The vector field on states of shape (batch, n_state); a field
        called with known inputs ``u`` (a controlled solve) gets them
        passed through.
    n_state : int
        Size of the field's state (the last axis).
    probe : Tensor of shape (batch, n_state), default=None
        The probe ``ε`` of the Jacobian term, fixed along the solve; None
        skips the Jacobian term.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import DynamicsPenalty, solve_ode
    >>> penalty = DynamicsPenalty(lambda t, z: -z, n_state=1)
    >>> path = solve_ode(penalty, penalty.initial_state(torch.ones(1, 1)), torch.tensor([0.0, 1.0]),
    ...                  rtol=1e-8, atol=1e-8, options=penalty.solve_options("dopri5"))
    >>> states, kinetic, jacobian = penalty.split(path, dim=0)
    >>> round(float(kinetic[0]), 4)  # ∫ e^{-2t} dt over [0, 1]
    0.4323
    """

    def __init__(self, func: Callable, n_state: int, probe: torch.Tensor | None = None):
        super().__init__()
        self.func = func
        self.n_state = n_state
        self.probe = probe

    def forward(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``[f(t, z[, u]), ‖f‖², ‖εᵀ ∂f/∂z‖²]`` at augmented states ``y = [z, kinetic, jacobian]``."""
        z = y[..., : self.n_state]
        if self.probe is None:
            dz = self._field(t, z, u)
            jacobian = torch.zeros_like(dz[..., :1])
        else:
            with torch.enable_grad():
                if not z.requires_grad:  # a start state that depends on no parameter: differentiate at it
                    z = z.detach().requires_grad_()
                dz = self._field(t, z, u)
                (product,) = torch.autograd.grad(dz, z, self.probe.to(dz.dtype), create_graph=True)
            jacobian = product.pow(2).sum(-1, keepdim=True)
        return torch.cat([dz, dz.pow(2).sum(-1, keepdim=True), jacobian], dim=-1)

    def _field(self, t: torch.Tensor, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        return self.func(t, z) if u is None else self.func(t, z, u)

    def initial_state(self, z0: torch.Tensor) -> torch.Tensor:
        """``z0`` (batch, n_state) with both accumulators at 0: shape (batch, n_state + 2)."""
        return torch.cat([z0, z0.new_zeros(*z0.shape[:-1], N_ACCUMULATORS)], dim=-1)

    def solve_options(self, method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """``options`` for a solve of this field with ``method``: adaptive steps controlled on the state alone.

        torchdiffeq measures the local error by the root mean square over
        the whole augmented state; here the accumulators are left out of it,
        so they neither shorten steps nor change where the solver steps.
        Fixed-step methods take no norm.
        """
        options = dict(options or {})
        if ode_method(method).adaptive:
            n_state = self.n_state
            options.setdefault("norm", lambda error: error[..., :n_state].pow(2).mean().sqrt())
        return options

    def split(self, path: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """States, kinetic and Jacobian integrals of a solved path.

        Parameters
        ----------
        path : Tensor of shape (..., n_state + 2)
            The solve's output; time runs along ``dim`` and the first time
            is the start.
        dim : int
            The time axis of ``path``.

        Returns
        -------
        states : Tensor of shape (..., n_state)
            The field's states at the output times.
        kinetic, jacobian : Tensor
            ``∫ ‖f‖² |dt|`` and ``∫ ‖εᵀ ∂f/∂z‖² |dt|`` over every row's
            whole path, with ``path``'s shape less the time and last axes.
            Between consecutive outputs the clock runs one way, so the
            integral over ``|dt|`` is the sum of the accumulators'
            absolute increments: a series solved backwards in time is
            penalised like one solved forwards.
        """
        states, accumulated = path[..., : self.n_state], path[..., self.n_state :]
        increments = accumulated.diff(dim=dim).abs().sum(dim=dim)
        return states, increments[..., 0], increments[..., 1]
