"""LatentODEClassifier and the scikit-learn contract: pipelines, clone, pickle, seeds, kinds."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from dynlearn import ConvergenceWarning, InputError, LatentODEClassifier

SMALL = dict(
    latent_dim=2,
    encoder_dim=4,
    encoder_layer_sizes=(4,),
    ode_layer_sizes=(4,),
    solver="rk4",
    max_epochs=2,
    batch_size=8,
    random_state=0,
    device="cpu",
)

@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _panel(n_series=12, n_times=12, seed=0):
    rng = np.random.RandomState(seed)
    t = np.linspace(0, 5, n_times)
    y = np.arange(n_series) % 2
    freq = np.where(y == 1, 1.0, 0.25)
    X = np.sin(2 * np.pi * freq[:, None] * t + rng.uniform(0, 6, size=(n_series, 1)))[..., None]
    X[rng.rand(*X.shape) < 0.2] = np.nan
    X[:, 0] = np.sin(rng.uniform(0, 6, size=(n_series, 1)))  # every series observed at its first time
    return X, y, t


@pytest.fixture(scope="module")
def fitted():
    X, y, t = _panel()
    return LatentODEClassifier(**SMALL).fit(X, np.where(y == 1, "fast", "slow"), t=t)


# ------------------------------------------------------------ the interface
def test_is_a_classifier_with_params_and_clone():
    clf = LatentODEClassifier(**SMALL, classification_weight=3.0, head_hidden_layer_sizes=(5,))
    assert is_classifier(clf)
    params = clf.get_params()
    assert params["classification_weight"] == 3.0 and params["head_hidden_layer_sizes"] == (5,)
    assert params["observed_fraction"] == 1.0 and params["latent_dim"] == 2
    copy = clone(clf)
    assert copy.get_params() == params and not hasattr(copy, "module_")


def test_outputs_are_per_series_with_the_users_labels(fitted):
    X, _, t = _panel()
    assert list(fitted.classes_) == ["fast", "slow"]
    labels = fitted.predict(X, t=t)
    assert labels.shape == (12,) and set(labels) <= {"fast", "slow"}
    proba = fitted.predict_proba(X, t=t)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(axis=1), 1)
    decision = fitted.decision_function(X, t=t)
    np.testing.assert_array_equal(decision > 0, proba[:, 1] > 0.5)
    np.testing.assert_array_equal(labels, fitted.classes_[(proba[:, 1] > 0.5).astype(int)])
    assert fitted.score(X, np.where(_panel()[1] == 1, "fast", "slow"), t=t) == pytest.approx(
        np.mean(labels == np.where(_panel()[1] == 1, "fast", "slow"))
    )
    ragged = [X[i, : 8 + i % 4] for i in range(12)]
    assert fitted.predict_proba(ragged, t=[t[: 8 + i % 4] for i in range(12)]).shape == (12, 2)
    three = LatentODEClassifier(**SMALL).fit(X, np.arange(12) % 3, t=t)
    assert three.decision_function(X, t=t).shape == (12, 3) and list(three.classes_) == [0, 1, 2]
    assert three.module_.head[-1].out_features == 3


def test_trajectories_codes_and_samples_still_work(fitted):
    X, _, t = _panel()
    assert fitted.transform(X, t=t).shape == (12, 2)
    path = fitted.predict_trajectory(X[:3], t=[5.5, 6.0], X_t=t)
    assert path.shape == (3, 2, 1) and np.isfinite(path).all()
    draws = fitted.sample(X[:3], t=[5.5, 6.0], n_samples=4, random_state=0, X_t=t)
    assert draws.shape == (4, 3, 2, 1) and np.isfinite(draws).all()
    # Fitted on times 0 to 5: the history's rows are not read at 0, 1, 2, ... behind the user's back.
    with pytest.raises(InputError, match="X_t"):
        fitted.predict_trajectory(X[:3], t=[5.5, 6.0])


def test_in_a_pipeline_and_as_a_pipeline_step():
    X, y, _ = _panel()
    series = [X[i] for i in range(12)]  # times 0, 1, 2, ... when none are given
    pipe = Pipeline([("clf", LatentODEClassifier(**SMALL))]).fit(series, y)
    np.testing.assert_array_equal(
        pipe.predict_proba(series), LatentODEClassifier(**SMALL).fit(series, y).predict_proba(series)
    )
    codes = Pipeline([("latent", LatentODEClassifier(**SMALL)), ("lr", LogisticRegression())]).fit(X, y)
    assert codes.predict(X).shape == (12,)


def test_pickle_round_trip_and_same_seed_same_fit(fitted):
    X, y, t = _panel()
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X, t=t), fitted.predict_proba(X, t=t))
    before = torch.random.get_rng_state()
    labels = np.where(y == 1, "fast", "slow")
    again = clone(fitted).fit(X, labels, t=t)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(again.predict_proba(X, t=t), fitted.predict_proba(X, t=t))
    other = LatentODEClassifier(**{**SMALL, "random_state": 1}).fit(X, labels, t=t)
    assert not np.allclose(other.predict_proba(X, t=t), fitted.predict_proba(X, t=t))


def test_warm_start_continues_and_refuses_new_labels():
    X, y, t = _panel()
    clf = LatentODEClassifier(**{**SMALL, "warm_start": True, "patience": None}).fit(X, y, t=t)
    clf.fit(X, y, t=t)
    assert clf.n_epochs_ == 4
    with pytest.raises(InputError, match="classes of the first fit"):
        clf.fit(X, np.where(y == 1, 2, 0), t=t)


# -------------------------------------------------------------- bad input
def test_bad_labels_and_settings_are_named():
    X, y, t = _panel()
    with pytest.raises(InputError, match="y"):
        LatentODEClassifier(**SMALL).fit(X, None, t=t)
    with pytest.raises(InputError, match=r"shape \(12,\)"):
        LatentODEClassifier(**SMALL).fit(X, y[:5], t=t)
    with pytest.raises(InputError, match="two classes"):
        LatentODEClassifier(**SMALL).fit(X, np.zeros(12), t=t)
    with pytest.raises(InputError, match="6 missing or infinite label"):
        LatentODEClassifier(**SMALL).fit(X, np.where(y == 1, np.nan, 0.0), t=t)
    with pytest.raises(InputError, match="head_hidden_layer_sizes"):
        LatentODEClassifier(**SMALL, head_hidden_layer_sizes=(3, 0)).fit(X, y, t=t)
    with pytest.raises(ValueError, match="classification_weight"):
        LatentODEClassifier(**SMALL, classification_weight=-1.0).fit(X, y, t=t)
    with pytest.raises(InputError, match="one label per series"):
        LatentODEClassifier(**SMALL).fit(X[0], np.arange(12) % 2, t=t)


def test_unfitted_and_wrong_feature_count(fitted):
    from sklearn.exceptions import NotFittedError

    X, _, t = _panel()
    with pytest.raises(NotFittedError):
        LatentODEClassifier(**SMALL).predict_proba(X, t=t)
    with pytest.raises(InputError, match="1 feature"):
        fitted.predict_proba(np.concatenate([X, X], axis=-1), t=t)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_matches_cpu_and_unpickles():
    X, y, t = _panel()
    gpu = LatentODEClassifier(**{**SMALL, "device": "cuda"}).fit(X, y, t=t)
    cpu = LatentODEClassifier(**SMALL).fit(X, y, t=t)
    np.testing.assert_allclose(gpu.predict_proba(X, t=t), cpu.predict_proba(X, t=t), atol=1e-3)
    restored = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(restored.predict_proba(X, t=t), gpu.predict_proba(X, t=t), atol=1e-6)
