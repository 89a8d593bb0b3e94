"""ODE-RNN: a recurrent state that follows a neural ODE between observations (Rubanova et al. 2019)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..exceptions import IntegrationError, input_error
from ..solvers import FIXED_STEP_METHODS, fixed_step, ode_method, solve_ode
from ._mlp import ACTIVATIONS, MLPVectorField, mlp_function
from ._odernn_fused import (
    MULTIPLY_ADDS_WORTH_INDEXING,
    euler_gru_loop,
    euler_rows,
    field_multiply_adds,
    fusable_field,
    gru_cell_tensors,
    gru_unit_tensors,
)


def _step_size(options: dict[str, Any] | None) -> float | None:
    step_size = (options or {}).get("step_size")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise input_error("options['step_size']", "a positive step", repr(step_size), "Pass e.g. 0.5.")
    return None if step_size is None else float(step_size)


# How a gap is split into fixed steps of nominal length ``step_size`` (``options["step_rule"]``).
STEP_RULES = ("bound", "paper")


def _step_rule(options: dict[str, Any] | None) -> str:
    rule = (options or {}).get("step_rule", "bound")
    if rule not in STEP_RULES:
        raise input_error("options['step_rule']", f"one of {STEP_RULES}", repr(rule), "Use 'bound' or 'paper'.")
    return rule


def _substeps(gaps: torch.Tensor, step_size: float, max_num_steps: int, rule: str = "bound") -> torch.Tensor:
    """Equal steps per gap (at least one).

    ``"bound"``: each step at most ``step_size`` long, ``ceil(gap / step_size)``
    steps. ``"paper"``: the rule of the ODE-RNN authors' implementation,
    ``max(2, int(gap / step_size)) - 1`` steps, so one step for gaps up to
    three times ``step_size`` and steps a little longer than it on long gaps.
    """
    if rule == "paper":
        n_steps = (torch.floor(gaps.abs() / step_size + 1e-9) - 1).clamp_min(1)
    else:
        n_steps = torch.ceil(gaps.abs() / step_size - 1e-9).clamp_min(1)
    most = int(n_steps.max()) if n_steps.numel() else 1
    if most > max_num_steps:
        raise IntegrationError(
            f"A gap needs {most} fixed steps of {step_size}, more than max_num_steps={max_num_steps}. "
            "Use a larger step size, an adaptive solver, or raise max_num_steps."
        )
    return n_steps


def stepped_rows(
    step: Any, h: torch.Tensor, dt: torch.Tensor, n_steps: torch.Tensor, held: torch.Tensor | None = None
) -> torch.Tensor:
    """Each row of ``h`` after its own ``n_steps`` steps ``step(h, dt, held)``, each recorded by autograd.

    Every row is stepped once, then only the rows that still have steps to
    take (cost: the sum of steps). ``held`` (n_rows, n_inputs) or None: each
    row's input, passed to ``step`` with the rows it steps.
    """
    h = step(h, dt, held)
    remaining = n_steps[:, 0]
    for i in range(1, int(remaining.max())):
        rows = torch.nonzero(remaining > i).squeeze(1)
        some = None if held is None else held.index_select(0, rows)
        h = h.index_copy(0, rows, step(h.index_select(0, rows), dt.index_select(0, rows), some))
    return h


def _refine(
    inputs: torch.Tensor,
    update: torch.Tensor,
    gaps: torch.Tensor,
    real: torch.Tensor,
    step_size: float,
    max_num_steps: int,
    rule: str = "bound",
) -> tuple[torch.Tensor, ...]:
    """Split every gap into equal steps (see :func:`_substeps`) by inserting rows that observe nothing.

    Each series is refined on its own times only, so it takes the same steps
    whatever else is in the batch, and the loop then takes one step per row.
    Returns the refined inputs, update flags and gaps, and the refined
    position of every original row (padding rows point at the last refined row).
    """
    batch, n_times, _ = inputs.shape
    n_steps = _substeps(gaps[..., 0], step_size, max_num_steps, rule).long()
    n_steps = torch.where(real, n_steps, torch.zeros_like(n_steps))
    n_steps[:, 0] = 1
    position = n_steps.cumsum(dim=1) - 1  # refined index of each original row
    width = int(position[:, -1].max()) + 1
    rows = torch.arange(width, device=inputs.device).expand(batch, width)
    position = torch.where(real, position, torch.full_like(position, width - 1))
    owner = _owners(position, width)
    inside = rows <= position.gather(1, (real.sum(dim=1, keepdim=True) - 1))
    step = (gaps[..., 0] / n_steps.clamp_min(1)).gather(1, owner)
    refined_gaps = torch.where(inside & (rows > 0), step, torch.zeros_like(step))[..., None]
    # Padding rows are written to a spare last slot, so they never overwrite a real row.
    index = torch.where(real, position, torch.full_like(position, width))[..., None]
    refined_inputs = inputs.new_zeros(batch, width + 1, inputs.shape[-1])
    refined_update = update.new_zeros(batch, width + 1, 1)
    refined_inputs.scatter_(1, index.expand_as(inputs), inputs)
    refined_update.scatter_(1, index, update & real[..., None])
    return refined_inputs[:, :width], refined_update[:, :width], refined_gaps, position


def _owners(position: torch.Tensor, width: int) -> torch.Tensor:
    """The original row each of ``width`` refined rows leads up to (rows past a series' end: its last row)."""
    rows = torch.arange(width, device=position.device).expand(position.shape[0], width)
    return torch.searchsorted(position.contiguous(), rows.contiguous()).clamp_max(position.shape[1] - 1)


class _GapScaledField(nn.Module):
    """``dh/ds = gap * f(h)`` on ``s`` in [0, 1]: every row reaches its own gap at ``s = 1``.

    With ``held`` (N, n_inputs) the field is ``f(h, u)`` with each row's input held over its gap.
    """

    def __init__(self, net: nn.Module, gaps: torch.Tensor, held: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.gaps = gaps
        self.held = held

    def forward(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = h if self.held is None else torch.cat([h, self.held], dim=-1)
        return self.net(x) * self.gaps


class _ProjectedField(nn.Module):
    """``field`` with its components pointing out of the box ``[lower, upper]`` zeroed where the state is on or past a face.

    A state that starts in the box stays in it: the flow slides along a face
    instead of leaving through it, and leaves the face as soon as the field
    points back inside.
    """

    def __init__(self, field: nn.Module, lower: torch.Tensor, upper: torch.Tensor):
        super().__init__()
        self.field, self.lower, self.upper = field, lower, upper

    def forward(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        dh = self.field(s, h)
        leaving = ((h >= self.upper) & (dh > 0)) | ((h <= self.lower) & (dh < 0))
        return torch.where(leaving, torch.zeros_like(dh), dh)


class _GRUUnit(nn.Module):
    """The GRU of the ODE-RNN paper: update gate, reset gate and candidate are small MLPs of ``[h, x]``."""

    def __init__(self, input_dim: int, hidden_dim: int, width: int):
        super().__init__()
        self.hidden_dim = hidden_dim

        def mlp(*tail: nn.Module) -> nn.Sequential:
            first, last = nn.Linear(hidden_dim + input_dim, width), nn.Linear(width, hidden_dim)
            return nn.Sequential(first, nn.Tanh(), last, *tail)

        self.update = mlp(nn.Sigmoid())
        self.reset = mlp(nn.Sigmoid())
        self.candidate = mlp()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=-1)
        z = self.update(hx)
        r = self.reset(hx)
        candidate = self.candidate(torch.cat([h * r, x], dim=-1))
        return (1 - z) * candidate + z * h

    def stepper(self, inputs: torch.Tensor):
        """``forward`` for the rows of ``inputs`` (batch, n_rows, input_dim), as ``step(k, h)``.

        Built from :func:`gru_unit_tensors`, as the fused Euler loop is: the
        inputs' share of every first layer is computed for all rows at once,
        both gates' last layers are one block-diagonal product, and the hidden
        tanh layers run as rescaled sigmoids. The same function with fewer,
        smaller operations inside the loop.
        """
        n = self.hidden_dim
        rows_first = inputs.transpose(0, 1)
        gates_x, candidate_x, gates_h, gates_out, gates_out_bias, candidate_h, candidate_out, candidate_bias = (
            gru_unit_tensors(self, rows_first)
        )
        # One unbind: its backward stacks the rows' gradients once (slicing per row would fill a full-size zero
        # gradient at every step).
        gates_x, candidate_x = gates_x.unbind(0), candidate_x.unbind(0)

        def step(k: int, h: torch.Tensor) -> torch.Tensor:
            hidden = torch.sigmoid(torch.addmm(gates_x[k], h, gates_h))
            keep, r = torch.sigmoid(torch.addmm(gates_out_bias, hidden, gates_out)).split(n, dim=1)  # 1 - z, r
            c = torch.sigmoid(torch.addmm(candidate_x[k], h * r, candidate_h))
            c = torch.addmm(candidate_bias, c, candidate_out)
            return torch.addcmul(h, keep, c - h)

        return step


def _held_inputs(covariates: torch.Tensor, real: torch.Tensor, reverse: bool) -> torch.Tensor:
    """The input held over the gap that ends at each row (batch, n_rows, n_inputs), a zero-order hold.

    Forwards, the gap into row ``k`` runs from observation ``k-1``, whose
    input holds over it; backwards (rows in reverse time order) the gap runs
    down to the row's own observation, the earlier time, whose input holds.
    The first row crosses no gap (its own input stands in).
    """
    if reverse:
        return covariates
    held = torch.cat([covariates[:, :1], covariates[:, :-1]], dim=1)
    return torch.where(real[..., None], held, covariates)


def _gru_cell_stepper(cell: nn.GRUCell, inputs: torch.Tensor):
    """``cell(inputs[:, k], h)`` as ``step(k, h)``, with the input projection done for all rows at once.

    The formulas of :class:`torch.nn.GRUCell` (reset gate applied to the
    state's share of the candidate) on :func:`gru_cell_tensors`, written
    with fused operations so each step records fewer autograd nodes.
    """
    n = cell.hidden_size
    projected, weight_t, bias = gru_cell_tensors(cell, inputs.transpose(0, 1))
    gates_x, candidate_x = projected[..., : 2 * n].unbind(0), projected[..., 2 * n :].unbind(0)

    def step(k: int, h: torch.Tensor) -> torch.Tensor:
        hidden = torch.mm(h, weight_t) if bias is None else torch.addmm(bias, h, weight_t)
        gates_h, candidate_h = hidden.split(2 * n, dim=1)
        r, z = torch.sigmoid(gates_h + gates_x[k]).split(n, dim=1)
        c = torch.tanh(torch.addcmul(candidate_x[k], candidate_h, r))
        return torch.addcmul(c, h - c, z)

    return step


class ODERNNEncoder(nn.Module):
    """ODE-RNN over each series' own observation times (Rubanova et al. 2019).

    Between consecutive observations of a series the hidden state follows
    ``dh/dt = f(h)`` (a multilayer perceptron); at each observation a GRU cell
    updates it from ``[values * mask, mask]``, so only observed variables carry
    information. Rows that are padding, or that have no observed entry, leave
    the state unchanged (it still evolves through their time).

    The loop runs over the observation index ``k`` (up to the longest series
    of the batch), never over the union of the batch's times: at step ``k``
    every series moves from its own ``(k-1)``-th to its ``k``-th observation
    time at once, each with its own gap (see :meth:`evolve`). A series' state
    therefore never depends on another series' times.

    Parameters
    ----------
    n_features : int
        Observed variables per time.
    hidden_dim : int
        Size of the hidden state.
    ode_hidden : sequence of int, default=(64,)
        Hidden widths of the ODE's vector field.
    activation : str, default="tanh"
        Activation of the vector field (a name of ``dynlearn.nn.ACTIVATIONS``).
    gru_hidden : int or None, default=None
        None uses :class:`torch.nn.GRUCell`; an int uses the paper's GRU, whose
        gates and candidate are one-hidden-layer MLPs of that width.
    n_inputs : int, default=0
        Known inputs ``u`` driving the state: the GRU reads ``[values * mask,
        mask, u]`` at each observation and the field is ``f(h, u)``, with
        ``u`` held at its value at the start of each gap (a zero-order hold).
        Pass them to :meth:`forward` and :meth:`evolve` as ``covariates``.

    Notes
    -----
    ``solve`` (a dict with ``method``, ``rtol``, ``atol``, ``adjoint``,
    ``max_num_steps`` and optionally ``options``) chooses how the state is
    integrated between observations:

    - fixed-step methods ``"euler"``, ``"midpoint"`` and ``"rk4"`` take their
      steps inline. Without ``options["step_size"]`` a gap is one step (a
      ResNet-like unrolling); with it each series' gaps are split into
      ``ceil(|gap| / step_size)`` equal steps (``options["step_rule"] =
      "paper"``: ``max(2, int(|gap| / step_size)) - 1``, the rule of the
      paper's implementation) by inserting rows that observe nothing into
      that series alone, so a series' result is the same whatever else is in
      the batch (:meth:`evolve` steps each row its own number of times
      instead). Euler steps through a field of linear layers with tanh or
      ReLU between them run with a hand-written backward pass
      (``_odernn_fused``), the same function;
    - any other method (adaptive ones such as ``"dopri5"``) integrates
      ``dh/ds = gap * f(h)`` over ``s`` in [0, 1] with
      :func:`dynlearn.solvers.solve_ode`, all rows together.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.nn import ODERNNEncoder
    >>> encoder = ODERNNEncoder(n_features=2, hidden_dim=8)
    >>> values, mask = torch.randn(3, 5, 2), torch.ones(3, 5, 2, dtype=torch.bool)
    >>> times, lengths = torch.arange(5.0).expand(3, 5), torch.tensor([5, 4, 2])
    >>> states, final = encoder(values, mask, times, lengths, solve=dict(method="rk4"))
    >>> tuple(states.shape), tuple(final.shape)
    ((3, 5, 8), (3, 8))
    """

    def __init__(
        self,
        n_features: int,
        hidden_dim: int,
        ode_hidden: Sequence[int] = (64,),
        activation: str = "tanh",
        gru_hidden: int | None = None,
        n_inputs: int = 0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise input_error("activation", f"one of {sorted(ACTIVATIONS)}", repr(activation), "Pick a listed name.")
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.n_inputs = n_inputs
        self.field = MLPVectorField(hidden_dim, tuple(ode_hidden), activation, n_inputs=n_inputs)
        if gru_hidden is None:
            self.gru: nn.Module = nn.GRUCell(2 * n_features + n_inputs, hidden_dim)
        else:
            self.gru = _GRUUnit(2 * n_features + n_inputs, hidden_dim, gru_hidden)

    # ----------------------------------------------------------- evolve
    def evolve(
        self,
        h: torch.Tensor,
        gaps: torch.Tensor,
        *,
        solve: dict[str, Any],
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        covariates: torch.Tensor | None = None,
        velocity: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integrate hidden states ``h`` (N, H) by per-row time gaps ``gaps`` (N,).

        Gaps may be zero (the state is returned unchanged) or negative (the
        state is integrated backwards in time). With ``bounds`` = ``(lower,
        upper)``, tensors of shape (H,), the state follows the projected flow
        on that box: it starts clamped into the box and stays in it (fixed
        steps are clamped after each step; adaptive solves integrate a field
        whose components pointing out of the box vanish on its faces).
        ``covariates`` (N, n_inputs), required with ``n_inputs``: each row's
        input, held over its gap. ``velocity`` (N, H): the field at ``h``,
        ``f(h)``, where the caller has it (the ``velocity`` the encoder
        returns at its states). Where the written-out Euler rollout runs
        (Euler steps of a tanh/ReLU field, no bounds or covariates), each
        row's first step reads it instead of evaluating the field there (the
        same states to rounding); elsewhere the field is evaluated as usual.
        Returns (N, H).
        """
        held = self._checked_held(covariates, h.shape[0])
        if velocity is not None and velocity.shape != h.shape:
            raise input_error("velocity", f"the field at h, of h's shape {tuple(h.shape)}",
                              f"shape {tuple(velocity.shape)}", "Pass the encoder's velocity at the same rows as h.")
        return self._evolver(solve, bounds)(h, gaps.to(h.dtype).reshape(-1, 1), held, velocity)

    def _checked_held(self, covariates: torch.Tensor | None, n_rows: int) -> torch.Tensor | None:
        n_inputs = getattr(self, "n_inputs", 0)
        if not n_inputs:
            if covariates is not None:
                raise input_error("covariates", "None for an encoder without inputs (n_inputs=0)",
                                  f"shape {tuple(covariates.shape)}", "Build the encoder with n_inputs.")
            return None
        if covariates is None or covariates.shape[0] != n_rows or covariates.shape[-1] != n_inputs:
            received = "None" if covariates is None else f"shape {tuple(covariates.shape)}"
            raise input_error("covariates", f"inputs of shape (..., {n_inputs}) for each of the {n_rows} rows",
                              received, "Pass the known inputs of every row.")
        return covariates

    def _evolver(self, solve: dict[str, Any], bounds: tuple[torch.Tensor, torch.Tensor] | None = None):
        """A function ``(h, gaps (N, 1)) -> h`` for the method in ``solve``, projected on ``bounds`` if given."""
        solve = dict(solve)
        info = ode_method(solve.pop("method", "rk4"))
        options = dict(solve.pop("options", None) or {})
        step_size, rule = _step_size(options), _step_rule(options)
        options.pop("step_rule", None)
        net = self.field.net
        max_num_steps = solve.get("max_num_steps", 10_000)
        if info.name in FIXED_STEP_METHODS:
            # Unbounded Euler steps of a field the written-out rollout runs: one autograd node for all of them.
            written_out = info.name == "euler" and bounds is None and fusable_field(net)
            field_net, net = net, mlp_function(net, rescaled=True)

            def step(h: torch.Tensor, dt: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
                f = net if held is None else (lambda x: net(torch.cat([x, held], dim=-1)))
                out = fixed_step(info.name, f, h, dt)
                return out if bounds is None else torch.clamp(out, *bounds)

            def evolve_inline(h: torch.Tensor, gaps: torch.Tensor, held: torch.Tensor | None = None,
                              velocity: torch.Tensor | None = None) -> torch.Tensor:
                if bounds is not None:
                    h = torch.clamp(h, *bounds)
                rolled_out = written_out and held is None and not gaps.requires_grad
                if step_size is None:
                    if rolled_out and velocity is not None:  # the one step, from the field value the caller has
                        return torch.addcmul(h, gaps, velocity)
                    return step(h, gaps, held)
                n_steps = _substeps(gaps, step_size, max_num_steps, rule)
                dt = gaps / n_steps
                if rolled_out:
                    if velocity is not None:  # the first step from the field value the caller has
                        h, n_steps = torch.addcmul(h, dt, velocity), n_steps - 1
                    return euler_rows(h, dt, n_steps, field_net)
                return stepped_rows(step, h, dt, n_steps, held)

            return evolve_inline

        def evolve_solver(h: torch.Tensor, gaps: torch.Tensor, held: torch.Tensor | None = None,
                          velocity: torch.Tensor | None = None) -> torch.Tensor:
            field: nn.Module = _GapScaledField(net, gaps, held)
            if bounds is not None:
                h, field = torch.clamp(h, *bounds), _ProjectedField(field, *bounds)
            s = torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
            params = tuple(p for p in net.parameters() if p.requires_grad)
            step_options = dict(options)
            if step_size is not None:
                # On the [0, 1] clock one step must stay within step_size for the longest gap.
                step_options["step_size"] = step_size / max(float(gaps.abs().max()), step_size)
            out = solve_ode(field, h, s, method=info.name, options=step_options, adjoint_params=params, **solve)[-1]
            if bounds is not None:  # what the solver's error control lets through the faces
                out = torch.clamp(out, *bounds)
            # torchdiffeq reports s = 1 through its interpolant, which keeps a resting row only to rounding.
            return torch.where(gaps == 0, h, out)

        return evolve_solver

    def _loop(
        self,
        inputs: torch.Tensor,
        update: torch.Tensor,
        gaps: torch.Tensor,
        moves: list[bool],
        updates_all: list[bool],
        solve: dict[str, Any],
        held: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows recorded by autograd, for any method: states, priors (batch, n_rows, hidden_dim) and the last state.

        ``held`` (batch, n_rows, n_inputs): the input held over the gap into each row.
        """
        evolve = self._evolver(solve)
        if isinstance(self.gru, _GRUUnit):
            gru = self.gru.stepper(inputs)
        else:
            gru = _gru_cell_stepper(self.gru, inputs)
        h = inputs.new_zeros(inputs.shape[0], self.hidden_dim)
        states, priors = [], []
        for k in range(inputs.shape[1]):
            if k > 0 and moves[k]:
                h = evolve(h, gaps[:, k]) if held is None else evolve(h, gaps[:, k], held[:, k])
            priors.append(h)
            h = gru(k, h) if updates_all[k] else torch.where(update[:, k], gru(k, h), h)
            states.append(h)
        return torch.stack(states, dim=1), torch.stack(priors, dim=1), h

    # ---------------------------------------------------------- forward
    def forward(
        self,
        values: torch.Tensor,
        mask: torch.Tensor,
        times: torch.Tensor,
        lengths: torch.Tensor,
        *,
        solve: dict[str, Any],
        reverse: bool = False,
        return_before: bool = False,
        return_velocity: bool = False,
        covariates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        """Run the ODE-RNN over every series' observations.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, n_times, n_features)
            Padded observations (values are ignored where the mask is False).
        times : Tensor of shape (batch, n_times)
            Observation times, padded with each series' last time.
        lengths : Tensor of shape (batch,)
            Number of rows of each series.
        solve : dict
            ``method``, ``rtol``, ``atol``, ``adjoint``, ``max_num_steps``
            (and optionally ``options``); see the class notes.
        reverse : bool, default=False
            Process each series from its last observation back to its first.
        covariates : Tensor of shape (batch, n_times, n_inputs), default=None
            The known inputs at every row (required with ``n_inputs``, also
            at rows without observed values): read by the GRU at each
            observation and held over the gap that starts there.

        Returns
        -------
        states : Tensor of shape (batch, n_times, hidden_dim)
            The state just after the update at each observation, indexed by
            observation in time order (for ``reverse=True``, index ``k`` holds
            the state after processing observations ``k .. n-1`` backwards).
            Padding rows hold the final state.
        final : Tensor of shape (batch, hidden_dim)
            The state after the last processed observation: at the series'
            last observation time (forward) or its first (reverse).
        before : Tensor of shape (batch, n_times, hidden_dim)
            Only with ``return_before=True``: the state just before the update
            at each observation, i.e. evolved there from the previous one
            (the state at the first processed observation is zero); decoded,
            it predicts each observation from the ones before it alone.
        velocity : Tensor of shape (batch, n_times, hidden_dim) or None
            Only with ``return_velocity=True``: the vector field at each
            state, ``f(states[:, k])``, where the written-out Euler loop ran
            the rows (it evaluates the field there for its next step; see
            :meth:`evolve`'s ``velocity``) and one evaluation of the field
            takes at least 4096 multiply-adds; else None (a smaller field
            costs less to evaluate again than its values cost to carry).
        """
        batch, n_times, n_features = values.shape
        if covariates is not None or getattr(self, "n_inputs", 0):
            self._checked_held(covariates, batch)
            if covariates.shape[:2] != (batch, n_times):
                raise input_error("covariates", f"shape ({batch}, {n_times}, {self.n_inputs}) like values",
                                  f"shape {tuple(covariates.shape)}", "Pass the inputs at every row.")
        if n_features != self.n_features or mask.shape != values.shape or times.shape != (batch, n_times):
            raise input_error(
                "values, mask, times",
                f"values and mask of shape (batch, n_times, {self.n_features}) and times (batch, n_times)",
                f"values {tuple(values.shape)}, mask {tuple(mask.shape)}, times {tuple(times.shape)}",
                "Pass padded tensors from one SeriesBatch.",
            )
        device = values.device
        lengths = lengths.to(device)
        mask = mask.to(device=device, dtype=torch.bool)
        rows = torch.arange(n_times, device=device).expand(batch, n_times)
        real = rows < lengths[:, None]
        if reverse:
            # Row j of the processing order is observation n-1-j of the series.
            order = torch.where(real, lengths[:, None] - 1 - rows, torch.zeros_like(rows))
            values = values.gather(1, order[..., None].expand_as(values))
            mask = mask.gather(1, order[..., None].expand_as(mask))
            times = times.gather(1, order)
            if covariates is not None:
                covariates = covariates.gather(1, order[..., None].expand_as(covariates))
        mask = mask & real[..., None]
        inputs = torch.cat([values * mask, mask.to(values.dtype)], dim=-1)
        held = None
        if covariates is not None:
            covariates = covariates.to(values.dtype)
            held = _held_inputs(covariates, real, reverse)
            inputs = torch.cat([inputs, covariates], dim=-1)
        update = mask.any(dim=-1, keepdim=True)  # (batch, n_times, 1)
        gaps = torch.zeros(batch, n_times, 1, dtype=values.dtype, device=device)
        gaps[:, 1:, 0] = torch.where(real[:, 1:], times[:, 1:] - times[:, :-1], 0).to(values.dtype)
        step_size = _step_size(solve.get("options"))
        position = None
        if step_size is not None and ode_method(solve.get("method", "rk4")).name in FIXED_STEP_METHODS:
            limit = solve.get("max_num_steps", 10_000)
            rule = _step_rule(solve.get("options"))
            inputs, update, gaps, position = _refine(inputs, update, gaps, real, step_size, limit, rule)
            if held is not None:  # every inserted step holds the input of the gap it splits
                owner = _owners(position, gaps.shape[1])
                held = held.gather(1, owner[..., None].expand(-1, -1, held.shape[-1]))
            dropped = ("step_size", "step_rule")
            solve = {**solve, "options": {k: v for k, v in solve["options"].items() if k not in dropped}}
        # One host sync for the whole loop: which steps move any clock, and which update every row.
        moves, updates_all = torch.stack([(gaps[..., 0] != 0).any(dim=0), update[..., 0].all(dim=0)]).tolist()
        # The hand-written backward gives no gradient to the times, so times that need one take the recorded loop.
        fused = not gaps.requires_grad and ode_method(solve.get("method", "rk4")).name == "euler"
        # The hand-written loop has no inputs in its field: a driven encoder takes the recorded loop.
        if fused and held is None and fusable_field(self.field.net):
            rows_first = [tensor.transpose(0, 1).contiguous() for tensor in (gaps, update, inputs)]
            states, priors, velocity = euler_gru_loop(
                *rows_first[:2], moves, updates_all, self.field.net, self.gru, rows_first[2]
            )
            states, priors = states.transpose(0, 1), priors.transpose(0, 1)
            h = states[:, -1]
            # A field cheaper to evaluate again than its values are to carry hands out none.
            carried = return_velocity and field_multiply_adds(self.field.net) >= MULTIPLY_ADDS_WORTH_INDEXING
            if carried and velocity is not None:
                velocity = self._completed_velocity(states, velocity.transpose(0, 1), moves)
            else:
                velocity = None
        else:
            states, priors, h = self._loop(inputs, update, gaps, moves, updates_all, solve, held)
            velocity = None
        before = priors if return_before else None
        if position is not None:
            where = position[..., None].expand(-1, -1, self.hidden_dim)
            states = states.gather(1, where)
            before = before.gather(1, where) if return_before else None
            velocity = None if velocity is None else velocity.gather(1, where)
        if not torch.isfinite(h).all():
            raise IntegrationError(
                "The ODE-RNN state became non-finite. Try a smaller learning rate, a step_size bound, "
                "an adaptive solver, or rescaling time so observation gaps are of order one."
            )
        if reverse:
            # Processing row j = n-1-k holds observation k; padding rows get the final state.
            back = torch.where(real, lengths[:, None] - 1 - rows, torch.full_like(rows, n_times - 1))
            states = states.gather(1, back[..., None].expand_as(states))
            before = before.gather(1, back[..., None].expand_as(before)) if return_before else None
            velocity = None if velocity is None else velocity.gather(1, back[..., None].expand_as(velocity))
        return (states, h) + ((before,) if return_before else ()) + ((velocity,) if return_velocity else ())

    def _completed_velocity(self, states: torch.Tensor, velocity: torch.Tensor, moves: list[bool]) -> torch.Tensor:
        """The loop's field values (batch, n_rows, hidden_dim) with the field evaluated at the rows it left out
        (the last row, and rows before one where no series moves)."""
        n_rows = states.shape[1]
        missing = [k for k in range(n_rows) if k + 1 == n_rows or not moves[k + 1]]
        at = torch.tensor(missing, device=states.device)
        f = mlp_function(self.field.net, rescaled=True)
        left_out = states.index_select(1, at)
        return velocity.index_copy(1, at, f(left_out.reshape(-1, self.hidden_dim)).reshape(left_out.shape))
