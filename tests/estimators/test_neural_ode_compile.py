"""NeuralODE(compile=...): the compiled training rollout trains as the eager solve does, falls back, and persists.

torch.compile is replaced by stand-ins (one that returns the rollout unchanged, one that raises): the
path through CompiledFunction and fixed_rollout is the one a real compile takes, without tens of seconds of
inductor per graph (tests/solvers/test_compile.py compiles one rollout for real).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

import dynlearn
from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator

SETTINGS = dict(hidden_layer_sizes=(8,), solver="rk4", window_size=4, max_epochs=3, patience=None, random_state=0)


@pytest.fixture(scope="module")
def frame():
    return make_damped_oscillator(n_series=8, n_times=12, random_state=0)


def _losses(model: NeuralODE) -> np.ndarray:
    return model.history_.to_frame()[["train_loss", "valid_loss"]].to_numpy()


@pytest.fixture
def compile_passes_through(monkeypatch):
    calls = []

    def passthrough(function, **kwargs):
        calls.append(kwargs)
        return function

    monkeypatch.setattr(torch, "compile", passthrough)
    return calls


def test_compiled_rollout_trains_like_the_eager_solve(frame, compile_passes_through):
    eager = NeuralODE(**SETTINGS).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled = NeuralODE(**SETTINGS, compile=True).fit(frame)
    assert compile_passes_through, "the training rollout never went through torch.compile"
    assert all(call == {"dynamic": False, "mode": None} for call in compile_passes_through)
    np.testing.assert_allclose(_losses(compiled), _losses(eager), rtol=1e-4)
    np.testing.assert_allclose(compiled.predict(frame), eager.predict(frame), rtol=1e-3, atol=1e-4)


def test_compile_that_fails_warns_and_trains_eagerly(frame, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found")

    monkeypatch.setattr(torch, "compile", refuse)
    eager = NeuralODE(**SETTINGS).fit(frame)
    with pytest.warns(RuntimeWarning, match="could not compile the rk4 training rollout.*cc not found"):
        fallen = NeuralODE(**SETTINGS, compile=True).fit(frame)
    np.testing.assert_allclose(_losses(fallen), _losses(eager), rtol=1e-4)


def test_compile_on_an_adaptive_solver_warns_and_never_compiles(frame, compile_passes_through):
    with pytest.warns(RuntimeWarning, match="compile=True compiles the training rollouts of fixed-step solvers"):
        NeuralODE(**{**SETTINGS, "solver": "dopri5", "max_epochs": 1}, compile=True).fit(frame)
    assert compile_passes_through == []


def test_compile_survives_clone_pickle_and_save(frame, compile_passes_through, tmp_path):
    model = NeuralODE(**{**SETTINGS, "max_epochs": 1}, compile="max-autotune-no-cudagraphs").fit(frame)
    assert clone(model).compile == "max-autotune-no-cudagraphs"
    unpickled = pickle.loads(pickle.dumps(model))  # compiled code is held outside the model
    assert unpickled.compile == "max-autotune-no-cudagraphs"
    np.testing.assert_array_equal(unpickled.predict(frame), model.predict(frame))
    model.save(tmp_path / "model.dlm")
    loaded = dynlearn.load(tmp_path / "model.dlm")
    assert loaded.compile == "max-autotune-no-cudagraphs"
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_compile_refuses_an_unknown_mode(frame):
    with pytest.raises(InvalidParameterError, match="compile"):
        NeuralODE(**SETTINGS, compile="fast").fit(frame)
