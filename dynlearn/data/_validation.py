"""The one entry point through which data reaches an estimator."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..exceptions import input_error
from ._container import (
    ARRAY,
    FRAME,
    ID_COLUMN,
    LONG,
    MULTIINDEX,
    PANEL,
    RAGGED,
    TIME_COLUMN,
    InputSpec,
    QueryTimes,
    SeriesBatch,
)
from ._inputs import only_static, own_inputs, query_inputs, refuse_array_queries, static_query_inputs
from ._time import TimeEncoding, encoding_for, time_kind

_ACCEPTED = (
    f"a DataFrame indexed by (series, time), a DataFrame with '{ID_COLUMN}' and "
    f"'{TIME_COLUMN}' columns, a time-indexed DataFrame, an array of shape "
    "(n_series, n_times, n_features) or (n_times, n_features), or a list of "
    "(n_times_i, n_features) arrays"
)


def check_series(
    X: Any,
    t: Any = None,
    *,
    reference: InputSpec | None = None,
    argument: str = "X",
    owner: str | None = None,
    time_argument: str = "t",
    need_times: bool = False,
) -> SeriesBatch:
    """Validate user series of any accepted kind and return a :class:`SeriesBatch`.

    Parameters
    ----------
    X : DataFrame, ndarray or list of ndarray
        The series; see the table of accepted inputs in the README.
    t : array-like or list of array-like, default=None
        Observation times for array inputs: shared ``(n_times,)`` or per
        series ``(n_series, n_times)``; a list of 1-D arrays for a ragged
        list. Defaults to ``0, 1, ..., n_times - 1``. Must be None for frames,
        which carry their own times.
    reference : InputSpec, default=None
        The spec seen at ``fit``; when given, the feature count and names and
        the kind of times must match it, and its time encoding is reused.
    argument : str, default="X"
        Name used in error messages.
    owner : str, default=None
        Name of the estimator asking, for error messages.
    time_argument : str, default="t"
        Name of the argument that carries ``t``, for error messages (``"X_t"``
        where a method's ``t`` means query times).
    need_times : bool, default=False
        Refuse an array or list given without ``t`` when ``reference`` was
        made from other times than the default ``0, 1, ..., n_times - 1``
        (explicit times, or a frame): its rows would be read at times they
        were not observed at. Models whose outputs depend on the times set it.

    Returns
    -------
    SeriesBatch
    """
    encoding = reference.time_encoding if reference is not None else None
    if need_times and t is None and reference is not None and not isinstance(X, (pd.DataFrame, pd.Series)):
        _check_default_times(reference, argument, time_argument)
    if isinstance(X, pd.DataFrame):
        if t is not None:
            raise input_error(
                time_argument,
                f"None when {argument} is a DataFrame (frames carry their own times)",
                f"{type(t).__name__}",
                f"Put the times in {argument}'s index or its 'time' column and drop {time_argument}.",
            )
        batch = _from_frame(X, encoding, argument, reference)
    elif isinstance(X, pd.Series):
        raise input_error(
            argument,
            _ACCEPTED,
            "a pandas Series",
            f"Use {argument}.to_frame() for a single variable.",
        )
    elif _is_sparse(X):
        raise input_error(
            argument,
            "dense series",
            f"a sparse {type(X).__name__}; sparse input is not supported",
            f"Convert it with {argument}.toarray() and mark missing entries with NaN.",
        )
    elif isinstance(X, (list, tuple)) and (len(X) == 0 or all(np.ndim(item) == 2 for item in X)):
        batch = _from_list(X, t, encoding, argument, time_argument)
    else:
        # Anything else (including a list of rows) is read as an array, as scikit-learn does.
        batch = _from_array(X, t, encoding, argument, time_argument)
    if reference is not None:
        _check_matches(batch.spec, reference, argument, owner)
    _check_every_series_observed(batch, argument)
    return batch


def _check_default_times(reference: InputSpec, argument: str, time_argument: str) -> None:
    # None: a spec from before this was recorded; the old reading (0, 1, 2, ...) stays.
    if reference.default_times is not False:
        return
    fitted_on = "a DataFrame" if reference.is_frame else "times other than 0, 1, ..., n_times - 1"
    raise input_error(
        time_argument,
        f"the observation times of {argument}'s rows (the estimator was fitted on {fitted_on})",
        "None: the rows would be read at times 0, 1, 2, ...",
        f"Pass {time_argument}= with the same rules as fit's t (shared (n_times,), per series "
        f"(n_series, n_times), or a list of 1-D arrays for a list), or pass {argument} as a DataFrame "
        "that carries its times.",
    )


# --------------------------------------------------------------------- frames
def _from_frame(
    X: pd.DataFrame, encoding: TimeEncoding | None, argument: str, reference: InputSpec | None = None
) -> SeriesBatch:
    if X.shape[0] == 0:
        raise input_error(argument, "at least one row", "an empty DataFrame", "Pass data with observations.")
    if isinstance(X.index, pd.MultiIndex):
        if X.index.nlevels != 2:
            raise input_error(
                f"{argument}.index",
                "a 2-level MultiIndex (series, time)",
                f"{X.index.nlevels} levels {list(X.index.names)}",
                "Reset the extra levels with .reset_index(level=...).",
            )
        ids, times, (id_name, time_name) = _series_and_time_levels(X.index)
        features = X
        kind = MULTIINDEX
        time_in_column = False
    elif ID_COLUMN in X.columns:
        if TIME_COLUMN not in X.columns:
            raise input_error(
                argument,
                f"a '{TIME_COLUMN}' column beside '{ID_COLUMN}'",
                f"columns {list(X.columns)[:10]}",
                f"Rename the column holding observation times to '{TIME_COLUMN}'.",
            )
        ids = X[ID_COLUMN]
        times = X[TIME_COLUMN]
        id_name, time_name = ID_COLUMN, TIME_COLUMN
        features = X.drop(columns=[ID_COLUMN, TIME_COLUMN])
        kind = LONG
        time_in_column = True
    else:
        # Columns fit already took as measured variables are not second-guessed later.
        known = set(reference.feature_names or ()) if reference is not None else set()
        time_in_column = TIME_COLUMN in X.columns
        if not time_in_column:
            _check_time_identified(X, known, argument)
        times = X[TIME_COLUMN] if time_in_column else X.index
        ids = np.zeros(len(X), dtype=np.int64)
        id_name, time_name = None, TIME_COLUMN if time_in_column else X.index.name
        features = X.drop(columns=[TIME_COLUMN]) if time_in_column else X
        kind = FRAME
    names, values = _numeric_features(features, argument)
    times = as_time_values(times, f"{argument} times")
    if encoding is None:
        encoding = encoding_for(times)
    clock = encoding.encode(times, f"{argument} times")
    _check_finite_times(clock, f"{argument} times")
    if kind == FRAME:
        _check_no_id_column(features, clock, known, argument)
    spec = InputSpec(
        kind=kind,
        n_features=values.shape[1],
        feature_names=names,
        id_name=id_name,
        time_name=time_name,
        time_in_column=time_in_column,
        time_encoding=encoding,
        column_labels=tuple(features.columns),
        default_times=False,
    )
    return replace(_pack_long(np.asarray(ids), clock, values, spec, argument), source_index=X.index)


def _series_and_time_levels(index: pd.MultiIndex) -> tuple[pd.Index, pd.Index, tuple[Any, Any]]:
    """A (series, time) MultiIndex's ids, times and those two level names: levels named as dynlearn names them
    (``time``, ``series_id``) are read by name, in either order; any other names by position (series, time)."""
    order = (1, 0) if list(index.names) == [TIME_COLUMN, ID_COLUMN] else (0, 1)
    return (index.get_level_values(order[0]), index.get_level_values(order[1]),
            (index.names[order[0]], index.names[order[1]]))


# Words that name a time or an id column, compared with the lower-case words of a column name.
_TIME_WORDS = frozenset({"time", "times", "date", "dates", "year", "years", "timestamp", "datetime", "month", "day"})
_TIME_NAMES = _TIME_WORDS | {"t", "ts"}
_ID_WORDS = frozenset(
    {"id", "ids", "series", "unit", "subject", "patient", "individual", "entity", "station", "sensor"}
)


def _name_words(name: Any) -> list[str]:
    """Lower-case words of a column name: ``"patientId"`` and ``"patient_id"`` give ``["patient", "id"]``."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [word for word in re.split(r"[^0-9a-zA-Z]+", text.lower()) if word]


def _index_is_row_numbers(index: pd.Index) -> bool:
    """An unnamed integer index: row labels, not observation times."""
    return index.name is None and pd.api.types.is_integer_dtype(index.dtype)


def _time_candidates(X: pd.DataFrame, known: set[str]) -> list[Any]:
    """Columns that look like observation times: datetime-like dtype, or a time-like name."""
    found = []
    for column, dtype in X.dtypes.items():
        if str(column) in known:
            continue
        datetime_like = pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)
        named = str(column).lower() in _TIME_NAMES or bool(_TIME_WORDS.intersection(_name_words(column)))
        if datetime_like or named:
            found.append(column)
    return found


