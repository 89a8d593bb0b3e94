"""Inputs that used to be read as something else are refused, and what is legitimate still reads as before."""

import pickle
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dynlearn.data import check_query_times, check_series, to_user_kind
from dynlearn.exceptions import InputError


def raises(call) -> str:
    with pytest.raises(InputError) as caught:
        call()
    return str(caught.value)


def outputs(batch, n_queries):
    """Outputs that say where they come from: series number * 100 + query slot."""
    slot = np.arange(n_queries)[None, :, None]
    return (np.arange(batch.n_series)[:, None, None] * 100 + slot).astype(float)


# ------------------------------------------------- times of arrays after fit
def test_array_times_are_recorded_as_default_only_when_they_are_the_row_numbers():
    X = np.zeros((2, 4, 1))
    assert check_series(X).spec.default_times is True
    assert check_series(X, np.arange(4)).spec.default_times is True
    assert check_series(X, np.arange(4) * 0.5).spec.default_times is False
    assert check_series([np.zeros((3, 1)), np.zeros((2, 1))]).spec.default_times is True
    assert check_series([np.zeros((3, 1))], [np.array([0.0, 2.0, 4.0])]).spec.default_times is False
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index([0.0, 1.0], name="time"))
    assert check_series(frame).spec.default_times is False


def test_array_without_times_is_refused_after_fit_on_other_times():
    fit = check_series(np.zeros((2, 4, 1)), np.arange(4) * 0.5).spec
    message = raises(lambda: check_series(np.ones((2, 4, 1)), reference=fit, need_times=True, time_argument="X_t"))
    assert message.startswith("X_t:")
    assert "0, 1, 2" in message
    batch = check_series(np.ones((2, 4, 1)), np.arange(4) * 0.5, reference=fit, need_times=True)
    np.testing.assert_array_equal(batch.times[0], np.arange(4) * 0.5)


def test_list_without_times_is_refused_after_fit_on_a_frame():
    fit = check_series(pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=pd.Index([0.0, 1.0, 2.0], name="time"))).spec
    message = raises(lambda: check_series([np.ones((3, 1))], reference=fit, need_times=True))
    assert message.startswith("t:") and "DataFrame" in message


def test_default_times_still_read_as_row_numbers_and_old_specs_keep_the_old_reading():
    fit = check_series(np.zeros((2, 4, 1))).spec
    batch = check_series(np.ones((2, 3, 1)), reference=fit, need_times=True)
    np.testing.assert_array_equal(batch.times[0], [0.0, 1.0, 2.0])
    # A spec from before default_times was recorded (unpickled without it) reads arrays as before.
    old = replace(check_series(np.zeros((2, 4, 1)), np.arange(4) * 0.5).spec, default_times=None)
    old = pickle.loads(pickle.dumps(old))
    batch = check_series(np.ones((2, 3, 1)), reference=old, need_times=True)
    np.testing.assert_array_equal(batch.times[0], [0.0, 1.0, 2.0])


def test_frame_with_times_given_separately_names_the_time_argument():
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index([0.0, 1.0], name="time"))
    message = raises(lambda: check_series(frame, [0.0, 1.0], time_argument="X_t"))
    assert message.startswith("X_t:")


# ------------------------------------------------------------- query order
def long_history():
    return pd.DataFrame(
        {"series_id": ["a", "a", "b", "b"], "time": [0.0, 1.0, 0.0, 1.0], "x": [1.0, 2.0, 3.0, 4.0]}
    )


def test_query_frame_rows_come_back_in_its_order_with_its_index():
    batch = check_series(long_history())
    rows = pd.DataFrame(
        {"series_id": ["b", "a", "b", "a"], "time": [5.0, 3.0, 2.0, 4.0]}, index=[40, 10, 30, 20]
    )
    query = check_query_times(rows, batch)
    out = to_user_kind(outputs(batch, query.n_queries), query, batch)
    assert out.index.tolist() == [40, 10, 30, 20]
    assert out["series_id"].tolist() == ["b", "a", "b", "a"]
    assert out["time"].tolist() == [5.0, 3.0, 2.0, 4.0]
    # series b's queries sorted are 2.0 (slot 0) and 5.0 (slot 1); a's are 3.0 (slot 0) and 4.0 (slot 1)
    assert out["x"].tolist() == [101.0, 0.0, 100.0, 1.0]


