"""Probabilistic scores against an independent implementation and brute-force formulas; the forecast scorer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dynlearn import InputError, NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import (
    QUANTILE_LEVEL,
    crps_ensemble,
    energy_score,
    forecast_score,
    interval_score,
    make_forecast_scorer,
    pinball_loss,
)

RNG = np.random.default_rng(0)
Y = RNG.normal(size=(3, 4, 2))
SAMPLES = RNG.normal(size=(5, 3, 4, 2))


# ------------------------------------------------------- brute-force oracles
def _crps_brute(y, members, fair):
    m = len(members)
    pairs = sum(abs(a - b) for a, b in itertools.product(members, members))
    return np.mean([abs(x - y) for x in members]) - pairs / (2 * (m * (m - 1) if fair else m * m))


def _energy_brute(y, members, fair):
    m = len(members)
    pairs = sum(np.linalg.norm(a - b) for a, b in itertools.product(members, members))
    return np.mean([np.linalg.norm(x - y) for x in members]) - pairs / (2 * (m * (m - 1) if fair else m * m))


@pytest.mark.parametrize("fair", [False, True])
def test_crps_matches_the_pairwise_formula_entry_by_entry(fair):
    expected = np.array([[_crps_brute(Y[i, k, j], SAMPLES[:, i, k, j], fair) for j in range(2)]
                         for i in range(3) for k in range(4)]).mean(axis=0)
    np.testing.assert_allclose(crps_ensemble(Y, SAMPLES, fair=fair, multioutput="raw_values"), expected, rtol=1e-12)


def test_fair_crps_is_unbiased_for_the_crps_of_the_distribution_and_the_plain_one_is_not():
    # CRPS of N(0, 1) at y = 0 is 2 φ(0) - 1/sqrt(π) = (sqrt(2) - 1) / sqrt(π).
    exact = (np.sqrt(2) - 1) / np.sqrt(np.pi)
    draws = np.random.default_rng(1).normal(size=(3, 20_000))  # 20 000 ensembles of 3 members
    y = np.zeros(20_000)
    fair = crps_ensemble(y, draws, fair=True)
    plain = crps_ensemble(y, draws, fair=False)
    assert abs(fair - exact) < 0.01
    # The plain estimator overstates it by E|X - X'| / (2m) = (2 / sqrt(π)) / 6.
    assert abs(plain - exact - 2 / np.sqrt(np.pi) / 6) < 0.01


@pytest.mark.parametrize("fair", [False, True])
def test_energy_score_matches_the_pairwise_formula_and_reduces_to_crps_in_one_dimension(fair):
    rows = [(i, k) for i in range(3) for k in range(4)]
    expected = np.mean([_energy_brute(Y[i, k], SAMPLES[:, i, k], fair) for i, k in rows])
    assert energy_score(Y, SAMPLES, fair=fair) == pytest.approx(expected, rel=1e-12)
    assert energy_score(Y[..., :1], SAMPLES[..., :1], fair=fair) == pytest.approx(
        crps_ensemble(Y[..., :1], SAMPLES[..., :1], fair=fair), rel=1e-12)


def test_energy_score_uses_the_observed_features_of_a_row_and_skips_empty_rows():
    y = Y.copy()
    y[0, 0, 1] = np.nan
    y[1, 2] = np.nan
    rows = [(i, k) for i in range(3) for k in range(4) if (i, k) != (1, 2)]
    expected = np.mean([
        _energy_brute(y[i, k][np.isfinite(y[i, k])], SAMPLES[:, i, k][:, np.isfinite(y[i, k])], False) for i, k in rows
    ])
    assert energy_score(y, SAMPLES) == pytest.approx(expected, rel=1e-12)


def test_interval_score_by_hand():
    y = np.array([[0.5], [-1.0], [3.0]])
    lower, upper = np.zeros((3, 1)), np.ones((3, 1))
    # inside: width 1; below by 1: 1 + 2/0.2 * 1; above by 2: 1 + 2/0.2 * 2
    assert interval_score(y, lower, upper, alpha=0.2) == pytest.approx((1 + 11 + 21) / 3)


def test_pinball_loss_by_hand_for_one_and_several_levels():
    y = np.array([[1.0], [2.0]])
    q = np.array([[2.0], [1.0]])
    # τ = 0.9: y below q costs 0.1 * 1, y above q costs 0.9 * 1
    assert pinball_loss(y, q, 0.9) == pytest.approx(0.5)
    stacked = np.stack([q, q])
    assert pinball_loss(y, stacked, [0.9, 0.5]) == pytest.approx((0.5 + 0.5) / 2)


def _oracle():
    # scoringrules (numpy and scipy only) is the independent implementation; it needs Python >= 3.11.
    return pytest.importorskip("scoringrules")


@pytest.mark.parametrize("fair", [False, True])
def test_crps_and_energy_score_agree_with_scoringrules(fair):
    sr = _oracle()
    estimator = "fair" if fair else "nrg"
    expected = sr.crps_ensemble(Y, np.moveaxis(SAMPLES, 0, -1), estimator=estimator).reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(crps_ensemble(Y, SAMPLES, fair=fair, multioutput="raw_values"), expected, rtol=1e-10)
    expected = sr.es_ensemble(Y, np.moveaxis(SAMPLES, 0, -2), estimator=estimator).mean()
    assert energy_score(Y, SAMPLES, fair=fair) == pytest.approx(expected, rel=1e-10)


def test_interval_score_and_pinball_loss_agree_with_scoringrules():
    sr = _oracle()
    lower, upper = Y - 0.5 + 0.3 * SAMPLES[0], Y + 0.4
    expected = sr.interval_score(Y, lower, upper, 0.2).reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(interval_score(Y, lower, upper, alpha=0.2, multioutput="raw_values"), expected)
    levels = [0.1, 0.5, 0.9]
    expected = np.mean([sr.quantile_score(Y, SAMPLES[i], tau).mean() for i, tau in enumerate(levels)])
    assert pinball_loss(Y, SAMPLES[:3], levels) == pytest.approx(expected, rel=1e-10)


def test_probabilistic_scores_on_frames_mask_missing_values_and_read_quantile_levels():
    frame = pd.DataFrame({"series_id": [0, 0, 1, 1], "time": [0.0, 1.0, 0.0, 1.0], "x": [1.0, np.nan, 3.0, 4.0]})
    keys = ["series_id", "time"]
    low = frame.assign(x=[0.0, 0.0, 3.5, 3.0])
    high = frame.assign(x=[2.0, 0.0, 4.5, 5.0])
    arrays = frame["x"].to_numpy()[:, None], low["x"].to_numpy()[:, None], high["x"].to_numpy()[:, None]
    assert interval_score(frame, low, high, alpha=0.5) == pytest.approx(interval_score(*arrays, alpha=0.5))
    assert interval_score(*arrays, alpha=0.5) == pytest.approx((2 + (1 + 4 * 0.5) + 2) / 3)
    quantiles = pd.concat([low.set_index(keys), high.set_index(keys)], keys=[0.25, 0.75], names=[QUANTILE_LEVEL])
    expected = pinball_loss(arrays[0], np.stack(arrays[1:]), [0.25, 0.75])
    assert pinball_loss(frame, quantiles) == pytest.approx(expected)
    assert np.isfinite(expected)


def test_quantile_level_name_is_the_one_predict_quantiles_writes():
    from dynlearn.estimators._neural_sde import QUANTILE_LEVEL as written

    assert QUANTILE_LEVEL == written


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: interval_score(Y, Y - 1, Y + 1, alpha=1.5), "alpha"),
        (lambda: interval_score(Y, Y + 1, Y - 1, alpha=0.1), "y_lower"),
        (lambda: pinball_loss(Y, Y, 1.2), "quantiles"),
        (lambda: pinball_loss(Y, SAMPLES, [0.1, 0.5]), "quantiles"),
        (lambda: crps_ensemble(Y, SAMPLES[:1], fair=True), "y_samples"),
        (lambda: energy_score(Y, SAMPLES[:1], fair=True), "y_samples"),
    ],
)
def test_probabilistic_scores_reject_bad_input_naming_the_argument(call, argument):
    with pytest.raises(InputError, match=argument):
        call()


# ------------------------------------------------------------ forecast scorer
class _Known:
    """An estimator double: predicts ``offset`` plus each query time, records what it was given."""

    def __init__(self, offset=0.0):
        self.offset = offset

    def predict(self, X, t=None):
        self.history_, self.query_ = X, t
        out = t.copy()
        out["x"] = out["time"].astype(float) + self.offset
        return out


def _ramp(n_series=2, n_times=6):
    frame = pd.DataFrame({
        "series_id": np.repeat(np.arange(n_series), n_times),
        "time": np.tile(np.arange(n_times, dtype=float), n_series),
    })
    frame["x"] = frame["time"] + 10.0 * frame["series_id"]  # series 1 is off by 10 from the double's forecast
    return frame


def test_scorer_conditions_on_the_history_and_scores_the_exact_future_error():
    frame = _ramp()
    model = _Known(offset=1.0)
    # Future = times 4 and 5 of each series; the double predicts time + 1, series 1 lies at time + 10.
    errors = np.array([1.0, 1.0, -9.0, -9.0])
    assert make_forecast_scorer(horizon=2)(model, frame) == pytest.approx(-np.mean(errors**2))
    assert make_forecast_scorer(horizon=2, metric="mae")(model, frame) == pytest.approx(-9 / 2 - 1 / 2)
    assert make_forecast_scorer(horizon=2, metric="rmse")(model, frame) == pytest.approx(-np.sqrt(41.0))
    assert list(model.history_["time"]) == [0, 1, 2, 3] * 2
    assert list(model.query_.columns) == ["series_id", "time"]  # the future's values are not handed to predict
    assert list(model.query_["time"]) == [4.0, 5.0] * 2
    # MASE: MAE over the one-step naive MAE within the histories (1 per step).
    assert make_forecast_scorer(horizon=2, metric="mase")(model, frame) == pytest.approx(-5.0)


def test_time_span_horizon_cuts_every_series_at_the_latest_time_minus_the_span():
    frame = _ramp()
    model = _Known()
    make_forecast_scorer(horizon=1.5)(model, frame)
    assert sorted(set(model.query_["time"])) == [4.0, 5.0]
    make_forecast_scorer(horizon=2.0)(model, frame)  # rows after 5 - 2 = 3
    assert sorted(set(model.query_["time"])) == [4.0, 5.0]


def test_missing_future_values_are_masked_and_short_series_skipped():
    frame = _ramp(n_series=3)
    frame.loc[(frame.series_id == 1) & (frame.time == 5.0), "x"] = np.nan
    frame = frame[~((frame.series_id == 2) & (frame.time < 4))]  # series 2 has no history before the cut
    model = _Known()
    expected = -np.mean([0.0, 0.0, 10.0**2])  # series 0 exact, series 1 only at time 4
    assert make_forecast_scorer(horizon=2)(model, frame) == pytest.approx(expected)
    assert set(model.query_["series_id"]) == {0, 1}


def test_no_series_long_enough_is_a_clear_error():
    with pytest.raises(InputError, match="none long enough"):
        make_forecast_scorer(horizon=6)(_Known(), _ramp())


def test_datetime_frames_take_timedelta_horizons_and_refuse_plain_floats():
    frame = _ramp(n_times=6)
    frame["time"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["time"], unit="h")
    captured = []

    class Double:
        def predict(self, X, t=None):
            captured.append(t)
            return t.assign(x=0.0)

    make_forecast_scorer(horizon="2h")(Double(), frame)
    assert captured[-1]["time"].min() == pd.Timestamp("2024-01-01 04:00")
    with pytest.raises(InputError, match="Timedelta"):
        make_forecast_scorer(horizon=2.0)(Double(), frame)


def test_scorer_options_are_checked():
    with pytest.raises(InputError, match="metric"):
        make_forecast_scorer(2, metric="accuracy")
    with pytest.raises(InputError, match="greater_is_better"):
        make_forecast_scorer(2, metric=lambda a, b: 0.0)
    with pytest.raises(InputError, match="greater_is_better"):
        make_forecast_scorer(2, metric="mse", greater_is_better=True)
    with pytest.raises(InputError, match="horizon"):
        make_forecast_scorer(0)(_Known(), _ramp())
    scorer = make_forecast_scorer(2, metric=lambda truth, pred: 7.0, greater_is_better=False)
    assert scorer(_Known(), _ramp()) == -7.0


@pytest.fixture(scope="module")
def oscillator():
    frame = make_damped_oscillator(n_series=6, n_times=40, random_state=0)
    model = NeuralODE(hidden_layer_sizes=(32,), max_epochs=30, random_state=0, device="cpu").fit(frame)
    return frame, model


def test_scorer_ranks_a_fitted_model_above_a_bad_one(oscillator):
    frame, model = oscillator
    scorer = make_forecast_scorer(horizon=5)
    good = scorer(model, frame)

    class Zero:
        def predict(self, X, t=None):
            return t.assign(q=0.0, p=0.0)

    bad = scorer(Zero(), frame)
    assert good > bad
    assert good > -0.05  # a tenth of the variables' variance or better over five steps
    assert model.score(frame, horizon=5) > 0.5


def test_score_with_horizon_is_the_forecast_r2_on_frames_and_arrays(oscillator):
    frame, model = oscillator
    by_frame = model.score(frame, horizon=5)
    assert by_frame == pytest.approx(forecast_score(model, frame, 5))
    assert by_frame != pytest.approx(model.score(frame))  # not the one-step R²
    panel = frame.set_index(["series_id", "time"]).to_numpy().reshape(6, 40, 2)
    times = np.sort(frame["time"].unique())
    assert model.score(panel, t=times, horizon=5) == pytest.approx(by_frame)


@pytest.mark.parametrize("name", ["LatentODE", "LatentSDE", "NeuralSDE", "ODERNN", "HamiltonianNN"])
def test_every_forecaster_scores_forecasts_with_a_horizon(name):
    import dynlearn

    frame = make_damped_oscillator(n_series=3, n_times=12, random_state=0)
    model = getattr(dynlearn, name)(max_epochs=1, random_state=0, device="cpu").fit(frame)
    assert model.score(frame, horizon=3) == forecast_score(model, frame, 3)
    assert model.score(frame, horizon=3) != model.score(frame)


def test_forecast_score_of_an_array_needs_its_times_when_fitted_at_other_times():
    from dynlearn import NeuralODE
    from dynlearn.exceptions import InputError

    times = np.linspace(0.0, 3.0, 12)
    X = np.stack([np.sin(times + k) for k in range(3)])[..., None]
    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=1, random_state=0).fit(X, t=times)
    with pytest.raises(InputError, match="t"):
        model.score(X, horizon=3)
    assert np.isfinite(model.score(X, t=times, horizon=3))
