"""A forecaster that picks its model by backtest, and the naive forecaster every pick is measured against.

:class:`AutoForecaster` backtests a few candidate forecasters with
:class:`~dynlearn.model_selection.SeriesTimeSplit` and the horizon error of
:func:`~dynlearn.metrics.forecast_score`, within a time budget, and refits
the one with the lowest error on all the data. :class:`LastValueForecaster`
(persistence: every forecast is the latest observation) is always among the
candidates, so a model is chosen only where it beats doing nothing.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ._backtest import check_length, frame_feature_columns, parse_length, row_times
from ._compat import available_if
from .data import QueryTimes, SeriesBatch, check_query_times, check_series, masked_mean_scale
from .estimators._base import SeriesModel, _check_every_feature_observed
from .estimators._intervals import CONFORMAL_ATTRIBUTES, ConformalIntervals, lead_times
from .exceptions import TrainingError, input_error
from .metrics import _as_frame, _cut_for_forecast, forecast_score
from .model_selection import SeriesTimeSplit

__all__ = ["AutoForecaster", "LastValueForecaster", "SeasonalNaiveForecaster"]

# Forecast origins per series behind the naive forecaster's conformal intervals.
NAIVE_ORIGINS = 20
# Backtest error metrics AutoForecaster ranks by (lower is better).
ERROR_METRICS = ("mse", "mae", "rmse", "mase")
BASELINE_NAME = "last_value"
# Leaderboard statuses.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


# ------------------------------------------------------------------ naive
class LastValueForecaster(ConformalIntervals, SeriesModel):
    """Naive forecaster: the value at a query time is the latest observation strictly before it.

    Persistence forecasts (the "random walk" forecast): each variable keeps
    the value it was last observed with. A query at or before a series'
    first observation gets that first observation; a variable a series never
    observed gets its mean over the data ``fit`` saw. Nothing is learned, so
    it is the floor a model must beat to be worth its training, and
    :class:`AutoForecaster` always has it among its candidates.

    Columns named in ``covariates`` or ``static_covariates`` are known
    inputs: they are not forecast (outputs hold the other columns), as for
    the models driven by them, so the naive forecast of a table with inputs
    is scored on the same columns as theirs. A query frame must then carry
    the time-varying inputs, as for those models, though the forecast does
    not read them.

    It has the API of dynlearn's forecasters: ``predict`` conditions on the
    history in X the same way (``predict(X)`` gives one-step-ahead
    predictions, i.e. the previous observation), ``score`` with or without
    ``horizon``, and conformal ``predict_interval`` / ``predict_quantiles``.
    Its intervals are calibrated by ``fit`` itself on the series it is given,
    from up to 20 forecast origins per series: with nothing fitted, residuals
    on those series are out of sample. ``save`` and :func:`dynlearn.load`
    keep it.

    Parameters
    ----------
    covariates : list of str or int, str or None, default=None
        Columns of X that are time-varying known inputs, not forecast.
    static_covariates : list of str or int, str or None, default=None
        Columns of X that are per-series constants, not forecast.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.
    input_spec_ : InputSpec
        The kind of input fit saw.
    mean_ : ndarray of shape (n_states,)
        Mean of each observed variable, for variables a series never observed.
    conformal_leads_, conformal_residuals_, conformal_lead_edges_ : ndarray
        Calibration of the conformal intervals (see ``calibrate``); absent
        when every series fit saw had fewer than three observed rows.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import LastValueForecaster
    >>> X = np.arange(10.0).reshape(-1, 1)  # one series at times 0..9
    >>> LastValueForecaster().fit(X).predict(X, t=[10.0, 12.0]).ravel().tolist()
    [9.0, 9.0]
    """

    _fitted_attribute = "input_spec_"
    _parameter_constraints: dict[str, list[Any]] = {
        "covariates": [list, tuple, str, None],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(self, covariates: Any = None, static_covariates: Any = None) -> None:
        self.covariates = covariates
        self.static_covariates = static_covariates

    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> LastValueForecaster:
        """Record what the data look like and calibrate the forecast intervals on it.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind (a long frame, a time-indexed frame,
            an array ``(n_series, n_times, n_features)`` or
            ``(n_times, n_features)``, or a list of ``(n_times_i,
            n_features)`` arrays).
        y : None
            Ignored.
        t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``.

        Returns
        -------
        self
        """
        self._validate_params()
        batch = check_series(X, t)
        for name in CONFORMAL_ATTRIBUTES:
            self.__dict__.pop(name, None)
        self.input_spec_ = batch.spec
        self.n_features_in_ = batch.spec.n_features
        if batch.spec.feature_names is not None:
            self.feature_names_in_ = np.asarray(batch.spec.feature_names, dtype=object)
        else:
            self.__dict__.pop("feature_names_in_", None)
        self._resolve_covariates(batch.spec)
        batch = self._split_inputs(batch)
        _check_every_feature_observed(batch)  # a variable never seen has no last value: no silent 0 forecast
        mean, _ = masked_mean_scale(batch.values, batch.mask)
        self.mean_ = np.nan_to_num(np.asarray(mean, dtype=float))
        leads, residuals = self._forecast_residuals(batch, None, None, NAIVE_ORIGINS)
        if len(leads):
            self._store_calibration(leads, residuals)
        return self

    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """Latest observation of each variable strictly before each query time.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None gives one-step-ahead predictions at X's own times.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, as for ``fit``'s ``t``.

        Returns
        -------
        Same kind as X
            Predictions in the user's units; for frames one row per query.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        out = np.empty(query.times.shape + (batch.n_features,))
        for i in range(batch.n_series):
            n = batch.lengths[i]
            for j in range(batch.n_features):
                seen = np.flatnonzero(batch.mask[i, :n, j])
                if len(seen) == 0:
                    out[i, :, j] = self.mean_[j]
                    continue
                before = np.searchsorted(batch.times[i, seen], query.times[i], side="left") - 1
                out[i, :, j] = batch.values[i, seen[np.clip(before, 0, None)], j]
        return out


