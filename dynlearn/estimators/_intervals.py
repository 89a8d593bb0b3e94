"""Forecast intervals: one API over native predictive distributions and split conformal prediction.

Every forecasting estimator answers ``predict_quantiles`` and
``predict_interval`` through :class:`ForecastIntervals`; a model supplies
``_quantile_batch``. Models with a predictive distribution (NeuralSDE,
LatentSDE, LatentODE) read its quantiles; deterministic models inherit
:class:`ConformalIntervals`, which wraps their point forecasts in split
conformal intervals calibrated per lead time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from numbers import Integral, Real
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.utils.validation import check_is_fitted

from .._backtest import parse_length
from .._compat import available_if
from .._random import stream_seed
from ..data import QueryTimes, SeriesBatch, check_query_times, to_user_kind
from ..exceptions import IntegrationError, input_error
from ..metrics import QUANTILE_LEVEL
from ._base import _sampling_seed, _under_thread_budget

# Draws per query behind the quantiles of a model that samples, when ``n_samples`` is None.
DEFAULT_INTERVAL_SAMPLES = 200
# Forecast origins per series when fit calibrates on the held-out validation series.
FIT_ORIGINS = 5
# Lead-time bins of a calibration: at most this many, each with at least this many residuals.
MAX_LEAD_BINS = 10
MIN_BIN_RESIDUALS = 30
# The fitted attributes a calibration sets (and a fit without held-out series removes).
CONFORMAL_ATTRIBUTES = ("conformal_leads_", "conformal_residuals_", "conformal_lead_edges_")


def _forecasts(estimator: Any) -> bool:
    """Intervals are for forecasters: a per-series classifier built on a forecaster does not offer them."""
    return not is_classifier(estimator)


def _forecasting_method(method: Callable[..., Any], name: str) -> Any:
    """Public method ``name`` running ``method`` under the thread budget; classifiers lack it (``hasattr`` False).

    The base class wraps plain public functions in the budget when a class
    is made; a descriptor escapes that, so it is wrapped here, once.
    """
    method.__name__, method.__qualname__ = name, method.__qualname__.replace(method.__name__, name)
    return available_if(_forecasts)(_under_thread_budget(method))


def _check_levels(quantiles: Any) -> np.ndarray:
    try:
        levels = np.asarray(quantiles, dtype=float).ravel()
    except (TypeError, ValueError):
        levels = np.asarray([np.nan])
    if levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise input_error("quantiles", "levels strictly between 0 and 1", repr(quantiles),
                          "Pass e.g. (0.05, 0.95) for a 90% interval.")
    return levels


def _check_coverage(coverage: Any) -> float:
    if isinstance(coverage, (bool, np.bool_)) or not isinstance(coverage, Real) or not 0 < coverage < 1:
        raise input_error("coverage", "a float strictly between 0 and 1", repr(coverage),
                          "Pass e.g. coverage=0.9 for a central 90% interval.")
    return float(coverage)


def check_n_samples(n_samples: Any, default: int = DEFAULT_INTERVAL_SAMPLES) -> int:
    """``n_samples`` as a positive int (``default`` for None)."""
    if n_samples is None:
        return default
    if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
        raise input_error("n_samples", "a positive int or None", repr(n_samples), "Pass e.g. n_samples=200.")
    return int(n_samples)


class ForecastIntervals:
    """Mixin of the forecasting estimators: quantiles and central intervals of forecasts, in one format.

    Subclasses implement ``_quantile_batch(batch, query, levels, n_samples,
    random_state)``, returning ``(n_levels, n_series, n_queries,
    n_features)`` in user units, non-decreasing along the level axis for
    increasing levels.
    """

    def _predict_quantiles(self, X: Any, t: Any = None, quantiles: Sequence[float] = (0.05, 0.95), *,
                           n_samples: int | None = None, random_state: Any = None, X_t: Any = None) -> Any:
        """Quantiles of the forecast of each entry at query times.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times, as for ``predict``: shared ``(n_queries,)``, per
            series ``(n_series, n_queries)``, or a frame of (series, time)
            rows. None gives X's own times.
        quantiles : sequence of float in (0, 1), default=(0.05, 0.95)
            Levels, in the order wanted; the default is the central 90%
            interval.
        n_samples : int, default=None
            Draws behind the quantiles of models that sample: LatentODE and
            LatentSDE (None: 200); NeuralSDE (None: Gaussian quantiles of
            its moment propagation, no sampling). Models with conformal
            intervals (NeuralODE, ODERNN, HamiltonianNN, LagrangianNN) take
            none.
        random_state : int, RandomState or None, default=None
            Seeds those draws; None seeds them from the fitted model, so the
            quantiles are repeatable.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``; must be None for a frame.

        Returns
        -------
        Same kind as X with a leading quantile axis
            Arrays ``(n_quantiles, ...)`` (each slice shaped like
            ``predict``'s output); frames: ``predict``'s frame for each
            level, stacked under an outer ``quantile`` index level whose
            values are the levels; a ragged list becomes one list per level.
            Values are in the user's units and, for increasing levels,
            non-decreasing.

        Notes
        -----
        Where the quantiles come from depends on the model: the predictive
        distribution of NeuralSDE, LatentSDE and LatentODE, and split
        conformal prediction for the deterministic models (see
        ``calibrate``), whose level-``p`` quantile is the lower end of the
        central ``1 - 2p`` conformal interval for ``p < 0.5`` and the upper
        end of the central ``2p - 1`` interval for ``p > 0.5``.
        """
        levels = _check_levels(quantiles)
        batch, query = self._interval_input(X, t, X_t)
        values = self._quantile_batch(batch, query, levels, n_samples, random_state)
        return _format_quantiles(values, levels, query, batch)

    def _predict_interval(self, X: Any, t: Any = None, coverage: float = 0.9, *,
                          n_samples: int | None = None, random_state: Any = None, X_t: Any = None) -> Any:
        """Central forecast intervals of each entry at query times.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times, as for ``predict``.
        coverage : float in (0, 1), default=0.9
            Nominal share of observations inside the interval: its ends are
            the ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles.
        n_samples, random_state, X_t :
            As for :meth:`predict_quantiles`.

        Returns
        -------
        lower, upper : same kind as X
            Each shaped exactly like ``predict``'s output (frames keep the
            order and index of a query frame), in the user's units, with
            ``lower <= upper`` everywhere. They go straight into
            :func:`dynlearn.metrics.interval_coverage` and
            :func:`dynlearn.metrics.interval_score`.

        Raises
        ------
        NotFittedError
            If a model with conformal intervals was never calibrated (call
            ``calibrate``).
        """
        coverage = _check_coverage(coverage)
        levels = np.array([(1 - coverage) / 2, (1 + coverage) / 2])
        batch, query = self._interval_input(X, t, X_t)
        values = self._quantile_batch(batch, query, levels, n_samples, random_state)
        lower, upper = np.minimum(values[0], values[1]), np.maximum(values[0], values[1])
        return to_user_kind(lower, query, batch), to_user_kind(upper, query, batch)

    def _interval_input(self, X: Any, t: Any, X_t: Any) -> tuple[SeriesBatch, QueryTimes]:
        batch = self._check_input(X, X_t, time_argument="X_t")
        return batch, check_query_times(t, batch)

    def _quantile_batch(self, batch: SeriesBatch, query: QueryTimes, levels: np.ndarray, n_samples: Any,
                        random_state: Any) -> np.ndarray:
        raise NotImplementedError

    def _interval_seed(self, random_state: Any) -> int:
        """The base seed of one interval call: from ``random_state``, or the fitted model's "intervals" stream when
        it is None (repeatable intervals)."""
        return stream_seed(self._seed, "intervals") if random_state is None else _sampling_seed(random_state)

    predict_quantiles = _forecasting_method(_predict_quantiles, "predict_quantiles")
    predict_interval = _forecasting_method(_predict_interval, "predict_interval")


def _format_quantiles(values: np.ndarray, levels: np.ndarray, query: QueryTimes, batch: SeriesBatch) -> Any:
    """``(n_levels, n_series, n_queries, n_features)`` in the kind of X, with a leading quantile axis or level."""
    if not batch.spec.is_frame:
        return to_user_kind(values, query, batch)
    frames = [to_user_kind(v, query, batch) for v in values]
    return pd.concat(frames, keys=list(levels), names=[QUANTILE_LEVEL])


def sample_quantiles(draws: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Empirical quantiles ``(n_levels, ...)`` of ``draws`` ``(n_samples, ...)``."""
    return np.quantile(draws, levels, axis=0)