def test_multiindex_query_frame_keeps_its_order():
    X = long_history().set_index(["series_id", "time"])
    batch = check_series(X)
    rows = pd.DataFrame(index=pd.MultiIndex.from_tuples([("b", 3.0), ("a", 9.0), ("b", 2.0)], names=X.index.names))
    query = check_query_times(rows, batch)
    out = to_user_kind(outputs(batch, query.n_queries), query, batch)
    assert out.index.equals(rows.index)
    assert out["x"].tolist() == [101.0, 0.0, 100.0]


def test_sampled_outputs_keep_the_query_frame_order():
    batch = check_series(long_history())
    rows = pd.DataFrame({"series_id": ["b", "a"], "time": [5.0, 3.0]}, index=["late", "early"])
    query = check_query_times(rows, batch)
    draws = np.stack([outputs(batch, query.n_queries), outputs(batch, query.n_queries) + 0.5])
    out = to_user_kind(draws, query, batch)
    assert out.index.tolist() == [(0, "late"), (0, "early"), (1, "late"), (1, "early")]
    assert out["x"].tolist() == [100.0, 0.0, 100.5, 0.5]


# ------------------------------------------------------------- date strings
def dated(times):
    return pd.DataFrame({"time": times, "x": np.arange(float(len(times)))})


def test_ambiguous_day_month_strings_are_refused():
    message = raises(lambda: check_series(dated(["01/02/2024", "03/02/2024", "05/02/2024"])))
    assert "dayfirst" in message and "'01/02/2024'" in message
    assert "2024-02-01" in message and "2024-01-02" in message


def test_strings_with_one_reading_are_read_that_way():
    batch = check_series(dated(["30/01/2024", "01/02/2024", "03/02/2024"]))
    stamps = batch.spec.time_encoding.decode(batch.times[0])
    assert list(stamps) == list(pd.to_datetime(["2024-01-30", "2024-02-01", "2024-02-03"]))


def test_iso_date_strings_keep_working():
    batch = check_series(dated(["2024-01-02", "2024-01-05", "2024-02-01"]))
    stamps = batch.spec.time_encoding.decode(batch.times[0])
    assert list(stamps) == list(pd.to_datetime(["2024-01-02", "2024-01-05", "2024-02-01"]))


def test_parsed_datetimes_are_not_second_guessed():
    times = pd.to_datetime(["01/02/2024", "03/02/2024"], dayfirst=True)
    batch = check_series(dated(times))
    assert list(batch.spec.time_encoding.decode(batch.times[0])) == list(times)


# ------------------------------------------------------------ complex values
def test_complex_column_in_a_frame_is_refused():
    frame = pd.DataFrame({"time": [0.0, 1.0], "z": [1 + 2j, 3 - 1j]})
    message = raises(lambda: check_series(frame))
    assert "complex" in message and "'z'" in message and "imaginary" in message


# ------------------------------------------------------------ misnamed ids
def stacked_panel(id_name="id", restart=True):
    """Three series stacked one after another; each series has its own irregular times."""
    times = [0.0, 0.7, 1.5, 0.2, 1.1, 2.3, 0.4, 0.9, 1.8]
    if not restart:
        times = np.cumsum(np.ones(9)).tolist()
    return pd.DataFrame({"time": times, id_name: np.repeat([1, 2, 3], 3), "x": np.sin(np.arange(9.0))})


@pytest.mark.parametrize("name", ["id", "ID", "patient_id", "subjectId", "unit", "series"])
def test_column_named_like_an_id_is_refused(name):
    message = raises(lambda: check_series(stacked_panel(name).set_index("time")))
    assert f"'{name}'" in message and "series_id" in message
    assert "3 series" in message and "measured variable" in message


def test_unnamed_integer_column_where_time_restarts_is_refused():
    message = raises(lambda: check_series(stacked_panel("group_number")))
    assert "'group_number'" in message and "series_id" in message and "MultiIndex" in message


def test_renamed_id_column_reads_as_a_panel():
    batch = check_series(stacked_panel("series_id"))
    assert batch.n_series == 3 and batch.n_features == 1


