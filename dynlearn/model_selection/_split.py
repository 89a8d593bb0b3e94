"""Expanding-window backtest splits of long frames in time."""

from __future__ import annotations

from numbers import Integral
from typing import Any, Iterator

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator

from .._backtest import (
    Length,
    RowTimes,
    describe_length,
    describe_time,
    parse_length,
    row_times,
    span_cut,
    within_series_position,
)
from ..exceptions import input_error


class SeriesTimeSplit(BaseCrossValidator):
    """Expanding-window backtest folds in time over every series of a long frame.

    Fold ``k`` has a cut time ``c_k`` (the forecast origin). Its training part
    is every row, of every series, at or before ``c_k`` (less ``gap``): whole
    beginnings of series, never a series' middle. Its test part is, for each
    series with something to forecast, its rows up to ``c_k`` (the history a
    forecaster conditions on) followed by the next ``horizon``. Cuts move
    forward by one ``horizon`` per fold, so the test futures are consecutive
    and the last one ends at the last time in X; training parts grow.

    Indices are positions of rows of X, which is how scikit-learn's
    ``cross_validate`` and ``GridSearchCV`` index frames, so a long frame
    passes through them as it is. Score folds with
    :func:`dynlearn.metrics.make_forecast_scorer` and the same ``horizon``:
    on each test part it cuts exactly at ``c_k``.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds.
    horizon : int, float, Timedelta or str
        Length of each fold's future:

        - an int: the next ``horizon`` observations of each series after the
          cut. A series with fewer is left out of that fold's test part.
        - a float (numeric times) or a Timedelta / string such as ``"2h"``
          (datetime or timedelta times): the span ``(c_k, c_k + horizon]``.
          Fold ends ``c_k + horizon`` are observed times, so the scorer's cut
          (the latest time minus ``horizon``) falls exactly on ``c_k``.
          A series with no row in the span is left out of that fold's test part.

        Cuts are chosen on the union of all series' times (one clock for the
        panel, as forecasts issued at one moment); with an int horizon they
        are ``horizon`` distinct times of that union apart, which suits series
        sharing their times. For series each with its own irregular times,
        give a span: an int would step through the union of everyone's times
        and leave most series too few observations after some cuts.
    min_train : int, float, Timedelta or str, default=None
        Smallest training part: an int counts distinct times, a span is
        measured from the earliest time. None: two distinct times. Too many
        folds for it raise an error saying how many fit.
    gap : int, float, Timedelta or str, default=0
        Distinct times (an int) or a span left out between the end of the
        training part and the cut; they stay in the test history, so the
        forecast still starts from the latest data.

    Notes
    -----
    Rows, not series, are indexed, so a 3-D array (rows are series) cannot
    be split in time: pass a long frame. A 2-D array is one series observed
    at ``0, 1, ..., n_times - 1``; the prefixes the folds take keep those times.

    Examples
    --------
    >>> from dynlearn.datasets import make_damped_oscillator
    >>> from dynlearn.model_selection import SeriesTimeSplit
    >>> frame = make_damped_oscillator(n_series=3, n_times=20, random_state=0)
    >>> folds = list(SeriesTimeSplit(n_splits=3, horizon=4).split(frame))
    >>> [(len(train), len(test)) for train, test in folds]
    [(24, 36), (36, 48), (48, 60)]
    """

    def __init__(self, n_splits: int = 5, *, horizon: Any, min_train: Any = None, gap: Any = 0):
        self.n_splits = n_splits
        self.horizon = horizon
        self.min_train = min_train
        self.gap = gap

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds, ``n_splits``."""
        return self._checked_n_splits()

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Positions of the training and test rows of each fold, earliest cut first.

        Parameters
        ----------
        X : DataFrame or ndarray of shape (n_times, n_features)
            A long frame (a ``(series, time)`` MultiIndex or ``series_id`` and
            ``time`` columns), a time-indexed frame (one series), or one
            series as a 2-D array.
        y, groups : ignored
            Not used; present for scikit-learn's splitter API.

        Yields
        ------
        train, test : ndarray of int
            Row positions, in X's row order.
        """
        rows = _rows_of(X)
        n_splits = self._checked_n_splits()
        horizon = parse_length(self.horizon, "horizon", rows.kind)
        gap = parse_length(self.gap, "gap", rows.kind, allow_zero=True)
        min_train = Length(steps=2) if self.min_train is None else parse_length(self.min_train, "min_train", rows.kind)
        times = np.unique(rows.clock)
        cuts, ends = _cuts(times, horizon)
        train_ends = [_train_end(times, cut, gap) for cut in cuts]
        possible = sum(_long_enough(times, end, min_train) for end in train_ends)
        if possible < n_splits:
            minimum = describe_length(rows, min_train).replace("observation", "distinct time")
            raise input_error(
                "n_splits",
                f"at most {possible} fold(s) of {describe_length(rows, horizon)} after a training part of at least "
                f"{minimum} in X's {len(times)} distinct times",
                repr(n_splits),
                "Lower n_splits, horizon, gap or min_train, or pass longer series.",
            )
        position, count = within_series_position(rows)
        for cut, end, train_end in list(zip(cuts, ends, train_ends))[-n_splits:]:
            train = np.flatnonzero(rows.clock <= train_end)
            test = _test_rows(rows, position, count, cut, end, horizon)
            if len(test) == 0:
                raise input_error("X", f"a series with history and a future around the cut {describe_time(rows, cut)}",
                                  "none", "Pass series that overlap in time, or a longer horizon.")
            yield train, test

    def _checked_n_splits(self) -> int:
        if isinstance(self.n_splits, (bool, np.bool_)) or not isinstance(self.n_splits, Integral) or self.n_splits < 1:
            raise input_error("n_splits", "an int >= 1", repr(self.n_splits), "Pass e.g. n_splits=5.")
        return int(self.n_splits)


