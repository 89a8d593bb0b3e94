"""Bad input to every public method and to the command line: the right error type, and a message that names
the argument, what was expected and what was received (and, for dynlearn's own errors, what to do).

Each case is one row of a table, written after watching what the code does with that input. Rows are grouped
by method; the fitted models they use are built once, tiny, on a small simulated oscillator.
"""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import dynlearn
from dynlearn import (
    HamiltonianNN,
    InputError,
    LagrangianNN,
    LatentODE,
    LatentODEClassifier,
    LatentSDE,
    ModelFileError,
    NeuralCDE,
    NeuralCDEClassifier,
    NeuralODE,
    NeuralSDE,
    ODERNN,
    ODERNNClassifier,
)
from dynlearn._compat import InvalidParameterError
from dynlearn.cli import main
from dynlearn.datasets import make_damped_oscillator
from dynlearn.metrics import forecast_score, make_forecast_scorer
from dynlearn.model_selection import SeriesTimeSplit
from dynlearn.training import Checkpoint

# 6 series x 12 times of (q, p); float times.
FRAME = make_damped_oscillator(n_series=6, n_times=12, random_state=0)
LABELS = pd.Series(np.arange(6) % 2, index=np.arange(6))
WIDE = FRAME.assign(r=1.0)  # one feature more than at fit
ARRAY = np.random.RandomState(0).randn(3, 10, 2)
T10 = np.arange(10.0)
DATES = pd.to_datetime(["2024-01-01", "2024-01-02"])
TINY = dict(max_epochs=1, random_state=0, device="cpu")
SETTINGS = {
    NeuralODE: dict(hidden_layer_sizes=(8,), solver="rk4", window_size=4),
    NeuralSDE: dict(hidden_layer_sizes=(8,)),
    NeuralCDE: dict(hidden_dim=4, hidden_layer_sizes=(8,)),
    NeuralCDEClassifier: dict(hidden_dim=4, hidden_layer_sizes=(8,)),
    ODERNN: dict(hidden_dim=4, ode_hidden_layer_sizes=(8,), gru_hidden_size=8),
    ODERNNClassifier: dict(hidden_dim=4, ode_hidden_layer_sizes=(8,), gru_hidden_size=8),
    LatentODE: dict(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,), solver="rk4"),
    LatentODEClassifier: dict(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,),
                              solver="rk4"),
    LatentSDE: dict(latent_dim=2, context_dim=2, hidden_layer_sizes=(8,)),
    HamiltonianNN: dict(hidden_layer_sizes=(8,), solver="rk4", window_size=4),
    LagrangianNN: dict(hidden_layer_sizes=(8,), solver="rk4", window_size=4),
}


def make(cls, **params):
    """A tiny, unfitted estimator of ``cls``; ``params`` override the tiny settings."""
    return cls(**{**SETTINGS[cls], **TINY, **params})


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    """Every public estimator fitted once on FRAME, by class name; plus ``tmp``, a scratch folder."""
    import warnings

    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: ConvergenceWarning
        for cls in SETTINGS:
            est = make(cls)
            models[cls.__name__] = est.fit(FRAME, LABELS) if "Classifier" in cls.__name__ else est.fit(FRAME)
    folder = tmp_path_factory.mktemp("matrix")
    (folder / "junk.dlm").write_bytes(b"not a model")
    with zipfile.ZipFile(folder / "no_model.dlm", "w") as archive:
        archive.writestr("notes.txt", "hello")
    models["tmp"] = folder
    return models


def _score_with_unnamed_metric(m):
    return make_forecast_scorer(horizon=2, metric=lambda a, b: 0.0)