@pytest.mark.parametrize(
    "frame",
    [
        # an integer count in one series, sorted by time
        pd.DataFrame({"time": np.arange(8.0), "count": [3, 3, 4, 4, 4, 2, 2, 5], "x": np.arange(8.0)}),
        # the same series shuffled: time goes back, but not only where the count changes
        pd.DataFrame({"time": np.arange(8.0), "count": [3, 3, 4, 4, 4, 2, 2, 5]}).sample(frac=1.0, random_state=1),
        # an integer state that changes every step
        pd.DataFrame({"time": np.arange(6.0), "population": [10, 12, 15, 15, 20, 26]}),
        # a stacked-looking integer column while time keeps rising
        stacked_panel("group_number", restart=False),
        # an integer column named like a count, time as the index
        pd.DataFrame({"n_infected": [0, 1, 1, 3, 3]}, index=pd.Index(np.arange(5.0) / 2, name="time")),
    ],
    ids=["count", "shuffled-count", "population", "rising-time", "time-index"],
)
def test_integer_state_variables_still_read_as_one_series(frame):
    batch = check_series(frame)
    assert batch.n_series == 1
    assert batch.n_features == frame.shape[1] - ("time" in frame.columns)


def test_id_like_feature_seen_at_fit_is_not_second_guessed_later():
    # A model fitted before ids were checked may hold one as a feature; its later calls keep working.
    frame = stacked_panel("id", restart=False)
    fit = replace(check_series(frame.rename(columns={"id": "level"})).spec, feature_names=("id", "x"))
    batch = check_series(frame, reference=fit)
    assert batch.n_series == 1


# ----------------------------------------------------- unidentified time
@pytest.mark.parametrize("name", ["YEAR", "year", "date", "Timestamp", "t", "obs_time", "Month"])
def test_time_like_column_without_a_time_is_refused(name):
    frame = pd.DataFrame({name: [2001, 2002, 2003, 2004], "COUNT": [5.0, 7.0, 6.0, 9.0]})
    message = raises(lambda: check_series(frame))
    assert f"'{name}'" in message and "'time'" in message and "set_index" in message


def test_datetime_column_without_a_time_is_refused():
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=3), "x": [1.0, 2.0, 3.0]})
    message = raises(lambda: check_series(frame))
    assert "'when'" in message and "set_index" in message


def test_named_time_column_or_index_is_accepted():
    frame = pd.DataFrame({"YEAR": [2001, 2002, 2004], "COUNT": [5.0, 7.0, 6.0]})
    batch = check_series(frame.rename(columns={"YEAR": "time"}))
    assert batch.times[0].tolist() == [2001.0, 2002.0, 2004.0] and batch.spec.feature_names == ("COUNT",)
    batch = check_series(frame.set_index("YEAR"))
    assert batch.times[0].tolist() == [2001.0, 2002.0, 2004.0] and batch.spec.feature_names == ("COUNT",)


def test_equally_spaced_rows_stay_one_series_on_the_row_number():
    # Documented: a frame with no id is one series on its index; row numbers are that index.
    batch = check_series(pd.DataFrame({"x": [1.0, 2.0, 4.0], "y": [0.0, 1.0, 0.0]}))
    assert batch.n_series == 1 and batch.times[0].tolist() == [0.0, 1.0, 2.0]
    batch = check_series(pd.DataFrame({"YEAR": [1, 2, 3], "x": [0.0, 1.0, 2.0]}).assign(time=range(3)))
    assert batch.spec.feature_names == ("YEAR", "x")


def test_a_missing_date_is_reported_as_missing_not_as_ambiguous():
    for times in (["2024-01-02", None, "2024-02-01"], ["13/01/2024", None, "01/02/2024"]):
        message = raises(lambda: check_series(dated(times)))
        assert "non-finite time" in message and "dayfirst" not in message


def test_strings_pandas_can_only_guess_one_by_one_are_not_read_as_dates():
    # pandas' per-string fallback reads "t1" as the year 1 and "t32" as 2032.
    frame = pd.DataFrame({"series_id": [0, 0, 0], "time": ["t1", "t32", "t5"], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(InputError, match="format"):
        check_series(frame)
