"""NeuralODE: dx/dt = f(x[, t]) learned on the observed state."""

from __future__ import annotations

import time
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ..data import QueryTimes, SeriesBatch, check_query_times, to_user_kind
from ..nn import ACTIVATIONS, MLPVectorField, SecondOrderField
from ..solvers import solve_ode_irregular, solve_sde_irregular
from ._base import guarded_fit
from ._intervals import ConformalIntervals
from ._base import SHARED_CONSTRAINTS, SeriesModel, _anchor_rows, _as_states, _finite_difference, _output_times

# Rows integrated per solve at prediction time: bounds memory on big inputs.
_PREDICT_CHUNK = 4096
# Longest Euler-Maruyama step (model time units: a quarter of the median
# observation gap when standardising) of the noise-injected training solve.
_NOISE_STEP = 0.25


class _ODEModel(nn.Module):
    """Vector field plus the bookkeeping of augmented and second-order states."""

    def __init__(self, n_features: int, hidden: Sequence[int], activation: str, time_dependent: bool, augment_dim: int, second_order: bool):
        super().__init__()
        self.n_features = n_features
        self.augment_dim = augment_dim
        self.second_order = second_order
        position_dim = n_features + augment_dim
        if second_order:
            self.field = SecondOrderField(position_dim, hidden, activation, time_dependent)
        else:
            self.field = MLPVectorField(position_dim, hidden, activation, time_dependent)

    def initial_state(self, x0: torch.Tensor, v0: torch.Tensor | None) -> torch.Tensor:
        zeros = x0.new_zeros(x0.shape[0], self.augment_dim)
        state = [x0, zeros]
        if self.second_order:
            state += [v0 if v0 is not None else torch.zeros_like(x0), zeros]
        return torch.cat(state, dim=-1)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state[..., : self.n_features]

    def forward(self, y0: torch.Tensor, times: torch.Tensor, solve: dict[str, Any]) -> torch.Tensor:
        # A field without a time input lets windows and series share one solve shifted to a common start.
        return solve_ode_irregular(self.field, y0, times, autonomous=not self.field.time_dependent, **solve)


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

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.field(t, y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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
    the observed entries that follow. Short windows keep gradients stable on
    long series; ``window_size=None`` uses whole series.

    Predictions condition on history: the value at a query time is obtained
    by integrating from the latest observation strictly before it (queries at
    or before a series' first observation integrate from that observation,
    backwards when needed). Times after the last observation are forecasts
    from it; ``predict(X)`` gives one-step-ahead predictions at X's own times.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the hidden layers of ``f``; ``()`` gives a linear system.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
    time_dependent : bool, default=False
        Feed time to ``f`` (non-autonomous dynamics).
    augment_dim : int, default=0
        Extra state dimensions that start at zero and are not observed.
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
    window_size : int or None, default=10
        Observations per training window (at least 2).
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
    batch_size : int, default=64
        Windows per minibatch.
    learning_rate : float, default=3e-3
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
    dtype : {"float32", "float64"}, default="float32"
    random_state : int, RandomState or None, default=None
        Seeds weights and minibatch order; the global torch seed is untouched.
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

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained model (vector field inside ``module_.field``).
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.
    n_epochs_ : int
    training_time_ : float
        Seconds spent in the last ``fit``.
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature standardisation.
    time_scale_ : float
        Time unit the model integrates in (median observation gap).
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
    >>> model.predict(X, t=[5.0, 6.0]).shape
    (1, 2, 2)
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "hidden_layer_sizes": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "time_dependent": ["boolean"],
        "augment_dim": [Interval(Integral, 0, None, closed="left")],
        "second_order": ["boolean"],
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "noise_type": [StrOptions({"additive", "multiplicative"})],
        "window_size": [Interval(Integral, 2, None, closed="left"), None],
    }

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time_dependent: bool = False,
        augment_dim: int = 0,
        second_order: bool = False,
        noise_std: float = 0.0,
        noise_type: str = "additive",
        window_size: int | None = 10,
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        standardize: bool = True,
        device: str = "auto",
        n_threads: int | str | None = "auto",
        dtype: str = "float32",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        checkpoint: Any = None,
        callbacks: Sequence[Any] | None = None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.time_dependent = time_dependent
        self.augment_dim = augment_dim
        self.second_order = second_order
        self.noise_std = noise_std
        self.noise_type = noise_type
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

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "NeuralODE":
        """Learn the vector field from the series in ``X``.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind; NaN marks missing entries.
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        started = time.perf_counter()
        batch = self._setup_fit(X, t)
        self._check_learnable(batch)
        train_data, valid_data = self._split_examples(self._windows(batch), batch)
        self._init_module(self._build_module)
        solve = self._solve_options()
        noise_seeds = self._generator(2)

        def loss_fn(module: _ODEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            y0 = module.initial_state(data["x0"], data.get("v0"))
            if self.noise_std > 0 and module.training:
                path = self._noisy_solve(module, y0, data["times"], noise_seeds)
            else:
                path = module(y0, data["times"], solve)
            predicted = module.observe(path)
            mask = data["mask"][:, 1:]
            squared = (predicted[:, 1:] - data["values"][:, 1:]) ** 2 * mask
            return squared.sum() / mask.sum().clamp_min(1)

        self._train(loss_fn, train_data, valid_data)
        self.training_time_ = time.perf_counter() - started
        return self

    def _build_module(self) -> _ODEModel:
        return _ODEModel(
            self.n_features_in_,
            tuple(self.hidden_layer_sizes),
            self.activation,
            self.time_dependent,
            self.augment_dim,
            self.second_order,
        )

    def _noisy_solve(self, module: _ODEModel, y0: torch.Tensor, times: torch.Tensor,
                     seeds: torch.Generator) -> torch.Tensor:
        """A training solve with injected noise: Euler–Maruyama on per-series clocks."""
        sde = _NoiseInjected(module.field, float(self.noise_std), self.noise_type == "multiplicative")
        return solve_sde_irregular(
            sde, y0, times, method="euler", step_size=_NOISE_STEP, generator=seeds, adjoint=self.adjoint,
            max_num_steps=self.max_num_steps,
        )

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
        filled = self._scale_values(batch.filled_values())
        times = self._scale_times(batch.times)
        observed = np.where(batch.mask, self._scale_values(batch.values), 0.0)
        velocity = _finite_difference(filled, times, batch.lengths) if self.second_order else None
        return filled, velocity, times, observed

    def _windows(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        filled, velocity, times, observed = self._internal(batch)
        series, index, real = self._window_index(batch, self.window_size)
        windows = {
            "series": series,
            "times": times[series[:, None], index],
            "values": observed[series[:, None], index],
            "mask": batch.mask[series[:, None], index] & real[..., None],
            "x0": filled[series, index[:, 0]],
        }
        if velocity is not None:
            windows["v0"] = velocity[series, index[:, 0]]
        return windows

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
            None gives one-step-ahead predictions at X's own times.
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
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        values = self._predict_batch(batch, query)
        return to_user_kind(values, query, batch)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        filled, velocity, times, _ = self._internal(batch)
        q_times = self._scale_times(query.times)
        series, anchors = _anchor_rows(times, batch.lengths, q_times)
        x0 = filled[series, anchors]
        segments = np.stack([times[series, anchors], q_times.ravel()], axis=1)
        v0 = velocity[series, anchors] if velocity is not None else None
        out = self._integrate(x0, v0, segments)
        return self._unscale_values(out[:, -1].reshape(query.times.shape + (-1,)))

    def _integrate(self, x0: np.ndarray, v0: np.ndarray | None, times: np.ndarray) -> np.ndarray:
        """Integrate standardised states on internal times; returns (batch, n_times, n_features)."""
        solve = self._solve_options()
        solve["adjoint"] = False
        module = self.module_.eval()
        pieces = []
        with torch.no_grad():
            for start in range(0, len(x0), _PREDICT_CHUNK):
                part = slice(start, start + _PREDICT_CHUNK)
                y0 = module.initial_state(self._tensor(x0[part]), None if v0 is None else self._tensor(v0[part]))
                pieces.append(module.observe(module(y0, self._tensor(times[part]), solve)).cpu().double().numpy())
        return np.concatenate(pieces)

    # ------------------------------------------------------------ simulate
    def simulate(self, x0: Any, t: Any, *, v0: Any = None) -> np.ndarray:
        """Integrate the learned dynamics from explicit initial states.

        Parameters
        ----------
        x0 : array-like of shape (n_series, n_features) or (n_features,)
            Initial states (user units) at ``t[..., 0]``.
        t : array-like of shape (n_times,) or (n_series, n_times)
            Output times (float clock of the training data); the first is the
            time of ``x0``.
        v0 : array-like of shape like x0, default=None
            Initial velocities for ``second_order=True`` (zero if None).

        Returns
        -------
        ndarray of shape (n_series, n_times, n_features), or (n_times, n_features) for a 1-D x0
        """
        check_is_fitted(self, "module_")
        single = np.ndim(x0) == 1
        x0 = _as_states(x0, self.n_features_in_, "x0")
        times = self._scale_times(_output_times(t, len(x0)))
        v = None
        if self.second_order:
            v = np.zeros_like(x0) if v0 is None else _as_states(v0, self.n_features_in_, "v0")
            v = v / self.scale_ * self.time_scale_
        out = self._unscale_values(self._integrate(self._scale_values(x0), v, times))
        return out[0] if single else out

    def vector_field(self, x: Any, t: Any = None) -> np.ndarray:
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
        """
        check_is_fitted(self, "module_")
        n = self.n_features_in_
        width = 2 * n if self.second_order else n
        x = _as_states(x, width, "x")
        times = np.full(len(x), self.time_offset_) if t is None else np.broadcast_to(np.asarray(t, float), (len(x),))
        positions = self._scale_values(x[:, :n])
        velocities = x[:, n:] / self.scale_ * self.time_scale_ if self.second_order else None
        module = self.module_.eval()
        with torch.no_grad():
            y = module.initial_state(self._tensor(positions), None if velocities is None else self._tensor(velocities))
            dy = module.field(self._tensor(self._scale_times(times)), y).cpu().double().numpy()
        if self.second_order:
            start = n + self.augment_dim
            return dy[:, start : start + n] * self.scale_ / self.time_scale_**2
        return dy[:, :n] * self.scale_ / self.time_scale_
