"""What every dynlearn estimator shares: parameters, data entry, scaling, device, pickling."""

from __future__ import annotations

import copy
import inspect
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import QueryTimes, SeriesBatch, check_query_times, check_series, masked_mean_scale
from ..exceptions import input_error
from ..metrics import forecast_score, r2_score_masked
from ..solvers import ode_method
from ..training import History, TrainState, resolve_device, resolve_dtype, train

SHARED_CONSTRAINTS: dict[str, list[Any]] = {
    "solver": [str],
    "rtol": [Interval(Real, 0, None, closed="neither")],
    "atol": [Interval(Real, 0, None, closed="neither")],
    "adjoint": ["boolean"],
    "max_num_steps": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left"), None],
    "standardize": ["boolean"],
    "device": [str],
    "dtype": [StrOptions({"float32", "float64"})],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
}


class SeriesModel(BaseEstimator):
    """Base of dynlearn's estimators (not public).

    Subclasses declare their own ``__init__`` (scikit-learn reads parameters
    from its signature) and use the helpers below, so that every estimator
    enters data, scales it, seeds itself and pickles the same way.
    """

    _parameter_constraints: dict[str, list[Any]] = SHARED_CONSTRAINTS

    # ------------------------------------------------------------ fit setup
    def _setup_fit(self, X: Any, t: Any) -> SeriesBatch:
        """Validate parameters and data, record what fit saw, resolve device and seed."""
        self._validate_params()
        self._check_solver()
        batch = check_series(X, t)
        spec = batch.spec
        self.input_spec_ = spec
        self.n_features_in_ = spec.n_features
        if spec.feature_names is not None:
            self.feature_names_in_ = np.asarray(spec.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.device_ = resolve_device(self.device)
        self.dtype_ = resolve_dtype(self.dtype)
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if not (self.warm_start and hasattr(self, "module_")):
            self._fit_scaling(batch)
        return batch

    def _init_module(self, build: Callable[[], torch.nn.Module]) -> None:
        """Set ``module_`` to ``build()`` and start a fresh ``history_``, unless warm-starting a fitted module.

        Weights are drawn from ``random_state`` inside ``fork_rng``, so the
        global torch seed is never touched; the module ends on the fit's
        device and dtype either way.
        """
        if not (self.warm_start and hasattr(self, "module_")):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed)
                module = build()
            self.module_ = module
            self.history_ = History()
        self.module_.to(device=self.device_, dtype=self.dtype_)

    def _train(
        self, loss_fn: Any, train_data: dict[str, torch.Tensor], valid_data: dict[str, torch.Tensor] | None, **options: Any
    ) -> TrainState:
        """Run :func:`dynlearn.training.train` on ``module_`` with the estimator's optimisation settings.

        ``options`` override or add to them (a stage's ``max_epochs``,
        ``callbacks``, ``epochs_name``). Records ``n_epochs_`` and ``best_epoch_``.
        """
        settings = dict(
            valid_data=valid_data,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            patience=self.patience,
            generator=self._generator(1),
            verbose=self.verbose,
            history=self.history_,
        )
        state = train(self.module_, loss_fn, train_data, **{**settings, **options})
        self.n_epochs_ = len(self.history_)
        self.best_epoch_ = state.best_epoch
        return state

    def _check_learnable(self, batch: SeriesBatch) -> None:
        """Fail early on data without change over time and on malformed layer sizes."""
        if batch.lengths.max() < 2:
            raise input_error(
                "X",
                "at least one series with two or more observation times",
                "one sample (a single time) per series",
                "Dynamics are learned from changes over time; pass longer series.",
            )
        for width in self.hidden_layer_sizes:
            if not isinstance(width, Integral) or width < 1:
                raise input_error(
                    "hidden_layer_sizes", "a tuple of positive ints", repr(self.hidden_layer_sizes), "E.g. (64, 64)."
                )

    def _check_solver(self) -> None:
        """Fail before any work when ``solver`` names no installed method."""
        ode_method(self.solver, "solver")

    def _fit_scaling(self, batch: SeriesBatch) -> None:
        if self.standardize:
            self.mean_, self.scale_ = masked_mean_scale(batch.values, batch.mask)
            self.time_scale_ = _median_gap(batch)
        else:
            self.mean_ = np.zeros(batch.n_features)
            self.scale_ = np.ones(batch.n_features)
            self.time_scale_ = 1.0
        self.time_offset_ = float(batch.times[:, 0].min())

    def _check_input(self, X: Any, t: Any = None) -> SeriesBatch:
        """Validate data passed after fit against what fit saw."""
        check_is_fitted(self, "module_")
        return check_series(X, t, reference=self.input_spec_, owner=type(self).__name__)

    # --------------------------------------------------------------- scaling
    def _scale_values(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean_) / self.scale_

    def _unscale_values(self, values: np.ndarray) -> np.ndarray:
        return values * self.scale_ + self.mean_

    def _scale_times(self, times: np.ndarray) -> np.ndarray:
        return (times - self.time_offset_) / self.time_scale_

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=self.dtype_, device=self.device_)

    def _generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self._seed + offset)

    # ------------------------------------------------------------ examples
    def _window_index(self, batch: SeriesBatch, window_size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training windows: ``window_size`` consecutive rows of one series, overlapping by half.

        Returns the series of each window ``(n_windows,)``, its row indices
        ``(n_windows, width)`` (rows past a series' end repeat its last row)
        and which of those slots are real rows ``(n_windows, width)``.
        """
        width = min(window_size or batch.max_len, batch.max_len)
        stride = max(1, width // 2)
        rows, series = [], []
        for i, n in enumerate(batch.lengths):
            if n < 2:
                continue
            starts = list(range(0, max(n - width, 0) + 1, stride))
            if starts[-1] + width < n:
                starts.append(n - width)
            for s in starts:
                rows.append(np.minimum(np.arange(s, s + width), n - 1))
                series.append(i)
        index = np.asarray(rows)
        series = np.asarray(series)
        real = np.arange(width)[None, :] < (batch.lengths[series, None] - index[:, :1])
        return series, index, real

    def _split_examples(
        self, examples: dict[str, np.ndarray], batch: SeriesBatch
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Training and validation tensors from examples tagged by their ``"series"``.

        A ``validation_fraction`` of the series is held out; with too few
        series, the last examples of each series are held out instead.
        """
        series = examples.pop("series")
        rng = np.random.RandomState(self._seed)
        valid = np.zeros(len(series), dtype=bool)
        if self.validation_fraction > 0:
            n_valid_series = int(round(self.validation_fraction * batch.n_series))
            if n_valid_series >= 1 and batch.n_series - n_valid_series >= 1:
                held = rng.permutation(batch.n_series)[:n_valid_series]
                valid = np.isin(series, held)
            else:
                for i in np.unique(series):
                    where = np.flatnonzero(series == i)
                    k = int(round(self.validation_fraction * len(where)))
                    if 1 <= k < len(where):
                        valid[where[-k:]] = True
        to_tensors = lambda keep: {k: self._tensor(v[keep]) for k, v in examples.items()}  # noqa: E731
        return to_tensors(~valid), (to_tensors(valid) if valid.any() else None)

    # --------------------------------------------------------------- score
    def score(self, X: Any, y: Any = None, *, t: Any = None, horizon: Any = None) -> float:
        """R² of one-step-ahead predictions over X's observed entries.

        Each observation after the first of its series is predicted from the
        one before it; the coefficient of determination is averaged over
        features (scikit-learn's ``"uniform_average"``).

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
        y : ignored
        t : array-like, default=None
            Observation times of array input.
        horizon : int, float, Timedelta or str, default=None
            When given, the R² instead of forecasts of each series' last
            ``horizon`` (an int: observations; a float or Timedelta: a span
            of time) from the history before it, over the future's observed
            entries; see :func:`dynlearn.metrics.forecast_score`.
        """
        if horizon is not None:
            return forecast_score(self, X, horizon, t=t)
        batch = self._check_input(X, t)
        query = check_query_times(None, batch)
        predicted = self._predict_batch(batch, query)
        mask = batch.mask.copy()
        mask[:, 0] = False
        if not mask.any():
            raise input_error("X", "series with at least two observation times", "single observations", "Pass longer series.")
        return r2_score_masked(batch.values, predicted, mask)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        """Predictions ``(n_series, n_queries, n_features)`` in user units; subclasses provide it."""
        raise NotImplementedError

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if "module_" in state:
            # Tensors are stored on the CPU so a GPU-trained model unpickles anywhere.
            state = dict(state)
            state["module_"] = copy.deepcopy(state["module_"]).to("cpu")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # A model pickled before a hyperparameter existed gets that parameter's default, which keeps the
        # behaviour it was fitted with (new options default to the old behaviour), so get_params and clone work.
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and name not in self.__dict__ and parameter.default is not inspect.Parameter.empty:
                setattr(self, name, parameter.default)
        if "module_" in state:
            device = state.get("device_", torch.device("cpu"))
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            self.device_ = device
            self.module_ = self.module_.to(device)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags


# Models that carry one state across a whole series (ODE-RNN, Latent ODE) run on a clock on which the
# median series window spans this many units (the paper's toy clock, [0, 5]): on a clock of observation
# gaps a densely sampled series spans hundreds of units, the field must stay tiny, and long gaps (sparse
# shown points) blow up in training.
SERIES_WINDOW = 5.0


def _median_window(batch: SeriesBatch) -> float | None:
    """Median positive span from a series' first to its last observation time (None when there is none)."""
    spans = batch.times[np.arange(batch.n_series), batch.lengths - 1] - batch.times[:, 0]
    spans = spans[spans > 0]
    return float(np.median(spans)) if len(spans) else None


def _median_gap(batch: SeriesBatch) -> float:
    """Median positive gap between consecutive observation times (1.0 when there is none)."""
    gaps = np.diff(batch.times, axis=1)[batch.row_mask[:, 1:]]
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else 1.0


def _anchor_rows(times: np.ndarray, lengths: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every (series, query): the latest row strictly before it (else the first row)."""
    series = np.repeat(np.arange(len(lengths)), queries.shape[1])
    anchors = np.empty(queries.size, dtype=np.int64)
    for i, n in enumerate(lengths):
        found = np.searchsorted(times[i, :n], queries[i], side="left") - 1
        anchors[i * queries.shape[1] : (i + 1) * queries.shape[1]] = np.clip(found, 0, n - 1)
    return series, anchors


def _finite_difference(values: np.ndarray, times: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-series time derivative by (second-order) finite differences."""
    velocity = np.zeros_like(values)
    for i, n in enumerate(lengths):
        if n >= 2:
            velocity[i, :n] = np.gradient(values[i, :n], times[i, :n], axis=0)
    return velocity


def _as_states(x: Any, width: int, argument: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise input_error(argument, f"states of shape (n_series, {width})", f"shape {np.shape(x)}", "Pass one row per state.")
    if not np.isfinite(array).all():
        raise input_error(argument, "finite states", "NaN or inf", "Initial states must be fully known.")
    return array


def _output_times(t: Any, n_series: int) -> np.ndarray:
    """``simulate``'s output times, broadcast to ``(n_series, n_times)``."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != n_series) or t.shape[-1] < 1 or not np.isfinite(t).all():
        raise input_error(
            "t",
            f"finite times of shape (n_times,) or ({n_series}, n_times)",
            f"shape {t.shape}",
            "Pass the output times, starting at the time of x0.",
        )
    return np.broadcast_to(t, (n_series, t.shape[-1]))
