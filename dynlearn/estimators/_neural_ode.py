"""NeuralODE: dx/dt = f(x[, t]) learned on the observed state."""

from __future__ import annotations

import datetime
import math
import warnings
import weakref
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import Interval, StrOptions
from ..data import QueryTimes, SeriesBatch
from ..exceptions import ConvergenceWarning, IntegrationError, input_error
from ..nn import ACTIVATIONS, BoxContraction, HistoryEncoder, MLPVectorField, SecondOrderField
from ..solvers import (
    COMPILE_MODES,
    CONTROL_INTERPOLATIONS,
    FIXED_STEP_METHODS,
    CompiledFunction,
    ControlPath,
    fixed_rollout,
    ode_method,
    solve_ode_irregular,
    solve_sde_irregular,
)
from ._base import guarded_fit, partial_fit_method
from ._intervals import ConformalIntervals
from ._base import (
    HOLD_OUT_IN_TIME,
    PENALTY_CONSTRAINTS,
    SHARED_CONSTRAINTS,
    DrivenPaths,
    DynamicsCost,
    SeriesModel,
    SeriesStream,
    _anchor_rows,
    _as_states,
    _finite_difference,
    _median_gap,
    _output_times,
    _point_times,
)

# Rows integrated per solve at prediction time: bounds memory on big inputs.
_PREDICT_CHUNK = 4096
# Longest Euler-Maruyama step (model time units: a quarter of the median
# observation gap when standardising) of the noise-injected training solve.
_NOISE_STEP = 0.25
# window_size="auto" without a horizon: a quarter of the median series length (forecasts are usually asked
# for a fraction of the history ahead), within these bounds.
_AUTO_WINDOW_SHARE = 0.25
_AUTO_WINDOW_MIN, _AUTO_WINDOW_MAX = 10, 64
# Training windows start every `stride` rows; the stride shrinks (down to 1) until there are at least this
# many windows, so a few long series still give several minibatches per epoch.
_MIN_WINDOWS = 64
# Windows longer than this are preceded by warm-up stages on windows of _CURRICULUM_START rows, doubling,
# that share at most half of max_epochs: long rollouts from an untrained field start far off and train slowly.
_CURRICULUM_FROM = 8
_CURRICULUM_START = 4
# The stability guard's box is the observed range widened by this share of its width on each side, and
# outside it the field is pulled back at this rate per model time unit (median gap) and unit of distance.
_BOX_MARGIN = 1.0
_BOX_RATE = 1.0
# compile=: the training rollouts of each module, compiled per (method, mode). Held here, outside the module, so
# that pickling, save() and the copies training takes of the best weights never see compiled code.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# augment_dim="auto": hidden dimensions for univariate data (a one-variable autonomous ODE cannot oscillate).
_AUTO_HIDDEN_UNIVARIATE = 2
# Width of the history encoder's GRU state.
_ENCODER_WIDTH = 32