class SeasonalNaiveForecaster(LastValueForecaster):
    """Seasonal naive forecaster: the value at a query time is the latest earlier observation in the same season.

    For data with a fixed period of ``period`` observations (12 for monthly
    data with a yearly cycle, 4 for quarterly, 7 for daily data with a
    weekly one), each variable's forecast at a query time is its latest
    observation strictly before that time at the same position in the cycle:
    the value one period earlier, or whole periods earlier for forecasts more
    than a period ahead. This is the usual benchmark for seasonal series
    (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*,
    3rd ed., section 5.2). Where a series has no earlier observation in that
    season, the latest observation is used, as :class:`LastValueForecaster`
    does.

    Positions in the cycle are read off the time axis: ``fit`` records the
    mean spacing of the observations it sees, a gap of several steps
    counting as several (so months of 28 to 31 days average out) and the position of a time is its distance from the first
    observation in those steps, rounded, modulo ``period``. The data should
    be sampled regularly, with gaps allowed.

    With ``drift=True`` it is the seasonal random walk with drift
    (``y_t = y_{t-m} + c + e_t``; Hyndman & Athanasopoulos, section 5.2, and
    fable's ``SNAIVE(y ~ drift())``): each forecast adds ``k c``, where ``k``
    counts the whole cycles between the query and the observation it
    repeats and ``c``, per series and variable, is the mean change over one
    cycle, the mean of the differences between observations exactly one
    cycle apart in the history given to ``predict`` (0 where it has no such
    pair). It carries a trend on top of the season, which the plain seasonal
    naive forecast does not.

    Parameters
    ----------
    period : int, default=12
        Observations per cycle, at least 2.
    drift : bool, default=False
        Add the mean change per cycle, once per cycle ahead (see above).
    covariates, static_covariates : list of str or int, str or None, default=None
        Known inputs, not forecast (see :class:`LastValueForecaster`).

    Attributes
    ----------
    step_ : float
        Spacing of observations in ``fit``: each gap between neighbours is
        a whole number of median gaps, and this is the mean per such step
        (model clock: the data's time units, seconds for datetimes).
    origin_ : float
        The earliest observation time in ``fit``, where the count of steps starts.
    n_features_in_, feature_names_in_, input_spec_, mean_, conformal_leads_, conformal_residuals_, conformal_lead_edges_
        As for :class:`LastValueForecaster`.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import SeasonalNaiveForecaster
    >>> X = np.array([1.0, 5.0, 3.0, 2.0, 6.0, 4.0])[:, None]  # two cycles of three
    >>> SeasonalNaiveForecaster(period=3).fit(X).predict(X, t=[6.0, 7.0, 8.0, 9.0]).ravel().tolist()
    [2.0, 6.0, 4.0, 2.0]
    >>> trend = np.array([1.0, 6.0, 5.0, 4.0, 9.0, 8.0])[:, None]  # a cycle of three, three higher per cycle
    >>> SeasonalNaiveForecaster(period=3, drift=True).fit(trend).predict(trend, t=[6.0, 9.0]).ravel().tolist()
    [7.0, 10.0]
    """

    _parameter_constraints: dict[str, list[Any]] = {**LastValueForecaster._parameter_constraints, "drift": ["boolean"]}

    def __init__(self, period: int = 12, drift: bool = False, covariates: Any = None,
                 static_covariates: Any = None) -> None:
        super().__init__(covariates=covariates, static_covariates=static_covariates)
        self.period = period
        self.drift = drift

    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> SeasonalNaiveForecaster:
        """Record the data's spacing and calibrate the forecast intervals on it (see :class:`LastValueForecaster`)."""
        if isinstance(self.period, (bool, np.bool_)) or not isinstance(self.period, Integral) or self.period < 2:
            raise input_error("period", "an int of at least 2 (observations per cycle)", repr(self.period),
                              "Pass e.g. period=12 for monthly data with a yearly cycle.")
        batch = check_series(X, t)
        gaps = np.concatenate([np.diff(batch.times[i, :n]) for i, n in enumerate(batch.lengths)])
        if not len(gaps):
            raise input_error("X", "series with at least two observation times", "single observations",
                              "Pass longer series: the spacing of observations places each time in its season.")
        # Each gap counts whole steps of the median spacing (a missing month is two steps); the step is then
        # the mean over those steps, so months of 28 to 31 days keep their season for years.
        counts = np.maximum(np.rint(gaps / np.median(gaps)), 1)
        self.step_ = float(gaps.sum() / counts.sum())
        self.origin_ = float(batch.times[:, 0].min())
        return super().fit(X, t=t)

    def _steps(self, times: np.ndarray) -> np.ndarray:
        """Whole steps of the fitted spacing from the first observation fit saw."""
        return np.rint((np.asarray(times, dtype=float) - self.origin_) / self.step_).astype(np.int64)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        out = super()._predict_batch(batch, query)  # the latest value, where a season has no earlier observation
        drift = getattr(self, "drift", False)  # models saved before the parameter existed have none
        for i in range(batch.n_series):
            n = batch.lengths[i]
            query_steps = self._steps(query.times[i])
            wanted = query_steps % self.period
            for j in range(batch.n_features):
                seen = np.flatnonzero(batch.mask[i, :n, j])
                if len(seen) == 0:
                    continue
                steps = self._steps(batch.times[i, seen])
                seasons = steps % self.period
                change = self._change_per_cycle(steps, batch.values[i, seen, j]) if drift else 0.0
                for season in np.unique(wanted):
                    in_season = seasons == season
                    rows = seen[in_season]  # this season's observations, in time order
                    asked = np.flatnonzero(wanted == season)
                    before = np.searchsorted(batch.times[i, rows], query.times[i, asked], side="left") - 1
                    found = before >= 0
                    out[i, asked[found], j] = batch.values[i, rows[before[found]], j]
                    if drift:  # whole cycles from the observation repeated to the query
                        cycles = (query_steps[asked[found]] - steps[in_season][before[found]]) // self.period
                        out[i, asked[found], j] += cycles * change
        return out

    def _change_per_cycle(self, steps: np.ndarray, values: np.ndarray) -> float:
        """Mean difference between the observations (at ``steps``) exactly one cycle apart; 0 without any."""
        later = np.searchsorted(steps, steps + self.period)
        paired = later < len(steps)
        paired[paired] = steps[later[paired]] == steps[paired] + self.period
        return float(np.mean(values[later[paired]] - values[paired])) if paired.any() else 0.0


