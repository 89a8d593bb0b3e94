"""NeuralODE learns known systems: eigenvalues of a linear system, forecasts of held-out series."""

from __future__ import annotations

import numpy as np
import pytest

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import r2_score


@pytest.fixture(scope="module")
def linear_fit():
    frame, truth = make_damped_oscillator(
        n_series=32, n_times=40, t_span=(0.0, 10.0), irregular=True, missing_fraction=0.1, return_truth=True,
        random_state=0,
    )
    model = NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=100, random_state=0, device="cpu").fit(frame)
    return model, truth


def test_recovers_eigenvalues_of_irregularly_sampled_linear_system(linear_fit):
    model, truth = linear_fit
    states = np.random.RandomState(1).uniform(-1, 1, size=(500, 2))
    derivatives = model.vector_field(states)
    matrix = np.linalg.lstsq(states, derivatives, rcond=None)[0].T
    learned = np.sort_complex(np.linalg.eigvals(matrix))
    expected = np.sort_complex(truth.eigenvalues)
    assert np.all(np.abs(learned - expected) / np.abs(expected) < 0.05), (learned, expected)


def test_forecasts_held_out_series(linear_fit):
    model, _ = linear_fit
    test = make_damped_oscillator(n_series=10, n_times=40, t_span=(0.0, 10.0), random_state=5)
    history, future = test[test["time"] <= 5.0], test[test["time"] > 5.0]
    forecast = model.predict(history, t=future[["series_id", "time"]])
    score = r2_score(future.set_index(["series_id", "time"]), forecast.set_index(["series_id", "time"]))
    assert score > 0.95


def test_simulate_follows_true_trajectories(linear_fit):
    model, truth = linear_fit
    times = truth.times[0]
    simulated = model.simulate(truth.states[0, 0], times)
    assert simulated.shape == (len(times), 2)
    assert np.abs(simulated - truth.states[0]).max() < 0.1


@pytest.mark.parametrize(
    "options",
    [{"second_order": True}, {"augment_dim": 2}, {"time_dependent": True}, {"solver": "rk4"}],
    ids=lambda o: next(iter(o)),
)
def test_variants_learn_the_oscillator(options):
    frame = make_damped_oscillator(n_series=16, n_times=30, t_span=(0.0, 8.0), irregular=True, random_state=2)
    model = NeuralODE(hidden_layer_sizes=(32,), max_epochs=40, random_state=0, device="cpu", **options).fit(frame)
    test = make_damped_oscillator(n_series=6, n_times=30, t_span=(0.0, 8.0), random_state=7)
    history, future = test[test["time"] <= 5.0], test[test["time"] > 5.0]
    forecast = model.predict(history, t=future[["series_id", "time"]])
    score = r2_score(future.set_index(["series_id", "time"]), forecast.set_index(["series_id", "time"]))
    assert score > 0.8, score


def test_adjoint_training_matches_direct_backpropagation():
    frame = make_damped_oscillator(n_series=8, n_times=12, irregular=True, random_state=3)
    settings = dict(hidden_layer_sizes=(8,), max_epochs=3, window_size=4, random_state=0, device="cpu",
                    dtype="float64", rtol=1e-7, atol=1e-8, validation_fraction=0.0)
    direct = NeuralODE(adjoint=False, **settings).fit(frame)
    adjoint = NeuralODE(adjoint=True, **settings).fit(frame)
    np.testing.assert_allclose(direct.history_.to_frame()["train_loss"], adjoint.history_.to_frame()["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(direct.predict(frame), adjoint.predict(frame), rtol=1e-4, atol=1e-6)