# ---------------------------------------------------------------- conformal
class ConformalIntervals(ForecastIntervals):
    """Split conformal forecast intervals, per lead time, for deterministic forecasters.

    Intervals are the point forecast plus or minus a per-feature radius: the
    conformal quantile of absolute forecast residuals on calibration series
    the model was not trained on, at the query's lead time (time since the
    series' latest observation strictly before the query). The calibration
    comes from ``fit`` (the held-out validation series) or from
    :meth:`calibrate`; see there.

    Attributes
    ----------
    conformal_leads_ : ndarray of shape (n_residuals,)
        Lead time of each calibration residual, on the model's float clock
        (seconds for datetime or timedelta times), sorted.
    conformal_residuals_ : ndarray of shape (n_residuals, n_features)
        Absolute forecast residuals in user units; NaN where the entry was
        not observed.
    conformal_lead_edges_ : ndarray of shape (n_bins,)
        Largest lead of each lead-time bin.

    References
    ----------
    Vovk, V., Gammerman, A. & Shafer, G. (2005). Algorithmic Learning in a
    Random World. Springer.
    Stankeviciute, K., Alaa, A. M. & van der Schaar, M. (2021). Conformal
    time-series forecasting. NeurIPS 34.
    """

    def _calibrate(self, X: Any, *, horizon: Any = None, X_t: Any = None, n_origins: int = 5) -> Any:
        """Calibrate the conformal forecast intervals on series the model was not trained on.

        Each series of X is cut at ``n_origins`` forecast origins (observed
        rows spread evenly from its second observed row to its
        second-to-last); the model forecasts, from the history up to each
        origin, the observed rows after it up to ``horizon``, exactly as
        ``predict`` would, and the absolute residuals are recorded per
        feature with their lead times (query time minus origin time). This
        replaces any earlier calibration, including the one ``fit`` makes.

        Split conformal prediction (Vovk et al. 2005), per lead time as in
        Stankeviciute et al. (2021): residuals are grouped into up to 10
        bins of lead time with at least 30 residuals each; a central
        ``coverage`` interval is the forecast plus or minus, per feature,
        the ``ceil((n + 1) * coverage)``-th smallest of the ``n`` residuals
        of the query's bin, interpolated linearly in lead time between the
        bins' median leads (constant before the first and after the last).
        If the calibration series and the series forecast later are
        exchangeable, each interval covers at least ``coverage`` of
        observations at that lead time, on average over series.

        ``fit`` calibrates itself the same way, with ``horizon=None`` and 5
        origins, on the series that ``validation_fraction`` holds out (when
        there are enough series to hold whole series out); otherwise it
        leaves the model uncalibrated and ``predict_interval`` asks for this
        method.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Calibration series, in any accepted kind, not used to train the
            model (residuals on training series are too small, and the
            intervals too narrow). Each needs at least three observed rows.
        horizon : int, float, Timedelta or str, default=None
            The longest lead to calibrate: an int number of observations
            after each origin, or a span of time (float for float times,
            Timedelta or string such as ``"2h"`` for datetimes). None: to
            each series' end. Queries further ahead than the longest
            calibrated lead are refused by ``predict_interval``.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``; must be None for a frame.
        n_origins : int, default=5
            Forecast origins per series.

        Returns
        -------
        self
            With ``conformal_leads_``, ``conformal_residuals_`` and
            ``conformal_lead_edges_`` set (see the class's Attributes);
            ``save`` and pickling keep them.
        """
        check_is_fitted(self, self._fitted_attribute)
        if isinstance(n_origins, bool) or not isinstance(n_origins, Integral) or n_origins < 1:
            raise input_error("n_origins", "a positive int", repr(n_origins), "Pass e.g. n_origins=5.")
        batch = self._check_input(X, X_t, time_argument="X_t")
        length = None if horizon is None else parse_length(horizon, "horizon", batch.spec.time_encoding.kind)
        span = None
        if length is not None and not length.is_steps:
            span = float(length.span) / (1e9 if batch.spec.time_encoding.kind != "float" else 1.0)
        leads, residuals = self._forecast_residuals(batch, None if length is None else length.steps, span,
                                                    int(n_origins))
        if len(leads) == 0:
            raise input_error("X", "calibration series with at least three observed rows each", "none",
                              "Pass longer series (or more of them).")
        self._store_calibration(leads, residuals)
        return self

    calibrate = _forecasting_method(_calibrate, "calibrate")

    def _after_fit(self) -> None:
        """Calibrate on the series fit held out for validation; without any, leave the model uncalibrated."""
        for name in CONFORMAL_ATTRIBUTES:
            self.__dict__.pop(name, None)
        batch, held = self.__dict__.get("_fit_batch"), self.__dict__.get("_held_series")
        if batch is None or held is None or len(held) == 0:
            return
        try:
            leads, residuals = self._forecast_residuals(batch.subset(np.sort(held)), None, None, FIT_ORIGINS)
        except IntegrationError as error:
            # The fit itself succeeded; a model that cannot forecast its held-out series is left uncalibrated.
            warnings.warn(
                f"{type(self).__name__} could not forecast its held-out validation series to calibrate its "
                f"forecast intervals ({error}); call calibrate(X_calibration) on other series to get them.",
                UserWarning,
                stacklevel=3,
            )
            return
        if len(leads):
            self._store_calibration(leads, residuals)

    def _store_calibration(self, leads: np.ndarray, residuals: np.ndarray) -> None:
        order = np.argsort(leads, kind="stable")
        self.conformal_leads_ = leads[order]
        self.conformal_residuals_ = residuals[order]
        self.conformal_lead_edges_ = _lead_bins(self.conformal_leads_)

    def _forecast_residuals(self, batch: SeriesBatch, steps: int | None, span: float | None,
                            n_origins: int) -> tuple[np.ndarray, np.ndarray]:
        """Leads ``(n,)`` and absolute residuals ``(n, n_features)`` of forecasts from cut series."""
        observed = batch.mask.any(-1) & batch.row_mask
        cuts = []
        for i in range(batch.n_series):
            rows = np.flatnonzero(observed[i])
            if len(rows) < 3:
                continue
            candidates = rows[1:-1]
            picks = np.unique(np.linspace(0, len(candidates) - 1, min(n_origins, len(candidates))).round())
            for origin in candidates[picks.astype(int)]:
                future = rows[rows > origin]
                if steps is not None:
                    future = future[:steps]
                if span is not None:
                    gap = batch.times[i, future] - batch.times[i, origin]
                    future = future[gap <= span * (1 + 1e-12) + 1e-12]
                if len(future):
                    cuts.append((i, int(origin), future))
        if not cuts:
            return np.empty(0), np.empty((0, batch.n_features))
        history, query = _cut_batch(batch, cuts)
        predicted = self._predict_batch(history, query)
        leads, residuals = [], []
        for e, (i, origin, future) in enumerate(cuts):
            true = np.where(batch.mask[i, future], batch.values[i, future], np.nan)
            residuals.append(np.abs(true - predicted[e, : len(future)]))
            leads.append(batch.times[i, future] - batch.times[i, origin])
        return np.concatenate(leads), np.concatenate(residuals)

    def _quantile_batch(self, batch: SeriesBatch, query: QueryTimes, levels: np.ndarray, n_samples: Any,
                        random_state: Any) -> np.ndarray:
        if n_samples is not None:
            raise input_error("n_samples", f"None for {type(self).__name__}, whose intervals are conformal",
                              repr(n_samples), "Drop n_samples; the intervals come from calibration residuals.")
        self._check_calibrated()
        point = self._predict_batch(batch, query)
        leads = lead_times(batch, query)
        self._check_leads(leads, query, batch.spec.time_encoding.kind)
        out = np.empty((len(levels),) + point.shape)
        for k, level in enumerate(levels):
            if level == 0.5:
                out[k] = point
                continue
            radius = self._conformal_radius(leads.ravel(), abs(2 * level - 1)).reshape(point.shape)
            out[k] = point - radius if level < 0.5 else point + radius
        return out

    def _check_calibrated(self) -> None:
        check_is_fitted(self, self._fitted_attribute)
        if not hasattr(self, "conformal_residuals_"):
            raise input_error(
                "calibration",
                f"a calibrated {type(self).__name__} (conformal forecast intervals need residuals on held-out "
                "series)",
                "a model fitted without held-out series in memory (validation_fraction=0, too few series to "
                "hold whole series out, or a Parquet stream, whose held-out series are not kept) and never "
                "calibrated",
                "Call calibrate(X_calibration) on series in memory the model was not trained on, or fit in "
                "memory with validation_fraction > 0 on enough series.",
            )

    def _check_leads(self, leads: np.ndarray, query: QueryTimes, kind: str) -> None:
        longest = float(self.conformal_leads_[-1])
        beyond = (leads > longest * (1 + 1e-9) + 1e-12) & query.mask
        if beyond.any():
            raise input_error(
                "t",
                f"queries at most {_describe_lead(longest, kind)} after each series' latest earlier observation "
                "(the longest lead the conformal calibration covers)",
                f"{int(beyond.sum())} queries up to {_describe_lead(float(leads[beyond].max()), kind)} ahead",
                "Call calibrate(X_calibration, horizon=...) with series and a horizon that reach as far, or "
                "forecast less far ahead.",
            )

    def _conformal_radius(self, leads: np.ndarray, coverage: float) -> np.ndarray:
        """Per-feature interval half-widths ``(n_leads, n_features)`` at ``coverage``."""
        edges = self.conformal_lead_edges_
        bins = np.searchsorted(edges, self.conformal_leads_, side="left")
        centers = np.empty(len(edges))
        radii = np.empty((len(edges), self.conformal_residuals_.shape[1]))
        for b in range(len(edges)):
            members = bins == b
            centers[b] = np.median(self.conformal_leads_[members])
            for j in range(radii.shape[1]):
                radii[b, j] = _conformal_quantile(self.conformal_residuals_[members, j], coverage, edges, b)
        return np.stack([np.interp(leads, centers, radii[:, j]) for j in range(radii.shape[1])], axis=-1)


