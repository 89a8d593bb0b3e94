"""ODERNN driven by known inputs: held between samples in the field, read by the GRU at each observation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

import dynlearn
from dynlearn import ODERNN
from dynlearn.datasets import make_forced_oscillator
from dynlearn.exceptions import InputError

STATES = ["q", "p"]
SMALL = dict(hidden_dim=16, max_epochs=60, task="extrapolation", batch_size=10, random_state=0, n_threads=1)
CUT = 7.5


@pytest.fixture(scope="module")
def panel():
    """Oscillators forced by piecewise-constant inputs: 40 series to fit on, 8 held out with new input signals."""
    frame = make_forced_oscillator(n_series=48, n_times=60, t_span=(0.0, 15.0), input="steps", random_state=0)
    train = frame[frame.series_id < 40].reset_index(drop=True)
    test = frame[frame.series_id >= 40].reset_index(drop=True)
    return train, test


@pytest.fixture(scope="module")
def driven(panel):
    train, _ = panel
    return ODERNN(covariates=["u"], **SMALL).fit(train)


def _split(test):
    return test[test.time <= CUT], test[test.time > CUT]


def _mse(predicted, truth):
    return float(((predicted[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2).mean())


def test_inputs_let_the_model_forecast_under_new_input_signals(panel, driven):
    train, test = panel
    history, future = _split(test)
    predicted = driven.predict(history, t=future[["series_id", "time", "u"]])
    assert list(predicted.columns) == ["series_id", "time", *STATES]  # inputs are not forecast
    blind = ODERNN(**SMALL).fit(train.drop(columns="u"))
    unaware = blind.predict(history.drop(columns="u"), t=future[["series_id", "time"]])
    # Measured: 0.011 with the inputs, 0.45 without (the states' mean square is 0.81).
    assert _mse(unaware, future) < float((future[STATES].to_numpy() ** 2).mean())
    assert _mse(predicted, future) * 10 < _mse(unaware, future)


def test_later_inputs_change_no_earlier_prediction(panel, driven):
    _, test = panel
    history, future = _split(test)
    query = future[["series_id", "time", "u"]].copy()
    tau = CUT + 3.0
    changed = query.copy()
    later = changed.time > tau
    changed.loc[later, "u"] += 5.0
    before, after = driven.predict(history, t=query), driven.predict(history, t=changed)
    early = (query.time <= tau).to_numpy()
    # Held inputs: the value at tau's first later query drives only the queries after it.
    np.testing.assert_array_equal(before[STATES].to_numpy()[early], after[STATES].to_numpy()[early])
    assert not np.allclose(before[STATES].to_numpy()[~early], after[STATES].to_numpy()[~early])


def test_one_step_ahead_reads_the_history_inputs(panel, driven):
    _, test = panel
    own = driven.predict(test)
    shifted = test.copy()
    shifted["u"] = shifted["u"] + 1.0
    assert list(own.columns) == ["series_id", "time", *STATES]
    assert not np.allclose(own[STATES].to_numpy(), driven.predict(shifted)[STATES].to_numpy())


def test_missing_inputs_are_refused_by_the_shared_data_layer(panel, driven):
    train, test = panel
    history, future = _split(test)
    gappy = train.copy()
    gappy.loc[3, "u"] = np.nan
    with pytest.raises(InputError, match="input column 'u'"):
        clone(driven).set_params(max_epochs=1).fit(gappy)
    with pytest.raises(InputError, match="'u'"):
        driven.predict(history, t=future[["series_id", "time"]])
    with pytest.raises(InputError, match="query frame"):
        driven.predict(history, t=[8.0, 9.0])


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_only_held_inputs_are_taken(panel, interpolation):
    train, _ = panel
    model = ODERNN(covariates=["u"], covariate_interpolation=interpolation, **{**SMALL, "max_epochs": 1})
    with pytest.raises(InputError, match="covariate_interpolation.*'previous'"):
        model.fit(train)


def test_save_load_keeps_the_inputs(panel, driven, tmp_path):
    _, test = panel
    history, future = _split(test)
    path = tmp_path / "odernn.dlm"
    driven.save(path)
    restored = dynlearn.load(path)
    assert restored.covariates == ["u"]
    np.testing.assert_array_equal(restored.covariate_index_, driven.covariate_index_)
    query = future[["series_id", "time", "u"]]
    np.testing.assert_array_equal(restored.predict(history, t=query)[STATES], driven.predict(history, t=query)[STATES])


@pytest.mark.parametrize("solve", [dict(method="euler", options={"step_size": 0.3}), dict(method="rk4"),
                                   dict(method="dopri5", rtol=1e-6, atol=1e-8)])
def test_encoder_holds_each_input_over_the_gap_it_starts(solve):
    torch = pytest.importorskip("torch")
    from dynlearn.nn import ODERNNEncoder

    torch.manual_seed(0)
    encoder = ODERNNEncoder(n_features=2, hidden_dim=6, ode_hidden=(8,), n_inputs=1).double()
    values, mask = torch.randn(3, 5, 2, dtype=torch.float64), torch.rand(3, 5, 2) > 0.3
    mask[:, 3] = True  # row 3's input reaches the state through its update
    times = torch.cumsum(torch.rand(3, 5, dtype=torch.float64) + 0.2, dim=1)
    lengths, u = torch.tensor([5, 4, 2]), torch.randn(3, 5, 1, dtype=torch.float64)
    states, _, before = encoder(values, mask, times, lengths, solve=solve, return_before=True, covariates=u)
    # The state before row 2 is row 1's state evolved by the gap, under row 1's input.
    evolved = encoder.evolve(states[:, 1], times[:, 2] - times[:, 1], solve=solve, covariates=u[:, 1])
    np.testing.assert_allclose(before[:2, 2].detach(), evolved[:2].detach(), rtol=1e-6, atol=1e-8)
    changed = u.clone()
    changed[:, 3] += 4.0
    states2, _, before2 = encoder(values, mask, times, lengths, solve=solve, return_before=True, covariates=changed)
    assert torch.equal(before[:, :4], before2[:, :4]) and torch.equal(states[:, :3], states2[:, :3])
    assert not torch.allclose(states[:2, 3], states2[:2, 3])
