"""Every accepted input kind goes into a SeriesBatch and comes back as the same kind."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal

from dynlearn.data import (
    SeriesBatch,
    batch_to_user_kind,
    check_query_times,
    check_series,
    to_user_kind,
)


def shuffled(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    return frame.sample(frac=1.0, random_state=seed)


def long_frame() -> pd.DataFrame:
    """Two series of unequal length with a missing entry and a fully missing row."""
    return pd.DataFrame(
        {
            "series_id": ["a", "a", "a", "b", "b"],
            "time": [0.0, 0.5, 2.0, 1.0, 3.0],
            "x": [1.0, np.nan, 3.0, 4.0, np.nan],
            "y": [10.0, 20.0, 30.0, 40.0, np.nan],
        }
    )


def milliseconds(span: int) -> pd.TimedeltaIndex:
    """Twenty random whole-millisecond offsets below ``span`` milliseconds."""
    return pd.to_timedelta(np.random.default_rng(0).integers(0, span, 20), unit="ms")


def time_indexed(index: pd.Index) -> pd.DataFrame:
    values = np.arange(2.0 * len(index)).reshape(len(index), 2)
    values[1, 0] = np.nan
    return pd.DataFrame(values, index=index, columns=["x", "y"])


# ------------------------------------------------------------------ frames
def test_multiindex_frame_round_trips_with_index_names():
    X = long_frame().rename(columns={"series_id": "unit", "time": "hour"}).set_index(["unit", "hour"])
    out = batch_to_user_kind(check_series(shuffled(X)))
    assert list(out.index.names) == ["unit", "hour"]
    pd.testing.assert_frame_equal(out.sort_index(), X)


def test_multiindex_frame_with_integer_times_keeps_integer_times():
    X = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0]},
        index=pd.MultiIndex.from_arrays([[7, 7, 9, 9], [0, 1, 0, 5]], names=["patient", "day"]),
    )
    out = batch_to_user_kind(check_series(shuffled(X)))
    pd.testing.assert_frame_equal(out.sort_index(), X)


def test_long_frame_round_trips():
    X = long_frame()
    batch = check_series(shuffled(X))
    assert batch.spec.kind == "long"
    out = batch_to_user_kind(batch).sort_values(["series_id", "time"], ignore_index=True)
    pd.testing.assert_frame_equal(out, X)


def test_series_keep_their_order_of_first_appearance():
    X = long_frame().iloc[[3, 0, 1, 2, 4]]
    batch = check_series(X)
    assert batch.ids.tolist() == ["b", "a"]
    back = batch_to_user_kind(batch)  # the rows as they came, in X's order with its index
    assert back["series_id"].tolist() == ["b", "a", "a", "a", "b"] and back.index.equals(X.index)


@pytest.mark.parametrize(
    "index",
    [
        pd.date_range("2021-03-27", periods=5, freq="h", name="when"),
        pd.date_range("2021-03-27", periods=5, freq="h", tz="Europe/Berlin", name="when"),
        pd.DatetimeIndex(["1990-01-01 00:00:00.001", "2004-02-29 23:59:59.999", "2030-06-01 12:34:56.789"]),
        pd.DatetimeIndex(pd.Timestamp("1990-01-01") + milliseconds(40 * 365 * 86_400_000)).as_unit("ns"),
        pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-05"]).as_unit("s"),
        pd.to_timedelta(["0.25s", "1.5s", "800 days 00:00:00.001"]),
        milliseconds(40 * 365 * 86_400_000).as_unit("ns"),
        pd.Index([0.0, 0.1, 0.7, 3.25], name="t"),
    ],
    ids=[
        "naive-hourly",
        "tz-aware-dst",
        "millisecond-decades",
        "nanosecond-unit",
        "second-unit",
        "timedelta",
        "timedelta-ns",
        "float",
    ],
)
def test_time_indexed_frame_round_trips_exactly(index):
    X = shuffled(time_indexed(index))
    out = batch_to_user_kind(check_series(X))
    # Rows in X's order; resolution (s, ms, us) and time zone come back as
    # given; only the index frequency, which shuffling already drops, is not compared.
    pd.testing.assert_frame_equal(out, X, check_freq=False)
    assert out.index.dtype == X.index.dtype


def test_frame_with_time_column_round_trips():
    X = shuffled(pd.DataFrame({"time": [0.0, 1.0, 2.5], "x": [1.0, np.nan, 3.0]}))
    batch = check_series(X)
    assert batch.spec.kind == "frame"
    pd.testing.assert_frame_equal(batch_to_user_kind(batch), X)  # in X's row order, with its index


def test_frame_column_labels_come_back_unchanged():
    X = pd.DataFrame(np.arange(6.0).reshape(3, 2), index=pd.Index([0.0, 1.0, 2.0]))
    out = batch_to_user_kind(check_series(X))
    assert list(out.columns) == [0, 1]
    pd.testing.assert_frame_equal(out, X)


def test_time_strings_are_read_as_datetimes():
    X = pd.DataFrame({"series_id": [1, 1], "time": ["2020-01-01", "2020-01-03"], "x": [1.0, 2.0]})
    out = batch_to_user_kind(check_series(X))
    assert_array_equal(out["time"], pd.to_datetime(X["time"]))


# ------------------------------------------------------------------ arrays
@pytest.fixture
def panel() -> np.ndarray:
    values = np.random.default_rng(0).normal(size=(3, 4, 2))
    values[0, 1, 0] = np.nan
    values[2, 3, :] = np.nan
    return values


def test_panel_without_times_round_trips_on_a_step_clock(panel):
    batch = check_series(panel)
    assert_array_equal(batch.times, np.broadcast_to(np.arange(4.0), (3, 4)))
    assert_array_equal(batch_to_user_kind(batch), panel)


def test_panel_with_shared_unsorted_times_is_sorted(panel):
    t = np.array([3.0, 0.0, 2.0, 1.0])
    batch = check_series(panel, t)
    order = np.argsort(t)
    assert_array_equal(batch.times, np.broadcast_to(t[order], (3, 4)))
    assert_array_equal(batch_to_user_kind(batch), panel[:, order])


def test_panel_with_per_series_times_sorts_each_series(panel):
    t = np.random.default_rng(1).permutation(12).reshape(3, 4).astype(float)
    batch = check_series(panel, t)
    out = batch_to_user_kind(batch)
    for i in range(3):
        order = np.argsort(t[i])
        assert_array_equal(batch.times[i], t[i, order])
        assert_array_equal(out[i], panel[i, order])


def test_single_array_round_trips(panel):
    batch = check_series(panel[0], t=np.array([0.0, 0.1, 0.2, 0.4]))
    assert batch.n_series == 1
    assert_array_equal(batch_to_user_kind(batch), panel[0])


def test_ragged_list_round_trips_sorted_by_its_times():
    X = [np.array([[1.0], [2.0], [np.nan]]), np.array([[4.0], [5.0]])]
    t = [np.array([0.0, 2.0, 1.0]), np.array([5.0, 4.0])]
    batch = check_series(X, t)
    out = batch_to_user_kind(batch)
    assert isinstance(out, list) and len(out) == 2
    assert_array_equal(out[0], X[0][[0, 2, 1]])
    assert_array_equal(out[1], X[1][[1, 0]])
    assert batch.lengths.tolist() == [3, 2]
    assert_array_equal(batch.times, [[0.0, 1.0, 2.0], [4.0, 5.0, 5.0]])


@pytest.mark.parametrize("tz", [None, "America/New_York"])
def test_datetime_array_times_become_seconds_and_decode_exactly(panel, tz):
    t = pd.date_range("2020-01-01", periods=4, freq="15min", tz=tz)
    batch = check_series(panel, t)
    assert_array_equal(batch.times[0], [0.0, 900.0, 1800.0, 2700.0])
    decoded = batch.spec.time_encoding.decode(batch.times[0])
    assert decoded.equals(t) and decoded.dtype == t.dtype


def test_timedelta_array_times_become_seconds(panel):
    t = pd.to_timedelta([0, 1, 2, 3], unit="min")
    batch = check_series(panel, t)
    assert_array_equal(batch.times[1], [0.0, 60.0, 120.0, 180.0])
    assert batch.spec.time_encoding.decode(batch.times[1]).equals(t)


def test_missing_values_are_masked_and_zeroed(panel):
    batch = check_series(panel)
    assert_array_equal(batch.mask, ~np.isnan(panel))
    assert not np.isnan(batch.values).any()
    assert (batch.values[~batch.mask] == 0.0).all()
    assert_array_equal(batch.values[batch.mask], panel[~np.isnan(panel)])


def test_long_frame_container_pads_short_series():
    batch = check_series(long_frame())
    assert batch.ids.tolist() == ["a", "b"]
    assert batch.lengths.tolist() == [3, 2]
    # Rows past a series' end repeat its last time and are masked out.
    assert_array_equal(batch.times[1], [1.0, 3.0, 3.0])
    assert not batch.mask[1, 2].any()
    assert_array_equal(batch.row_mask, [[True, True, True], [True, True, False]])


def test_reference_spec_reuses_the_fit_clock():
    fit = check_series(time_indexed(pd.date_range("2020-01-01", periods=3, freq="D")))
    later = time_indexed(pd.date_range("2020-01-10", periods=2, freq="D"))
    batch = check_series(later, reference=fit.spec)
    assert_array_equal(batch.times[0], [9 * 86_400.0, 10 * 86_400.0])


def test_filled_values_interpolate_gaps_in_time():
    X = np.array([[[0.0], [np.nan], [np.nan], [6.0], [np.nan]]])
    batch = check_series(X, t=np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert_array_equal(batch.filled_values()[0, :, 0], [0.0, 2.0, 4.0, 6.0, 6.0])


# ------------------------------------------------------------- query times
@pytest.fixture
def long_batch() -> SeriesBatch:
    return check_series(long_frame())


def outputs(batch: SeriesBatch, n_queries: int, n_samples: int | None = None) -> np.ndarray:
    shape = (batch.n_series, n_queries, batch.n_features)
    if n_samples is not None:
        shape = (n_samples, *shape)
    return np.arange(float(np.prod(shape))).reshape(shape)


def test_no_query_times_means_the_observation_times(long_batch):
    query = check_query_times(None, long_batch)
    assert_array_equal(query.times, long_batch.times)
    assert_array_equal(query.mask, long_batch.row_mask)
    out = to_user_kind(outputs(long_batch, query.n_queries), query, long_batch)
    pd.testing.assert_frame_equal(out[["series_id", "time"]], long_frame()[["series_id", "time"]])


def test_shared_query_times_give_one_row_per_series_and_query(long_batch):
    query = check_query_times(np.array([10.0, 11.0, 12.0]), long_batch)
    out = to_user_kind(outputs(long_batch, 3), query, long_batch)
    assert len(out) == 6
    assert out["series_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert out["time"].tolist() == [10.0, 11.0, 12.0] * 2
    assert list(out.columns) == ["series_id", "time", "x", "y"]


def test_per_series_query_times_follow_each_series(long_batch):
    t = np.array([[4.0, 5.0], [6.0, 7.0]])
    query = check_query_times(t, long_batch)
    out = to_user_kind(outputs(long_batch, 2), query, long_batch)
    assert out["time"].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_query_list_of_unequal_lengths(long_batch):
    query = check_query_times([np.array([4.0]), np.array([6.0, 7.0, 8.0])], long_batch)
    assert query.mask.sum(axis=1).tolist() == [1, 3]
    out = to_user_kind(outputs(long_batch, query.n_queries), query, long_batch)
    assert out["series_id"].tolist() == ["a", "b", "b", "b"]
    assert out["time"].tolist() == [4.0, 6.0, 7.0, 8.0]


def test_query_frame_rows_come_back_one_each_in_its_order(long_batch):
    rows = pd.DataFrame({"series_id": ["b", "b", "a"], "time": [9.0, 8.0, 7.0]})
    query = check_query_times(rows, long_batch)
    out = to_user_kind(outputs(long_batch, query.n_queries), query, long_batch)
    assert list(zip(out["series_id"], out["time"])) == [("b", 9.0), ("b", 8.0), ("a", 7.0)]


def test_query_frame_may_leave_series_out(long_batch):
    rows = pd.DataFrame({"time": [1.5]}, index=pd.MultiIndex.from_tuples([("b", 1.5)]))
    query = check_query_times(rows, long_batch)
    out = to_user_kind(outputs(long_batch, query.n_queries), query, long_batch)
    assert list(zip(out["series_id"], out["time"])) == [("b", 1.5)]


def test_datetime_query_times_come_back_as_the_same_datetimes():
    batch = check_series(time_indexed(pd.date_range("2020-01-01", periods=3, freq="h", tz="UTC")))
    wanted = pd.date_range("2020-01-01 05:00", periods=4, freq="30min", tz="UTC")
    query = check_query_times(wanted, batch)
    out = to_user_kind(outputs(batch, 4), query, batch)
    assert out.index.equals(wanted)
    assert out.index.dtype == wanted.dtype


def test_query_times_finer_than_the_data_come_back_unrounded():
    batch = check_series(time_indexed(pd.date_range("2020-01-01", periods=3, freq="h")))
    wanted = pd.DatetimeIndex(["2020-01-01 05:00:00.000250", "2020-01-01 05:00:00.5"]).as_unit("us")
    query = check_query_times(wanted, batch)
    out = to_user_kind(outputs(batch, 2), query, batch)
    assert out.index.equals(wanted)
    assert out.index.dtype == wanted.dtype


def test_integer_times_stay_integers_unless_a_query_falls_between():
    X = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index([0, 1], name="step"))
    batch = check_series(X)
    whole = to_user_kind(outputs(batch, 2), check_query_times(np.array([2, 3]), batch), batch)
    between = to_user_kind(outputs(batch, 2), check_query_times(np.array([2.0, 2.5]), batch), batch)
    assert whole.index.tolist() == [2, 3] and whole.index.dtype == np.int64
    assert between.index.tolist() == [2.0, 2.5]


def test_integer_times_beyond_float64s_integers_stay_distinct_and_come_back_exactly():
    # Nanoseconds since the epoch as plain integers: consecutive ones are the same float64.
    start = 1_700_000_000_123_456_789
    X = pd.DataFrame({"series_id": [0, 0, 0, 1, 1], "time": start + np.array([0, 1, 3, 2, 7]),
                      "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert float(start) == float(start + 1)
    batch = check_series(X)  # no duplicate (series, time) rows
    assert_array_equal(np.sort(batch.times[batch.row_mask]), [0.0, 1.0, 2.0, 3.0, 7.0])  # counted from the first
    back = batch_to_user_kind(batch)
    assert back["time"].dtype == np.int64
    assert back.sort_values(["series_id", "time"])["time"].tolist() == (start + np.array([0, 1, 3, 2, 7])).tolist()
    query = check_query_times(np.array([start + 8, start + 9]), batch)
    out = to_user_kind(outputs(batch, 2), query, batch)
    assert out["time"].tolist() == [start + 8, start + 9] * 2
    from dynlearn import NeuralODE

    model = NeuralODE(hidden_layer_sizes=(4,), max_epochs=1, random_state=0).fit(X)
    forecast = model.predict(X, t=np.array([start + 8, start + 9]))
    assert forecast["time"].tolist() == [start + 8, start + 9] * 2 and np.isfinite(forecast["x"]).all()


def test_panel_outputs_have_series_by_query_shape(panel):
    batch = check_series(panel)
    query = check_query_times(np.linspace(0.0, 5.0, 7), batch)
    values = outputs(batch, 7)
    assert_array_equal(to_user_kind(values, query, batch), values)


def test_panel_outputs_pad_missing_queries_with_nan(panel):
    batch = check_series(panel)
    query = check_query_times([np.array([1.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0])], batch)
    out = to_user_kind(outputs(batch, 3), query, batch)
    assert out.shape == (3, 3, 2)
    assert_array_equal(np.isnan(out[:, :, 0]), ~query.mask)


def test_single_array_outputs_drop_the_series_axis(panel):
    batch = check_series(panel[0])
    query = check_query_times(np.array([0.5, 1.5]), batch)
    assert to_user_kind(outputs(batch, 2), query, batch).shape == (2, 2)


def test_ragged_outputs_are_a_list_of_per_series_arrays():
    batch = check_series([np.ones((2, 1)), np.ones((4, 1))])
    query = check_query_times(None, batch)
    out = to_user_kind(outputs(batch, query.n_queries), query, batch)
    assert [o.shape for o in out] == [(2, 1), (4, 1)]


def test_samples_become_a_leading_array_axis(panel):
    batch = check_series(panel)
    query = check_query_times(np.array([1.0, 2.0]), batch)
    values = outputs(batch, 2, n_samples=5)
    assert_array_equal(to_user_kind(values, query, batch), values)


def test_samples_become_a_sample_index_level(long_batch):
    query = check_query_times(np.array([10.0, 11.0]), long_batch)
    values = outputs(long_batch, 2, n_samples=3)
    out = to_user_kind(values, query, long_batch)
    assert out.index.names[0] == "sample"
    assert len(out) == 3 * 4
    for k in range(3):
        pd.testing.assert_frame_equal(out.xs(k, level="sample"), to_user_kind(values[k], query, long_batch))


def test_samples_on_a_time_indexed_frame():
    batch = check_series(time_indexed(pd.Index([0.0, 1.0, 2.0], name="t")))
    query = check_query_times(np.array([3.0, 4.0]), batch)
    out = to_user_kind(outputs(batch, 2, n_samples=2), query, batch)
    assert list(out.index.names) == ["sample", "t"]
    assert out.index.tolist() == [(0, 3.0), (0, 4.0), (1, 3.0), (1, 4.0)]


# --------------------------------------------------------------- big input
def test_a_million_row_long_frame_converts():
    n_series, n_times = 1000, 1000
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "series_id": np.repeat(np.arange(n_series), n_times),
            "time": np.tile(np.arange(n_times, dtype=float), n_series),
        }
    )
    for name in ("a", "b", "c"):
        X[name] = rng.normal(size=len(X))
    X.loc[::7, "b"] = np.nan
    batch = check_series(shuffled(X))
    assert batch.values.shape == (n_series, n_times, 3)
    assert (batch.lengths == n_times).all()
    assert int((~batch.mask).sum()) == int(X["b"].isna().sum())
    row = X.iloc[123_456]
    position = batch.ids.tolist().index(row["series_id"])
    assert batch.values[position, int(row["time"]), 0] == row["a"]
