"""NeuralSDE and the scikit-learn contract: clone, pickle, output kinds."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from dynlearn import ConvergenceWarning, InputError, NeuralSDE
from dynlearn.datasets import make_ou_process

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=2, random_state=0, device="cpu")

@pytest.fixture(scope="module")
def fitted():
    frame = make_ou_process(n_series=6, n_times=15, irregular=True, missing_fraction=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return NeuralSDE(**SMALL).fit(frame), frame


def test_clone_and_pickle_keep_predictions_and_samples(fitted):
    model, frame = fitted
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(model.predict(frame, t=[5.5]), restored.predict(frame, t=[5.5]))
    pd.testing.assert_frame_equal(
        model.sample(frame, t=[5.5, 6.0], n_samples=4, random_state=3),
        restored.sample(frame, t=[5.5, 6.0], n_samples=4, random_state=3),
    )
    assert clone(model).get_params() == model.get_params()
    assert all(t.device.type == "cpu" for t in pickle.loads(pickle.dumps(model)).module_.state_dict().values())


def test_outputs_come_back_in_the_input_kind(fitted):
    model, frame = fitted
    samples = model.sample(frame, t=[5.5, 6.0], n_samples=3, random_state=0)
    assert samples.index.names[0] == "sample" and len(samples) == 3 * 6 * 2
    assert list(samples.columns) == ["series_id", "time", "x"]
    quantiles = model.predict_quantiles(frame, t=[5.5], quantiles=(0.1, 0.9))
    assert quantiles.index.names[0] == "quantile" and sorted(set(quantiles.index.get_level_values(0))) == [0.1, 0.9]
    assert (quantiles.loc[0.1]["x"] < quantiles.loc[0.9]["x"]).all()
    mean, std = model.predict(frame, t=[5.5], return_std=True)
    assert (std["x"] > 0).all() and list(mean.columns) == ["series_id", "time", "x"]
    one = frame[frame["series_id"] == 0].set_index("time")[["x"]]
    single = model.sample(one, t=[5.5, 6.0], n_samples=2, random_state=0)
    assert single.index.names == ["sample", "time"]


def test_score_is_one_step_ahead_r2(fitted):
    model, frame = fitted
    assert np.isfinite(model.score(frame)) and model.score(frame) <= 1.0


def test_same_seed_same_weights(fitted):
    model, frame = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = NeuralSDE(**SMALL).fit(frame)
    for a, b in zip(model.module_.state_dict().values(), again.module_.state_dict().values()):
        assert torch.equal(a, b)


def test_invalid_hyperparameters_name_themselves(fitted):
    _, frame = fitted
    with pytest.raises(ValueError, match="noise_type"):
        NeuralSDE(noise_type="general", **SMALL).fit(frame)
    with pytest.raises(ValueError, match="step_size"):
        NeuralSDE(step_size=0.0, **SMALL).fit(frame)
    with pytest.raises(InputError, match="solver"):
        NeuralSDE(solver="midpoint", **SMALL).fit(frame)
