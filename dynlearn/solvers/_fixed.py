"""One fixed step of an autonomous ODE, written out as tensor operations.

For loops that step many short gaps (ODE-RNN between observations) a step is
a few fused multiply-adds, far cheaper than a call into the ODE backend.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..exceptions import input_error

# Fixed-step methods whose single step fixed_step writes out (the same formulas as torchdiffeq's, so "rk4" is its
# 3/8-rule variant).
FIXED_STEP_METHODS = frozenset({"euler", "midpoint", "rk4"})


def fixed_step(
    method: str, f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, dt: torch.Tensor
) -> torch.Tensor:
    """One step of length ``dt`` of ``dy/dt = f(y)`` by a fixed-step method.

    Written with fused multiply-adds: on small batches the cost is the number
    of autograd nodes, not the arithmetic.

    Parameters
    ----------
    method : {"euler", "midpoint", "rk4"}
        The method, one of :data:`FIXED_STEP_METHODS`; ``"rk4"`` is the
        3/8-rule variant, as in torchdiffeq.
    f : callable
        The autonomous vector field, ``y -> dy/dt`` on tensors of ``y``'s shape.
    y : torch.Tensor of shape (n_rows, n_states)
        The states.
    dt : torch.Tensor of shape (n_rows, 1)
        The step of each row (zero holds it; negative steps backwards).

    Returns
    -------
    torch.Tensor of shape (n_rows, n_states)

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import fixed_step
    >>> y = torch.ones(1, 1)
    >>> fixed_step("rk4", lambda y: -y, y, torch.full((1, 1), 0.1)).item()  # exp(-0.1) = 0.904837...
    0.9048374...
    """
    if method == "euler":
        return torch.addcmul(y, dt, f(y))
    if method == "midpoint":
        return torch.addcmul(y, dt, f(torch.addcmul(y, 0.5 * dt, f(y))))
    if method != "rk4":
        raise input_error("method", f"one of {sorted(FIXED_STEP_METHODS)}", repr(method),
                          "Use solve_ode for other methods.")
    third, eighth = dt / 3, dt * 0.125
    k1 = f(y)
    k2 = f(torch.addcmul(y, third, k1))
    k3 = f(torch.addcmul(torch.addcmul(y, dt, k2), -third, k1))
    k4 = f(torch.addcmul(torch.addcmul(torch.addcmul(y, dt, k1), -dt, k2), dt, k3))
    return torch.addcmul(torch.addcmul(y, eighth, k1 + k4), 3 * eighth, k2 + k3)
