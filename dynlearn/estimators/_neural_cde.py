"""NeuralCDE and NeuralCDEClassifier: dz = f(z) dX(t) along the interpolated path of the observations."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import Interval, StrOptions
from ..data import QueryTimes, SeriesBatch
from ..exceptions import input_error
from ..nn import ACTIVATIONS, make_mlp
from ..solvers import ControlPath, solve_ode_irregular
from ._base import (SHARED_CONSTRAINTS, SeriesModel, SeriesStream, _median_gap, _query_groups, _require_two_times,
                    guarded_fit, partial_fit_method)
from ._intervals import ConformalIntervals
from ._odernn import _series_labels, _SeriesClassifier

# How the path is read between observations. "previous" is not offered: a held path has no derivative between
# knots, so a CDE driven by it would never move.
CDE_INTERPOLATIONS = ("linear", "cubic")
# horizon=None: training forecasts a quarter of the median series length, within these bounds (rows).
_AUTO_FORECAST_SHARE = 0.25
_AUTO_FORECAST_MIN, _AUTO_FORECAST_MAX = 4, 32
# Training cuts are taken every `stride` rows, the largest stride (up to half the forecast rows) that still
# leaves this many examples: neighbouring cuts share almost their whole paths.
_MIN_EXAMPLES = 256
# Groups of queries integrated per solve at prediction time: bounds memory on big inputs.
_PREDICT_CHUNK = 4096


class _CDEField(nn.Module):
    """``f(z) · dX/dt``: an MLP maps the state to a ``(hidden_dim, n_channels)`` matrix (tanh-bounded, as in the
    paper, so a steep path cannot make the field explode) applied to the path's derivative."""

    def __init__(self, hidden_dim: int, n_channels: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.hidden_dim, self.n_channels = hidden_dim, n_channels
        self.net = make_mlp(hidden_dim, hidden_dim * n_channels, hidden, activation)

    def forward(self, t: torch.Tensor, z: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        matrix = torch.tanh(self.net(z)).view(z.shape[0], self.hidden_dim, self.n_channels)
        return (matrix @ slope.unsqueeze(-1)).squeeze(-1)


class _CDEModel(nn.Module):
    """Initial map ζ, CDE field and linear read-out.

    The path's channels are ``[time, states, inputs, observation counts]``;
    ζ reads every channel but time at the first knot (so a shift in time
    changes nothing), and the state solves ``dz/dt = f(z) dX/dt``.
    """

    def __init__(self, n_channels: int, hidden_dim: int, hidden: Sequence[int], activation: str, n_outputs: int,
                 interpolation: str):
        super().__init__()
        self.interpolation = interpolation
        self.initial = nn.Linear(n_channels - 1, hidden_dim)
        self.field = _CDEField(hidden_dim, n_channels, hidden, activation)
        self.readout = nn.Linear(hidden_dim, n_outputs)

    def forward(self, times: torch.Tensor, path: torch.Tensor, solve: dict[str, Any]) -> torch.Tensor:
        """States ``(batch, n_times, hidden_dim)`` at every knot of the paths ``(batch, n_times, n_channels)``."""
        slope = ControlPath(times, path, self.interpolation).derivative()
        z0 = self.initial(path[:, 0, 1:])
        return solve_ode_irregular(self.field, z0, times, control=slope, **solve)


_SHARED_PARAMETERS = """hidden_dim : int, default={hidden_dim}
        Width of the CDE state ``z``.
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden widths of the network ``f`` that maps ``z`` to the
        ``(hidden_dim, n_channels)`` matrix multiplying ``dX/dt``.
    activation : {{"tanh", "relu", "softplus", "elu", "silu"}}, default="relu"
        Activation between the layers of ``f`` (its output always goes
        through tanh, which bounds the field).
    interpolation : {{"cubic", "linear"}}, default="cubic"
        How the path ``X`` runs between observations: ``"cubic"`` is the
        Hermite cubic with backward differences as slopes (a continuous
        derivative, the choice the paper's authors recommend for online
        use), ``"linear"`` the straight line between them. Either way the
        state at an observation depends on no later observation.
    mask_channels : bool or "auto", default="auto"
        Add one channel per state column counting its observations so far
        (divided by a typical number of rows read), so the model sees where values are
        missing, not only the values carried forward over the gaps.
        ``"auto"``: when the training data have missing entries.
    solver : str, default="rk4"
        ODE method of :func:`dynlearn.solvers.solve_ode_irregular` for
        ``dz/dt = f(z) dX/dt``; fixed-step methods take one step per
        observation gap (the path's knots).
    rtol, atol : float, default=1e-3, 1e-4
        Tolerances of adaptive solvers.
    adjoint : bool, default=False
        Backpropagate with the adjoint method (memory independent of the
        number of steps, twice the evaluations).
    max_num_steps : int, default=1000
        Step limit of each solve.
    max_epochs : int, default={max_epochs}
        Training epochs.
    batch_size : int or "auto", default={batch_size}
        Examples per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default={learning_rate}
        AdamW learning rate.
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default={validation_fraction}
        Share of the series held out for early stopping (with too few
        series, the last examples of each series).
    patience : int or None, default={patience}
        Epochs without improvement of the validation (else training) loss
        before stopping; None trains every epoch.
    standardize : bool, default=True
        Standardise values and inputs per feature and time by the median
        observation gap.
    device : str, default="auto"
        Torch device; "auto" takes a GPU when there is one.
    n_threads : int, "auto" or None, default="auto"
        Intra-op threads while the estimator runs; "auto" sizes them from
        the module, None leaves torch's setting.
    dtype : {{"float32", "float64"}}, default="float32"
        Precision of the module.
    random_state : int, RandomState or None, default=None
        Seed of weights, minibatch order and validation split.
    verbose : int, default=0
        Print a line per epoch when positive.
    warm_start : bool, default=False
        Continue training the fitted module on the next ``fit``.
    checkpoint : str, os.PathLike or Checkpoint, default=None
        Directory where the training state is saved after every epoch; a
        later ``fit`` with the same parameters and data resumes from it
        (see :class:`dynlearn.training.Checkpoint`).
    callbacks : list of Callback, default=None
        :class:`dynlearn.training.Callback` objects called during training
        after the estimator's own.
    covariates : list of str or int, str or None, default=None
        Known inputs ``u(t)``: value columns of X (names for frames, column
        indices for arrays) that become channels of the path ``X``{predicted}
        They must be known at every row.
    static_covariates : list of str or int, str or None, default=None
        Per-series constants (value columns of X with one value per series;
        it may be given on any of the series' rows). They are constant
        channels of the path, so ``dX`` never moves along them: they enter
        through the initial state ``z(t0) = ζ(X(t0))``, which reads them.
        Queries need not carry them (they are read from each series'
        history)."""

_MODEL_CONSTRAINTS: dict[str, list[Any]] = {
    "hidden_dim": [Interval(Integral, 1, None, closed="left")],
    "hidden_layer_sizes": [tuple, list],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "interpolation": [StrOptions(set(CDE_INTERPOLATIONS))],
    "mask_channels": ["boolean", StrOptions({"auto"})],
    "covariates": [list, tuple, str, None],
    "static_covariates": [list, tuple, str, None],
}


class _CDEBase(SeriesModel):
    """The path and the module both estimators share."""

    def _resolve_channels(self, batch: SeriesBatch) -> None:
        """Check the layer sizes and record ``mask_channels_`` at a fresh fit."""
        if self._keeps_fitted():
            return
        for width in self.hidden_layer_sizes:
            if not isinstance(width, Integral) or width < 1:
                raise input_error(
                    "hidden_layer_sizes", "a tuple of positive ints", repr(self.hidden_layer_sizes), "E.g. (64,)."
                )
        if isinstance(batch, SeriesStream):  # an entry is missing where a feature has fewer values than rows
            missing = bool((batch.summary.values.count < batch.source.n_rows).any())
        else:
            missing = not batch.mask[batch.row_mask].all()
        self.mask_channels_ = missing if self.mask_channels == "auto" else bool(self.mask_channels)

    @property
    def _n_channels(self) -> int:
        return 1 + self._n_states + self._n_inputs + (self._n_states if self.mask_channels_ else 0)

    def _build_module(self) -> _CDEModel:
        return _CDEModel(self._n_channels, self.hidden_dim, tuple(self.hidden_layer_sizes), self.activation,
                         self._n_outputs, self.interpolation)  # fmt: skip

    def _solve_options(self, training: bool = True) -> dict[str, Any]:
        return dict(method=self.solver, rtol=self.rtol, atol=self.atol, adjoint=self.adjoint and training,
                    max_num_steps=self.max_num_steps)  # fmt: skip

    def _rows(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """Per-row channels on the model's scales, ``(n_series, max_len, ...)``.

        ``held``: each state's latest observation at or before the row (0,
        the standardised mean, before its first), so a row reads nothing
        observed after it; ``counts``: observations so far per state;
        ``observed``: scaled values with 0 under the mask.
        """
        scaled = np.where(batch.mask, self._scale_values(np.where(batch.mask, batch.values, 0.0)), 0.0)
        seen = np.maximum.accumulate(np.where(batch.mask, np.arange(batch.max_len)[None, :, None], -1), axis=1)
        held = np.where(seen >= 0, np.take_along_axis(scaled, np.maximum(seen, 0), axis=1), 0.0)
        rows = {
            "times": self._scale_times(batch.times),
            "held": held,
            "counts": np.cumsum(batch.mask, axis=1).astype(np.float64),
            "counts_before": (np.cumsum(batch.mask, axis=1) - batch.mask).astype(np.float64),
            "observed": scaled,
        }
        if batch.inputs is not None:
            rows["inputs"] = self._scale_inputs(batch.inputs)
        return rows

    def _path(self, rows: dict[str, np.ndarray], series: np.ndarray, index: np.ndarray,
              hold_from: int | None = None) -> np.ndarray:
        """The path ``(n_paths, width, n_channels)`` through rows ``index`` of each path's series.

        Counts start at the first row of each path. From column
        ``hold_from`` on, states and counts stay at that column's previous
        row: the future a forecast runs into, where only time and the
        inputs move.
        """
        column = series[:, None]
        held, counts = rows["held"][column, index], rows["counts"][column, index]
        counts = counts - rows["counts_before"][series, index[:, 0]][:, None]
        if hold_from is not None:
            held[:, hold_from:] = held[:, hold_from - 1 : hold_from]
            counts[:, hold_from:] = counts[:, hold_from - 1 : hold_from]
        channels = [rows["times"][column, index][..., None], held]
        if "inputs" in rows:
            channels.append(rows["inputs"][column, index])
        if self.mask_channels_:
            channels.append(counts / self._count_scale)
        return np.concatenate(channels, axis=-1)


class NeuralCDE(ConformalIntervals, _CDEBase):
    """Neural controlled differential equation forecaster (Kidger et al. 2020).

    The observations of a series, with their times and known inputs,
    become a continuous path ``X(t)`` (channels: time, each state, each
    covariate and, for missing data, each state's observation count), and a
    hidden state follows ``dz = f_θ(z) dX(t)`` from ``z(t₀) = ζ(X(t₀))``,
    solved as the ODE ``dz/dt = f_θ(z) · dX/dt`` on each series' own times
    by :func:`dynlearn.solvers.solve_ode_irregular`. A linear read-out of
    ``z(t)`` predicts the states at ``t``. Irregular times need nothing
    special; a missing value is carried forward from the last observation
    of its column, and the count channels say which values are fresh.

    Forecasting: to predict at a time after the last observation, the
    state reads the last ``history_length`` observations up to it and then
    continues along the path's *known future*: time and the covariates at
    the query times move on, while the observed channels hold their last
    values (nothing new is observed). Beyond the data the CDE thus becomes
    an ODE in ``z`` driven by time and the inputs,
    ``dz/dt = f_t(z) + f_u(z) du/dt``, with the same ``f``; training uses
    exactly this: each example reads up to ``history_length`` rows of a
    series, then is unrolled over the next rows (``horizon``) with the
    observed channels held, and the loss is the mean squared error of the
    read-out over the observed entries of those rows. Queries are grouped
    by anchor (the latest observation strictly before them) and integrated
    through the queries in time order, so a prediction never reads an input
    after its time; a query before a series' first observation is reached
    backwards from it. ``predict(X)`` is one step ahead (each row from the
    rows before it) and ``score`` its R². ``predict_interval`` and
    ``predict_quantiles`` are split conformal intervals calibrated on the
    series ``validation_fraction`` holds out (see ``calibrate``).

    Parameters
    ----------
    {shared}
    history_length : int, default=32
        Observations read before each forecast (and in every training
        example); a state that always starts this far back is the same in
        training and prediction.
    horizon : float, timedelta or None, default=None
        How far ahead forecasts will be asked for, in the units of ``t``:
        training examples are unrolled over the rows it spans. None: a
        quarter of the median series length (4 to 32 rows).

    Attributes
    ----------
    module_ : torch.nn.Module
        ``module_.initial`` (ζ), ``module_.field`` (``f``) and
        ``module_.readout``.
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit`` (states and covariates).
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    mean_, scale_ : ndarray of shape (n_states,)
        Per-state standardisation.
    time_scale_ : float
        Time unit of the path (median observation gap).
    data_min_, data_max_ : ndarray of shape (n_states,)
        Observed range of each state at fit (reference of
        ``ForecastRangeWarning``).
    mask_channels_ : bool
        Whether the path has observation-count channels.
    forecast_rows_ : int
        Rows each training example is unrolled over after its history.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's columns (absent without).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without covariates).
    conformal_leads_, conformal_residuals_, conformal_lead_edges_ : ndarray
        Calibration of the forecast intervals (see ``calibrate``); absent
        until the model is calibrated.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import NeuralCDE
    >>> t = np.linspace(0, 4, 20)
    >>> X = np.stack([np.exp(-t), np.exp(-2 * t)], axis=-1)[None]  # one series
    >>> model = NeuralCDE(hidden_dim=8, max_epochs=3, random_state=0).fit(X, t=t)
    >>> model.predict(X, t=[5.0, 6.0], X_t=t).shape
    (1, 2, 2)
    """

    __doc__ = __doc__.replace(
        "{shared}",
        _SHARED_PARAMETERS.format(hidden_dim=32, max_epochs=100, batch_size=64, learning_rate=3e-3,
                                  validation_fraction=0.1, patience=10, predicted=" and are not "
                                  "forecast; ``predict`` needs them at the query times: pass ``t`` as a query frame "
                                  "holding them.").strip(),
    )  # fmt: skip

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        **_MODEL_CONSTRAINTS,
        "history_length": [Interval(Integral, 1, None, closed="left")],
        "horizon": [Interval(Real, 0, None, closed="neither"), datetime.timedelta, np.timedelta64, None],
    }

    def __init__(
        self,
        hidden_dim: int = 32,
        hidden_layer_sizes: Sequence[int] = (64,),
        activation: str = "relu",
        interpolation: str = "cubic",
        mask_channels: bool | str = "auto",
        history_length: int = 32,
        horizon: Any = None,
        solver: str = "rk4",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 100,
        batch_size: int | str = 64,
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
        covariates: Sequence[Any] | str | None = None,
        static_covariates: Sequence[Any] | str | None = None,
    ):
        self.hidden_dim = hidden_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.interpolation = interpolation
        self.mask_channels = mask_channels
        self.history_length = history_length
        self.horizon = horizon
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
        self.static_covariates = static_covariates

    @property
    def _n_outputs(self) -> int:
        return self._n_states

    @property
    def _count_scale(self) -> float:
        """Divisor of the count channels: a path reads at most ``history_length`` observations."""
        return float(self.history_length)

    _streams_parquet = True

    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> NeuralCDE:
        """Learn ζ, ``f`` and the read-out from forecasts of the series in ``X``.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            Series in any accepted kind; NaN marks missing entries. A Parquet
            dataset (a path, a ``pyarrow.dataset.Dataset`` or a
            :class:`~dynlearn.data.ParquetSeries`) is read a chunk of whole
            series at a time, as :meth:`NeuralODE.fit` reads it: each chunk
            gives the forecast examples the whole data in memory gives its
            series, and the same series are held out (see the user guide,
            "Data larger than memory"). The conformal intervals are
            calibrated on held-out series in memory only: after a streamed
            fit, call ``calibrate`` on series in memory to get them.
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
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> NeuralCDE:
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling, channels and ``forecast_rows_`` from ``X``, fresh
        weights); later calls keep them, check ``X`` against the columns
        seen first, and continue training, optimiser state included. Each
        call adds one record to ``history_``; early stopping does not apply,
        and the weights after the epoch are kept.

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

    def _fit(self, X: Any, t: Any) -> NeuralCDE:
        batch = self._setup_fit(X, t)
        _require_two_times(batch, "A forecaster learns from what follows each history")
        self._resolve_channels(batch)
        if not self._keeps_fitted():
            self.forecast_rows_ = self._forecast_rows(batch)
        self._init_module(self._build_module)
        solve = self._solve_options()
        history = self.history_length

        def loss_fn(module: _CDEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            z = module(data["times"], data["path"], solve)
            predicted = module.readout(z[:, history:])
            mask = data["mask"]
            return (((predicted - data["values"]) ** 2) * mask).sum() / mask.sum().clamp_min(1)

        n_cuts = int(np.maximum(batch.lengths - 1, 0).sum())  # of all series: it sets the stride of the cuts
        train_data, valid_data = self._split_data(batch, lambda chunk, *_: self._examples(chunk, n_cuts))
        self._train(loss_fn, train_data, valid_data)
        return self

    def _forecast_rows(self, batch: "SeriesBatch | SeriesStream") -> int:
        longest = max(int(batch.lengths.max()) - 1, 1)
        if self.horizon is not None:
            span = self.horizon
            if isinstance(span, (datetime.timedelta, np.timedelta64)):
                span = float(np.timedelta64(span, "ns").astype(np.int64)) / 1e9
            return int(min(max(math.ceil(float(span) / _median_gap(batch) - 1e-9), 1), longest))
        rows = math.ceil(_AUTO_FORECAST_SHARE * float(np.median(batch.lengths)))
        return int(min(max(rows, _AUTO_FORECAST_MIN), _AUTO_FORECAST_MAX, longest))

    def _examples(self, batch: SeriesBatch, n_cuts: int | None = None) -> dict[str, np.ndarray]:
        """One example per (series, cut row): ``history_length`` rows up to the cut, then ``forecast_rows_``.

        Cuts are every few rows (see ``_MIN_EXAMPLES``), counted back from
        each series' second-to-last row; the stride is set from ``n_cuts``,
        the possible cuts of all series (of the batch when None; of the
        whole stream for a chunk of one).

        History rows before a series' start repeat its first row and rows
        after its end its last (zero gaps: the state holds); only the
        observed entries of real future rows are scored.
        """
        rows = self._rows(batch)
        n_cuts = int(np.maximum(batch.lengths - 1, 0).sum()) if n_cuts is None else n_cuts
        stride = max(1, min(self.forecast_rows_ // 2, n_cuts // _MIN_EXAMPLES))
        # Each series' last cut is its second-to-last row, so every row is forecast by some example.
        per_series = [np.unique(np.r_[np.arange(n - 2, -1, -stride)]) if n > 1 else np.arange(0) for n in batch.lengths]
        series = np.concatenate([np.full(len(c), i) for i, c in enumerate(per_series)])
        cuts = np.concatenate(per_series)
        offsets = np.arange(1 - self.history_length, self.forecast_rows_ + 1)
        wanted = cuts[:, None] + offsets
        last = batch.lengths[series][:, None] - 1
        index = np.clip(wanted, 0, last)
        future = index[:, self.history_length:]
        real = wanted[:, self.history_length:] <= last
        return {
            "series": series,
            "times": rows["times"][series[:, None], index],
            "path": self._path(rows, series, index, hold_from=self.history_length),
            "values": rows["observed"][series[:, None], future],
            "mask": (batch.mask[series[:, None], future] & real[..., None]).astype(np.float64),
        }

    # ------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """States at query times, forecast from the history read up to the latest earlier observation.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None gives one-step-ahead predictions at X's own times. A model
            with ``covariates`` needs a frame that also holds the inputs at
            the query times.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, as ``fit``'s ``t``.

        Returns
        -------
        Same kind as X
            Predictions in the user's units; for frames one row per query.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        rows = self._rows(batch)
        q_times = self._scale_times(query.times)
        groups = _query_groups(rows["times"], batch.lengths, q_times)
        history = groups.anchors[:, None] + np.arange(1 - self.history_length, 1)
        index = np.maximum(history, 0)
        past = self._path(rows, groups.series, index)
        times = np.concatenate([rows["times"][groups.series[:, None], index],
                                groups.lay_out(rows["times"][groups.series, groups.anchors], q_times.ravel())[:, 1:]],
                               axis=1)  # fmt: skip
        # The future holds the anchor's channels and moves time (and the inputs at the query times).
        ahead = np.repeat(past[:, -1:], groups.width - 1, axis=1)
        ahead[..., 0] = times[:, self.history_length:]
        if batch.inputs is not None:
            q_inputs = self._scale_inputs(query.inputs).reshape(q_times.size, -1)
            anchor_inputs = rows["inputs"][groups.series, groups.anchors]
            span = slice(1 + self._n_states, 1 + self._n_states + self._n_inputs)
            ahead[..., span] = groups.lay_out(anchor_inputs, q_inputs)[:, 1:]
        path = np.concatenate([past, ahead], axis=1)
        out = self._read_out(times, path, start=self.history_length - 1)
        return self._note_forecast_range(self._unscale_values(groups.gather(out, query.times.shape)))

    def _read_out(self, times: np.ndarray, path: np.ndarray, start: int) -> np.ndarray:
        """Read-out ``(n_paths, n_times - start, n_outputs)`` of the states from knot ``start`` on, in chunks."""
        module = self.module_.eval()
        solve = self._solve_options(training=False)
        pieces = []
        with torch.no_grad():
            for first in range(0, len(path), _PREDICT_CHUNK):
                part = slice(first, first + _PREDICT_CHUNK)
                z = module(self._tensor(times[part]), self._tensor(path[part]), solve)
                pieces.append(module.readout(z[:, start:]).cpu().double().numpy())
        return np.concatenate(pieces)


class NeuralCDEClassifier(_SeriesClassifier, ClassifierMixin, _CDEBase):
    """Per-series classification from a neural CDE's final state (Kidger et al. 2020).

    Each series becomes a path ``X(t)`` of its time, values, covariates
    and (for missing data) observation counts, read whole:
    ``dz = f_θ(z) dX(t)`` from ``z(t₀) = ζ(X(t₀))`` to the last observation,
    and a linear head maps ``z(T)`` to class scores, trained with
    cross-entropy. Irregular times and missing entries are read as in
    :class:`NeuralCDE` (values carried forward, counts channels).

    Labels: one per series, aligned as in :class:`ODERNNClassifier` (by
    position for arrays and lists, by series id for a pandas Series with
    frame input). As there, small labelled sets train every epoch on every
    series by default (``validation_fraction=0``, ``patience=None``).

    Parameters
    ----------
    {shared}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of ``predict_proba``.
    module_ : torch.nn.Module
        ``module_.initial`` (ζ), ``module_.field`` (``f``) and
        ``module_.readout`` (the head).
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    mask_channels_ : bool
        Whether the path has observation-count channels.
    count_scale_ : float
        Divisor of the count channels (median series length at fit).

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import NeuralCDEClassifier
    >>> t = np.linspace(0, 6, 20)
    >>> freq = np.array([1.0, 1.0, 3.0, 3.0])
    >>> X = np.sin(freq[:, None, None] * t[None, :, None])
    >>> clf = NeuralCDEClassifier(hidden_dim=8, max_epochs=3, random_state=0).fit(X, ["slow", "slow", "fast", "fast"], t=t)
    >>> clf.predict_proba(X, t=t).shape
    (4, 2)
    """

    __doc__ = __doc__.replace(
        "{shared}",
        _SHARED_PARAMETERS.format(hidden_dim=32, max_epochs=100, batch_size=32, learning_rate=3e-3,
                                  validation_fraction=0.0, patience=None, predicted=", read like the states.").strip(),
    )  # fmt: skip

    _parameter_constraints = {**SHARED_CONSTRAINTS, **_MODEL_CONSTRAINTS}

    def __init__(
        self,
        hidden_dim: int = 32,
        hidden_layer_sizes: Sequence[int] = (64,),
        activation: str = "relu",
        interpolation: str = "cubic",
        mask_channels: bool | str = "auto",
        solver: str = "rk4",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 100,
        batch_size: int | str = 32,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.0,
        patience: int | None = None,
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
        static_covariates: Sequence[Any] | str | None = None,
    ):
        self.hidden_dim = hidden_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.interpolation = interpolation
        self.mask_channels = mask_channels
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
        self.static_covariates = static_covariates

    @property
    def _n_outputs(self) -> int:
        return len(self.classes_)

    @property
    def _count_scale(self) -> float:
        return self.count_scale_

    @guarded_fit
    def fit(self, X: Any, y: Any, *, t: Any = None) -> NeuralCDEClassifier:
        """Learn to predict each series' label.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_series, n_times, n_features) or list of ndarray
            Series in any accepted kind; NaN marks missing entries.
        y : array-like of shape (n_series,) or pandas Series indexed by series id
            One label per series, any dtype.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        batch = self._setup_fit(X, t)
        labels = _series_labels(y, batch)
        fresh = not (self.warm_start and hasattr(self, "module_"))
        codes = self._fit_classes(labels, fresh)
        self._resolve_channels(batch)
        if fresh:
            self.count_scale_ = float(max(np.median(batch.lengths), 1.0))
        self._init_module(self._build_module)
        solve = self._solve_options()

        def loss_fn(module: _CDEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            z = module(data["times"], data["path"], solve)
            return nn.functional.cross_entropy(module.readout(z[:, -1]), data["label"].long())

        examples = {"series": np.arange(batch.n_series), **self._whole_paths(batch), "label": codes.astype(np.float64)}
        train_data, valid_data = self._split_examples(examples, batch)
        self._train(loss_fn, train_data, valid_data)
        return self

    def _whole_paths(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """Every series read whole; padding repeats its last row (zero gaps hold the state)."""
        rows = self._rows(batch)
        series = np.arange(batch.n_series)
        index = np.minimum(np.arange(batch.max_len)[None, :], batch.lengths[:, None] - 1)
        return {"times": rows["times"][series[:, None], index], "path": self._path(rows, series, index)}

    def _logits(self, X: Any, t: Any = None) -> np.ndarray:
        check_is_fitted(self, "module_")
        paths = self._whole_paths(self._check_input(X, t))
        return self._read_out(paths["times"], paths["path"])

    def _read_out(self, times: np.ndarray, path: np.ndarray) -> np.ndarray:
        module = self.module_.eval()
        solve = self._solve_options(training=False)
        pieces = []
        with torch.no_grad():
            for first in range(0, len(path), _PREDICT_CHUNK):
                part = slice(first, first + _PREDICT_CHUNK)
                z = module(self._tensor(times[part]), self._tensor(path[part]), solve)
                pieces.append(module.readout(z[:, -1]).cpu().double().numpy())
        return np.concatenate(pieces)
