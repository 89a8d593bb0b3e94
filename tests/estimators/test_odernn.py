"""ODERNN and ODERNNClassifier learn: interpolation, forecasting, classification; masked entries are inert."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score

from dynlearn import ConvergenceWarning, InputError, ODERNN, ODERNNClassifier
from dynlearn.data import check_query_times
from dynlearn.datasets import make_periodic
from dynlearn.estimators._odernn import (
    _extrapolation_loss,
    _interpolated,
    _interpolation_loss,
    _series_labels,
    _shown_and_predicted,
    _unpack,
)

SMALL = dict(hidden_dim=8, ode_hidden_layer_sizes=(16,), max_epochs=3, batch_size=8, random_state=0, device="cpu")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _split_half(frame: pd.DataFrame, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hide a random half of each series' points (never its first) for evaluation."""
    held = np.random.RandomState(seed).rand(len(frame)) < 0.5
    held &= frame.groupby("series_id").cumcount().to_numpy() > 0
    return frame[~held], frame[held]


def _last_value(observed: pd.DataFrame, queries: pd.DataFrame) -> np.ndarray:
    out = []
    for sid, q in queries.groupby("series_id", sort=False):
        seen = observed[observed["series_id"] == sid]
        before = np.searchsorted(seen["time"].to_numpy(), q["time"].to_numpy(), side="left") - 1
        out.append(seen["y"].to_numpy()[np.clip(before, 0, None)])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def periodic_split():
    frame = make_periodic(n_series=64, n_times=40, irregular=True, random_state=0)
    return _split_half(frame)


@pytest.fixture(scope="module")
def fitted(periodic_split):
    observed, _ = periodic_split
    return ODERNN(**SMALL).fit(observed)


# ------------------------------------------------------------ learning
def test_interpolation_beats_last_value_fivefold(periodic_split):
    """Half of each sinusoid hidden: interpolated points are far closer than carrying the last value forward."""
    observed, hidden = periodic_split
    model = ODERNN(
        hidden_dim=16, ode_hidden_layer_sizes=(32,), max_epochs=30, batch_size=16, patience=None, random_state=0
    ).fit(observed)
    predicted = model.predict(observed, t=hidden[["series_id", "time"]])
    assert list(predicted["time"]) == list(hidden["time"])
    mse = np.mean((predicted["y"].to_numpy() - hidden["y"].to_numpy()) ** 2)
    baseline = np.mean((_last_value(observed, hidden) - hidden["y"].to_numpy()) ** 2)
    assert mse * 5 < baseline, (mse, baseline)


def test_extrapolation_task_forecasts_the_rest_of_each_series():
    frame = make_periodic(n_series=80, n_times=40, irregular=True, random_state=0)
    train, test = frame[frame["series_id"] < 64], frame[frame["series_id"] >= 64]
    past, future = test[test["time"] <= 3.75], test[test["time"] > 3.75]
    model = ODERNN(
        task="extrapolation",
        extrapolation_split=0.75,
        hidden_dim=16,
        ode_hidden_layer_sizes=(32,),
        max_epochs=30,
        batch_size=16,
        patience=None,
        random_state=0,
    ).fit(train)
    forecast = model.predict(past, t=future[["series_id", "time"]])
    mse = np.mean((forecast["y"].to_numpy() - future["y"].to_numpy()) ** 2)
    last = np.mean((future["series_id"].map(past.groupby("series_id")["y"].last()) - future["y"]) ** 2)
    mean = np.mean((future["series_id"].map(past.groupby("series_id")["y"].mean()) - future["y"]) ** 2)
    assert mse * 3 < last and mse * 2 < mean, (mse, last, mean)


def _frequency_panel(n_series: int = 48, seed: int = 2):
    """Sinusoids of two frequencies on a grid of 30 times, half of the points missing (irregular sampling)."""
    rng = np.random.RandomState(seed)
    freq = np.where(np.arange(n_series) % 2 == 0, 0.3, 1.0)
    t = np.arange(30) * 0.25
    X = np.sin(2 * np.pi * freq[:, None] * t + rng.uniform(0, 2 * np.pi, (n_series, 1)))[..., None]
    X[rng.rand(*X.shape) < 0.5] = np.nan
    return X, np.where(freq > 0.5, "fast", "slow")