class _ODEModel(nn.Module):
    """Vector field plus the bookkeeping of hidden (augmented) and second-order states.

    ``hidden_init`` says where the hidden dimensions start: ``"zeros"``,
    ``"encoder"`` (a :class:`~dynlearn.nn.HistoryEncoder` of the observations
    up to the initial time, and of the known inputs there when
    ``encoder_inputs`` counts them) or ``"delay"`` (the observations before it,
    newest first). ``box`` = ``(lower, upper)`` on the standardised scale
    turns on the stability guard (:class:`~dynlearn.nn.BoxContraction`).
    """

    def __init__(self, n_features: int, hidden: Sequence[int], activation: str, time_dependent: bool, augment_dim: int,
                 second_order: bool, hidden_init: str = "zeros", box: tuple[np.ndarray, np.ndarray] | None = None,
                 n_inputs: int = 0, interpolation: str = "previous", encoder_inputs: int = 0):
        super().__init__()
        self.n_features = n_features
        self.augment_dim = augment_dim
        self.second_order = second_order
        self.hidden_init = hidden_init if augment_dim > 0 else "zeros"
        self.n_inputs = n_inputs
        self.interpolation = interpolation
        position_dim = n_features + augment_dim
        if second_order:
            self.field = SecondOrderField(position_dim, hidden, activation, time_dependent, n_inputs)
        else:
            self.field = MLPVectorField(position_dim, hidden, activation, time_dependent, n_inputs)
        if self.hidden_init == "encoder":
            self.encoder = HistoryEncoder(n_features, augment_dim, _ENCODER_WIDTH, encoder_inputs)
        self.guarded = box is not None
        if box is not None:
            # Not saved with the weights: rebuilt from the fitted data range (older model files have none).
            self.register_buffer("box_lower", torch.as_tensor(box[0], dtype=torch.float32), persistent=False)
            self.register_buffer("box_upper", torch.as_tensor(box[1], dtype=torch.float32), persistent=False)

    def dynamics(self) -> nn.Module:
        """The field that is integrated: guarded outside the data's box when the guard is on."""
        if not getattr(self, "guarded", False):
            return self.field
        return BoxContraction(self.field, self.box_lower, self.box_upper, _BOX_RATE)

    def hidden_state(self, x0: torch.Tensor, history: dict[str, torch.Tensor] | None) -> torch.Tensor:
        mode = getattr(self, "hidden_init", "zeros")
        if mode == "zeros" or history is None:
            return x0.new_zeros(x0.shape[0], self.augment_dim)
        if mode == "encoder":
            return self.encoder(history["values"], history["mask"], history["gaps"], history["present"],
                                history.get("inputs"))
        # Delay coordinates: the filled rows before x0, newest first, as many values as there are hidden dims.
        lags = history["filled"][:, :-1].flip(1).reshape(x0.shape[0], -1)
        return lags[:, : self.augment_dim]

    def initial_state(self, x0: torch.Tensor, v0: torch.Tensor | None,
                      history: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        state = [x0, self.hidden_state(x0, history)]
        if self.second_order:
            zeros = x0.new_zeros(x0.shape[0], self.augment_dim)
            state += [v0 if v0 is not None else torch.zeros_like(x0), zeros]
        return torch.cat(state, dim=-1)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state[..., : self.n_features]

    def control(self, times: torch.Tensor, inputs: torch.Tensor | None,
                lead: tuple[torch.Tensor, torch.Tensor] | None = None) -> ControlPath | None:
        """The known inputs of each row as a path over its solve times (None without inputs)."""
        if not getattr(self, "n_inputs", 0):
            return None
        return ControlPath(times, inputs, self.interpolation, lead)

    def forward(self, y0: torch.Tensor, times: torch.Tensor, solve: dict[str, Any],
                control: ControlPath | None = None, compile_mode: str | None = None,
                cost: DynamicsCost | None = None) -> torch.Tensor:
        if compile_mode is not None and cost is None and self.compilable(solve, control):
            path = self._compiled_rollout(ode_method(solve["method"]).name, compile_mode)(y0, times)
            if not torch.isfinite(path).all():
                raise IntegrationError(
                    f"The {solve['method']} solve produced non-finite states (the vector field blew up). "
                    "Try a smaller learning rate, stabilize=True, or an adaptive solver such as 'dopri5'."
                )
            return path
        # A field without a time input (nor known inputs) lets windows and series share one solve shifted to a
        # common start; inputs are read segment by segment, on the segment clock.
        field = self.dynamics()
        if cost is not None:  # the dynamics penalty rides along in the state; see DynamicsCost
            field, y0, solve = cost.wrap(field, y0, solve)
        path = solve_ode_irregular(field, y0, times, autonomous=not self.field.time_dependent, control=control,
                                   **solve)  # fmt: skip
        return path if cost is None else cost.take(path, dim=1)


    def compilable(self, solve: dict[str, Any], control: ControlPath | None) -> bool:
        """Whether ``compile=`` applies to this solve: a training step of an autonomous field on a fixed-step method.

        Predictions (no gradients, shapes that change from call to call), known
        inputs, time inputs, the adjoint and adaptive methods stay eager.
        """
        return (
            self.training
            and torch.is_grad_enabled()
            and control is None
            and not self.field.time_dependent
            and not solve.get("adjoint", False)
            and not solve.get("options")
            and ode_method(solve["method"]).name in FIXED_STEP_METHODS
        )

    def _compiled_rollout(self, method: str, mode: str) -> CompiledFunction:
        compiled = _COMPILED.setdefault(self, {})
        key = (method, mode)
        if key not in compiled:

            def rollout(y0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
                field = self.dynamics()
                return fixed_rollout(method, lambda y: field(None, y), y0, times)

            compiled[key] = CompiledFunction(rollout, mode=mode, what=f"the {method} training rollout",
                                             parameters=self.parameters)
        return compiled[key]


class _NoiseInjected(nn.Module):
    """The vector field as the drift of an Itô SDE with diagonal noise (Liu et al. 2019).

    ``g = std`` (additive) or ``g = std * y`` (multiplicative) on every state
    component; used for training solves only.
    """

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, field: nn.Module, std: float, multiplicative: bool):
        super().__init__()
        self.field = field
        self.std = std
        self.multiplicative = multiplicative

    def f(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.field(t, y) if u is None else self.field(t, y, u)

    def g(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.std * (y if self.multiplicative else torch.ones_like(y))


class NeuralODE(ConformalIntervals, SeriesModel):
    """Neural ordinary differential equation on the observed state.

    Learns ``dx/dt = f(x)`` (or ``f(x, t)``) with ``f`` a multilayer
    perceptron, from series observed at irregular times with missing entries
    (Chen et al. 2018). Options add augmented dimensions (Dupont et al.
    2019) and second-order dynamics ``d²x/dt² = f(x, dx/dt)``.

    Training uses windows: each example is ``window_size`` consecutive
    observations of one series; the model integrates from the first (its
    missing entries filled by linear interpolation in time) through the others
    on each series' own times, and the loss is the mean squared error over
    the observed entries that follow — a multi-step rollout objective. By
    default the window is chosen from the data so that training rollouts are
    as long as the forecasts asked for (``horizon``), and long windows are
    preceded by a warm-up on short ones.

    A partially observed system (a single measured variable of an
    oscillator, say) needs more state than it shows: ``augment_dim`` hidden
    dimensions are carried beside the observed ones, and their value at the
    start of each rollout is inferred from the observations before it
    (``hidden_init="encoder"``: a small GRU over the last ``history_length``
    observations and their time gaps, and the known inputs there for a
    driven system, trained end to end). Univariate data
    get hidden dimensions by default.

    Predictions condition on history: the value at a query time is obtained
    by integrating from the latest observation strictly before it (queries at
    or before a series' first observation integrate from that observation,
    backwards when needed), the hidden state read from the observations up to
    it. Times after the last observation are forecasts from it;
    ``predict(X)`` gives one-step-ahead predictions at X's own times. With
    ``stabilize=True`` the field is contractive outside a box around the
    data, so forecasts of a stable system stay near the data's range; a
    prediction farther than 10 times the observed range from it raises a
    :class:`~dynlearn.exceptions.ForecastRangeWarning`.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the hidden layers of ``f``; ``()`` gives a linear system.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
        Nonlinearity between the hidden layers of the networks.
    time_dependent : bool, default=False
        Feed time to ``f`` (non-autonomous dynamics).
    augment_dim : int or "auto", default="auto"
        Hidden state dimensions beyond the observed ones (augmented ODE,
        Dupont et al. 2019); their initial values follow ``hidden_init``.
        ``"auto"``: 2 for univariate data (a one-variable autonomous ODE
        cannot oscillate), 0 otherwise.
    second_order : bool, default=False
        Learn an acceleration; initial velocities are finite differences of
        the observations.
    noise_std : float, default=0.0
        Noise-injection regularisation (Liu et al. 2019, "Neural SDE:
        stabilizing neural ODE networks with stochastic noise"): when
        positive, training solves the Itô SDE ``dx = f(x) dt + g dW`` by
        Euler–Maruyama (steps of at most a quarter of the model time unit,
        fresh Brownian paths every minibatch, seeded from ``random_state``),
        so the learned field must fit data under perturbations of its state.
        Validation, ``predict``, ``simulate`` and ``score`` stay
        deterministic ODE solves. On the standardised scale.
    noise_type : {"additive", "multiplicative"}, default="additive"
        ``g = noise_std`` or ``g = noise_std * x`` on every state component.
    kinetic_weight : float, default=0.0
        Kinetic regularisation (Finlay et al. 2020, "How to train your
        neural ODE"): adds ``kinetic_weight`` times the mean over training
        windows of ``∫ ‖f(x, t)‖² dt`` along each window's solve (model
        time, standardised scale) to the training loss, which favours
        straighter, slower dynamics that adaptive solvers integrate in
        fewer steps. The integral is carried as an extra state of the solve
        and does not change its step sizes. Validation losses, predictions
        and the other solves are unaffected; incompatible with
        ``noise_std > 0``. See the training guide for measured effects.
    jacobian_weight : float, default=0.0
        Jacobian regularisation (Finlay et al. 2020): adds
        ``jacobian_weight`` times the mean of ``∫ ‖∂f/∂x‖_F² dt``, estimated
        with one Gaussian probe per window (Hutchinson), at the cost of a
        vector-Jacobian product per evaluation. Same rules as
        ``kinetic_weight``.
    window_size : int, "auto" or None, default="auto"
        Observations per training window (at least 2); None uses whole
        series. ``"auto"``: enough observations to cover ``horizon`` (at the
        median observation gap) when it is set, otherwise a quarter of the
        median series length, between 10 and 64. Windows start every few
        rows (every row on short data) so that there are at least 64 of
        them. Windows longer than 8 observations are preceded by warm-up
        stages on windows of 4 observations, then 8, 16... (a curriculum),
        which share at most half of ``max_epochs``.
    solver : str, default="dopri5"
        Any name of :func:`dynlearn.solvers.available_ode_methods`.
    rtol, atol : float, default=1e-3, 1e-4
        Solver tolerances, on the standardised scale.
    adjoint : bool, default=False
        Backpropagate with the adjoint method (constant memory in the number
        of solver steps, more evaluations).
    max_num_steps : int, default=1000
        Step limit of each solve; past it :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default=200
        Most passes over the training data on the final windows; early stopping (``patience``) may end
        training sooner. The warm-up stages of a curriculum (see ``window_size``) come on top: at most half as
        many again, at least one each (``n_epochs_`` counts them all).
    batch_size : int or "auto", default=64
        Windows per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=3e-3
        Step size of the AdamW optimiser.
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping (of each series' last
        windows when there are too few series); 0 monitors the training loss.
    patience : int or None, default=10
        Epochs without improvement before stopping; None trains all epochs.
    standardize : bool, default=True
        Scale each feature to zero mean and unit variance over observed
        entries, and time by the median observation gap, inside the
        estimator; predictions are in the user's units.
    device : str, default="auto"
        "auto", "cpu", "cuda" or "cuda:<index>".
    n_threads : int, "auto" or None, default="auto"
        torch's intra-op threads while ``fit``, ``predict`` and the other
        public methods run; the caller's setting is restored afterwards.
        "auto" uses one thread unless a step's largest matrix product
        (``batch_size`` rows through the largest weight matrix) reaches
        ``dynlearn.training.PARALLEL_WORK`` multiply-adds, then the free
        cores (see README); None leaves torch's setting alone. ``fit``
        records the count it trained with in ``n_threads_``.
    compile : bool or str, default=False
        Compile each training rollout with ``torch.compile`` (inductor):
        ``True`` in its default mode, or a mode name of
        :data:`dynlearn.solvers.COMPILE_MODES` (``"reduce-overhead"``, CUDA
        graphs, is for GPUs). Applies to fixed-step solvers (``"euler"``,
        ``"midpoint"``, ``"rk4"``) of an autonomous field without covariates,
        adjoint or ``noise_std``, whose whole window rollout becomes one graph
        (:func:`dynlearn.solvers.fixed_rollout`), compiled once per training
        minibatch shape; validation and prediction stay uncompiled. Other
        settings train uncompiled with a warning, and so does a platform where
        compiling fails (the warning names the reason). Compiling costs tens
        of seconds per graph on a CPU and did not pay back within a default
        fit there (training guide, "Compiling the training rollout"); GPU modes are
        unmeasured.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the weights and of the computations: float32 is faster, float64 more precise.
    random_state : int, RandomState or None, default=None
        Seeds weights and minibatch order; the global torch seed is untouched.
    verbose : int, default=0
        Show a progress bar when positive.
    warm_start : bool, default=False
        Continue training the fitted module on the next ``fit``.
    hidden_init : {"delay", "encoder", "zeros"}, default="delay"
        Initial value of the hidden dimensions at the start of a training
        window or a prediction: ``"encoder"`` infers it with a GRU over the
        last ``history_length`` observations (values, mask, time gaps, and
        the known inputs of a model with ``covariates`` or
        ``static_covariates``) up to that time, trained with the field; ``"delay"`` uses the observations
        before it, newest first (delay coordinates, Takens); ``"zeros"``
        starts them at zero. ``simulate`` reads ``x0`` as a history of one
        observation.
    history_length : int, default=16
        Observations the hidden state is inferred from (including the one
        the rollout starts at).
    horizon : float, timedelta or None, default=None
        How far ahead forecasts will be asked for, in the units of ``t``
        (seconds, or a timedelta, for datetime times); with
        ``window_size="auto"`` training windows cover it.
    stabilize : bool, default=True
        Stability guard: outside the observed range widened by half its
        width on each side (and, for hidden dimensions, the widest such
        range), the field gets a pull back ``−(x − clamp(x, box))`` per
        median observation gap, so a bounded learned field cannot carry
        forecasts away from the data (velocities of ``second_order`` states
        are not guarded). Inside the box the field is unchanged.
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
        column indices for arrays) that drive the dynamics,
        ``dx/dt = f(x, u(t))``, and are not forecast. They must be known at
        every row of the history, and ``predict`` needs them at the query
        times: pass ``t`` as a query frame holding them (the known future
        inputs). Outputs hold the other columns only. ``simulate`` takes the
        input signal as ``covariates=``. With ``noise_std > 0`` the noisy
        training solves read the inputs too.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the inputs are read between their samples inside a solve:
        ``"previous"`` holds each sample until the next (zero-order hold,
        as a digital controller applies it); ``"linear"`` joins samples by
        straight lines; ``"cubic"`` is a Hermite cubic with backward
        differences as slopes. None of them reads a sample after the time
        being integrated, so a prediction never depends on later inputs.
    static_covariates : list of str or int, str or None, default=None
        Per-series constants (a patient's age, a machine's type): value
        columns of X, one value per series (it may be given on any of the
        series' rows and left blank on the others; two different values in
        one series are refused). They enter the model like ``covariates``
        held constant over the whole series, so the dynamics and the initial
        state depend on them. Queries need not carry them: they are read
        from each series' history (``simulate`` takes them as
        ``static_covariates=``). Outputs hold the other columns only.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained model (vector field inside ``module_.field``).
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
        Per-feature standardisation.
    time_scale_ : float
        Time unit the model integrates in (median observation gap).
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units): the stability
        guard's box and the reference of ``ForecastRangeWarning``.
    augment_dim_ : int
        Hidden dimensions used (``augment_dim`` resolved).
    window_size_ : int or None
        Training window length used (``window_size`` resolved).
    encoder_inputs_ : int
        Known inputs per row the history encoder reads (``hidden_init="encoder"``
        with hidden dimensions and inputs; otherwise 0). A model saved before
        the encoder read inputs loads with 0.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without inputs).
    static_index_ : ndarray of int
        Positions of the ``static_covariates`` among X's value columns
        (absent without them).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without inputs).
    conformal_leads_, conformal_residuals_, conformal_lead_edges_ : ndarray
        Calibration of the split conformal forecast intervals of
        ``predict_interval`` and ``predict_quantiles`` (see ``calibrate``),
        made by ``fit`` on the series ``validation_fraction`` holds out;
        absent until the model is calibrated.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import NeuralODE
    >>> t = np.linspace(0, 4, 20)
    >>> X = np.stack([np.exp(-t), np.exp(-2 * t)], axis=-1)[None]  # one series
    >>> model = NeuralODE(hidden_layer_sizes=(), max_epochs=5, random_state=0).fit(X, t=t)
    >>> model.predict(X, t=[5.0, 6.0], X_t=t).shape
    (1, 2, 2)
    """

    _range_advice = (
        "Forecast a shorter horizon, train on rollouts as long as the forecasts (horizon=, window_size=), "
        "or keep stabilize=True."
    )

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "hidden_layer_sizes": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "time_dependent": ["boolean"],
        "augment_dim": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "second_order": ["boolean"],
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "noise_type": [StrOptions({"additive", "multiplicative"})],
        **PENALTY_CONSTRAINTS,
        "window_size": [Interval(Integral, 2, None, closed="left"), StrOptions({"auto"}), None],
        "hidden_init": [StrOptions({"encoder", "delay", "zeros"})],
        "history_length": [Interval(Integral, 1, None, closed="left")],
        "horizon": [Interval(Real, 0, None, closed="neither"), datetime.timedelta, np.timedelta64, None],
        "stabilize": ["boolean"],
        "compile": ["boolean", StrOptions(set(COMPILE_MODES))],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time_dependent: bool = False,
        augment_dim: int | str = "auto",
        second_order: bool = False,
        noise_std: float = 0.0,
        noise_type: str = "additive",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        window_size: int | str | None = "auto",
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int | str = 64,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        standardize: bool = True,
        device: str = "auto",
        n_threads: int | str | None = "auto",
        compile: bool | str = False,
        dtype: str = "float32",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        hidden_init: str = "delay",
        history_length: int = 16,
        horizon: Any = None,
        stabilize: bool = True,
        checkpoint: Any = None,
        callbacks: Sequence[Any] | None = None,
        covariates: Sequence[Any] | str | None = None,
        covariate_interpolation: str = "previous",
        static_covariates: Sequence[Any] | str | None = None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.time_dependent = time_dependent
        self.augment_dim = augment_dim
        self.second_order = second_order
        self.noise_std = noise_std
        self.noise_type = noise_type
        self.kinetic_weight = kinetic_weight
        self.jacobian_weight = jacobian_weight
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
        self.compile = compile
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.hidden_init = hidden_init
        self.history_length = history_length
        self.horizon = horizon
        self.stabilize = stabilize
        self.checkpoint = checkpoint
        self.callbacks = callbacks
        self.covariates = covariates
        self.covariate_interpolation = covariate_interpolation
        self.static_covariates = static_covariates

    _streams_parquet = True

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "NeuralODE":
        """Learn the vector field from the series in ``X``.

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
            memory"). Needs ``pyarrow`` (``pip install 'dynlearn[parquet]'``).
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        return self._fit(X, t)

    def _fit(self, X: Any, t: Any) -> "NeuralODE":
        data = self._setup_fit(X, t)
        self._check_learnable(data)
        self._resolve_structure(data)
        self._init_module(self._build_module)
        loss_fn = self._loss_fn()
        # partial_fit trains on windows of window_size_ rows from its first call: no warm-up stages.
        stages = [self.window_size_] if self.__dict__.get("_partial") else self._curriculum(self.window_size_)
        for stage, width in enumerate(stages, start=1):
            train_data, valid_data = self._examples(data, width)
            if stage == len(stages):
                self._train(loss_fn, train_data, valid_data, batch_weight=_observed_targets)
                continue
            with warnings.catch_warnings():  # a warm-up stage that runs out of epochs is not a failed fit
                warnings.simplefilter("ignore", ConvergenceWarning)
                budget = max(1, self.max_epochs // (2 * (len(stages) - 1)))
                self._train(loss_fn, train_data, valid_data, max_epochs=budget, batch_weight=_observed_targets)
        return self

    @partial_fit_method
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> "NeuralODE":
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling, hidden dimensions and window length from ``X``, fresh
        weights); later calls keep all of that, check ``X`` against the
        columns seen first, and continue training, optimiser state included,
        on windows of ``window_size_`` rows (no warm-up stages). Each call
        adds one record to ``history_``; early stopping does not apply, and
        the weights after the epoch are kept. Use it for data that arrive in
        parts, or to control epochs over a Parquet dataset yourself.

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

    def _loss_fn(self) -> Any:
        """The training loss: mean squared error of each window's rollout over its observed entries."""
        solve = self._solve_options()
        compile_mode = self._compile_mode()
        # Passed only when on: subclasses (the comparison suite's) bring modules whose forward has no compile_mode.
        compiling = {} if compile_mode is None else {"compile_mode": compile_mode}
        noise_seeds = self._generator("noise")
        new_cost = DynamicsCost.for_fit(self)
        if new_cost is not None and self.noise_std > 0:
            name = "kinetic_weight" if self.kinetic_weight > 0 else "jacobian_weight"
            raise input_error(
                name,
                "0 when noise_std > 0 (noisy training solves are fixed-step SDE solves, which it does not act on)",
                repr(getattr(self, name)),
                f"Set {name}=0 or noise_std=0.",
            )

        def loss_fn(module: _ODEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            y0 = module.initial_state(data["x0"], data.get("v0"), _history_part(data))
            control = module.control(data["times"], data.get("inputs"), _lead(data))
            cost = new_cost() if new_cost is not None and module.training else None
            if self.noise_std > 0 and module.training:
                path = self._noisy_solve(module, y0, data["times"], noise_seeds, control)
            else:
                # Passed only when set: modules that replace _ODEModel (the benchmark suite's) take neither.
                extra = compiling if cost is None else {**compiling, "cost": cost}
                path = module(y0, data["times"], solve, control, **extra)
            predicted = module.observe(path)
            mask = data["mask"][:, 1:]
            squared = (predicted[:, 1:] - data["values"][:, 1:]) ** 2 * mask
            fit = squared.sum() / mask.sum().clamp_min(1)
            return fit if cost is None else fit + cost.value

        return loss_fn

    def _resolve_structure(self, batch: SeriesBatch) -> None:
        """Record the hidden dimensions and the window length this fit uses."""
        if self._keeps_fitted():
            return
        n_states = self._n_states
        if self.augment_dim == "auto":
            self.augment_dim_ = _AUTO_HIDDEN_UNIVARIATE if n_states == 1 else 0
        else:
            self.augment_dim_ = int(self.augment_dim)
        if self.hidden_init == "delay" and self.augment_dim_ > 0:
            needed = 1 + math.ceil(self.augment_dim_ / n_states)
            if self.history_length < needed:
                raise input_error(
                    "history_length",
                    f"at least {needed} observations for {self.augment_dim_} delay coordinates of "
                    f"{n_states} feature(s)",
                    str(self.history_length),
                    f"Set history_length={needed} or more, or use fewer hidden dimensions.",
                )
        self.encoder_inputs_ = self._n_inputs if self.hidden_init == "encoder" and self.augment_dim_ > 0 else 0
        self.window_size_ = self._window_width(batch)

    def _window_width(self, batch: SeriesBatch) -> int | None:
        """Observations per training window: ``window_size``, or for "auto" from the horizon or the data."""
        if self.window_size is None:
            return None
        if self.window_size != "auto":
            return int(self.window_size)
        longest = int(batch.lengths.max())
        if self.horizon is not None:
            steps = math.ceil(self._horizon_clock() / _median_gap(batch) - 1e-9) + 1
            return int(min(max(steps, 2), longest))
        width = math.ceil(_AUTO_WINDOW_SHARE * float(np.median(batch.lengths)))
        return int(min(max(width, _AUTO_WINDOW_MIN), _AUTO_WINDOW_MAX, longest))

    def _horizon_clock(self) -> float:
        if isinstance(self.horizon, (datetime.timedelta, np.timedelta64)):
            return float(np.timedelta64(self.horizon, "ns").astype(np.int64)) / 1e9
        return float(self.horizon)

    @staticmethod
    def _curriculum(width: int | None) -> list[int | None]:
        """Window lengths of the training stages: from short windows, doubling, up to ``width``.

        Long rollouts from an untrained field start far off the data and
        learn slowly; a field first fitted on short windows starts them near
        it.
        """
        if width is None or width <= _CURRICULUM_FROM:
            return [width]
        stages = [_CURRICULUM_START]
        while 2 * stages[-1] < width:
            stages.append(2 * stages[-1])
        return stages + [width]

    def _build_module(self) -> _ODEModel:
        augment_dim = getattr(self, "augment_dim_", self.augment_dim if self.augment_dim != "auto" else 0)
        return _ODEModel(
            self._n_states,
            tuple(self.hidden_layer_sizes),
            self.activation,
            self.time_dependent,
            augment_dim,
            self.second_order,
            self.hidden_init,
            self._guard_box(augment_dim),
            n_inputs=self._n_inputs,
            interpolation=self.covariate_interpolation,
            encoder_inputs=getattr(self, "encoder_inputs_", 0),  # none in models saved before the encoder read them
        )

    def _guard_box(self, augment_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The stability guard's box on the standardised scale (None: guard off, or no range recorded)."""
        if not self.stabilize or not hasattr(self, "data_min_"):
            return None
        low, high = self._scale_values(self.data_min_), self._scale_values(self.data_max_)
        width = np.where(np.isfinite(high - low), high - low, np.inf)
        lower = np.where(np.isfinite(low), low - _BOX_MARGIN * width, -np.inf)
        upper = np.where(np.isfinite(high), high + _BOX_MARGIN * width, np.inf)
        lower = np.concatenate([lower, np.full(augment_dim, lower.min())])
        upper = np.concatenate([upper, np.full(augment_dim, upper.max())])
        return lower, upper

    def _noisy_solve(self, module: _ODEModel, y0: torch.Tensor, times: torch.Tensor,
                     seeds: torch.Generator, control: ControlPath | None = None) -> torch.Tensor:
        """A training solve with injected noise: Euler–Maruyama on per-series clocks (inputs read by ``control``)."""
        sde = _NoiseInjected(module.dynamics(), float(self.noise_std), self.noise_type == "multiplicative")
        return solve_sde_irregular(
            sde, y0, times, method="euler", step_size=_NOISE_STEP, generator=seeds, adjoint=self.adjoint,
            max_num_steps=self.max_num_steps, control=control,
        )

    def _compile_mode(self) -> str | None:
        """The torch.compile mode of the training rollouts (None: eager), after saying when compile= cannot apply."""
        if self.compile is False:
            return None
        if not (ode_method(self.solver, "solver").name in FIXED_STEP_METHODS and not self.adjoint
                and not self.time_dependent and not self._n_inputs and self.noise_std == 0):
            warnings.warn(
                f"compile={self.compile!r} compiles the training rollouts of fixed-step solvers "
                f"({', '.join(sorted(FIXED_STEP_METHODS))}) of an autonomous field without covariates, adjoint or "
                f"noise_std; this fit (solver={self.solver!r}) trains uncompiled. Set compile=False to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return "default" if self.compile is True else self.compile

    def _solve_options(self) -> dict[str, Any]:
        return dict(
            method=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            max_num_steps=self.max_num_steps,
        )

    def _internal(self, batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Standardised values (gaps filled), velocities, times, and scaled observed values."""
        filled = self._scale_values(batch.filled_values(self.mean_))
        times = self._scale_times(batch.times)
        observed = np.where(batch.mask, self._scale_values(batch.values), 0.0)
        velocity = _finite_difference(filled, times, batch.lengths) if self.second_order else None
        return filled, velocity, times, observed

    def _examples(self, batch: SeriesBatch | SeriesStream, width: int | None, held: Any = None,
                  whole: np.ndarray | None = None) -> tuple[Any, Any]:
        """Training and validation windows of ``width`` rows.

        With enough series, a ``validation_fraction`` of them is held out.
        Otherwise the last ``validation_fraction`` of each series' rows (at
        least 2, on series of 4 rows or more) is held out in time: training
        windows end before it, and validation windows are forecasts from each
        row from the last training row on, through the held-out rows. Windows
        overlap, so holding out windows instead would validate on rows
        trained on and stop on an overfit field.

        A :class:`SeriesStream` gives :class:`~dynlearn.training.ChunkedData`
        of each chunk's windows; ``held`` (the chunk's held-out series, or
        ``HOLD_OUT_IN_TIME``) and ``whole`` (the lengths of every series of
        the stream, which set the window stride) are then set per chunk,
        so a chunk's windows are those the whole data in memory would give
        its series.
        """
        if isinstance(batch, SeriesStream):
            lengths = batch.lengths
            return self._stream_examples(batch, lambda chunk, held, _: self._examples(chunk, width, held, lengths))
        if held is None:
            n_valid_series = int(round(self.validation_fraction * batch.n_series))
            in_time = not (self.validation_fraction == 0 or 1 <= n_valid_series < batch.n_series)
        else:
            in_time = isinstance(held, str) and held == HOLD_OUT_IN_TIME
        if not in_time:
            windows = self._windows(batch, _window_rows(batch.lengths, width, whole))
            return self._split_examples(windows, batch, None if held is None else held)
        lengths = batch.lengths
        held = np.where(lengths >= 4, np.maximum(2, np.round(self.validation_fraction * lengths)), 0).astype(int)
        if whole is not None:  # the stride of the whole data in memory
            whole = whole - np.where(whole >= 4, np.maximum(2, np.round(self.validation_fraction * whole)), 0)
        train = self._windows(batch, _window_rows(lengths - held, width, None if whole is None else whole.astype(int)))
        valid = self._windows(batch, _forecast_rows(lengths, lengths - held, width))
        train.pop("series"), valid.pop("series")
        to_tensors = lambda examples: {k: self._tensor(v) for k, v in examples.items()}  # noqa: E731
        return to_tensors(train), (to_tensors(valid) if len(valid["x0"]) else None)

    def _windows(self, batch: SeriesBatch, rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """Window tensors from ``(series, row indices, real slots)`` as :func:`_window_rows` gives them."""
        filled, velocity, times, observed = self._internal(batch)
        series, index, real = rows
        windows = {
            "series": series,
            "times": times[series[:, None], index],
            "values": observed[series[:, None], index],
            "mask": batch.mask[series[:, None], index] & real[..., None],
            "x0": filled[series, index[:, 0]],
        }
        if velocity is not None:
            windows["v0"] = velocity[series, index[:, 0]]
        if batch.inputs is not None:
            windows.update(self._window_inputs(batch, times, series, index))
        history = self._history(batch.mask, filled, times, observed, series, index[:, 0], self._scaled_inputs(batch))
        windows.update({f"history_{name}": value for name, value in history.items()})
        return windows

    def _window_inputs(self, batch: SeriesBatch, times: np.ndarray, series: np.ndarray,
                       index: np.ndarray) -> dict[str, np.ndarray]:
        """Scaled inputs at each window's rows, and the row before its start (the cubic's first slope)."""
        inputs = self._scale_inputs(batch.inputs)
        before = np.maximum(index[:, 0] - 1, 0)
        return {
            "inputs": inputs[series[:, None], index],
            "lead_gap": times[series, index[:, 0]] - times[series, before],
            "lead_inputs": inputs[series, before],
        }

    def _scaled_inputs(self, batch: SeriesBatch) -> np.ndarray | None:
        """The batch's known inputs on the model's scale (None without inputs)."""
        return None if batch.inputs is None else self._scale_inputs(batch.inputs)

    def _history(self, mask: np.ndarray, filled: np.ndarray, times: np.ndarray, observed: np.ndarray,
                 series: np.ndarray, rows: np.ndarray, inputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The ``history_length`` rows up to each (series, row), oldest first, for the hidden state.

        ``mask``, ``filled``, ``times``, ``observed`` and ``inputs`` (the
        known inputs, for a model with them) are per-series arrays on the
        model's scales. Slots before a series' start repeat its first row and
        are marked absent; gaps are times since the previous row on the model
        clock. The encoder reads the inputs at the history's rows when it was
        built to. Empty when the hidden dimensions start at zero.
        """
        mode = getattr(self.module_, "hidden_init", "zeros")
        if mode == "zeros":
            return {}
        index = rows[:, None] + np.arange(1 - self.history_length, 1)
        present = index >= 0
        index = np.maximum(index, 0)
        column = series[:, None]
        gaps = times[column, index] - times[column, np.maximum(index - 1, 0)]
        if mode == "delay":
            return {"filled": filled[column, index]}
        out = {
            "values": observed[column, index],
            "mask": mask[column, index],
            "gaps": np.where(present, gaps, 0.0),
            "present": present,
        }
        if getattr(self.module_.encoder, "n_inputs", 0):
            out["inputs"] = inputs[column, index]
        return out

    # ------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """State at query times, each integrated from the latest earlier observation.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None gives one-step-ahead predictions at X's own times. A model
            with ``covariates`` needs a frame that also holds the inputs at
            the query times; between the last observation and a query the
            inputs are read at every query time of that series in between.
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
            Predictions in the user's units; for frames one row per query.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        if batch.inputs is not None:
            return self._predict_driven(batch, query)
        filled, velocity, times, observed = self._internal(batch)
        q_times = self._scale_times(query.times)
        series, anchors = _anchor_rows(times, batch.lengths, q_times)
        x0 = filled[series, anchors]
        segments = np.stack([times[series, anchors], q_times.ravel()], axis=1)
        v0 = velocity[series, anchors] if velocity is not None else None
        history = self._history(batch.mask, filled, times, observed, series, anchors)
        out = self._integrate(x0, v0, segments, history)
        return self._note_forecast_range(self._unscale_values(out[:, -1].reshape(query.times.shape + (-1,))))

    def _predict_driven(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        """Predictions of a model driven by known inputs, read along the way to each query.

        Queries of a series that share an anchor (the latest observation
        strictly before them) and a direction are one solve through their
        times in order, so the inputs between the anchor and a query are
        those given at the query times in between (and at the anchor).
        """
        filled, velocity, times, observed = self._internal(batch)
        q_times = self._scale_times(query.times)
        paths = DrivenPaths.build(times, batch.lengths, self._scale_inputs(batch.inputs), q_times,
                                  self._scale_inputs(query.inputs).reshape(q_times.size, -1))
        x0 = filled[paths.series, paths.anchors]
        v0 = velocity[paths.series, paths.anchors] if velocity is not None else None
        history = self._history(batch.mask, filled, times, observed, paths.series, paths.anchors,
                                self._scaled_inputs(batch))
        flat_out = paths.answers(self._integrate(x0, v0, paths.times, history, paths.inputs, paths.lead))
        return self._note_forecast_range(self._unscale_values(flat_out.reshape(query.times.shape + (-1,))))

    def _integrate(self, x0: np.ndarray, v0: np.ndarray | None, times: np.ndarray,
                   history: dict[str, np.ndarray] | None = None, inputs: np.ndarray | None = None,
                   lead: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Integrate standardised states on internal times; returns (batch, n_times, n_features).

        ``inputs`` ``(batch, n_times, n_inputs)`` are the scaled known inputs
        at ``times`` (``lead``: gap to and inputs at the row before, per
        series) for a model driven by them.
        """
        solve = self._solve_options()
        solve["adjoint"] = False
        module = self.module_.eval()
        pieces = []
        with torch.no_grad():
            for start in range(0, len(x0), _PREDICT_CHUNK):
                part = slice(start, start + _PREDICT_CHUNK)
                context = {k: self._tensor(v[part]) for k, v in (history or {}).items()} or None
                y0 = module.initial_state(self._tensor(x0[part]), None if v0 is None else self._tensor(v0[part]), context)
                t = self._tensor(times[part])
                control = None
                if inputs is not None:
                    part_lead = None if lead is None else (self._tensor(lead[0][part]), self._tensor(lead[1][part]))
                    control = module.control(t, self._tensor(inputs[part]), part_lead)
                pieces.append(module.observe(module(y0, t, solve, control)).cpu().double().numpy())
        return np.concatenate(pieces)

    # ------------------------------------------------------------ simulate
    def simulate(
        self, x0: Any, t: Any, *, v0: Any = None, covariates: Any = None, static_covariates: Any = None
    ) -> np.ndarray:
        """Integrate the learned dynamics from explicit initial states.

        For a model with ``covariates`` this is a free-run simulation: the
        states evolve under the given input signal alone, never corrected by
        observations.

        Parameters
        ----------
        x0 : array-like of shape (n_series, n_features) or (n_features,)
            Initial states (user units) at ``t[..., 0]``; ``n_features``
            counts the modelled states, not the inputs.
        t : array-like of shape (n_times,) or (n_series, n_times)
            Output times (float clock of the training data); the first is the
            time of ``x0``.
        v0 : array-like of shape like x0, default=None
            Initial velocities for ``second_order=True`` (zero if None).
        covariates : array-like of shape (n_times, n_inputs) or (n_series, n_times, n_inputs), default=None
            The known inputs at the times ``t``, in the order of the
            ``covariates`` parameter, read between them by
            ``covariate_interpolation``; required when the model has
            inputs, refused otherwise.
        static_covariates : array-like of shape (n_static,) or (n_series, n_static), default=None
            Each series' values of the ``static_covariates`` columns, in
            their order; required when the model has them, refused
            otherwise.

        Returns
        -------
        ndarray of shape (n_series, n_times, n_features), or (n_times, n_features) for a 1-D x0
        """
        check_is_fitted(self, "module_")
        single = np.ndim(x0) == 1
        n_states = self._n_states
        x0 = _as_states(x0, n_states, "x0", self._state_names())
        raw_times = _output_times(t, len(x0))
        times = self._scale_times(raw_times)
        inputs = self._simulation_inputs(covariates, raw_times.shape, static_covariates)
        v = None
        if self.second_order:
            v = np.zeros_like(x0) if v0 is None else _as_states(v0, n_states, "v0", self._state_names())
            v = v / self.scale_ * self.time_scale_
        scaled = self._scale_values(x0)
        history = self._history_of_states(scaled, None if inputs is None else inputs[:, :1])
        out = self._note_forecast_range(self._unscale_values(self._integrate(scaled, v, times, history, inputs)))
        return out[0] if single else out

    def _history_of_states(self, scaled: np.ndarray, inputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Histories in which each initial state is the only observation (``inputs``: the scaled inputs there)."""
        n = len(scaled)
        mask = np.ones((n, 1, self._n_states), dtype=bool)
        return self._history(mask, scaled[:, None], np.zeros((n, 1)), scaled[:, None], np.arange(n), np.zeros(n, int),
                             inputs)

    def vector_field(self, x: Any, t: Any = None, *, covariates: Any = None, static_covariates: Any = None) -> np.ndarray:
        """The learned time derivative ``dx/dt`` at states ``x``, in user units.

        Parameters
        ----------
        x : array-like of shape (n_points, n_features)
            States (augmented dimensions are set to zero). For
            ``second_order=True`` pass ``(n_points, 2 * n_features)`` positions
            and velocities; the result is then the acceleration.
        t : float or array-like of shape (n_points,), default=None
            Times, used by time-dependent models (default: the first time seen
            at fit).
        covariates : array-like of shape (n_points, n_inputs), default=None
            The known inputs at each state, for a model with ``covariates``
            (required there, refused otherwise).
        static_covariates : array-like of shape (n_static,) or (n_points, n_static), default=None
            The static covariates at each state, for a model with
            ``static_covariates``.
        """
        check_is_fitted(self, "module_")
        n = self._n_states
        width = 2 * n if self.second_order else n
        x = _as_states(x, width, "x", self._state_names())
        times = _point_times(t, len(x), self.time_offset_)
        inputs = self._simulation_inputs(covariates, (1, len(x)), static_covariates, per_time_static=True)
        extra = () if inputs is None else (self._tensor(inputs[0]),)
        positions = self._scale_values(x[:, :n])
        velocities = x[:, n:] / self.scale_ * self.time_scale_ if self.second_order else None
        module = self.module_.eval()
        with torch.no_grad():
            y = module.initial_state(self._tensor(positions), None if velocities is None else self._tensor(velocities))
            dy = module.dynamics()(self._tensor(self._scale_times(times)), y, *extra).cpu().double().numpy()
        if self.second_order:
            start = n + self.module_.augment_dim
            return dy[:, start : start + n] * self.scale_ / self.time_scale_**2
        return dy[:, :n] * self.scale_ / self.time_scale_


def _lead(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Gap to and inputs at the row before each window (for the cubic's first slope), when there are inputs."""
    if "lead_gap" not in data:
        return None
    return data["lead_gap"], data["lead_inputs"]


def _history_part(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The ``history_*`` entries of a minibatch, without their prefix (None when there are none)."""
    prefix = "history_"
    history = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    return history or None


def _window_rows(lengths: np.ndarray, width: int | None,
                 whole: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows of ``width`` consecutive rows (None: whole series).

    Windows start every ``stride`` rows, the stride being the largest (up to
    half the width) that still gives ``_MIN_WINDOWS`` windows, and the last
    window of each series ends on its last row. Returns the series of each
    window ``(n_windows,)``, its row indices ``(n_windows, width)`` (rows
    past a series' end repeat its last row) and which slots are real rows.
    ``whole`` holds the lengths of all the series ``lengths`` is a chunk of
    (default: ``lengths``): the stride and the width are set from them.
    """
    whole = lengths if whole is None else whole
    longest = int(whole.max())
    width = min(width or longest, longest)
    usable = [(i, int(n)) for i, n in enumerate(lengths) if n >= 2]
    n_starts = int(np.maximum(whole[whole >= 2] - width, 0).sum() + (whole >= 2).sum())
    stride = int(min(max(n_starts // _MIN_WINDOWS, 1), max(width // 2, 1)))
    rows, series = [], []
    for i, n in usable:
        starts = list(range(0, max(n - width, 0) + 1, stride))
        if starts[-1] + width < n:
            starts.append(n - width)
        for start in starts:
            rows.append(np.minimum(np.arange(start, start + width), n - 1))
            series.append(i)
    index = np.asarray(rows).reshape(-1, width)
    series = np.asarray(series, dtype=np.int64)
    real = np.arange(width)[None, :] < (lengths[series, None] - index[:, :1])
    return series, index, real


def _forecast_rows(lengths: np.ndarray, cut: np.ndarray, width: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation windows that forecast the rows from ``cut`` on: one from each row ``cut - 1 … length - 2``.

    Same layout as :func:`_window_rows`; each window is ``width`` rows long
    (None: as long as the longest held-out part), slots past the series'
    end marked unreal.
    """
    width = width or int(max((lengths - cut + 1).max(), 2))
    series, rows = [], []
    for i, (n, c) in enumerate(zip(lengths, cut)):
        for origin in range(max(int(c) - 1, 0), int(n) - 1) if c < n else ():
            rows.append(np.minimum(np.arange(origin, origin + width), n - 1))
            series.append(i)
    index = np.asarray(rows, dtype=np.int64).reshape(-1, width)
    series = np.asarray(series, dtype=np.int64)
    real = np.arange(width)[None, :] < (lengths[series, None] - index[:, :1])
    return series, index, real


def _observed_targets(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the training loss of a batch of windows averages over: its observed entries after the first row."""
    return data["mask"][:, 1:].sum()
