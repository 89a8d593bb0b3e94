"""LatentSDE: a latent stochastic differential equation fitted by variational inference (Li et al. 2020)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .._compat import Interval, StrOptions
from .._random import stream_seed, torch_stream
from ..data import QueryTimes, SeriesBatch, check_query_times, to_user_kind
from ..exceptions import input_error
from ..nn import ACTIVATIONS, make_mlp
from ..solvers import CONTROL_INTERPOLATIONS, ControlPath, MLPLayers, PosteriorLayers, sde_method, solve_sde
from ..training import Callback, TrainState
from ._base import guarded_fit, partial_fit_method
from ._intervals import ForecastIntervals, check_n_samples, sample_quantiles
from ._base import SHARED_CONSTRAINTS, SeriesModel, _sampling_seed

# Smallest diffusion: keeps the KL integrand |u / g|² / 2 finite.
_DIFFUSION_FLOOR = 1e-3
# Smallest learned observation standard deviation (standardised units).
_OBS_STD_FLOOR = 1e-3
# Diffusion activations the fused Euler–Maruyama solve differentiates from their output (MLPLayers' list).
_FUSED_ACTIVATIONS = ("tanh", "relu", "softplus", "elu")
# Rows (series x samples) integrated together when sampling: bounds memory.
_SAMPLE_ROWS = 4096


# ---------------------------------------------------------------- networks
class _Diffusion(nn.Module):
    """Diagonal diffusion ``g_i(z_i)``: one small MLP per latent dimension, evaluated together.

    Each dimension's noise scale depends on that dimension only (the noise is
    then commutative, as Milstein and SRK assume), and lies in
    ``(floor, 1 + floor)`` so the process is never degenerate. Known inputs
    ``u(t)`` enter every dimension's first layer: a function of time, they
    leave the noise commutative.
    """

    def __init__(self, dim: int, hidden: int, activation: str, n_inputs: int = 0):
        super().__init__()
        self.activation = ACTIVATIONS[activation]()
        self.activation_name = activation
        self.w1 = nn.Parameter(torch.empty(dim, hidden).uniform_(-1.0, 1.0))
        self.b1 = nn.Parameter(torch.empty(dim, hidden).uniform_(-1.0, 1.0))
        bound = 1.0 / math.sqrt(hidden)
        self.w2 = nn.Parameter(torch.empty(dim, hidden).uniform_(-bound, bound))
        self.b2 = nn.Parameter(torch.full((dim,), -1.0))  # sigmoid(-1) ~ 0.27 per unit of standardised time
        if n_inputs:
            self.wu = nn.Parameter(torch.empty(n_inputs, dim, hidden).uniform_(-1.0, 1.0) / math.sqrt(n_inputs))

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        pre = z.unsqueeze(-1) * self.w1 + self.b1
        if u is not None:
            pre = pre + torch.einsum("bn,ndh->bdh", u, self.wu)
        hidden = self.activation(pre)
        return torch.sigmoid((hidden * self.w2).sum(-1) + self.b2) + _DIFFUSION_FLOOR


class _Encoder(nn.Module):
    """A GRU run backwards in time over each series' rows.

    The input of a row is its values (0 where missing), its mask and the gap
    to the series' next row; the output at row ``k`` is a summary of rows
    ``k`` to the series' end followed by row ``k``'s values and mask
    (``context_dim + 2 * n_features`` numbers). Each series is read on its
    own rows only, so batch-mates and padding never change its context.
    With ``n_inputs`` known inputs, each row's inputs are read too.
    """

    def __init__(self, n_features: int, hidden: int, context_dim: int, n_inputs: int = 0):
        super().__init__()
        self.gru = nn.GRU(2 * n_features + 1 + n_inputs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, context_dim)

    def forward(
        self, values: torch.Tensor, mask: torch.Tensor, times: torch.Tensor, lengths: torch.Tensor,
        covariates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        width = times.shape[1]
        positions = torch.arange(width, device=times.device)
        real = positions[None, :] < lengths[:, None]
        gaps = torch.zeros_like(times)
        gaps[:, :-1] = (times[:, 1:] - times[:, :-1]) * real[:, 1:]
        parts = [values * mask, mask, gaps.unsqueeze(-1)] + ([covariates] if covariates is not None else [])
        inputs = torch.cat(parts, dim=-1)
        # Row k of a series is step len-1-k of its reversed sequence (padding
        # rows read row 0 and come after every real step, so cannot leak in).
        reverse = (lengths[:, None] - 1 - positions[None, :]).clamp_min(0)
        index = reverse.unsqueeze(-1)
        outputs, _ = self.gru(inputs.gather(1, index.expand_as(inputs)))
        summary = self.out(outputs.gather(1, index.expand(-1, -1, outputs.shape[-1])))
        # The row's own observation rides along, so the posterior can steer straight at it.
        return torch.cat([summary, values * mask, mask], dim=-1)


class _LatentDynamics(nn.Module):
    """The posterior and prior SDEs in the form torchsde integrates.

    ``f`` is the posterior drift ``h_theta(z) + u_phi(z, context(t), r(t))``,
    ``h`` the prior drift ``h_theta(z)``, ``g`` the shared diagonal
    diffusion. Writing the posterior as the prior plus a correction starts
    it at the prior and makes the KL integrand ``|u_phi / g|² / 2``. The
    context of a series on ``[t_k, t_{k+1})`` is the encoder's output at row
    ``k+1`` (the next observation; piecewise constant, the last row's after
    the end) and ``r(t) = t_{k+1} - t`` the time left until it. A fixed-step
    method evaluates the drift at the start of each step, so a step leaving
    an observation already heads for the next one. ``condition`` sets the
    context before a solve; with ``forecast=True`` each row follows the
    posterior up to its series' last observation and the prior after it.

    With ``n_inputs`` known inputs, prior drift, correction and diffusion
    all read ``u(t)``, each series' :class:`~dynlearn.solvers.ControlPath`
    (set by ``condition``) read at the solver's time; a step starting at a
    knot up to round-off reads the segment after it, as the context does.
    """

    noise_type = "diagonal"

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        hidden: Sequence[int],
        diffusion_hidden: int,
        activation: str,
        sde_type: str,
        n_inputs: int = 0,
    ):
        super().__init__()
        self.sde_type = sde_type
        self.n_inputs = n_inputs
        self.correction = make_mlp(latent_dim + context_dim + 1 + n_inputs, latent_dim, hidden, activation)
        self.prior = make_mlp(latent_dim + n_inputs, latent_dim, hidden, activation)
        self.diffusion = _Diffusion(latent_dim, diffusion_hidden, activation, n_inputs)
        self._control: ControlPath | None = None
        self._context: torch.Tensor | None = None
        self._times: torch.Tensor | None = None
        self._last_row: torch.Tensor | None = None
        self._repeats = 1
        self._forecast = False
        self.tolerance = 0.0

    def condition(
        self,
        context: torch.Tensor,
        times: torch.Tensor,
        lengths: torch.Tensor,
        tolerance: float,
        repeats: int = 1,
        forecast: bool = False,
        control: ControlPath | None = None,
    ) -> None:
        """Set the context ``(n_series, width, context_dim)`` of rows at ``times``.

        The solved states are ``repeats`` copies of the series, sample-major.

        Observation times within ``tolerance`` after a solver time count as reached.
        ``control`` holds the known inputs of each series (required with inputs).
        """
        if getattr(self, "n_inputs", 0) and control is None:
            raise ValueError("control: expected the known inputs of each series for a driven latent SDE; got None.")
        self._control = control
        self.tolerance = tolerance
        self._context = context
        self._times = times.contiguous()
        self._last_row = lengths - 1
        self._repeats = repeats
        self._forecast = forecast

    def release(self) -> None:
        self._context = self._times = self._last_row = self._control = None

    def _with_inputs(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z`` with the known inputs at ``t`` appended (``z`` itself without inputs)."""
        if getattr(self, "_control", None) is None:  # models pickled before inputs existed have no attribute
            return z
        u = self._control.at(t, self.tolerance).to(z.dtype).repeat(self._repeats, 1)
        return torch.cat([z, u], dim=-1)

    def _next_rows(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each series' row ahead of each time of ``t`` ``(m,)`` and the time left to it, both ``(n_series, m)``."""
        query = t.to(self._times.dtype).reshape(1, -1).expand(self._times.shape[0], -1).contiguous()
        # A step starting at (or within round-off of) an observation time heads for the next row.
        row = torch.minimum(torch.searchsorted(self._times, query + self.tolerance, side="right"),
                            self._last_row[:, None])  # fmt: skip
        # Time left until that row lets the drift steer towards it (bridge-like) instead of only drifting.
        return row, (self._times.gather(1, row) - query).clamp_min(0.0)

    def _row_context(self, t: torch.Tensor) -> torch.Tensor:
        row, remaining = self._next_rows(t)
        series = torch.arange(row.shape[0], device=row.device)
        context = torch.cat([self._context[series, row[:, 0]], remaining], dim=-1)
        return context.repeat(self._repeats, 1)

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        driven = self._with_inputs(z, t)
        prior = self.prior(driven)
        correction = self.correction(torch.cat([driven, self._row_context(t)], dim=-1))
        if not self._forecast:
            return prior + correction
        last = self._times.gather(1, self._last_row[:, None]).repeat(self._repeats, 1)
        return torch.where(t.to(last.dtype) <= last, prior + correction, prior)

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.prior(self._with_inputs(z, t))

    def posterior_layers(self) -> PosteriorLayers | None:
        """``f``, ``g`` and ``h`` as layers (see :class:`~dynlearn.solvers.PosteriorLayers`) for a conditioned
        posterior without forecasting, whose activation's derivative follows from its output. Known inputs
        are read at every step start as data (a control path with gradients keeps step-by-step calls)."""
        if self._context is None or self._forecast:
            return None
        control = getattr(self, "_control", None)
        if control is not None and (control.coefficients.requires_grad or control.times.requires_grad
                                    or getattr(self.diffusion, "wu", None) is None):
            return None
        activation = getattr(self.diffusion, "activation_name", None)  # models pickled before it lack it
        prior, correction = MLPLayers.of(self.prior), MLPLayers.of(self.correction)
        if prior is None or correction is None or activation not in _FUSED_ACTIVATIONS:
            return None
        if self._times.requires_grad or self._context.dim() != 3:
            return None
        n_series, width, _ = self._context.shape
        table = self._context.reshape(n_series * width, -1)
        offsets = torch.arange(n_series, device=self._times.device) * width

        def rows(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # _row_context at every step start at once: (n_steps, batch) rows and (n_steps, batch, 1) time left.
            row, remaining = self._next_rows(starts)
            return (offsets[:, None] + row).t().repeat(1, self._repeats), remaining.t().unsqueeze(-1).repeat(
                1, self._repeats, 1)

        d = self.diffusion
        if control is None:
            return PosteriorLayers(prior, correction, table, rows, (d.w1, d.b1, d.w2, d.b2), activation,
                                   _DIFFUSION_FLOOR)

        def inputs(starts: torch.Tensor) -> torch.Tensor:
            # _with_inputs' u at every step start at once: (n_steps, batch, n_inputs).
            return control.at_each(starts, self.tolerance).repeat(1, self._repeats, 1)

        return PosteriorLayers(prior, correction, table, rows, (d.w1, d.b1, d.w2, d.b2), activation, _DIFFUSION_FLOOR,
                               inputs, d.wu)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_control", None) is None:
            return self.diffusion(z)
        u = self._control.at(t, self.tolerance).to(z.dtype).repeat(self._repeats, 1)
        return self.diffusion(z, u)


class _LatentSDEModel(nn.Module):
    """Encoder, initial-state posterior and prior, latent SDEs, linear decoder, observation noise."""

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        context_dim: int,
        hidden: Sequence[int],
        encoder_hidden: int,
        diffusion_hidden: int,
        activation: str,
        sde_type: str,
        obs_std: float | None,
        n_inputs: int = 0,
        interpolation: str = "previous",
    ):
        super().__init__()
        self.n_inputs = n_inputs
        self.interpolation = interpolation
        self.encoder = _Encoder(n_features, encoder_hidden, context_dim, n_inputs)
        context_dim += 2 * n_features
        self.initial = nn.Linear(context_dim, 2 * latent_dim)
        self.prior_mean = nn.Parameter(torch.zeros(latent_dim))
        self.prior_log_std = nn.Parameter(torch.zeros(latent_dim))
        self.dynamics = _LatentDynamics(latent_dim, context_dim, hidden, diffusion_hidden, activation, sde_type,
                                        n_inputs)
        self.decoder = nn.Linear(latent_dim, n_features)
        if obs_std is None:
            # softplus(raw) + floor starts at 0.1.
            self.obs_raw = nn.Parameter(torch.full((n_features,), math.log(math.expm1(0.1 - _OBS_STD_FLOOR))))
        else:
            self.register_buffer("obs_fixed", torch.full((n_features,), float(obs_std)))

    def obs_std(self) -> torch.Tensor:
        if hasattr(self, "obs_raw"):
            return nn.functional.softplus(self.obs_raw) + _OBS_STD_FLOOR
        return self.obs_fixed

    def control(self, times: torch.Tensor, inputs: torch.Tensor | None,
                lead: tuple[torch.Tensor, torch.Tensor] | None = None) -> ControlPath | None:
        """The known inputs of each series as a path over its knot times (None without inputs)."""
        if not getattr(self, "n_inputs", 0):
            return None
        return ControlPath(times, inputs, self.interpolation, lead)

    def initial_posterior(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.initial(context[:, 0]).chunk(2, dim=-1)
        return mean, log_std.clamp(-10.0, 5.0).exp()


# ----------------------------------------------------------------- solves
def _integrate(
    dynamics: _LatentDynamics,
    z0: torch.Tensor,
    ts: torch.Tensor,
    *,
    method: str,
    dt: float,
    entropy: int,
    max_num_steps: int,
    adjoint: bool = False,
    logqp: bool = False,
    adjoint_params: tuple[torch.Tensor, ...] | None = None,
) -> Any:
    """One seeded fixed-step solve on ``ts``: ``(T, batch, d)`` (and KL increments ``(T-1, batch)``)."""
    return solve_sde(
        dynamics,
        z0,
        ts,
        method=method,
        dt=dt,
        seed=entropy,
        adjoint=adjoint,
        adjoint_method="adjoint_reversible_heun" if adjoint and method == "reversible_heun" else None,
        adjoint_params=adjoint_params,
        logqp=logqp,
        max_num_steps=max_num_steps,
    )


def _entropy(generator: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


def _normal(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


class _KLAnnealing(Callback):
    """Raises the KL weight of the training loss linearly over the first epochs."""

    def __init__(self, weight: float, epochs: int, holder: dict[str, float]):
        self.weight, self.epochs, self.holder = weight, epochs, holder

    def _set(self, epoch: int) -> None:
        ramp = min(1.0, epoch / self.epochs) if self.epochs > 0 else 1.0
        self.holder["kl_weight"] = self.weight * ramp

    def on_train_begin(self, state: TrainState) -> None:
        self._set(len(state.history) + 1)

    def on_epoch_end(self, state: TrainState) -> None:
        self._set(state.epoch + 1)


# --------------------------------------------------------------- estimator
class LatentSDE(ForecastIntervals, SeriesModel):
    """Latent stochastic differential equation (Li, Wong, Chen & Duvenaud, AISTATS 2020).

    Observations ``x(t)`` are a linear decoding of a latent diffusion
    ``z(t)`` plus Gaussian noise. The generative model is the prior SDE
    ``dz = h_theta(z) dt + g(z) dW`` from ``z0 ~ N(m, s²)``; inference uses
    a posterior SDE ``dz = (h_theta(z) + u_phi(z, c(t))) dt + g(z) dW``
    sharing the diffusion, driven by a context ``c(t)`` that a GRU reads
    backwards in time over the observed values and masks (between two
    observations, the context of the later one, its values and the time
    left until it), with ``z0`` drawn from a Gaussian read off the context
    at the first row. Training maximises the evidence
    lower bound: the Gaussian log-likelihood of the observed entries, minus
    the KL divergence of the initial posterior from the prior, minus the
    path-space KL ``∫ ½ |u_phi / g|² dt`` that torchsde
    accumulates alongside the solve (``logqp``). The loss is the negative
    ELBO of a minibatch divided by its number of observed entries, so its
    scale does not depend on window length or missingness.

    Drift, diffusion and decoder are autonomous (no absolute time input),
    so every window and series is integrated from time 0 on its own clock;
    a minibatch is solved once on the union of its (shifted) observation
    times. With fixed steps the cost is set by ``dt``, not by the number of
    output times (outputs between steps are interpolated linearly).

    ``sample`` draws from the predictive distribution of observations
    given a history: ``z0`` from its posterior, the posterior SDE through
    the observed window (up to each series' last observation), then the
    prior SDE beyond it — the forecast of Li et al. — each path decoded and
    observation noise added. ``predict`` returns the mean of
    ``n_samples_predict`` decoded paths (observation noise has zero mean and
    is left out); ``predict(X)`` reconstructs X at its own times.

    With ``covariates``, known inputs ``u(t)`` drive the latent dynamics:
    prior drift ``h_theta(z, u)``, correction ``u_phi(z, c(t), u)`` and
    diffusion ``g(z, u)`` read them, and the encoder reads them beside the
    observations; a forecast runs the prior SDE under the inputs given at
    the query times.

    Parameters
    ----------
    latent_dim : int, default=4
        Dimension of ``z``.
    context_dim : int, default=16
        Dimension of the encoder's context.
    hidden_layer_sizes : tuple of int, default=(32, 32)
        Hidden widths of the posterior and prior drift networks.
    encoder_hidden_size : int, default=32
        Hidden size of the GRU encoder.
    diffusion_hidden_size : int, default=16
        Hidden width of each latent dimension's diffusion network.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
        Nonlinearity between the hidden layers of the networks.
    dt : float, default=0.25
        Solver step in standardised time (units of the median observation
        gap when ``standardize=True``).
    kl_weight : float, default=1.0
        Weight of both KL terms in the ELBO (1 is the true ELBO).
    kl_anneal_epochs : int, default=10
        Epochs over which the KL weight of the training loss rises linearly
        from ``kl_weight / kl_anneal_epochs`` to ``kl_weight``; validation
        losses always use ``kl_weight``. 0 disables annealing.
    obs_std : float or "learned", default="learned"
        Standard deviation of the Gaussian observation noise on the
        standardised scale: fixed, or one learned value per feature
        (bounded below by 1e-3).
    n_samples_predict : int, default=32
        Sample paths averaged by ``predict`` and ``score``.
    window_size : int or None, default=None
        Observations per training window (at least 2, overlapping by half);
        None trains on whole series.
    solver : str, default="euler"
        A method of :func:`~dynlearn.solvers.available_sde_methods`, used
        with fixed steps: "euler", "milstein", "srk" integrate the model as
        an Itô SDE; "euler_heun", "heun", "midpoint", "log_ode",
        "reversible_heun" as a Stratonovich one. The calculus is part of the
        model, so sampling uses the method the model was fitted with.
    rtol, atol : float, default=1e-3, 1e-4
        Unused by the fixed-step SDE methods; kept for the shared API.
    adjoint : bool, default=False
        Backpropagate with torchsde's stochastic adjoint: memory no longer
        grows with the number of steps. With ``solver="reversible_heun"``
        the backward pass is the algebraically reversible
        ``adjoint_reversible_heun``, whose gradients equal direct
        backpropagation up to round-off; other methods give approximate
        gradients.
    max_num_steps : int, default=10000
        Steps allowed per solve; past it :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default=200
        Most passes over the training data; early stopping (``patience``) may end training sooner.
    batch_size : int or "auto", default=32
        Windows (series) per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=1e-2
        Step size of the AdamW optimiser.
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping on the (stochastic)
        negative ELBO.
    patience : int or None, default=20
        Epochs without improvement before stopping; None trains all epochs.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance and time by the
        median observation gap, inside the estimator.
    device : str, default="auto"
        "auto" (a GPU when one is present), "cpu", "cuda" or "cuda:<index>".
    n_threads : int, "auto" or None, default="auto"
        torch's intra-op threads while ``fit``, ``predict`` and the other
        public methods run; the caller's setting is restored afterwards.
        "auto" uses one thread unless a step's largest matrix product
        (``batch_size`` rows through the largest weight matrix) reaches
        ``dynlearn.training.PARALLEL_WORK`` multiply-adds, then the free
        cores (see README); None leaves torch's setting alone. ``fit``
        records the count it trained with in ``n_threads_``.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the weights and of the computations: float32 is faster, float64 more precise.
    random_state : int, RandomState or None, default=None
        Seeds weights, minibatch order, initial-state draws and Brownian
        paths; the global torch seed is untouched.
    verbose : int, default=0
        Show a progress bar when positive.
    warm_start : bool, default=False
        Continue training the fitted module on the next ``fit``.
    checkpoint : str, os.PathLike or Checkpoint, default=None
        Directory where the training state is saved after every epoch
        (``Checkpoint(directory, every=k)``: every ``k`` epochs); a later
        ``fit`` with the same parameters and data resumes from it exactly,
        and one after a finished fit restores its result. See
        :class:`dynlearn.training.Checkpoint`.
    callbacks : list of Callback, default=None
        :class:`dynlearn.training.Callback` objects called during training
        after the estimator's own (e.g. ``StepDecay``, ``CSVLogger``). The
        objects themselves are called, not copies, so they can collect what
        they see.
    covariates : list of str or int, str or None, default=None
        Known inputs ``u(t)``: the value columns of X (names for frames,
        column indices for arrays) that drive the latent drifts and
        diffusion, and are not forecast. They must be known at every row of
        the history, and ``predict``, ``sample`` and the interval methods
        need them at the query times: pass ``t`` as a query frame holding
        them (the known future inputs). Outputs hold the other columns only.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the inputs are read between their samples (the history's rows
        and the query times, merged in time order): ``"previous"`` holds
        each sample until the next (zero-order hold); ``"linear"`` joins
        samples by straight lines; ``"cubic"`` is a Hermite cubic with
        backward differences as slopes. None of them reads a sample after
        the time being integrated, so a prediction never depends on later
        inputs.
    static_covariates : list of str or int, str or None, default=None
        Per-series constants (a patient's age, a machine's type): value
        columns of X, one value per series (it may be given on any of the
        series' rows and left blank on the others; two different values in
        one series are refused). They enter the model like ``covariates``
        held constant over the whole series, so the dynamics and the initial
        state depend on them. Queries need not carry them: they are read
        from each series' history (``simulate``, where the model has it,
        takes them as ``static_covariates=``). Outputs hold the other
        columns only.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained model (encoder, ``dynamics`` with the prior drift, the
        posterior's correction and the diffusion, decoder).
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit``; defined when fitted on a DataFrame.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    method_ : str
        The torchsde method the model was fitted with.
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature standardisation.
    time_scale_ : float
        Time unit the model integrates in (median observation gap).
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units), the reference
        of :class:`~dynlearn.exceptions.ForecastRangeWarning`.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without inputs).
    static_index_ : ndarray of int
        Positions of the ``static_covariates`` among X's value columns
        (absent without them).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without inputs).

    Examples
    --------
    >>> from dynlearn import LatentSDE
    >>> from dynlearn.datasets import make_ou_process
    >>> frame = make_ou_process(n_series=8, n_times=20, random_state=0)
    >>> model = LatentSDE(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(frame)
    >>> model.sample(frame, t=[5.5, 6.0], n_samples=10, random_state=0).shape
    (160, 3)
    """

    _score_reconstructs = True

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "context_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [tuple, list],
        "encoder_hidden_size": [Interval(Integral, 1, None, closed="left")],
        "diffusion_hidden_size": [Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "dt": [Interval(Real, 0, None, closed="neither")],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
        "kl_anneal_epochs": [Interval(Integral, 0, None, closed="left")],
        "obs_std": [Interval(Real, 0, None, closed="neither"), StrOptions({"learned"})],
        "n_samples_predict": [Interval(Integral, 1, None, closed="left")],
        "window_size": [Interval(Integral, 2, None, closed="left"), None],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(
        self,
        latent_dim: int = 4,
        context_dim: int = 16,
        hidden_layer_sizes: Sequence[int] = (32, 32),
        encoder_hidden_size: int = 32,
        diffusion_hidden_size: int = 16,
        activation: str = "tanh",
        dt: float = 0.25,
        kl_weight: float = 1.0,
        kl_anneal_epochs: int = 10,
        obs_std: float | str = "learned",
        n_samples_predict: int = 32,
        window_size: int | None = None,
        solver: str = "euler",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 10_000,
        max_epochs: int = 200,
        batch_size: int | str = 32,
        learning_rate: float = 1e-2,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 20,
        standardize: bool = True,
        device: str = "auto",
        n_threads: int | str | None = "auto",
        dtype: str = "float32",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        checkpoint: Any = None,
        callbacks: Sequence[Any] | None = None,
        covariates: Sequence[Any] | str | None = None,
        covariate_interpolation: str = "previous",
        static_covariates: Sequence[Any] | str | None = None,
    ):
        self.latent_dim = latent_dim
        self.context_dim = context_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.encoder_hidden_size = encoder_hidden_size
        self.diffusion_hidden_size = diffusion_hidden_size
        self.activation = activation
        self.dt = dt
        self.kl_weight = kl_weight
        self.kl_anneal_epochs = kl_anneal_epochs
        self.obs_std = obs_std
        self.n_samples_predict = n_samples_predict
        self.window_size = window_size
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.max_num_steps = max_num_steps
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.device = device
        self.n_threads = n_threads
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint = checkpoint
        self.callbacks = callbacks
        self.covariates = covariates
        self.covariate_interpolation = covariate_interpolation
        self.static_covariates = static_covariates

    def _check_solver(self) -> None:
        """Fail before any work unless ``solver`` names an SDE method (see ``available_sde_methods``)."""
        sde_method(self.solver, "solver")

    def _sde_type(self) -> str:
        """The calculus of the fitted method: Itô where the method allows it, else Stratonovich."""
        return "ito" if "ito" in sde_method(self.method_).sde_types else "stratonovich"

    def _build_module(self) -> _LatentSDEModel:
        return _LatentSDEModel(
            self._n_states,
            self.latent_dim,
            self.context_dim,
            tuple(self.hidden_layer_sizes),
            self.encoder_hidden_size,
            self.diffusion_hidden_size,
            self.activation,
            self._sde_type(),
            None if self.obs_std == "learned" else float(self.obs_std),
            n_inputs=self._n_inputs,
            interpolation=self.covariate_interpolation,
        )

    _streams_parquet = True

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "LatentSDE":
        """Fit the prior, posterior, encoder and decoder by maximising the ELBO.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            Series in any accepted kind; NaN marks missing entries. A Parquet
            dataset (a path, a ``pyarrow.dataset.Dataset`` or a
            :class:`~dynlearn.data.ParquetSeries`) is read a chunk of whole
            series at a time, as :meth:`NeuralODE.fit` reads it: each chunk
            gives the windows the whole data in memory gives its series, and
            the same series are held out (see the user guide, "Data larger
            than memory").
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        return self._fit(X, t)

    @partial_fit_method
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> "LatentSDE":
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling and solver from ``X``, fresh weights); later calls
        keep them, check ``X`` against the columns seen first, and continue
        training, optimiser state included, with the KL weight annealed over
        the epochs of all calls. Each call adds one record to ``history_``;
        early stopping does not apply, and the weights after the epoch are
        kept.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            As for ``fit``: in memory, or a Parquet dataset read in chunks.
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        return self._partial_fit(X, t)

    def _fit(self, X: Any, t: Any) -> "LatentSDE":
        batch = self._setup_fit(X, t)
        self._check_learnable(batch)
        train_data, valid_data = self._split_data(batch, self._windows)
        if not self._keeps_fitted():
            self.method_ = sde_method(self.solver).name
        self._init_module(self._build_module)
        weight = {"kl_weight": float(self.kl_weight)}
        generator = self._generator("noise")
        adjoint = self.adjoint

        def loss_fn(module: _LatentSDEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            beta = weight["kl_weight"] if module.training else float(self.kl_weight)
            return self._negative_elbo(module, data, beta, generator, adjoint and module.training)

        try:
            self._train(
                loss_fn,
                train_data,
                valid_data,
                callbacks=[_KLAnnealing(float(self.kl_weight), self.kl_anneal_epochs, weight)],
            )
        finally:
            self.module_.dynamics.release()
        return self

    def _windows(self, batch: SeriesBatch, rows: slice | None = None, longest: int | None = None
                 ) -> dict[str, np.ndarray]:
        """Training windows with times shifted to start at 0 (the model is autonomous).

        For a chunk of a stream, ``longest`` (its longest series) sets the
        windows' width as in memory; ``rows`` (the chunk's place) is unused.
        """
        series, index, real = self._window_index(batch, self.window_size, longest)
        times = self._scale_times(batch.times)[series[:, None], index]
        observed = np.where(batch.mask, self._scale_values(batch.values), 0.0)
        windows = {
            "series": series,
            "times": times - times[:, :1],  # rows past a window's end repeat its last time
            "values": observed[series[:, None], index],
            "mask": batch.mask[series[:, None], index] & real[..., None],
            "lengths": real.sum(axis=1),
        }
        if batch.inputs is not None:
            # Inputs at the window's rows (repeated past its end, which holds them), and at the row before its
            # start: the cubic's first slope.
            inputs = self._scale_inputs(batch.inputs)
            all_times = self._scale_times(batch.times)
            before = np.maximum(index[:, 0] - 1, 0)
            windows["inputs"] = inputs[series[:, None], index]
            windows["lead_gap"] = all_times[series, index[:, 0]] - all_times[series, before]
            windows["lead_inputs"] = inputs[series, before]
        return windows

    def _negative_elbo(
        self,
        module: _LatentSDEModel,
        data: dict[str, torch.Tensor],
        beta: float,
        generator: torch.Generator,
        adjoint: bool,
    ) -> torch.Tensor:
        values, mask, times = data["values"], data["mask"], data["times"]
        lengths = data["lengths"].round().long()
        last = times.gather(1, (lengths - 1)[:, None])
        context = module.encoder(values, mask, times, lengths, data.get("inputs"))
        control = None
        if "inputs" in data:
            control = module.control(times, data["inputs"], (data["lead_gap"], data["lead_inputs"]))
        mean, std = module.initial_posterior(context)
        z0 = mean + std * _normal(tuple(mean.shape), generator, mean)
        ts = torch.unique(times)
        dynamics = module.dynamics
        # The adjoint's backward pass evaluates the drift again, so the context stays set until fit ends.
        dynamics.condition(context, times, lengths, 1e-3 * self.dt, control=control)
        try:
            if len(ts) > 1:
                params = (context,) + tuple(dynamics.parameters()) if adjoint else None
                paths, log_ratio = _integrate(
                    dynamics, z0, ts, method=self.method_, dt=self.dt, entropy=_entropy(generator),
                    max_num_steps=self.max_num_steps, adjoint=adjoint, logqp=True, adjoint_params=params,
                )
                # Path KL accumulated after a window's last observation has no data to explain.
                inside = ts[1:, None] <= last[:, 0][None, :]
                path_kl = (log_ratio * inside).sum(0)
            else:
                paths, path_kl = z0[None], z0.new_zeros(z0.shape[0])
        finally:
            if not adjoint:
                dynamics.release()
        rows = torch.searchsorted(ts, times.contiguous())
        latent = paths[rows, torch.arange(len(z0), device=z0.device)[:, None]]
        decoded = module.decoder(latent)
        obs_std = module.obs_std()
        log_lik = (-0.5 * ((values - decoded) / obs_std) ** 2 - obs_std.log() - 0.5 * math.log(2 * math.pi)) * mask
        prior_std = module.prior_log_std.exp()
        initial_kl = (
            torch.log(prior_std / std) + (std**2 + (mean - module.prior_mean) ** 2) / (2 * prior_std**2) - 0.5
        ).sum(-1)
        elbo = log_lik.sum() - beta * (initial_kl.sum() + path_kl.sum())
        return -elbo / mask.sum().clamp_min(1)

    # ------------------------------------------------------ predict, sample
    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """Mean of ``n_samples_predict`` decoded sample paths at the query times.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None reconstructs X at its own times. Times after a series' last
            observation are forecasts.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        Same kind as X
            Predictions in the user's units. The paths are seeded from the
            fitted ``random_state``, so predictions are repeatable.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        draws = self._sample_batch(batch, query, self.n_samples_predict, stream_seed(self._seed, "prediction"),
                                   observation_noise=False)
        return draws.mean(axis=0)

    def _quantile_batch(self, batch: SeriesBatch, query: QueryTimes, levels: np.ndarray, n_samples: Any,
                        random_state: Any) -> np.ndarray:
        """Quantiles of sampled observations (paths with observation noise, as :meth:`sample` draws them)."""
        seed = self._interval_seed(random_state)
        draws = self._sample_batch(batch, query, check_n_samples(n_samples), seed, observation_noise=True)
        return sample_quantiles(draws, levels)

    def sample(self, X: Any, t: Any = None, n_samples: int = 100, random_state: Any = None, *, X_t: Any = None) -> Any:
        """Draw from the predictive distribution of observations given each series' history.

        The initial latent state comes from its posterior given X, the
        posterior SDE runs to each series' last observation and the prior
        SDE beyond it; every decoded path gets the model's observation
        noise. Queries before a series' first observation start its path
        earlier, with the context of the first observation.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times as for :meth:`predict`; None gives X's own times.
        n_samples : int, default=100
            Number of draws.
        random_state : int, RandomState or None, default=None
            Seeds the initial states, Brownian paths and observation noise:
            the same value gives the same samples; None draws fresh ones.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        Same kind as X, with a leading sample axis
            Arrays gain a leading axis of length ``n_samples``; frames get
            an outer ``sample`` index level.
        """
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise input_error("n_samples", "a positive int", repr(n_samples), "E.g. n_samples=100.")
        seed = _sampling_seed(random_state)
        draws = self._sample_batch(batch, query, int(n_samples), seed, observation_noise=True)
        return to_user_kind(draws, query, batch)

    def _sample_batch(
        self, batch: SeriesBatch, query: QueryTimes, n_samples: int, seed: int, observation_noise: bool
    ) -> np.ndarray:
        """Draws ``(n_samples, n_series, n_queries, n_features)`` in user units."""
        times = self._scale_times(batch.times)
        queries = self._scale_times(query.times)
        real_queries = np.where(query.mask, queries, np.inf).min(axis=1)
        start = np.minimum(times[:, 0], real_queries)
        values = np.where(batch.mask, self._scale_values(batch.values), 0.0)
        driven = batch.inputs is not None
        if driven:
            inputs = self._scale_inputs(batch.inputs)
            knots, knot_inputs = _input_knots(times, batch.row_mask, inputs, queries, query.mask,
                                              self._scale_inputs(query.inputs))
        per_chunk = max(1, _SAMPLE_ROWS // n_samples)
        generator = torch_stream(seed, "sampling")
        module = self.module_.eval()
        pieces = []
        with torch.no_grad():
            for first in range(0, batch.n_series, per_chunk):
                part = slice(first, first + per_chunk)
                pieces.append(
                    self._sample_chunk(
                        module,
                        values[part],
                        batch.mask[part],
                        times[part] - start[part, None],
                        batch.lengths[part],
                        queries[part] - start[part, None],
                        n_samples,
                        generator,
                        observation_noise,
                        (inputs[part], knots[part] - start[part, None], knot_inputs[part]) if driven else None,
                    )
                )
        draws = np.concatenate(pieces, axis=1)
        return self._note_forecast_range(self._unscale_values(draws))

    def _sample_chunk(
        self,
        module: _LatentSDEModel,
        values: np.ndarray,
        mask: np.ndarray,
        times: np.ndarray,
        lengths: np.ndarray,
        queries: np.ndarray,
        n_samples: int,
        generator: torch.Generator,
        observation_noise: bool,
        driving: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Draws of one chunk of series; ``driving`` is (history inputs, input knot times, inputs at them)."""
        n_series = len(lengths)
        values_t, mask_t = self._tensor(values), self._tensor(mask.astype(float))
        times_t, queries_t = self._tensor(times), self._tensor(queries)
        lengths_t = torch.as_tensor(lengths, device=self.device_)
        history_inputs, control = None, None
        if driving is not None:
            history_inputs = self._tensor(driving[0])
            control = module.control(self._tensor(driving[1]), self._tensor(driving[2]))
        context = module.encoder(values_t, mask_t, times_t, lengths_t, history_inputs)
        mean, std = module.initial_posterior(context)
        mean, std = mean.repeat(n_samples, 1), std.repeat(n_samples, 1)  # sample-major rows: s * n_series + b
        z0 = mean + std * _normal(tuple(mean.shape), generator, mean)
        ts = torch.unique(torch.cat([times_t.new_zeros(1), times_t.reshape(-1), queries_t.reshape(-1)]))
        entropy = _entropy(generator)
        if len(ts) > 1:
            module.dynamics.condition(context, times_t, lengths_t, 1e-3 * self.dt, repeats=n_samples, forecast=True,
                                      control=control)
            try:
                paths = _integrate(module.dynamics, z0, ts, method=self.method_, dt=self.dt, entropy=entropy,
                                   max_num_steps=self.max_num_steps)
            finally:
                module.dynamics.release()
        else:
            paths = z0[None]
        rows = torch.searchsorted(ts, queries_t.contiguous()).repeat(n_samples, 1)
        latent = paths[rows, torch.arange(z0.shape[0], device=z0.device)[:, None]]
        decoded = module.decoder(latent)
        if observation_noise:
            decoded = decoded + module.obs_std() * _normal(tuple(decoded.shape), generator, decoded)
        return decoded.reshape(n_samples, n_series, *decoded.shape[1:]).cpu().double().numpy()

    # --------------------------------------------------------------- score


def _input_knots(times: np.ndarray, row_mask: np.ndarray, inputs: np.ndarray, queries: np.ndarray,
                 query_mask: np.ndarray, query_inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each series' known inputs at its rows and its query times, merged in time order.

    Returns knot times ``(n_series, n_knots)`` and inputs ``(n_series,
    n_knots, n_inputs)``; past a series' last knot it is repeated (at least
    once), so the signal holds its last value after it.
    """
    all_times = np.concatenate([np.where(row_mask, times, np.inf), np.where(query_mask, queries, np.inf)], axis=1)
    all_inputs = np.concatenate([inputs, query_inputs], axis=1)
    order = np.argsort(all_times, axis=1, kind="stable")
    count = np.isfinite(all_times).sum(axis=1)
    slots = np.minimum(np.arange(int(count.max()) + 1)[None, :], count[:, None] - 1)
    index = np.take_along_axis(order, slots, axis=1)
    knot_times = np.take_along_axis(all_times, index, axis=1)
    knot_inputs = np.take_along_axis(all_inputs, index[..., None], axis=1)
    return knot_times, knot_inputs