def _check_time_identified(X: pd.DataFrame, known: set[str], argument: str) -> None:
    """Refuse a one-series frame whose times would be its row numbers while a column looks like the times."""
    if not _index_is_row_numbers(X.index):
        return
    candidates = _time_candidates(X, known)
    if candidates:
        first = candidates[0]
        raise input_error(
            argument,
            f"the observation times in a '{TIME_COLUMN}' column or as the index",
            f"no '{TIME_COLUMN}' column and row numbers as the index, beside column(s) {candidates[:10]} that "
            "look like times (read as they are, the row number would be the time and these columns measured "
            "variables)",
            f"Rename the time column, X.rename(columns={{{first!r}: '{TIME_COLUMN}'}}), or make it the index, "
            f"X.set_index({first!r}). If rows are equally spaced and none of these is the time, say so with "
            f"X.assign({TIME_COLUMN}=range(len(X))).",
        )


def _integer_like(values: np.ndarray) -> bool:
    """Whether float ``values`` are all whole numbers (ids are; a missing value rules a column out)."""
    return bool(np.isfinite(values).all() and np.all(values == np.round(values)))


def _restarts_at_blocks(values: np.ndarray, clock: np.ndarray) -> bool:
    """Whether ``values`` cut the rows into contiguous blocks, each with rising times, and time restarts between them.

    That is how a panel stacked series after series looks when its series
    column is read as a measured variable; one series, sorted or not, does
    not look like it unless its values change exactly where time goes back.
    """
    change = values[1:] != values[:-1]
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    if len(starts) < 2 or len(np.unique(values[starts])) != len(starts):
        return False
    if np.diff(np.append(starts, len(values))).min() < 2:
        return False
    steps = np.diff(clock)
    return bool(np.all(steps[~change] > 0) and np.all(steps[change] <= 0))


