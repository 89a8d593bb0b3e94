"""The scikit-learn contract beyond its estimator checks (in test_common.py): pipelines, search, clone, pickle, seeds."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.pipeline import Pipeline

from dynlearn import ConvergenceWarning, InputError, IntegrationError, NeuralODE, SeriesScaler
from dynlearn.data import check_query_times
from dynlearn.datasets import make_damped_oscillator

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=2, window_size=4, random_state=0, device="cpu")

# ---------------------------------------------------------------- pipelines
def test_pipeline_with_scaler_maps_back_to_user_units(oscillator):
    frame, _ = oscillator
    frame = frame.assign(q=frame["q"] * 1000.0 + 50.0)  # user units far from unit scale
    pipe = Pipeline([("scale", SeriesScaler()), ("model", NeuralODE(**SMALL))]).fit(frame)
    scaled = pipe.predict(frame, t=[8.5, 9.0])
    restored = pipe["scale"].inverse_transform(scaled)
    direct = pipe["model"].predict(pipe["scale"].transform(frame), t=[8.5, 9.0])
    np.testing.assert_allclose(restored[["q", "p"]], pipe["scale"].inverse_transform(direct)[["q", "p"]])
    assert abs(restored["q"].mean() - 50.0) < 1000.0  # back in the user's units, not standardised ones
    assert abs(scaled["q"]).max() < 10


def test_grid_search_on_frames_with_group_kfold(oscillator):
    frame, _ = oscillator
    search = GridSearchCV(NeuralODE(**SMALL), {"hidden_layer_sizes": [(4,), (8,)]}, cv=GroupKFold(n_splits=2))
    search.fit(frame, groups=frame["series_id"])
    assert set(search.cv_results_["param_hidden_layer_sizes"]) == {(4,), (8,)}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.predict(frame, t=[9.0]).shape == (frame["series_id"].nunique(), 4)


def test_grid_search_on_arrays_with_kfold():
    rng = np.random.RandomState(0)
    t = np.linspace(0, 3, 15)
    X = np.exp(-rng.uniform(0.5, 2, size=(12, 1, 1)) * t[None, :, None])
    # Times other than 0, 1, 2, ... reach score only through metadata routing; without them score refuses
    # the arrays rather than reading them at the row numbers.
    with sklearn.config_context(enable_metadata_routing=True):
        model = NeuralODE(**SMALL).set_fit_request(t=True).set_score_request(t=True)
        search = GridSearchCV(model, {"solver": ["dopri5", "rk4"]}, cv=KFold(n_splits=3))
        search.fit(X, t=t)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_estimator_.predict(X[:2], t=[4.0], X_t=t).shape == (2, 1, 1)
    with pytest.raises(InputError, match="X_t"):
        search.best_estimator_.predict(X[:2], t=[4.0])


# ------------------------------------------------------- clone, pickle, seed
def test_clone_and_pickle_give_identical_predictions(oscillator, fitted_ode):
    frame, _ = oscillator
    expected = fitted_ode.predict(frame, t=[9.0, 10.0])
    restored = pickle.loads(pickle.dumps(fitted_ode))
    pd.testing.assert_frame_equal(restored.predict(frame, t=[9.0, 10.0]), expected)
    refit = clone(fitted_ode).fit(frame)
    pd.testing.assert_frame_equal(refit.predict(frame, t=[9.0, 10.0]), expected)


def test_a_model_pickled_before_a_hyperparameter_existed_gets_its_default(oscillator, fitted_ode):
    """Unpickling fills hyperparameters the pickle lacks with their defaults, so get_params and clone still work."""
    frame, _ = oscillator
    expected = fitted_ode.predict(frame, t=[9.0, 10.0])
    state = fitted_ode.__getstate__()
    state = {k: v for k, v in state.items() if k != "solver"}  # as if `solver` had been added since
    old = NeuralODE.__new__(NeuralODE)
    old.__setstate__(state)
    assert old.get_params()["solver"] == NeuralODE().solver
    pd.testing.assert_frame_equal(old.predict(frame, t=[9.0, 10.0]), expected)
    assert clone(old).get_params() == fitted_ode.get_params()


def test_pickled_module_holds_cpu_tensors(fitted_ode):
    state = fitted_ode.__getstate__()
    assert all(p.device.type == "cpu" for p in state["module_"].parameters())


def test_same_seed_same_result_without_touching_global_seed(oscillator):
    frame, _ = oscillator
    before = torch.random.get_rng_state()
    first = NeuralODE(**SMALL).fit(frame)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = NeuralODE(**SMALL).fit(frame)
    for a, b in zip(first.module_.parameters(), second.module_.parameters()):
        assert torch.equal(a, b)
    other = NeuralODE(**{**SMALL, "random_state": 1}).fit(frame)
    assert not torch.equal(next(first.module_.parameters()), next(other.module_.parameters()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_matches_cpu_and_unpickles_on_cpu(oscillator):
    frame, _ = oscillator
    gpu = NeuralODE(**{**SMALL, "device": "cuda"}).fit(frame)
    assert next(gpu.module_.parameters()).device.type == "cuda"
    cpu = NeuralODE(**SMALL).fit(frame)
    np.testing.assert_allclose(gpu.predict(frame, t=[9.0]).to_numpy(), cpu.predict(frame, t=[9.0]).to_numpy(), atol=1e-3)
    state = pickle.dumps(gpu)
    restored = pickle.loads(state)
    assert restored.predict(frame, t=[9.0]).shape == (frame["series_id"].nunique(), 4)


def test_warm_start_continues_training(oscillator):
    frame, _ = oscillator
    model = NeuralODE(**{**SMALL, "warm_start": True, "patience": None}).fit(frame)
    first = list(model.history_.to_frame()["train_loss"])
    model.fit(frame)
    assert len(model.history_) == 2 * len(first)
    assert model.n_epochs_ == 4


def test_convergence_warning_when_max_epochs_ends_training(oscillator):
    frame, _ = oscillator
    with pytest.warns(ConvergenceWarning, match="max_epochs=2"):
        NeuralODE(**SMALL).fit(frame)


# -------------------------------------------------------- kinds in, kinds out
def test_returns_the_kind_it_was_given(oscillator, fitted_ode):
    frame, _ = oscillator
    indexed = frame.set_index(["series_id", "time"])
    out = fitted_ode.predict(indexed, t=[9.0])
    assert isinstance(out.index, pd.MultiIndex) and list(out.index.names) == ["series_id", "time"]
    assert list(out.columns) == ["q", "p"]
    reconstruction = fitted_ode.predict(frame)
    assert list(reconstruction.columns) == ["series_id", "time", "q", "p"] and len(reconstruction) == len(frame)
    # Fitted on a frame: arrays and lists say at which times their rows were observed.
    panel = np.random.RandomState(0).normal(size=(3, 6, 2))
    seen = np.arange(6.0)
    assert fitted_ode.predict(panel, t=[6.0, 7.0], X_t=seen).shape == (3, 2, 2)
    assert fitted_ode.predict(panel[0], t=[6.0, 7.0], X_t=seen).shape == (2, 2)
    ragged = fitted_ode.predict([panel[0], panel[1, :4]], t=[seen, seen[:4]], X_t=[seen, seen[:4]])
    assert [a.shape for a in ragged] == [(6, 2), (4, 2)]


def test_datetime_series_forecast_in_datetimes():
    frame = make_damped_oscillator(n_series=1, n_times=30, random_state=0).drop(columns="series_id")
    frame.index = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.pop("time") * 3600, unit="s")
    frame.index.name = "when"
    model = NeuralODE(**SMALL).fit(frame)
    queries = pd.date_range("2024-01-01 10:30", periods=3, freq="30min")
    out = model.predict(frame, t=queries)
    assert isinstance(out.index, pd.DatetimeIndex) and out.index.name == "when"
    assert (out.index == queries).all()
    with pytest.raises(InputError, match="datetime"):
        model.predict(frame, t=[1.0, 2.0])


def test_forecast_conditions_on_each_series_history(fitted_ode, oscillator):
    frame, _ = oscillator
    history = frame[frame["series_id"].isin([0, 1])]
    both = fitted_ode.predict(history, t=[9.0])
    alone = fitted_ode.predict(history[history["series_id"] == 1], t=[9.0])
    # Adaptive steps are chosen for the whole batch, so batch-mates agree to solver tolerance, not bitwise.
    np.testing.assert_allclose(both[both["series_id"] == 1][["q", "p"]].to_numpy(), alone[["q", "p"]].to_numpy(), atol=1e-3)
    assert not np.allclose(both.iloc[0][["q", "p"]].to_numpy(float), both.iloc[1][["q", "p"]].to_numpy(float))


# -------------------------------------------------------------- bad input
def test_unknown_solver_lists_real_choices(oscillator):
    frame, _ = oscillator
    with pytest.raises(InputError, match="dopri5"):
        NeuralODE(**{**SMALL, "solver": "nonsense"}).fit(frame)


def test_invalid_hyperparameter_names_the_parameter(oscillator):
    frame, _ = oscillator
    with pytest.raises(ValueError, match="learning_rate"):
        NeuralODE(**{**SMALL, "learning_rate": -1.0}).fit(frame)


def test_feature_count_must_match_fit(fitted_ode, oscillator):
    frame, _ = oscillator
    with pytest.raises(InputError, match="2 features"):
        fitted_ode.predict(frame.drop(columns="p"))


def test_step_limit_raises_integration_error_with_advice(oscillator):
    frame, _ = oscillator
    with pytest.raises(IntegrationError, match="max_num_steps"):
        NeuralODE(**{**SMALL, "max_num_steps": 1}).fit(frame)


def test_single_observation_cannot_be_fitted():
    with pytest.raises(InputError, match="two or more observation times"):
        NeuralODE(**SMALL).fit(np.ones((3, 1, 2)))


# ------------------------------------------------------------ properties
def test_values_under_the_mask_cannot_change_outputs(fitted_ode, oscillator):
    frame, _ = oscillator
    batch = fitted_ode._check_input(frame)
    query = check_query_times(np.array([8.5, 9.5]), batch)
    garbage = np.random.RandomState(0).normal(scale=1e6, size=batch.values.shape)
    tampered = replace(batch, values=np.where(batch.mask, batch.values, garbage))
    np.testing.assert_array_equal(fitted_ode._predict_batch(batch, query), fitted_ode._predict_batch(tampered, query))


def test_relabelling_and_reordering_series_permutes_outputs(fitted_ode, oscillator):
    frame, _ = oscillator
    order = np.random.RandomState(0).permutation(frame["series_id"].unique())
    relabel = {old: f"s{new}" for new, old in enumerate(order)}
    shuffled = frame.assign(series_id=frame["series_id"].map(relabel)).sample(frac=1.0, random_state=0)
    original = fitted_ode.predict(frame, t=[9.0]).set_index("series_id")
    permuted = fitted_ode.predict(shuffled, t=[9.0]).set_index("series_id")
    back = permuted.rename(index={v: k for k, v in relabel.items()}).loc[original.index]
    # The batch's rows share one adaptive solve whose error norm sums over them: reordered, the sum rounds
    # differently, so a step may end a little elsewhere (the solve's rtol is 1e-3). A mismatched series is off by
    # the size of the states (about 0.1).
    np.testing.assert_allclose(back[["q", "p"]].to_numpy(), original[["q", "p"]].to_numpy(), rtol=1e-4, atol=1e-5)
