"""Turning user times (floats, datetimes, timedeltas) into float clocks and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import input_error

_SECOND = pd.Timedelta(seconds=1)


@dataclass(frozen=True)
class TimeEncoding:
    """How user times map to the float clock models integrate on.

    ``kind`` is ``"float"`` (used as given), ``"datetime"`` (seconds since
    ``origin``) or ``"timedelta"`` (seconds). The encoding found at ``fit`` is
    reused for every later call, so a forecast asked for in datetimes comes
    back on the same clock.
    """

    kind: str = "float"
    origin: Any = None

    def encode(self, values: Any, argument: str) -> np.ndarray:
        kind = time_kind(values)
        if kind != self.kind:
            raise input_error(
                argument,
                f"{self.kind} times, like the data the estimator was fitted on",
                f"{kind} times",
                f"Pass {self.kind} times or refit on data with {kind} times.",
            )
        if kind == "float":
            return np.asarray(values, dtype=np.float64)
        if kind == "timedelta":
            return np.asarray(pd.to_timedelta(np.ravel(values)) / _SECOND, dtype=np.float64).reshape(np.shape(values))
        stamps = pd.DatetimeIndex(np.ravel(values))
        if (stamps.tz is None) != (self.origin.tz is None):
            raise input_error(
                argument,
                "datetimes with the same time-zone awareness as at fit "
                f"({'naive' if self.origin.tz is None else str(self.origin.tz)})",
                f"{'naive' if stamps.tz is None else str(stamps.tz)} datetimes",
                "Convert with .dt.tz_localize / .dt.tz_convert before calling.",
            )
        seconds = np.asarray((stamps - self.origin) / _SECOND, dtype=np.float64)
        return seconds.reshape(np.shape(values))

    def decode(self, clock: np.ndarray) -> Any:
        clock = np.asarray(clock, dtype=np.float64)
        if self.kind == "float":
            return clock
        delta = pd.to_timedelta(np.round(clock.ravel() * 1e9).astype("int64"), unit="ns")
        if self.kind == "timedelta":
            return pd.TimedeltaIndex(delta)
        return self.origin + delta


def time_kind(values: Any) -> str:
    """``"datetime"``, ``"timedelta"`` or ``"float"`` for an array-like of times."""
    if isinstance(values, (pd.Series, pd.Index)):
        dtype = values.dtype
    else:
        values = np.asarray(values)
        dtype = values.dtype
        if dtype == object and values.size:
            first = values.ravel()[0]
            if isinstance(first, (pd.Timestamp, np.datetime64)) or hasattr(first, "tzinfo"):
                return "datetime"
            if isinstance(first, (pd.Timedelta, np.timedelta64)):
                return "timedelta"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    return "float"


def encoding_for(values: Any) -> TimeEncoding:
    """The encoding a first look at ``values`` calls for (origin = earliest time)."""
    kind = time_kind(values)
    if kind != "datetime":
        return TimeEncoding(kind)
    stamps = pd.DatetimeIndex(np.ravel(values))
    return TimeEncoding("datetime", stamps.min())