def _check_no_id_column(features: pd.DataFrame, clock: np.ndarray, known: set[str], argument: str) -> None:
    """Refuse an integer column of a one-series frame that reads as a series id."""
    for column, dtype in features.dtypes.items():
        if str(column) in known or not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            continue
        values = features[column].to_numpy(dtype=np.float64, na_value=np.nan)
        if not _integer_like(values):
            continue
        n_ids = len(np.unique(values))
        if n_ids == len(values):
            continue
        named = bool(_ID_WORDS.intersection(_name_words(column)))
        if named or _restarts_at_blocks(values, clock):
            raise input_error(
                argument,
                f"a '{ID_COLUMN}' column (or a (series, time) MultiIndex) for a panel of several series",
                f"no '{ID_COLUMN}' column, and an integer column {column!r} that reads two ways: as series ids "
                f"(a panel of {n_ids} series) or as a measured variable of one series",
                f"If {column!r} names the series, rename it, X.rename(columns={{{column!r}: '{ID_COLUMN}'}}), "
                f"with the times in a '{TIME_COLUMN}' column, or index X by (series, time) with "
                f"X.set_index([{column!r}, <time column>]). If it is a measured variable, give it a name that "
                "does not read as an id.",
            )


def _numeric_features(features: pd.DataFrame, argument: str) -> tuple[tuple[str, ...], np.ndarray]:
    if features.shape[1] == 0:
        raise input_error(
            argument,
            "at least one numeric feature column besides series id and time",
            "no feature columns",
            "Add the measured variables as columns.",
        )
    bad = [
        c
        for c, dtype in features.dtypes.items()
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))
    ]
    if bad:
        raise input_error(
            argument,
            "numeric feature columns",
            f"non-numeric columns {bad[:10]} (dtypes {[str(features[c].dtype) for c in bad[:10]]})",
            "Drop them or encode them as numbers before fitting.",
        )
    complex_columns = [c for c, dtype in features.dtypes.items() if pd.api.types.is_complex_dtype(dtype)]
    if complex_columns:
        raise input_error(
            argument,
            "real-valued feature columns",
            f"complex columns {complex_columns[:10]}",
            "Split real and imaginary parts into separate columns, e.g. X[c].to_numpy().real and .imag.",
        )
    values = features.to_numpy(dtype=np.float64, na_value=np.nan)
    return tuple(str(c) for c in features.columns), values


