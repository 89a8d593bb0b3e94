"""n_threads: every public method runs under the estimator's thread budget and restores the caller's setting."""

from __future__ import annotations

import inspect
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

import dynlearn.estimators as estimators
from dynlearn import ConvergenceWarning, NeuralODE
from dynlearn._compat import InvalidParameterError
from dynlearn.datasets import make_damped_oscillator
from dynlearn.training import _threads, auto_threads, largest_product, usable_cores

TINY = dict(hidden_layer_sizes=(8,), max_epochs=1, window_size=4, random_state=0, device="cpu")
MODEL_METHODS = {
    "fit", "fit_transform", "predict", "predict_proba", "predict_quantiles", "predict_interval", "calibrate",
    "predict_trajectory",
    "decision_function", "score", "sample", "simulate", "transform", "energy", "vector_field", "drift", "diffusion",
}  # fmt: skip


@pytest.fixture(scope="module")
def frame():
    return make_damped_oscillator(n_series=4, n_times=12, random_state=0)


@pytest.fixture
def two_caller_threads():
    """The caller runs torch at 2 threads (whatever the machine), restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class _Recording(NeuralODE):
    """Records torch's thread count where the model runs, and adds a public method of its own."""

    def _predict_batch(self, batch, query):
        self.seen_threads = torch.get_num_threads()
        return super()._predict_batch(batch, query)

    def rollout_threads(self):
        return torch.get_num_threads()


def _fit(model, frame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(frame)


@pytest.mark.parametrize("name", estimators.__all__)
def test_every_estimator_takes_n_threads_after_device(name):
    cls = getattr(estimators, name)
    parameters = list(inspect.signature(cls).parameters)
    assert parameters[parameters.index("device") + 1] == "n_threads"
    assert cls().n_threads == "auto"
    doc = inspect.getdoc(cls)
    assert "n_threads : int" in doc or "are those of :class:`LatentODE`" in doc  # LatentODEClassifier refers on


@pytest.mark.parametrize("name", estimators.__all__)
def test_every_public_method_that_runs_the_model_is_under_the_budget(name):
    cls = getattr(estimators, name)
    present = [m for m in MODEL_METHODS if hasattr(cls, m)]
    assert "fit" in present and "predict" in present
    unwrapped = [m for m in present if not getattr(inspect.getattr_static(cls, m), "_under_thread_budget", False)]
    assert unwrapped == []
    # scikit-learn's own methods run no model and are left alone.
    assert not getattr(inspect.getattr_static(cls, "get_params"), "_under_thread_budget", False)


def test_explicit_count_is_honoured_and_the_caller_setting_restored(frame, two_caller_threads):
    model = _fit(_Recording(n_threads=1, **TINY), frame)
    assert model.n_threads_ == 1
    assert torch.get_num_threads() == 2
    model.predict(frame, t=[20.0])
    assert model.seen_threads == 1
    assert model.rollout_threads() == 1  # a subclass's own public method gets the budget too
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    model.set_params(n_threads=2).predict(frame, t=[20.0])
    assert model.seen_threads == 2
    assert torch.get_num_threads() == 1


def test_caller_setting_restored_after_an_exception_inside_fit(frame, two_caller_threads, monkeypatch):
    seen = []

    def failing_train(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        raise RuntimeError("training failed")

    monkeypatch.setattr(NeuralODE, "_train", failing_train)
    with pytest.raises(RuntimeError, match="training failed"):
        NeuralODE(n_threads=1, **TINY).fit(frame)
    assert seen == [1]
    assert torch.get_num_threads() == 2


def test_none_leaves_torch_setting_alone(frame, two_caller_threads):
    model = _fit(_Recording(n_threads=None, **TINY), frame)
    assert model.n_threads_ == 2
    model.predict(frame, t=[20.0])
    assert model.seen_threads == 2


def test_auto_gives_small_models_one_thread(frame, two_caller_threads, monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    model = _fit(_Recording(**TINY), frame)
    assert model.n_threads_ == 1
    model.predict(frame, t=[20.0])
    assert model.seen_threads == 1
    assert torch.get_num_threads() == 2


def test_auto_gives_large_products_the_free_cores(frame, two_caller_threads, monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(_threads, "other_runnable", lambda: 0)  # as on an idle machine
    # Lower the threshold rather than train a large model: the rule, not the size, is under test.
    model = _Recording(**TINY)
    _fit(model, frame)
    monkeypatch.setattr(_threads, "PARALLEL_WORK", largest_product(model.module_, model.batch_size))
    _fit(model, frame)
    assert model.n_threads_ == 2 == auto_threads(largest_product(model.module_, model.batch_size))  # min(4 cores, caller's 2)
    model.predict(frame, t=[20.0])
    assert model.seen_threads == 2


def test_invalid_n_threads_names_the_parameter_even_after_fit(frame):
    with pytest.raises(InvalidParameterError, match="'n_threads' parameter of NeuralODE"):
        NeuralODE(n_threads=0, **TINY).fit(frame)
    model = _fit(NeuralODE(**TINY), frame)
    with pytest.raises(InvalidParameterError, match="'n_threads'"):
        model.set_params(n_threads="all").predict(frame, t=[20.0])


def test_clone_and_pickle_keep_n_threads(frame):
    model = _fit(NeuralODE(n_threads=3, **TINY), frame)
    assert clone(model).n_threads == 3
    assert clone(model).get_params()["n_threads"] == 3
    restored = pickle.loads(pickle.dumps(model))
    assert restored.n_threads == 3 and restored.n_threads_ == 3
    times = frame["time"].to_numpy()[:12]
    assert restored.predict(frame.to_numpy()[:12, 2:][None], t=times, X_t=times).shape == (1, 12, 2)
    # A model pickled before the parameter existed gets the default.
    state = {k: v for k, v in model.__getstate__().items() if k != "n_threads"}
    old = NeuralODE.__new__(NeuralODE)
    old.__setstate__(state)
    assert old.get_params()["n_threads"] == "auto"


@pytest.mark.skipif(usable_cores() < 2, reason="dividing cores among workers needs at least two cores")
def test_grid_search_workers_share_the_cores(frame, monkeypatch):
    """Inside GridSearchCV(n_jobs=2) each fit uses at most cores // 2 threads, even for a large model."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # joblib then gives each worker cores // n_jobs
    large = dict(TINY, hidden_layer_sizes=(512, 512), batch_size=256)
    before = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    try:
        # Precondition: in this process, with every core free, "auto" would use them all.
        monkeypatch.setattr(_threads, "other_runnable", lambda: 0)  # here only: workers read the real load
        assert auto_threads(largest_product(torch.nn.Linear(512, 512), 256)) == usable_cores()
        search = GridSearchCV(
            NeuralODE(**large),
            {"learning_rate": [1e-3, 3e-3]},
            cv=KFold(2),
            n_jobs=2,
            refit=False,
            scoring=lambda estimator, X, y=None: estimator.n_threads_,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(frame)
    finally:
        torch.set_num_threads(before)
    used = search.cv_results_["mean_test_score"]
    assert (used >= 1).all() and (used <= max(1, usable_cores() // 2)).all()
