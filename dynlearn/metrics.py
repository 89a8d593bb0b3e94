"""Error metrics and proper scores over observed entries only, and backtest scorers.

Each metric accepts what estimators return: arrays (NaN in ``y_true`` marks
a missing entry), lists of arrays, or long frames (rows are matched on
series and time). Point errors (MSE, MAE, R²), scores of predictive
distributions (CRPS, energy score, interval score, pinball loss, Gaussian
NLL), and :func:`make_forecast_scorer`, a scikit-learn scorer that cuts
each series' last ``horizon`` off and scores the forecast of it.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import pandas as pd

from ._backtest import check_length, describe_length, frame_feature_columns, future_rows, parse_length, row_times
from .data import ID_COLUMN, SAMPLE_LEVEL, TIME_COLUMN, check_series
from .exceptions import input_error

QUANTILE_LEVEL = "quantile"

__all__ = [
    "ForecastScorer",
    "crps_ensemble",
    "crps_from_samples",
    "energy_score",
    "forecast_score",
    "gaussian_nll",
    "interval_coverage",
    "interval_score",
    "make_forecast_scorer",
    "mean_absolute_error",
    "mean_squared_error",
    "pinball_loss",
    "r2_score",
    "r2_score_masked",
]


def mean_squared_error(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean squared error over the entries observed in ``y_true``.

    Parameters
    ----------
    y_true, y_pred : DataFrame, ndarray or list of ndarray
        Same kind and shape; frames are aligned on (series, time).
    multioutput : {"uniform_average", "raw_values"}
        Average over features, or one value per feature.
    """
    true, pred, mask = _aligned(y_true, y_pred)
    return _reduce(np.where(mask, (true - pred) ** 2, 0.0), mask, multioutput)