# name -> (call on the fitted models, error type, argument the message must name, other fragments it must hold)
CASES = {
    # ---------------------------------------------------------------- fit: parameters (scikit-learn's checks)
    "NeuralODE.fit n_threads=0": (lambda m: make(NeuralODE, n_threads=0).fit(FRAME), InvalidParameterError,
                                  "n_threads", ["NeuralODE", "Got 0"]),
    "LatentSDE.fit checkpoint of the wrong type": (lambda m: make(LatentSDE, checkpoint=3).fit(FRAME),
                                                   InvalidParameterError, "checkpoint", ["Checkpoint", "Got 3"]),
    "LagrangianNN.fit learning_rate<0": (lambda m: make(LagrangianNN, learning_rate=-1.0).fit(FRAME),
                                         InvalidParameterError, "learning_rate", ["LagrangianNN", "Got -1.0"]),
    "ODERNNClassifier.fit max_epochs=0": (lambda m: make(ODERNNClassifier, max_epochs=0).fit(FRAME, LABELS),
                                          InvalidParameterError, "max_epochs", ["ODERNNClassifier"]),
    "LatentODEClassifier.fit random_state text": (
        lambda m: make(LatentODEClassifier, random_state="x").fit(FRAME, LABELS), InvalidParameterError,
        "random_state", ["Got 'x'"]),
    "NeuralSDE.fit callbacks not a list": (lambda m: make(NeuralSDE, callbacks=print).fit(FRAME),
                                           InvalidParameterError, "callbacks", ["list"]),
    "HamiltonianNN.fit dtype unknown": (lambda m: make(HamiltonianNN, dtype="float16").fit(FRAME),
                                        InvalidParameterError, "dtype", ["float32"]),
    # ---------------------------------------------------------------- fit: parameters (dynlearn's checks)
    "ODERNN.fit callbacks not Callback": (lambda m: make(ODERNN, callbacks=[print]).fit(FRAME), InputError,
                                          "callbacks", ["dynlearn.training.Callback"]),
    "HamiltonianNN.fit a Checkpoint among callbacks": (
        lambda m: make(HamiltonianNN, callbacks=[Checkpoint(m["tmp"] / "ck")]).fit(FRAME), InputError,
        "callbacks", ["checkpoint="]),
    "LatentODE.fit solver unknown": (lambda m: make(LatentODE, solver="nope").fit(FRAME), InputError, "solver",
                                     ["'nope'", "dopri5"]),
    "NeuralSDE.fit an ODE solver": (lambda m: make(NeuralSDE, solver="dopri5").fit(FRAME), InputError, "solver",
                                    ["'dopri5'", "euler"]),
    "NeuralODE.fit device unknown": (lambda m: make(NeuralODE, device="tpu").fit(FRAME), InputError, "device",
                                     ["'tpu'"]),
    "NeuralODE.fit hidden_layer_sizes=(0,)": (lambda m: make(NeuralODE, hidden_layer_sizes=(0,)).fit(FRAME),
                                              InputError, "hidden_layer_sizes", ["positive ints"]),
    "HamiltonianNN.fit positions unknown": (lambda m: make(HamiltonianNN, positions=["zz"]).fit(FRAME), InputError,
                                            "positions", ["'zz'", "['q', 'p']"]),
    "LagrangianNN.fit velocities unknown": (
        lambda m: make(LagrangianNN, positions=["q"], velocities=["zz"]).fit(FRAME), InputError, "velocities",
        ["'zz'"]),
    # ---------------------------------------------------------------- fit: data
    "NeuralODE.fit inf": (lambda m: make(NeuralODE).fit(FRAME.assign(q=np.inf)), InputError, "X", ["infinite"]),
    "NeuralODE.fit text column": (lambda m: make(NeuralODE).fit(FRAME.assign(q="a")), InputError, "X",
                                  ["non-numeric", "['q']"]),
    "NeuralSDE.fit a feature never observed": (lambda m: make(NeuralSDE).fit(FRAME.assign(q=np.nan)), InputError,
                                               "X", ["all NaN", "['q']"]),
    "NeuralODE.fit 4-D array": (lambda m: make(NeuralODE).fit(np.zeros((2, 3, 4, 5))), InputError, "X",
                                ["(2, 3, 4, 5)"]),
    "ODERNN.fit t with a frame": (lambda m: make(ODERNN).fit(FRAME, t=T10), InputError, "t", ["DataFrame"]),
    "LatentODE.fit t of the wrong length": (lambda m: make(LatentODE).fit(np.zeros((6, 5, 2)), t=np.arange(3.0)),
                                            InputError, "t", ["(5,)", "(3,)"]),
    "HamiltonianNN.fit odd feature count": (lambda m: make(HamiltonianNN).fit(WIDE), InputError, "X",
                                            ["even number", "positions="]),
    # ---------------------------------------------------------------- classifiers: y
    "NeuralCDE.fit interpolation previous": (lambda m: make(NeuralCDE, interpolation="previous").fit(FRAME),
                                             InvalidParameterError, "interpolation", ["NeuralCDE", "'previous'"]),
    "NeuralCDE.fit covariates unknown": (lambda m: make(NeuralCDE, covariates=["zz"]).fit(FRAME), InputError,
                                         "covariates", ["'zz'"]),
    "NeuralCDE.predict a renamed feature": (
        lambda m: m["NeuralCDE"].predict(FRAME.rename(columns={"q": "x"}), t=[5.0]), InputError, "X",
        ["['q', 'p']", "['x', 'p']"]),
    "NeuralCDEClassifier.fit y of one class": (lambda m: make(NeuralCDEClassifier).fit(FRAME, np.zeros(6)),
                                               InputError, "y", ["two classes"]),
    "NeuralCDEClassifier.predict_proba one feature too many": (
        lambda m: m["NeuralCDEClassifier"].predict_proba(WIDE), InputError, "X", ["2 features"]),
    "ODERNNClassifier.fit y too short": (lambda m: make(ODERNNClassifier).fit(FRAME, [0, 1, 0]), InputError, "y",
                                         ["(6,)", "(3,)"]),
    "LatentODEClassifier.fit y continuous": (
        lambda m: make(LatentODEClassifier).fit(FRAME, np.linspace(0, 1, 6)), InputError, "y",
        ["class labels", "continuous"]),
    "ODERNNClassifier.fit y of one class": (lambda m: make(ODERNNClassifier).fit(FRAME, np.zeros(6)), InputError,
                                            "y", ["two classes"]),
    "LatentODEClassifier.fit y None": (lambda m: make(LatentODEClassifier).fit(FRAME, None), InputError, "y",
                                       ["None"]),
    "ODERNNClassifier.fit y ids not those of X": (
        lambda m: make(ODERNNClassifier).fit(FRAME, pd.Series([0, 1, 0, 1, 0, 1], index=[0, 1, 2, 3, 4, 99])),
        InputError, "y", ["no label for ids [5]"]),
    "ODERNNClassifier.fit y with NaN": (lambda m: make(ODERNNClassifier).fit(FRAME, [0, 1, np.nan, 1, 0, 1]),
                                        InputError, "y", ["position 2"]),
    "LatentODEClassifier.score y too short": (lambda m: m["LatentODEClassifier"].score(FRAME, [0, 1]), InputError,
                                              "y", ["(6,)"]),
    # ---------------------------------------------------------------- unfitted
    "NeuralSDE.sample unfitted": (lambda m: make(NeuralSDE).sample(FRAME, t=[1.0]), NotFittedError, "NeuralSDE",
                                  []),
    "LatentODE.transform unfitted": (lambda m: make(LatentODE).transform(FRAME), NotFittedError, "LatentODE", []),
    "HamiltonianNN.energy unfitted": (lambda m: make(HamiltonianNN).energy(FRAME), NotFittedError, "HamiltonianNN",
                                      []),
    "ODERNNClassifier.predict_proba unfitted": (lambda m: make(ODERNNClassifier).predict_proba(FRAME),
                                                NotFittedError, "ODERNNClassifier", []),
    "NeuralODE.simulate unfitted": (lambda m: make(NeuralODE).simulate([0.0, 1.0], T10), NotFittedError,
                                    "NeuralODE", []),
    "LatentSDE.predict unfitted": (lambda m: make(LatentSDE).predict(FRAME, t=[1.0]), NotFittedError, "LatentSDE",
                                   []),
    # ---------------------------------------------------------------- predict
    "NeuralODE.predict one feature too many": (lambda m: m["NeuralODE"].predict(WIDE, t=[5.0]), InputError, "X",
                                               ["2 features", "got 3"]),
    "ODERNN.predict a renamed feature": (lambda m: m["ODERNN"].predict(FRAME.rename(columns={"q": "x"}), t=[5.0]),
                                         InputError, "X", ["['q', 'p']", "['x', 'p']"]),
    "LatentSDE.predict inf": (lambda m: m["LatentSDE"].predict(FRAME.assign(q=np.inf), t=[5.0]), InputError, "X",
                              ["infinite"]),
    "LagrangianNN.predict NaN time": (lambda m: m["LagrangianNN"].predict(FRAME.assign(time=np.nan), t=[5.0]),
                                      InputError, "X times", ["finite"]),
    "HamiltonianNN.predict array without X_t": (lambda m: m["HamiltonianNN"].predict(ARRAY, t=[5.0]), InputError,
                                                "X_t", ["fitted on a DataFrame"]),
    "NeuralSDE.predict X_t with a frame": (lambda m: m["NeuralSDE"].predict(FRAME, t=[5.0], X_t=T10), InputError,
                                           "X_t", ["DataFrame"]),
    "LatentODE.predict datetime queries on float times": (lambda m: m["LatentODE"].predict(FRAME, t=DATES),
                                                          InputError, "t", ["float times", "datetime times"]),
    "NeuralODE.predict text queries": (lambda m: m["NeuralODE"].predict(FRAME, t=["a", "b"]), InputError, "t",
                                       ["['a', 'b']"]),
    "ODERNN.predict NaN query": (lambda m: m["ODERNN"].predict(FRAME, t=[1.0, np.nan]), InputError, "t",
                                 ["finite"]),
    "NeuralODE.predict 3-D queries": (lambda m: m["NeuralODE"].predict(FRAME, t=np.zeros((2, 2, 2))), InputError,
                                      "t", ["(2, 2, 2)"]),
    "LatentSDE.predict per-series queries, wrong rows": (lambda m: m["LatentSDE"].predict(FRAME, t=np.zeros((4, 2))),
                                                         InputError, "t", ["(6, n_queries)", "(4, 2)"]),
    "NeuralODE.predict X_t of the wrong length": (
        lambda m: m["NeuralODE"].predict(ARRAY, t=[5.0], X_t=np.arange(7.0)), InputError, "X_t", ["(7,)"]),
    # ---------------------------------------------------------------- sample
    "NeuralSDE.sample n_samples<0": (lambda m: m["NeuralSDE"].sample(FRAME, t=[5.0], n_samples=-1), InputError,
                                     "n_samples", ["-1"]),
    "LatentODE.sample n_samples float": (lambda m: m["LatentODE"].sample(FRAME, t=[5.0], n_samples=2.5),
                                         InputError, "n_samples", ["2.5"]),
    "LatentSDE.sample n_samples=0": (lambda m: m["LatentSDE"].sample(FRAME, t=[5.0], n_samples=0), InputError,
                                     "n_samples", []),
    "NeuralSDE.sample random_state text": (
        lambda m: m["NeuralSDE"].sample(FRAME, t=[5.0], n_samples=2, random_state="x"), InputError,
        "random_state", ["'x'"]),
    "LatentODE.sample random_state<0": (
        lambda m: m["LatentODE"].sample(FRAME, t=[5.0], n_samples=2, random_state=-1), InputError, "random_state",
        ["-1"]),
    "LatentSDE.sample random_state float": (
        lambda m: m["LatentSDE"].sample(FRAME, t=[5.0], n_samples=2, random_state=1.5), InputError, "random_state",
        ["1.5"]),
    "NeuralSDE.sample datetime queries": (lambda m: m["NeuralSDE"].sample(FRAME, t=DATES, n_samples=2),
                                          InputError, "t", ["datetime"]),
    "NeuralSDE.simulate random_state text": (
        lambda m: m["NeuralSDE"].simulate([0.0, 1.0], T10, random_state="x"), InputError, "random_state", []),
    # ---------------------------------------------------------------- predict_quantiles
    "NeuralSDE.predict_quantiles level above 1": (
        lambda m: m["NeuralSDE"].predict_quantiles(FRAME, t=[5.0], quantiles=[0.5, 1.5]), InputError, "quantiles",
        ["between 0 and 1", "1.5"]),
    "NeuralSDE.predict_quantiles level 0": (
        lambda m: m["NeuralSDE"].predict_quantiles(FRAME, t=[5.0], quantiles=[0.0]), InputError, "quantiles", []),
    "NeuralSDE.predict_quantiles none": (
        lambda m: m["NeuralSDE"].predict_quantiles(FRAME, t=[5.0], quantiles=[]), InputError, "quantiles", []),
    "NeuralSDE.predict_quantiles text": (
        lambda m: m["NeuralSDE"].predict_quantiles(FRAME, t=[5.0], quantiles="a"), InputError, "quantiles",
        ["'a'"]),
    "NeuralSDE.predict_quantiles sampled, bad random_state": (
        lambda m: m["NeuralSDE"].predict_quantiles(FRAME, t=[5.0], n_samples=3, random_state="x"), InputError,
        "random_state", []),
    # ---------------------------------------------------------------- score
    "NeuralODE.score horizon=0": (lambda m: m["NeuralODE"].score(FRAME, horizon=0), InputError, "horizon",
                                  ["positive"]),
    "HamiltonianNN.score negative span": (lambda m: m["HamiltonianNN"].score(FRAME, horizon=-1.5), InputError,
                                          "horizon", ["-1.5"]),
    "LatentSDE.score Timedelta horizon on float times": (
        lambda m: m["LatentSDE"].score(FRAME, horizon=pd.Timedelta("1D")), InputError, "horizon", ["Timedelta"]),
    "ODERNN.score array without t": (lambda m: m["ODERNN"].score(ARRAY), InputError, "t",
                                     ["fitted on a DataFrame"]),
    # ---------------------------------------------------------------- transform
    "LatentODE.transform one feature too many": (lambda m: m["LatentODE"].transform(WIDE), InputError, "X",
                                                 ["2 features"]),
    "LatentODE.transform t of the wrong length": (
        lambda m: m["LatentODE"].transform(np.zeros((2, 5, 2)), t=np.arange(3.0)), InputError, "t", ["(3,)"]),
    "LatentODEClassifier.transform array without t": (
        lambda m: m["LatentODEClassifier"].transform(np.zeros((2, 5, 2))), InputError, "t",
        ["fitted on a DataFrame"]),
    # ---------------------------------------------------------------- simulate
    "NeuralODE.simulate x0 of the wrong width": (lambda m: m["NeuralODE"].simulate(np.zeros((2, 3)), T10),
                                                 InputError, "x0", ["(n_series, 2)", "(2, 3)"]),
    "HamiltonianNN.simulate x0 with NaN": (lambda m: m["HamiltonianNN"].simulate([[np.nan, 0.0]], T10), InputError,
                                           "x0", ["finite"]),
    "LagrangianNN.simulate x0 text": (lambda m: m["LagrangianNN"].simulate("ab", T10), InputError, "x0",
                                      ["numbers", "'ab'"]),
    "NeuralSDE.simulate datetime times": (lambda m: m["NeuralSDE"].simulate(np.zeros((2, 2)), DATES), InputError,
                                          "t", ["float clock", "datetime"]),
    "HamiltonianNN.simulate datetime times": (lambda m: m["HamiltonianNN"].simulate(np.zeros((2, 2)), DATES),
                                              InputError, "t", ["float clock"]),
    "NeuralODE.simulate NaN time": (lambda m: m["NeuralODE"].simulate(np.zeros((2, 2)), [0.0, np.nan]), InputError,
                                    "t", ["1 NaN or infinite"]),
    "NeuralODE.simulate text times": (lambda m: m["NeuralODE"].simulate(np.zeros((2, 2)), ["a", "b"]), InputError,
                                      "t", ["numbers"]),
    "NeuralSDE.simulate decreasing times": (lambda m: m["NeuralSDE"].simulate(np.zeros((2, 2)), [2.0, 1.0]),
                                            InputError, "t", ["non-decreasing"]),
    "LagrangianNN.simulate per-series times, wrong rows": (
        lambda m: m["LagrangianNN"].simulate(np.zeros((2, 2)), np.zeros((3, 4))), InputError, "t", ["(3, 4)"]),
    "NeuralODE.simulate no times": (lambda m: m["NeuralODE"].simulate(np.zeros((2, 2)), []), InputError, "t",
                                    ["(0,)"]),
    # ---------------------------------------------------------------- vector fields
    "NeuralODE.vector_field wrong width": (lambda m: m["NeuralODE"].vector_field(np.zeros((2, 3))), InputError,
                                           "x", ["(n_series, 2)"]),
    "HamiltonianNN.vector_field NaN": (lambda m: m["HamiltonianNN"].vector_field([[np.nan, 0.0]]), InputError, "x",
                                       ["finite"]),
    "LagrangianNN.vector_field text": (lambda m: m["LagrangianNN"].vector_field("ab"), InputError, "x",
                                       ["numbers"]),
    "NeuralODE.vector_field text times": (lambda m: m["NeuralODE"].vector_field(np.zeros((2, 2)), t="x"),
                                          InputError, "t", ["numbers"]),
    "NeuralSDE.drift one time per state, wrong count": (
        lambda m: m["NeuralSDE"].drift(np.zeros((2, 2)), t=[0.0, 1.0, 2.0]), InputError, "t", ["2 finite times"]),
    "NeuralSDE.diffusion wrong width": (lambda m: m["NeuralSDE"].diffusion(np.zeros((2, 3))), InputError, "x",
                                        ["(2, 3)"]),
    # ---------------------------------------------------------------- energy
    "HamiltonianNN.energy one feature too many": (lambda m: m["HamiltonianNN"].energy(WIDE), InputError, "X",
                                                  ["2 features"]),
    "LagrangianNN.energy X_t with a frame": (lambda m: m["LagrangianNN"].energy(FRAME, X_t=T10), InputError, "X_t",
                                             ["DataFrame"]),
    "HamiltonianNN.energy inf": (lambda m: m["HamiltonianNN"].energy(np.full((2, 5, 2), np.inf),
                                                                     X_t=np.arange(5.0)), InputError, "X",
                                 ["infinite"]),
    "LagrangianNN.energy datetime queries": (lambda m: m["LagrangianNN"].energy(FRAME, t=DATES), InputError, "t",
                                             ["datetime"]),
    # ---------------------------------------------------------------- classifiers: predict_proba, trajectories
    "ODERNNClassifier.predict_proba one feature too many": (lambda m: m["ODERNNClassifier"].predict_proba(WIDE),
                                                            InputError, "X", ["2 features"]),
    "LatentODEClassifier.predict_proba array without t": (
        lambda m: m["LatentODEClassifier"].predict_proba(np.zeros((2, 5, 2))), InputError, "t",
        ["fitted on a DataFrame"]),
    "ODERNNClassifier.predict_proba t with a frame": (lambda m: m["ODERNNClassifier"].predict_proba(FRAME, t=T10),
                                                      InputError, "t", ["DataFrame"]),
    "LatentODEClassifier.predict_trajectory datetime queries": (
        lambda m: m["LatentODEClassifier"].predict_trajectory(FRAME, t=DATES), InputError, "t", ["datetime"]),
    "LatentODEClassifier.predict_trajectory array without X_t": (
        lambda m: m["LatentODEClassifier"].predict_trajectory(np.zeros((2, 5, 2)), t=[5.0]), InputError, "X_t",
        []),
    # ---------------------------------------------------------------- save / load
    "load a file that is not a zip": (lambda m: dynlearn.load(m["tmp"] / "junk.dlm"), ModelFileError,
                                      "model file", ["not a zip archive", "estimator.save"]),
    "load a zip without model.json": (lambda m: dynlearn.load(m["tmp"] / "no_model.dlm"), ModelFileError,
                                      "model file", ["without model.json"]),
    "load a folder": (lambda m: dynlearn.load(m["tmp"]), ModelFileError, "model file", ["a folder"]),
    "load None": (lambda m: dynlearn.load(None), InputError, "path", ["NoneType"]),
    "save into a missing folder": (lambda m: m["NeuralODE"].save(m["tmp"] / "no" / "such" / "m.dlm"), InputError,
                                   "path", ["does not exist"]),
    "save onto a folder": (lambda m: m["ODERNN"].save(m["tmp"]), InputError, "path", ["the folder"]),
    "save with a RandomState random_state": (
        lambda m: NeuralODE(random_state=np.random.RandomState(0)).save(m["tmp"] / "r.dlm"), ModelFileError,
        "parameter 'random_state'", ["RandomState"]),
    # ---------------------------------------------------------------- metrics
    "make_forecast_scorer horizon=0": (lambda m: make_forecast_scorer(horizon=0), InputError, "horizon",
                                       ["positive"]),
    "make_forecast_scorer negative span": (lambda m: make_forecast_scorer(horizon=-1.0), InputError, "horizon",
                                           ["-1.0"]),
    "make_forecast_scorer horizon None": (lambda m: make_forecast_scorer(horizon=None), InputError, "horizon",
                                          ["None"]),
    "make_forecast_scorer metric unknown": (lambda m: make_forecast_scorer(horizon=2, metric="nope"), InputError,
                                            "metric", ["'nope'", "'mse'"]),
    "make_forecast_scorer callable without direction": (_score_with_unnamed_metric, InputError, "greater_is_better",
                                                        []),
    "forecast_score of a classifier": (lambda m: forecast_score(m["ODERNNClassifier"], FRAME, 2), InputError,
                                       "estimator", ["ODERNNClassifier", "forecaster"]),
    "forecast_score horizon NaN": (lambda m: forecast_score(m["NeuralODE"], FRAME, float("nan")), InputError,
                                   "horizon", ["nan"]),
    "forecast_score horizon True": (lambda m: forecast_score(m["NeuralODE"], FRAME, True), InputError, "horizon",
                                    ["True"]),
    "forecast_score t with a frame": (lambda m: forecast_score(m["NeuralODE"], FRAME, 2, t=T10), InputError, "t",
                                      ["DataFrame"]),
    # ---------------------------------------------------------------- splitter
    "SeriesTimeSplit 3-D array": (lambda m: list(SeriesTimeSplit(2, horizon=2).split(np.zeros((3, 5, 2)))),
                                  InputError, "X", ["(3, 5, 2)", "cannot be split in time"]),
    "SeriesTimeSplit list of series": (lambda m: list(SeriesTimeSplit(2, horizon=2).split([np.zeros((5, 2))])),
                                       InputError, "X", ["list"]),
    "SeriesTimeSplit frame without times": (
        lambda m: list(SeriesTimeSplit(2, horizon=2).split(FRAME.drop(columns="time"))), InputError, "X",
        ["'time' column"]),
    "SeriesTimeSplit n_splits=0": (lambda m: list(SeriesTimeSplit(0, horizon=2).split(FRAME)), InputError,
                                   "n_splits", []),
    "SeriesTimeSplit too many folds": (lambda m: list(SeriesTimeSplit(50, horizon=2).split(FRAME)), InputError,
                                       "n_splits", ["at most 5"]),
    "SeriesTimeSplit gap<0": (lambda m: list(SeriesTimeSplit(2, horizon=2, gap=-1).split(FRAME)), InputError,
                              "gap", ["non-negative"]),
    "SeriesTimeSplit Timedelta horizon on float times": (
        lambda m: list(SeriesTimeSplit(2, horizon="2h").split(FRAME)), InputError, "horizon", ["Timedelta"]),
}

