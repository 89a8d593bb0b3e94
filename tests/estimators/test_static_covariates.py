"""Per-series constants (static covariates): validated once in the data layer, read by every model like an input."""

import numpy as np
import pandas as pd
import pytest

from dynlearn import LatentODE, LatentODEClassifier, LatentSDE, NeuralCDE, NeuralODE, NeuralSDE, ODERNN, ODERNNClassifier
from dynlearn.exceptions import InputError


def _decay_panel(n_series=24, n_times=25, seed=0):
    """dx/dt = -k x with a rate k of its own per series, recorded in the static column "k"."""
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, 4.0, n_times)
    rows = []
    for i in range(n_series):
        k, x0 = rng.uniform(0.2, 2.0), rng.uniform(0.5, 1.5)
        rows.append(pd.DataFrame({"series_id": i, "time": times, "x": x0 * np.exp(-k * times), "k": k}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def panel():
    return _decay_panel()


def _fit(model_class, frame, **options):
    settings = dict(max_epochs=60, random_state=0)
    if model_class is NeuralODE:
        settings.update(hidden_layer_sizes=(32,), solver="rk4", learning_rate=0.02)
    return model_class(**{**settings, **options}).fit(frame)


@pytest.fixture(scope="module")
def aware(panel):
    return _fit(NeuralODE, panel[panel.series_id < 16], static_covariates=["k"])


def _split(test, cut=1.0):
    return test[test.time <= cut], test[test.time > cut]


def test_a_per_series_rate_is_learned_from_its_static_column(panel, aware):
    train, test = panel[panel.series_id < 16], panel[panel.series_id >= 16]
    unaware = _fit(NeuralODE, train[["series_id", "time", "x"]])
    history, future = _split(test)
    truth = future["x"].to_numpy()
    with_k = aware.predict(history, t=future[["series_id", "time"]])["x"].to_numpy()
    without = unaware.predict(history[["series_id", "time", "x"]], t=future[["series_id", "time"]])["x"].to_numpy()
    mse_with, mse_without = np.mean((with_k - truth) ** 2), np.mean((without - truth) ** 2)
    assert mse_with * 3 < mse_without, (mse_with, mse_without)  # measured 0.00017 against 0.071


def test_queries_need_not_carry_the_constants(panel, aware):
    history, future = _split(panel[panel.series_id >= 16])
    by_frame = aware.predict(history, t=future[["series_id", "time"]])
    with_column = aware.predict(history, t=future[["series_id", "time", "k"]])
    np.testing.assert_allclose(by_frame["x"], with_column["x"])
    assert list(by_frame.columns) == ["series_id", "time", "x"]
    shared = aware.predict(history, t=np.array([2.0, 3.0]))
    assert len(shared) == 2 * history.series_id.nunique()


def test_the_constant_may_be_given_on_one_row_only(panel, aware):
    history, future = _split(panel[panel.series_id >= 16])
    sparse = history.copy()
    sparse.loc[sparse.time > 0, "k"] = np.nan
    np.testing.assert_allclose(
        aware.predict(sparse, t=future[["series_id", "time"]])["x"],
        aware.predict(history, t=future[["series_id", "time"]])["x"],
    )


def test_a_column_that_varies_within_a_series_is_refused(panel):
    bad = panel[panel.series_id < 4].copy()
    bad.loc[(bad.series_id == 2) & (bad.time > 2), "k"] += 0.5
    with pytest.raises(InputError, match=r"static_covariates.*'k'.*series 2"):
        NeuralODE(static_covariates=["k"], max_epochs=1).fit(bad)


def test_a_series_without_its_constant_is_refused(panel):
    bad = panel[panel.series_id < 4].copy()
    bad.loc[bad.series_id == 3, "k"] = np.nan
    with pytest.raises(InputError, match=r"static_covariates.*'k'.*ids \[3\]"):
        NeuralODE(static_covariates=["k"], max_epochs=1).fit(bad)


def test_one_column_cannot_be_both_kinds(panel):
    frame = panel[panel.series_id < 4].assign(u=1.0)
    with pytest.raises(InputError, match="static_covariates.*covariates"):
        NeuralODE(covariates=["k"], static_covariates=["k"], max_epochs=1).fit(frame)


def test_simulate_takes_the_constants(panel, aware):
    one = panel[panel.series_id == 20]
    k = one["k"].iloc[0]
    run = aware.simulate(one[["x"]].iloc[0].to_numpy(), one.time.to_numpy(), static_covariates=[k])
    assert run.shape == (len(one), 1)
    np.testing.assert_allclose(run[:, 0], one["x"], atol=0.1)
    with pytest.raises(InputError, match="static_covariates"):
        aware.simulate(one[["x"]].iloc[0].to_numpy(), one.time.to_numpy())
    with pytest.raises(InputError, match="covariates"):
        aware.simulate(one[["x"]].iloc[0].to_numpy(), one.time.to_numpy(), static_covariates=[k],
                       covariates=np.ones((len(one), 1)))


def test_time_varying_and_static_inputs_together(panel):
    frame = panel[panel.series_id < 6].assign(u=lambda f: np.sin(f.time))
    model = NeuralODE(covariates=["u"], static_covariates=["k"], hidden_layer_sizes=(8,), max_epochs=2,
                      solver="rk4", random_state=0).fit(frame)
    history, future = _split(frame)
    out = model.predict(history, t=future[["series_id", "time", "u"]])
    assert list(out.columns) == ["series_id", "time", "x"] and np.isfinite(out["x"]).all()
    with pytest.raises(InputError, match="'u'"):
        model.predict(history, t=future[["series_id", "time", "k"]])


def test_odernn_reads_the_constants():
    # From the first observation alone, only the constant tells the rate. On 16 training series the gain was
    # draw-dependent (1.0-3.0x over random_state 0-2); on 48 it is 2.2, 5.0, 3.4 and 2.7x for random_state 0-3.
    panel = _decay_panel(n_series=56)
    train, test = panel[panel.series_id < 48], panel[panel.series_id >= 48]
    history, future = _split(test, cut=0.0)
    truth = future["x"].to_numpy()
    errors = []
    for options in ({"static_covariates": ["k"]}, {}):
        frame = train if options else train[["series_id", "time", "x"]]
        model = _fit(ODERNN, frame, max_epochs=150, learning_rate=0.02, **options)
        past = history if options else history[["series_id", "time", "x"]]
        errors.append(np.mean((model.predict(past, t=future[["series_id", "time"]])["x"].to_numpy() - truth) ** 2))
    assert errors[0] * 2 < errors[1], errors  # measured 0.084 against 0.183 (random_state=0)


def test_latent_ode_reads_the_constants_and_takes_array_queries(panel):
    train = panel[panel.series_id < 8]
    model = LatentODE(static_covariates=["k"], latent_dim=2, encoder_dim=8, encoder_layer_sizes=(8,),
                      ode_layer_sizes=(8,), solver="rk4", max_epochs=2, refine_steps=0, random_state=0).fit(train)
    history = panel[(panel.series_id >= 16) & (panel.time <= 1.0)]
    out = model.predict(history, t=np.array([2.0, 3.0]))
    assert list(out.columns) == ["series_id", "time", "x"] and np.isfinite(out["x"]).all()
    assert model._n_inputs == 1


@pytest.mark.parametrize("classifier", [ODERNNClassifier, LatentODEClassifier])
def test_classifiers_learn_a_label_given_only_by_a_constant(classifier):
    # The states are the same noise in both classes; only the constant tells them apart.
    rng = np.random.default_rng(0)
    times = np.linspace(0.0, 1.0, 6)
    rows, labels = [], []
    for i in range(60):
        label = i % 2
        rows.append(pd.DataFrame({"series_id": i, "time": times, "x": rng.normal(size=6),
                                  "s": label + rng.normal(scale=0.1)}))
        labels.append(label)
    frame, labels = pd.concat(rows, ignore_index=True), np.array(labels)
    train, test = frame.series_id < 40, frame.series_id >= 40
    settings = dict(max_epochs=30, random_state=0)
    if classifier is LatentODEClassifier:
        settings.update(latent_dim=2, encoder_dim=8, solver="rk4", refine_steps=0)
    model = classifier(static_covariates=["s"], **settings).fit(frame[train], labels[:40])
    assert model.score(frame[test], labels[40:]) >= 0.9


@pytest.mark.parametrize("model_class", [NeuralSDE, LatentSDE])
def test_the_stochastic_models_read_the_constants(panel, model_class):
    train = panel[panel.series_id < 8]
    settings = dict(max_epochs=2, random_state=0)
    if model_class is LatentSDE:
        settings.update(latent_dim=2, context_dim=4, hidden_layer_sizes=(8,), encoder_hidden_size=8,
                        n_samples_predict=2)
    model = model_class(static_covariates=["k"], **settings).fit(train)
    assert model._n_inputs == 1
    history = panel[(panel.series_id >= 16) & (panel.time <= 1.0)]
    out = model.predict(history, t=np.array([2.0, 3.0]))
    assert list(out.columns) == ["series_id", "time", "x"] and np.isfinite(out["x"]).all()
    if model_class is NeuralSDE:
        run = model.simulate([1.0], np.linspace(0, 2, 5), static_covariates=[0.5], random_state=0)
        assert np.isfinite(run).all()
        assert model.drift([[1.0]], static_covariates=[[0.5]]).shape == (1, 1)


def test_neural_cde_reads_the_constants_through_its_initial_state(panel):
    # From the first observation alone, only the constant tells the rate; dX never moves along it.
    train, test = panel[panel.series_id < 16], panel[panel.series_id >= 16]
    history, future = _split(test, cut=0.0)
    truth = future["x"].to_numpy()
    errors = []
    for options in ({"static_covariates": ["k"]}, {}):
        frame = train if options else train[["series_id", "time", "x"]]
        model = NeuralCDE(hidden_dim=16, max_epochs=60, random_state=0, **options).fit(frame)
        past = history if options else history[["series_id", "time", "x"]]
        errors.append(np.mean((model.predict(past, t=future[["series_id", "time"]])["x"].to_numpy() - truth) ** 2))
    assert errors[0] * 3 < errors[1], errors  # measured 0.0081 against 0.034