def _describe_lead(lead: float, kind: str) -> str:
    """A lead on the float clock as the user would write it: a number, or a Timedelta for datetimes."""
    return f"{lead:g}" if kind == "float" else str(pd.to_timedelta(round(lead * 1e9), unit="ns"))


def _conformal_quantile(residuals: np.ndarray, coverage: float, edges: np.ndarray, b: int) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest of the ``n`` observed residuals (finite-sample correction)."""
    residuals = np.sort(residuals[np.isfinite(residuals)])
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage - 1e-9)
    if rank > n:
        low = 0.0 if b == 0 else float(edges[b - 1])
        raise input_error(
            "coverage",
            f"a coverage that {n} calibration residuals can give (at most {n / (n + 1):.3f} for the leads "
            f"({low:g}, {float(edges[b]):g}])",
            repr(coverage),
            "Lower the coverage, or call calibrate on more (or longer) series.",
        )
    return float(residuals[rank - 1])


def _lead_bins(leads: np.ndarray) -> np.ndarray:
    """Largest lead of each bin: up to ``MAX_LEAD_BINS`` bins of sorted ``leads``, equal leads never split."""
    n = len(leads)
    n_bins = max(1, min(MAX_LEAD_BINS, n // MIN_BIN_RESIDUALS))
    ends = np.searchsorted(leads, leads[(np.arange(1, n_bins) * n) // n_bins], side="right")
    ends = np.unique(np.append(ends, n))
    kept, start = [], 0
    for end in ends:  # merge a bin too small (equal leads can crowd a cut) into the one after it
        if end - start >= MIN_BIN_RESIDUALS or end == n:
            kept.append(end)
            start = end
    if len(kept) > 1 and kept[-1] - kept[-2] < MIN_BIN_RESIDUALS:
        kept.pop(-2)  # and a small last bin into the one before
    return leads[np.asarray(kept) - 1]


def lead_times(batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
    """Time ``(n_series, n_queries)`` from each series' latest observed row strictly before each query (0: none)."""
    observed = batch.mask.any(-1) & batch.row_mask
    leads = np.zeros(query.times.shape)
    for i in range(batch.n_series):
        seen = batch.times[i, observed[i]]
        if len(seen) == 0:
            continue
        before = np.searchsorted(seen, query.times[i], side="left") - 1
        leads[i] = np.where(before >= 0, query.times[i] - seen[np.clip(before, 0, None)], 0.0)
    return leads