# A message in the project's shape: "argument: expected ...; got .... what to do"
PROJECT_SHAPE = re.compile(r": expected .+; got .+\. \S")


@pytest.mark.parametrize("call, error, argument, fragments", CASES.values(), ids=list(CASES))
def test_bad_input_raises_an_error_naming_the_argument(call, error, argument, fragments, m):
    with pytest.raises(Exception) as caught:
        call(m)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    message = " ".join(str(caught.value).split())
    if error is InvalidParameterError:
        assert f"The '{argument}' parameter of " in message and " must be " in message and "Got " in message
    elif error is NotFittedError:
        assert f"This {argument} instance is not fitted yet" in message
    else:  # dynlearn's own errors: argument, expected, received, what to do
        assert message.startswith(f"{argument}") and PROJECT_SHAPE.search(message), message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def files(m, tmp_path_factory):
    """CSV tables of good and bad data, and model files saved from the fitted models."""
    folder = tmp_path_factory.mktemp("cli")
    tables = {
        "osc.csv": FRAME,
        "labelled.csv": FRAME.assign(label=FRAME["series_id"] % 2),
        "mixed.csv": FRAME.assign(label=np.arange(len(FRAME)) % 2),
        "only_q.csv": FRAME.drop(columns="p"),
        "renamed.csv": FRAME.rename(columns={"q": "x"}),
        "text.csv": FRAME.assign(q=FRAME["q"].astype(str) + "x"),
        "bad_time.csv": FRAME.assign(time=FRAME["time"].astype(object).where(FRAME.index != 3, "soon")),
        "inf.csv": FRAME.assign(q=np.where(FRAME.index == 3, np.inf, FRAME["q"])),
        "duplicate.csv": pd.concat([FRAME, FRAME.iloc[:1]]),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = folder / name
        table.to_csv(paths[name], index=False)
    paths["empty.csv"] = folder / "empty.csv"
    paths["empty.csv"].write_text("series_id,time,q,p\n")
    paths["model.dlm"] = m["NeuralODE"].save(folder / "model.dlm")
    paths["classifier.dlm"] = m["ODERNNClassifier"].save(folder / "classifier.dlm")
    paths["folder"] = folder
    paths["missing"] = folder / "missing" / "out.csv"
    paths["absent.dlm"] = folder / "absent.dlm"
    paths["absent.csv"] = folder / "absent.csv"
    return paths


FIT = ("fit", "{osc.csv}", "--param", "max_epochs=1")
# name -> (argv with {file} placeholders, what the one error line must name, other fragments it must hold)
CLI_CASES = {
    "fit solver unknown": ((*FIT, "--param", "solver=nope"), "solver", ["'nope'"]),
    "fit n_threads=0": ((*FIT, "--param", "n_threads=0"), "'n_threads'", ["NeuralODE"]),
    "fit learning_rate<0": ((*FIT, "--param", "learning_rate=-1"), "'learning_rate'", ["Got -1"]),
    "fit checkpoint of the wrong type": ((*FIT, "--param", "checkpoint=3"), "'checkpoint'", []),
    "fit callbacks not Callback": ((*FIT, "--param", "callbacks=[1]"), "callbacks", ["Callback"]),
    "fit device unknown": ((*FIT, "--param", "device=tpu"), "device", ["'tpu'"]),
    "fit --param without a name": ((*FIT, "--param", "=3"), "--param", ["NAME=VALUE"]),
    "fit text values": (("fit", "{text.csv}"), "X", ["non-numeric"]),
    "fit inf": (("fit", "{inf.csv}"), "X", ["infinite"]),
    "fit duplicate rows": (("fit", "{duplicate.csv}"), "X", ["duplicate"]),
    "fit a table without rows": (("fit", "{empty.csv}"), "data", ["at least one row"]),
    "fit labels that vary within a series": (
        ("fit", "{mixed.csv}", "--model", "odernnclassifier", "--label-column", "label"), "--label-column",
        ["one label per series"]),
    "fit --out in a missing folder": ((*FIT, "--out", "{missing}"), "--out", ["does not exist"]),
    "fit --out a folder": ((*FIT, "--out", "{folder}"), "--out", ["the folder"]),
    "fit one column for id and time": (("fit", "{osc.csv}", "--time-column", "time", "--id-column", "time"),
                                       "--id-column/--time-column", []),
    "predict one feature missing": (("predict", "{model.dlm}", "{only_q.csv}", "--horizon", "2"), "X",
                                    ["2 features"]),
    "predict a renamed feature": (("predict", "{model.dlm}", "{renamed.csv}", "--horizon", "2"), "X",
                                  ["['q', 'p']"]),
    "predict text among numeric times": (("predict", "{model.dlm}", "{bad_time.csv}", "--horizon", "2"),
                                         "--time-column", ["'soon'"]),
    "predict --times nan": (("predict", "{model.dlm}", "{osc.csv}", "--times", "nan"), "t", ["finite"]),
    "predict --horizon inf": (("predict", "{model.dlm}", "{osc.csv}", "--horizon", "inf"), "--horizon",
                              ["positive number"]),
    "predict --out in a missing folder": (("predict", "{model.dlm}", "{osc.csv}", "--horizon", "2", "--out",
                                           "{missing}"), "--out", ["does not exist"]),
    "predict a missing model file": (("predict", "{absent.dlm}", "{osc.csv}", "--horizon", "2"), "model",
                                     ["no such file"]),
    "predict a folder as the model": (("predict", "{folder}", "{osc.csv}", "--horizon", "2"), "model",
                                      ["a folder"]),
    "predict a missing data file": (("predict", "{model.dlm}", "{absent.csv}", "--horizon", "2"), "data",
                                    ["no such file"]),
    "predict a classifier with --horizon": (("predict", "{classifier.dlm}", "{labelled.csv}", "--horizon", "2"),
                                            "--times/--horizon", ["classifier"]),
    "predict --steps not a number": (("predict", "{model.dlm}", "{osc.csv}", "--horizon", "2", "--steps", "x"),
                                     "--steps", ["invalid int"]),
    "datasets fetch n_series<0": (("datasets", "fetch", "damped_oscillator", "--param", "n_series=-1"),
                                  "n_series", ["-1"]),
    "datasets fetch --out in a missing folder": (("datasets", "fetch", "damped_oscillator", "--out", "{missing}"),
                                                 "--out", ["does not exist"]),
    "bench --device unknown": (("bench", "--tiny", "--device", "tpu"), "--device", ["'tpu'"]),
}


@pytest.mark.parametrize("template, argument, fragments", CLI_CASES.values(), ids=list(CLI_CASES))
def test_bad_command_line_gives_one_error_line_naming_the_argument(template, argument, fragments, files, capsys):
    argv = [str(files[part[1:-1]]) if part.startswith("{") else part for part in template]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    line = err.strip()
    assert "error:" in line and argument in line, line
    if code == 1:  # dynlearn's errors say what was expected and what came
        assert "expected" in line.lower() or "must be" in line, line
        assert "got" in line.lower(), line
    for fragment in fragments:
        assert fragment in line, line


def test_the_matrix_covers_every_public_estimator_and_method():
    assert sorted(cls.__name__ for cls in SETTINGS) == sorted(dynlearn.estimators.__all__)
    words = {word for name in CASES for word in re.split(r"[ .]", name)}
    assert {cls.__name__ for cls in SETTINGS} <= words
    methods = {"fit", "predict", "sample", "predict_quantiles", "score", "transform", "simulate", "energy",
               "predict_proba", "predict_trajectory", "vector_field", "drift", "diffusion", "save", "load",
               "make_forecast_scorer", "forecast_score", "SeriesTimeSplit"}
    assert methods <= words, methods - words
    assert len(CASES) + len(CLI_CASES) >= 70 and len(CLI_CASES) >= 15
