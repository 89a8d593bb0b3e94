"""ODERNNClassifier near its defaults against a summary-statistics baseline; the ``pooling`` parameter."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dynlearn import ODERNNClassifier
from dynlearn._compat import InvalidParameterError


def _rotations(n_series: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Two channels on a circle, irregularly sampled; the class is the direction of rotation.

    The second channel leads the first by a quarter period in one class and
    lags it in the other, and the frequency and the starting phase vary, so
    each channel alone (its mean, spread, extremes, last value, trend) looks
    the same in both classes: only the order of the channels' movements tells.
    """
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for i in range(n_series):
        label = i % 2
        n_times = int(rng.integers(15, 26))
        t = np.sort(rng.uniform(0, 6, n_times))
        frequency, phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
        angle = 2 * np.pi * frequency * t + phase
        lead = np.pi / 2 if label else -np.pi / 2
        noise = 0.05 * rng.standard_normal((2, n_times))
        frames.append(
            pd.DataFrame({"series_id": i, "time": t, "x0": np.sin(angle) + noise[0], "x1": np.sin(angle + lead) + noise[1]})
        )
        labels.append(label)
    return pd.concat(frames, ignore_index=True), pd.Series(labels, index=range(n_series))


def _summary_features(frame: pd.DataFrame) -> np.ndarray:
    rows = []
    for _, series in frame.groupby("series_id", sort=False):
        t = series["time"].to_numpy()
        row = []
        for column in ("x0", "x1"):
            x = series[column].to_numpy()
            row += [x.mean(), x.std(), x.min(), x.max(), x[-1], np.polyfit(t, x, 1)[0]]
        rows.append(row)
    return np.asarray(rows)


def _baseline_accuracy(train, test) -> float:
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    baseline.fit(_summary_features(train[0]), train[1].to_numpy())
    return float(np.mean(baseline.predict(_summary_features(test[0])) == test[1].to_numpy()))


@pytest.fixture(scope="module")
def rotations():
    return _rotations(60, seed=0), _rotations(60, seed=1)


def test_defaults_match_or_beat_the_summary_baseline(rotations):
    train, test = rotations
    # Defaults except a shorter budget: this set is learnt well before the default 200 epochs.
    clf = ODERNNClassifier(max_epochs=40, random_state=0, n_threads=1).fit(*train)
    accuracy = float(np.mean(clf.predict(test[0]) == test[1].to_numpy()))
    baseline = _baseline_accuracy(train, test)
    assert accuracy >= max(baseline, 0.9), (accuracy, baseline)


@pytest.mark.parametrize("pooling, width", [("last", 1), ("last_mean", 2)])
def test_pooling_options_set_what_the_head_reads(rotations, pooling, width):
    train, test = rotations
    clf = ODERNNClassifier(hidden_dim=6, ode_hidden_layer_sizes=(8,), pooling=pooling, max_epochs=2, random_state=0)
    clf.fit(*train)
    first = next(m for m in clf.module_.head.modules() if hasattr(m, "in_features"))
    assert first.in_features == width * 6
    proba = clf.predict_proba(test[0])
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_last_mean_pools_the_states_of_each_series_own_rows(rotations):
    train, _ = rotations
    clf = ODERNNClassifier(hidden_dim=3, ode_hidden_layer_sizes=(8,), max_epochs=1, random_state=0).fit(*train)
    states = torch.arange(18.0).reshape(2, 3, 3)  # series 1 has two rows; its third row is padding
    final = torch.full((2, 3), -1.0)
    pooled = clf.module_.pooled(states, final, torch.tensor([3, 2]))
    expected_mean = torch.stack([states[0].mean(dim=0), states[1, :2].mean(dim=0)])
    torch.testing.assert_close(pooled, torch.cat([final, expected_mean], dim=1))


def test_pooling_is_validated_at_fit(rotations):
    train, _ = rotations
    with pytest.raises(InvalidParameterError, match="pooling"):
        ODERNNClassifier(pooling="max", max_epochs=1).fit(*train)
