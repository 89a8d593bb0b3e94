"""AutoForecaster picks by backtest within its budget, and LastValueForecaster is a real naive forecaster."""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

import dynlearn
from dynlearn import AutoForecaster, InputError, LastValueForecaster, NeuralODE, SeriesScaler, TrainingError
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import forecast_score, interval_coverage

SMALL_NODE = dict(hidden_layer_sizes=(16,), max_epochs=4, random_state=0, device="cpu")


def _one_series(values, name="y"):
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"series_id": 0, "time": np.arange(len(values), dtype=float), name: values})


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Broken(BaseEstimator):
    """A candidate whose fit always fails."""

    def fit(self, X, y=None, **kwargs):
        raise RuntimeError("this candidate cannot fit")

    def predict(self, X, t=None):
        raise AssertionError("never fitted")


class _SlowNaive(BaseEstimator):
    """The naive forecaster, slowed down: a candidate whose folds take a known time."""

    def __init__(self, delay=0.3):
        self.delay = delay

    def fit(self, X, y=None, **kwargs):
        time.sleep(self.delay)
        self.model_ = LastValueForecaster().fit(X)
        return self

    def predict(self, X, t=None, **kwargs):
        return self.model_.predict(X, t, **kwargs)


# ------------------------------------------------------------- naive model
def test_last_value_forecasts_the_latest_earlier_observation_per_variable():
    frame = pd.DataFrame({
        "series_id": [0, 0, 0, 1, 1],
        "time": [0.0, 1.0, 2.0, 0.0, 1.0],
        "a": [1.0, 2.0, np.nan, 10.0, 11.0],
        "b": [5.0, np.nan, 7.0, np.nan, np.nan],
    })
    model = LastValueForecaster().fit(frame)
    query = pd.DataFrame({"series_id": [0, 0, 0, 1], "time": [-1.0, 1.0, 5.0, 3.0]})
    out = model.predict(frame, t=query)
    # Before the first observation: the first; at an observed time: the one strictly before; a gap is skipped.
    assert out["a"].tolist() == [1.0, 1.0, 2.0, 11.0]
    assert out["b"].tolist()[:3] == [5.0, 5.0, 7.0]
    assert out["b"].iloc[3] == pytest.approx(6.0)  # never observed in series 1: the mean fit saw
    # One-step predictions are the previous observation, as a forecaster's predict(X) is.
    steps = model.predict(frame)
    assert steps["a"].tolist()[1:3] == [1.0, 2.0]


def test_last_value_intervals_save_and_load(tmp_path):
    frame = make_damped_oscillator(n_series=6, n_times=30, noise=0.05, random_state=0)
    model = LastValueForecaster().fit(frame)
    history, future = frame[frame["time"] <= 6], frame[frame["time"] > 6]
    lower, upper = model.predict_interval(history, t=future[["series_id", "time"]], coverage=0.9)
    assert (lower[["q", "p"]] <= upper[["q", "p"]]).all().all()
    assert interval_coverage(future, lower, upper) > 0.7
    loaded = dynlearn.load(model.save(tmp_path / "naive.dlm"))
    pd.testing.assert_frame_equal(loaded.predict(history, t=[7.0, 8.0]), model.predict(history, t=[7.0, 8.0]))
    assert model.score(frame, horizon=3) == loaded.score(frame, horizon=3)


# ------------------------------------------------------------------ choice
def test_random_walk_gets_the_naive_forecaster_or_a_tie():
    # Many walks, so that each fold scores many forecasts: on a few, chance decides.
    steps = np.random.default_rng(0).standard_normal((20, 60))
    walk = pd.DataFrame({"series_id": np.repeat(np.arange(20), 60), "time": np.tile(np.arange(60.0), 20),
                         "y": np.cumsum(steps, axis=1).ravel()})
    auto = AutoForecaster(horizon=5, candidates=[NeuralODE(**SMALL_NODE)], cv=3, random_state=0).fit(walk)
    board = auto.leaderboard_.set_index("candidate")
    naive, model = board.loc["last_value", "mean_error"], board.loc["NeuralODE", "mean_error"]
    assert isinstance(auto.best_estimator_, LastValueForecaster) or model > 0.9 * naive
    assert auto.baseline_score_ == pytest.approx(naive)


