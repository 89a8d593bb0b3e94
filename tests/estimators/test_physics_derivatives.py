"""Measured time derivatives as training targets for HamiltonianNN and LagrangianNN."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from dynlearn import HamiltonianNN, InputError, LagrangianNN, SeriesScaler
from dynlearn.datasets import make_mass_spring, make_pendulum

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=2, random_state=0, device="cpu")
TRAINED = dict(hidden_layer_sizes=(32, 32), max_epochs=100, patience=None, validation_fraction=0.0, random_state=0, device="cpu")


def _derivative_frame(frame, truth, columns):
    rates = frame.copy()
    rates[columns] = truth.derivatives.reshape(-1, len(columns))
    return rates


@pytest.fixture(scope="module")
def noisy_spring():
    """The HNN paper's task 1: noisy states, derivatives of the clean states as targets."""
    train, truth = make_mass_spring(n_series=25, n_times=30, t_span=(0.0, 3.0), noise=0.1, return_truth=True, random_state=0)
    _, test = make_mass_spring(n_series=25, n_times=30, t_span=(0.0, 3.0), return_truth=True, random_state=1)
    return train, _derivative_frame(train, truth, ["q", "p"]), test


def test_measured_derivatives_beat_finite_differences_of_noisy_states(noisy_spring):
    train, rates, test = noisy_spring
    states, target = test.states.reshape(-1, 2), test.derivatives.reshape(-1, 2)
    measured = HamiltonianNN(fit_on="derivatives", **TRAINED).fit(train, derivatives=rates)
    differenced = HamiltonianNN(fit_on="derivatives", **TRAINED).fit(train)
    errors = [np.mean((model.vector_field(states) - target) ** 2) for model in (measured, differenced)]
    # Differences of states with noise 0.1 taken 0.1 apart carry noise of about
    # 0.7 in every target; measured targets leave only the noisy inputs.
    assert errors[0] * 2 < errors[1], errors
    assert errors[0] < 1e-3, errors


def test_auto_trains_on_measured_derivatives_alone(noisy_spring):
    train, rates, _ = noisy_spring
    model = HamiltonianNN(**SMALL).fit(train, derivatives=rates)
    assert model.fit_on_ == ("derivatives",)
    assert model.history_.to_frame()["fit_on"].tolist() == ["derivatives"] * 2


def test_unknown_derivatives_and_missing_states_are_left_out(noisy_spring):
    train, rates, _ = noisy_spring
    model = HamiltonianNN(**SMALL)
    batch = model._setup_fit(train, None)
    model._set_coordinates()
    full = model._measured_rates(batch, rates, None)
    gappy_rates = rates.copy()
    gappy_rates.loc[:9, "p"] = np.nan  # ten unknown derivatives of p
    gappy_train = train.copy()
    gappy_train.loc[20:24, "q"] = np.nan  # five rows whose state is not fully known
    batch = model._setup_fit(gappy_train, None)
    examples = model._measured_rates(batch, gappy_rates, None)
    assert full["mask"].sum() == 2 * len(train)
    assert examples["mask"].sum() == 2 * len(train) - 10 - 2 * 5
    assert np.isfinite(examples["rates"]).all() and np.isfinite(examples["x"]).all()


def test_derivatives_route_through_a_pipeline(noisy_spring):
    train, rates, _ = noisy_spring
    pipe = Pipeline([("scale", SeriesScaler()), ("model", HamiltonianNN(**SMALL))])
    # The scaler changes X's units, so the derivatives given to the model must be in the same units.
    pipe.fit(train, model__derivatives=rates)
    assert pipe["model"].fit_on_ == ("derivatives",)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.iloc[:-1], "same series, times and columns"),
        (lambda r: r.assign(time=r["time"] + 0.5), "same series, times and columns"),
        (lambda r: r.rename(columns={"p": "momentum"}), "derivatives"),
        (lambda r: r.assign(q=np.nan, p=np.nan), "at least one observed value"),
    ],
)
def test_derivatives_must_match_the_rows_of_X(noisy_spring, change, message):
    train, rates, _ = noisy_spring
    with pytest.raises(InputError, match=message):
        HamiltonianNN(**SMALL).fit(train, derivatives=change(rates))


def test_trajectory_matching_refuses_derivatives(noisy_spring):
    train, rates, _ = noisy_spring
    with pytest.raises(InputError, match="fit_on='trajectories'"):
        HamiltonianNN(**{**SMALL, "fit_on": "trajectories"}).fit(train, derivatives=rates)


def test_lagrangian_uses_measured_accelerations():
    frame, truth = make_pendulum(n_series=12, n_times=30, t_span=(0.0, 3.0), return_truth=True, random_state=0)
    columns = [c for c in frame.columns if c not in ("series_id", "time")]
    rates = _derivative_frame(frame, truth, columns)
    model = LagrangianNN(**{**TRAINED, "max_epochs": 60}).fit(frame, derivatives=rates)
    states, target = truth.states.reshape(-1, 2), truth.derivatives.reshape(-1, 2)
    predicted = model.vector_field(states)
    np.testing.assert_allclose(predicted[:, 0], states[:, 1])  # dq/dt is the velocity, by construction
    accel_error = np.mean((predicted[:, 1] - target[:, 1]) ** 2) / np.var(target[:, 1])
    assert accel_error < 0.05, accel_error
    # Columns of dX/dt under the positions are not used: garbage there changes nothing.
    rates[columns[0]] = 1e3
    again = LagrangianNN(**{**TRAINED, "max_epochs": 60}).fit(frame, derivatives=rates)
    np.testing.assert_allclose(again.vector_field(states), predicted)
