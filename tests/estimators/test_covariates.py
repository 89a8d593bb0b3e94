"""Systems with inputs: NeuralODE driven by known covariates u(t)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import dynlearn
from dynlearn import NeuralODE
from dynlearn.datasets import make_forced_oscillator
from dynlearn.exceptions import InputError
from dynlearn.metrics import make_forecast_scorer, r2_score
from dynlearn.model_selection import SeriesTimeSplit

STATES = ["q", "p"]
SMALL = dict(hidden_layer_sizes=(32, 32), max_epochs=40, solver="rk4", random_state=0, n_threads=1)
CUT = 7.5


@pytest.fixture(scope="module")
def panel():
    """Forced oscillators: 16 series to fit on, 8 held-out series with input signals never seen."""
    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), random_state=0)
    train = frame[frame.series_id < 16].reset_index(drop=True)
    test = frame[frame.series_id >= 16].reset_index(drop=True)
    return train, test


@pytest.fixture(scope="module")
def driven(panel):
    train, _ = panel
    return NeuralODE(covariates=["u"], covariate_interpolation="linear", **SMALL).fit(train)


def _split(test):
    history = test[test.time <= CUT]
    future = test[test.time > CUT]
    return history, future


def test_inputs_let_the_model_forecast_under_new_input_signals(panel, driven):
    train, test = panel
    history, future = _split(test)
    predicted = driven.predict(history, t=future[["series_id", "time", "u"]])
    assert list(predicted.columns) == ["series_id", "time", *STATES]  # inputs are not forecast
    # The same model without the inputs, on the adaptive solver: with one rk4 step per gap it diverges, which
    # would make the comparison empty. It must at least stay in the data's range for the ratio to mean anything.
    blind = NeuralODE(**{**SMALL, "solver": "dopri5"}).fit(train.drop(columns="u"))
    unaware = blind.predict(history.drop(columns="u"), t=future[["series_id", "time"]])
    truth = future[["series_id", "time", *STATES]]
    mse = lambda p: float(((p[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2).mean())
    assert mse(unaware) < 2 * float((truth[STATES].to_numpy() ** 2).mean())
    assert r2_score(truth, predicted) > 0.9
    assert mse(predicted) * 3 < mse(unaware)


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
def test_later_inputs_change_no_earlier_prediction(panel, driven, interpolation):
    _, test = panel
    model = clone(driven).set_params(covariate_interpolation=interpolation)
    # Same weights, another reading of the inputs between samples: the structure does not depend on it.
    model.__dict__.update({k: v for k, v in driven.__dict__.items() if k.endswith("_")})
    model.module_.interpolation = interpolation
    history, future = _split(test)
    query = future[["series_id", "time", "u"]].copy()
    tau = CUT + 3.0
    changed = query.copy()
    later = changed.time > tau
    changed.loc[later, "u"] = changed.loc[later, "u"] + 5.0
    before, after = model.predict(history, t=query), model.predict(history, t=changed)
    early = (query.time <= tau).to_numpy()
    np.testing.assert_array_equal(before[STATES].to_numpy()[early], after[STATES].to_numpy()[early])
    assert not np.allclose(before[STATES].to_numpy()[~early], after[STATES].to_numpy()[~early])
    model.module_.interpolation = driven.covariate_interpolation


def test_linear_reading_uses_the_query_rows_own_input(panel, driven):
    """Between the last observation and a query the input runs to the query's value: changing it moves that query."""
    _, test = panel
    history, future = _split(test)
    query = future[["series_id", "time", "u"]].groupby("series_id").head(1).copy()
    moved = query.assign(u=query.u + 2.0)
    a, b = driven.predict(history, t=query), driven.predict(history, t=moved)
    assert not np.allclose(a[STATES].to_numpy(), b[STATES].to_numpy())


def test_missing_inputs_are_refused_with_the_column_and_rows(panel, driven):
    _, test = panel
    history, future = _split(test)
    holed = history.copy()
    holed.loc[holed.index[3], "u"] = np.nan
    with pytest.raises(InputError, match=r"'u'.*\(16, 0\.7627"):
        driven.predict(holed, t=future[["series_id", "time", "u"]])
    with pytest.raises(InputError, match=r"'u'.*\(16, 0\.7627"):
        NeuralODE(covariates=["u"], max_epochs=1).fit(holed)
    query = future[["series_id", "time", "u"]].copy()
    query.loc[query.index[2], "u"] = np.nan
    with pytest.raises(InputError, match=rf"input column 'u'.*index {query.index[2]}"):
        driven.predict(history, t=query)
    with pytest.raises(InputError, match=r"input column\(s\) \['u'\].*no column 'u'"):
        driven.predict(history, t=future[["series_id", "time"]])
    with pytest.raises(InputError, match="covariates"):
        NeuralODE(covariates=["force"], **SMALL).fit(history)