@pytest.fixture(scope="module")
def oscillation():
    """An oscillation with a little noise, its last 12 steps held out, and an AutoForecaster fitted on the rest."""
    t = np.arange(100.0)
    wave = _one_series(np.sin(2 * np.pi * t / 12.5) + 0.05 * np.random.default_rng(1).standard_normal(100))
    train, test = wave.iloc[:88], wave.iloc[88:94]
    node = NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=40, horizon=6.0, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = AutoForecaster(horizon=6, candidates={"node": node}, cv=3).fit(train)
    return auto, train, test


def test_oscillation_picks_a_model_that_beats_the_naive_forecast(oscillation):
    auto, train, test = oscillation
    assert auto.best_name_ == "node" and isinstance(auto.best_estimator_, NeuralODE)
    assert auto.best_score_ < 0.5 * auto.baseline_score_
    assert auto.best_params_["hidden_layer_sizes"] == (32, 32)
    # The refitted winner forecasts the held-out future from the history, in the user's kind, better than naive.
    future = auto.predict(train, t=test[["series_id", "time"]])
    assert list(future.columns) == ["series_id", "time", "y"] and len(future) == 6
    naive = LastValueForecaster().fit(train).predict(train, t=test[["series_id", "time"]])
    assert np.mean((future["y"] - test["y"]) ** 2) < np.mean((naive["y"] - test["y"]) ** 2)


def test_one_series_winner_gets_intervals_from_its_backtest(oscillation):
    auto, train, test = oscillation
    # One series cannot be held out whole, so the fit alone leaves the model uncalibrated; the backtest calibrates.
    assert auto.best_estimator_.conformal_residuals_.shape == (3 * 6, 1)
    lower, upper = auto.predict_interval(train, t=test[["series_id", "time"]], coverage=0.8)
    assert (upper["y"] - lower["y"] > 0).all()
    assert interval_coverage(test, lower, upper) >= 0.5
    quantiles = auto.predict_quantiles(train, t=test[["series_id", "time"]], quantiles=(0.1, 0.9))
    np.testing.assert_allclose(quantiles.xs(0.1, level="quantile")["y"], lower["y"])


# ------------------------------------------------------------------ budget
def test_budget_skips_candidates_and_folds_once_spent():
    frame = _one_series(np.sin(np.arange(60.0)))
    auto = AutoForecaster(horizon=4, cv=3, time_budget=0.5,
                          candidates={"slow": _SlowNaive(delay=0.3), "later": _SlowNaive(delay=0.3)}).fit(frame)
    board = auto.leaderboard_.set_index("candidate")
    # The naive candidate runs first whatever the budget; "slow" starts two folds, then the budget is gone.
    assert board.loc["last_value", "status"] == "ok" and board.loc["last_value", "n_folds"] == 3
    assert board.loc["slow", "status"] == "skipped" and board.loc["slow", "n_folds"] == 2
    assert "before fold 3" in board.loc["slow", "note"]
    assert board.loc["later", "status"] == "skipped" and board.loc["later", "n_folds"] == 0
    assert "before it started" in board.loc["later", "note"]
    assert auto.best_name_ == "last_value"
    assert auto.search_time_ < 0.5 + 0.3 + 0.25  # spent budget plus the one fold fit that was under way


# ------------------------------------------------------------ leaderboard
def test_leaderboard_and_cv_results_describe_every_candidate():
    frame = make_damped_oscillator(n_series=4, n_times=30, random_state=0)
    candidates = [NeuralODE(**SMALL_NODE), _Broken(), NeuralODE(**{**SMALL_NODE, "max_epochs": 2})]
    auto = AutoForecaster(horizon=3, candidates=candidates, cv=2).fit(frame)
    board = auto.leaderboard_
    assert list(board.columns) == ["candidate", "estimator", "mean_error", "std_error", "n_folds", "mean_fit_time",
                                   "total_time", "status", "note"]
    assert set(board["candidate"]) == {"last_value", "NeuralODE_1", "_Broken", "NeuralODE_2"}
    ok = board[board["status"] == "ok"]
    assert ok["mean_error"].is_monotonic_increasing and (ok["n_folds"] == 2).all()
    assert board["candidate"].iloc[0] == auto.best_name_ and board["status"].iloc[-1] == "failed"
    failed = board.set_index("candidate").loc["_Broken"]
    assert "RuntimeError: this candidate cannot fit" in failed["note"] and np.isnan(failed["mean_error"])
    results = auto.cv_results_
    assert {"split0_test_error", "split1_test_error", "mean_test_error", "rank_test_error"} <= set(results)
    best = list(results["candidate"]).index(auto.best_name_)
    assert results["rank_test_error"][best] == 1
    # The backtest errors are forecast_score's on each fold, here the last fold recomputed.
    fold_model = clone(auto.best_estimator_).fit(frame[frame["time"] <= frame["time"].unique()[-4]])
    assert results["split1_test_error"][best] == pytest.approx(
        forecast_score(fold_model, frame, 3, metric="mse"), rel=1e-5)


