"""Outputs line up with what the user passed: rows at X's own times come back in X's row order with its index,
labelled states are read by name, and a variable a series never observed does not carry its units into the fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dynlearn import HamiltonianNN, LastValueForecaster, NeuralODE, NeuralSDE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.exceptions import InputError
from dynlearn.preprocessing import SeriesScaler

STATES = ["q", "p"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_damped_oscillator(n_series=4, n_times=20, t_span=(0, 8), random_state=0)


@pytest.fixture(scope="module")
def fitted(frame):
    return {
        "LastValueForecaster": LastValueForecaster().fit(frame),
        "NeuralODE": NeuralODE(max_epochs=1, random_state=0, n_threads=1).fit(frame),
        "NeuralSDE": NeuralSDE(max_epochs=1, random_state=0, n_threads=1).fit(frame),
    }


def _logs(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The same rows as a time-sorted log with a fresh index, shuffled, and filtered (index 40.. kept)."""
    return {
        "time-sorted": frame.sort_values(["time", "series_id"]).reset_index(drop=True),
        "shuffled": frame.sample(frac=1.0, random_state=3),
        "filtered": frame[frame.series_id >= 2],
    }


@pytest.mark.parametrize("name", ["LastValueForecaster", "NeuralODE", "NeuralSDE"])
def test_outputs_at_xs_own_times_come_back_in_xs_row_order_with_its_index(frame, fitted, name):
    model = fitted[name]
    reference = model.predict(frame)  # frame is sorted by (series, time) with a RangeIndex: the order it always had
    keyed = reference.set_index(["series_id", "time"])
    for label, log in _logs(frame).items():
        out = model.predict(log)
        assert out.index.equals(log.index), label
        assert (out["series_id"].to_numpy() == log["series_id"].to_numpy()).all(), label
        assert (out["time"].to_numpy() == log["time"].to_numpy()).all(), label
        expected = keyed.loc[list(zip(log["series_id"], log["time"]))][STATES].to_numpy()
        np.testing.assert_allclose(out[STATES].to_numpy(), expected, rtol=1e-6, atol=1e-9)
        residual = log[STATES] - out[STATES]  # what a user writes: aligned on the index
        assert not residual.isna().any().any(), label


def test_draws_and_intervals_at_xs_own_times_follow_xs_rows(frame, fitted):
    model = fitted["NeuralSDE"]
    log = _logs(frame)["shuffled"]
    draws = model.sample(log, n_samples=2, random_state=0)
    assert draws.index.get_level_values(0).unique().tolist() == [0, 1]
    assert draws.loc[0].index.equals(log.index)
    low, high = model.predict_interval(log, coverage=0.8)
    assert low.index.equals(log.index) and high.index.equals(log.index)
    assert (low["series_id"].to_numpy() == log["series_id"].to_numpy()).all()


def test_the_scaler_keeps_row_order_and_index_both_ways(frame):
    scaler = SeriesScaler().fit(frame)
    log = _logs(frame)["shuffled"]
    scaled = scaler.transform(log)
    assert scaled.index.equals(log.index)
    assert (scaled["time"].to_numpy() == log["time"].to_numpy()).all()
    back = scaler.inverse_transform(scaled)
    assert back.index.equals(log.index)
    np.testing.assert_allclose(back[STATES].to_numpy(), log[STATES].to_numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: NeuralODE(max_epochs=1, random_state=0, n_threads=1),
                                  lambda: HamiltonianNN(max_epochs=1, random_state=0, n_threads=1)])
def test_labelled_states_are_read_by_name(frame, make):
    model = make().fit(frame)
    x0 = frame[STATES].iloc[0]
    forward = model.simulate(x0, [0.0, 1.0])
    np.testing.assert_array_equal(model.simulate(x0[["p", "q"]], [0.0, 1.0]), forward)
    np.testing.assert_array_equal(model.simulate(x0.to_numpy(), [0.0, 1.0]), forward)  # plain: by position
    rows = frame.iloc[:3]
    np.testing.assert_array_equal(model.vector_field(rows[["p", "q"]]), model.vector_field(rows[STATES]))
    np.testing.assert_array_equal(model.vector_field(rows), model.vector_field(rows[STATES]))  # extra columns
    with pytest.raises(InputError, match=r"x0.*missing \['p'\]"):
        model.simulate(x0.rename({"p": "momentum"}), [0.0, 1.0])


@pytest.mark.parametrize("make", [lambda: NeuralODE(max_epochs=1, random_state=0, n_threads=1),
                                  lambda: NeuralSDE(max_epochs=1, random_state=0, n_threads=1)])
def test_a_variable_a_series_never_observed_does_not_bring_its_units(frame, make):
    history = frame[frame.time <= 5].copy()
    history.loc[history.series_id == 2, "p"] = np.nan  # p never measured in series 2's history
    queries = pd.DataFrame({"series_id": [2, 2, 0], "time": [6.0, 7.0, 6.0]})
    forecasts = []
    for offset in (0.0, 3.0):  # about ten standard deviations of p
        model = make().fit(frame.assign(p=frame.p + offset))
        forecasts.append(model.predict(history.assign(p=history.p + offset), t=queries)["q"].to_numpy())
    np.testing.assert_allclose(forecasts[1], forecasts[0], rtol=1e-5, atol=1e-6)


def test_the_naive_forecaster_refuses_a_variable_never_observed(frame):
    blank = frame.assign(z=np.nan)
    with pytest.raises(InputError, match=r"every feature observed.*\['z'\]"):
        LastValueForecaster().fit(blank)


def test_a_multiindex_named_time_then_series_is_read_by_its_names(frame, fitted):
    model = fitted["LastValueForecaster"]
    usual, swapped = frame.set_index(["series_id", "time"]), frame.set_index(["time", "series_id"])
    out = model.predict(swapped)
    assert out.index.names == ["time", "series_id"] and out.index.equals(swapped.index)
    np.testing.assert_array_equal(out.to_numpy(), model.predict(usual).to_numpy())
    queries = pd.DataFrame(index=pd.MultiIndex.from_tuples([(9.0, 1), (9.5, 0)], names=["time", "series_id"]))
    ahead = model.predict(usual, t=queries)
    expected = usual.groupby(level="series_id").last().loc[[1, 0]].to_numpy()
    np.testing.assert_array_equal(ahead.to_numpy(), expected)


def test_labels_by_position_warn_where_first_appearance_is_not_the_sorted_order():
    from dynlearn import ODERNNClassifier

    panel = make_damped_oscillator(n_series=4, n_times=12, random_state=0)
    log = panel.assign(time=panel.time + panel.series_id % 2).sort_values(["time", "series_id"])  # 1, 3 first
    assert log.series_id.drop_duplicates().tolist() != [0, 1, 2, 3]
    labels = pd.Series([0, 1, 0, 1], index=[0, 1, 2, 3])
    classifier = ODERNNClassifier(max_epochs=1, random_state=0, n_threads=1)
    with pytest.warns(UserWarning, match="order of first appearance"):
        classifier.fit(log, labels.to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier.fit(log, labels)  # by id: nothing to say
        classifier.fit(panel, labels.to_numpy())  # first appearance is the sorted order