# ------------------------------------------------------------------- auto
class AutoForecaster(BaseEstimator):
    """Forecaster that backtests candidate models within a time budget and refits the best.

    ``fit`` cuts the data into expanding-window folds in time
    (:class:`~dynlearn.model_selection.SeriesTimeSplit` with ``horizon``),
    fits each candidate on each fold's past and scores its forecast of the
    next ``horizon`` (:func:`~dynlearn.metrics.forecast_score` with
    ``metric``), ranks the candidates by their mean error over the folds and
    refits the best on all the data. A :class:`LastValueForecaster` is
    always a candidate (added when ``candidates`` has none) and is backtested
    first; a model is chosen only when its mean error is strictly lower than
    the naive one, so data a model cannot forecast (a random walk, say) get
    the naive forecaster back.

    ``predict``, ``predict_interval``, ``predict_quantiles``, ``sample``
    (when the winner samples), ``calibrate`` and ``score`` are the winner's.

    Parameters
    ----------
    horizon : int, float, Timedelta or str, default=None
        How far ahead forecasts are wanted, and what each fold scores: an int
        counts observations, a float is a span in the data's time units, a
        Timedelta or string such as ``"2h"`` a span for datetime times (see
        :class:`~dynlearn.model_selection.SeriesTimeSplit`). The default
        candidates train their rollouts to cover it. None: a fifth of the
        median series length, in observations (at least one) when all series
        share their times, otherwise as a span of time (a fifth of the median
        series duration), which is what irregular panels need.
    candidates : dict, list or None, default=None
        The models to try: a dict ``{name: estimator}``, a list of
        ``(name, estimator)`` pairs, or a list of estimators (named by their
        class, numbered when repeated). Each is cloned for every fold and for
        the refit; each must forecast like dynlearn's estimators
        (``fit(X)``, ``predict(history, t=query_frame)``). None: the set of
        :meth:`default_candidates`.
    time_budget : float, default=300.0
        Seconds the backtest may take. Elapsed time is checked before each
        candidate and before each fold; once it is spent, the candidates and
        folds not yet started are recorded as skipped. A fit that has
        started is not interrupted, so the backtest can overrun the budget by
        one fold's fit, and the refit of the winner comes on top. The naive
        candidates (last value, seasonal naive with and without drift) are
        always backtested, whatever the budget.
    cv : int or cross-validator, default=3
        An int: that many folds of ``SeriesTimeSplit(horizon=horizon)``.
        Otherwise an object with ``split(X)`` yielding row positions of a
        long frame, such as a ``SeriesTimeSplit`` of your own.
    metric : {"mse", "mae", "rmse", "mase"} or callable, default="mse"
        The horizon error candidates are ranked by (lower is better); a
        callable gets ``(y_future, y_predicted)`` frames and returns a float.
    random_state : int or None, default=None
        Seeds the default candidates (their weights and minibatches); given
        candidates keep their own ``random_state``.
    seasonal_period : int or None, default=None
        Observations per cycle when the data have a fixed season (12 for
        monthly data with a yearly cycle, 4 for quarterly, 7 for daily data
        with a weekly one): the default candidates then include
        :class:`SeasonalNaiveForecaster` with that period, without and with
        drift. None: no seasonal
        candidate (the neural candidates learn cycles from the data, but a
        fixed calendar season is better given than learned from a few cycles).
    covariates : list of str or int, str or None, default=None
        Columns of X that are time-varying known inputs: set on every
        candidate (see Notes).
    static_covariates : list of str or int, str or None, default=None
        Columns of X that are per-series constants: set on every candidate.
    verbose : int, default=0
        Print one line per candidate when positive.

    Attributes
    ----------
    best_estimator_ : estimator
        The winner, refitted on all the data.
    best_name_ : str
        Its name in the leaderboard.
    best_params_ : dict
        Its parameters (``get_params(deep=False)``).
    best_score_ : float
        Its mean backtest error.
    baseline_score_ : float
        The naive forecaster's mean backtest error.
    leaderboard_ : DataFrame
        One row per candidate, best first: ``candidate``, ``estimator`` (the
        class), ``mean_error``, ``std_error`` (over folds), ``n_folds``
        (folds scored), ``mean_fit_time`` (seconds per fold fit),
        ``total_time``, ``status`` (``"ok"``, ``"failed"`` or
        ``"skipped"``) and ``note`` (the error of a failed candidate, why one
        was skipped). Candidates not scored on every fold rank last.
    cv_results_ : dict of ndarray
        The same per candidate in scikit-learn's layout: ``candidate``,
        ``params``, ``split<k>_test_error``, ``mean_test_error``,
        ``std_test_error``, ``mean_fit_time``, ``rank_test_error``,
        ``status``.
    horizon_ : int, float or Timedelta
        The horizon used (``horizon`` resolved).
    n_splits_ : int
        Number of backtest folds.
    search_time_ : float
        Seconds the backtest took.

    Notes
    -----
    Forecast intervals of a deterministic winner: when its own fit leaves
    it without a conformal calibration (one series, which cannot be held out
    whole), it is calibrated on its backtest forecasts, which are out of
    sample, so ``predict_interval`` works on a single long series. With few
    folds there are few residuals: ``n_splits * horizon`` per variable bound
    the coverage it can give.

    With ``covariates`` (or ``static_covariates``), every candidate is set
    to read those columns as known inputs, the naive ones included (they
    then leave them out of the forecast); a candidate without such a
    parameter is skipped, with the reason on the leaderboard. Queries to
    ``predict`` then carry the future inputs, as for the candidates.

    An ``AutoForecaster`` pickles (with ``pickle`` or ``joblib``); the
    winner alone can be written with ``best_estimator_.save(path)``.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import AutoForecaster, LastValueForecaster, NeuralODE
    >>> t = np.arange(60.0)
    >>> X = np.sin(0.3 * t)[:, None]  # one series
    >>> auto = AutoForecaster(horizon=5, candidates=[NeuralODE(max_epochs=2, random_state=0)], cv=2,
    ...                       time_budget=60).fit(X)
    >>> list(auto.leaderboard_["candidate"]) in (["NeuralODE", "last_value"], ["last_value", "NeuralODE"])
    True
    >>> auto.predict(X, t=[60.0, 61.0]).shape
    (2, 1)
    """

    def __init__(
        self,
        horizon: Any = None,
        candidates: Any = None,
        time_budget: float = 300.0,
        cv: Any = 3,
        metric: Any = "mse",
        random_state: Any = None,
        seasonal_period: int | None = None,
        covariates: Any = None,
        static_covariates: Any = None,
        verbose: int = 0,
    ):
        self.covariates = covariates
        self.static_covariates = static_covariates
        self.horizon = horizon
        self.candidates = candidates
        self.time_budget = time_budget
        self.cv = cv
        self.metric = metric
        self.random_state = random_state
        self.seasonal_period = seasonal_period
        self.verbose = verbose

    # ------------------------------------------------------------ candidates
    @staticmethod
    def default_candidates(horizon: Any = None, random_state: Any = None,
                           seasonal_period: int | None = None) -> dict[str, Any]:
        """The candidates ``fit`` backtests when ``candidates=None``.

        - ``last_value``: :class:`LastValueForecaster`;
        - ``node_delay``: NeuralODE, 2 × 32 tanh, two hidden dimensions
          started from delay coordinates, rollouts trained to cover ``horizon``;
        - ``node_encoder``: the same with four hidden dimensions inferred by a
          GRU over the history (``hidden_init="encoder"``);
        - ``odernn``: ODERNN trained to extrapolate (``task="extrapolation"``);
        - ``neural_sde``: NeuralSDE, 2 × 32, drift and diffusion on the state;
        - ``seasonal_naive`` and ``seasonal_naive_drift``:
          :class:`SeasonalNaiveForecaster` with ``seasonal_period``, without
          and with ``drift`` (a trend on top of the season), when that is
          given.

        Neural candidates train at most 150 epochs with early stopping.

        Parameters
        ----------
        horizon : float, timedelta or None, default=None
            The span forecasts are wanted for, in the units of the data's
            times (a timedelta for datetimes): NeuralODE's ``horizon``.
        random_state : int or None, default=None
            Seed of every neural candidate.
        seasonal_period : int or None, default=None
            Observations per cycle of a fixed season, for the seasonal naive candidate.

        Returns
        -------
        dict of str to estimator
        """
        from .estimators import ODERNN, NeuralODE, NeuralSDE

        common = dict(max_epochs=150, patience=15, random_state=random_state)
        seasonal = {} if seasonal_period is None else {
            "seasonal_naive": SeasonalNaiveForecaster(seasonal_period),
            "seasonal_naive_drift": SeasonalNaiveForecaster(seasonal_period, drift=True),
        }
        return {**seasonal,
            BASELINE_NAME: LastValueForecaster(),
            "node_delay": NeuralODE(hidden_layer_sizes=(32, 32), augment_dim=2, hidden_init="delay",
                                    horizon=horizon, **common),
            "node_encoder": NeuralODE(hidden_layer_sizes=(32, 32), augment_dim=4, hidden_init="encoder",
                                      horizon=horizon, **common),
            "odernn": ODERNN(task="extrapolation", hidden_dim=16, **common),
            "neural_sde": NeuralSDE(hidden_layer_sizes=(32, 32), **common),
        }

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> AutoForecaster:
        """Backtest the candidates on X, pick the one with the lowest horizon error and refit it on all of X.

        Parameters
        ----------
        X : DataFrame, Series, ndarray or list of ndarray
            One long series or a panel: a long frame (``series_id``,
            ``time`` and one column per variable, or a ``(series, time)``
            MultiIndex), a time-indexed frame or Series (one series), an
            array ``(n_times, n_features)`` (one series) or ``(n_series,
            n_times, n_features)``, or a list of ``(n_times_i, n_features)``
            arrays.
        y : None
            Ignored.
        t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``; None for frames.

        Returns
        -------
        self

        Raises
        ------
        InputError
            For invalid parameters or data, or data too short for the folds.
        TrainingError
            If every candidate failed on the backtest (the message lists
            their errors) or every ranked one failed to refit.
        """
        started = time.perf_counter()
        self._check_params()
        data = _as_input(X)
        check_series(data, t)  # refuses empty, sparse, complex and malformed input with an InputError up front
        frame = _as_frame(data, t, None)
        rows = row_times(frame)
        horizon = self._resolved_horizon(rows)
        splitter = SeriesTimeSplit(n_splits=int(self.cv), horizon=horizon) if _is_int(self.cv) else self.cv
        folds = list(splitter.split(frame))
        candidates = self._candidate_list(_horizon_span(rows, parse_length(horizon, "horizon", rows.kind)))

        candidates, blind = self._with_inputs(candidates)
        records = [self._backtest(name, estimator, frame, folds, horizon, started) for name, estimator in candidates]
        records += blind
        self.search_time_ = time.perf_counter() - started
        self.horizon_ = horizon
        self.n_splits_ = len(folds)
        self.cv_results_ = _cv_results(records, len(folds))
        self.leaderboard_ = _leaderboard(records)
        ranked = [r for r in _ranked(records) if r["status"] == OK]
        if not ranked:
            failures = "; ".join(f"{r['name']}: {r['note']}" for r in records)
            raise TrainingError(
                f"candidates: expected at least one candidate to forecast every backtest fold; got none ({failures}). "
                "Check the data (every fold's past needs a few observations of every variable), lower the horizon "
                "or the number of folds, or pass candidates that suit the data."
            )
        baseline = next(r for r in records if r["is_baseline"])
        self.baseline_score_ = baseline["mean"]
        self._refit_best(ranked, baseline, data, t, horizon)
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.best_estimator_, name):
                setattr(self, name, getattr(self.best_estimator_, name))
            else:
                self.__dict__.pop(name, None)
        return self

    def _check_params(self) -> None:
        if self.horizon is not None:
            check_length(self.horizon, "horizon")
        budget = self.time_budget
        if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, Real) or not budget > 0:
            raise input_error("time_budget", "a positive number of seconds", repr(budget), "Pass e.g. time_budget=300.")
        if _is_int(self.cv):
            if self.cv < 1:
                raise input_error("cv", "an int >= 1 or a cross-validator", repr(self.cv), "Pass e.g. cv=3.")
        elif isinstance(self.cv, str) or not callable(getattr(self.cv, "split", None)):
            raise input_error("cv", "an int >= 1 or a cross-validator with split(X)", f"{type(self.cv).__name__}",
                              "Pass e.g. cv=3 or SeriesTimeSplit(n_splits=3, horizon=...).")
        period = self.seasonal_period
        if period is not None and (isinstance(period, (bool, np.bool_)) or not isinstance(period, Integral)
                                   or period < 2):
            raise input_error("seasonal_period", "None or an int of at least 2 (observations per cycle)",
                              repr(period), "Pass e.g. seasonal_period=12 for monthly data with a yearly cycle.")
        if not (callable(self.metric) or self.metric in ERROR_METRICS):
            raise input_error("metric", f"one of {list(ERROR_METRICS)} or a callable error (lower is better)",
                              repr(self.metric), "Pass e.g. metric='mse'.")

    def _resolved_horizon(self, rows: Any) -> Any:
        if self.horizon is not None:
            parse_length(self.horizon, "horizon", rows.kind)  # a float for datetimes is refused here
            return self.horizon
        counts = np.bincount(rows.series)
        order = np.lexsort((rows.clock, rows.series))
        clock = rows.clock[order]
        if len(counts) == 1 or (np.all(counts == counts[0]) and np.all(clock.reshape(len(counts), -1) == clock[:counts[0]])):
            return max(1, round(0.2 * float(np.median(counts))))
        # Series on their own times: a span, so that every fold's cut has series on both sides of it.
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        durations = clock[starts + counts - 1].astype(float) - clock[starts].astype(float)
        span = 0.2 * float(np.median(durations))
        return span if rows.kind == "float" else pd.Timedelta(round(span), unit="ns")

    def _candidate_list(self, span: Any) -> list[tuple[str, Any]]:
        given = self.candidates
        if given is None:
            return list(self.default_candidates(span, self.random_state, self.seasonal_period).items())
        if isinstance(given, dict) and len(given):
            pairs = list(given.items())
        elif isinstance(given, (list, tuple)) and len(given):
            if all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in given):
                pairs = list(given)
            else:
                pairs = _named_by_class(given)
        else:
            raise input_error("candidates", "None, a dict {name: estimator} or a non-empty list of estimators",
                              repr(given)[:80], "Pass e.g. candidates=[NeuralODE(max_epochs=50)].")
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise input_error("candidates", "distinct non-empty names", repr(names), "Give each candidate its own name.")
        for name, estimator in pairs:
            if not (callable(getattr(estimator, "fit", None)) and callable(getattr(estimator, "predict", None))
                    and callable(getattr(estimator, "get_params", None))):
                raise input_error(f"candidates[{name!r}]", "an estimator with fit, predict and get_params",
                                  f"{type(estimator).__name__}", "Pass dynlearn forecasters such as NeuralODE().")
        if not any(_is_naive(estimator) for _, estimator in pairs):
            pairs.insert(0, (BASELINE_NAME if BASELINE_NAME not in names else "LastValueForecaster",
                             LastValueForecaster()))
        # The naive candidates (last value, then seasonal) go first: they train nothing and are always backtested.
        pairs.sort(key=lambda pair: (not _is_naive(pair[1]), not isinstance(pair[1], LastValueForecaster)))
        return pairs

    def _with_inputs(self, pairs: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
        """The candidates set to read ``covariates`` / ``static_covariates``, and skipped records for those that cannot.

        A candidate without those parameters would forecast the inputs as
        states, so it is left out, with the reason on the leaderboard.
        """
        given = {name: value for name, value in (("covariates", self.covariates),
                                                 ("static_covariates", self.static_covariates)) if value is not None}
        if not given:
            return pairs, []
        kept, blind = [], []
        for name, estimator in pairs:
            params = estimator.get_params(deep=False)
            if all(key in params for key in given):
                kept.append((name, clone(estimator).set_params(**given)))
            else:
                missing = [key for key in given if key not in params]
                blind.append(dict(name=name, estimator=estimator, is_baseline=False, errors=[], fit_times=[],
                                  status=SKIPPED, note=f"takes no {' or '.join(missing)}: it would forecast the "
                                  "inputs as states", fold_models=[], total_time=0.0, mean=np.nan))
        return kept, blind

    # -------------------------------------------------------------- backtest
    def _backtest(self, name: str, estimator: Any, frame: pd.DataFrame, folds: list[Any], horizon: Any,
                  started: float) -> dict[str, Any]:
        is_baseline = _is_naive(estimator)
        record = dict(name=name, estimator=estimator, is_baseline=is_baseline, errors=[], fit_times=[],
                      status=OK, note="", fold_models=[])
        begun = time.perf_counter()
        for k, (train, test) in enumerate(folds):
            if not isinstance(estimator, LastValueForecaster) and time.perf_counter() - started >= self.time_budget:
                record["status"] = SKIPPED
                record["note"] = (f"time budget of {self.time_budget:g} s spent before fold {k + 1} of {len(folds)}"
                                  if k else f"time budget of {self.time_budget:g} s spent before it started")
                break
            model = clone(estimator)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a candidate's training warnings are not the search's
                    tick = time.perf_counter()
                    model.fit(frame.iloc[train])
                    record["fit_times"].append(time.perf_counter() - tick)
                    error = float(forecast_score(model, frame.iloc[test], horizon, metric=self.metric))
            except Exception as failure:  # any candidate's failure is recorded, not raised
                record["status"] = FAILED
                record["note"] = f"fold {k + 1}: {type(failure).__name__}: {_first_line(failure)}"
                break
            if not np.isfinite(error):
                record["status"] = FAILED
                record["note"] = f"fold {k + 1}: non-finite forecast error {error}"
                break
            record["errors"].append(error)
            record["fold_models"].append((model, frame.iloc[test]))
        record["total_time"] = time.perf_counter() - begun
        record["mean"] = float(np.mean(record["errors"])) if record["errors"] and record["status"] == OK else np.nan
        if self.verbose:
            print(f"[AutoForecaster] {name}: {record['status']} mean error {record['mean']:.4g} "
                  f"({record['total_time']:.1f} s){' - ' + record['note'] if record['note'] else ''}")
        return record

    def _refit_best(self, ranked: list[dict[str, Any]], baseline: dict[str, Any], data: Any, t: Any,
                    horizon: Any) -> None:
        # A model must beat the naive forecast strictly; otherwise the naive one is the answer.
        order = [r for r in ranked if r["is_baseline"] or r["mean"] < baseline["mean"]]
        problems = []
        for record in order:
            model = clone(record["estimator"])
            try:
                model.fit(data) if t is None else model.fit(data, t=t)  # candidates need not take t
            except Exception as failure:
                problems.append(f"{record['name']}: {type(failure).__name__}: {_first_line(failure)}")
                self.leaderboard_.loc[self.leaderboard_["candidate"] == record["name"], "note"] = (
                    f"refit on all data failed: {_first_line(failure)}")
                continue
            if isinstance(model, ConformalIntervals) and not hasattr(model, "conformal_residuals_"):
                _calibrate_on_backtest(model, record["fold_models"], horizon)
            self.best_estimator_ = model
            self.best_name_ = record["name"]
            self.best_params_ = model.get_params(deep=False)
            self.best_score_ = record["mean"]
            return
        raise TrainingError(f"candidates: expected the best candidates to refit on all the data; got failures "
                            f"({'; '.join(problems)}). Pass candidates that suit the data.")

    # ------------------------------------------------------------ delegation
    def predict(self, X: Any, t: Any = None, **kwargs: Any) -> Any:
        """The winner's forecast: ``best_estimator_.predict(X, t, **kwargs)``.

        Parameters
        ----------
        X : DataFrame, Series, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times (see the winner's ``predict``).
        **kwargs
            Passed on (e.g. ``X_t``, the times of an array X).
        """
        return self._best().predict(_as_input(X), t, **kwargs)

    @available_if(lambda self: hasattr(self._best(), "predict_interval"))
    def predict_interval(self, X: Any, t: Any = None, coverage: float = 0.9, **kwargs: Any) -> Any:
        """The winner's central forecast intervals: ``(lower, upper)`` in the kind of X."""
        return self._best().predict_interval(_as_input(X), t, coverage, **kwargs)

    @available_if(lambda self: hasattr(self._best(), "predict_quantiles"))
    def predict_quantiles(self, X: Any, t: Any = None, quantiles: Any = (0.05, 0.95), **kwargs: Any) -> Any:
        """The winner's forecast quantiles, with a leading quantile axis or level."""
        return self._best().predict_quantiles(_as_input(X), t, quantiles, **kwargs)

    @available_if(lambda self: hasattr(self._best(), "sample"))
    def sample(self, X: Any, t: Any = None, n_samples: int = 100, random_state: Any = None, **kwargs: Any) -> Any:
        """Draws from the winner's predictive distribution (a winner that samples only)."""
        return self._best().sample(_as_input(X), t, n_samples, random_state, **kwargs)

    @available_if(lambda self: hasattr(self._best(), "calibrate"))
    def calibrate(self, X: Any, **kwargs: Any) -> AutoForecaster:
        """Recalibrate the winner's conformal intervals on series it was not trained on."""
        self._best().calibrate(_as_input(X), **kwargs)
        return self

    def score(self, X: Any, y: Any = None, *, t: Any = None, horizon: Any = None) -> float:
        """The winner's ``score``: R² of one-step predictions, or of forecasts of the last ``horizon``."""
        return self._best().score(_as_input(X), t=t, horizon=horizon)

    def _best(self) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = True
        return tags


# ---------------------------------------------------------------- helpers
def _is_naive(estimator: Any) -> bool:
    """The last-value baseline itself (a seasonal naive forecaster is a candidate like any model)."""
    return type(estimator) is LastValueForecaster


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _as_input(X: Any) -> Any:
    """A Series becomes a one-series frame indexed by time; everything else goes on as it is."""
    if isinstance(X, pd.Series):
        return X.to_frame(name=X.name if X.name is not None else "value")
    return X


def _horizon_span(rows: Any, length: Any) -> Any:
    """The horizon as a span of time (a float, or a Timedelta for datetimes): NeuralODE's ``horizon``."""
    if length.is_steps:
        order = np.lexsort((rows.clock, rows.series))
        clock, series = rows.clock[order].astype(float), rows.series[order]
        gaps = np.diff(clock)[series[1:] == series[:-1]]
        gaps = gaps[gaps > 0]
        if len(gaps) == 0:
            return None
        span = length.steps * float(np.median(gaps))
    else:
        span = float(length.span)
    return span if rows.kind == "float" else pd.Timedelta(int(round(span)), unit="ns").to_pytimedelta()


def _named_by_class(estimators: Any) -> list[tuple[str, Any]]:
    counts: dict[str, int] = {}
    for estimator in estimators:
        counts[type(estimator).__name__] = counts.get(type(estimator).__name__, 0) + 1
    seen: dict[str, int] = {}
    pairs = []
    for estimator in estimators:
        name = type(estimator).__name__
        seen[name] = seen.get(name, 0) + 1
        pairs.append((name if counts[name] == 1 else f"{name}_{seen[name]}", estimator))
    return pairs


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _ranked(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scored candidates by mean error (the naive one first on a tie), then the rest in their order."""
    scored = sorted((r for r in records if r["status"] == OK), key=lambda r: (r["mean"], not r["is_baseline"]))
    return scored + [r for r in records if r["status"] != OK]


def _leaderboard(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in _ranked(records):
        errors = r["errors"]
        rows.append({
            "candidate": r["name"],
            "estimator": type(r["estimator"]).__name__,
            "mean_error": r["mean"],
            "std_error": float(np.std(errors)) if errors and r["status"] == OK else np.nan,
            "n_folds": len(errors),
            "mean_fit_time": float(np.mean(r["fit_times"])) if r["fit_times"] else np.nan,
            "total_time": r["total_time"],
            "status": r["status"],
            "note": r["note"],
        })
    return pd.DataFrame(rows)


def _cv_results(records: list[dict[str, Any]], n_splits: int) -> dict[str, np.ndarray]:
    means = np.array([r["mean"] for r in records], dtype=float)
    ranks = np.full(len(records), len(records), dtype=int)
    for position, record in enumerate(_ranked(records)):
        if record["status"] == OK:
            ranks[records.index(record)] = position + 1
    results: dict[str, np.ndarray] = {
        "candidate": np.array([r["name"] for r in records], dtype=object),
        "params": np.array([r["estimator"].get_params(deep=False) for r in records], dtype=object),
    }
    for k in range(n_splits):
        results[f"split{k}_test_error"] = np.array(
            [r["errors"][k] if k < len(r["errors"]) else np.nan for r in records], dtype=float)
    results["mean_test_error"] = means
    results["std_test_error"] = np.array(
        [np.std(r["errors"]) if r["status"] == OK else np.nan for r in records], dtype=float)
    results["mean_fit_time"] = np.array(
        [np.mean(r["fit_times"]) if r["fit_times"] else np.nan for r in records], dtype=float)
    results["rank_test_error"] = ranks
    results["status"] = np.array([r["status"] for r in records], dtype=object)
    return results


def _calibrate_on_backtest(model: Any, fold_models: list[tuple[Any, pd.DataFrame]], horizon: Any) -> None:
    """Conformal calibration of ``model`` from the out-of-sample forecasts of its backtest folds.

    Each fold's model forecast the fold's future from the history before the
    cut; the absolute residuals and their lead times (query time minus the
    latest earlier observation, on the model clock) are what ``calibrate``
    would record on held-out series.
    """
    leads, residuals = [], []
    for fold_model, test in fold_models:
        history, truth, query, _ = _cut_for_forecast(test, horizon, fold_model)
        predicted = fold_model.predict(history, t=query)
        batch = fold_model._check_input(history)
        queries = check_query_times(query, batch)
        row_leads = lead_times(batch, queries)[queries.mask][queries.rows]
        features = frame_feature_columns(history)
        truth_values = truth[features].to_numpy(dtype=float, na_value=np.nan)
        leads.append(row_leads)
        residuals.append(np.abs(truth_values - predicted[features].to_numpy(dtype=float)))
    if leads:
        model._store_calibration(np.concatenate(leads), np.concatenate(residuals))