def test_classifier_separates_frequencies_under_cross_validation():
    X, y = _frequency_panel()
    clf = ODERNNClassifier(
        hidden_dim=24,
        ode_hidden_layer_sizes=(32,),
        max_epochs=30,
        batch_size=16,
        patience=None,
        validation_fraction=0.0,
        random_state=0,
    )
    scores = cross_val_score(clf, X, y, scoring="roc_auc", cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.mean() > 0.9, scores


# ------------------------------------------------------------- masking
def test_values_under_the_mask_never_change_predictions(fitted, periodic_split):
    observed, _ = periodic_split
    batch = fitted._check_input(observed)
    query = check_query_times(np.array([1.3, 2.7, 5.5]), batch)
    garbage = np.random.RandomState(0).normal(scale=1e6, size=batch.values.shape)
    holes = replace(batch, mask=batch.mask & (np.random.RandomState(1).rand(*batch.mask.shape) < 0.7))
    tampered = replace(holes, values=np.where(holes.mask, holes.values, garbage))
    np.testing.assert_array_equal(fitted._predict_batch(holes, query), fitted._predict_batch(tampered, query))
    assert not np.allclose(fitted._predict_batch(batch, query), fitted._predict_batch(holes, query))


@pytest.mark.parametrize(
    ("solver", "tolerance", "field"), [("euler", 1e-12, (16,)), ("euler", 1e-12, (64, 64)), ("rk4", 1e-12, (16,)),
                                       ("dopri5", 1e-5, (16,))]
)
def test_interpolation_reuses_encoder_states_with_the_same_predictions(periodic_split, solver, tolerance, field):
    """Shown rows take the encoder's state before their update; every row still equals evolving its anchor. With a
    field large enough for its values to be carried (64, 64), hidden rows take their first step from the encoder's."""
    observed, _ = periodic_split
    sizes = {**SMALL, "max_epochs": 1, "ode_hidden_layer_sizes": field}
    model = ODERNN(**sizes, gru_hidden_size=6, solver=solver, dtype="float64").fit(observed)
    batch = model._check_input(observed)
    data = {k: model._tensor(v[:10]) for k, v in model._internal(batch).items()}
    values, mask, times, real, _ = _unpack(data)
    keep = real & (torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) < 0.4)
    keep[:, 0] = True
    solve = {**model._solve_options(), "rtol": 1e-9, "atol": 1e-11}
    results = []
    for predict in (_interpolated, _shown_and_predicted):
        model.module_.zero_grad()
        args = (real, keep, solve) if predict is _interpolated else (keep, None, solve)
        predicted = predict(model.module_, values, mask, times, *args)
        ((predicted[:, 1:] - values[:, 1:]) ** 2 * mask[:, 1:]).sum().backward()
        grads = torch.cat([q.grad.flatten() for q in model.module_.parameters() if q.grad is not None])
        results.append((predicted[:, 1:][real[:, 1:]].detach(), grads))
    assert (~keep & real).any() and (keep[:, 1:] & real[:, 1:]).any()
    torch.testing.assert_close(results[0][0], results[1][0], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("task", ["interpolation", "extrapolation"])
def test_values_under_the_mask_never_change_the_loss(fitted, periodic_split, task):
    observed, _ = periodic_split
    batch = fitted._check_input(observed)
    data = {k: fitted._tensor(v[:8]) for k, v in fitted._internal(batch).items()}
    data["mask"] = data["mask"] * (torch.rand(data["mask"].shape, generator=torch.Generator().manual_seed(0)) < 0.7)
    tampered = dict(data, values=torch.where(data["mask"] > 0.5, data["values"], torch.full_like(data["values"], 1e6)))
    solve = fitted._solve_options()

    def loss(d):
        draws = torch.Generator().manual_seed(3)
        if task == "interpolation":
            return _interpolation_loss(fitted.module_, d, solve, 0.7, draws)
        return _extrapolation_loss(fitted.module_, d, solve, 0.8, 0.5, draws)

    with torch.no_grad():
        assert torch.equal(loss(data), loss(tampered))
        assert loss(data) > 0


def test_classifier_probabilities_ignore_values_under_the_mask():
    X, y = _frequency_panel(n_series=12)
    clf = ODERNNClassifier(**SMALL).fit(X, y)
    batch = clf._check_input(X)
    garbage = replace(batch, values=np.where(batch.mask, batch.values, 1e6))
    np.testing.assert_array_equal(clf._batch_logits(batch), clf._batch_logits(garbage))


# ------------------------------------------------------------ prediction
def test_predict_interpolates_inside_and_forecasts_beyond_each_window(fitted, periodic_split):
    observed, _ = periodic_split
    first = observed[observed["series_id"] == 0]
    inside = fitted.predict(first, t=[2.5])
    # A query inside the window depends only on the history before it: later rows cannot change it.
    truncated = fitted.predict(first[first["time"] < 2.5], t=[2.5])
    np.testing.assert_allclose(inside["y"].to_numpy(), truncated["y"].to_numpy(), rtol=1e-5, atol=1e-6)
    beyond = fitted.predict(first, t=[6.0, 7.0])
    assert np.isfinite(beyond["y"]).all() and len(beyond) == 2


def test_a_query_at_an_observation_time_never_sees_that_observation(fitted, periodic_split):
    observed, _ = periodic_split
    first = observed[observed["series_id"] == 0].reset_index(drop=True)
    one_step = fitted.predict(first)["y"].to_numpy()
    for k in range(1, len(first)):
        alone = fitted.predict(first.iloc[:k], t=[first["time"].iloc[k]])["y"].to_numpy()
        np.testing.assert_allclose(one_step[k], alone[0], rtol=1e-5, atol=1e-6)


def test_one_step_ahead_default_and_score(fitted, periodic_split):
    observed, _ = periodic_split
    predicted = fitted.predict(observed)
    assert len(predicted) == len(observed) and list(predicted.columns) == ["series_id", "time", "y"]
    assert np.isfinite(fitted.score(observed))


def test_series_labels_align_by_id_for_frames_and_by_position_otherwise(fitted, periodic_split):
    observed, _ = periodic_split
    batch = fitted._check_input(observed[observed["series_id"] < 4].iloc[::-1])  # ids appear as 3, 2, 1, 0
    by_id = pd.Series(["a", "b", "c", "d"], index=[0, 1, 2, 3])
    assert list(_series_labels(by_id, batch)) == ["d", "c", "b", "a"]
    assert list(_series_labels(["x", "y", "z", "w"], batch)) == ["x", "y", "z", "w"]
    with pytest.raises(InputError, match="a label for every series id"):
        _series_labels(pd.Series(["a", "b", "c"], index=[0, 1, 9]), batch)
    with pytest.raises(InputError, match="one label per series"):
        _series_labels(["a", "b"], batch)


def test_classifier_rejects_a_single_class_and_continuous_targets():
    X, _ = _frequency_panel(n_series=6)
    with pytest.raises(InputError, match="two or more classes"):
        ODERNNClassifier(**SMALL).fit(X, ["a"] * 6)
    with pytest.raises(InputError, match="y: expected class labels"):
        ODERNNClassifier(**SMALL).fit(X, np.linspace(0, 1, 6))


@pytest.mark.parametrize("missing", [np.nan, np.inf, None])
def test_classifier_names_missing_labels(missing):
    X, y = _frequency_panel(n_series=6)
    labels = np.where(np.arange(6) % 2 == 0, 0.0, 1.0).astype(object if missing is None else float)
    labels[3] = missing
    with pytest.raises(InputError, match=r"y: expected a label for every series; got 1 missing or infinite label\(s\), the first at position 3"):
        ODERNNClassifier(**SMALL).fit(X, labels)


def test_classifier_on_a_long_frame_with_labels_by_series_id():
    X, y = _frequency_panel(n_series=12)
    rows = [
        pd.DataFrame({"series_id": f"s{i}", "time": np.arange(30) * 0.25, "y": X[i, :, 0]}).dropna()
        for i in range(len(X))
    ]
    frame = pd.concat(rows[::-1], ignore_index=True)  # series appear in reverse order
    labels = pd.Series(y, index=[f"s{i}" for i in range(len(X))])
    clf = ODERNNClassifier(**SMALL).fit(frame, labels)
    proba = clf.predict_proba(frame)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(axis=1), 1)
    assert set(clf.predict(frame)) <= {"fast", "slow"}
    assert clf.score(frame, labels) == np.mean(clf.predict(frame) == labels.loc[[f"s{i}" for i in range(11, -1, -1)]])