def as_time_values(times: Any, argument: str) -> Any:
    """Times as :func:`check_series` reads them: numbers, datetimes or timedeltas.

    Date strings become datetimes; strings that read as different valid dates
    day first and month first are refused rather than guessed.

    Parameters
    ----------
    times : pandas.Index, pandas.Series or array-like
        The times; an Index or Series of another dtype is converted or refused.
    argument : str
        How error messages name ``times``.

    Returns
    -------
    pandas.Index, pandas.Series or array-like
        ``times``, with strings parsed as datetimes.

    Raises
    ------
    InputError
        For values that are neither numbers, datetimes, timedeltas nor
        unambiguous date strings, and for booleans.

    Examples
    --------
    >>> import pandas as pd
    >>> from dynlearn.data import as_time_values
    >>> as_time_values(pd.Index(["2024-01-31", "2024-02-29"]), "t")
    DatetimeIndex(['2024-01-31', '2024-02-29'], dtype='datetime64[...]', freq=None)
    """
    if isinstance(times, (pd.Index, pd.Series)):
        dtype = times.dtype
        if not (
            pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_datetime64_any_dtype(dtype)
            or pd.api.types.is_timedelta64_dtype(dtype)
        ):
            converted = _try_datetime(times, argument)
            if converted is None:
                raise input_error(
                    argument,
                    "numbers, datetimes or timedeltas",
                    f"values of dtype {dtype} such as {_plain(np.asarray(times)[:3])}",
                    "Convert them with pd.to_datetime(..., format=...) or astype(float).",
                )
            return converted
        if pd.api.types.is_bool_dtype(dtype):
            raise input_error(argument, "numbers, datetimes or timedeltas", "booleans", "Pass real times.")
    return times


_YEAR_FIRST = re.compile(r"\s*\d{4}\D")


def _try_datetime(times: Any, argument: str) -> Any:
    """Strings parsed as datetimes, or None when they are not datetimes.

    Strings that read as valid, different dates both day first and month
    first ("01/02/2024") are refused rather than guessed; strings that start
    with the year (ISO 8601) read one way only.
    """
    values = np.asarray(times, dtype=object)
    month_first, caught = _parse_dates(values, dayfirst=False)
    day_first, caught_day_first = _parse_dates(values, dayfirst=True)
    if month_first is None:
        caught = caught_day_first
    elif day_first is not None and not _year_first(values) and not month_first.equals(day_first):
        differ = np.flatnonzero(np.asarray((month_first != day_first) & month_first.notna()))[:2]
        examples = [
            f"{values[i]!r} as {day_first[i].date()} (day first) or {month_first[i].date()} (month first)"
            for i in differ
        ]
        raise input_error(
            argument,
            "date strings with one reading",
            f"strings that read as valid dates both day first and month first, e.g. {'; '.join(examples)}",
            "Parse them first with pd.to_datetime(..., dayfirst=True) for day/month/year, or dayfirst=False for "
            "month/day/year (or pass format=...), or write them as ISO dates (2024-02-01).",
        )
    for warning in caught:
        # The order of day and month is settled above; pandas' guess about it is not news.
        if "dayfirst" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return month_first if month_first is not None else day_first


