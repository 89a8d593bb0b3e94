"""LatentODE: a variational latent ODE with an ODE-RNN encoder (Rubanova, Chen & Duvenaud 2019)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional

from .._compat import Interval, StrOptions
from .._random import numpy_stream, torch_stream, uniform_rows
from ..data import QueryTimes, SeriesBatch, check_query_times, to_user_kind
from ..exceptions import TrainingError, input_error
from ..nn import ACTIVATIONS, MLPVectorField, ODERNNEncoder, make_mlp, mlp_function
from ..solvers import CONTROL_INTERPOLATIONS, ControlPath, ode_method, solve_ode, solve_ode_irregular
from ..training import LearningRateDecay, TrainState, draw_rows, whole_batch
from ._base import guarded_fit, partial_fit_method
from ._intervals import ForecastIntervals, check_n_samples, sample_quantiles
from ._base import (
    PENALTY_CONSTRAINTS,
    SERIES_WINDOW,
    SHARED_CONSTRAINTS,
    DynamicsCost,
    SeriesModel,
    SeriesStream,
    _median_window,
    _require_two_times,
    _sampling_seed,
)

# Series encoded at once, and trajectories decoded at once, outside training: bounds memory on big inputs.
_ENCODE_CHUNK = 1024
_DECODE_CHUNK = 4096
# Floor of the posterior standard deviation: keeps log q(z0 | x) finite.
_MIN_STD = 1e-4
_LOG_2PI = math.log(2 * math.pi)
# softplus(_INITIAL_STD_BIAS) = 0.05: the posterior's initial standard deviation.
_INITIAL_STD_BIAS = math.log(math.expm1(0.05))


class _PlainField(nn.Module):
    """A multilayer-perceptron field called as one function of its parameters.

    The same function as ``field(t, y)`` without a module call per layer at
    every solver stage, and with hidden tanh layers run as sigmoids of
    rescaled weights (cheaper on CPU). The rescaled weights are read here, so
    a field is built for each solve.
    """

    def __init__(self, field: MLPVectorField):
        super().__init__()
        self.field = field
        self.net = None if field.time_dependent else mlp_function(field.net, rescaled=True)

    def forward(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        if self.net is None:
            return self.field(t, y) if u is None else self.field(t, y, u)
        return self.net(y if u is None else torch.cat([y, u.to(y.dtype)], dim=-1))

    def mlp_layers(self) -> Any:
        """The field's layers where it is ``dz/dt = mlp(z)`` (see ``MLPVectorField.mlp_layers``)."""
        return self.field.mlp_layers()


