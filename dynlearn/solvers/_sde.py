"""SDE solves over torchsde with checks, seeded Brownian motion, step limits and error mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchsde import BrownianInterval, sdeint, sdeint_adjoint

from ..exceptions import DynlearnError, IntegrationError, input_error
from . import _euler
from ._control import ControlPath
from ._euler_fused import PosteriorLayers
from ._ode import DEFAULT_MAX_NUM_STEPS, SolverStats

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")

_ADVICE = (
    "Try a smaller dt, a larger max_num_steps, rescaling time so observation "
    "gaps are of order one, a smaller diffusion, or another method (e.g. 'euler')."
)


@dataclass(frozen=True)
class SDEMethodInfo:
    """What dynlearn needs to know about one SDE method.

    ``sde_types`` and ``noise_types`` are the SDEs the method integrates
    (torchsde refuses other combinations); ``strong_order`` is the order for
    the noise types listed except where ``additive_strong_order`` says
    otherwise (additive noise often raises it). ``stages`` bounds the drift
    evaluations per step, which turns a step limit into an evaluation limit.
    ``levy_area`` is the Lévy-area approximation the Brownian motion must
    provide. ``adjoint_only`` methods integrate only the adjoint's backward
    pass (pass them as ``adjoint_method``).
    """

    name: str
    sde_types: tuple[str, ...]
    noise_types: tuple[str, ...]
    strong_order: float
    weak_order: float
    stages: int
    levy_area: str = "none"
    additive_strong_order: float | None = None
    adjoint_only: bool = False


_ALL_NOISE = NOISE_TYPES
_NOT_GENERAL = ("diagonal", "scalar", "additive")

# Orders, noise types and stage counts of torchsde 0.2's methods (read from
# its method classes; strong orders are those for diagonal noise).
SDE_METHODS: dict[str, SDEMethodInfo] = {
    "euler": SDEMethodInfo("euler", ("ito",), _ALL_NOISE, 0.5, 1.0, 1, additive_strong_order=1.0),
    "milstein": SDEMethodInfo("milstein", SDE_TYPES, _NOT_GENERAL, 1.0, 1.0, 1),
    "srk": SDEMethodInfo("srk", ("ito",), _NOT_GENERAL, 1.5, 1.5, 4, levy_area="space-time"),
    "midpoint": SDEMethodInfo("midpoint", ("stratonovich",), _ALL_NOISE, 1.0, 1.0, 2),
    "heun": SDEMethodInfo("heun", ("stratonovich",), _ALL_NOISE, 1.0, 1.0, 2),
    "euler_heun": SDEMethodInfo("euler_heun", ("stratonovich",), _ALL_NOISE, 1.0, 1.0, 2),
    "log_ode": SDEMethodInfo("log_ode", ("stratonovich",), _ALL_NOISE, 1.0, 1.0, 2, levy_area="foster"),
    "reversible_heun": SDEMethodInfo(
        "reversible_heun", ("stratonovich",), _ALL_NOISE, 0.5, 1.0, 1, additive_strong_order=1.0
    ),
    "adjoint_reversible_heun": SDEMethodInfo(
        "adjoint_reversible_heun", ("stratonovich",), _ALL_NOISE, 0.5, 1.0, 1, additive_strong_order=1.0,
        adjoint_only=True,
    ),
}
SDE_ALIASES = {"euler_maruyama": "euler", "em": "euler", "log_ode_midpoint": "log_ode"}

# Levy-area approximations from weakest to strongest; a Brownian motion that
# provides a stronger one serves methods that need a weaker one.
_LEVY_ORDER = ("none", "space-time", "davie", "foster")


def available_sde_methods() -> list[str]:
    """Names accepted by :func:`solve_sde` ``method=`` (aliases included).

    ``adjoint_reversible_heun`` is not listed: it is only an ``adjoint_method``.

    =====================  ==============  =====================  =================
    method                 SDE type        noise types            strong order
    =====================  ==============  =====================  =================
    euler                  Itô             all                    0.5 (1 additive)
    milstein               Itô or Strat.   diagonal/scalar/add.   1.0
    srk                    Itô             diagonal/scalar/add.   1.5
    midpoint, heun,        Stratonovich    all                    1.0 (0.5 general)
    euler_heun, log_ode
    reversible_heun        Stratonovich    all                    0.5 (1 additive)
    =====================  ==============  =====================  =================
    """
    names = sorted(k for k, info in SDE_METHODS.items() if not info.adjoint_only)
    return names + sorted(SDE_ALIASES)


def sde_method(name: str, argument: str = "method", *, adjoint: bool = False) -> SDEMethodInfo:
    """Look up an SDE method (or an alias); raise an error listing the real choices."""
    choices = available_sde_methods() + (["adjoint_reversible_heun"] if adjoint else [])
    if not isinstance(name, str):
        raise input_error(argument, f"an SDE method name (str), one of {choices}", repr(name), "Pass e.g. 'euler'.")
    key = SDE_ALIASES.get(name.lower(), name.lower())
    info = SDE_METHODS.get(key)
    if info is None or (info.adjoint_only and not adjoint):
        fix = "'euler' (Itô) and 'reversible_heun' (Stratonovich) work with every noise type."
        if info is not None:
            fix = f"{name!r} only integrates the adjoint's backward pass; pass it as adjoint_method. " + fix
        raise input_error(argument, f"one of {choices}", repr(name), fix)
    return info


class _GuardedSDE(nn.Module):
    """The caller's SDE seen through dynlearn: counts drift evaluations and stops runaway solves.

    torchsde decides what to call by ``hasattr``, so only ``f``, ``g`` and
    (for ``logqp``) ``h`` are exposed, under those names, whatever the
    caller's names are.
    """

    def __init__(self, sde: Any, drift: str, diffusion: str, noise_type: str, sde_type: str, limit: int,
                 stats: SolverStats | None):
        super().__init__()
        self.inner = sde
        self.drift, self.diffusion = drift, diffusion
        self.noise_type, self.sde_type = noise_type, sde_type
        self.limit, self.stats, self.calls = limit, stats, 0

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.counted(1)
        return getattr(self.inner, self.drift)(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner, self.diffusion)(t, y)

    def counted(self, n: int) -> None:
        """``n`` drift evaluations made at once (a fused solve's steps), counted and bounded as ``f``'s."""
        self.calls += n
        if self.stats is not None:
            self.stats.nfe += n
        if self.calls > self.limit:
            raise IntegrationError(
                f"An SDE solve exceeded its step limit ({self.limit} drift evaluations). "
                f"Raise max_num_steps or use a larger dt. {_ADVICE}"
            )

    def posterior_layers(self) -> PosteriorLayers | None:
        """The SDE's :class:`PosteriorLayers` where it declares them for its own ``f``, ``g`` and ``h``."""
        if (self.drift, self.diffusion, getattr(self, "prior", "h")) != ("f", "g", "h"):
            return None
        return PosteriorLayers.declared_by(self.inner)


class _GuardedSDEWithPrior(_GuardedSDE):
    def __init__(self, *args: Any, prior: str):
        super().__init__(*args)
        self.prior = prior

    def h(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner, self.prior)(t, y)


def solve_sde(
    sde: Any,
    y0: torch.Tensor,
    ts: torch.Tensor,
    *,
    method: str = "euler",
    dt: float | None = None,
    adaptive: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    adjoint: bool = False,
    adjoint_method: str | None = None,
    adjoint_params: tuple[torch.Tensor, ...] | None = None,
    bm: Any = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    logqp: bool = False,
    names: dict[str, str] | None = None,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    options: dict[str, Any] | None = None,
    stats: SolverStats | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrate ``dy = f(t, y) dt + g(t, y) dW`` from ``y0`` and return ``y`` at times ``ts``.

    Parameters
    ----------
    sde : object
        Has ``noise_type`` (one of ``"diagonal"``, ``"scalar"``,
        ``"additive"``, ``"general"``), ``sde_type`` (``"ito"`` or
        ``"stratonovich"``), a drift ``f(t, y) -> (batch, d)`` and a
        diffusion ``g(t, y)`` of shape (batch, d) for diagonal noise and
        (batch, d, m) otherwise (m = 1 for scalar noise); ``h(t, y)``, the
        prior drift, when ``logqp=True``. An ``nn.Module`` when
        ``adjoint=True`` (or pass ``adjoint_params``).
    y0 : Tensor of shape (batch, d)
        State at ``ts[0]``.
    ts : Tensor of shape (n_times,)
        Strictly increasing output times.
    method : str, default="euler"
        A name from :func:`available_sde_methods` that integrates this SDE
        type and noise type.
    dt : float, default=None
        Step (initial step when ``adaptive``). Default: the smallest gap of
        ``ts``. Outputs that do not fall on the step grid are linear
        interpolants of the neighbouring steps (torchsde's convention), so
        choose ``dt`` dividing the gaps when the law at the outputs matters.
    adaptive, rtol, atol : bool, float, float
        Adaptive steps (torchsde's step-doubling controller).
    adjoint : bool, default=False
        Backpropagate with the stochastic adjoint (memory does not grow with
        the number of steps). Exact for the pair ``method="reversible_heun"``,
        ``adjoint_method="adjoint_reversible_heun"`` (Stratonovich); Itô
        adjoints are converted internally and are slower.
    adjoint_method : str, default=None
        Method of the backward solve (torchsde's choice when None).
    adjoint_params : tuple of Tensor, default=None
        Tensors to differentiate with the adjoint when ``sde`` is not a module.
    bm : torchsde Brownian motion, default=None
        Of shape (batch, m) covering ``[ts[0], ts[-1]]`` (``m = d + 1`` for
        diagonal noise with ``logqp``: torchsde integrates the KL term as an
        extra state channel). Default: for fixed-step ``"euler"`` without
        the adjoint, the increments over every step drawn at once from a
        generator seeded from ``seed`` / ``generator``; otherwise a
        ``BrownianInterval`` seeded from them. Pass one ``bm`` to give
        solves of different methods (or with and without the adjoint) the
        same path.
    seed : int, default=None
        Entropy of the default Brownian motion: the same seed gives the same
        paths, and the global random state is never used or changed.
    generator : torch.Generator, default=None
        Draws the seed when ``seed`` is None. With neither, fresh operating
        system entropy is used.
    logqp : bool, default=False
        Also return the increments of ``∫ |(f - h) / g|² / 2 dt`` between
        output times (the path-space KL integrand of a latent SDE); needs
        ``h``. For non-diagonal noise torchsde uses the pseudo-inverse of
        ``g``.
    names : dict, default=None
        Names of the methods to call instead of ``f``, ``g``, ``h``: keys
        ``"drift"``, ``"diffusion"``, ``"prior_drift"``.
    max_num_steps : int, default=10000
        Steps allowed per solve beyond one per output time; past it
        :class:`~dynlearn.exceptions.IntegrationError` is raised (checked before a fixed-step solve
        starts), so no solve hangs.
    options : dict, default=None
        torchsde method options (any option sends an ``"euler"`` solve
        through torchsde instead of the written-out steps).
    stats : SolverStats, default=None
        Receives drift-evaluation counts.

    Returns
    -------
    ys : Tensor of shape (n_times, batch, d)
    log_ratio : Tensor of shape (n_times - 1, batch)
        Only with ``logqp=True``.

    Notes
    -----
    Fixed-step ``"euler"`` (Euler–Maruyama) without the adjoint and without
    ``options`` runs written out (``dynlearn/solvers/_euler.py``): torchsde's
    step grid (steps of ``dt`` from ``ts[0]``, the last cut at ``ts[-1]``)
    and its KL integrand with fewer tensor operations and no Brownian-tree
    queries. Given the same Brownian motion it returns torchsde's states,
    KL increments and gradients to rounding, and one drift evaluation per
    step. Every other solve goes through ``torchsde.sdeint`` /
    ``sdeint_adjoint``.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import solve_sde
    >>> class OU(torch.nn.Module):
    ...     noise_type, sde_type = "diagonal", "ito"
    ...     def f(self, t, y): return -y
    ...     def g(self, t, y): return 0.5 * torch.ones_like(y)
    >>> ys = solve_sde(OU(), torch.zeros(2000, 1), torch.tensor([0.0, 1.0]), dt=0.01, seed=0)
    >>> ys.shape
    torch.Size([2, 2000, 1])
    >>> round(float(ys[-1].var()), 2)  # exact: 0.25 * (1 - e^-2) / 2 = 0.108
    0.11
    """
    noise_type, sde_type = _check_sde(sde)
    y0, ts = _check_state_and_times(y0, ts)
    info = sde_method(method)
    _check_compatible(info, noise_type, sde_type, "method")
    adjoint_info = None
    if adjoint and adjoint_method is not None:
        adjoint_info = sde_method(adjoint_method, "adjoint_method", adjoint=True)
        _check_compatible(adjoint_info, noise_type, sde_type, "adjoint_method")
    dt = _check_dt(dt, ts)
    if not isinstance(max_num_steps, int) or isinstance(max_num_steps, bool) or max_num_steps < 1:
        raise input_error("max_num_steps", "a positive int", repr(max_num_steps), "Pass e.g. 10000.")
    span = float(ts[-1] - ts[0])
    if not adaptive:
        steps = math.ceil(span / dt - 1e-9) + max(len(ts) - 2, 0) if span > 0 else 0
        if steps > max_num_steps:
            raise IntegrationError(
                f"A fixed-step SDE solve would take {steps} steps (span {span:.4g} / dt {dt:.4g}), more than "
                f"max_num_steps={max_num_steps}. Use a larger dt, or raise max_num_steps."
            )
    names = dict(names or {})
    unknown = set(names) - {"drift", "diffusion", "prior_drift"}
    if unknown:
        raise input_error("names", "keys among 'drift', 'diffusion', 'prior_drift'", repr(sorted(unknown)),
                          "Rename the keys.")
    drift, diffusion, prior = names.get("drift", "f"), names.get("diffusion", "g"), names.get("prior_drift", "h")
    _check_callables(sde, drift, diffusion, prior if logqp else None)
    _check_shapes(sde, drift, diffusion, noise_type, y0, ts[0])

    stages = max(info.stages, adjoint_info.stages if adjoint_info else 1)
    limit = (max_num_steps + len(ts)) * stages * (3 if adaptive else 1) + 2 * stages + 4
    parts = (sde, drift, diffusion, noise_type, sde_type, limit, stats)
    guarded = _GuardedSDEWithPrior(*parts, prior=prior) if logqp else _GuardedSDE(*parts)
    if _euler.writes_out(info.name, adaptive, adjoint, options):
        grid = _euler.step_grid(ts, dt)
        if bm is None:
            channels = y0.shape[1] if noise_type == "diagonal" else _noise_channels(sde, diffusion, y0, ts)
            increments = _euler.default_increments(grid, y0.shape[0], channels, _entropy(seed, generator), y0.dtype,
                                                   y0.device)  # fmt: skip
        else:
            _check_brownian(bm, sde, diffusion, noise_type, y0, ts, logqp)
            increments = _euler.queried_increments(bm, grid)
        out = _euler.solve_euler(guarded, y0, grid, increments, logqp)
        return _finite(out, info, stats, guarded, logqp)
    if bm is None:
        levy = max(info.levy_area, adjoint_info.levy_area if adjoint_info else "none", key=_LEVY_ORDER.index)
        # logqp appends the KL integrand to the state; with diagonal noise it gets its own (zero-weight) channel.
        channels = y0.shape[1] + int(logqp) if noise_type == "diagonal" else _noise_channels(sde, diffusion, y0, ts)
        size = (y0.shape[0], channels)
        bm = BrownianInterval(
            t0=float(ts[0]), t1=float(ts[-1]), size=size, dtype=y0.dtype, device=y0.device,
            entropy=_entropy(seed, generator), dt=dt, levy_area_approximation=levy,
        )
    kwargs = dict(bm=bm, method=info.name, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, logqp=logqp,
                  options=options)
    try:
        if adjoint:
            if adjoint_params is None and not isinstance(sde, nn.Module):
                raise input_error(
                    "sde", "an nn.Module when adjoint=True", type(sde).__name__,
                    "Make the SDE an nn.Module or pass adjoint_params.",
                )
            params = adjoint_params if adjoint_params is not None else tuple(sde.parameters())
            out = sdeint_adjoint(
                guarded, y0, ts, adjoint_method=adjoint_info.name if adjoint_info else None,
                adjoint_params=params, adjoint_adaptive=adaptive, adjoint_rtol=rtol, adjoint_atol=atol, **kwargs,
            )
        else:
            out = sdeint(guarded, y0, ts, **kwargs)
    except DynlearnError:
        raise
    except (AssertionError, ValueError) as error:
        raise IntegrationError(f"The {info.name} SDE solve failed: {error}. {_ADVICE}") from None
    return _finite(out, info, stats, guarded, logqp)


def _finite(out: Any, info: SDEMethodInfo, stats: SolverStats | None, guarded: _GuardedSDE, logqp: bool) -> Any:
    """Close a solve's counts and refuse non-finite states (or KL increments)."""
    if stats is not None:
        stats.nfe_forward = stats.nfe
    guarded.calls = 0  # the adjoint's backward solve gets its own budget
    ys = out[0] if logqp else out
    if not torch.isfinite(ys).all() or (logqp and not torch.isfinite(out[1]).all()):
        raise IntegrationError(
            f"The {info.name} SDE solve produced non-finite states (drift or diffusion blew up). {_ADVICE}"
        )
    return out


class _TimeChanged(nn.Module):
    """One observation gap per batch row, run on a shared clock ``s`` in [0, 1].

    With ``t = start + s * gap``, ``dy = gap f dt`` and ``W_t`` over the gap
    equal in law to ``sqrt(gap) W_s``, so the drift is scaled by ``gap``, the
    diffusion by ``sqrt(gap)`` (and a prior drift by ``gap``, which scales
    the KL integrand by ``gap`` as the change of variable requires).

    With a ``control``, the caller's functions are called as ``(t, y, u)``
    with ``u`` the control on segment ``k`` (this gap) at the fraction ``s``.
    """

    def __init__(self, sde: Any, drift: str, diffusion: str, prior: str | None, noise_type: str, sde_type: str,
                 start: torch.Tensor, gap: torch.Tensor, control: ControlPath | None = None, k: int = 0):
        super().__init__()
        self.inner = sde
        self.drift, self.diffusion, self.prior = drift, diffusion, prior
        self.noise_type, self.sde_type = noise_type, sde_type
        self.start, self.gap = start, gap
        self.control = control
        self.segment = torch.tensor(k, device=gap.device)

    def _time(self, s: torch.Tensor) -> torch.Tensor:
        return self.start + s.to(self.gap.dtype) * self.gap

    def _call(self, name: str, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.control is None:
            return getattr(self.inner, name)(self._time(s), y)
        u = self.control.on_segment(self.segment, s).to(y.dtype)
        return getattr(self.inner, name)(self._time(s), y, u)

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._call(self.drift, s, y) * self.gap[:, None]

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self._call(self.diffusion, s, y)
        # With a prior drift, torchsde divides (f - h) by g: a zero gap would give 0 / 0, so the diffusion
        # keeps a negligible floor there (the KL integrand is then exactly 0).
        root = (self.gap.clamp_min(1e-30) if self.prior is not None else self.gap).sqrt()
        return out * root.reshape((-1,) + (1,) * (out.dim() - 1))

    def h(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._call(self.prior, s, y) * self.gap[:, None]


def solve_sde_irregular(
    sde: Any,
    y0: torch.Tensor,
    times: torch.Tensor,
    *,
    method: str = "euler",
    step_size: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    adjoint: bool = False,
    adjoint_method: str | None = None,
    logqp: bool = False,
    names: dict[str, str] | None = None,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    stats: SolverStats | None = None,
    control: ControlPath | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrate a batch where every row has its own non-decreasing output times.

    Row ``b`` starts from ``y0[b]`` at ``times[b, 0]`` and is reported at
    ``times[b, :]``; a repeated time (zero gap, e.g. padding) holds the state.
    Gap ``k`` of every row is integrated together on a clock ``s ∈ [0, 1]``
    with the drift scaled by the row's gap and the diffusion by its square
    root (see ``_TimeChanged``), so the batch needs one torchsde solve
    per gap instead of one on the union of all rows' times. ``func(t, y)``
    receives ``t`` of shape (batch,): each row's own time.

    Each gap takes ``n`` equal steps, ``n`` the smallest power of two with
    ``longest gap / n <= step_size`` (one step when ``step_size`` is None);
    powers of two keep the step grid exact in floating point, so every
    output is a step end, never an interpolant. Each gap's Brownian motion
    is seeded from one entropy drawn from ``seed`` / ``generator``.

    ``control`` drives the SDE with known inputs: a
    :class:`~dynlearn.solvers.ControlPath` whose knots are ``times``; drift
    and diffusion (and the prior drift) are then called as ``(t, y, u)``
    with ``u`` of shape (batch, n_inputs) read on the gap being integrated,
    so an output depends on no input after its time.

    Returns
    -------
    ys : Tensor of shape (batch, n_times, d)
    log_ratio : Tensor of shape (batch, n_times - 1)
        With ``logqp=True``: the KL integrand accumulated over each gap.
    """
    noise_type, sde_type = _check_sde(sde)
    if not torch.is_tensor(times) or times.dim() != 2 or times.shape[0] != y0.shape[0]:
        received = f"shape {tuple(times.shape)}" if torch.is_tensor(times) else type(times).__name__
        raise input_error("times", f"a tensor of shape (batch={y0.shape[0]}, n_times)", received,
                          "Give one row of times per initial state.")
    times = times.to(device=y0.device, dtype=y0.dtype)
    if not torch.isfinite(times).all():
        raise input_error("times", "finite times", "NaN or inf", "Remove non-finite times.")
    gaps = times.diff(dim=1)
    if (gaps < 0).any():
        raise input_error("times", "non-decreasing times in every row", "a decreasing step",
                          "SDEs are integrated forwards only; sort each row.")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise input_error("step_size", "a positive float or None", repr(step_size), "Pass e.g. 0.1.")
    if control is not None and control.coefficients.shape[:2] != (times.shape[0], times.shape[1] - 1):
        raise input_error(
            "control",
            f"a ControlPath over the solve's times: {times.shape[0]} series of {times.shape[1]} knots",
            f"one of {control.coefficients.shape[0]} series of {control.coefficients.shape[1] + 1} knots",
            "Build the path on the same times you pass to the solve.",
        )
    names = dict(names or {})
    drift, diffusion, prior = names.get("drift", "f"), names.get("diffusion", "g"), names.get("prior_drift", "h")
    _check_callables(sde, drift, diffusion, prior if logqp else None)
    n_times = times.shape[1]
    if n_times == 1:
        ys = y0.unsqueeze(1)
        return (ys, y0.new_zeros(y0.shape[0], 0)) if logqp else ys
    longest = float(gaps.max())
    per_gap = 1
    if step_size is not None and longest > 0:
        per_gap = 2 ** max(0, math.ceil(math.log2(longest / step_size - 1e-12)))
    if per_gap * (n_times - 1) > max_num_steps:
        raise IntegrationError(
            f"An SDE solve on per-series clocks would take {per_gap * (n_times - 1)} steps ({per_gap} per gap, "
            f"{n_times - 1} gaps), more than max_num_steps={max_num_steps}. Use a larger step_size or raise "
            "max_num_steps."
        )
    entropies = np.random.SeedSequence(_entropy(seed, generator)).generate_state(n_times - 1)
    unit = torch.tensor([0.0, 1.0], dtype=y0.dtype, device=y0.device)
    states, ratios = [y0], []
    for k in range(n_times - 1):
        # A fresh clock per gap: the adjoint's backward pass runs after the loop and needs each gap's own.
        clock = _TimeChanged(
            sde, drift, diffusion, prior if logqp else None, noise_type, sde_type, times[:, k], gaps[:, k],
            control, k,
        )
        out = solve_sde(
            clock, states[-1], unit, method=method, dt=1.0 / per_gap, seed=int(entropies[k]), adjoint=adjoint,
            adjoint_method=adjoint_method, adjoint_params=_parameters(sde) if adjoint else None, logqp=logqp,
            max_num_steps=max_num_steps, stats=stats,
        )
        if logqp:
            states.append(out[0][-1])
            ratios.append(out[1][-1])
        else:
            states.append(out[-1])
    ys = torch.stack(states, dim=1)
    return (ys, torch.stack(ratios, dim=1)) if logqp else ys


# ----------------------------------------------------------------- internals
def _parameters(sde: Any) -> tuple[torch.Tensor, ...]:
    return tuple(sde.parameters()) if isinstance(sde, nn.Module) else ()


def _entropy(seed: int | None, generator: torch.Generator | None) -> int:
    """The Brownian motion's entropy: from ``seed``, else drawn from ``generator``, else fresh OS entropy."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise input_error("seed", "a non-negative int or None", repr(seed), "Pass e.g. seed=0.")
        return int(seed)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise input_error("generator", "a torch.Generator or None", type(generator).__name__,
                              "Pass torch.Generator().manual_seed(0), or use seed=.")
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return int(np.random.SeedSequence().entropy % 2**62)


def _check_sde(sde: Any) -> tuple[str, str]:
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise input_error("sde.noise_type", f"one of {list(NOISE_TYPES)}", repr(noise_type),
                          "Set the attribute on the SDE object, e.g. noise_type = 'diagonal'.")
    if sde_type not in SDE_TYPES:
        raise input_error("sde.sde_type", f"one of {list(SDE_TYPES)}", repr(sde_type),
                          "Set the attribute on the SDE object, e.g. sde_type = 'ito'.")
    return noise_type, sde_type


def _check_state_and_times(y0: Any, ts: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not torch.is_tensor(y0) or y0.dim() != 2 or not y0.is_floating_point():
        received = f"shape {tuple(y0.shape)}, dtype {y0.dtype}" if torch.is_tensor(y0) else type(y0).__name__
        raise input_error("y0", "a floating tensor of shape (batch, d)", received,
                          "Flatten extra axes into the state, or add a batch axis with y0[None].")
    if not torch.isfinite(y0).all():
        raise input_error("y0", "finite initial states", "NaN or inf", "Fill or drop non-finite initial states.")
    if not torch.is_tensor(ts):
        ts = torch.as_tensor(ts, dtype=y0.dtype, device=y0.device)
    if ts.dim() != 1 or ts.numel() < 1:
        raise input_error("ts", "a 1-D tensor of output times", f"shape {tuple(ts.shape)}",
                          "Pass ts of shape (n_times,).")
    if ts.requires_grad:
        raise input_error("ts", "times that do not require gradients", "requires_grad=True", "Pass ts.detach().")
    if not torch.isfinite(ts).all():
        raise input_error("ts", "finite output times", "NaN or inf", "Remove non-finite times.")
    if ts.numel() > 1 and not (ts.diff() > 0).all():
        raise input_error("ts", "strictly increasing output times", "repeated, unordered or decreasing times",
                          "Sort the times and drop duplicates; SDEs are integrated forwards only.")
    return y0, ts.to(device=y0.device, dtype=y0.dtype)


def _check_dt(dt: Any, ts: torch.Tensor) -> float:
    if dt is None:
        return float(ts.diff().min()) if ts.numel() > 1 else 1.0
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise input_error("dt", "a positive finite float or None", repr(dt), "Pass e.g. dt=0.01.")
    return float(dt)


def _check_compatible(info: SDEMethodInfo, noise_type: str, sde_type: str, argument: str) -> None:
    if sde_type not in info.sde_types:
        other = "'euler', 'milstein' or 'srk'" if sde_type == "ito" else "'reversible_heun', 'midpoint' or 'heun'"
        raise input_error(argument, f"a method for {sde_type} SDEs", f"{info.name!r} (for {list(info.sde_types)})",
                          f"Use {other}.")
    if noise_type not in info.noise_types:
        raise input_error(argument, f"a method for {noise_type} noise",
                          f"{info.name!r} (for {list(info.noise_types)} noise)",
                          "Use 'euler' (Itô) or 'reversible_heun' (Stratonovich), which handle every noise type.")


def _check_callables(sde: Any, drift: str, diffusion: str, prior: str | None) -> None:
    for role, name in (("drift", drift), ("diffusion", diffusion), ("prior drift", prior)):
        if name is not None and not callable(getattr(sde, name, None)):
            raise input_error("sde", f"an object with a {role} method {name}(t, y)", type(sde).__name__,
                              f"Define {name}, or map another method with names={{...}}.")


def _check_shapes(sde: Any, drift: str, diffusion: str, noise_type: str, y0: torch.Tensor, t0: torch.Tensor) -> None:
    """Call drift and diffusion once and check every shape by name, before any work."""
    batch, d = y0.shape
    with torch.no_grad():
        f = getattr(sde, drift)(t0, y0)
        g = getattr(sde, diffusion)(t0, y0)
    if not torch.is_tensor(f) or tuple(f.shape) != (batch, d):
        received = f"shape {tuple(f.shape)}" if torch.is_tensor(f) else type(f).__name__
        raise input_error("sde drift", f"a tensor of shape (batch={batch}, d={d})", received,
                          "Return one drift row per state.")
    if noise_type == "diagonal":
        expected, ok = f"(batch={batch}, d={d})", torch.is_tensor(g) and tuple(g.shape) == (batch, d)
    elif noise_type == "scalar":
        expected, ok = f"(batch={batch}, d={d}, 1)", torch.is_tensor(g) and tuple(g.shape) == (batch, d, 1)
    else:
        expected = f"(batch={batch}, d={d}, m)"
        ok = torch.is_tensor(g) and g.dim() == 3 and tuple(g.shape[:2]) == (batch, d)
    if not ok:
        received = f"shape {tuple(g.shape)}" if torch.is_tensor(g) else type(g).__name__
        raise input_error("sde diffusion", f"a tensor of shape {expected} for {noise_type} noise", received,
                          "Return diagonal noise as (batch, d); other noise types as (batch, d, m).")


def _check_brownian(bm: Any, sde: Any, diffusion: str, noise_type: str, y0: torch.Tensor, ts: torch.Tensor,
                    logqp: bool) -> None:
    """A caller's Brownian motion has the shape torchsde would require of it for this solve."""
    if noise_type == "diagonal":
        channels = y0.shape[1] + int(logqp)
    else:
        channels = _noise_channels(sde, diffusion, y0, ts)
    shape = tuple(getattr(bm, "shape", ()))
    if shape != (y0.shape[0], channels):
        extra = " (one channel per state plus one for the KL term)" if noise_type == "diagonal" and logqp else ""
        raise input_error("bm", f"a Brownian motion of shape (batch={y0.shape[0]}, m={channels}){extra}",
                          f"shape {shape}", "Build it with that size, or leave bm=None for a seeded one.")


def _noise_channels(sde: Any, diffusion: str, y0: torch.Tensor, ts: torch.Tensor) -> int:
    with torch.no_grad():
        return int(getattr(sde, diffusion)(ts[0], y0).shape[-1])
