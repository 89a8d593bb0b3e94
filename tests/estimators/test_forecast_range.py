"""Forecasts stay near the data's range, and ForecastRangeWarning tells when one does not."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import dynlearn
from dynlearn import ODERNN
from dynlearn.datasets import make_damped_oscillator
from dynlearn.estimators._base import RANGE_FACTOR
from dynlearn.exceptions import ForecastRangeWarning

FORECASTERS = ["NeuralODE", "ODERNN", "LatentODE", "NeuralSDE", "LatentSDE", "HamiltonianNN", "LagrangianNN"]
BRIEF = dict(max_epochs=5, random_state=0, device="cpu")
# After five epochs LagrangianNN's velocity Hessian is still singular at states a long rollout visits
# (an IntegrationError, not a range problem); twenty make it regular there.
EPOCHS = {"LagrangianNN": 20}
# Even then the Hessian is singular somewhere for most draws of the weights (random_state=0..3 with named streams;
# 2 of 3 with the former offsets): LagrangianNN fits with a draw that is regular.
SEEDS = {"LagrangianNN": 4}
N_SERIES, N_TIMES = 6, 30
# Forecasts reach five training windows past the data's end (t = 10).
FAR = np.linspace(10.5, 60.0, 12)


@pytest.fixture(scope="module")
def data():
    frame = make_damped_oscillator(n_series=N_SERIES, n_times=N_TIMES, t_span=(0.0, 10.0), random_state=0)
    X = frame[["q", "p"]].to_numpy().reshape(N_SERIES, N_TIMES, 2)
    return X, frame["time"].to_numpy()[:N_TIMES]


@pytest.fixture(scope="module")
def fitted(data):
    """Each forecaster with its default parameters, fitted for a few epochs (shared by the tests below)."""
    X, t = data
    models = {}
    for name in FORECASTERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # a five-epoch fit has not converged
            warnings.simplefilter("error", category=ForecastRangeWarning)  # fit-time calibration forecasts too
            options = {**BRIEF, "max_epochs": EPOCHS.get(name, BRIEF["max_epochs"]), "random_state": SEEDS.get(name, 0)}
            models[name] = getattr(dynlearn, name)(**options).fit(X, t=t)
    return models


def _distance_outside(values, X):
    """How far outside each feature's observed range ``values`` lie, in units of the range's width."""
    low, high = X.min(axis=(0, 1)), X.max(axis=(0, 1))
    return np.max((np.maximum(low - values, values - high)) / (high - low))


def _forecasts(model, X, t):
    """Every forecasting path the model has, far ahead: predict, sample, simulate."""
    out = {"predict": model.predict(X, t=FAR, X_t=t)}
    if hasattr(model, "sample"):
        out["sample"] = model.sample(X, t=FAR, X_t=t, n_samples=4, random_state=0)
    if hasattr(model, "simulate"):
        out["simulate"] = model.simulate(X[:, -1], np.concatenate([[t[-1]], FAR]))
    return out


@pytest.mark.parametrize("name", FORECASTERS)
def test_default_forecasts_far_ahead_stay_within_ten_ranges_without_warning(name, fitted, data):
    X, t = data
    model = fitted[name]
    np.testing.assert_array_equal(model.data_min_, X.min(axis=(0, 1)))
    np.testing.assert_array_equal(model.data_max_, X.max(axis=(0, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=ForecastRangeWarning)
        forecasts = _forecasts(model, X, t)
    for path, values in forecasts.items():
        assert np.all(np.isfinite(values)), path
        assert _distance_outside(np.asarray(values), X) < RANGE_FACTOR, path


def _drift(layer: torch.nn.Linear, direction: torch.Tensor, speed: float = 20.0) -> None:
    """Make ``layer`` (the last of a vector field) output a constant drift of ``speed`` along ``direction``."""
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(speed * direction / direction.norm())


def _diverging(name, model):
    """A copy of a fitted model whose learned dynamics carry every forecast steadily away from the data."""
    model = copy.deepcopy(model)
    module = model.module_
    if name == "NeuralODE":
        _drift(module.field.net[-1], torch.tensor([1.0, 0.0]))
    elif name == "ODERNN":
        _drift(module.encoder.field.net[-1], module.decoder[-1].weight[0])
    elif name == "LatentODE":
        # Along the decoder's first row, at a latent speed that moves the first output by 20 per unit time
        # whatever the row's fitted length (a short row barely moved the forecasts for some weight draws).
        row = module.decoder[-1].weight[0]
        _drift(module.field.net[-1], row, speed=20.0 / float(row.norm()))
    elif name == "NeuralSDE":
        _drift(module.drift_net[-1], torch.tensor([1.0, 0.0]))
    elif name == "LatentSDE":
        _drift(module.dynamics.prior[-1], module.decoder.weight[0])
    return model


@pytest.mark.parametrize("name", ["NeuralODE", "ODERNN", "LatentODE", "NeuralSDE", "LatentSDE"])
def test_warning_fires_on_every_path_of_a_diverging_rollout(name, fitted, data):
    X, t = data
    model = fitted[name]
    if name == "NeuralODE":  # its stability guard would hold the drift: diverge without it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model = dynlearn.NeuralODE(stabilize=False, **BRIEF).fit(X, t=t)
    if name == "ODERNN":
        model = copy.deepcopy(model).set_params(stabilize=False)
    diverging = _diverging(name, model)
    for path in ("predict", "sample", "simulate"):
        if not hasattr(diverging, path):
            continue
        with pytest.warns(ForecastRangeWarning, match=f"{name} predicts .* outside it") as record:
            values = _forecasts_one(diverging, path, X, t)
        assert _distance_outside(np.asarray(values), X) > RANGE_FACTOR
        # The warning points at the caller, not at dynlearn's internals.
        assert [w.filename for w in record if w.category is ForecastRangeWarning] == [__file__]


def _forecasts_one(model, path, X, t):
    if path == "predict":
        return model.predict(X, t=FAR, X_t=t)
    if path == "sample":
        return model.sample(X, t=FAR, X_t=t, n_samples=4, random_state=0)
    return model.simulate(X[:, -1], np.concatenate([[t[-1]], FAR]))


def test_hamiltonian_with_a_drifting_energy_warns(data):
    X, t = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        model = dynlearn.HamiltonianNN(hidden_layer_sizes=(), **BRIEF).fit(X, t=t)
    # H = 20 p: dq/dt = 20 (standardised units) whatever the state.
    with torch.no_grad():
        model.module_.net[-1].weight.copy_(torch.tensor([[0.0, 20.0]]))
    with pytest.warns(ForecastRangeWarning, match="HamiltonianNN predicts"):
        model.predict(X, t=FAR, X_t=t)
    with pytest.warns(ForecastRangeWarning):
        model.simulate(X[0, -1], [t[-1], 60.0])


def test_lagrangian_under_a_constant_force_warns(data):
    X, t = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        model = dynlearn.LagrangianNN(hidden_layer_sizes=(3,), **BRIEF).fit(X, t=t)
    first, last = model.module_.net[0], model.module_.net[-1]
    s = 1e3  # L = s² (softplus(v / s) + softplus(-v / s)) + 0.2 q = v²/4 + 0.2 q + const for |v| << s
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[0.0, 1 / s], [0.0, -1 / s], [1.0, 0.0]]))
        first.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # softplus is linear past 20: a constant force
        last.weight.copy_(torch.tensor([[s**2, s**2, 0.2]]))
    with pytest.warns(ForecastRangeWarning, match="LagrangianNN predicts .* feature 0"):
        model.predict(X, t=FAR, X_t=t)
    with pytest.warns(ForecastRangeWarning):
        model.simulate(X[0, -1], [t[-1], 60.0])


def test_odernn_state_guard_holds_a_diverging_hidden_state(fitted, data):
    X, t = data
    guarded = _diverging("ODERNN", fitted["ODERNN"])
    assert guarded.stabilize
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=ForecastRangeWarning)
        forecast = guarded.predict(X, t=np.concatenate([FAR, [100.0]]), X_t=t)
    assert _distance_outside(forecast, X) < RANGE_FACTOR
    # Pushed against a face of the box, the state stays there: far forecasts settle.
    np.testing.assert_allclose(forecast[:, -2], forecast[:, -1], atol=1e-4)
    free = copy.deepcopy(guarded).set_params(stabilize=False)
    with pytest.warns(ForecastRangeWarning):
        free.predict(X, t=FAR, X_t=t)


def test_odernn_state_box_covers_the_training_states_and_changes_nothing_inside_it(fitted, data):
    X, t = data
    model = fitted["ODERNN"]
    assert model.state_min_.shape == model.state_max_.shape == (model.hidden_dim,)
    assert np.all(model.state_max_ > model.state_min_)
    free = copy.deepcopy(model).set_params(stabilize=False)
    # One-step-ahead predictions evolve states the encoder reached in training: the box leaves them alone.
    np.testing.assert_allclose(model.predict(X, X_t=t), free.predict(X, X_t=t), atol=1e-6)


def test_odernn_state_guard_works_with_adaptive_solvers(data):
    X, t = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        model = ODERNN(solver="dopri5", hidden_dim=8, **BRIEF).fit(X, t=t)
    guarded = _diverging("ODERNN", model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=ForecastRangeWarning)
        forecast = guarded.predict(X, t=FAR, X_t=t)
    assert _distance_outside(forecast, X) < RANGE_FACTOR
    with pytest.warns(ForecastRangeWarning):
        copy.deepcopy(guarded).set_params(stabilize=False).predict(X, t=FAR, X_t=t)


def test_ranges_and_state_box_survive_save_load_and_pickle(fitted, data, tmp_path):
    X, t = data
    model = _diverging("ODERNN", fitted["ODERNN"])
    model.save(tmp_path / "odernn.dlm")
    for copy_ in (dynlearn.load(tmp_path / "odernn.dlm"), pickle.loads(pickle.dumps(model))):
        for attribute in ("data_min_", "data_max_", "state_min_", "state_max_"):
            np.testing.assert_array_equal(getattr(copy_, attribute), getattr(model, attribute))
        np.testing.assert_array_equal(copy_.predict(X, t=FAR, X_t=t), model.predict(X, t=FAR, X_t=t))
        with pytest.warns(ForecastRangeWarning):
            copy_.set_params(stabilize=False).predict(X, t=FAR, X_t=t)