def mean_absolute_error(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean absolute error over the entries observed in ``y_true``."""
    true, pred, mask = _aligned(y_true, y_pred)
    return _reduce(np.where(mask, np.abs(true - pred), 0.0), mask, multioutput)


def r2_score(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Coefficient of determination per feature over observed entries (1 is perfect)."""
    true, pred, mask = _aligned(y_true, y_pred)
    return r2_score_masked(true, pred, mask, multioutput=multioutput)


def r2_score_masked(true: np.ndarray, pred: np.ndarray, mask: np.ndarray, *, multioutput: str = "uniform_average") -> Any:
    """R² of ``pred`` against ``true`` where ``mask``; arrays of shape (..., n_features)."""
    true = true.reshape(-1, true.shape[-1])
    pred = pred.reshape(-1, pred.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    count = np.maximum(mask.sum(axis=0), 1)
    mean = np.where(mask, true, 0.0).sum(axis=0) / count
    residual = np.where(mask, (true - pred) ** 2, 0.0).sum(axis=0)
    total = np.where(mask, (true - mean) ** 2, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0))
    return _finish(score, multioutput)


# ------------------------------------------------------------ probabilistic
def crps_ensemble(y_true: Any, y_samples: Any, *, fair: bool = False, multioutput: str = "uniform_average") -> Any:
    """Continuous ranked probability score of a sample ensemble, over observed entries (lower is better).

    The CRPS of a distribution ``F`` at an observation ``y`` is
    ``E|X - y| - E|X - X'| / 2`` with ``X, X'`` independent draws from ``F``
    (Gneiting & Raftery 2007, eq. 20); it is in the units of ``y``. From
    ``m`` members ``x_1, ..., x_m`` of an ensemble, per entry:

    - ``fair=False`` (the plain estimator, the CRPS of the ensemble's own
      empirical distribution): ``(1/m) Σ_i |x_i - y| - (1/(2 m²)) Σ_i Σ_j |x_i - x_j|``.
      An ensemble of identical members scores the absolute error.
    - ``fair=True`` (the fair estimator, Ferro 2014; Zamo & Naveau 2018):
      ``(1/m) Σ_i |x_i - y| - (1/(2 m (m - 1))) Σ_i Σ_j |x_i - x_j|``. Its
      expectation over ensembles of ``m`` independent draws from ``F`` is the
      CRPS of ``F`` itself, whatever ``m``; the plain estimator overstates
      it by ``E|X - X'| / (2m)``, so it favours wider distributions when
      ensembles are small. Needs ``m >= 2``.

    Parameters
    ----------
    y_true : DataFrame, ndarray or list of ndarray
        Observations; NaN marks a missing entry, which is ignored.
    y_samples : DataFrame, ndarray or list
        What ``sample`` returns for the same rows: an array with a leading
        sample axis ``(n_samples, *y_true.shape)``, a frame with an outer
        ``sample`` index level (each sample aligned on series and time), or a
        list of ``n_samples`` ragged lists.
    fair : bool, default=False
        Use the fair (unbiased) estimator instead of the plain one.
    multioutput : {"uniform_average", "raw_values"}

    References
    ----------
    Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules,
    prediction, and estimation. JASA 102(477), 359-378.
    Ferro, C. A. T. (2014). Fair scores for ensemble forecasts. QJRMS 140, 1917-1923.
    Zamo, M. & Naveau, P. (2018). Estimation of the continuous ranked
    probability score with limited information and applications to ensemble
    weather forecasts. Math. Geosci. 50, 209-234.
    """
    true, samples, mask, _ = _aligned_samples(y_true, y_samples)
    m = samples.shape[0]
    if fair and m < 2:
        raise input_error("y_samples", "at least two samples for fair=True", "one sample",
                          "Draw more samples, or use fair=False.")
    ordered = np.sort(samples, axis=0)
    weights = (2.0 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (ordered.ndim - 1))
    pair_sum = 2.0 * (weights * ordered).sum(axis=0)  # Σ_i Σ_j |x_i - x_j| from the sorted members
    spread = pair_sum / (m * (m - 1)) if fair else pair_sum / m**2
    score = np.abs(samples - true).mean(axis=0) - 0.5 * spread
    return _reduce(np.where(mask, score, 0.0), mask, multioutput)


def energy_score(y_true: Any, y_samples: Any, *, fair: bool = False) -> float:
    """Energy score of a multivariate sample ensemble, averaged over observed rows (lower is better).

    The multivariate generalisation of the CRPS (Gneiting & Raftery 2007,
    eq. 22 with β = 1): for each row (one series at one time) the vector of
    its features ``y`` is scored against the ``m`` sampled vectors
    ``x_1, ..., x_m``:
    ``(1/m) Σ_i ‖x_i - y‖ - (1/(2 m²)) Σ_i Σ_j ‖x_i - x_j‖`` with ``‖·‖`` the
    Euclidean norm, or with ``1/(2 m (m - 1))`` in the second term when
    ``fair=True`` (unbiased for the energy score of the distribution the
    samples come from). With one feature it equals :func:`crps_ensemble`.

    Features must share units for the norm to mean something: standardise
    them first if they do not. A row with missing features is scored on the
    features it has (the energy score of the marginal of those features);
    rows with none are ignored.

    Parameters
    ----------
    y_true : DataFrame, ndarray or list of ndarray
        Observations, rows ``(..., n_features)``; NaN marks a missing entry.
    y_samples : DataFrame, ndarray or list
        Samples as for :func:`crps_ensemble`.
    fair : bool, default=False
        Use the fair (unbiased) estimator.

    Returns
    -------
    float
        Mean over rows with at least one observed feature.

    References
    ----------
    Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules,
    prediction, and estimation. JASA 102(477), 359-378.
    """
    true, samples, mask, _ = _aligned_samples(y_true, y_samples)
    m = samples.shape[0]
    if fair and m < 2:
        raise input_error("y_samples", "at least two samples for fair=True", "one sample",
                          "Draw more samples, or use fair=False.")
    true = true.reshape(-1, true.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    samples = np.where(mask, samples.reshape(m, -1, true.shape[-1]), 0.0)
    rows = mask.any(axis=1)
    error = np.linalg.norm(samples - true, axis=-1).mean(axis=0)
    pair_sum = np.zeros(len(true))
    for member in samples:  # one member at a time keeps memory at m x n_rows
        pair_sum += np.linalg.norm(samples - member, axis=-1).sum(axis=0)
    spread = pair_sum / (m * (m - 1)) if fair else pair_sum / m**2
    return float(np.mean((error - 0.5 * spread)[rows]))


def interval_score(
    y_true: Any, y_lower: Any, y_upper: Any, *, alpha: float, multioutput: str = "uniform_average"
) -> Any:
    """Interval (Winkler) score of central ``(1 - alpha)`` prediction intervals (lower is better).

    Averaged over the entries observed in ``y_true``.

    Per entry ``(u - l) + (2/α) (l - y) 1{y < l} + (2/α) (y - u) 1{y > u}``
    (Gneiting & Raftery 2007, eq. 43): the width of the interval plus a
    penalty for each observation outside it. It is proper for intervals whose
    ends are the ``α/2`` and ``1 - α/2`` quantiles, so it rewards
    calibration and sharpness together, in the units of ``y``.

    Parameters
    ----------
    y_true : DataFrame, ndarray or list of ndarray
        Observations; NaN marks a missing entry, which is ignored.
    y_lower, y_upper : same kind as y_true
        Interval ends, e.g. the 0.05 and 0.95 quantiles of
        ``predict_quantiles`` for ``alpha=0.1``.
    alpha : float in (0, 1)
        One minus the nominal coverage: 0.1 for 90% intervals.
    multioutput : {"uniform_average", "raw_values"}

    References
    ----------
    Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules,
    prediction, and estimation. JASA 102(477), 359-378.
    Winkler, R. L. (1972). A decision-theoretic approach to interval
    estimation. JASA 67(337), 187-191.
    """
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, Real) or not 0 < alpha < 1:
        raise input_error("alpha", "a float strictly between 0 and 1", repr(alpha),
                          "Pass one minus the coverage, e.g. alpha=0.1 for 90% intervals.")
    true, lower, mask = _aligned(y_true, y_lower, argument="y_lower")
    _, upper, _ = _aligned(y_true, y_upper, argument="y_upper")
    if (lower > upper)[mask].any():
        above = int((lower > upper)[mask].sum())
        raise input_error("y_lower", "values no larger than y_upper", f"{above} entries above it",
                          "Pass the lower ends first.")
    score = (upper - lower) + (2.0 / alpha) * (np.maximum(lower - true, 0.0) + np.maximum(true - upper, 0.0))
    return _reduce(np.where(mask, score, 0.0), mask, multioutput)


def pinball_loss(
    y_true: Any, y_quantiles: Any, quantiles: Any = None, *, multioutput: str = "uniform_average"
) -> Any:
    """Quantile (pinball) loss of predicted quantiles, over observed entries (lower is better).

    Per entry and level ``τ``: ``τ (y - q)`` when ``y >= q``, else
    ``(1 - τ) (q - y)`` — the scoring function for which the ``τ``-quantile
    is the optimal forecast (Gneiting & Raftery 2007, eq. 41; Koenker &
    Bassett 1978). With several levels the losses are averaged over levels;
    averaged over many evenly spaced levels, twice the loss approximates the
    CRPS.

    Parameters
    ----------
    y_true : DataFrame, ndarray or list of ndarray
        Observations; NaN marks a missing entry, which is ignored.
    y_quantiles : same kind as y_true, or stacked on a leading quantile axis
        One level: the same kind and shape as ``y_true``. Several levels:
        what ``predict_quantiles`` returns, an array ``(n_quantiles,
        *y_true.shape)``, a frame with an outer ``quantile`` index level
        (whose values are the levels), or one ragged list per level.
    quantiles : float or sequence of float in (0, 1), default=None
        The levels, in the order of ``y_quantiles``' leading axis. May be
        left out for a frame with a ``quantile`` level, whose values are used.
    multioutput : {"uniform_average", "raw_values"}

    References
    ----------
    Gneiting, T. & Raftery, A. E. (2007). Strictly proper scoring rules,
    prediction, and estimation. JASA 102(477), 359-378.
    Koenker, R. & Bassett, G. (1978). Regression quantiles. Econometrica 46(1), 33-50.
    """
    single = quantiles is not None and np.ndim(quantiles) == 0
    if single:
        levels = np.array([quantiles], dtype=float)
        true, predicted, mask = _aligned(y_true, y_quantiles, argument="y_quantiles")
        stack = predicted[None]
    else:
        true, stack, mask, keys = _aligned_samples(y_true, y_quantiles, level=QUANTILE_LEVEL, argument="y_quantiles")
        if quantiles is None:
            if keys is None:
                raise input_error("quantiles", "the quantile levels of y_quantiles' leading axis", "None",
                                  "Pass them, e.g. quantiles=[0.05, 0.5, 0.95].")
            quantiles = keys
        levels = np.asarray(quantiles, dtype=float).ravel()
        if keys is not None and not np.allclose(np.sort(levels), np.sort(np.asarray(keys, dtype=float))):
            raise input_error("quantiles", f"the levels of y_quantiles' {QUANTILE_LEVEL!r} index level {list(keys)}",
                              repr(list(levels)), "Leave quantiles=None to use the frame's levels.")
        if keys is not None:
            levels = np.asarray(keys, dtype=float)
        if len(levels) != len(stack):
            raise input_error("quantiles", f"{len(stack)} levels, one per entry of y_quantiles' leading axis",
                              f"{len(levels)} levels", "Pass the levels the quantiles were predicted at.")
    if not np.all((levels > 0) & (levels < 1)):
        raise input_error("quantiles", "levels strictly between 0 and 1", repr(quantiles), "Pass e.g. [0.05, 0.95].")
    tau = levels.reshape((-1,) + (1,) * true.ndim)
    residual = true - stack
    loss = np.maximum(tau * residual, (tau - 1.0) * residual).mean(axis=0)
    return _reduce(np.where(mask, loss, 0.0), mask, multioutput)


crps_from_samples = crps_ensemble


def interval_coverage(y_true: Any, y_lower: Any, y_upper: Any, *, multioutput: str = "uniform_average") -> Any:
    """Share of observed entries inside ``[y_lower, y_upper]``.

    A calibrated 90% interval (e.g. the 0.05 and 0.95 quantiles of
    ``predict_quantiles``) covers about 0.9 of the observations.
    """
    true, lower, mask = _aligned(y_true, y_lower)
    _, upper, _ = _aligned(y_true, y_upper)
    inside = (lower <= true) & (true <= upper)
    return _reduce(np.where(mask, inside, 0.0), mask, multioutput)


def gaussian_nll(y_true: Any, y_mean: Any, y_std: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean negative log-density of observed entries under independent ``N(y_mean, y_std²)`` (lower is better).

    Per entry ``log(2π σ²) / 2 + (y - μ)² / (2σ²)``, in nats; ``y_mean``,
    ``y_std`` as returned by ``predict(X, t, return_std=True)``.
    """
    true, mean, mask = _aligned(y_true, y_mean)
    _, std, _ = _aligned(y_true, y_std)
    if not (std[mask] > 0).all():
        raise input_error("y_std", "positive standard deviations where y_true is observed", "zero or negative values",
                          "Drop entries predicted with zero spread (e.g. a query at its own anchor observation).")
    safe = np.where(mask, std, 1.0)
    nll = 0.5 * np.log(2 * np.pi * safe**2) + 0.5 * ((true - mean) / safe) ** 2
    return _reduce(np.where(mask, nll, 0.0), mask, multioutput)


# ------------------------------------------------------------- backtests
_ERROR_METRICS = ("mse", "mae", "rmse", "mase")
_SCORE_METRICS = ("r2",)


def forecast_score(estimator: Any, X: Any, horizon: Any, *, t: Any = None, metric: Any = "r2") -> float:
    """Score forecasts of each series' last ``horizon`` made from the history before it.

    Every series of X is cut in two: its future (the last ``horizon``) and
    its history (everything before). The estimator is conditioned on the
    histories and asked for the future rows,
    ``estimator.predict(history, t=query)`` with ``query`` the future rows'
    series and times (and the columns named by the estimator's
    ``covariates`` and ``static_covariates``, if any: inputs known in
    advance), and the predictions are compared with the future values in the
    user's units, missing values masked.

    Parameters
    ----------
    estimator : fitted estimator
        Anything with ``predict(X, t=query_frame)`` returning a frame of the
        query rows, as dynlearn's forecasters do.
    X : DataFrame, ndarray or list of ndarray
        A long frame (a ``(series, time)`` MultiIndex or ``series_id`` and
        ``time`` columns), a time-indexed frame (one series), an array
        ``(n_series, n_times, n_features)`` or ``(n_times, n_features)``, or a
        list of ``(n_times_i, n_features)`` arrays. Arrays are read with
        ``t`` and passed on as a long frame (``series_id`` 0, 1, ...).
    horizon : int, float, Timedelta or str
        How much of each series' end is forecast:

        - an int: the last ``horizon`` observations of each series;
        - a float (numeric times): the rows after ``T - horizon``, with ``T``
          the latest time in X;
        - a Timedelta or a string such as ``"2h"`` (datetime or timedelta
          times): the same, as a span of time.

        A span cuts every series at the same moment ``T - horizon``, as a
        forecast issued at one time would; on series that share their last
        time that is each series' own last ``horizon``. Note that
        ``horizon=5`` counts observations while ``horizon=5.0`` is a span.
    t : array-like or list, default=None
        Observation times of array input, as for ``fit``; None for frames.
    metric : {"r2", "mse", "mae", "rmse", "mase"} or callable, default="r2"
        Compared per feature over the observed future entries of all series
        together and averaged over features. ``"mase"`` divides the mean
        absolute error by that of the one-step naive forecast within the
        histories (Hyndman & Koehler 2006). A callable gets
        ``(y_future, y_predicted)``, two frames aligned on series and time,
        and returns a float.

    Returns
    -------
    float
        The metric as it is: an error (lower is better) or R² (higher is
        better). :func:`make_forecast_scorer` turns errors into scores.

    Raises
    ------
    InputError
        If no series has an observed value both before and after its cut.
        Series without one are left out of the score.
    """
    if not (callable(metric) or metric in _ERROR_METRICS + _SCORE_METRICS):
        raise input_error("metric", f"one of {list(_SCORE_METRICS + _ERROR_METRICS)} or a callable", repr(metric),
                          "Pick a named metric or pass a function of (y_true, y_pred).")
    if _is_classifier(estimator):
        raise input_error(
            "estimator",
            "a forecaster, whose predict(X, t=query) gives the state at the query times",
            f"the classifier {type(estimator).__name__}, whose predict gives one label per series",
            "Score classifiers with their own score(X, y) or a scikit-learn scorer such as 'accuracy'.",
        )
    frame = _as_frame(X, t, estimator)
    history, future, query, columns = _cut_for_forecast(frame, horizon, estimator)
    predicted = estimator.predict(history, t=query)
    if not isinstance(predicted, pd.DataFrame):
        raise input_error("estimator.predict", "a DataFrame of the query rows", type(predicted).__name__,
                          "Use an estimator that returns the kind of its input, as dynlearn's do.")
    scored = [c for c in columns if c in predicted.columns]
    if not scored:
        raise input_error("estimator.predict", f"columns among {columns}", f"columns {list(predicted.columns)[:10]}",
                          "Predict the same variables X holds.")
    truth = future.drop(columns=[c for c in columns if c not in scored])
    if callable(metric):
        return float(metric(truth, predicted))
    if metric == "r2":
        return r2_score(truth, predicted)
    if metric == "mse":
        return mean_squared_error(truth, predicted)
    if metric == "rmse":
        return float(np.mean(np.sqrt(mean_squared_error(truth, predicted, multioutput="raw_values"))))
    if metric == "mae":
        return mean_absolute_error(truth, predicted)
    naive = _naive_step_error(history, scored)
    return float(np.mean(mean_absolute_error(truth, predicted, multioutput="raw_values") / naive))


class ForecastScorer:
    """A scikit-learn scorer of forecasts; made by :func:`make_forecast_scorer`."""

    def __init__(self, horizon: Any, metric: Any, sign: float):
        self.horizon = horizon
        self.metric = metric
        self.sign = sign

    def __call__(self, estimator: Any, X: Any, y: Any = None, **kwargs: Any) -> float:
        """``sign * forecast_score(estimator, X, horizon, metric=metric)``; ``y`` is ignored."""
        return self.sign * forecast_score(estimator, X, self.horizon, metric=self.metric)

    def __repr__(self) -> str:
        name = getattr(self.metric, "__name__", repr(self.metric))
        flip = "" if self.sign > 0 else ", greater_is_better=False"
        return f"make_forecast_scorer(horizon={self.horizon!r}, metric={name}{flip})"


def make_forecast_scorer(horizon: Any, metric: Any = "mse", *, greater_is_better: bool | None = None) -> ForecastScorer:
    """A scikit-learn scorer that backtests forecasts of each series' last ``horizon``.

    The scorer is a callable ``scorer(estimator, X, y=None) -> float`` for
    ``scoring=`` in ``cross_validate``, ``GridSearchCV`` and the like. On
    each X it cuts the last ``horizon`` off every series, conditions the
    estimator on the history before the cut and scores the forecast of the
    rows after it (see :func:`forecast_score`). Errors are negated, like
    scikit-learn's ``"neg_mean_squared_error"``, so greater is always better.
    Pair it with :class:`dynlearn.model_selection.SeriesTimeSplit` with the
    same ``horizon``: each test fold then holds every series up to the
    fold's cut plus the next ``horizon``, and the scorer cuts exactly there.

    Parameters
    ----------
    horizon : int, float, Timedelta or str
        An int counts each series' last observations; a float is a span in
        the data's time units; a Timedelta or string such as ``"2h"`` is a
        span for datetime or timedelta times. See :func:`forecast_score`.
    metric : {"mse", "mae", "rmse", "mase", "r2"} or callable, default="mse"
        The errors are returned negated (``-mse``); ``"r2"`` as it is.
    greater_is_better : bool, default=None
        Whether a larger value of a callable ``metric`` is better; required
        for a callable. Named metrics know their direction; a value given for
        them must agree with it.

    Returns
    -------
    ForecastScorer

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate
    >>> from dynlearn import NeuralODE
    >>> from dynlearn.datasets import make_damped_oscillator
    >>> from dynlearn.metrics import make_forecast_scorer
    >>> from dynlearn.model_selection import SeriesTimeSplit
    >>> frame = make_damped_oscillator(n_series=4, n_times=30, random_state=0)
    >>> result = cross_validate(NeuralODE(max_epochs=2, random_state=0), frame,
    ...                         cv=SeriesTimeSplit(n_splits=2, horizon=5),
    ...                         scoring=make_forecast_scorer(horizon=5))
    >>> result["test_score"].shape
    (2,)
    """
    check_length(horizon, "horizon")
    if callable(metric):
        if greater_is_better is None:
            raise input_error("greater_is_better", "True or False for a callable metric", "None",
                              "Say whether larger values of the metric are better.")
        return ForecastScorer(horizon, metric, 1.0 if greater_is_better else -1.0)
    if metric not in _ERROR_METRICS + _SCORE_METRICS:
        raise input_error("metric", f"one of {list(_ERROR_METRICS + _SCORE_METRICS)} or a callable", repr(metric),
                          "Pick a named metric or pass a function of (y_true, y_pred).")
    natural = metric in _SCORE_METRICS
    if greater_is_better is not None and bool(greater_is_better) != natural:
        raise input_error("greater_is_better", f"{natural} (or None) for metric {metric!r}", repr(greater_is_better),
                          "Leave it out: named metrics know their direction.")
    return ForecastScorer(horizon, metric, 1.0 if natural else -1.0)


def _is_classifier(estimator: Any) -> bool:
    from sklearn.base import is_classifier

    return hasattr(estimator, "__sklearn_tags__") and is_classifier(estimator)


def _as_frame(X: Any, t: Any, estimator: Any) -> pd.DataFrame:
    """Frames as they are; arrays and lists (with ``t``) as a long frame with ``series_id`` 0, 1, ..."""
    if isinstance(X, pd.DataFrame):
        if t is not None:
            raise input_error("t", "None when X is a DataFrame (frames carry their own times)", type(t).__name__,
                              "Drop t.")
        return X
    spec = getattr(estimator, "input_spec_", None)
    if t is None and spec is not None:
        # An array fitted at other times than 0, 1, 2, ... must say when its rows were observed.
        check_series(X, None, reference=spec, need_times=True)
    if isinstance(X, (list, tuple)) and len(X) and all(np.ndim(item) == 2 for item in X):
        arrays = [np.asarray(item, dtype=float) for item in X]
        times = [np.arange(len(a)) for a in arrays] if t is None else list(t)
        if len(times) != len(arrays):
            raise input_error("t", f"a list of {len(arrays)} time arrays, one per series", f"{len(times)}",
                              "Pass t=[times_0, times_1, ...].")
    else:
        array = np.asarray(X, dtype=float)
        if array.ndim not in (2, 3):
            raise input_error("X", "a frame, an array (n_series, n_times, n_features) or (n_times, n_features)",
                              f"shape {array.shape}", "Pass the series with their times.")
        panel = array if array.ndim == 3 else array[None]
        if t is None:
            t = np.arange(panel.shape[1])
        t_array = np.asarray(t)
        if t_array.ndim == 1 or array.ndim == 2:
            t_array = np.broadcast_to(t_array.reshape(1, -1), panel.shape[:2])
        if t_array.shape != panel.shape[:2]:
            raise input_error("t", f"times of shape ({panel.shape[1]},) or {panel.shape[:2]}", f"shape {np.shape(t)}",
                              "Pass one time per row of each series.")
        arrays, times = list(panel), list(t_array)
    for i, (array, ti) in enumerate(zip(arrays, times)):
        if np.ndim(ti) != 1 or len(ti) != len(array):
            raise input_error(f"t[{i}]", f"{len(array)} times", f"shape {np.shape(ti)}", "Pass one time per row.")
    n_features = arrays[0].shape[1]
    names = getattr(estimator, "feature_names_in_", None)
    names = list(names) if names is not None and len(names) == n_features else [f"x{j}" for j in range(n_features)]
    pieces = [
        pd.concat([pd.DataFrame({ID_COLUMN: i, TIME_COLUMN: pd.Index(ti)}), pd.DataFrame(a, columns=names)], axis=1)
        for i, (a, ti) in enumerate(zip(arrays, times))
    ]
    return pd.concat(pieces, ignore_index=True)


def _cut_for_forecast(frame: pd.DataFrame, horizon: Any, estimator: Any) -> tuple[Any, Any, Any, list[Any]]:
    """History, future (values to score), query rows and the names of the scored columns."""
    rows = row_times(frame)
    length = parse_length(horizon, "horizon", rows.kind)
    future = future_rows(rows, length)
    inputs = _input_columns(estimator, frame)
    columns = [c for c in frame_feature_columns(frame) if c not in inputs]
    if not columns:
        raise input_error("X", "value columns besides series id, time and inputs", f"columns {list(frame.columns)}",
                          "Pass the observed variables.")
    observed = frame[columns].notna().to_numpy().any(axis=1)
    seen_before = np.bincount(rows.series, weights=observed & ~future, minlength=rows.n_series) > 0
    seen_after = np.bincount(rows.series, weights=observed & future, minlength=rows.n_series) > 0
    keep = (seen_before & seen_after)[rows.series]
    if not keep.any():
        raise input_error(
            "X",
            f"series with observed values both before and within their last {describe_length(rows, length)}",
            f"{rows.n_series} series, none long enough to cut",
            "Pass longer series or a shorter horizon.",
        )
    history = frame.iloc[np.flatnonzero(keep & ~future)]
    ahead = frame.iloc[np.flatnonzero(keep & future)]
    if isinstance(frame.index, pd.MultiIndex):
        query = ahead[inputs]
        truth = ahead[columns]
    elif ID_COLUMN in frame.columns and TIME_COLUMN in frame.columns:
        query = ahead[[ID_COLUMN, TIME_COLUMN] + inputs]
        truth = ahead[[ID_COLUMN, TIME_COLUMN] + columns]
    else:
        keys = [TIME_COLUMN] if TIME_COLUMN in frame.columns else []
        query = ahead[keys + inputs]
        truth = ahead[keys + columns]
    return history, truth, query, columns


def _input_columns(estimator: Any, frame: pd.DataFrame) -> list[Any]:
    """Columns the estimator reads as inputs known in advance (covariates), present in ``frame``."""
    names: list[Any] = []
    for attribute in ("covariates", "static_covariates"):
        value = getattr(estimator, attribute, None)
        if value is None:
            continue
        names += [value] if isinstance(value, str) else list(value)
    return [c for c in frame.columns if c in names]


def _naive_step_error(history: pd.DataFrame, columns: list[Any]) -> np.ndarray:
    """Mean absolute change between consecutive observed values of each series, per column."""
    rows = row_times(history)
    order = np.lexsort((rows.clock, rows.series))
    values = history[columns].to_numpy(dtype=float, na_value=np.nan)[order]
    series = rows.series[order]
    steps = []
    for j in range(values.shape[1]):
        seen = np.isfinite(values[:, j])
        v, s = values[seen, j], series[seen]
        same = s[1:] == s[:-1]
        steps.append(np.abs(np.diff(v))[same])
    scale = np.array([step.mean() if len(step) else np.nan for step in steps])
    if not (np.isfinite(scale) & (scale > 0)).all():
        raise input_error("X", "histories whose values change between observations (the MASE scale)",
                          "a constant or single-observation history for some variable",
                          "Use metric='mae' or longer histories.")
    return scale


def _aligned_samples(
    y_true: Any, y_stack: Any, *, level: str = SAMPLE_LEVEL, argument: str = "y_samples"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None]:
    """``y_true`` and every slice of ``y_stack`` aligned like :func:`_aligned`, stacked on a leading axis.

    Frames are split on their outer ``level``; its values are returned as
    the last item (None for arrays and lists).
    """
    keys = None
    if isinstance(y_true, pd.DataFrame):
        if not isinstance(y_stack, pd.DataFrame) or level not in (y_stack.index.names or []):
            raise input_error(argument, f"a DataFrame with a {level!r} index level", type(y_stack).__name__,
                              "Pass what the model returns for y_true's rows.")
        groups = list(y_stack.groupby(level=level, sort=True))
        keys = [key for key, _ in groups]
        draws = [group.droplevel(level) for _, group in groups]
    elif isinstance(y_true, (list, tuple)):
        draws = list(y_stack)
    else:
        draws = np.asarray(y_stack, dtype=float)
        if draws.shape[1:] != np.shape(y_true):
            raise input_error(argument, f"shape (n_{level}s, {', '.join(map(str, np.shape(y_true)))})",
                              f"shape {draws.shape}", f"Stack them on a leading {level} axis, as the model does.")
    if len(draws) == 0:
        raise input_error(argument, f"at least one {level}", "none", "Pass what the model returns.")
    aligned = [_aligned(y_true, draw, argument=argument) for draw in draws]
    true, mask = aligned[0][0], aligned[0][2]
    return true, np.stack([pred for _, pred, _ in aligned]), mask, keys


def _reduce(errors: np.ndarray, mask: np.ndarray, multioutput: str) -> Any:
    errors = errors.reshape(-1, errors.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    return _finish(errors.sum(axis=0) / np.maximum(mask.sum(axis=0), 1), multioutput)


def _finish(per_feature: np.ndarray, multioutput: str) -> Any:
    if multioutput == "raw_values":
        return per_feature
    if multioutput == "uniform_average":
        return float(np.mean(per_feature))
    raise input_error("multioutput", "'uniform_average' or 'raw_values'", repr(multioutput), "Pick one.")


def _aligned(y_true: Any, y_pred: Any, *, argument: str = "y_pred") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(y_true, pd.DataFrame):
        if not isinstance(y_pred, pd.DataFrame):
            raise input_error(argument, "a DataFrame like y_true", type(y_pred).__name__, "Pass predictions as returned.")
        true, pred = _indexed(y_true), _indexed(y_pred)
        missing = true.index.difference(pred.index)
        if len(missing):
            raise input_error(
                argument,
                "a row for every (series, time) of y_true",
                f"{len(missing)} missing rows, e.g. {list(missing[:3])}",
                "Predict at y_true's times, e.g. model.predict(history, t=y_true).",
            )
        columns = [c for c in true.columns]
        absent = [c for c in columns if c not in pred.columns]
        if absent:
            raise input_error(argument, f"columns {columns}", f"columns missing {absent}", "Pass matching frames.")
        true_values = true[columns].to_numpy(dtype=float, na_value=np.nan)
        pred_values = pred.loc[true.index, columns].to_numpy(dtype=float, na_value=np.nan)
    else:
        true_values = _stack(y_true, "y_true")
        pred_values = _stack(y_pred, "y_pred")
        if true_values.shape != pred_values.shape:
            raise input_error(argument, f"shape {true_values.shape} like y_true", f"shape {pred_values.shape}", "Pass matching arrays.")
    mask = np.isfinite(true_values)
    if not mask.any():
        raise input_error("y_true", "at least one observed value", "only missing entries", "Pass observed data.")
    if not np.isfinite(pred_values[mask]).all():
        raise input_error(argument, "finite predictions where y_true is observed", "NaN or inf", "Check the model output.")
    return np.where(mask, true_values, 0.0), np.where(mask, pred_values, 0.0), mask


def _indexed(frame: pd.DataFrame) -> pd.DataFrame:
    if ID_COLUMN in frame.columns and TIME_COLUMN in frame.columns:
        return frame.set_index([ID_COLUMN, TIME_COLUMN])
    if TIME_COLUMN in frame.columns:
        return frame.set_index(TIME_COLUMN)
    return frame


def _stack(y: Any, argument: str) -> np.ndarray:
    if isinstance(y, (list, tuple)):
        y = np.concatenate([np.asarray(a, dtype=float).reshape(len(a), -1) for a in y])
    array = np.asarray(y, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    return array