def test_query_times_as_an_array_are_refused(panel, driven):
    _, test = panel
    history, _ = _split(test)
    with pytest.raises(InputError, match="query frame"):
        driven.predict(history, t=[8.0, 9.0])


def test_free_run_simulation_follows_the_true_system(panel, driven):
    _, test = panel
    series = test[test.series_id == 16]
    times = series.time.to_numpy()
    start = series[STATES].to_numpy()[0]
    simulated = driven.simulate(start, times, covariates=series[["u"]].to_numpy())
    assert simulated.shape == (len(times), 2)
    assert r2_score(series[STATES].to_numpy(), simulated) > 0.8
    with pytest.raises(InputError, match="covariates"):
        driven.simulate(start, times)
    blind = NeuralODE(hidden_layer_sizes=(4,), max_epochs=1, random_state=0).fit(series.drop(columns="u"))
    with pytest.raises(InputError, match="covariates"):
        blind.simulate(start, times, covariates=series[["u"]].to_numpy())


def test_clone_params_and_grid_search_by_backtest(panel):
    train, _ = panel
    model = NeuralODE(covariates=["u"], hidden_layer_sizes=(8,), max_epochs=3, random_state=0)
    assert clone(model).get_params()["covariates"] == ["u"]
    search = GridSearchCV(
        model,
        {"covariate_interpolation": ["previous", "linear"]},
        cv=SeriesTimeSplit(2, horizon=2.0),
        scoring=make_forecast_scorer(horizon=2.0),
    )
    search.fit(train[train.series_id < 4])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.covariates == ["u"]


def test_intervals_and_score_read_the_inputs(panel, driven):
    _, test = panel
    history, future = _split(test)
    low, high = driven.predict_interval(history, t=future[["series_id", "time", "u"]], coverage=0.9)
    assert list(low.columns) == ["series_id", "time", *STATES]
    assert (high[STATES].to_numpy() >= low[STATES].to_numpy()).all()
    assert driven.score(test) > 0.9
    assert driven.score(test, horizon=3.0) > 0.8


def test_save_and_load_keep_the_inputs(panel, driven, tmp_path):
    _, test = panel
    history, future = _split(test)
    loaded = dynlearn.load(driven.save(tmp_path / "driven.dlm"))
    assert loaded.covariates == ["u"]
    np.testing.assert_array_equal(loaded.covariate_index_, driven.covariate_index_)
    query = future[["series_id", "time", "u"]]
    np.testing.assert_allclose(loaded.predict(history, t=query)[STATES], driven.predict(history, t=query)[STATES])


