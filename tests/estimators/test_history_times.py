"""An array or list history is read at its own observation times, as the same history given as a frame."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from dynlearn import HamiltonianNN, InputError, NeuralODE, NeuralSDE, ODERNN
from dynlearn.exceptions import ConvergenceWarning

TIMES = np.array([0.0, 0.3, 0.5, 1.2, 1.4, 2.0, 2.9, 3.1])  # irregular: reading them as 0, 1, 2, ... changes forecasts
QUERY = np.array([3.5, 4.0])
ESTIMATORS = {
    "NeuralODE": lambda: NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, window_size=4, random_state=0, device="cpu"),
    "ODERNN": lambda: ODERNN(hidden_dim=4, ode_hidden_layer_sizes=(8,), max_epochs=2, batch_size=8, random_state=0,
                             device="cpu"),
}
SDE = dict(hidden_layer_sizes=(8,), max_epochs=2, random_state=0, device="cpu")


def panel() -> np.ndarray:
    rng = np.random.RandomState(0)
    rates = rng.uniform(0.5, 1.5, size=(4, 1, 1))
    return np.concatenate([np.cos(rates * TIMES[None, :, None]), np.sin(rates * TIMES[None, :, None])], axis=2)


def as_frame(X: np.ndarray) -> pd.DataFrame:
    n_series, n_times, _ = X.shape
    return pd.DataFrame(
        {
            "series_id": np.repeat(np.arange(n_series), n_times),
            "time": np.tile(TIMES, n_series),
            "x0": X[..., 0].ravel(),
            "x1": X[..., 1].ravel(),
        }
    )


def fitted(name: str, X, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ESTIMATORS[name]().fit(X, **fit_params)


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def on_times(request):
    return request.param, fitted(request.param, panel(), t=TIMES)


def test_array_forecast_with_its_times_equals_the_frame_forecast(on_times):
    _, model = on_times
    X = panel()
    from_array = model.predict(X, t=QUERY, X_t=TIMES)
    from_frame = model.predict(as_frame(X), t=QUERY)
    np.testing.assert_allclose(from_array.reshape(-1, 2), from_frame[["x0", "x1"]].to_numpy(), rtol=1e-6, atol=1e-9)
    # The row numbers are not the times: read that way, the same history forecasts something else.
    on_row_numbers = model.predict(X, t=QUERY, X_t=np.arange(len(TIMES)))
    assert not np.allclose(on_row_numbers, from_array)


def test_ragged_list_takes_its_times_too(on_times):
    _, model = on_times
    X = panel()
    ragged = [X[0], X[1, :5]]
    out = model.predict(ragged, t=QUERY, X_t=[TIMES, TIMES[:5]])
    expected = model.predict(X[:1], t=QUERY, X_t=TIMES)[0]
    # Adaptive steps are chosen for the whole batch, so a batch of one differs within the solver's tolerance.
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="X_t"):
        model.predict(ragged, t=QUERY)


def test_array_without_its_times_is_refused(on_times):
    _, model = on_times
    with pytest.raises(InputError, match=r"^X_t: .*observation times"):
        model.predict(panel(), t=QUERY)
    with pytest.raises(InputError, match=r"^t: "):
        model.score(panel())
    assert np.isfinite(model.score(panel(), t=TIMES))


def test_frame_history_refuses_separate_times(on_times):
    _, model = on_times
    with pytest.raises(InputError, match=r"^X_t: expected None"):
        model.predict(as_frame(panel()), t=QUERY, X_t=TIMES)


def test_model_fitted_on_a_frame_needs_the_times_of_an_array():
    model = fitted("NeuralODE", as_frame(panel()))
    with pytest.raises(InputError, match="DataFrame"):
        model.predict(panel(), t=QUERY)
    expected = model.predict(as_frame(panel()), t=QUERY)
    out = model.predict(panel(), t=QUERY, X_t=TIMES)
    np.testing.assert_allclose(out.reshape(-1, 2), expected[["x0", "x1"]].to_numpy(), rtol=1e-6, atol=1e-9)


def test_model_fitted_on_row_numbers_still_reads_arrays_as_before():
    X = panel()
    model = fitted("NeuralODE", X)
    np.testing.assert_array_equal(model.predict(X, t=QUERY), model.predict(X, t=QUERY, X_t=np.arange(len(TIMES))))
    assert np.isfinite(model.score(X))


def test_model_pickled_before_times_were_recorded_keeps_the_old_reading(on_times):
    _, model = on_times
    state = pickle.loads(pickle.dumps(model))
    # A spec pickled before default_times existed has no such entry; the class default (unknown) applies.
    del state.input_spec_.__dict__["default_times"]
    restored = pickle.loads(pickle.dumps(state))
    assert restored.input_spec_.default_times is None
    np.testing.assert_array_equal(
        restored.predict(panel(), t=QUERY), model.predict(panel(), t=QUERY, X_t=np.arange(len(TIMES)))
    )


def test_sample_and_quantiles_take_the_history_times():
    X = panel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NeuralSDE(**SDE).fit(X, t=TIMES)
    expected = model.sample(as_frame(X), t=QUERY, n_samples=3, random_state=0)
    drawn = model.sample(X, t=QUERY, n_samples=3, random_state=0, X_t=TIMES)
    np.testing.assert_allclose(drawn.reshape(-1, 2), expected[["x0", "x1"]].to_numpy(), rtol=1e-6, atol=1e-9)
    with pytest.raises(InputError, match="X_t"):
        model.sample(X, t=QUERY, n_samples=3)
    with pytest.raises(InputError, match="X_t"):
        model.predict_quantiles(X, t=QUERY)
    assert model.predict_quantiles(X, t=QUERY, X_t=TIMES).shape == (2, 4, 2, 2)


# ------------------------------------------------------------- query order
def test_forecast_rows_come_back_in_the_query_frame_order_with_its_index():
    model = fitted("NeuralODE", as_frame(panel()))
    rows = pd.DataFrame({"series_id": [2, 0, 2, 1], "time": [4.0, 3.5, 3.5, 4.0]}, index=["d", "a", "c", "b"])
    out = model.predict(as_frame(panel()), t=rows)
    assert out.index.tolist() == ["d", "a", "c", "b"]
    assert out["series_id"].tolist() == [2, 0, 2, 1] and out["time"].tolist() == [4.0, 3.5, 3.5, 4.0]
    by_series = model.predict(as_frame(panel()), t=rows.sort_values(["series_id", "time"]))
    np.testing.assert_array_equal(out.loc[by_series.index, ["x0", "x1"]].to_numpy(), by_series[["x0", "x1"]].to_numpy())


# ------------------------------------------------------------------ energy
def test_energy_of_states_needs_no_times_but_a_forecast_does():
    X = panel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HamiltonianNN(hidden_layer_sizes=(8,), max_epochs=2, window_size=4, random_state=0, device="cpu")
        model.fit(X, t=TIMES)
    states = X[0]
    np.testing.assert_array_equal(model.energy(states), model.energy(states, X_t=TIMES))
    with pytest.raises(InputError, match="X_t"):
        model.energy(X, t=QUERY)
    expected = model.energy(as_frame(X), t=QUERY)["energy"].to_numpy()
    np.testing.assert_allclose(model.energy(X, t=QUERY, X_t=TIMES).ravel(), expected, rtol=1e-6, atol=1e-9)
    gappy = states.copy()
    gappy[3, 0] = np.nan  # filling a gap reads the times
    with pytest.raises(InputError, match="X_t"):
        model.energy(gappy)
