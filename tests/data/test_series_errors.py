"""Bad input fails with an InputError that names the argument, the expectation, the input and a fix."""

import warnings

import numpy as np
import pandas as pd
import pytest

from dynlearn.data import check_query_times, check_series
from dynlearn.exceptions import InputError


def long_frame(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "series_id": [1, 1, 1, 2, 2],
            "time": [0.0, 1.0, 2.0, 0.0, 1.0],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0],
            "y": [5.0, 4.0, 3.0, 2.0, 1.0],
        }
    )
    return frame.assign(**columns)


PANEL = np.random.default_rng(0).normal(size=(2, 3, 2))
FIT = check_series(long_frame())
FIT_ARRAY = check_series(PANEL)


def raises(call) -> str:
    with pytest.raises(InputError) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


# Each case: the call, the argument it must name, then fragments of what was
# expected, what was received and the suggested fix.
CASES = {
    "duplicate rows": (
        lambda: check_series(long_frame(time=[0.0, 1.0, 1.0, 0.0, 1.0])),
        "X",
        ["one row per (series, time)", "1 duplicate row(s), e.g. [(1, 1.0)]", "Aggregate duplicates"],
    ),
    "duplicate datetimes": (
        lambda: check_series(pd.DataFrame({"x": [1.0, 2.0]}, index=pd.DatetimeIndex(["2020-01-01"] * 2))),
        "X",
        ["one row per (series, time)", "Timestamp('2020-01-01 00:00:00')", "Aggregate duplicates"],
    ),
    "NaN time": (
        lambda: check_series(long_frame(time=[0.0, np.nan, 2.0, 0.0, 1.0])),
        "X times",
        ["finite times", "1 non-finite time value(s)", "Drop those rows or fill their times"],
    ),
    "NaT time": (
        lambda: check_series(pd.DataFrame({"x": [1.0, 2.0]}, index=pd.DatetimeIndex(["2020-01-01", None]))),
        "X times",
        ["finite times (no NaN, NaT or inf)", "1 non-finite", "Drop those rows"],
    ),
    "inf time in t": (
        lambda: check_series(PANEL, t=[0.0, 1.0, np.inf]),
        "t",
        ["finite times", "1 non-finite", "Drop those rows"],
    ),
    "string feature column": (
        lambda: check_series(long_frame(z=["a", "b", "c", "d", "e"])),
        "X",
        ["numeric feature columns", "non-numeric columns ['z']", "encode them as numbers"],
    ),
    "categorical feature column": (
        lambda: check_series(long_frame(z=pd.Categorical(["a", "b", "a", "b", "a"]))),
        "X",
        ["numeric feature columns", "category", "encode them as numbers"],
    ),
    "inf in a frame": (
        lambda: check_series(long_frame(x=[1.0, np.inf, 3.0, 4.0, -np.inf])),
        "X",
        ["finite values or NaN", "2 infinite value(s)", "Replace inf with NaN"],
    ),
    "inf in an array": (
        lambda: check_series(np.where(PANEL > 1.0, np.inf, PANEL)),
        "X",
        ["finite values or NaN", "infinite value(s)", "Replace inf with NaN"],
    ),
    "empty frame": (
        lambda: check_series(long_frame().iloc[:0]),
        "X",
        ["at least one row", "an empty DataFrame", "Pass data"],
    ),
    "frame without features": (
        lambda: check_series(long_frame()[["series_id", "time"]]),
        "X",
        ["at least one numeric feature column", "no feature columns", "Add the measured variables"],
    ),
    "empty list": (
        lambda: check_series([]),
        "X",
        ["a non-empty list of series", "an empty list", "Pass at least one series"],
    ),
    "zero-size panel": (
        lambda: check_series(np.zeros((0, 3, 2))),
        "X",
        ["a non-empty array", "shape (0, 3, 2)", "Pass data"],
    ),
    "zero-length series": (
        lambda: check_series(np.zeros((0, 2))),
        "X",
        ["a non-empty array", "shape (0, 2)", "Pass data"],
    ),
    "empty ragged item": (
        lambda: check_series([np.ones((2, 1)), np.ones((0, 1))]),
        "X[1]",
        ["(n_times_i, n_features)", "shape (0, 1)", "one series"],
    ),
    "series with no observation": (
        lambda: check_series(long_frame(x=[1.0, 2.0, 3.0, np.nan, np.nan], y=[1.0, 2.0, 3.0, np.nan, np.nan])),
        "X",
        ["at least one observed value in every series", "1 series with none, ids [2]", "Drop series"],
    ),
    "array series with no observation": (
        lambda: check_series(np.stack([PANEL[0], np.full((3, 2), np.nan)])),
        "X",
        ["at least one observed value", "ids [1]", "Drop series"],
    ),
    "fewer features than at fit": (
        lambda: check_series(long_frame().drop(columns="y"), reference=FIT.spec),
        "X",
        ["2 features, as seen at fit", "1 features", "same variables"],
    ),
    "array with more features than at fit": (
        lambda: check_series(np.concatenate([PANEL, PANEL], axis=2), reference=FIT_ARRAY.spec),
        "X",
        ["2 features, as seen at fit", "4 features", "same variables"],
    ),
    "renamed feature": (
        lambda: check_series(long_frame().rename(columns={"y": "z"}), reference=FIT.spec),
        "X",
        ["feature columns ['x', 'y']", "['x', 'z']", "X[['x', 'y']]"],
    ),
    "reordered features": (
        lambda: check_series(long_frame()[["series_id", "time", "y", "x"]], reference=FIT.spec),
        "X",
        ["in the order seen at fit", "['y', 'x']", "X[['x', 'y']]"],
    ),
    "t too short": (
        lambda: check_series(PANEL, t=[0.0, 1.0]),
        "t",
        ["(3,) or (2, 3) to match X of 2 series x 3 times", "shape (2,)", "one time per row"],
    ),
    "t with too many series": (
        lambda: check_series(PANEL, t=np.zeros((5, 3))),
        "t",
        ["(3,) or (2, 3)", "shape (5, 3)", "one time per row"],
    ),
    "2-D t for one series": (
        lambda: check_series(PANEL[0], t=np.zeros((1, 3))),
        "t",
        ["(3,) to match X of 1 series", "shape (1, 3)", "one time per row"],
    ),
    "ragged t of the wrong length": (
        lambda: check_series([PANEL[0], PANEL[1]], t=[np.arange(3.0), np.arange(2.0)]),
        "t[1]",
        ["a 1-D array of 3 times matching X[1]", "shape (2,)", "one time per row"],
    ),
    "ragged t missing a series": (
        lambda: check_series([PANEL[0], PANEL[1]], t=[np.arange(3.0)]),
        "t",
        ["a list of 2 time arrays", "list of length 1", "t=[times_0, times_1, ...]"],
    ),
    "t beside a frame": (
        lambda: check_series(long_frame(), t=np.arange(5.0)),
        "t",
        ["None when X is a DataFrame", "ndarray", "drop t"],
    ),
    "datetimes after fitting on floats": (
        lambda: check_series(long_frame(time=pd.date_range("2020", periods=5)), reference=FIT.spec),
        "X times",
        ["float times, like the data the estimator was fitted on", "datetime times", "refit"],
    ),
    "datetime t after fitting on floats": (
        lambda: check_series(PANEL, t=pd.date_range("2020", periods=3), reference=FIT_ARRAY.spec),
        "t",
        ["float times", "datetime times", "Pass float times"],
    ),
    "tz-aware after fitting on naive datetimes": (
        lambda: check_series(
            pd.DataFrame({"x": [1.0]}, index=pd.DatetimeIndex(["2020-01-01"], tz="UTC")),
            reference=check_series(pd.DataFrame({"x": [1.0]}, index=pd.DatetimeIndex(["2020-01-01"]))).spec,
        ),
        "X times",
        ["same time-zone awareness as at fit (naive)", "UTC datetimes", "tz_localize"],
    ),
    "unreadable time strings": (
        lambda: check_series(long_frame(time=["a", "b", "c", "d", "e"])),
        "X times",
        ["numbers, datetimes or timedeltas", "such as ['a', 'b', 'c']", "pd.to_datetime"],
    ),
    "pandas Series": (
        lambda: check_series(long_frame()["x"]),
        "X",
        ["a DataFrame indexed by (series, time)", "a pandas Series", "to_frame()"],
    ),
    "4-D array": (
        lambda: check_series(np.zeros((2, 3, 4, 5))),
        "X",
        ["(n_series, n_times, n_features) or (n_times, n_features)", "shape (2, 3, 4, 5)", "Reshape your data"],
    ),
    "1-D array": (
        lambda: check_series(np.arange(4.0)),
        "X",
        ["(n_times, n_features)", "shape (4,)", "trailing axis of length 1"],
    ),
    "string array": (
        lambda: check_series(np.array([["a", "b"]])),
        "X",
        ["a numeric array", "dtype <U1", ".astype(float)"],
    ),
    "three index levels": (
        lambda: check_series(long_frame().assign(k=0).set_index(["series_id", "time", "k"])),
        "X.index",
        ["a 2-level MultiIndex (series, time)", "3 levels", "reset_index"],
    ),
    "id column without time column": (
        lambda: check_series(long_frame().drop(columns="time")),
        "X",
        ["a 'time' column beside 'series_id'", "columns ['series_id', 'x', 'y']", "Rename"],
    ),
    "missing series id": (
        lambda: check_series(long_frame(series_id=[1, 1, 1, None, None])),
        "X series ids",
        ["no missing series ids", "2 missing id(s)", "give them an id"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_series_error_names_argument_expectation_input_and_fix(case):
    call, argument, (expected, received, fix) = CASES[case]
    message = raises(call)
    assert message.startswith(f"{argument}: expected ")
    head, _, tail = message.partition("; got ")
    assert expected in head
    assert received in tail
    assert fix in tail


QUERY_CASES = {
    "query row count differs from series count": (
        np.zeros((4, 2)),
        ["per-series query times of shape (2, n_queries)", "shape (4, 2)", "one row of times per series"],
    ),
    "3-D query times": (
        np.zeros((2, 2, 2)),
        ["(n_queries,) or (2, n_queries)", "shape (2, 2, 2)", "1-D array of times"],
    ),
    "scalar query time": (5.0, ["(n_queries,) or (2, n_queries)", "shape ()", "1-D array of times"]),
    "no query times": (np.array([]), ["at least one query time", "none", "Pass the times"]),
    "non-finite query time": (np.array([1.0, np.nan]), ["finite times", "1 non-finite", "fill their times"]),
    "datetimes after fitting on floats": (
        pd.date_range("2020", periods=2),
        ["float times, like the data the estimator was fitted on", "datetime times", "refit"],
    ),
    "list with one array too few": (
        [np.array([1.0])],
        ["one array of query times per series (2)", "a list of 1", "1-D array"],
    ),
    "query frame without ids": (
        pd.DataFrame({"when": [1.0]}),
        ["'series_id' and 'time' columns", "columns ['when']", "Name the series"],
    ),
    "query frame for an unknown series": (
        pd.DataFrame({"series_id": [3], "time": [1.0]}),
        ["only for series present in X", "unknown series ids [3]", "Query only series"],
    ),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_check_query_times_error_names_argument_expectation_input_and_fix(case):
    t, (expected, received, fix) = QUERY_CASES[case]
    message = raises(lambda: check_query_times(t, FIT, argument="t_forecast"))
    assert message.startswith("t_forecast: expected ")
    head, _, tail = message.partition("; got ")
    assert expected in head
    assert received in tail
    assert fix in tail


def test_unreadable_time_strings_raise_without_a_pandas_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raises(lambda: check_series(long_frame(time=["a", "b", "c", "d", "e"])))


def test_error_names_the_callers_argument():
    message = raises(lambda: check_series(np.zeros((2, 3, 4, 5)), argument="X_future"))
    assert message.startswith("X_future: expected ")
