"""SeriesTimeSplit: fold properties, agreement with the forecast scorer, and use in scikit-learn's searches."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, cross_validate

from dynlearn import InputError, NeuralODE
from dynlearn._backtest import future_rows, parse_length, row_times
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import make_forecast_scorer
from dynlearn.model_selection import SeriesTimeSplit


def _panel(n_series=3, n_times=20, **options):
    return make_damped_oscillator(n_series=n_series, n_times=n_times, random_state=0, **options)


def _ragged():
    """Series with their own irregular times and different ends."""
    frame = _panel(n_series=4, n_times=30, irregular=True)
    return frame[~((frame.series_id == 3) & (frame.time > 6.0))].reset_index(drop=True)


def _shared_irregular():
    return _panel(n_series=3, n_times=25, irregular="shared")


CASES = [(_panel, 4), (_panel, 2.0), (_shared_irregular, 4), (_shared_irregular, 2.0), (_ragged, 2.0)]


@pytest.mark.parametrize("make, horizon", CASES)
def test_folds_train_on_whole_beginnings_and_test_on_history_plus_the_next_horizon(make, horizon):
    frame = make()
    splitter = SeriesTimeSplit(n_splits=3, horizon=horizon)
    folds = list(splitter.split(frame))
    assert len(folds) == splitter.get_n_splits() == 3
    previous, cuts = set(), []
    for train, test in folds:
        train_rows, test_rows = frame.iloc[train], frame.iloc[test]
        end = test_rows["time"].max()
        cut = train_rows["time"].max() if isinstance(horizon, int) else end - horizon
        cuts.append(cut)
        # Training rows are every row of every series up to the cut: no series is split inside the training part.
        assert len(train) == (frame["time"] <= cut).sum() > 0
        future = test_rows[test_rows["time"] > cut]
        assert len(future) > 0 and future["time"].min() > train_rows["time"].max()
        if isinstance(horizon, int):
            assert future.groupby("series_id").size().eq(horizon).all()
        else:
            assert end == frame["time"].max() or end in set(frame["time"])  # fold ends are observed times
        for sid, series in test_rows.groupby("series_id"):
            full = frame[frame.series_id == sid]
            # the history is every row of the series up to the cut
            assert len(series[series.time <= cut]) == (full.time <= cut).sum() > 0
        assert previous <= set(train)  # expanding
        previous = set(train)
    assert cuts == sorted(cuts) and len(set(cuts)) == 3
    # the last fold's future ends at the last time in X
    last = frame.iloc[folds[-1][1]]
    assert last["time"].max() == frame["time"].max()


@pytest.mark.parametrize("make, horizon", CASES)
def test_the_scorer_cuts_each_test_fold_exactly_where_the_fold_cuts(make, horizon):
    frame = make()
    for train, test in SeriesTimeSplit(n_splits=3, horizon=horizon).split(frame):
        cut = frame.iloc[train]["time"].max()
        test_frame = frame.iloc[test]
        rows = row_times(test_frame)
        scored = future_rows(rows, parse_length(horizon, "horizon", rows.kind))
        np.testing.assert_array_equal(scored, test_frame["time"].to_numpy() > cut)


def test_gap_and_min_train():
    frame = _panel(n_series=2, n_times=20)
    times = np.sort(frame.time.unique())
    (train, test), = SeriesTimeSplit(n_splits=1, horizon=4, gap=2).split(frame)
    assert frame.iloc[train].time.max() == times[13]  # cut at times[15], two times left out
    assert set(frame.iloc[test].time) == set(times)  # the left-out times stay in the history
    # cuts at times[15], [11], [7], [3]: training parts of 16, 12, 8 and 4 distinct times
    with pytest.raises(InputError, match="at most 2 fold"):
        list(SeriesTimeSplit(n_splits=3, horizon=4, min_train=9).split(frame))
    folds = list(SeriesTimeSplit(n_splits=2, horizon=4, min_train=9).split(frame))
    assert [len(np.unique(frame.iloc[train].time)) for train, _ in folds] == [12, 16]
    span = list(SeriesTimeSplit(n_splits=2, horizon=4, min_train=times[11] - times[0]).split(frame))
    assert [len(np.unique(frame.iloc[train].time)) for train, _ in span] == [12, 16]


def test_one_long_series_as_a_time_indexed_frame_and_as_an_array():
    frame = _panel(n_series=1, n_times=20).drop(columns="series_id").set_index("time")
    folds = list(SeriesTimeSplit(n_splits=3, horizon=4).split(frame))
    assert [(len(a), len(b)) for a, b in folds] == [(8, 12), (12, 16), (16, 20)]
    for train, test in folds:
        np.testing.assert_array_equal(train, np.arange(len(train)))  # prefixes in time
    array_folds = list(SeriesTimeSplit(n_splits=3, horizon=4).split(frame.to_numpy()))
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(folds, array_folds))


def test_rows_in_any_order_are_split_by_time_not_position():
    frame = _panel(n_series=2, n_times=10).sample(frac=1.0, random_state=0)
    for train, test in SeriesTimeSplit(n_splits=2, horizon=2).split(frame):
        cut = frame.iloc[train].time.max()
        assert (frame.iloc[train].time <= cut).all() and len(train) == (frame.time <= cut).sum()


def test_datetime_frames_take_timedelta_horizons():
    frame = _panel(n_series=2, n_times=12)
    frame["time"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.tile(np.arange(12), 2), unit="D")
    folds = list(SeriesTimeSplit(n_splits=2, horizon="3D").split(frame))
    assert [frame.iloc[t].time.max() for t, _ in folds] == [pd.Timestamp("2024-01-06"), pd.Timestamp("2024-01-09")]
    with pytest.raises(InputError, match="horizon"):
        list(SeriesTimeSplit(n_splits=2, horizon=3.0).split(frame))


@pytest.mark.parametrize(
    "X, splitter, match",
    [
        (np.zeros((3, 10, 2)), SeriesTimeSplit(horizon=2), "long frame"),
        ([np.zeros((10, 2))], SeriesTimeSplit(horizon=2), "long frame"),
        (None, SeriesTimeSplit(n_splits=0, horizon=2), "n_splits"),
        (None, SeriesTimeSplit(horizon=-1), "horizon"),
        (None, SeriesTimeSplit(horizon="2h"), "horizon"),
        (None, SeriesTimeSplit(n_splits=30, horizon=2), "at most 9 fold"),
    ],
)
def test_errors_name_the_argument_and_say_what_to_do(X, splitter, match):
    X = _panel(n_series=2, n_times=20) if X is None else X
    with pytest.raises(InputError, match=match):
        list(splitter.split(X))


def _tiny(**options):
    return NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, random_state=0, device="cpu", **options)


@pytest.mark.parametrize("one_series", [False, True])
def test_grid_search_picks_by_backtest_on_a_panel_and_on_one_long_series(one_series):
    frame = _panel(n_series=3, n_times=24)
    if one_series:
        frame = frame[frame.series_id == 0].drop(columns="series_id").set_index("time")
    search = GridSearchCV(
        _tiny(), {"window_size": [2, 4]}, scoring=make_forecast_scorer(horizon=4),
        cv=SeriesTimeSplit(n_splits=2, horizon=4), error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(frame)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and (scores < 0).all()
    assert search.best_params_["window_size"] == [2, 4][int(np.argmax(scores))]
    assert hasattr(search.best_estimator_, "module_")


def test_cross_validate_with_the_splitter_scores_every_fold():
    frame = _panel(n_series=3, n_times=24).set_index(["series_id", "time"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate(_tiny(), frame, cv=SeriesTimeSplit(n_splits=3, horizon=4),
                                scoring={"rmse": make_forecast_scorer(4, "rmse"), "r2": make_forecast_scorer(4, "r2")},
                                error_score="raise")
    assert result["test_rmse"].shape == (3,) and (result["test_rmse"] < 0).all()
    assert np.isfinite(result["test_r2"]).all()