def test_every_candidate_failing_raises_with_each_error():
    def broken_metric(y_true, y_pred):
        raise ValueError("metric exploded")

    frame = _one_series(np.sin(np.arange(40.0)))
    with pytest.raises(TrainingError, match="last_value: fold 1: ValueError: metric exploded") as caught:
        AutoForecaster(horizon=3, candidates=[_Broken()], metric=broken_metric, cv=2).fit(frame)
    assert "_Broken: fold 1: RuntimeError" in str(caught.value) and "lower the horizon" in str(caught.value)


# ------------------------------------------------------------ inputs, API
def test_series_array_and_panel_inputs_come_back_in_their_kind():
    values = np.sin(0.4 * np.arange(50.0))
    series = pd.Series(values, index=pd.date_range("2024-01-01", periods=50, freq="D"), name="load")
    auto = AutoForecaster(horizon=3, candidates=[NeuralODE(**SMALL_NODE)], cv=2).fit(series)
    out = auto.predict(series, t=pd.date_range("2024-02-20", periods=2, freq="D"))
    assert list(out.columns) == ["load"] and len(out) == 2
    panel = np.stack([np.sin(0.4 * np.arange(30.0) + phase) for phase in (0.0, 1.0, 2.0)])[..., None]
    auto = AutoForecaster(horizon=3, candidates=[NeuralODE(**SMALL_NODE)], cv=2).fit(panel)
    assert auto.predict(panel, t=[30.0, 31.0]).shape == (3, 2, 1)
    assert auto.leaderboard_["n_folds"].max() == 2


def test_clone_get_params_pipeline_and_pickle():
    candidates = {"node": NeuralODE(**SMALL_NODE)}
    auto = AutoForecaster(horizon=3, candidates=candidates, time_budget=30, cv=2, random_state=0)
    params = clone(auto).get_params(deep=False)
    assert params["horizon"] == 3 and params["time_budget"] == 30 and params["cv"] == 2
    assert params["candidates"]["node"].get_params() == candidates["node"].get_params()
    assert auto.set_params(horizon=4).horizon == 4
    frame = make_damped_oscillator(n_series=3, n_times=25, random_state=0)
    pipe = Pipeline([("scale", SeriesScaler()), ("auto", auto)]).fit(frame)
    assert pipe.predict(frame, t=[25.0]).shape == (3, 4)
    fitted = pipe["auto"]
    restored = pickle.loads(pickle.dumps(fitted))
    history = pipe["scale"].transform(frame)
    pd.testing.assert_frame_equal(restored.predict(history, t=[26.0]), fitted.predict(history, t=[26.0]))
    assert not hasattr(AutoForecaster(), "sample")  # unfitted: no winner to ask
    assert not hasattr(fitted, "sample") or hasattr(fitted.best_estimator_, "sample")


def test_default_candidates_are_documented_and_horizon_aware():
    defaults = AutoForecaster.default_candidates(horizon=4.0, random_state=3)
    assert list(defaults) == ["last_value", "node_delay", "node_encoder", "odernn", "neural_sde"]
    assert defaults["node_delay"].horizon == 4.0 and defaults["node_encoder"].hidden_init == "encoder"
    assert defaults["odernn"].random_state == 3


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(horizon=0), "horizon"),
        (dict(horizon=1.5, datetimes=True), "Timedelta span"),  # a float span for datetime times
        (dict(time_budget=0), "time_budget"),
        (dict(cv="three"), "cv"),
        (dict(metric="r2"), "metric"),
        (dict(candidates=[object()]), "candidates"),
        (dict(candidates=[("a", NeuralODE()), ("a", NeuralODE())]), "distinct"),
        (dict(candidates={}), "candidates"),
    ],
)
def test_bad_parameters_raise_input_errors(params, match):
    frame = _one_series(np.sin(np.arange(30.0)))
    if params.pop("datetimes", False):
        frame = frame.assign(time=pd.date_range("2024", periods=30, freq="h"))
    with pytest.raises(InputError, match=match):
        AutoForecaster(**{"horizon": 3, "cv": 2, **params}).fit(frame)