def test_array_input_names_covariates_by_column_index(panel):
    train, _ = panel
    values = np.stack([g[["q", "p", "u"]].to_numpy() for _, g in train.groupby("series_id")])[:4]
    times = train.time.unique()
    model = NeuralODE(covariates=[2], hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(values, t=times)
    assert model.predict(values, X_t=times).shape == (4, len(times), 2)  # one step ahead at the own times
    with pytest.raises(InputError, match="column indices"):
        NeuralODE(covariates=["u"], max_epochs=1).fit(values, t=times)


@pytest.mark.parametrize("options", [dict(second_order=True), dict(time_dependent=True), dict(augment_dim=2),
                                     dict(hidden_init="encoder", augment_dim=2)])
def test_inputs_combine_with_the_other_structures(panel, options):
    train, test = panel
    model = NeuralODE(covariates="u", hidden_layer_sizes=(8,), max_epochs=2, random_state=0, **options)
    model.fit(train[train.series_id < 4])
    history, future = _split(test)
    predicted = model.predict(history, t=future[["series_id", "time", "u"]])
    assert np.isfinite(predicted[STATES].to_numpy()).all()


def test_noise_injection_reads_the_inputs_in_its_noisy_training_solves(panel):
    train, test = panel
    history, future = _split(test)
    model = NeuralODE(covariates=["u"], covariate_interpolation="linear", noise_std=0.05,
                      **{**SMALL, "max_epochs": 25}).fit(train)
    predicted = model.predict(history, t=future[["series_id", "time", "u"]])
    assert r2_score(future[["series_id", "time", *STATES]], predicted) > 0.9  # measured 0.983


def _past_inputs_changed(history):
    """``history`` with every input before each series' last observation shifted (the last one kept)."""
    changed = history.copy()
    last = changed.groupby("series_id").time.transform("max")
    earlier = changed.time < last
    changed.loc[earlier, "u"] = changed.loc[earlier, "u"] + 2.0
    return changed


@pytest.mark.parametrize("hidden_init", ["encoder", "delay"])
def test_the_history_encoder_reads_the_past_inputs(panel, hidden_init):
    """The upper state of a driven system depends on what drove it: the encoder's hidden start reads past inputs.

    Forecasts from the last observation read the inputs at it and at the
    query times only, so past inputs reach a forecast through the hidden
    start alone: they move it with the encoder and not with delay
    coordinates, which read the states only.
    """
    train, test = panel
    model = NeuralODE(covariates=["u"], augment_dim=1, hidden_init=hidden_init, hidden_layer_sizes=(8,),
                      max_epochs=2, random_state=0).fit(train[train.series_id < 4].drop(columns="p"))
    assert model.encoder_inputs_ == (1 if hidden_init == "encoder" else 0)
    history, future = _split(test.drop(columns="p"))
    query = future[["series_id", "time", "u"]]
    before = model.predict(history, t=query)["q"].to_numpy()
    after = model.predict(_past_inputs_changed(history), t=query)["q"].to_numpy()
    if hidden_init == "encoder":
        assert np.abs(before - after).max() > 1e-4
    else:
        np.testing.assert_array_equal(before, after)


def test_the_encoder_reads_the_input_at_a_free_runs_start(panel):
    """``simulate`` starts the hidden dimension from ``x0`` and the input at ``t[0]``, as windows start in training."""
    import torch

    train, _ = panel
    model = NeuralODE(covariates=["u"], augment_dim=1, hidden_init="encoder", hidden_layer_sizes=(8,),
                      max_epochs=2, random_state=0).fit(train[train.series_id < 4].drop(columns="p"))
    x0 = model._scale_values(np.array([[0.5], [0.5]]))
    inputs = model._simulation_inputs(np.array([[[1.0]], [[-1.0]]]), (2, 1))
    with torch.no_grad():
        start = model.module_.initial_state(model._tensor(x0), None, {
            k: model._tensor(v) for k, v in model._history_of_states(x0, inputs).items()}).numpy()
    np.testing.assert_array_equal(start[0, :1], start[1, :1])  # the measured level as given
    assert abs(start[0, 1] - start[1, 1]) > 1e-4  # the hidden level read from the input too


def test_a_driven_encoder_model_saved_before_the_encoder_read_inputs_still_loads(panel, tmp_path):
    """Files and pickles of such models hold an encoder of the states only; they load and predict as saved."""
    import pickle

    train, test = panel
    model = NeuralODE(covariates=["u"], augment_dim=1, hidden_init="encoder", hidden_layer_sizes=(8,),
                      max_epochs=1, random_state=0).fit(train[train.series_id < 4])
    # The structure of such a model: no encoder_inputs_ attribute, an encoder without inputs.
    del model.encoder_inputs_
    model.module_ = model._build_module()
    assert model.module_.encoder.cell.input_size == 2 * 2 + 1
    history, future = _split(test)
    query = future[["series_id", "time", "u"]]
    expected = model.predict(history, t=query)[STATES].to_numpy()
    loaded = dynlearn.load(model.save(tmp_path / "old.dlm"))
    np.testing.assert_allclose(loaded.predict(history, t=query)[STATES].to_numpy(), expected)
    del model.module_.encoder.n_inputs  # an encoder pickled before it had the attribute
    unpickled = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(unpickled.predict(history, t=query)[STATES].to_numpy(), expected)


def test_every_public_model_takes_covariates():
    import dynlearn

    models = [getattr(dynlearn, name) for name in dynlearn.__all__]
    models = [m for m in models if isinstance(m, type) and hasattr(m, "predict") and hasattr(m, "get_params")]
    wrappers = {"SeedEnsemble"}  # takes an estimator, whose own parameters say
    missing = [m.__name__ for m in models if m.__name__ not in wrappers and "covariates" not in m().get_params()]
    assert not missing, missing
    assert len(models) >= 12
