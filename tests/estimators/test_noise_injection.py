"""NeuralODE noise-injection regularisation: active in training only, still learns the oscillator."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from dynlearn import ConvergenceWarning, NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import r2_score

QUICK = dict(hidden_layer_sizes=(8,), max_epochs=3, window_size=4, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def small_frame():
    return make_damped_oscillator(n_series=8, n_times=12, irregular=True, random_state=3)


def _fit(frame, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return NeuralODE(**{**QUICK, **options}).fit(frame)


def test_noise_changes_training_only(small_frame):
    plain = _fit(small_frame)
    zero = _fit(small_frame, noise_std=0.0, noise_type="multiplicative")
    noisy = _fit(small_frame, noise_std=0.3)
    # noise_std=0 is the plain model, bit for bit; with noise the training losses and weights differ.
    for a, b in zip(plain.module_.state_dict().values(), zero.module_.state_dict().values()):
        assert torch.equal(a, b)
    assert not np.allclose(plain.history_.to_frame()["train_loss"], noisy.history_.to_frame()["train_loss"])
    # Prediction is a deterministic ODE solve of the learned field: switching the noise off on the
    # fitted model changes nothing, and repeated calls agree exactly.
    first = noisy.predict(small_frame, t=[8.5, 9.0])
    pd.testing.assert_frame_equal(first, noisy.predict(small_frame, t=[8.5, 9.0]))
    pd.testing.assert_frame_equal(first, noisy.set_params(noise_std=0.0).predict(small_frame, t=[8.5, 9.0]))
    # The validation loss is computed without noise as well: evaluation is the same ODE solve.
    assert np.isfinite(noisy.history_.to_frame()["valid_loss"]).all()


def test_noisy_training_is_seeded(small_frame):
    a = _fit(small_frame, noise_std=0.2, noise_type="multiplicative")
    b = _fit(small_frame, noise_std=0.2, noise_type="multiplicative")
    c = _fit(small_frame, noise_std=0.2, noise_type="multiplicative", random_state=1)
    np.testing.assert_array_equal(a.history_.to_frame()["train_loss"], b.history_.to_frame()["train_loss"])
    assert not np.allclose(a.history_.to_frame()["train_loss"], c.history_.to_frame()["train_loss"])


def test_training_with_noise_still_learns_the_oscillator():
    """Same setting as the plain model's variant test (R² 0.989 without noise, 0.989 with noise_std=0.1)."""
    frame = make_damped_oscillator(n_series=16, n_times=30, t_span=(0.0, 8.0), irregular=True, random_state=2)
    model = NeuralODE(hidden_layer_sizes=(32,), max_epochs=40, noise_std=0.1, random_state=0, device="cpu").fit(frame)
    test = make_damped_oscillator(n_series=6, n_times=30, t_span=(0.0, 8.0), random_state=7)
    history, future = test[test["time"] <= 5.0], test[test["time"] > 5.0]
    forecast = model.predict(history, t=future[["series_id", "time"]])
    score = r2_score(future.set_index(["series_id", "time"]), forecast.set_index(["series_id", "time"]))
    assert score > 0.8, score


def test_invalid_noise_settings_name_the_parameter(small_frame):
    with pytest.raises(ValueError, match="noise_std"):
        NeuralODE(noise_std=-0.1, **QUICK).fit(small_frame)
    with pytest.raises(ValueError, match="noise_type"):
        NeuralODE(noise_std=0.1, noise_type="diagonal", **QUICK).fit(small_frame)