def test_data_too_short_for_the_folds_says_how_many_fit():
    with pytest.raises(InputError, match="n_splits"):
        AutoForecaster(horizon=5, cv=4, candidates=[NeuralODE(**SMALL_NODE)]).fit(_one_series(np.arange(12.0)))


def test_unfitted_auto_forecaster_refuses_to_predict():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        AutoForecaster().predict(np.zeros((3, 1)))


def test_default_horizon_is_steps_on_shared_times_and_a_span_on_irregular_panels():
    regular = make_damped_oscillator(n_series=3, n_times=30, random_state=0)
    auto = AutoForecaster(candidates=[NeuralODE(**SMALL_NODE)], cv=2).fit(regular)
    assert auto.horizon_ == 6  # a fifth of 30 observations
    irregular = make_damped_oscillator(n_series=6, n_times=30, t_span=(0, 10), irregular=True, random_state=0)
    auto = AutoForecaster(candidates=[NeuralODE(**SMALL_NODE)], cv=2).fit(irregular)
    assert isinstance(auto.horizon_, float) and 1.5 < auto.horizon_ < 2.5  # a fifth of each series' 10 units
    assert (auto.leaderboard_["status"] == "ok").all()


def test_docstring_examples_run():
    import doctest

    import dynlearn._auto

    assert doctest.testmod(dynlearn._auto, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# ------------------------------------------------------------ seasonal naive
def test_seasonal_naive_repeats_the_last_cycle_on_calendar_months():
    from dynlearn import SeasonalNaiveForecaster

    index = pd.date_range("2000-01-01", periods=60, freq="MS", name="time")
    frame = pd.DataFrame({"y": 10 + 5 * np.sin(2 * np.pi * np.arange(60) / 12) + 0.1 * np.arange(60)}, index=index)
    model = SeasonalNaiveForecaster(period=12).fit(frame[:48])
    # Months of 28 to 31 days: the mean spacing keeps every month in its season over the two forecast years.
    queries = pd.date_range("2004-01-01", periods=24, freq="MS", name="time")
    forecast = model.predict(frame[:48], t=queries)
    np.testing.assert_array_equal(forecast["y"].to_numpy(), np.tile(frame["y"].to_numpy()[36:48], 2))
    lower, upper = model.predict_interval(frame[:48], t=queries)
    assert (lower["y"] <= upper["y"]).all()


def test_seasonal_naive_skips_gaps_and_falls_back_to_the_last_value():
    from dynlearn import SeasonalNaiveForecaster

    t = np.array([0.0, 1.0, 2.0, 3.0, 5.0])  # time 4 (season 1) is missing
    X = np.array([1.0, 5.0, 3.0, 2.0, 4.0])[:, None]
    model = SeasonalNaiveForecaster(period=3).fit(X, t=t)
    # 7 is in season 1: its latest earlier observation there is at time 1 (5.0); 6 in season 0 is time 3 (2.0).
    assert model.predict(X, t=[6.0, 7.0, 8.0], X_t=t).ravel().tolist() == [2.0, 5.0, 4.0]
    # At the start no earlier observation shares the season: the latest value stands in.
    assert model.predict(X, X_t=t).ravel().tolist()[:3] == [1.0, 1.0, 5.0]


def test_seasonal_naive_with_drift_carries_a_trend_on_top_of_the_season():
    from dynlearn import SeasonalNaiveForecaster

    index = pd.date_range("2000-01-01", periods=60, freq="MS", name="time")
    truth = 10 + 5 * np.sin(2 * np.pi * np.arange(84) / 12) + 0.1 * np.arange(84)  # 1.2 higher per year
    frame = pd.DataFrame({"y": truth[:60]}, index=index).drop(index[[7, 30, 31]])  # gaps: fewer pairs, same mean
    queries = pd.date_range("2005-01-01", periods=24, freq="MS", name="time")
    forecast = SeasonalNaiveForecaster(period=12, drift=True).fit(frame).predict(frame, t=queries)
    np.testing.assert_allclose(forecast["y"].to_numpy(), truth[60:], atol=1e-9)
    plain = SeasonalNaiveForecaster(period=12).fit(frame).predict(frame, t=queries)
    assert np.abs(plain["y"].to_numpy() - truth[60:]).min() > 1.0  # a year behind, or two
    # Without two observations a cycle apart there is no change to carry: the plain seasonal forecast.
    short = frame.iloc[:10]
    np.testing.assert_array_equal(SeasonalNaiveForecaster(period=12, drift=True).fit(short).predict(short, t=queries),
                                  SeasonalNaiveForecaster(period=12).fit(short).predict(short, t=queries))


@pytest.mark.parametrize("period", [1, 2.5, True, "12"])
def test_seasonal_period_must_be_a_count(period):
    from dynlearn import SeasonalNaiveForecaster

    X = np.arange(12.0)[:, None]
    with pytest.raises(InputError, match="period"):
        SeasonalNaiveForecaster(period=period).fit(X)
    with pytest.raises(InputError, match="seasonal_period"):
        AutoForecaster(seasonal_period=period, candidates=[LastValueForecaster()]).fit(X)


def test_auto_with_a_season_picks_the_seasonal_candidate_on_a_seasonal_series():
    t = np.arange(96.0)
    rng = np.random.default_rng(0)
    X = (np.where(t % 12 < 6, 10.0, -10.0) + rng.normal(0, 0.5, t.size))[:, None]  # a square season
    auto = AutoForecaster(horizon=12, cv=2, seasonal_period=12, candidates=None, time_budget=0.01).fit(X)
    board = auto.leaderboard_.set_index("candidate")
    # The budget is spent before any model: the naive forecasters are still compared.
    assert (board.loc[["seasonal_naive", "seasonal_naive_drift"], "status"] == "ok").all()
    assert auto.best_name_ in ("seasonal_naive", "seasonal_naive_drift")
    assert board.loc[auto.best_name_, "mean_error"] < 0.1 * board.loc["last_value", "mean_error"]
    # With a trend on top of the season, the drift's forecast wins the backtest.
    trending = X + 0.5 * t[:, None]
    auto = AutoForecaster(horizon=24, cv=2, seasonal_period=12, candidates=None, time_budget=0.01).fit(trending)
    board = auto.leaderboard_.set_index("candidate")
    assert auto.best_name_ == "seasonal_naive_drift"
    assert board.loc["seasonal_naive_drift", "mean_error"] < 0.5 * board.loc["seasonal_naive", "mean_error"]


def test_with_covariates_every_candidate_reads_the_inputs_and_one_that_cannot_is_skipped():
    from dynlearn.datasets import make_forced_oscillator

    frame = make_forced_oscillator(n_series=16, n_times=40, t_span=(0.0, 15.0), random_state=0)
    train, test = frame[frame.series_id < 12], frame[frame.series_id >= 12]
    candidates = {
        "node": NeuralODE(hidden_layer_sizes=(32, 32), solver="rk4", max_epochs=40, random_state=0),
        "needs_no_inputs": _Broken(),  # no covariates parameter: skipped before any fit
    }
    auto = AutoForecaster(covariates=["u"], horizon=5.0, candidates=candidates, cv=2, time_budget=120,
                          random_state=0).fit(train)
    board = auto.leaderboard_.set_index("candidate")
    assert board.loc["needs_no_inputs", "status"] == "skipped"
    assert "takes no covariates" in board.loc["needs_no_inputs", "note"]
    assert auto.best_name_ == "node" and auto.best_estimator_.covariates == ["u"]
    history, future = test[test.time <= 7.5], test[test.time > 7.5]
    forecast = auto.predict(history, t=future[["series_id", "time", "u"]])
    assert list(forecast.columns) == ["series_id", "time", "q", "p"]
    # The naive forecast leaves the input out too, so both are scored on the same columns.
    naive = LastValueForecaster(covariates=["u"]).fit(train)
    assert list(naive.predict(history, t=future[["series_id", "time", "u"]]).columns) == ["series_id", "time", "q", "p"]
    assert auto.score(test, horizon=5.0) > naive.score(test, horizon=5.0)
    with pytest.raises(InputError, match="'u'"):
        auto.predict(history, t=future[["series_id", "time"]])