def test_classifier_cross_validates_a_long_frame_with_group_kfold():
    X, y = _frequency_panel(n_series=12)
    frame = pd.concat(
        [pd.DataFrame({"series_id": i, "time": np.arange(30) * 0.25, "y": X[i, :, 0]}).dropna() for i in range(12)],
        ignore_index=True,
    )
    per_row = pd.Series(y[frame["series_id"]], index=frame["series_id"].to_numpy())
    # Default scoring is the classifier's own accuracy, which reads per-row labels by series id.
    scores = cross_val_score(ODERNNClassifier(**SMALL), frame, per_row, groups=frame["series_id"], cv=GroupKFold(3))
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    mixed = per_row.copy()
    mixed.iloc[1] = "fast" if mixed.iloc[0] == "slow" else "slow"  # row 1 belongs to series 0 too
    with pytest.raises(InputError, match="different labels on rows of the same series"):
        ODERNNClassifier(**SMALL).fit(frame, mixed)


def test_bad_hyperparameters_and_inputs():
    X, y = _frequency_panel(n_series=6)
    with pytest.raises(ValueError, match="observed_fraction"):
        ODERNN(**{**SMALL, "observed_fraction": 0.0}).fit(X)
    with pytest.raises(InputError, match="ode_hidden_layer_sizes"):
        ODERNN(**{**SMALL, "ode_hidden_layer_sizes": (0,)}).fit(X)
    with pytest.raises(InputError, match="two or more observation times"):
        ODERNN(**SMALL).fit(np.ones((3, 1, 1)))
    with pytest.raises(InputError, match="dopri5"):
        ODERNN(**{**SMALL, "solver": "nonsense"}).fit(X)