def _cut_batch(batch: SeriesBatch, cuts: list[tuple[int, int, np.ndarray]]) -> tuple[SeriesBatch, QueryTimes]:
    """Histories (rows up to each origin) and query times (the future rows) of ``(series, origin, future)`` cuts."""
    width = max(origin for _, origin, _ in cuts) + 1
    n_queries = max(len(future) for _, _, future in cuts)
    values = np.zeros((len(cuts), width, batch.n_features))
    mask = np.zeros((len(cuts), width, batch.n_features), dtype=bool)
    times = np.empty((len(cuts), width))
    q_times = np.empty((len(cuts), n_queries))
    q_mask = np.zeros((len(cuts), n_queries), dtype=bool)
    for e, (i, origin, future) in enumerate(cuts):
        n = origin + 1
        values[e, :n], mask[e, :n] = batch.values[i, :n], batch.mask[i, :n]
        times[e, :n], times[e, n:] = batch.times[i, :n], batch.times[i, origin]
        q_times[e, : len(future)], q_times[e, len(future):] = batch.times[i, future], batch.times[i, future[-1]]
        q_mask[e, : len(future)] = True
    lengths = np.array([origin + 1 for _, origin, _ in cuts])
    inputs = q_inputs = None
    if batch.inputs is not None:  # known inputs travel with the history and the query rows
        inputs = np.stack([batch.inputs[i, np.minimum(np.arange(width), origin)] for i, origin, _ in cuts])
        padded = [np.concatenate([future, np.repeat(future[-1:], n_queries - len(future))]) for _, _, future in cuts]
        q_inputs = np.stack([batch.inputs[i, rows] for (i, _, _), rows in zip(cuts, padded)])
    history = replace(batch, values=values, mask=mask, times=times, lengths=lengths,
                      ids=np.arange(len(cuts)), inputs=inputs, source_rows=None, source_index=None)
    return history, QueryTimes(times=q_times, mask=q_mask, inputs=q_inputs)