class _LatentODEModel(nn.Module):
    """Encoder to q(z0 | x), latent vector field, decoder to observations."""

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        encoder_dim: int,
        encoder_layers: Sequence[int],
        ode_layers: Sequence[int],
        decoder_layers: Sequence[int],
        activation: str,
        n_inputs: int = 0,
        interpolation: str = "previous",
    ):
        super().__init__()
        self.n_inputs = n_inputs
        self.interpolation = interpolation
        self.encoder = ODERNNEncoder(n_features, encoder_dim, tuple(encoder_layers), activation, n_inputs=n_inputs)
        # A linear map from the encoder state to the posterior's mean and raw scale. With a hidden tanh
        # layer (the paper's), the first epochs push its units into saturation while the decoder learns the
        # average path: every series then gets the same code and the encoder never recovers.
        self.posterior = make_mlp(encoder_dim, 2 * latent_dim, (), activation)
        with torch.no_grad():
            # Means start spread like the encoder states (make_mlp shrinks last layers for vector fields),
            # standard deviations small: early training is close to a deterministic autoencoder, whose
            # decoder cannot learn to ignore z0 because the draws would drown the encoder's signal.
            last = self.posterior[-1]
            last.weight[:latent_dim].mul_(10.0)
            last.bias[latent_dim:].fill_(_INITIAL_STD_BIAS)
        self.field = MLPVectorField(latent_dim, tuple(ode_layers), activation, n_inputs=n_inputs)
        self.decoder = make_mlp(latent_dim, n_features, tuple(decoder_layers), activation)

    def encode(
        self,
        rows: dict[str, torch.Tensor],
        origin: torch.Tensor,
        solve: dict[str, Any],
        time_unit: float,
        origin_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(n_series, latent_dim)`` of q(z0 | x) at times ``origin``.

        ``rows`` are the observations given to the encoder, packed to the
        front of each series (``values``, ``mask``, ``times``, ``lengths``,
        and for a driven model ``inputs``, the known inputs at those rows);
        the encoder reads times divided by ``time_unit``. ``origin_inputs``
        (n_series, n_inputs): a driven model's inputs at ``origin``, held
        while the state is carried back there.
        """
        times = rows["times"] / time_unit
        driven = getattr(self, "n_inputs", 0) > 0
        inputs = rows.get("inputs") if driven else None
        _, state = self.encoder(
            rows["values"], rows["mask"], times, rows["lengths"], solve=solve, reverse=True, covariates=inputs
        )
        # The backward pass ends at the first encoded time; carry it on to the origin when that is earlier.
        gap = origin / time_unit - times[:, 0]
        if bool((gap != 0).any()):
            state = self.encoder.evolve(state, gap, solve=solve, covariates=origin_inputs if driven else None)
        mean, raw = self.posterior(state).chunk(2, dim=-1)
        return mean, functional.softplus(raw) + _MIN_STD

    def decode(
        self,
        z0: torch.Tensor,
        times: torch.Tensor,
        solve: dict[str, Any],
        inputs: torch.Tensor | None = None,
        cost: DynamicsCost | None = None,
    ) -> torch.Tensor:
        """Observations ``(n, n_times - 1, n_features)`` at ``times[:, 1:]``; ``z0`` is the state at ``times[:, 0]``.

        Every series runs on its own clock (:func:`solve_ode_irregular`;
        the latent field is autonomous, so with dopri5 the series are
        shifted to start together and share one solve whose steps need not
        end on any output time). When all series of the batch share one
        clock that never goes back before its start (the toy benchmarks,
        shared query times), the problem is solved on that clock with
        :func:`solve_ode`.

        A driven model takes ``inputs`` ``(n, n_times, n_inputs)``, the known
        inputs at ``times``: the field ``f(z, u)`` reads them as a
        :class:`~dynlearn.solvers.ControlPath` over those times (read by the
        model's ``interpolation``), on the segment clock, so the state at a
        time depends on no input after it.

        With a ``cost``, the latent field's penalty along these solves is
        added to it (see :class:`DynamicsCost`).
        """
        field, start = _PlainField(self.field), z0
        if cost is not None:
            field, start, solve = cost.wrap(field, z0, solve)
        if getattr(self, "n_inputs", 0):
            control = ControlPath(times, inputs, self.interpolation)
            path = solve_ode_irregular(field, start, times, control=control, **solve)
            return self.decoder(_states(path, cost, dim=1)[:, 1:])
        shared = times[0]
        if bool((times == shared).all()):
            grid, position = torch.unique(shared, sorted=True, return_inverse=True)
            if bool(grid[0] == shared[0]):
                if grid.numel() == 1:
                    path = z0.unsqueeze(1).expand(-1, times.shape[1], -1)
                else:
                    path = _states(solve_ode(field, start, grid, **solve), cost, dim=0).movedim(0, 1)[:, position]
                return self.decoder(path[:, 1:])
        path = solve_ode_irregular(field, start, times, autonomous=True, **solve)
        return self.decoder(_states(path, cost, dim=1)[:, 1:])


def _states(path: torch.Tensor, cost: DynamicsCost | None, dim: int) -> torch.Tensor:
    """The latent states of a decoding solve, its penalty handed to ``cost`` when there is one."""
    return path if cost is None else cost.take(path, dim)


class LatentODE(ForecastIntervals, TransformerMixin, SeriesModel):
    """Latent ODE with an ODE-RNN encoder, trained as a variational autoencoder.

    The model of Rubanova, Chen & Duvenaud, "Latent ODEs for
    Irregularly-Sampled Time Series", NeurIPS 2019. Each series has a latent
    initial state ``z0`` at its first observation time. The encoder, an
    ODE-RNN (:class:`dynlearn.nn.ODERNNEncoder`), reads the series' observed
    entries backwards in time (missing entries never enter it) and gives the
    approximate posterior ``q(z0 | x) = N(mu, diag(sigma²))``; the prior is
    ``N(0, I)``. The latent state follows ``dz/dt = f(z)`` (an autonomous
    multilayer perceptron) on each series' own clock, and a decoder maps it
    to observations, observed with Gaussian noise of fixed standard
    deviation ``obs_std``.

    **Objective.** Training maximises the importance-weighted bound (Burda et
    al. 2016) with ``K = n_samples_train`` draws ``z_k ~ q(z0 | x_enc)``::

        log p(x_target) >= E[ log (1/K) sum_k p(x_target | z_k) p(z_k) / q(z_k | x_enc) ]

    per series, where ``p(x_target | z)`` is the Gaussian likelihood of the
    observed target entries only. The loss is minus the bound summed over
    the series of a minibatch, divided by the number of target entries (a
    per-entry figure). ``K = 1`` (the default) is the ordinary evidence lower
    bound. With a small ``obs_std`` the likelihood is so sharp that the
    ``K``-sample bound rewards the best of the draws, which pushes ``q`` wide
    and lets the decoder ignore ``z0``: use ``K > 1`` with a larger ``obs_std``.

    **Schedule.** As in the paper, the KL part of the bound
    (``log p(z) - log q(z | x)``) is weighed by 0 for the first
    ``kl_warmup_epochs`` epochs and by ``1 - kl_anneal_rate ** (epoch -
    kl_warmup_epochs)`` after, and the learning rate decays by
    ``learning_rate_decay`` per minibatch down to ``learning_rate / 10``. The
    warm-up lets the encoder learn codes the decoder uses before the prior
    pulls them together; without it the posterior collapses onto the prior
    and every series decodes to the same mean path. Validation scores the
    bound itself (weight 1), so early stopping follows the true objective.

    **Training tasks.** ``task="interpolation"``: in every minibatch the
    encoder sees a fresh random ``observed_fraction`` of each series'
    observation times, and all observed entries are reconstructed.
    ``task="extrapolation"``: the encoder sees (the same random fraction of)
    the observations in the first half of each series' time window only, and
    every observed entry is reconstructed: the second half forecast, the
    first half (shown or not) explained by the same trajectory. Validation
    uses one fixed draw of the encoded subsets.

    **Refining the posterior.** The encoder maps a series to q(z0 | x) in one
    pass, and with few observations its guess can miss what the decoder
    could fit. With ``refine_steps > 0`` (the default, 100) every prediction
    (``predict``, ``score``, ``sample``, ``transform``, the intervals) first
    moves the posterior mean of ``z0`` by that many Adam steps (learning
    rate ``refine_rate``) toward the mode of ``log p(x | z0) + log p(z0)``
    on the observations given, decoder and weights fixed (semi-amortised
    inference, Kim et al. 2018); the posterior standard deviation stays the
    encoder's. Each step costs a decode and its backward pass over the given
    observations. ``fit`` refines too where it estimates ``noise_std_``.

    The defaults (``refine_steps=100``, ``refine_rate=0.1``,
    ``patience=50``) are there because the encoder alone does not
    interpolate series that differ in more than one way: on a panel of
    sinusoids with random frequency, amplitude and phase, half of each
    series observed (benchmarks/latent_defaults.py), the encoder's mean
    gave a held-out MSE of 0.050 after training with ``patience=20``,
    twice that of carrying the last observed value forward (0.023);
    refining it (100 steps at rate 0.1) gave 0.0018, and training with
    ``patience=50`` as well 0.00081 (29 times better than the last value),
    for about 0.1 s per series to predict on one thread. Set
    ``refine_steps=0`` for the encoder's posterior as trained (the paper's
    predictions) and the fastest predictions; the steps can be changed
    after fitting with ``set_params``.

    Parameters
    ----------
    latent_dim : int, default=10
        Dimension of the latent state ``z``.
    encoder_dim : int, default=20
        Size of the ODE-RNN encoder's hidden state.
    encoder_layer_sizes : tuple of int, default=(100, 100)
        Hidden widths of the encoder's vector field.
    ode_layer_sizes : tuple of int, default=(100, 100)
        Hidden widths of the latent vector field ``f``.
    decoder_layer_sizes : tuple of int, default=()
        Hidden widths of the decoder; ``()`` is a linear decoder.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
        Nonlinearity between the hidden layers of the networks.
    obs_std : float, default=0.01
        Standard deviation of the observation noise, in standardised units
        when ``standardize=True`` (the paper's "noise weight").
    n_samples_train : int, default=1
        Importance samples of ``z0`` per series in the training bound.
    kl_warmup_epochs : int, default=10
        Epochs trained with the KL term weighed by 0 (see Schedule).
    kl_anneal_rate : float, default=0.99
        After the warm-up the KL weight is ``1 - kl_anneal_rate ** n`` after
        ``n`` epochs; 0 gives weight 1 at once.
    kinetic_weight : float, default=0.0
        Kinetic regularisation of the latent dynamics (Finlay et al. 2020,
        "How to train your neural ODE"): adds ``kinetic_weight`` times the
        mean over the decoded trajectories of ``∫ ‖f(z)‖² dt`` (model time)
        to the training loss (minus the bound per target entry), which
        favours straighter, slower latent dynamics that adaptive solvers
        integrate in fewer steps. The integral is carried as an extra state
        of the decoding solve and does not change its step sizes. The
        validation bound, predictions and the encoder are unaffected. See
        the training guide for measured effects.
    jacobian_weight : float, default=0.0
        Jacobian regularisation (Finlay et al. 2020): adds
        ``jacobian_weight`` times the mean of ``∫ ‖∂f/∂z‖_F² dt``, estimated
        with one Gaussian probe per trajectory (Hutchinson), at the cost of
        a vector-Jacobian product per evaluation.
    observed_fraction : float, default=0.5
        Share of each series' (candidate) observation times given to the
        encoder in each training minibatch, at least one.
    task : {"interpolation", "extrapolation"}, default="interpolation"
        What training asks of the model (see above).
    refine_steps : int, default=100
        Adam steps that refine the posterior mean of ``z0`` on the given
        observations before predicting (see above); 0 uses the encoder's.
    refine_rate : float, default=0.1
        Learning rate of those steps, in latent units.
    encoder_solver : str, default="euler"
        Method of the encoder's solves between observations (the paper uses
        Euler steps there); one step per observation gap for fixed-step methods.
    solver : str, default="dopri5"
        Method of the latent ODE; any name of :func:`dynlearn.solvers.available_ode_methods`.
    rtol, atol : float, default=1e-3, 1e-4
        Solver tolerances, on the internal scale.
    adjoint : bool, default=False
        Backpropagate through the latent ODE with the adjoint method.
    max_num_steps : int, default=1000
        Step limit of each solve; past it :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default=200
        Most passes over the training data; early stopping (``patience``) may end training sooner.
    batch_size : int or "auto", default=50
        Series per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=1e-2
        Initial step size of the AdamW optimiser (see ``learning_rate_decay``).
    learning_rate_decay : float, default=0.999
        Factor applied to the learning rate per minibatch (updated at each
        epoch's end), down to ``learning_rate / 10``; 1 keeps it constant.
    ode_learning_rate_scale : float, default=1.0
        The latent vector field's learning rate as a multiple of the rest's
        (the encoder, posterior and decoder); it decays with them. At the
        shared rate (1) the field learns a fast rotation in its first
        epochs, before the model fits anything, and the adaptive solver
        takes several times the steps. 0.5 interpolated a panel of varied
        sinusoids 1.4-2.3 times more accurately (4 panels) with 0.69-0.94
        times the evaluations per epoch, but short driven fits forecast
        worse (R² 0.80-0.96 against 0.97-0.98 after 30 epochs on forced
        oscillators), and 0.3 learns too little dynamics in a hundred or so
        steps (benchmarks/latent_evaluations.py, benchmarks/README.md).
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping; 0 monitors the training loss.
    patience : int or None, default=50
        Epochs without improvement before stopping; None trains all epochs.
        The validation bound of a latent ODE improves in slow, uneven
        steps: at 20 the sinusoid panel above stopped after 148 epochs with
        twice the held-out error of the full 200.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance over observed
        entries, and time so that the median series window spans 5 units
        (the paper's toy clock); outputs are in the user's units. False
        keeps values and times as given.
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
        Seeds weights, minibatches, the encoded subsets and the training
        draws of ``z0``; the global torch seed is untouched.
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
        column indices for arrays) that drive the series and are not
        forecast. The encoder's GRU reads ``[values * mask, mask, u(t_i)]``
        at each row it encodes, holding ``u`` over the gaps between them,
        and the latent field becomes ``dz/dt = f(z, u(t))``, solved on the
        per-series segment clock through the history's rows and the query
        times in time order. Inputs must be known at every row (rows with
        missing values still carry theirs); ``predict``, ``sample`` and
        the intervals need ``t`` as a query frame holding the inputs at the
        query times. The encoder reads the inputs of the history only, so a
        forecast depends on the future inputs only through the latent
        path, and never on an input after the time predicted. Outputs hold
        the state columns only. See ``docs/user_guide/inputs.md``.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the latent field reads the inputs between their samples:
        ``"previous"`` holds each sample until the next (zero-order hold),
        ``"linear"`` joins samples by straight lines, ``"cubic"`` is a
        Hermite cubic with backward differences as slopes; none reads a
        sample after the time being integrated. The encoder always holds
        each input over the gap it starts (its fixed steps between rows).
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
        ``encoder`` (ODE-RNN), ``posterior`` (state to mean and std),
        ``field`` (latent vector field), ``decoder``.
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature standardisation (of the states, without the inputs).
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without inputs).
    static_index_ : ndarray of int
        Positions of the ``static_covariates`` among X's value columns
        (absent without them).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without inputs).
    time_scale_ : float
        Time unit the model integrates in (the median series window spans five of them).
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units), the reference
        of :class:`~dynlearn.exceptions.ForecastRangeWarning`.
    noise_std_ : ndarray of shape (n_features,)
        Spread of observations about the model's predictions, in user units,
        measured by ``fit`` on the held-out validation series (all series
        when none are held out) at the entries the training task predicts.

    Notes
    -----
    ``predict`` decodes the posterior mean of ``z0`` (a single trajectory, not
    the mean of sampled trajectories; refined when ``refine_steps > 0``);
    ``sample`` draws ``z0`` from the
    posterior (or the prior) and decodes each draw. ``predict_quantiles``
    and ``predict_interval`` give quantiles of the predictive distribution:
    decoded draws of ``z0`` plus Gaussian noise of standard deviation
    ``noise_std_`` (not ``obs_std``, a training weight far below the real
    spread, with which the intervals would cover almost nothing). ``transform`` returns the
    posterior mean of ``z0``, one row per series in order of first
    appearance, so the estimator can feed a classifier in a ``Pipeline``
    with one label per series.

    Examples
    --------
    >>> from dynlearn import LatentODE
    >>> from dynlearn.datasets import make_periodic
    >>> frame = make_periodic(n_series=8, n_times=12, irregular=True, random_state=0)
    >>> model = LatentODE(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,),
    ...                   max_epochs=2, random_state=0).fit(frame)
    >>> model.transform(frame).shape
    (8, 2)
    >>> model.sample(frame, t=[5.5, 6.0], n_samples=3, random_state=0).shape
    (48, 3)
    """

    _score_reconstructs = True

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "encoder_dim": [Interval(Integral, 1, None, closed="left")],
        "encoder_layer_sizes": [tuple, list],
        "ode_layer_sizes": [tuple, list],
        "decoder_layer_sizes": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "obs_std": [Interval(Real, 0, None, closed="neither")],
        "n_samples_train": [Interval(Integral, 1, None, closed="left")],
        "kl_warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "kl_anneal_rate": [Interval(Real, 0, 1, closed="both")],
        **PENALTY_CONSTRAINTS,
        "learning_rate_decay": [Interval(Real, 0, 1, closed="right")],
        "ode_learning_rate_scale": [Interval(Real, 0, None, closed="neither")],
        "observed_fraction": [Interval(Real, 0, 1, closed="right")],
        "task": [StrOptions({"interpolation", "extrapolation"})],
        "encoder_solver": [str],
        "refine_steps": [Interval(Integral, 0, None, closed="left")],
        "refine_rate": [Interval(Real, 0, None, closed="neither")],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(
        self,
        latent_dim: int = 10,
        encoder_dim: int = 20,
        encoder_layer_sizes: Sequence[int] = (100, 100),
        ode_layer_sizes: Sequence[int] = (100, 100),
        decoder_layer_sizes: Sequence[int] = (),
        activation: str = "tanh",
        obs_std: float = 0.01,
        n_samples_train: int = 1,
        kl_warmup_epochs: int = 10,
        kl_anneal_rate: float = 0.99,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        observed_fraction: float = 0.5,
        task: str = "interpolation",
        refine_steps: int = 100,
        refine_rate: float = 0.1,
        encoder_solver: str = "euler",
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int | str = 50,
        learning_rate: float = 1e-2,
        learning_rate_decay: float = 0.999,
        ode_learning_rate_scale: float = 1.0,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 50,
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
        self.encoder_dim = encoder_dim
        self.encoder_layer_sizes = encoder_layer_sizes
        self.ode_layer_sizes = ode_layer_sizes
        self.decoder_layer_sizes = decoder_layer_sizes
        self.activation = activation
        self.obs_std = obs_std
        self.n_samples_train = n_samples_train
        self.kl_warmup_epochs = kl_warmup_epochs
        self.kl_anneal_rate = kl_anneal_rate
        self.kinetic_weight = kinetic_weight
        self.jacobian_weight = jacobian_weight
        self.observed_fraction = observed_fraction
        self.task = task
        self.refine_steps = refine_steps
        self.refine_rate = refine_rate
        self.encoder_solver = encoder_solver
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.max_num_steps = max_num_steps
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.ode_learning_rate_scale = ode_learning_rate_scale
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

    _streams_parquet = True

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "LatentODE":
        """Train encoder, latent dynamics and decoder on the series in ``X``.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            Series in any accepted kind; NaN marks missing entries. A Parquet
            file or directory of long rows (``series_id``, ``time``, one
            column per variable; str or path-like), a
            ``pyarrow.dataset.Dataset`` of them, or a
            :class:`~dynlearn.data.ParquetSeries` (to set ``chunk_size``) is
            read a chunk of whole series at a time, so data larger than
            memory can be fitted (see the user guide, "Data larger than
            memory"); the same series are held out for validation as in
            memory. Needs ``pyarrow`` (``pip install 'dynlearn[parquet]'``).
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
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> "LatentODE":
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling and clock from ``X``, fresh weights); later calls keep
        them, check ``X`` against the columns seen first, and continue
        training, optimiser state included. The KL weight and the learning
        rate follow the schedule of the epochs counted over all calls. Each
        call adds one record to ``history_``, re-estimates ``noise_std_``;
        early stopping does not apply, and the weights after the epoch are
        kept. Use it for data that arrive in parts, or to control epochs
        over a Parquet dataset yourself.

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

    def _fit(self, X: Any, t: Any) -> "LatentODE":
        batch = self._setup_fit(X, t)
        self._check_settings(batch)
        train_data, valid_data = self._split_data(batch, self._examples)
        self._init_module(self._build_module)
        draws = self._generator("noise")
        new_cost = DynamicsCost.for_fit(self)
        schedule = _Schedule(self, n_batches=self._steps_per_epoch(train_data))

        def loss_fn(module: _LatentODEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            # Training draws fresh subsets and z0 samples and weighs the KL term by the schedule;
            # validation (eval mode) scores the bound itself on one fixed draw.
            if module.training:
                if new_cost is None:
                    return self._negative_bound(module, data, draws, kl_weight=schedule.kl_weight)[0]
                cost = new_cost(repeats=self.n_samples_train)
                bound = self._negative_bound(module, data, draws, kl_weight=schedule.kl_weight, cost=cost)[0]
                return bound + cost.value
            return self._negative_bound(module, data, None)[0]

        self._train(loss_fn, train_data, valid_data, callbacks=[schedule], batch_weight=_observed_entries)
        self._fit_noise(batch)
        return self

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The latent field's parameters in a group of their own, at ``ode_learning_rate_scale`` times the rate.

        At the shared rate, one group: checkpoints and ``partial_fit`` state keep the layout they had before.
        """
        if self.ode_learning_rate_scale == 1:
            return super()._parameter_groups()
        field = list(self.module_.field.parameters())
        chosen = {id(p) for p in field}
        rest = [p for p in self.module_.parameters() if id(p) not in chosen]
        return [{"params": rest}, {"params": field, "lr_scale": self.ode_learning_rate_scale}]

    def _build_module(self) -> _LatentODEModel:
        return _LatentODEModel(
            self._n_states,
            self.latent_dim,
            self.encoder_dim,
            self.encoder_layer_sizes,
            self.ode_layer_sizes,
            self.decoder_layer_sizes,
            self.activation,
            self._n_inputs,
            self.covariate_interpolation,
        )

    def fit_transform(self, X: Any, y: Any = None, *, t: Any = None) -> np.ndarray:
        """``fit(X, y, t=t)`` then ``transform(X, t=t)``."""
        return self.fit(X, y, t=t).transform(X, t=t)

    def _fit_scaling(self, batch: SeriesBatch) -> None:
        super()._fit_scaling(batch)
        # The latent ODE carries a whole series from its first time, so its clock is set by the length of
        # a series, not by the gap between samples (see SERIES_WINDOW). The encoder reads times in units
        # of the median window, as on the paper's [0, 1] clock: it takes one fixed step per gap, which must
        # be small for the steps to be stable.
        window = _median_window(batch)
        if self.standardize and window is not None:
            self.time_scale_ = window / SERIES_WINDOW
        self.encoder_time_unit_ = max(window / self.time_scale_, 1.0) if window is not None else 1.0

    def _check_settings(self, batch: SeriesBatch) -> None:
        _require_two_times(batch)
        for name in ("encoder_layer_sizes", "ode_layer_sizes", "decoder_layer_sizes"):
            sizes = getattr(self, name)
            if not all(isinstance(w, Integral) and w >= 1 for w in sizes):
                raise input_error(name, "a tuple of positive ints", repr(sizes), "E.g. (100, 100), or () for none.")
        ode_method(self.encoder_solver, "encoder_solver")

    def _solve(self) -> dict[str, Any]:
        return dict(
            method=self.solver, rtol=self.rtol, atol=self.atol, adjoint=self.adjoint, max_num_steps=self.max_num_steps
        )

    def _encoder_solve(self) -> dict[str, Any]:
        return dict(
            method=self.encoder_solver, rtol=self.rtol, atol=self.atol, adjoint=False, max_num_steps=self.max_num_steps
        )

    def _internal(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """Standardised values (0 under the mask), mask, internal times, lengths and known inputs of each series."""
        internal = {
            "values": np.where(batch.mask, self._scale_values(batch.values), 0.0),
            "mask": batch.mask.astype(np.float64),
            "times": self._scale_times(batch.times),
            "lengths": batch.lengths.astype(np.float64),
        }
        if batch.inputs is not None:
            internal["inputs"] = self._scale_inputs(batch.inputs)
        return internal

    def _examples(self, batch: SeriesBatch, rows: slice | None = None, width: int | None = None) -> dict[str, np.ndarray]:
        """One example per series; ``scores`` fix the encoded subsets used for validation.

        ``rows`` (the batch's positions among all series) and ``width`` (the
        longest series' length) place a chunk of a stream, whose series then
        get the scores the whole data in memory gives them.
        """
        examples = self._internal(batch)
        rows = slice(0, batch.n_series) if rows is None else rows
        scores = uniform_rows(self._seed, "validation_subsets", width or batch.times.shape[1], rows)
        examples["scores"] = scores[:, : batch.times.shape[1]]
        examples["series"] = np.arange(batch.n_series)
        return examples

    # ----------------------------------------------------------- objective
    def _negative_bound(
        self,
        module: _LatentODEModel,
        data: dict[str, torch.Tensor],
        generator: torch.Generator | None,
        kl_weight: float = 1.0,
        cost: DynamicsCost | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Minus the importance-weighted bound of a minibatch per target entry, with what it integrated.

        ``generator=None`` uses the stored subset scores and a fixed draw of
        ``z0``, so the figure is a deterministic function of the weights.
        ``kl_weight`` scales ``log p(z) - log q(z | x)`` (1: the bound itself).
        ``cost`` collects the dynamics penalty of the decoding solve.
        Also returns the posterior mean ``(n_series, latent_dim)`` and the
        draws of ``z0`` ``(n_samples_train, n_series, latent_dim)``, which a
        classifier head reads from the same pass.
        """
        # Shapes and draws of the whole minibatch, so a process training on a share of it computes alike.
        width = int(whole_batch(data)["lengths"].max())
        values, mask, times = data["values"][:, :width], data["mask"][:, :width] > 0.5, data["times"][:, :width]
        if generator is None:
            scores, generator = data["scores"][:, :width], torch_stream(self._seed, "validation")
        else:
            draw = functools.partial(_uniform, width=width, generator=generator, dtype=times.dtype)
            scores = draw_rows(draw, len(times)).to(times.device)
        observed_rows = mask.any(-1)
        origin = times[:, 0]
        inputs = data["inputs"][:, :width] if "inputs" in data else None
        shown = _random_subset(self._encoder_candidates(observed_rows, times), scores, self.observed_fraction)
        encoded = _pack_rows(values, mask, times, shown, inputs)
        # A driven decoder runs through every row, observed or not: each row's input drives the path.
        real = torch.arange(width, device=times.device)[None, :] < data["lengths"][:, None]
        target = _pack_rows(values, mask, times, observed_rows if inputs is None else real, inputs)
        origin_inputs = None if inputs is None else inputs[:, 0]
        mean, std = module.encode(encoded, origin, self._encoder_solve(), self.encoder_time_unit_, origin_inputs)
        k = self.n_samples_train
        draw = functools.partial(_normal, shape=(k, -1, mean.shape[-1]), generator=generator, dtype=mean.dtype)
        eps = draw_rows(draw, len(mean), dim=1).to(mean.device)
        z0 = (mean + std * eps).reshape(-1, mean.shape[-1])
        decode_times = torch.cat([origin[:, None], target["times"]], dim=1).repeat(k, 1)
        decode_inputs = None
        if inputs is not None:
            decode_inputs = torch.cat([origin_inputs[:, None], target["inputs"]], dim=1).repeat(k, 1, 1)
        predicted = module.decode(z0, decode_times, self._solve(), decode_inputs, cost)
        predicted = predicted.reshape((k,) + target["values"].shape)
        counts = target["mask"].sum(dim=(1, 2))
        squared = ((predicted - target["values"]) ** 2 * target["mask"]).sum(dim=(2, 3))
        log_likelihood = -0.5 * squared / self.obs_std**2 - counts * (math.log(self.obs_std) + 0.5 * _LOG_2PI)
        # log p(z) - log q(z | x) with z = mean + std * eps; the 2π terms cancel.
        log_ratio = (-0.5 * (mean + std * eps) ** 2 + 0.5 * eps**2 + torch.log(std)).sum(-1)
        bound = importance_logsumexp(log_likelihood + kl_weight * log_ratio) - math.log(k)
        return -bound.sum() / counts.sum().clamp_min(1), mean, z0.reshape((k,) + mean.shape)

    def _encoder_candidates(self, observed_rows: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Rows ``(n, width)`` the training task may show the encoder (it shows ``observed_fraction`` of them).

        Both tasks reconstruct every observed entry; extrapolation only
        encodes the first half of each series' window (and its first row).
        """
        if self.task != "extrapolation":
            return observed_rows
        origin = times[:, 0]
        split = origin + (times[:, -1] - origin) / 2
        early = times <= split[:, None]
        first = torch.zeros_like(observed_rows).scatter_(1, observed_rows.long().argmax(1, keepdim=True), True)
        return observed_rows & (early | first)

    def _fit_noise(self, batch: "SeriesBatch | SeriesStream") -> None:
        """Set ``noise_std_``: the spread of observations about the model's predictions of entries it was not shown.

        On the series held out for validation (all series when none are),
        the encoder is shown the rows the training task shows it (one fixed
        random draw) and the posterior-mean trajectory is compared with the
        observed entries the task predicts: the rows not shown
        (``task="interpolation"``) or those after the encoded first half
        (``task="extrapolation"``). The root mean square of the residuals,
        per feature, is the maximum-likelihood standard deviation of
        Gaussian noise about those predictions: it measures observation
        noise and model error together, where ``obs_std`` is a fixed
        training weight, far below both (the reason the noise-free draws of
        :meth:`sample` cover few observations).

        A stream is read a chunk at a time; its chosen series get the draws
        of shown rows they get in memory.
        """
        held = self.__dict__.get("_held_series")
        n_series = batch.n_series
        chosen = np.sort(held) if held is not None and len(held) else np.arange(n_series)
        sums = np.zeros((2, 2, self._n_states))  # squared residuals and counts, of unshown and of all entries
        if not isinstance(batch, SeriesStream):
            self._add_residuals(batch.subset(chosen), slice(0, len(chosen)), None, sums)
        else:
            width = int(batch.lengths[chosen].max())
            for k in range(batch.source.n_chunks):
                rows = batch.source.chunk_series(k)
                first, stop = (int(i) for i in np.searchsorted(chosen, [rows.start, rows.stop]))
                if stop > first:
                    chunk = batch.read(k)
                    self._add_residuals(chunk.subset(chosen[first:stop] - rows.start), slice(first, stop), width, sums)
        squared, counts = sums
        # Entries the encoder was not shown; where a feature has none (observed_fraction=1), all its entries.
        use = np.where(counts[0] > 0, 0, 1)
        picked = np.arange(self._n_states)
        mean_square = squared[use, picked] / np.maximum(counts[use, picked], 1)
        self.noise_std_ = np.sqrt(mean_square) * self.scale_

    def _add_residuals(self, chosen: SeriesBatch, rows: slice, width: int | None, sums: np.ndarray) -> None:
        """Add ``_fit_noise``'s squared residuals and counts on the series ``chosen`` to ``sums``.

        ``rows`` and ``width`` place them among all chosen series, for the draws of the rows shown.
        """
        data = self._internal(chosen)
        scores = uniform_rows(self._seed, "noise_estimate", width or data["times"].shape[1], rows)
        scores = scores[:, : data["times"].shape[1]]
        module = self.module_.eval()
        squared, counts = sums
        for start in range(0, chosen.n_series, _ENCODE_CHUNK):
            part = slice(start, start + _ENCODE_CHUNK)
            width = int(chosen.lengths[part].max())
            values = self._tensor(data["values"][part, :width])
            mask = self._tensor(data["mask"][part, :width]) > 0.5
            times = self._tensor(data["times"][part, :width])
            inputs = self._tensor(data["inputs"][part, :width]) if "inputs" in data else None
            with torch.no_grad():
                candidates = self._encoder_candidates(mask.any(-1), times)
                shown = _random_subset(candidates, self._tensor(scores[part, :width]), self.observed_fraction)
                rows = _pack_rows(values, mask, times, shown, inputs)
                origin = times[:, 0]
                origin_inputs = None if inputs is None else inputs[:, 0]
                mean, _ = module.encode(rows, origin, self._encoder_solve(), self.encoder_time_unit_, origin_inputs)
            if self.refine_steps:
                if inputs is None:
                    given = {k: rows[k] for k in ("values", "mask", "times")}
                else:  # every row, so the path reads every input; only the shown entries are fitted
                    given = {"values": values, "mask": mask & shown[..., None], "times": times, "inputs": inputs}
                mean = self._refined_mean(module, mean, given, origin)
            with torch.no_grad():
                predicted = module.decode(mean, torch.cat([origin[:, None], times], dim=1), self._solve(),
                                          _with_origin(inputs))
            error = ((predicted - values) ** 2).cpu().double().numpy()
            observed = mask.cpu().numpy()
            # The entries the task predicts: rows not shown (interpolation), rows after the encoded half (extrapolation).
            unshown = observed & ~(shown | candidates if self.task == "extrapolation" else shown).cpu().numpy()[..., None]
            for k, where in enumerate((unshown, observed)):
                squared[k] += np.where(where, error, 0.0).sum(axis=(0, 1))
                counts[k] += where.sum(axis=(0, 1))

    # ------------------------------------------------------------- encoding
    def _posterior(
        self, batch: SeriesBatch, q_times: np.ndarray | None = None, path: "_DrivenPath | None" = None
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Posterior mean and std of z0 (n_series, latent_dim), and each series' origin on the internal clock.

        The origin is the series' first observation time, or its earliest
        query time ``q_times`` (internal clock) when that is earlier: ``z0``
        is the state at the first time the model is asked about, as in
        training, where it sits at the first time conditioned on or scored.
        A driven model passes its ``path`` (:meth:`_driven_path`), whose
        first knot is that origin and whose knots are refined on.
        """
        if path is not None:
            return self._driven_posterior(batch, path)
        data = self._internal(batch)
        origin = data["times"][:, 0]
        if q_times is not None:
            origin = np.minimum(origin, q_times.min(axis=1))
        module = self.module_.eval()
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, batch.n_series, _ENCODE_CHUNK):
                part = slice(start, start + _ENCODE_CHUNK)
                width = int(batch.lengths[part].max())
                values = self._tensor(data["values"][part, :width])
                mask = self._tensor(data["mask"][part, :width]) > 0.5
                times = self._tensor(data["times"][part, :width])
                rows = _pack_rows(values, mask, times, mask.any(-1))
                start_time = self._tensor(origin[part])
                mean, std = module.encode(rows, start_time, self._encoder_solve(), self.encoder_time_unit_)
                if self.refine_steps:
                    # On the series' own rows: where every series has the same times (rows without an
                    # observation included) the decode is one solve on that clock, not one per series.
                    given = {"values": values, "mask": mask, "times": times}
                    mean = self._refined_mean(module, mean, given, start_time)
                means.append(mean)
                stds.append(std)
        return torch.cat(means), torch.cat(stds), origin

    def _driven_posterior(self, batch: SeriesBatch, path: "_DrivenPath") -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """``_posterior`` of a driven model: the encoder reads the history with its inputs; refined along ``path``."""
        data = self._internal(batch)
        origin = path.times[:, 0]
        module = self.module_.eval()
        means, stds = [], []
        for start in range(0, batch.n_series, _ENCODE_CHUNK):
            part = slice(start, start + _ENCODE_CHUNK)
            width = int(batch.lengths[part].max())
            values = self._tensor(data["values"][part, :width])
            mask = self._tensor(data["mask"][part, :width]) > 0.5
            times = self._tensor(data["times"][part, :width])
            inputs = self._tensor(data["inputs"][part, :width])
            knots = path.tensors(self, part)
            with torch.no_grad():
                rows = _pack_rows(values, mask, times, mask.any(-1), inputs)
                mean, std = module.encode(
                    rows, knots["times"][:, 0], self._encoder_solve(), self.encoder_time_unit_, knots["inputs"][:, 0]
                )
            if self.refine_steps:
                mean = self._refined_mean(module, mean, knots, knots["times"][:, 0])
            means.append(mean)
            stds.append(std)
        return torch.cat(means), torch.cat(stds), origin

    def _driven_path(self, batch: SeriesBatch, query: QueryTimes | None = None) -> "_DrivenPath":
        """The knots a driven model's latent path runs through: each series' rows and query times in time order.

        The path starts at the earliest of them (the origin of ``z0``) and
        reads the history's inputs at its rows and the query frame's at the
        query times, so between two knots the field reads only the inputs
        of those knots and the ones before (causal for every reading).
        """
        data = self._internal(batch)
        n, length = batch.times.shape
        if query is None:
            q_times, q_inputs, q_mask = np.zeros((n, 0)), np.zeros((n, 0, self._n_inputs)), np.zeros((n, 0), bool)
        else:
            q_times, q_inputs, q_mask = self._scale_times(query.times), self._scale_inputs(query.inputs), query.mask
        times = np.concatenate([data["times"], q_times], axis=1)
        inputs = np.concatenate([data["inputs"], q_inputs], axis=1)
        real = np.concatenate([batch.row_mask, q_mask], axis=1)
        is_query = np.concatenate([np.zeros((n, length)), np.ones(q_times.shape)], axis=1)
        # Real knots first, in time order (history rows before queries at equal times); padding after them.
        order = np.lexsort((is_query, np.where(real, times, 0.0), ~real), axis=1)
        position = np.argsort(order, axis=1)
        times, inputs, real = (np.take_along_axis(a, order if a.ndim == 2 else order[..., None], axis=1)
                               for a in (times, inputs, real))
        count = real.sum(axis=1)
        last = (count - 1)[:, None]
        times = np.where(real, times, np.take_along_axis(times, last, axis=1))
        inputs = np.where(real[..., None], inputs, np.take_along_axis(inputs, last[..., None], axis=1))
        history = order < length
        row = np.where(history, order, 0)
        values = np.where(history[..., None], np.take_along_axis(data["values"], row[..., None], axis=1), 0.0)
        mask = history[..., None] & np.take_along_axis(batch.mask, row[..., None], axis=1) & real[..., None]
        width = int(count.max())
        return _DrivenPath(times[:, :width], inputs[:, :width], values[:, :width], mask[:, :width],
                           np.minimum(position[:, length:], width - 1))

    def _refined_mean(
        self, module: _LatentODEModel, mean: torch.Tensor, rows: dict[str, torch.Tensor], origin: torch.Tensor
    ) -> torch.Tensor:
        """``mean`` moved by ``refine_steps`` Adam steps toward the mode of p(z0 | rows) under the trained decoder.

        ``rows`` holds padded ``values``, ``mask`` and ``times`` (n, width),
        and for a driven model the ``inputs`` at those times (the first time
        is ``origin``'s).
        The objective is minus ``log p(x | z0) + log p(z0)`` summed over
        series: the Gaussian likelihood (``obs_std``) of the observed entries
        of ``rows`` decoded from ``z0`` at ``origin``, and the N(0, I)
        prior. Each series' ``z0`` only enters its own terms, and Adam scales
        each coordinate on its own, so a series' result does not depend on
        which others are refined with it (up to the shared adaptive steps of
        the solver). Only ``z0`` moves; the weights are left as they are.
        """
        solve = {**self._solve(), "adjoint": False}
        times = torch.cat([origin[:, None], rows["times"]], dim=1)
        inputs = _with_origin(rows.get("inputs"))
        weight = rows["mask"].to(mean.dtype)
        z0 = mean.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z0], lr=self.refine_rate)
        with torch.enable_grad():
            for step in range(self.refine_steps):
                squared = ((module.decode(z0, times, solve, inputs) - rows["values"]) ** 2 * weight).sum()
                objective = 0.5 * squared / self.obs_std**2 + 0.5 * (z0**2).sum()
                (gradient,) = torch.autograd.grad(objective, [z0])
                if not (torch.isfinite(objective) and torch.isfinite(gradient).all()):
                    raise TrainingError(
                        f"Refining the posterior mean of z0 gave a non-finite objective at step {step + 1} of "
                        f"refine_steps={self.refine_steps}. Lower refine_rate (now {self.refine_rate}) or set "
                        "refine_steps=0 to use the encoder's posterior as it is."
                    )
                z0.grad = gradient
                optimizer.step()
        return z0.detach()

    def transform(self, X: Any, *, t: Any = None) -> np.ndarray:
        """Posterior mean of each series' latent initial state.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind.
        t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, as in ``fit``;
            required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``.

        Returns
        -------
        ndarray of shape (n_series, latent_dim)
            One row per series, in order of first appearance (for frames) or
            of the array's first axis; ``z0`` is the state at the series'
            first observation time.
        """
        batch = self._check_input(X, t)
        mean, _, _ = self._posterior(batch, path=self._history_path(batch))
        return mean.cpu().double().numpy()

    def _history_path(self, batch: SeriesBatch) -> "_DrivenPath | None":
        """A driven model's path through the history alone (None without inputs)."""
        return None if batch.inputs is None else self._driven_path(batch)

    # ------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """Posterior-mean trajectory of each series at query times.

        Each series is encoded from all its observations; the latent ODE is
        integrated from the posterior mean of ``z0`` to the query times and
        decoded. ``z0`` is the state at the earliest time asked about: the
        series' first observation, or its first query when that is earlier
        (the encoder's state is carried back to it), just as training puts
        ``z0`` at a series' first time whether or not the encoder was shown
        that point. A query before the first observation therefore gives the
        same result as a row with missing values at that time.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The observations of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None reconstructs X at its own times (the encoder has seen
            them: with a small ``latent_dim`` this is a reconstruction
            through a bottleneck, not a copy). A model with ``covariates``
            needs a frame that also holds the inputs at the query times (an
            array is refused); the latent path runs through the history's
            rows and the query times in time order, reading the inputs at
            each.
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
            Values in the user's units.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        q_times, path = self._query_plan(batch, query)
        mean, _, origin = self._posterior(batch, q_times, path)
        return self._decode(mean, origin, q_times, path)

    def _query_plan(self, batch: SeriesBatch, query: QueryTimes) -> tuple[np.ndarray, "_DrivenPath | None"]:
        """Query times on the internal clock, and for a driven model the path through history and queries."""
        return self._scale_times(query.times), (None if batch.inputs is None else self._driven_path(batch, query))

    def _decode(
        self, z0: torch.Tensor, origin: np.ndarray, q_times: np.ndarray, path: "_DrivenPath | None" = None
    ) -> np.ndarray:
        """Decode ``z0`` (n, latent_dim) at ``q_times`` (n, n_queries); user units (n, n_queries, n_features).

        Queries are integrated in increasing order (first from the origin to
        the earliest query, backwards if it is earlier) and put back in place.
        A driven model integrates along its ``path`` (with as many series as
        ``z0``) and reads the states at the query knots.
        """
        if path is not None:
            return self._decode_path(z0, path)
        order = np.argsort(q_times, axis=1, kind="stable")
        sorted_times = np.take_along_axis(q_times, order, axis=1)
        times = np.concatenate([origin[:, None], sorted_times], axis=1)
        module = self.module_.eval()
        solve = {**self._solve(), "adjoint": False}
        pieces = []
        with torch.no_grad():
            for start in range(0, len(z0), _DECODE_CHUNK):
                part = slice(start, start + _DECODE_CHUNK)
                pieces.append(module.decode(z0[part], self._tensor(times[part]), solve).cpu().double().numpy())
        decoded = np.empty_like(np.concatenate(pieces))
        np.put_along_axis(decoded, order[..., None], np.concatenate(pieces), axis=1)
        return self._note_forecast_range(self._unscale_values(decoded))

    def _decode_path(self, z0: torch.Tensor, path: "_DrivenPath") -> np.ndarray:
        module = self.module_.eval()
        solve = {**self._solve(), "adjoint": False}
        pieces = []
        with torch.no_grad():
            for start in range(0, len(z0), _DECODE_CHUNK):
                part = slice(start, start + _DECODE_CHUNK)
                knots = path.tensors(self, part)
                times = torch.cat([knots["times"][:, :1], knots["times"]], dim=1)
                out = module.decode(z0[part], times, solve, _with_origin(knots["inputs"]))
                pieces.append(out.cpu().double().numpy())
        decoded = np.take_along_axis(np.concatenate(pieces), path.queries[..., None], axis=1)
        return self._note_forecast_range(self._unscale_values(decoded))


    # -------------------------------------------------------------- sample
    def sample(
        self,
        X: Any = None,
        t: Any = None,
        n_samples: int = 100,
        random_state: Any = None,
        prior: bool = False,
        *,
        X_t: Any = None,
    ) -> Any:
        """Trajectories decoded from draws of the latent initial state.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray or None
            Series to condition on: ``z0`` is drawn from ``q(z0 | X)`` at
            each series' first observation or first query time, whichever is
            earlier (as in :meth:`predict`). None (with ``prior=True``)
            draws ``n_samples`` unconditional trajectories.
        t : array-like or DataFrame, default=None
            Query times as in :meth:`predict` (None: X's own times). With
            ``X=None``, a 1-D array of times; ``z0`` is then the state at the
            earliest of them. A model with ``covariates`` needs a query
            frame holding the inputs, as in :meth:`predict`, and refuses
            ``X=None``.
        n_samples : int, default=100
            Trajectories to draw per series.
        random_state : int, RandomState or None, default=None
            Seeds the draws; equal seeds give equal samples.
        prior : bool, default=False
            Draw ``z0`` from the prior ``N(0, I)`` instead of the posterior
            (X then only gives series ids, first times and query times).
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
            Arrays: ``(n_samples, n_series, n_queries, n_features)`` for a
            panel, ``(n_samples, n_queries, n_features)`` for one series;
            frames gain a leading ``sample`` index level (a ``sample`` level
            for MultiIndex frames, a ``sample`` key of the row index
            otherwise); a ragged list becomes one list per sample. With
            ``X=None``: ndarray ``(n_samples, n_times, n_features)``.
            Each draw is a noise-free trajectory (the decoder's mean); the
            observation noise ``obs_std`` is not added.
        """
        check_is_fitted(self, "module_")
        if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
            raise input_error("n_samples", "a positive int", repr(n_samples), "E.g. n_samples=100.")
        generator = torch_stream(_sampling_seed(random_state), "sampling")
        if X is None:
            if X_t is not None:
                raise input_error(
                    "X_t", "None when X is None", "times", "Drop X_t, or pass the series X they belong to."
                )
            return self._sample_prior_times(t, n_samples, generator, prior)
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        q_times, path = self._query_plan(batch, query)
        if prior:
            origin = np.minimum(self._scale_times(batch.times[:, 0]), q_times.min(axis=1))
            mean = torch.zeros(batch.n_series, self.latent_dim, dtype=self.dtype_, device=self.device_)
            std = torch.ones_like(mean)
        else:
            mean, std, origin = self._posterior(batch, q_times, path)
        values = self._draw(mean, std, origin, q_times, n_samples, generator, path)
        return to_user_kind(values, query, batch)

    def _quantile_batch(self, batch: SeriesBatch, query: QueryTimes, levels: np.ndarray, n_samples: Any,
                        random_state: Any) -> np.ndarray:
        """Quantiles of the predictive distribution: decoded draws of ``z0 ~ q(z0 | X)`` plus N(0, noise_std_²) noise."""
        if not hasattr(self, "noise_std_"):
            raise input_error("noise_std_", "a LatentODE fitted by this version of dynlearn (fit estimates its noise)",
                              "a model without it", "Refit the model to get native forecast intervals.")
        n_samples = check_n_samples(n_samples)
        seed = self._interval_seed(random_state)
        q_times, path = self._query_plan(batch, query)
        mean, std, origin = self._posterior(batch, q_times, path)
        draws = self._draw(mean, std, origin, q_times, n_samples, torch_stream(seed, "sampling"), path)
        draws += numpy_stream(seed, "observation_noise").standard_normal(draws.shape) * self.noise_std_
        return sample_quantiles(draws, levels)

    def _sample_prior_times(self, t: Any, n_samples: int, generator: torch.Generator, prior: bool) -> np.ndarray:
        if not prior:
            raise input_error(
                "X",
                "series to condition on (posterior samples)",
                "None",
                "Pass X, or prior=True for unconditional draws.",
            )
        if self._n_inputs:
            raise input_error(
                "X",
                "series with their inputs (and a query frame t holding the inputs at the query times) for a model "
                "driven by covariates",
                "None",
                "Pass the series to condition on (prior=True still draws z0 from the prior) with a query frame.",
            )
        if t is None or np.ndim(t) != 1 or len(t) == 0:
            raise input_error(
                "t", "a 1-D array of times when X is None", f"shape {np.shape(t)}", "E.g. t=np.linspace(0, 5, 50)."
            )
        clock = self.input_spec_.time_encoding.encode(pd.Index(np.asarray(t)), "t")
        if not np.isfinite(clock).all():
            raise input_error("t", "finite times", "NaN or inf", "Remove non-finite times.")
        times = self._scale_times(clock)
        mean = torch.zeros(1, self.latent_dim, dtype=self.dtype_, device=self.device_)
        values = self._draw(mean, torch.ones_like(mean), np.array([times.min()]), times[None], n_samples, generator)
        return values[:, 0]

    def _draw(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        origin: np.ndarray,
        q_times: np.ndarray,
        n_samples: int,
        generator: torch.Generator,
        path: "_DrivenPath | None" = None,
    ) -> np.ndarray:
        """Decoded draws (n_samples, n_series, n_queries, n_features) of z0 ~ N(mean, std²)."""
        eps = torch.randn((n_samples,) + tuple(mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
        z0 = (mean + std * eps).reshape(-1, mean.shape[-1])
        n = mean.shape[0]
        tiled = None if path is None else path.tile(n_samples)
        decoded = self._decode(z0, np.tile(origin, n_samples), np.tile(q_times, (n_samples, 1)), tiled)
        return decoded.reshape((n_samples, n) + decoded.shape[1:])


@dataclass(frozen=True)
class _DrivenPath:
    """Knots of a driven model's latent path, per series: history rows and query times merged in time order.

    ``times`` (n, width) internal clock, padding repeating the last knot;
    ``inputs`` (n, width, n_inputs) scaled; ``values`` and ``mask`` (n,
    width, n_features) the history's observations (none at query knots);
    ``queries`` (n, n_queries) the position of each query among the knots.
    """

    times: np.ndarray
    inputs: np.ndarray
    values: np.ndarray
    mask: np.ndarray
    queries: np.ndarray

    def tensors(self, model: LatentODE, part: slice) -> dict[str, torch.Tensor]:
        """The knots of the series in ``part`` as the model's tensors (what ``_refined_mean`` reads)."""
        return {
            "times": model._tensor(self.times[part]),
            "inputs": model._tensor(self.inputs[part]),
            "values": model._tensor(self.values[part]),
            "mask": torch.as_tensor(self.mask[part], device=model.device_),
        }

    def tile(self, k: int) -> "_DrivenPath":
        """The path repeated ``k`` times along the series axis (one copy per draw)."""
        return _DrivenPath(*(np.tile(a, (k,) + (1,) * (a.ndim - 1)) for a in
                             (self.times, self.inputs, self.values, self.mask, self.queries)))


def _with_origin(inputs: torch.Tensor | None) -> torch.Tensor | None:
    """Inputs at ``[origin, times...]`` when the origin is the first time: the first row's input repeated."""
    return None if inputs is None else torch.cat([inputs[:, :1], inputs], dim=1)


class _Schedule(LearningRateDecay):
    """The KL weight and learning rate of each training epoch (Rubanova et al.'s schedule).

    Epoch ``e`` (counted over warm starts too) weighs the KL term by 0 for
    ``e <= kl_warmup_epochs`` and by ``1 - kl_anneal_rate ** (e - kl_warmup_epochs)``
    after; the learning rate decays as :class:`dynlearn.training.LearningRateDecay`.
    """

    def __init__(self, estimator: LatentODE, n_batches: int):
        super().__init__(estimator.learning_rate, estimator.learning_rate_decay, n_batches)
        self.estimator = estimator
        self.kl_weight = 1.0

    def set_epoch(self, state: TrainState, epoch: int) -> None:
        super().set_epoch(state, epoch)
        warmup, rate = self.estimator.kl_warmup_epochs, self.estimator.kl_anneal_rate
        self.kl_weight = 0.0 if epoch <= warmup else 1.0 - rate ** (epoch - warmup)


def importance_logsumexp(terms: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(terms, dim=0)``, whose gradient keeps clear of subnormal numbers.

    The gradient gives each draw its importance weight ``exp(term - result)``.
    A draw far below the best, as a likelihood at a small ``obs_std`` often
    is, gets a weight near or under the dtype's smallest normal number, and
    on x86 CPUs every product such subnormal numbers reach runs many times
    slower: one draw of one series slowed a Latent ODE's whole backward pass
    by about 15%. So terms more than half the exponent range below the best
    (43.7 nats in float32, 354 in float64) are raised to that floor, which
    takes their gradient: they get exactly zero weight instead of one under
    ``1e-19`` of the best draw's, which the rest of the backward pass could
    scale into the subnormal range. The value is bitwise the same: what those
    terms add is below the rounding of a sum to which the best term adds 1.
    """
    floor = terms.detach().amax(0) + 0.5 * math.log(torch.finfo(terms.dtype).tiny)
    return torch.logsumexp(torch.maximum(terms, floor), dim=0)


def _uniform(n: int, *, width: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    return torch.rand((n, width), generator=generator, dtype=dtype)


def _normal(n: int, *, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(tuple(n if s == -1 else s for s in shape), generator=generator, dtype=dtype)


def _observed_entries(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the bound of a batch of series is averaged over: its observed entries."""
    return data["mask"].sum()


def _random_subset(candidates: torch.Tensor, scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Rows (n, width) keeping ``ceil(fraction * count)`` candidates of each series: those of lowest score."""
    counts = candidates.sum(dim=1)
    keep = torch.ceil(fraction * counts.to(scores.dtype)).long().clamp_min(1)
    order = torch.where(candidates, scores, torch.full_like(scores, 2.0)).argsort(dim=1)
    rank = order.argsort(dim=1)
    return candidates & (rank < keep[:, None])


def _pack_rows(
    values: torch.Tensor,
    mask: torch.Tensor,
    times: torch.Tensor,
    rows: torch.Tensor,
    inputs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The selected ``rows`` of each series moved to the front, in time order, with encoder-style padding.

    Entries outside the selection are masked and zeroed; padding repeats each
    series' last selected time (and its inputs, when ``inputs`` (n, width,
    n_inputs) are given). Series with no selected row keep their first
    time and an empty mask.
    """
    width = values.shape[1]
    position = torch.arange(width, device=values.device)
    key = torch.where(rows, position, position + width)
    index = key.argsort(dim=1)
    lengths = rows.sum(dim=1)
    new_width = max(int(lengths.max()), 1)
    index = index[:, :new_width]
    present = position[:new_width][None, :] < lengths[:, None]
    packed_times = times.gather(1, index)
    last = packed_times.gather(1, (lengths - 1).clamp_min(0)[:, None])
    packed_mask = mask.gather(1, index[..., None].expand(-1, -1, mask.shape[-1])) & present[..., None]
    packed_values = values.gather(1, index[..., None].expand(-1, -1, values.shape[-1])) * packed_mask
    packed = {
        "values": packed_values,
        "mask": packed_mask,
        "times": torch.where(present, packed_times, last),
        "lengths": lengths.clamp_min(1),
    }
    if inputs is not None:
        packed_inputs = inputs.gather(1, index[..., None].expand(-1, -1, inputs.shape[-1]))
        last_inputs = packed_inputs.gather(1, (lengths - 1).clamp_min(0)[:, None, None].expand(-1, 1, inputs.shape[-1]))
        packed["inputs"] = torch.where(present[..., None], packed_inputs, last_inputs)
    return packed