def test_rows_before_the_first_shown_value_are_learned():
    """Series whose first values are missing are predicted there from the series' start, as trained.

    Training hides the first row's values like any other row's, so the state
    evolved from a series' start (where ``predict`` starts it) learns the
    typical early course; when the first values were always shown, those
    rows were never a target (MSE there 0.11-0.17 over three seeds, against
    0.07 now).
    """
    frame = make_periodic(n_series=100, n_times=40, irregular="shared", random_state=3)
    train, test = frame[frame["series_id"] < 80], frame[frame["series_id"] >= 80].reset_index(drop=True)
    model = ODERNN(
        hidden_dim=16, ode_hidden_layer_sizes=(32,), observed_fraction=0.2, max_epochs=40, batch_size=16,
        patience=None, random_state=0,
    ).fit(train)
    position = test.groupby("series_id").cumcount().to_numpy()
    given = test.copy()
    given.loc[position < 8, "y"] = np.nan  # the first fifth of every window unobserved
    early = position < 8
    predicted = model.predict(given, t=test[["series_id", "time"]])["y"].to_numpy()[early]
    truth = test["y"].to_numpy()[early]
    mse = np.mean((predicted - truth) ** 2)
    mean_level = np.mean((truth - train["y"].mean()) ** 2)
    assert mse * 4 < mean_level, (mse, mean_level)
