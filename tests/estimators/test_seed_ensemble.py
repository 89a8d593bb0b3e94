"""SeedEnsemble: members differ by seed only, forecasts average, intervals and samples keep the members' format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from dynlearn import InputError, NeuralODE, NeuralSDE, SeedEnsemble
from dynlearn.datasets import make_damped_oscillator, make_forced_oscillator

FAST = dict(hidden_layer_sizes=(16,), max_epochs=3)


@pytest.fixture(scope="module")
def frame():
    return make_damped_oscillator(n_series=6, n_times=12, t_span=(0, 6), random_state=0)


@pytest.fixture(scope="module")
def fitted(frame):
    return SeedEnsemble(NeuralODE(**FAST), n_members=3, random_state=0).fit(frame)


def test_members_differ_by_seed_and_the_forecast_is_their_mean(frame, fitted):
    assert len(fitted.estimators_) == 3 and len(set(fitted.member_seeds_)) == 3
    for member, seed in zip(fitted.estimators_, fitted.member_seeds_):
        assert member.random_state == seed and member.max_epochs == 3
    history = frame[frame.time <= 4]
    mean = fitted.predict(history, t=[5.0, 6.0])
    members = [m.predict(history, t=[5.0, 6.0]) for m in fitted.estimators_]
    assert list(mean.columns) == list(members[0].columns)
    pd.testing.assert_frame_equal(mean[["series_id", "time"]], members[0][["series_id", "time"]])
    np.testing.assert_allclose(mean[["q", "p"]], np.mean([m[["q", "p"]].to_numpy() for m in members], axis=0))
    # Different seeds give different members: the average is not one of them.
    assert not np.allclose(members[0][["q", "p"]], members[1][["q", "p"]])


def test_the_same_seed_refits_the_same_ensemble(frame, fitted):
    again = clone(fitted).fit(frame)
    np.testing.assert_array_equal(again.member_seeds_, fitted.member_seeds_)
    pd.testing.assert_frame_equal(again.predict(frame, t=[7.0]), fitted.predict(frame, t=[7.0]))


def test_intervals_and_quantiles_average_bound_by_bound(frame, fitted):
    history = frame[frame.series_id < 3]
    for member in fitted.estimators_:
        member.calibrate(frame)
    lower, upper = fitted.predict_interval(history, t=[7.0, 8.0])
    bounds = [m.predict_interval(history, t=[7.0, 8.0]) for m in fitted.estimators_]
    np.testing.assert_allclose(lower[["q", "p"]], np.mean([b[0][["q", "p"]].to_numpy() for b in bounds], axis=0))
    np.testing.assert_allclose(upper[["q", "p"]], np.mean([b[1][["q", "p"]].to_numpy() for b in bounds], axis=0))
    assert (lower[["q", "p"]].to_numpy() <= upper[["q", "p"]].to_numpy()).all()
    quantiles = fitted.predict_quantiles(history, t=[7.0], quantiles=(0.1, 0.5, 0.9))
    assert sorted(set(quantiles.index.get_level_values("quantile"))) == [0.1, 0.5, 0.9]


def test_samples_pool_every_member_with_a_fresh_sample_count(frame):
    ensemble = SeedEnsemble(NeuralSDE(hidden_layer_sizes=(8,), max_epochs=2), n_members=2, random_state=1).fit(frame)
    draws = ensemble.sample(frame[frame.series_id < 2], t=[7.0, 8.0], n_samples=5, random_state=0)
    assert sorted(set(draws.index.get_level_values("sample"))) == [0, 1, 2, 3, 4]
    assert len(draws) == 5 * 2 * 2
    again = ensemble.sample(frame[frame.series_id < 2], t=[7.0, 8.0], n_samples=5, random_state=0)
    pd.testing.assert_frame_equal(draws, again)


def test_horizon_score_uses_the_averaged_forecast(frame, fitted):
    score = fitted.score(frame, horizon=3)
    assert np.isfinite(score) and score <= 1


@pytest.mark.parametrize(
    ("params", "argument"),
    [({"estimator": None}, "estimator"), ({"n_members": 0}, "n_members"), ({"n_members": 2.5}, "n_members")],
)
def test_bad_parameters_name_the_argument(frame, params, argument):
    settings = {"estimator": NeuralODE(**FAST), "n_members": 2, **params}
    with pytest.raises(InputError, match=argument):
        SeedEnsemble(**settings).fit(frame)


def test_simulate_averages_the_members_free_runs():
    frame = make_forced_oscillator(n_series=3, n_times=20, t_span=(0.0, 5.0), random_state=0)
    ensemble = SeedEnsemble(NeuralODE(covariates=["u"], solver="rk4", **FAST), n_members=2, random_state=0).fit(frame)
    one = frame[frame.series_id == 0]
    times, u = one["time"].to_numpy(), one[["u"]].to_numpy()
    x0 = one[["q", "p"]].to_numpy()[0]
    mean = ensemble.simulate(x0, times, covariates=u)
    members = [member.simulate(x0, times, covariates=u) for member in ensemble.estimators_]
    assert mean.shape == (len(times), 2)
    np.testing.assert_allclose(mean, np.mean(members, axis=0))
    assert not np.allclose(members[0], members[1])


def test_checkpointing_members_each_get_a_folder_and_a_refit_resumes_them(frame, fitted, tmp_path):
    ensemble = SeedEnsemble(NeuralODE(**FAST, checkpoint=tmp_path), n_members=3, random_state=0).fit(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member_0", "member_1", "member_2"]
    history = frame[frame.time <= 4]
    expected = fitted.predict(history, t=[5.0])  # the same seeds without checkpoints
    pd.testing.assert_frame_equal(ensemble.predict(history, t=[5.0]), expected)
    again = SeedEnsemble(NeuralODE(**FAST, checkpoint=tmp_path), n_members=3, random_state=0).fit(frame)
    pd.testing.assert_frame_equal(again.predict(history, t=[5.0]), expected)  # each member restored its run
    assert ensemble.estimator.checkpoint == tmp_path  # the template is left as given
