"""partial_fit's optimiser state: saved with the model, and dropped by a fit that trains an optimiser of its own."""

from __future__ import annotations

import numpy as np
import pytest

from dynlearn import ODERNN, NeuralODE, NeuralSDE, load
from dynlearn.datasets import make_damped_oscillator, make_lorenz
from dynlearn.exceptions import InputError

TINY = {"max_epochs": 2, "batch_size": 16, "random_state": 0, "n_threads": 1}


@pytest.fixture(scope="module")
def frames():
    return (make_damped_oscillator(n_series=8, n_times=20, random_state=0),
            make_damped_oscillator(n_series=8, n_times=20, random_state=1))


def _forecast(model, frame):
    return model.predict(frame[frame.time <= 5], t=[6.0, 7.0])[["q", "p"]].to_numpy()


@pytest.mark.parametrize("estimator", [NeuralODE, ODERNN, NeuralSDE])
def test_a_saved_partial_fit_goes_on_as_if_never_saved(tmp_path, frames, estimator):
    first, second = frames
    kept = estimator(**TINY).partial_fit(first).partial_fit(second)
    path = kept.save(tmp_path / "model.dlm")
    loaded = load(path)
    np.testing.assert_array_equal(_forecast(loaded, first), _forecast(kept, first))
    kept.partial_fit(first)
    loaded.partial_fit(first)  # the moments and step counts came back with the file
    np.testing.assert_allclose(_forecast(loaded, first), _forecast(kept, first), rtol=0, atol=1e-12)


def test_a_fit_after_partial_fit_forgets_the_optimiser_it_replaced(frames):
    first, second = frames
    fresh = NeuralODE(**TINY).fit(second).partial_fit(second)
    reused = NeuralODE(**TINY).partial_fit(first).partial_fit(first)
    reused.fit(second).partial_fit(second)
    np.testing.assert_array_equal(_forecast(reused, second), _forecast(fresh, second))
    # With other columns the old state does not even match the new weights' shapes.
    lorenz = make_lorenz(n_series=6, n_times=20, random_state=0)
    reused.fit(lorenz).partial_fit(lorenz)
    assert np.isfinite(reused.predict(lorenz, t=[lorenz.time.max() + 0.1])[["x", "y", "z"]].to_numpy()).all()


def test_a_warm_start_refit_checks_the_columns_against_the_first_fit(frames):
    first, _ = frames
    model = NeuralODE(**TINY, warm_start=True).fit(first)
    before = _forecast(model, first)
    with pytest.raises(InputError, match=r"feature columns \['q', 'p'\] in the order seen at fit"):
        model.fit(first[["series_id", "time", "p", "q"]])
    np.testing.assert_array_equal(_forecast(model, first), before)  # the refused refit changed nothing
