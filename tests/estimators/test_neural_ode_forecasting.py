"""NeuralODE as a forecaster: hidden state inferred from history, horizon-long training windows, stable extrapolation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.exceptions import ForecastRangeWarning, InputError

PERIOD = 12.0


def _noisy_sinusoid():
    t = np.arange(0.0, 10 * PERIOD)
    x = np.sin(2 * np.pi * t / PERIOD) + 0.1 * np.random.RandomState(0).randn(len(t))
    n_train = len(t) - int(2 * PERIOD)
    return t, x, n_train


def _sinusoid_forecast_r2(**options):
    t, x, n = _noisy_sinusoid()
    model = NeuralODE(hidden_layer_sizes=(32,), horizon=2 * PERIOD, max_epochs=60, random_state=0, device="cpu", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x[:n, None], t=t[:n])
    forecast = model.predict(x[:n, None], t=t[n:])[:, 0]
    truth = np.sin(2 * np.pi * t[n:] / PERIOD)
    return 1 - np.mean((forecast - truth) ** 2) / np.var(truth), model


def test_hidden_state_lets_a_univariate_series_oscillate_two_periods_ahead():
    with_hidden, model = _sinusoid_forecast_r2(hidden_init="encoder")
    without_hidden, plain = _sinusoid_forecast_r2(augment_dim=0)
    assert model.augment_dim_ == 2 and plain.augment_dim_ == 0  # "auto" gives univariate data hidden dimensions
    assert with_hidden > 0.9, with_hidden
    # A one-variable autonomous ODE is monotone in time: it cannot come back, so no better than the mean.
    assert without_hidden < 0.3, without_hidden


def test_zero_hidden_state_cannot_place_the_phase():
    r2, _ = _sinusoid_forecast_r2(hidden_init="zeros")
    assert r2 < 0.9, r2


def test_default_window_is_chosen_from_the_data():
    short = make_damped_oscillator(n_series=4, n_times=20, random_state=0)
    long = make_damped_oscillator(n_series=4, n_times=200, random_state=0)
    sizes = []
    for frame in (short, long):
        model = NeuralODE(hidden_layer_sizes=(4,), max_epochs=1, random_state=0, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sizes.append(model.fit(frame).window_size_)
    assert sizes == [10, 50]


def test_default_forecast_of_a_damped_system_stays_near_the_observed_range():
    frame = make_damped_oscillator(n_series=8, n_times=40, t_span=(0.0, 10.0), random_state=0)
    x = frame[frame["series_id"] == 0][["q"]].to_numpy()  # one observed coordinate of the oscillator
    t = frame[frame["series_id"] == 0]["time"].to_numpy()
    model = NeuralODE(max_epochs=30, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("error", category=ForecastRangeWarning)
        model.fit(x, t=t)
        forecast = model.predict(x, t=np.linspace(10.5, 100.0, 60), X_t=t)
    low, high = x.min(), x.max()
    assert np.all(np.abs(forecast - (low + high) / 2) <= 10 * (high - low))


def _constant_drift_model(stabilize: bool) -> tuple[NeuralODE, np.ndarray, np.ndarray]:
    """A fitted model whose field is then set to a constant upward drift of 5 standardised units per step."""
    t = np.arange(20.0)
    x = np.sin(t / 3)[:, None]
    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=1, augment_dim=0, stabilize=stabilize, random_state=0,
                      device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, t=t)
    last = model.module_.field.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(5.0)
    return model, x, t


def test_warning_fires_on_a_diverging_rollout():
    model, x, t = _constant_drift_model(stabilize=False)
    with pytest.warns(ForecastRangeWarning, match="outside"):
        forecast = model.predict(x, t=[60.0])
    assert forecast[0, 0] > 10 * np.ptp(x)
    with pytest.warns(ForecastRangeWarning):
        model.simulate(x[-1], [19.0, 60.0])


def test_stability_guard_holds_a_diverging_field_near_the_data():
    model, x, t = _constant_drift_model(stabilize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=ForecastRangeWarning)
        forecast = model.predict(x, t=[60.0, 500.0])
    # The pull back (rate 1 per step outside the box) balances the drift of 5 a few box widths away.
    assert np.all(forecast < x.max() + 10 * np.ptp(x))
    np.testing.assert_allclose(forecast[0], forecast[1], rtol=1e-3)


def test_delay_coordinates_need_enough_history():
    t = np.arange(20.0)
    model = NeuralODE(hidden_init="delay", augment_dim=3, history_length=3, max_epochs=1, device="cpu")
    with pytest.raises(InputError, match="history_length"):
        model.fit(np.sin(t)[:, None], t=t)


@pytest.mark.parametrize("hidden_init", ["encoder", "delay", "zeros"])
def test_hidden_state_options_predict_and_simulate(hidden_init):
    t = np.arange(30.0)
    x = np.sin(t / 3)[:, None]
    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, hidden_init=hidden_init, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, t=t)
    assert model.predict(x, t=[31.0, 32.0]).shape == (2, 1)
    assert model.predict(x).shape == x.shape
    assert model.simulate(x[0], [0.0, 1.0, 2.0]).shape == (3, 1)