def _parse_dates(values: np.ndarray, dayfirst: bool) -> tuple[pd.DatetimeIndex | None, list[Any]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = pd.DatetimeIndex(pd.to_datetime(values, dayfirst=dayfirst))
        except (TypeError, ValueError, OverflowError):
            # pandas warns about the format before failing; the InputError
            # raised instead says all there is to say.
            return None, []
    if any("Could not infer format" in str(warning.message) for warning in caught):
        # Without one format pandas reads each string on its own and turns almost anything into a
        # date ("t1" becomes the year 1, "t32" the year 2032): such strings are not taken as dates.
        return None, []
    return parsed, list(caught)


def _year_first(values: np.ndarray) -> bool:
    """Whether every string starts with a four-digit year (values that are not strings read one way anyway)."""
    return all(_YEAR_FIRST.match(v) for v in values if isinstance(v, str))


def _plain(values: Any) -> Any:
    """Python scalars for error messages (``1``, not ``np.int64(1)``)."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, np.generic):
        return values.item()
    return values


def _check_finite_times(clock: np.ndarray, argument: str) -> None:
    bad = ~np.isfinite(clock)
    if bad.any():
        raise input_error(
            argument,
            "finite times (no NaN, NaT or inf)",
            f"{int(bad.sum())} non-finite time value(s)",
            "Drop those rows or fill their times.",
        )


def _pack_long(ids: np.ndarray, clock: np.ndarray, values: np.ndarray, spec: InputSpec, argument: str) -> SeriesBatch:
    """Long rows (id, time, features) -> padded arrays, sorted by time within series."""
    _check_values(values, argument)
    codes, uniques = pd.factorize(ids, sort=False, use_na_sentinel=True)
    if (codes < 0).any():
        raise input_error(
            f"{argument} series ids",
            "no missing series ids",
            f"{int((codes < 0).sum())} missing id(s)",
            "Drop those rows or give them an id.",
        )
    order = np.lexsort((clock, codes))
    codes, clock, values = codes[order], clock[order], values[order]
    same = (codes[1:] == codes[:-1]) & (clock[1:] == clock[:-1])
    if same.any():
        first = np.flatnonzero(same)[:3]
        pairs = [(_plain(uniques[codes[i]]), _show_time(spec.time_encoding, clock[i])) for i in first]
        raise input_error(
            argument,
            "at most one row per (series, time)",
            f"{int(same.sum())} duplicate row(s), e.g. {pairs}",
            "Aggregate duplicates first, e.g. X.groupby([series, time]).mean().",
        )
    lengths = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(len(codes)) - starts[codes]
    n_series, width = len(uniques), int(lengths.max())
    padded = np.full((n_series, width, values.shape[1]), np.nan)
    padded[codes, position] = values
    times = np.empty((n_series, width))
    times[codes, position] = clock
    last = times[np.arange(n_series), lengths - 1]
    pad = np.arange(width)[None, :] >= lengths[:, None]
    times[pad] = np.broadcast_to(last[:, None], times.shape)[pad]
    mask = ~np.isnan(padded)
    source_rows = np.empty(len(order), dtype=np.int64)
    source_rows[order] = np.arange(len(order))  # where each input row went: outputs come back in its order
    return SeriesBatch(
        values=np.where(mask, padded, 0.0),
        mask=mask,
        times=times,
        lengths=lengths.astype(np.int64),
        ids=np.asarray(uniques),
        spec=spec,
        source_rows=source_rows,
    )


def _show_time(encoding: TimeEncoding, clock: float) -> Any:
    decoded = encoding.decode(np.array([clock]))
    return _plain(decoded[0])


def _check_values(values: np.ndarray, argument: str) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        raise input_error(
            argument,
            "finite values or NaN for missing entries",
            f"{int(infinite.sum())} infinite value(s)",
            "Replace inf with NaN to mark them missing, or clip them.",
        )


# --------------------------------------------------------------------- arrays
def _numeric_array(X: Any, argument: str) -> np.ndarray:
    try:
        array = np.asarray(X)
    except (TypeError, ValueError) as error:
        raise input_error(argument, _ACCEPTED, f"{type(X).__name__} ({error})", "Convert the data first.") from None
    if array.dtype == object:
        try:  # object arrays of numbers (and None for missing) are fine
            array = np.asarray(np.where(np.equal(array, None), np.nan, array), dtype=np.float64)
        except (TypeError, ValueError):
            pass
    if np.iscomplexobj(array):
        raise input_error(
            argument,
            "real numbers",
            f"complex values (dtype {array.dtype}): Complex data not supported",
            "Split real and imaginary parts into separate features.",
        )
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise input_error(
            argument,
            "a numeric array",
            f"an array of dtype {array.dtype}",
            "Convert it with .astype(float); mark missing entries with NaN.",
        )
    return array.astype(np.float64)


def _from_array(X: Any, t: Any, encoding: TimeEncoding | None, argument: str, time_argument: str = "t") -> SeriesBatch:
    if X is None or np.isscalar(X):
        raise input_error(argument, _ACCEPTED, repr(X), "Pass the observed series.")
    array = _numeric_array(X, argument)
    if array.ndim == 2:
        kind, panel = ARRAY, array[None]
    elif array.ndim == 3:
        kind, panel = PANEL, array
    else:
        raise input_error(
            argument,
            "an array of shape (n_series, n_times, n_features) or (n_times, n_features)",
            f"shape {array.shape}",
            "Reshape your data: a single variable needs a trailing axis of length 1, e.g. X.reshape(-1, 1).",
        )
    n_series, n_times, n_features = panel.shape
    if n_features == 0:
        raise input_error(
            argument,
            "at least one feature",
            f"0 feature(s) (shape={array.shape}) while a minimum of 1 is required",
            "Pass the measured variables.",
        )
    if panel.size == 0:
        raise input_error(argument, "a non-empty array", f"shape {array.shape}", "Pass data with observations.")
    clock, encoding = _array_times(t, n_series, n_times, kind, encoding, argument, time_argument)
    spec = InputSpec(
        kind=kind, n_features=n_features, time_encoding=encoding, default_times=_are_default_times([*clock], encoding)
    )
    ids = np.repeat(np.arange(n_series), n_times)
    return _pack_long(ids, clock.ravel(), panel.reshape(-1, n_features), spec, argument)


def _are_default_times(clocks: list[np.ndarray], encoding: TimeEncoding) -> bool:
    """Whether every series' times are ``0, 1, ..., n_times - 1``, what arrays get without ``t``."""
    return encoding.kind == "float" and all(np.array_equal(c, np.arange(len(c))) for c in clocks)


def _array_times(
    t: Any,
    n_series: int,
    n_times: int,
    kind: str,
    encoding: TimeEncoding | None,
    argument: str,
    time_argument: str = "t",
) -> tuple[np.ndarray, TimeEncoding]:
    if t is None:
        encoding = encoding or TimeEncoding()
        clock = np.broadcast_to(np.arange(n_times, dtype=np.float64), (n_series, n_times))
        if encoding.kind != "float":
            raise input_error(
                time_argument, f"{encoding.kind} times, as at fit", "None", f"Pass {time_argument} for {argument}."
            )
        return clock, encoding
    t_values = as_time_values(pd.Index(np.ravel(np.asarray(t))), time_argument)
    t_shape = np.shape(t)
    if encoding is None:
        encoding = encoding_for(t_values)
    clock = encoding.encode(t_values, time_argument).reshape(t_shape)
    shapes = [(n_times,), (n_series, n_times)] if kind == PANEL else [(n_times,)]
    if clock.shape not in shapes:
        raise input_error(
            time_argument,
            " or ".join(str(s) for s in shapes) + f" to match {argument} of {n_series} series x {n_times} times",
            f"shape {clock.shape}",
            "Pass one time per row of each series.",
        )
    _check_finite_times(clock, time_argument)
    return np.broadcast_to(clock, (n_series, n_times)), encoding


def _from_list(
    X: Sequence[Any], t: Any, encoding: TimeEncoding | None, argument: str, time_argument: str = "t"
) -> SeriesBatch:
    if len(X) == 0:
        raise input_error(argument, "a non-empty list of series", "an empty list", "Pass at least one series.")
    arrays = []
    for i, item in enumerate(X):
        array = _numeric_array(item, f"{argument}[{i}]")
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[0] == 0:
            raise input_error(
                f"{argument}[{i}]",
                "an array of shape (n_times_i, n_features)",
                f"shape {array.shape}",
                "Each list item is one series, rows are times.",
            )
        arrays.append(array)
    n_features = {a.shape[1] for a in arrays}
    if len(n_features) > 1:
        raise input_error(
            argument,
            "series with the same number of features",
            f"feature counts {sorted(n_features)}",
            "Give every series the same columns; use NaN for unmeasured ones.",
        )
    if t is None:
        if encoding is not None and encoding.kind != "float":
            raise input_error(
                time_argument, f"{encoding.kind} times, as at fit", "None", f"Pass {time_argument} for {argument}."
            )
        encoding = encoding or TimeEncoding()
        clocks = [np.arange(len(a), dtype=np.float64) for a in arrays]
    else:
        if not isinstance(t, (list, tuple)) or len(t) != len(arrays):
            raise input_error(
                time_argument,
                f"a list of {len(arrays)} time arrays, one per series in {argument}",
                f"{type(t).__name__} of length {len(t) if hasattr(t, '__len__') else '?'}",
                f"Pass {time_argument}=[times_0, times_1, ...].",
            )
        if encoding is None:
            encoding = encoding_for(pd.Index(np.concatenate([np.ravel(np.asarray(ti)) for ti in t])))
        clocks = []
        for i, (ti, array) in enumerate(zip(t, arrays)):
            name = f"{time_argument}[{i}]"
            clock = encoding.encode(as_time_values(pd.Index(np.ravel(np.asarray(ti))), name), name)
            if np.ndim(ti) != 1 or clock.shape[0] != array.shape[0]:
                raise input_error(
                    name,
                    f"a 1-D array of {array.shape[0]} times matching {argument}[{i}]",
                    f"shape {np.shape(ti)}",
                    "Pass one time per row.",
                )
            _check_finite_times(clock, name)
            clocks.append(clock)
    spec = InputSpec(
        kind=RAGGED,
        n_features=arrays[0].shape[1],
        time_encoding=encoding,
        default_times=_are_default_times(clocks, encoding),
    )
    ids = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    return _pack_long(ids, np.concatenate(clocks), np.concatenate(arrays), spec, argument)


# ----------------------------------------------------------------- agreement
def _is_sparse(X: Any) -> bool:
    import scipy.sparse

    return scipy.sparse.issparse(X)


def _check_matches(spec: InputSpec, reference: InputSpec, argument: str, owner: str | None = None) -> None:
    if spec.n_features != reference.n_features:
        raise input_error(
            argument,
            f"{reference.n_features} features, as seen at fit",
            f"{spec.n_features} features ({argument} has {spec.n_features} features, but "
            f"{owner or 'the estimator'} is expecting {reference.n_features} features as input)",
            "Pass the same variables the estimator was fitted on.",
        )
    if reference.feature_names is not None and spec.feature_names is not None:
        if spec.feature_names != reference.feature_names:
            raise input_error(
                argument,
                f"feature columns {list(reference.feature_names)} in the order seen at fit",
                f"{list(spec.feature_names)}",
                f"Select them with {argument}[{list(reference.feature_names)}].",
            )


def _check_every_series_observed(batch: SeriesBatch, argument: str) -> None:
    empty = ~batch.mask.any(axis=(1, 2))
    if empty.any():
        raise input_error(
            argument,
            "at least one observed value in every series",
            f"{int(empty.sum())} series with none, ids {_plain(batch.ids[empty][:5])}",
            "Drop series that have no observations.",
        )


# -------------------------------------------------------------- query times
def check_query_times(t: Any, batch: SeriesBatch, *, argument: str = "t") -> QueryTimes:
    """Validate the times at which outputs are wanted for each series of ``batch``.

    ``t=None`` asks for each series' own observation times. Otherwise ``t``
    is shared ``(n_queries,)``, per series ``(n_series, n_queries)``, a list
    of 1-D arrays (one per series), or a frame of query rows (same id and time
    names as the input; feature columns, if any, are ignored). Queries are
    sorted within each series; for a frame, ``rows`` and ``index`` of the
    result let :func:`to_user_kind` return outputs in the frame's row order
    with its index.

    For a batch with known inputs (see :func:`split_inputs`) the query must
    be a frame holding the inputs at the query times (``None`` reads them at
    the batch's own times); they come back in ``QueryTimes.inputs``.
    """
    if only_static(batch):
        # Per-series constants: any kind of query, the constants taken from the history.
        return static_query_inputs(check_query_times(t, replace(batch, inputs=None), argument=argument), batch)
    if batch.inputs is not None:
        # A model driven by known inputs needs their values at the query times.
        if t is None:
            return own_inputs(_own_times(batch), batch)
        if not isinstance(t, pd.DataFrame):
            refuse_array_queries(batch, argument)
        return query_inputs(t, _query_frame(t, batch, argument), batch, argument)
    encoding = batch.spec.time_encoding
    if t is None:
        return _own_times(batch)
    if isinstance(t, pd.DataFrame):
        return _query_frame(t, batch, argument)
    if isinstance(t, (list, tuple)) and len(t) and not np.isscalar(t[0]) and np.ndim(t[0]) == 1:
        if len(t) != batch.n_series:
            raise input_error(
                argument,
                f"one array of query times per series ({batch.n_series})",
                f"a list of {len(t)}",
                "Pass shared times as a 1-D array instead.",
            )
        clocks = [encoding.encode(as_time_values(pd.Index(np.asarray(ti)), argument), argument) for ti in t]
        return _pad_queries(clocks, argument)
    if isinstance(t, pd.Series):
        t = t.to_numpy()
    values = as_time_values(pd.Index(np.ravel(np.asarray(t))), argument) if np.ndim(t) else None
    if values is None or np.ndim(t) not in (1, 2):
        raise input_error(
            argument,
            f"query times of shape (n_queries,) or ({batch.n_series}, n_queries)",
            f"shape {np.shape(t)}",
            "Pass a 1-D array of times, e.g. t=[8.0, 9.0, 10.0].",
        )
    clock = encoding.encode(values, argument).reshape(np.shape(t))
    if clock.ndim == 2 and clock.shape[0] != batch.n_series:
        raise input_error(
            argument,
            f"per-series query times of shape ({batch.n_series}, n_queries)",
            f"shape {clock.shape}",
            "Pass one row of times per series, or a 1-D array shared by all.",
        )
    if clock.shape[-1] == 0:
        raise input_error(argument, "at least one query time", "none", "Pass the times you want outputs at.")
    _check_finite_times(clock, argument)
    clock = np.broadcast_to(clock, (batch.n_series, clock.shape[-1]))
    return _pad_queries(list(clock), argument)


def _own_times(batch: SeriesBatch) -> QueryTimes:
    """The batch's own rows as queries; a batch read from a frame gets them back in the frame's row order with
    its index (``source_rows``), as a frame of query rows does."""
    query = QueryTimes(times=batch.times.copy(), mask=batch.row_mask)
    rows = batch.source_rows
    if rows is None or batch.source_index is None or not batch.spec.is_frame or len(rows) != int(batch.lengths.sum()):
        return query  # arrays (outputs as frames too, set_output): series by series, as their axes are
    return replace(query, rows=rows, index=batch.source_index)


def _query_frame(t: pd.DataFrame, batch: SeriesBatch, argument: str) -> QueryTimes:
    spec = batch.spec
    if isinstance(t.index, pd.MultiIndex):
        ids, times, _ = _series_and_time_levels(t.index)
    elif ID_COLUMN in t.columns and TIME_COLUMN in t.columns:
        ids, times = t[ID_COLUMN], t[TIME_COLUMN]
    elif spec.kind == "frame" or batch.n_series == 1:
        times = t[TIME_COLUMN] if TIME_COLUMN in t.columns else t.index
        ids = np.repeat(batch.ids[:1], len(t))
    else:
        raise input_error(
            argument,
            f"a frame of query rows with '{ID_COLUMN}' and '{TIME_COLUMN}' columns or a (series, time) MultiIndex",
            f"columns {list(t.columns)[:10]}",
            "Name the series and time of each query row.",
        )
    clock = spec.time_encoding.encode(as_time_values(pd.Index(times), argument), argument)
    _check_finite_times(clock, argument)
    position = pd.Index(batch.ids).get_indexer(np.asarray(ids))
    if (position < 0).any():
        unknown = _plain(pd.unique(np.asarray(ids)[position < 0])[:5])
        raise input_error(
            argument,
            "query rows only for series present in X",
            f"unknown series ids {unknown}",
            "Query only series whose history you pass in X.",
        )
    # Each series' queries are sorted; ``rows`` remembers where every query
    # row went, so outputs come back in the frame's order with its index.
    order = np.lexsort((clock, position))
    counts = np.bincount(position, minlength=batch.n_series)
    clocks = np.split(clock[order], np.cumsum(counts)[:-1])
    rows = np.empty(len(order), dtype=np.int64)
    rows[order] = np.arange(len(order))
    query = _pad_queries(clocks, argument, allow_empty=True)
    return replace(query, rows=rows, index=t.index)


def _pad_queries(clocks: list[np.ndarray], argument: str, allow_empty: bool = False) -> QueryTimes:
    counts = np.array([len(c) for c in clocks])
    if not allow_empty and (counts == 0).any():
        raise input_error(argument, "at least one query time per series", "none", "Pass the times you want.")
    for i, c in enumerate(clocks):
        if len(c) and not np.isfinite(c).all():
            raise input_error(argument, "finite query times", f"non-finite times for series {i}", "Fix them.")
    width = max(int(counts.max()), 1)
    times = np.zeros((len(clocks), width))
    mask = np.zeros((len(clocks), width), dtype=bool)
    for i, c in enumerate(clocks):
        times[i, : len(c)] = c
        times[i, len(c):] = c[-1] if len(c) else 0.0
        mask[i, : len(c)] = True
    return QueryTimes(times=times, mask=mask)
