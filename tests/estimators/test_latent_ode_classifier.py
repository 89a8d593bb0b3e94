"""LatentODEClassifier learns labels set by dynamics, through its joint head, from observed entries only."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, cross_val_score

from dynlearn import ConvergenceWarning, InputError, LatentODE, LatentODEClassifier

TINY = dict(
    latent_dim=4,
    encoder_dim=8,
    encoder_layer_sizes=(16,),
    ode_layer_sizes=(16,),
    solver="rk4",
    device="cpu",
    random_state=0,
)
# Enough training for the toy task: 30 epochs of 8 minibatches. obs_std=0.1 (not the paper's 0.01) keeps the
# reconstruction term from drowning the cross-entropy in so few steps.
LEARN = dict(TINY, obs_std=0.1, max_epochs=30, batch_size=10, patience=None)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _sinusoids(n_series: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Noisy sinusoids of random phase at irregular, per-series times, 20% of values missing.

    Label 1: frequency in [0.8, 1.2]; label 0: in [0.2, 0.4] (cycles per unit time, over 5 units).
    """
    rng = np.random.RandomState(seed)
    labels = rng.randint(2, size=n_series)
    freq = np.where(labels == 1, rng.uniform(0.8, 1.2, n_series), rng.uniform(0.2, 0.4, n_series))
    phase = rng.uniform(0, 2 * np.pi, n_series)
    parts = []
    for i in range(n_series):
        t = np.sort(rng.uniform(0, 5, 20))
        v = np.sin(2 * np.pi * freq[i] * t + phase[i]) + 0.05 * rng.normal(size=20)
        v[rng.rand(20) < 0.2] = np.nan
        parts.append(pd.DataFrame({"series_id": f"s{seed}_{i}", "time": t, "y": v}))
    return pd.concat(parts, ignore_index=True), labels


@pytest.fixture(scope="module")
def task():
    return _sinusoids(80, 0), _sinusoids(60, 1)


@pytest.fixture(scope="module")
def joint(task):
    (train, y_train), _ = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LatentODEClassifier(**LEARN).fit(train, y_train)


# ----------------------------------------------------------------- learning
def test_learns_the_frequency_band_of_irregular_series_with_gaps(joint, task):
    _, (test, y_test) = task
    auc = roc_auc_score(y_test, joint.predict_proba(test)[:, 1])
    assert auc > 0.9, auc
    assert joint.score(test, y_test) > 0.8


def test_without_the_classification_term_the_head_is_at_chance(joint, task):
    (train, y_train), (test, y_test) = task
    alone = LatentODEClassifier(**LEARN, classification_weight=0.0).fit(train, y_train)
    auc = roc_auc_score(y_test, alone.predict_proba(test)[:, 1])
    assert 0.25 < auc < 0.75, auc
    # The classification term reshapes the codes themselves: a line through z0 separates the classes far better.
    joint_codes, alone_codes = joint.transform(test), alone.transform(test)
    assert _best_single_code_auc(joint_codes, y_test) > _best_single_code_auc(alone_codes, y_test) + 0.1


def _best_single_code_auc(codes: np.ndarray, labels: np.ndarray) -> float:
    return max(max(a, 1 - a) for a in (roc_auc_score(labels, c) for c in codes.T))


def test_weight_zero_trains_exactly_the_latent_ode():
    # The bound, its draws, schedule and minibatches are LatentODE's: with no classification term the latent
    # model's weights follow the same path, so the codes agree to the last bit.
    frame, labels = _sinusoids(16, 2)
    # The classifier's own defaults for the noise, the split and z0 refinement (none: refining is not training)
    # differ from LatentODE's: both get the same here.
    settings = dict(TINY, max_epochs=3, batch_size=8, n_samples_train=2, observed_fraction=0.5, obs_std=0.1,
                    validation_fraction=0.1, patience=20, refine_steps=0)
    classifier = LatentODEClassifier(**settings, classification_weight=0.0).fit(frame, labels)
    latent = LatentODE(**settings).fit(frame)
    np.testing.assert_array_equal(classifier.transform(frame), latent.transform(frame))
    np.testing.assert_array_equal(
        classifier.history_.to_frame()["valid_loss"], latent.history_.to_frame()["valid_loss"]
    )
    weighted = LatentODEClassifier(**settings, classification_weight=100.0).fit(frame, labels)
    assert not np.allclose(weighted.transform(frame), latent.transform(frame))


