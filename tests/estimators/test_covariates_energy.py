"""Systems with inputs: HamiltonianNN and LagrangianNN driven by known generalised forces u(t)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import dynlearn
from dynlearn import HamiltonianNN, LagrangianNN
from dynlearn.datasets import make_forced_oscillator
from dynlearn.exceptions import InputError
from dynlearn.metrics import r2_score

STATES = ["q", "p"]
SMALL = dict(hidden_layer_sizes=(32, 32), max_epochs=100, random_state=0, n_threads=1)
CUT = 7.5
# With unit mass p = dq/dt, so the same columns are (q, p) for the Hamiltonian model and (q, q̇) for the Lagrangian.
ESTIMATORS = {"hamiltonian": HamiltonianNN, "lagrangian": LagrangianNN}


@pytest.fixture(scope="module")
def panel():
    """Undamped forced oscillators (exactly a forced Hamiltonian system): 16 series to fit, 8 held out."""
    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), damping=0.0, random_state=0)
    train = frame[frame.series_id < 16].reset_index(drop=True)
    test = frame[frame.series_id >= 16].reset_index(drop=True)
    return train, test


@pytest.fixture(scope="module")
def fitted(panel):
    train, _ = panel
    return {
        name: Est(covariates=["u"], covariate_interpolation="linear", **SMALL).fit(train)
        for name, Est in ESTIMATORS.items()
    }


def _split(test):
    return test[test.time <= CUT], test[test.time > CUT]


def _mse(predicted, truth):
    return float(((predicted[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2).mean())


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_inputs_let_the_model_forecast_under_new_input_signals(panel, fitted, name):
    train, test = panel
    history, future = _split(test)
    predicted = fitted[name].predict(history, t=future[["series_id", "time", "u"]])
    assert list(predicted.columns) == ["series_id", "time", *STATES]  # inputs are not forecast
    blind = ESTIMATORS[name](**SMALL).fit(train.drop(columns="u"))
    unaware = blind.predict(history.drop(columns="u"), t=future[["series_id", "time"]])
    truth = future[["series_id", "time", *STATES]]
    assert _mse(unaware, truth) < 2 * float((truth[STATES].to_numpy() ** 2).mean())  # a real, if blind, forecast
    assert r2_score(truth, predicted) > 0.9
    assert _mse(predicted, truth) * 3 < _mse(unaware, truth)


def _on_grid(series, n=301):
    """A fine time grid over one series and its input read linearly between samples (as the model reads it)."""
    times = np.linspace(series.time.iloc[0], series.time.iloc[-1], n)
    return times, np.interp(times, series.time, series.u)[:, None]


def _frame(times, states, u):
    return pd.DataFrame({"series_id": 0, "time": times, "q": states[:, 0], "p": states[:, 1], "u": u[:, 0]})


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_without_inputs_the_learned_energy_is_conserved_and_the_input_power_is_its_rate(panel, fitted, name):
    model = clone(fitted[name]).set_params(rtol=1e-7, atol=1e-9)  # tight solves: conservation is the flow's
    model.__dict__.update({k: v for k, v in fitted[name].__dict__.items() if k.endswith("_")})
    _, test = panel
    series = test[test.series_id == 16]
    times, u = _on_grid(series)
    start = series[STATES].to_numpy()[0]
    free = model.simulate(start, times, covariates=np.zeros_like(u))
    driven = model.simulate(start, times, covariates=u)
    free_energy = model.energy(_frame(times, free, np.zeros_like(u)))["energy"].to_numpy()
    frame = _frame(times, driven, u)
    energy = model.energy(frame)["energy"].to_numpy()
    assert np.ptp(energy) > 0.1 * np.abs(energy).max()  # the forces do work on the driven motion...
    assert np.ptp(free_energy) < 1e-4 * np.ptp(energy)  # ...and without them the learned energy is kept
    power = model.input_power(frame)["input_power"].to_numpy()
    work = np.concatenate([[0.0], np.cumsum(np.diff(times) * (power[1:] + power[:-1]) / 2)])
    np.testing.assert_allclose(energy - energy[0], work, atol=0.02 * np.ptp(energy))
    zero_power = model.input_power(_frame(times, free, np.zeros_like(u)))["input_power"].to_numpy()
    np.testing.assert_array_equal(zero_power, 0.0)


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_later_inputs_change_no_earlier_prediction(panel, fitted, name, interpolation):
    _, test = panel
    model = fitted[name]
    model.set_params(covariate_interpolation=interpolation)  # read at solve time: the same weights, another reading
    try:
        history, future = _split(test)
        query = future[["series_id", "time", "u"]].copy()
        tau = CUT + 3.0
        changed = query.copy()
        later = changed.time > tau
        changed.loc[later, "u"] += 5.0
        before, after = model.predict(history, t=query), model.predict(history, t=changed)
    finally:
        model.set_params(covariate_interpolation="linear")
    early = (query.time <= tau).to_numpy()
    np.testing.assert_array_equal(before[STATES].to_numpy()[early], after[STATES].to_numpy()[early])
    assert not np.allclose(before[STATES].to_numpy()[~early], after[STATES].to_numpy()[~early])


def test_missing_inputs_and_array_query_times_are_refused(panel, fitted):
    _, test = panel
    model = fitted["hamiltonian"]
    history, future = _split(test)
    holed = history.copy()
    holed.loc[holed.index[3], "u"] = np.nan
    with pytest.raises(InputError, match=r"'u'.*\(16, 0\.7627"):
        model.predict(holed, t=future[["series_id", "time", "u"]])
    with pytest.raises(InputError, match=r"'u'.*\(16, 0\.7627"):
        LagrangianNN(covariates=["u"], max_epochs=1).fit(holed)
    with pytest.raises(InputError, match=r"input column\(s\) \['u'\].*no column 'u'"):
        model.predict(history, t=future[["series_id", "time"]])
    with pytest.raises(InputError, match="query frame"):
        model.predict(history, t=[8.0, 9.0])
    with pytest.raises(InputError, match="query frame"):
        fitted["lagrangian"].energy(history, t=[8.0, 9.0])


def test_simulate_and_vector_field_take_the_input_signal(panel, fitted):
    _, test = panel
    series = test[test.series_id == 16]
    times, start = series.time.to_numpy(), series[STATES].to_numpy()[0]
    model = fitted["hamiltonian"]
    simulated = model.simulate(start, times, covariates=series[["u"]].to_numpy())
    assert simulated.shape == (len(times), 2)
    assert r2_score(series[STATES].to_numpy(), simulated) > 0.8
    with pytest.raises(InputError, match="covariates"):
        model.simulate(start, times)
    # The learned force is the true one, u on dp/dt: the field's response to a unit input.
    x = series[STATES].to_numpy()[:10]
    push = model.vector_field(x, covariates=np.ones((10, 1))) - model.vector_field(x, covariates=np.zeros((10, 1)))
    np.testing.assert_allclose(push, np.tile([0.0, 1.0], (10, 1)), atol=0.15)
    blind = HamiltonianNN(hidden_layer_sizes=(4,), max_epochs=1, random_state=0).fit(series.drop(columns="u"))
    with pytest.raises(InputError, match="covariates"):
        blind.simulate(start, times, covariates=series[["u"]].to_numpy())
    with pytest.raises(InputError, match="covariates"):
        blind.input_power(series.drop(columns="u"))


def test_symplectic_solvers_take_the_forces(panel):
    train, test = panel
    history, future = _split(test)
    query = future[["series_id", "time", "u"]]
    for solver, separable in (("leapfrog", True), ("yoshida4", True), ("implicit_midpoint", False)):
        model = HamiltonianNN(covariates="u", solver=solver, separable=separable, hidden_layer_sizes=(16,),
                              max_epochs=3, random_state=0, n_threads=1).fit(train[train.series_id < 4])
        predicted = model.predict(history, t=query)
        pushed = model.predict(history, t=query.assign(u=query.u + 1.0))
        assert np.isfinite(predicted[STATES].to_numpy()).all()
        assert not np.allclose(predicted[STATES].to_numpy(), pushed[STATES].to_numpy())


def test_coordinates_name_the_state_columns_around_the_inputs(panel):
    train, _ = panel
    small = train[train.series_id < 3][["series_id", "time", "u", "p", "q"]]
    model = HamiltonianNN(covariates=["u"], positions=["q"], hidden_layer_sizes=(8,), max_epochs=1, random_state=0)
    model.fit(small)
    assert model._n_inputs == 1 and model.n_coordinates_ == 1
    np.testing.assert_array_equal(model.position_columns_, [1])  # among the states (p, q)
    np.testing.assert_array_equal(model.momentum_columns_, [0])
    with pytest.raises(InputError, match="covariate"):
        HamiltonianNN(covariates=["u"], positions=["u"], max_epochs=1).fit(small)


def test_input_matrix_of_the_positions_fits_and_predicts(panel):
    train, test = panel
    history, future = _split(test)
    model = HamiltonianNN(covariates=["u"], input_matrix="positions", hidden_layer_sizes=(16,), max_epochs=3,
                          random_state=0, n_threads=1).fit(train[train.series_id < 4])
    assert np.isfinite(model.predict(history, t=future[["series_id", "time", "u"]])[STATES].to_numpy()).all()
    with pytest.raises(ValueError, match="input_matrix"):
        LagrangianNN(covariates=["u"], input_matrix="full", max_epochs=1).fit(train)


def test_clone_save_load_score_and_intervals_keep_the_inputs(panel, fitted, tmp_path):
    _, test = panel
    model = fitted["lagrangian"]
    params = clone(model).get_params()
    assert params["covariates"] == ["u"] and params["input_matrix"] == "constant"
    history, future = _split(test)
    query = future[["series_id", "time", "u"]]
    loaded = dynlearn.load(model.save(tmp_path / "driven.dlm"))
    np.testing.assert_allclose(loaded.predict(history, t=query)[STATES], model.predict(history, t=query)[STATES])
    low, high = model.predict_interval(history, t=query, coverage=0.9)
    assert (high[STATES].to_numpy() >= low[STATES].to_numpy()).all()
    assert model.score(test) > 0.9
