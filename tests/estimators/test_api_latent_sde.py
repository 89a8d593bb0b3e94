"""LatentSDE and the scikit-learn contract: clone, pickle, seeds, kinds in and out."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from dynlearn import ConvergenceWarning, InputError, IntegrationError, LatentSDE
from dynlearn.datasets import make_ou_process

SMALL = dict(
    latent_dim=2,
    context_dim=4,
    hidden_layer_sizes=(8,),
    encoder_hidden_size=8,
    diffusion_hidden_size=4,
    dt=1.0,
    n_samples_predict=4,
    max_epochs=2,
    random_state=0,
    device="cpu",
)

@pytest.fixture(scope="module")
def ou():
    return make_ou_process(n_series=6, n_times=12, irregular=True, missing_fraction=0.1, random_state=0)


@pytest.fixture(scope="module")
def fitted(ou):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LatentSDE(**SMALL).fit(ou)


def test_clone_and_pickle_give_identical_samples(ou, fitted):
    expected = fitted.sample(ou, t=[5.5, 6.0], n_samples=5, random_state=3)
    restored = pickle.loads(pickle.dumps(fitted))
    pd.testing.assert_frame_equal(restored.sample(ou, t=[5.5, 6.0], n_samples=5, random_state=3), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        refit = clone(fitted).fit(ou)
    pd.testing.assert_frame_equal(refit.sample(ou, t=[5.5, 6.0], n_samples=5, random_state=3), expected)


def test_same_seed_same_fit_without_touching_global_seed(ou, fitted):
    before = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = LatentSDE(**SMALL).fit(ou)
        other = LatentSDE(**{**SMALL, "random_state": 1}).fit(ou)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(fitted.module_.parameters(), again.module_.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(fitted.module_.parameters()), next(other.module_.parameters()))


def test_sample_shapes_for_every_kind(ou, fitted):
    frame = fitted.sample(ou, t=[5.5, 6.0, 7.0], n_samples=4, random_state=0)
    assert frame.index.names[0] == "sample" and list(frame.columns) == ["series_id", "time", "x"]
    assert len(frame) == 4 * 6 * 3
    indexed = fitted.sample(ou.set_index(["series_id", "time"]), t=[6.0], n_samples=3, random_state=0)
    assert list(indexed.index.names) == ["sample", "series_id", "time"] and len(indexed) == 3 * 6
    # Fitted on a frame: arrays and lists say at which times their rows were observed.
    panel = np.random.RandomState(0).normal(size=(3, 8, 1))
    seen = np.arange(8.0)
    assert fitted.sample(panel, t=[8.0, 9.0], n_samples=5, random_state=0, X_t=seen).shape == (5, 3, 2, 1)
    assert fitted.sample(panel, n_samples=2, random_state=0, X_t=seen).shape == (2, 3, 8, 1)
    assert fitted.sample(panel[0], t=[8.0, 9.0], n_samples=5, random_state=0, X_t=seen).shape == (5, 2, 1)
    ragged = fitted.sample(
        [panel[0], panel[1, :5]], t=[np.arange(8.0), np.arange(3.0)], n_samples=2, random_state=0, X_t=[seen, seen[:5]]
    )
    assert len(ragged) == 2 and [a.shape for a in ragged[0]] == [(8, 1), (3, 1)]
    assert fitted.predict(panel, t=[8.0, 9.0], X_t=seen).shape == (3, 2, 1)
    assert fitted.predict(panel[0], X_t=seen).shape == (8, 1)


def test_predict_is_the_mean_of_noise_free_paths_and_repeatable(ou, fitted):
    first = fitted.predict(ou, t=[5.5, 6.0])
    pd.testing.assert_frame_equal(fitted.predict(ou, t=[5.5, 6.0]), first)
    batch = fitted._check_input(ou)
    from dynlearn.data import check_query_times
    from dynlearn._random import stream_seed

    query = check_query_times(np.array([5.5, 6.0]), batch)
    seed = stream_seed(fitted._seed, "prediction")
    paths = fitted._sample_batch(batch, query, fitted.n_samples_predict, seed, observation_noise=False)
    np.testing.assert_allclose(first["x"].to_numpy(), paths.mean(axis=0).reshape(-1), rtol=1e-12)


def test_unknown_solver_lists_sde_methods(ou):
    with pytest.raises(InputError, match="reversible_heun"):
        LatentSDE(**{**SMALL, "solver": "dopri5"}).fit(ou)


def test_bad_n_samples_names_the_argument(ou, fitted):
    with pytest.raises(InputError, match="n_samples"):
        fitted.sample(ou, n_samples=0)


def test_step_limit_raises_integration_error_with_advice(ou):
    with pytest.raises(IntegrationError, match="max_num_steps"):
        LatentSDE(**{**SMALL, "dt": 1e-3, "max_num_steps": 50}).fit(ou)


def test_invalid_hyperparameter_names_the_parameter(ou):
    with pytest.raises(ValueError, match="obs_std"):
        LatentSDE(**{**SMALL, "obs_std": "fixed"}).fit(ou)