# ------------------------------------------------------- cross-validation
def test_cross_val_score_roc_auc_on_a_list_and_a_panel():
    rng = np.random.RandomState(0)
    t = np.linspace(0, 5, 10)
    labels = np.arange(12) % 2
    panel = np.sin(2 * np.pi * np.where(labels == 1, 1.0, 0.3)[:, None] * t + rng.uniform(0, 6, (12, 1)))[..., None]
    panel[:, 1:][rng.rand(12, 9, 1) < 0.2] = np.nan
    quick = LatentODEClassifier(**TINY, max_epochs=1, batch_size=8)
    cv = KFold(3, shuffle=True, random_state=0)
    on_panel = cross_val_score(quick, panel, labels, cv=cv, scoring="roc_auc")
    ragged = [row[: 7 + i % 4] for i, row in enumerate(panel)]
    on_list = cross_val_score(quick, ragged, labels, cv=cv, scoring="roc_auc")
    assert on_panel.shape == on_list.shape == (3,)
    assert np.isfinite(on_panel).all() and np.isfinite(on_list).all()


# ------------------------------------------------------------ missing values
def test_entries_under_the_mask_never_reach_the_probabilities(joint, task, monkeypatch):
    _, (test, _) = task
    expected = joint.predict_proba(test)
    read = joint._check_input

    def with_garbage(X, t=None):
        batch = read(X, t)
        batch.values[~batch.mask] = 1e6
        return batch

    monkeypatch.setattr(joint, "_check_input", with_garbage)
    np.testing.assert_array_equal(joint.predict_proba(test), expected)


def test_rows_with_every_value_missing_are_as_if_absent(joint, task):
    _, (test, _) = task
    first_times = test.groupby("series_id", sort=False)["time"].transform("min")
    blank = test["y"].isna() & (test["time"] > first_times)
    np.testing.assert_allclose(
        joint.predict_proba(test[~blank].reset_index(drop=True)), joint.predict_proba(test), rtol=0, atol=1e-6
    )


# ----------------------------------------------------------- label alignment
def test_labels_are_aligned_by_series_id():
    frame, labels = _sinusoids(10, 3)
    ids = frame["series_id"].unique()
    settings = dict(TINY, max_epochs=2, batch_size=5)
    by_position = LatentODEClassifier(**settings).fit(frame, labels)
    shuffled = pd.Series(labels, index=ids).iloc[::-1]
    by_id = LatentODEClassifier(**settings).fit(frame, shuffled)
    np.testing.assert_array_equal(by_id.predict_proba(frame), by_position.predict_proba(frame))
    per_row = pd.Series(frame["series_id"].map(dict(zip(ids, labels))).to_numpy(), index=frame["series_id"])
    by_row = LatentODEClassifier(**settings).fit(frame, per_row)
    np.testing.assert_array_equal(by_row.predict_proba(frame), by_position.predict_proba(frame))
    assert by_position.score(frame, shuffled) == by_position.score(frame, labels)
    with pytest.raises(InputError, match="no label for ids"):
        LatentODEClassifier(**settings).fit(frame, pd.Series(labels[:9], index=ids[:9]))
    conflicting = per_row.copy()
    conflicting.iloc[0] = 1 - conflicting.iloc[0]
    with pytest.raises(InputError, match="same series id"):
        LatentODEClassifier(**settings).fit(frame, conflicting)
