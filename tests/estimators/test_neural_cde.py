"""NeuralCDE and NeuralCDEClassifier: controlled differential equations along the path of the observations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score

import dynlearn
from dynlearn import NeuralCDE, NeuralCDEClassifier
from dynlearn.data import check_query_times
from dynlearn.datasets import make_forced_oscillator
from dynlearn.exceptions import InputError
from dynlearn.metrics import r2_score
from dynlearn.solvers import ControlPath

STATES = ["q", "p"]
# midpoint: over seeds as accurate as rk4 here at half the time (benchmarks/neural_cde.py); 8 rows of history
# and 20 epochs keep the fit to seconds.
SMALL = dict(history_length=8, horizon=7.5, solver="midpoint", max_epochs=20, random_state=0, n_threads=1)
CUT = 7.5


@pytest.fixture(scope="module")
def panel():
    """Forced oscillators: 16 series to fit on, 8 held-out series with input signals never seen."""
    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), random_state=0)
    return frame[frame.series_id < 16].reset_index(drop=True), frame[frame.series_id >= 16].reset_index(drop=True)


@pytest.fixture(scope="module")
def driven(panel):
    return NeuralCDE(covariates=["u"], **SMALL).fit(panel[0])


def _split(test):
    return test[test.time <= CUT], test[test.time > CUT]


def test_control_path_derivative_matches_finite_differences():
    times = torch.tensor([[0.0, 0.5, 1.5, 1.5, 3.0]], dtype=torch.float64)
    values = torch.stack([torch.sin(times), times**2], dim=-1)
    for interpolation in ("linear", "cubic"):
        path = ControlPath(times, values, interpolation)
        slope = path.derivative()
        for k, fraction in [(0, 0.3), (1, 0.2), (1, 0.8), (3, 0.5)]:
            gap = float(times[0, k + 1] - times[0, k])
            at = lambda f, k=k, path=path: path.on_segment(torch.tensor(k), torch.tensor(f, dtype=torch.float64))
            numeric = (at(fraction + 1e-6) - at(fraction - 1e-6)) / (2e-6 * gap)
            exact = slope.on_segment(torch.tensor(k), torch.tensor(fraction, dtype=torch.float64))
            torch.testing.assert_close(exact, numeric)
        # A zero gap (a repeated time, padding) has no slope: the state holds there.
        assert torch.equal(slope.on_segment(torch.tensor(2), torch.tensor(0.5)), torch.zeros(1, 2, dtype=torch.float64))
    held = ControlPath(times, values, "previous").derivative()
    assert torch.equal(held.on_segment(torch.tensor(1), torch.tensor(0.5)), torch.zeros(1, 2, dtype=torch.float64))


def test_inputs_let_the_model_forecast_under_new_input_signals(panel, driven):
    train, test = panel
    history, future = _split(test)
    predicted = driven.predict(history, t=future[["series_id", "time", "u"]])
    assert list(predicted.columns) == ["series_id", "time", *STATES]
    blind = NeuralCDE(**SMALL).fit(train.drop(columns="u"))
    unaware = blind.predict(history.drop(columns="u"), t=future[["series_id", "time"]])
    truth = future[["series_id", "time", *STATES]]
    mse = lambda p: float(((p[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2).mean())
    # The blind model must stay in the data's range for the ratio to mean anything.
    assert mse(unaware) < 2 * float((truth[STATES].to_numpy() ** 2).mean())
    assert r2_score(truth, predicted) > 0.9
    assert mse(predicted) * 3 < mse(unaware)


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_later_inputs_change_no_earlier_prediction(panel, driven, interpolation):
    _, test = panel
    model = clone(driven).set_params(interpolation=interpolation)
    model.__dict__.update({k: v for k, v in driven.__dict__.items() if k.endswith("_")})
    model.module_.interpolation = interpolation
    history, future = _split(test)
    query = future[["series_id", "time", "u"]].copy()
    tau = CUT + 3.0
    changed = query.copy()
    later = changed.time > tau
    changed.loc[later, "u"] += 5.0
    before, after = model.predict(history, t=query), model.predict(history, t=changed)
    early = (query.time <= tau).to_numpy()
    np.testing.assert_array_equal(before[STATES].to_numpy()[early], after[STATES].to_numpy()[early])
    assert not np.allclose(before[STATES].to_numpy()[~early], after[STATES].to_numpy()[~early])
    model.module_.interpolation = driven.interpolation


def test_later_observations_change_no_earlier_one_step_prediction(panel, driven):
    _, test = panel
    series = test[test.series_id == 16].reset_index(drop=True)
    base = driven.predict(series)
    changed = series.copy()
    changed.loc[40:, STATES] += 3.0
    moved = driven.predict(changed)
    np.testing.assert_array_equal(base[STATES].to_numpy()[:41], moved[STATES].to_numpy()[:41])
    assert not np.allclose(base[STATES].to_numpy()[41:], moved[STATES].to_numpy()[41:])
    assert driven.score(test) > 0.9  # one step ahead


def test_intervals_and_forecast_score_read_the_inputs(panel, driven):
    _, test = panel
    history, future = _split(test)
    low, high = driven.predict_interval(history, t=future[["series_id", "time", "u"]], coverage=0.9)
    assert list(low.columns) == ["series_id", "time", *STATES]
    assert (high[STATES].to_numpy() >= low[STATES].to_numpy()).all()
    assert driven.score(test, horizon=3.0) > 0.8


def test_irregular_times_and_missing_values_are_read_through_the_mask():
    frame = make_forced_oscillator(n_series=6, n_times=30, irregular=True, missing_fraction=0.3, random_state=1)
    model = NeuralCDE(covariates=["u"], hidden_dim=8, hidden_layer_sizes=(16,), max_epochs=3, solver="midpoint",
                      random_state=0, n_threads=1).fit(frame)  # fmt: skip
    assert model.mask_channels_  # missing entries add observation-count channels
    batch = model._check_input(frame)
    query = check_query_times(None, batch)
    garbage = replace(batch, values=np.where(batch.mask, batch.values, 1e6))
    predicted = model._predict_batch(batch, query)
    assert np.isfinite(predicted).all()
    np.testing.assert_array_equal(predicted, model._predict_batch(garbage, query))


def _frequency_panel(n_series=48, seed=0):
    """Sinusoids of two frequencies on a grid of 30 times, half of the points missing (irregular sampling)."""
    rng = np.random.RandomState(seed)
    freq = np.where(np.arange(n_series) % 2 == 0, 0.3, 1.0)
    t = np.arange(30) * 0.25
    X = np.sin(2 * np.pi * freq[:, None] * t + rng.uniform(0, 2 * np.pi, (n_series, 1)))[..., None]
    X[rng.rand(*X.shape) < 0.5] = np.nan
    return X, np.where(freq > 0.5, "fast", "slow")


CLASSIFIER = dict(hidden_dim=16, hidden_layer_sizes=(32,), max_epochs=30, batch_size=16, solver="midpoint",
                  random_state=0, n_threads=1)  # fmt: skip


def test_classifier_separates_frequencies_with_half_the_points_missing():
    X, y = _frequency_panel()
    scores = cross_val_score(NeuralCDEClassifier(**CLASSIFIER), X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    # Balanced classes: guessing scores 0.5 (measured: 0.875, 0.81, 1.0).
    assert scores.mean() > 0.8, scores


def test_classifier_outputs_and_masked_values():
    X, y = _frequency_panel(n_series=12)
    clf = NeuralCDEClassifier(**{**CLASSIFIER, "max_epochs": 2}).fit(X, y)
    assert list(clf.classes_) == ["fast", "slow"] and clf.mask_channels_
    proba = clf.predict_proba(X)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(axis=1), 1)
    assert set(clf.predict(X)) <= {"fast", "slow"} and 0 <= clf.score(X, y) <= 1
    batch = clf._check_input(X)
    paths = clf._whole_paths(replace(batch, values=np.where(batch.mask, batch.values, 1e6)))
    np.testing.assert_array_equal(clf._read_out(paths["times"], paths["path"]), clf._logits(X))


def test_bad_inputs_name_the_argument_and_the_fix(panel, driven):
    train, test = panel
    history, future = _split(test)
    with pytest.raises(InputError, match="query frame"):
        driven.predict(history, t=[8.0, 9.0])
    holed = history.copy()
    holed.loc[holed.index[3], "u"] = np.nan
    with pytest.raises(InputError, match=r"'u'"):
        driven.predict(holed, t=future[["series_id", "time", "u"]])
    with pytest.raises(InputError, match=r"covariates"):
        NeuralCDE(covariates=["force"], max_epochs=1).fit(train)
    with pytest.raises(InputError, match=r"hidden_layer_sizes.*expected.*E\.g\."):
        NeuralCDE(hidden_layer_sizes=(0,), max_epochs=1).fit(train)
    with pytest.raises(InputError, match=r"^X: expected at least one series with two or more.*; got .*pass longer series"):
        NeuralCDE(max_epochs=1).fit(np.zeros((3, 1, 2)))
    with pytest.raises(InputError, match=r"^y: "):
        NeuralCDEClassifier(max_epochs=1).fit(*_frequency_panel(n_series=4)[:1], None)
    with pytest.raises(ValueError, match="interpolation"):  # a held path has no derivative to drive the state
        NeuralCDE(interpolation="previous").fit(train)


def test_parameters_clone_and_save(tmp_path, panel, driven):
    _, test = panel
    model = NeuralCDE(covariates=["u"], interpolation="linear", history_length=4)
    assert clone(model).get_params()["covariates"] == ["u"]
    assert clone(model).get_params()["interpolation"] == "linear"
    assert {"NeuralCDE", "NeuralCDEClassifier"} <= set(dynlearn.__all__)
    history, future = _split(test)
    query = future[["series_id", "time", "u"]]
    loaded = dynlearn.load(driven.save(tmp_path / "cde.dlm"))
    np.testing.assert_array_equal(loaded.predict(history, t=query).to_numpy(), driven.predict(history, t=query).to_numpy())
