"""LatentODE and the scikit-learn contract: pipelines, clone, pickle, seeds, kinds."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from dynlearn import ConvergenceWarning, InputError, LatentODE
from dynlearn.datasets import make_periodic

SMALL = dict(
    latent_dim=2,
    encoder_dim=4,
    encoder_layer_sizes=(4,),
    ode_layer_sizes=(4,),
    n_samples_train=2,
    solver="rk4",
    max_epochs=2,
    # The default refinement path, with a few steps: at the default 100 every prediction of these checks
    # is an optimisation and the file takes ten times as long (110 s of one thread against 11).
    refine_steps=3,
    random_state=0,
    device="cpu",
)

@pytest.fixture(scope="module")
def periodic():
    return make_periodic(n_series=12, n_times=15, irregular=True, missing_fraction=0.1, random_state=0)


@pytest.fixture(scope="module")
def fitted(periodic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LatentODE(**SMALL).fit(periodic)


# ------------------------------------------------------- clone, pickle, seed
def test_pickle_round_trip_keeps_outputs(fitted, periodic):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(periodic), fitted.transform(periodic))
    pd.testing.assert_frame_equal(restored.predict(periodic, t=[5.5]), fitted.predict(periodic, t=[5.5]))
    pd.testing.assert_frame_equal(
        restored.sample(periodic, t=[5.5], n_samples=3, random_state=1),
        fitted.sample(periodic, t=[5.5], n_samples=3, random_state=1),
    )
    assert all(p.device.type == "cpu" for p in fitted.__getstate__()["module_"].parameters())


def test_same_seed_same_fit_and_samples_without_touching_global_seed(fitted, periodic):
    before = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = clone(fitted).fit(periodic)
        other = LatentODE(**{**SMALL, "random_state": 1}).fit(periodic)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(fitted.module_.parameters(), again.module_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(again.history_.to_frame()["train_loss"], fitted.history_.to_frame()["train_loss"])
    assert not np.allclose(other.transform(periodic), fitted.transform(periodic))
    first = fitted.sample(periodic, t=[5.5], n_samples=4, random_state=3)
    pd.testing.assert_frame_equal(fitted.sample(periodic, t=[5.5], n_samples=4, random_state=3), first)
    assert not np.allclose(fitted.sample(periodic, t=[5.5], n_samples=4, random_state=4)["y"], first["y"])


def test_fit_transform_is_fit_then_transform(fitted, periodic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        features = clone(fitted).fit_transform(periodic)
    np.testing.assert_array_equal(features, fitted.transform(periodic))
    assert features.shape == (periodic["series_id"].nunique(), 2) and features.dtype == np.float64


def test_warm_start_continues_training(periodic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LatentODE(**{**SMALL, "warm_start": True, "patience": None}).fit(periodic)
        model.fit(periodic)
    assert model.n_epochs_ == 4 and len(model.history_) == 4


# -------------------------------------------------------- kinds in, kinds out
def test_returns_the_kind_it_was_given(fitted, periodic):
    n_series = periodic["series_id"].nunique()
    indexed = periodic.set_index(["series_id", "time"])
    out = fitted.predict(indexed, t=[5.5, 6.0])
    assert isinstance(out.index, pd.MultiIndex) and list(out.index.names) == ["series_id", "time"]
    assert list(out.columns) == ["y"] and len(out) == 2 * n_series
    reconstruction = fitted.predict(periodic)
    assert list(reconstruction.columns) == ["series_id", "time", "y"] and len(reconstruction) == len(periodic)
    assert fitted.transform(indexed).shape == (n_series, 2)
    panel = np.random.RandomState(0).normal(size=(3, 6, 1))
    t = np.linspace(0, 5, 6)
    # Fitted on a frame: arrays and lists say at which times their rows were observed.
    assert fitted.predict(panel, t=[6.0, 7.0], X_t=t).shape == (3, 2, 1)
    assert fitted.predict(panel[0], t=[6.0, 7.0], X_t=t).shape == (2, 1)
    assert fitted.transform(panel, t=t).shape == (3, 2)
    ragged = fitted.predict([panel[0], panel[1, :4]], t=[np.arange(6.0), np.arange(4.0)], X_t=[t, t[:4]])
    assert [a.shape for a in ragged] == [(6, 1), (4, 1)]


def test_sample_shapes(fitted, periodic):
    n_series = periodic["series_id"].nunique()
    panel = np.random.RandomState(0).normal(size=(3, 6, 1))
    t = np.linspace(0, 5, 6)
    assert fitted.sample(panel, t=[6.0, 7.0], n_samples=5, random_state=0, X_t=t).shape == (5, 3, 2, 1)
    assert fitted.sample(panel[0], t=[6.0, 7.0], n_samples=5, random_state=0, X_t=t).shape == (5, 2, 1)
    ragged = fitted.sample([panel[0], panel[1, :4]], n_samples=2, random_state=0, X_t=[t, t[:4]])
    assert len(ragged) == 2 and [a.shape for a in ragged[0]] == [(6, 1), (4, 1)]
    frame = fitted.sample(periodic, t=[5.5, 6.0], n_samples=4, random_state=0)
    assert frame.index.names[0] == "sample" and len(frame) == 4 * 2 * n_series
    assert list(frame.columns) == ["series_id", "time", "y"]
    indexed = fitted.sample(periodic.set_index(["series_id", "time"]), n_samples=3, random_state=0)
    assert list(indexed.index.names) == ["sample", "series_id", "time"] and len(indexed) == 3 * len(periodic)
    prior = fitted.sample(None, t=np.linspace(0, 5, 7), n_samples=6, random_state=0, prior=True)
    assert prior.shape == (6, 7, 1) and np.isfinite(prior).all()
    conditioned_on_times = fitted.sample(periodic, t=[5.5], n_samples=2, random_state=0, prior=True)
    assert len(conditioned_on_times) == 2 * n_series


# -------------------------------------------------------------- bad input
def test_bad_sample_arguments(fitted, periodic):
    with pytest.raises(InputError, match="prior=True"):
        fitted.sample(None, t=[1.0, 2.0])
    with pytest.raises(InputError, match="n_samples"):
        fitted.sample(periodic, n_samples=0)
    with pytest.raises(InputError, match="1-D"):
        fitted.sample(None, t=[[1.0, 2.0]], prior=True)


def test_invalid_settings_name_the_parameter(periodic):
    with pytest.raises(ValueError, match="task"):
        LatentODE(**{**SMALL, "task": "forecast"}).fit(periodic)
    with pytest.raises(ValueError, match="obs_std"):
        LatentODE(**{**SMALL, "obs_std": 0.0}).fit(periodic)
    with pytest.raises(InputError, match="ode_layer_sizes"):
        LatentODE(**{**SMALL, "ode_layer_sizes": (4, 0)}).fit(periodic)
    with pytest.raises(InputError, match="encoder_solver"):
        LatentODE(**{**SMALL, "encoder_solver": "nonsense"}).fit(periodic)


def test_feature_count_must_match_fit(fitted, periodic):
    with pytest.raises(InputError, match="1 feature"):
        fitted.transform(periodic.assign(z=1.0))


def test_single_observation_cannot_be_fitted():
    with pytest.raises(InputError, match="two or more observation times"):
        LatentODE(**SMALL).fit(np.ones((3, 1, 2)))
