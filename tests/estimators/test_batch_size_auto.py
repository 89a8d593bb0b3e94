"""batch_size="auto": every estimator trains with the size resolved in one place, keeps "auto" as its parameter
and names batch_size when given a bad value."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

import dynlearn.estimators as estimators
from dynlearn import NeuralODE
from dynlearn._compat import InvalidParameterError
from dynlearn.datasets import make_damped_oscillator
from dynlearn.estimators import _base

BATCHED = [name for name in estimators.__all__ if "batch_size" in inspect.signature(getattr(estimators, name)).parameters]
LABELS = np.array([0, 1, 0, 1, 0, 1])
ODE = dict(hidden_layer_sizes=(8,), window_size=4)
LATENT = dict(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(4,), ode_layer_sizes=(4,), solver="rk4")
CDE = dict(hidden_dim=4, hidden_layer_sizes=(8,), solver="euler")
ODERNN = dict(hidden_dim=4, ode_hidden_layer_sizes=(8,))
SMALL = {
    "NeuralODE": ODE, "HamiltonianNN": ODE, "LagrangianNN": ODE, "NeuralSDE": dict(hidden_layer_sizes=(8,)),
    "NeuralCDE": CDE, "NeuralCDEClassifier": CDE, "ODERNN": ODERNN, "ODERNNClassifier": ODERNN,
    "LatentODE": LATENT, "LatentODEClassifier": LATENT,
    "LatentSDE": dict(latent_dim=2, context_dim=4, hidden_layer_sizes=(8,), encoder_hidden_size=8,
                      diffusion_hidden_size=4, dt=1.0),
}  # fmt: skip


@pytest.fixture(scope="module")
def frame():
    return make_damped_oscillator(n_series=6, n_times=12, random_state=0)


def _fit(model, frame):
    y = LABELS if "Classifier" in type(model).__name__ else None
    with warnings.catch_warnings():  # one epoch: convergence and calibration warnings are expected
        warnings.simplefilter("ignore")
        return model.fit(frame, y)


def test_every_estimator_has_batch_size_and_small_settings_here():
    assert len(BATCHED) == len(estimators.__all__) and set(SMALL) == set(BATCHED)


@pytest.mark.parametrize("name", BATCHED)
def test_auto_trains_exactly_as_the_size_the_rule_returns(name, frame, monkeypatch):
    # The rule patched to an odd size: every place that reads the minibatch size (the loop, per-minibatch
    # learning-rate schedules) must see it, so the weights equal those of a fit given that size.
    monkeypatch.setattr(_base, "auto_batch_size", lambda n_examples, values, device: 5)
    cls = getattr(estimators, name)
    settings = dict(SMALL[name], max_epochs=1, random_state=0, device="cpu")
    auto = _fit(cls(batch_size="auto", **settings), frame)
    given = _fit(cls(batch_size=5, **settings), frame)
    assert auto.batch_size == "auto" and auto.batch_size_ == 5 == given.batch_size_
    for (key, a), b in zip(auto.module_.state_dict().items(), given.module_.state_dict().values()):
        assert torch.equal(a, b), key


def test_auto_on_small_data_is_one_minibatch_of_the_default_size_at_most(frame):
    model = _fit(NeuralODE(batch_size="auto", hidden_layer_sizes=(8,), window_size=4, max_epochs=1, random_state=0,
                           device="cpu"), frame)  # fmt: skip
    windows = 6 * (12 - 4 + 1)  # fewer than 64, with some held out for validation
    assert 0 < model.batch_size_ < windows and model.batch_size_ < 64
    fixed = _fit(NeuralODE(batch_size=16, hidden_layer_sizes=(8,), window_size=4, max_epochs=1, random_state=0,
                           device="cpu"), frame)  # fmt: skip
    assert fixed.batch_size_ == 16


def test_get_params_and_clone_keep_auto():
    model = NeuralODE(batch_size="auto")
    assert model.get_params()["batch_size"] == "auto"
    assert clone(model).batch_size == "auto"
    assert clone(model.set_params(batch_size=32)).batch_size == 32


@pytest.mark.parametrize("bad", ["big", 0, 2.5])
def test_a_bad_batch_size_names_the_argument(bad, frame):
    with pytest.raises(InvalidParameterError, match=r"'batch_size' parameter of NeuralODE must be .*'auto'"):
        NeuralODE(batch_size=bad, max_epochs=1).fit(frame)
