"""Reading horizons and row times: what backtest scorers and splitters share.

A backtest cuts each series into a history (what a forecaster may see) and a
future (what it is scored on). Both the forecast scorer in
:mod:`dynlearn.metrics` and :class:`dynlearn.model_selection.SeriesTimeSplit`
read lengths of series and row times here, so that a fold's cut and the
scorer's cut fall on exactly the same time.

Times are compared on an exact clock: float times as floats, datetimes and
timedeltas as integer nanoseconds (no origin, no rounding), so a row exactly
at a cut lands on the same side wherever the cut is computed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from .data import ID_COLUMN, TIME_COLUMN, as_time_values
from .exceptions import input_error

_LENGTH_HELP = (
    "an int number of final observations, a positive float span in the data's time units, "
    "or a pandas Timedelta (or a string such as '2h') for datetime or timedelta times"
)


@dataclass(frozen=True)
class Length:
    """A stretch of series: ``steps`` observations or a ``span`` of time on the row clock."""

    steps: int | None = None
    span: Any = None

    @property
    def is_steps(self) -> bool:
        return self.steps is not None


def parse_length(value: Any, argument: str, kind: str, *, allow_zero: bool = False) -> Length:
    """Read ``value`` as a count of observations (an int) or a span of time.

    Parameters
    ----------
    value : int, float, Timedelta, timedelta, numpy timedelta64 or str
        An int is a number of observations; a float is a span in the data's
        time units (float times only); a Timedelta or string such as
        ``"2h"`` is a span for datetime or timedelta times.
    argument : str
        Name used in error messages.
    kind : {"float", "datetime", "timedelta"}
        The kind of the data's times.
    allow_zero : bool, default=False
        Accept a length of zero (a gap).
    """
    smallest = "non-negative" if allow_zero else "positive"
    if isinstance(value, (bool, np.bool_)):
        raise input_error(argument, _LENGTH_HELP, repr(value), "Pass a number of observations or a span of time.")
    if isinstance(value, Integral):
        if value < 0 or (value == 0 and not allow_zero):
            raise input_error(argument, f"a {smallest} number of observations", repr(int(value)), "Pass e.g. 3.")
        return Length(steps=int(value))
    if isinstance(value, Real):
        if kind != "float":
            raise input_error(
                argument,
                f"a Timedelta span for {kind} times (or an int number of observations)",
                f"the float {float(value)!r}",
                "Pass e.g. pd.Timedelta('2h') or '2h'.",
            )
        span = float(value)
        if not np.isfinite(span) or span < 0 or (span == 0 and not allow_zero):
            raise input_error(argument, f"a {smallest} finite span of time", repr(span), "Pass e.g. 2.5.")
        return Length(span=span)
    if isinstance(value, (str, pd.Timedelta, datetime.timedelta, np.timedelta64)):
        try:
            delta = pd.Timedelta(value)
        except (TypeError, ValueError):
            raise input_error(argument, _LENGTH_HELP, repr(value), "Pass e.g. '2h' or pd.Timedelta(days=3).") from None
        if kind == "float":
            raise input_error(
                argument,
                "a float span in the data's time units (its times are numbers, not datetimes)",
                f"the Timedelta {delta}",
                "Pass the span as a number, e.g. 2.5, or an int number of observations.",
            )
        if delta is pd.NaT or delta.value < 0 or (delta.value == 0 and not allow_zero):
            raise input_error(argument, f"a {smallest} span of time", str(delta), "Pass e.g. '2h'.")
        return Length(span=int(delta.value))
    raise input_error(argument, _LENGTH_HELP, f"{type(value).__name__} {value!r}", "Pass e.g. 3, 2.5 or '2h'.")


def check_length(value: Any, argument: str, *, allow_zero: bool = False) -> None:
    """Refuse what no kind of times makes a valid length (None, bools, non-positive or unreadable values).

    For checks made before the data, and so its kind of times, is known; a
    float or a span is checked against the kind again when data comes.
    """
    is_float = isinstance(value, Real) and not isinstance(value, Integral)
    parse_length(value, argument, "float" if is_float else "timedelta", allow_zero=allow_zero)


@dataclass(frozen=True)
class RowTimes:
    """Per row of a frame: its series (codes ``0..n_series-1``) and its time on the exact clock."""

    series: np.ndarray
    clock: np.ndarray
    kind: str

    @property
    def n_series(self) -> int:
        return int(self.series.max()) + 1 if len(self.series) else 0


def row_times(X: Any, argument: str = "X") -> RowTimes:
    """Series codes and exact clock of every row of a long or time-indexed frame, or of a 2-D array.

    A 2-D array is one series observed at ``0, 1, ..., n_times - 1``.
    """
    if isinstance(X, pd.DataFrame):
        ids, times = frame_ids_and_times(X, argument)
    else:
        ids, times = np.zeros(len(X), dtype=np.int64), pd.Index(np.arange(len(X), dtype=np.float64))
    codes, _ = pd.factorize(np.asarray(ids), sort=False, use_na_sentinel=True)
    if (codes < 0).any():
        raise input_error(f"{argument} series ids", "no missing series ids", f"{int((codes < 0).sum())} missing",
                          "Drop those rows or give them an id.")
    times = as_time_values(pd.Index(times), f"{argument} times")
    if pd.api.types.is_datetime64_any_dtype(times.dtype):
        kind, stamps = "datetime", pd.DatetimeIndex(times)
    elif pd.api.types.is_timedelta64_dtype(times.dtype):
        kind, stamps = "timedelta", pd.TimedeltaIndex(times)
    else:
        kind, stamps = "float", None
    if stamps is not None:
        if stamps.isna().any():
            raise input_error(f"{argument} times", "no missing times", f"{int(stamps.isna().sum())} NaT",
                              "Drop those rows or fill their times.")
        clock = stamps.as_unit("ns").asi8.copy()
    else:
        clock = np.asarray(times, dtype=np.float64)
        if not np.isfinite(clock).all():
            raise input_error(f"{argument} times", "finite times", "NaN or inf", "Drop those rows or fill their times.")
    return RowTimes(series=codes.astype(np.int64), clock=clock, kind=kind)


def frame_ids_and_times(X: pd.DataFrame, argument: str = "X") -> tuple[Any, Any]:
    """Series ids and times of each row, read as the data layer reads them (one series when there is no id)."""
    if isinstance(X.index, pd.MultiIndex):
        return X.index.get_level_values(0), X.index.get_level_values(1)
    if ID_COLUMN in X.columns:
        if TIME_COLUMN not in X.columns:  # the data layer refuses it too, rather than read row numbers as times
            raise input_error(
                argument,
                f"a '{TIME_COLUMN}' column beside '{ID_COLUMN}'",
                f"columns {list(X.columns)[:10]}",
                f"Rename the column holding observation times to '{TIME_COLUMN}'.",
            )
        return X[ID_COLUMN], X[TIME_COLUMN]
    times = X[TIME_COLUMN] if TIME_COLUMN in X.columns else X.index
    return np.zeros(len(X), dtype=np.int64), times


def frame_feature_columns(X: pd.DataFrame) -> list[Any]:
    """Columns of ``X`` that hold values (not the series id or the time)."""
    if isinstance(X.index, pd.MultiIndex):
        return list(X.columns)
    return [c for c in X.columns if c not in (ID_COLUMN, TIME_COLUMN)]


def within_series_position(rows: RowTimes) -> tuple[np.ndarray, np.ndarray]:
    """Each row's rank in time within its series (0 = earliest) and its series' number of rows."""
    order = np.lexsort((rows.clock, rows.series))
    counts = np.bincount(rows.series, minlength=rows.n_series)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order)) - starts[rows.series[order]]
    return position, counts[rows.series]


def describe_time(rows: RowTimes, clock: Any) -> str:
    """A clock value as the user would write it, for messages."""
    if rows.kind == "datetime":
        return str(pd.Timestamp(int(clock)))
    if rows.kind == "timedelta":
        return str(pd.Timedelta(int(clock)))
    return repr(float(clock))


def describe_length(rows: RowTimes, length: Length) -> str:
    if length.is_steps:
        return f"{length.steps} observation(s)"
    if rows.kind == "float":
        return f"a span of {length.span!r}"
    return f"a span of {pd.Timedelta(int(length.span))}"


def future_rows(rows: RowTimes, horizon: Length) -> np.ndarray:
    """Rows in the future of a cut: each series' last ``steps`` rows, or the rows after ``latest time - span``.

    A span is measured back from the latest time of all series together, so
    every series is cut at the same moment (one forecast origin).
    """
    if horizon.is_steps:
        position, count = within_series_position(rows)
        return position >= count - horizon.steps
    return rows.clock > span_cut(rows.clock.max(), horizon.span)


def span_cut(end: Any, span: Any) -> Any:
    """The cut ``end - span``; on a float clock, times within rounding of it count as at or before it.

    ``10 * 0.1`` and ``1.0`` differ in the last bit, so on float times a row
    on a grid point one horizon before ``end`` would otherwise fall on
    either side of the cut by chance.
    """
    if isinstance(end, (int, np.integer)):
        return end - span
    return end - span + 1e-9 * max(abs(float(end)), abs(float(span)))
