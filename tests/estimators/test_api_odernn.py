"""ODERNN and ODERNNClassifier against the scikit-learn contract: kinds in and out, seeds, pickle."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_score

from dynlearn import ConvergenceWarning, ODERNN, ODERNNClassifier
from dynlearn.datasets import make_periodic

SMALL = dict(hidden_dim=4, ode_hidden_layer_sizes=(8,), max_epochs=2, batch_size=8, random_state=0, device="cpu")

@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def periodic():
    frame = make_periodic(n_series=12, n_times=20, irregular=True, missing_fraction=0.2, random_state=0)
    return frame


@pytest.fixture(scope="module")
def fitted(periodic):
    return ODERNN(**SMALL).fit(periodic)


def _panel(n_series=10, seed=0):
    rng = np.random.RandomState(seed)
    t = np.linspace(0, 5, 15)
    freq = np.where(np.arange(n_series) % 2 == 0, 0.3, 1.0)
    X = np.sin(2 * np.pi * freq[:, None] * t)[..., None] + 0.05 * rng.normal(size=(n_series, 15, 1))
    X[rng.rand(*X.shape) < 0.3] = np.nan
    return X, np.where(freq > 0.5, 1, 0)


# -------------------------------------------------------- kinds in, kinds out
def test_frames_in_frames_out(fitted, periodic):
    out = fitted.predict(periodic, t=[5.5, 6.0])
    assert list(out.columns) == ["series_id", "time", "y"] and len(out) == 2 * periodic["series_id"].nunique()
    indexed = periodic.set_index(["series_id", "time"])
    out = fitted.predict(indexed, t=[5.5])
    assert isinstance(out.index, pd.MultiIndex) and list(out.index.names) == ["series_id", "time"]
    assert list(out.columns) == ["y"]
    assert np.isfinite(out.to_numpy()).all()


def test_arrays_and_ragged_lists_come_back_as_such(fitted):
    panel = np.sin(np.linspace(0, 3, 8))[None, :, None] * np.ones((3, 1, 1))
    t = np.linspace(0, 5, 8)
    # Fitted on a frame: arrays and lists say at which times their rows were observed.
    assert fitted.predict(panel, t=[5.5, 6.0], X_t=t).shape == (3, 2, 1)
    assert fitted.predict(panel[0], t=[5.5, 6.0], X_t=t).shape == (2, 1)
    ragged = fitted.predict([panel[0], panel[1, :5]], t=[t, t[:5]], X_t=[t, t[:5]])
    assert [a.shape for a in ragged] == [(8, 1), (5, 1)]
    assert np.isfinite(np.concatenate(ragged)).all()


def test_classifier_outputs_are_per_series_with_the_users_labels():
    X, y = _panel()
    labels = np.where(y == 1, "fast", "slow")
    clf = ODERNNClassifier(**SMALL).fit(X, labels)
    assert list(clf.classes_) == ["fast", "slow"]
    assert clf.predict(X).shape == (10,) and set(clf.predict(X)) <= {"fast", "slow"}
    proba = clf.predict_proba(X)
    assert proba.shape == (10, 2) and np.allclose(proba.sum(axis=1), 1)
    decision = clf.decision_function(X)
    np.testing.assert_array_equal(decision > 0, proba[:, 1] > 0.5)
    ragged = [X[i, : 10 + i % 5] for i in range(10)]
    assert clf.predict_proba(ragged).shape == (10, 2)
    three = ODERNNClassifier(**SMALL).fit(X, np.arange(10) % 3)
    assert three.decision_function(X).shape == (10, 3) and list(three.classes_) == [0, 1, 2]


def test_classifier_in_cross_val_score_on_a_panel():
    X, y = _panel(n_series=12)
    scores = cross_val_score(ODERNNClassifier(**SMALL), X, y, scoring="roc_auc", cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.isfinite(scores).all()


# ------------------------------------------------------ seeds, clone, pickle
def test_same_seed_same_predictions_and_global_seed_untouched(periodic):
    before = torch.random.get_rng_state()
    first = ODERNN(**SMALL).fit(periodic).predict(periodic, t=[5.5])
    assert torch.equal(torch.random.get_rng_state(), before)
    second = ODERNN(**SMALL).fit(periodic).predict(periodic, t=[5.5])
    pd.testing.assert_frame_equal(first, second)
    other = ODERNN(**{**SMALL, "random_state": 1}).fit(periodic).predict(periodic, t=[5.5])
    assert not np.allclose(first["y"], other["y"])
    X, y = _panel()
    p1 = ODERNNClassifier(**SMALL).fit(X, y).predict_proba(X)
    p2 = ODERNNClassifier(**SMALL).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)


def test_pickle_and_clone_round_trip(fitted, periodic):
    expected = fitted.predict(periodic, t=[5.5, 6.0])
    restored = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_frame_equal(restored.predict(periodic, t=[5.5, 6.0]), expected)
    pd.testing.assert_frame_equal(clone(fitted).fit(periodic).predict(periodic, t=[5.5, 6.0]), expected)
    X, y = _panel()
    clf = ODERNNClassifier(**SMALL).fit(X, y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("solver", ["rk4", "midpoint", "dopri5"])
def test_other_solvers_fit_and_predict(periodic, solver):
    model = ODERNN(**{**SMALL, "solver": solver, "max_epochs": 1}).fit(periodic)
    assert np.isfinite(model.predict(periodic, t=[5.5])["y"]).all()


def test_warm_start_continues_training(periodic):
    model = ODERNN(**{**SMALL, "warm_start": True, "patience": None}).fit(periodic)
    model.fit(periodic)
    assert model.n_epochs_ == 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_matches_cpu_and_unpickles(periodic):
    gpu = ODERNN(**{**SMALL, "device": "cuda"}).fit(periodic)
    cpu = ODERNN(**SMALL).fit(periodic)
    np.testing.assert_allclose(
        gpu.predict(periodic, t=[5.5])["y"].to_numpy(), cpu.predict(periodic, t=[5.5])["y"].to_numpy(), atol=1e-3
    )
    X, y = _panel()
    clf = ODERNNClassifier(**{**SMALL, "device": "cuda"}).fit(X, y)
    assert pickle.loads(pickle.dumps(clf)).predict_proba(X).shape == (10, 2)
