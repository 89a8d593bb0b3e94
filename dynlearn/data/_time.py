"""Turning user times (floats, datetimes, timedeltas) into float clocks and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import input_error

_SECOND = pd.Timedelta(seconds=1)
_NS_PER_SECOND = 1e9
_UNITS = ("s", "ms", "us", "ns")
# Every integer up to this magnitude is a float64; past it integer times are counted from an origin.
_EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class TimeEncoding:
    """How user times map to the float clock models integrate on.

    ``kind`` is ``"float"`` (used as given), ``"datetime"`` (seconds since
    ``origin``) or ``"timedelta"`` (seconds). The encoding found at ``fit`` is
    reused for every later call, so a forecast asked for in datetimes comes
    back on the same clock. Integer times beyond 2^53, which float64 cannot
    hold exactly (nanoseconds since the epoch, say), are counted from their
    earliest value at ``fit`` (``origin``, an int) in integer arithmetic, so
    distinct times stay distinct and come back exactly.

    ``dtype`` is the dtype of the times seen at ``fit`` and ``resolution``
    the coarsest of ``"s"``, ``"ms"``, ``"us"``, ``"ns"`` in which they were
    all whole. The float clock carries about 16 significant digits, so
    decoded times are rounded to that resolution and come back with that
    dtype (integers stay integers): a round trip returns exactly the times
    the user passed. Times that are not whole in it, such as finer query
    times, come back at nanosecond resolution, or as floats.
    """

    kind: str = "float"
    origin: Any = None
    dtype: Any = None
    resolution: str | None = None

    def encode(self, values: Any, argument: str) -> np.ndarray:
        """Float clock of ``values`` (any shape), in seconds for datetimes and timedeltas.

        Raises
        ------
        InputError
            If ``values`` are of another kind, or another time-zone awareness,
            than the times this encoding was made from.
        """
        kind = time_kind(values)
        if kind != self.kind:
            raise input_error(
                argument,
                f"{self.kind} times, like the data the estimator was fitted on",
                f"{kind} times",
                f"Pass {self.kind} times or refit on data with {kind} times.",
            )
        if kind == "float":
            if self.origin is None:
                return np.asarray(values, dtype=np.float64)
            values = np.asarray(values)
            if np.issubdtype(values.dtype, np.integer):  # in int64, before the cast rounds them
                return (values.astype(np.int64) - np.int64(self.origin)).astype(np.float64)
            return np.asarray(values, dtype=np.float64) - float(self.origin)
        shape = np.shape(values)
        if kind == "timedelta":
            return np.asarray(_timedelta_index(values) / _SECOND, dtype=np.float64).reshape(shape)
        stamps = _datetime_index(values)
        if (stamps.tz is None) != (self.origin.tz is None):
            raise input_error(
                argument,
                "datetimes with the same time-zone awareness as at fit "
                f"({'naive' if self.origin.tz is None else str(self.origin.tz)})",
                f"{'naive' if stamps.tz is None else str(stamps.tz)} datetimes",
                "Convert with .dt.tz_localize / .dt.tz_convert before calling.",
            )
        return np.asarray((stamps - self.origin) / _SECOND, dtype=np.float64).reshape(shape)

    def decode(self, clock: np.ndarray) -> Any:
        """User times for a 1-D float ``clock``: an ndarray, DatetimeIndex or TimedeltaIndex."""
        clock = np.asarray(clock, dtype=np.float64)
        if self.kind == "float":
            decoded = _decode_numbers(clock, self.dtype)
            if self.origin is None:
                return decoded
            if np.issubdtype(decoded.dtype, np.integer):
                return (decoded.astype(np.int64) + np.int64(self.origin)).astype(self.dtype)
            return decoded + float(self.origin)
        delta = _decode_timedeltas(clock, self.resolution, _unit(self.dtype))
        if self.kind == "timedelta":
            return delta
        return self.origin + delta


def _datetime_index(values: Any) -> pd.DatetimeIndex:
    # Series and Index keep their time zone when converted directly; going
    # through np.ravel would turn tz-aware stamps into slow Python objects.
    if isinstance(values, (pd.Series, pd.Index)):
        return pd.DatetimeIndex(values)
    return pd.DatetimeIndex(np.ravel(values))


def _timedelta_index(values: Any) -> pd.TimedeltaIndex:
    if isinstance(values, (pd.Series, pd.Index)):
        return pd.TimedeltaIndex(values)
    return pd.TimedeltaIndex(pd.to_timedelta(np.ravel(values)))


def _unit(dtype: Any) -> str | None:
    """``"s"``, ``"ms"``, ``"us"`` or ``"ns"`` for a datetime or timedelta dtype; None if unknown."""
    if dtype is None:
        return None
    unit = getattr(dtype, "unit", None)  # tz-aware DatetimeTZDtype
    return unit if unit is not None else np.datetime_data(np.dtype(dtype))[0]


def _coarsest_whole_unit(times: pd.DatetimeIndex | pd.TimedeltaIndex) -> str:
    """The coarsest unit, no finer than the dtype's, in which every time is a whole number."""
    ticks = times.asi8[~times.isna()]
    finest = _UNITS.index(times.unit)
    for coarser, unit in enumerate(_UNITS[:finest]):
        if np.all(ticks % 10 ** (3 * (finest - coarser)) == 0):
            return unit
    return times.unit


def _rounding_tolerance(clock: np.ndarray) -> np.ndarray:
    # A float clock holds about 16 significant digits, so a time that was a
    # whole number of units can come back a few units in the last place off.
    return 8 * np.finfo(np.float64).eps * np.maximum(np.abs(clock), 1.0)


def _decode_numbers(clock: np.ndarray, dtype: Any) -> np.ndarray:
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
        return clock
    whole = np.round(clock)
    if np.all(np.abs(clock - whole) <= _rounding_tolerance(clock)):
        return whole.astype(dtype)
    return clock


def _decode_timedeltas(clock: np.ndarray, resolution: str | None, unit: str | None) -> pd.TimedeltaIndex:
    clock = clock.ravel()
    delta = pd.TimedeltaIndex(pd.to_timedelta(np.round(clock * _NS_PER_SECOND).astype(np.int64), unit="ns"))
    if resolution is None or unit is None:
        return delta
    tolerance = np.maximum(_rounding_tolerance(clock) * _NS_PER_SECOND, 1.0)
    for target in (resolution, unit):
        rounded = delta.round(target)
        if np.all(np.abs((rounded - delta) / pd.Timedelta(1, unit="ns")) <= tolerance):
            # Whole in a unit no finer than the dtype's: the cast loses nothing.
            return rounded.as_unit(unit)
    return delta


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
    if kind == "datetime":
        stamps = _datetime_index(values)
        return TimeEncoding("datetime", stamps.min(), stamps.dtype, _coarsest_whole_unit(stamps))
    if kind == "timedelta":
        deltas = _timedelta_index(values)
        return TimeEncoding("timedelta", dtype=deltas.dtype, resolution=_coarsest_whole_unit(deltas))
    dtype = getattr(values, "dtype", None)
    if dtype is None or not pd.api.types.is_integer_dtype(dtype):
        return TimeEncoding("float")
    dtype = np.dtype(dtype) if isinstance(dtype, np.dtype) else np.int64
    ticks = np.asarray(values, dtype=np.int64).ravel() if len(values) else np.zeros(0, np.int64)
    if len(ticks) and max(abs(int(ticks.min())), abs(int(ticks.max()))) > _EXACT_INTEGERS:
        return TimeEncoding("float", origin=int(ticks.min()), dtype=dtype)
    return TimeEncoding("float", dtype=dtype)