def _rows_of(X: Any) -> RowTimes:
    if isinstance(X, pd.DataFrame):
        if len(X) == 0:
            raise input_error("X", "at least one row", "an empty DataFrame", "Pass data with observations.")
        return row_times(X)
    if isinstance(X, (list, tuple)) or np.ndim(X) != 2:
        shape = f"a list of {len(X)} series" if isinstance(X, (list, tuple)) else f"an array of shape {np.shape(X)}"
        raise input_error(
            "X",
            "a long DataFrame (a (series, time) MultiIndex or 'series_id' and 'time' columns), a time-indexed "
            "DataFrame or one series as an array (n_times, n_features)",
            f"{shape}, whose rows are series and cannot be split in time",
            "Pass a long frame, e.g. pd.DataFrame with columns series_id, time and the variables.",
        )
    return row_times(np.asarray(X))


def _cuts(times: np.ndarray, horizon: Length) -> tuple[list[Any], list[Any]]:
    """Every (cut, end) pair, latest last, stepping back one horizon at a time from the last time."""
    cuts: list[Any] = []
    ends: list[Any] = []
    last = len(times) - 1
    while True:
        if horizon.is_steps:
            if last - horizon.steps < 0:
                break
            cut, end = times[last - horizon.steps], times[last]
            last -= horizon.steps
        else:
            end = times[last]
            cut = span_cut(end, horizon.span)
            if cut < times[0]:
                break
            last = int(np.searchsorted(times, cut, side="right")) - 1
        cuts.insert(0, cut)
        ends.insert(0, end)
    return cuts, ends


def _train_end(times: np.ndarray, cut: Any, gap: Length) -> Any:
    if gap.is_steps:
        index = int(np.searchsorted(times, cut, side="right")) - 1 - gap.steps
        return times[index] if index >= 0 else None
    return cut - gap.span


def _long_enough(times: np.ndarray, train_end: Any, min_train: Length) -> bool:
    if train_end is None or train_end < times[0]:
        return False
    if min_train.is_steps:
        return int(np.searchsorted(times, train_end, side="right")) >= min_train.steps
    return train_end - times[0] >= min_train.span


def _test_rows(
    rows: RowTimes, position: np.ndarray, count: np.ndarray, cut: Any, end: Any, horizon: Length
) -> np.ndarray:
    """Rows up to ``cut`` and the next horizon, of the series that have both."""
    before = rows.clock <= cut
    n_before = np.bincount(rows.series, weights=before, minlength=rows.n_series).astype(np.int64)[rows.series]
    if horizon.is_steps:
        ahead = (position >= n_before) & (position < n_before + horizon.steps)
        enough = n_before + horizon.steps <= count
    else:
        ahead = ~before & (rows.clock <= end)
        enough = np.bincount(rows.series, weights=ahead, minlength=rows.n_series)[rows.series] > 0
    return np.flatnonzero((before | ahead) & enough & (n_before > 0))
