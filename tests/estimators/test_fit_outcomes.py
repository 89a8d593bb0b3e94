"""What a failed, interrupted or diverging fit leaves behind, and the callbacks= parameter."""

from __future__ import annotations

import csv
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from dynlearn import ConvergenceWarning, InputError, NeuralODE, TrainingError
from dynlearn.datasets import make_damped_oscillator
from dynlearn.exceptions import DivergenceWarning
from dynlearn.training import Callback, Checkpoint, CSVLogger, StepDecay

SMALL = dict(hidden_layer_sizes=(8,), max_epochs=4, window_size=4, solver="rk4", random_state=0, device="cpu", patience=None)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _loss_turns_nan_after(model, n_calls, monkeypatch):
    """From its ``n_calls``-th evaluation on, the model's training loss is NaN (as after an overflow)."""
    original = model._train
    calls = {"n": 0}

    def train_with_a_nan_loss(loss_fn, *args, **kwargs):
        def loss(module, data):
            calls["n"] += 1
            value = loss_fn(module, data)
            return value * float("nan") if calls["n"] >= n_calls else value

        return original(loss, *args, **kwargs)

    monkeypatch.setattr(model, "_train", train_with_a_nan_loss)


class RaiseAt(Callback):
    def __init__(self, epoch, error):
        self.epoch, self.error = epoch, error

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            raise self.error


class SpoilAndInterruptAt(Callback):
    """Ctrl-C at ``epoch`` after moving the weights off the best ones, as a half-done epoch would."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.best = None

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            self.best = {k: v.clone() for k, v in state.best_weights.items()}
            with torch.no_grad():
                for p in state.module.parameters():
                    p.add_(1.0)
            raise KeyboardInterrupt


class Record(Callback):
    def __init__(self):
        self.calls, self.rates = [], []

    def on_train_begin(self, state):
        self.calls.append("begin")

    def on_epoch_end(self, state):
        self.calls.append(state.epoch)
        self.rates.append(state.optimizer.param_groups[0]["lr"])

    def on_train_end(self, state):
        self.calls.append("end")


def _fitted_names(model):
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("__"))


def test_a_fresh_fit_that_diverges_leaves_the_estimator_unfitted(oscillator, monkeypatch):
    frame, _ = oscillator
    model = NeuralODE(**SMALL).fit(frame)  # fitted once: the failed refit must not leave that model behind either
    _loss_turns_nan_after(model, 5, monkeypatch)
    with pytest.raises(TrainingError, match="non-finite"):
        model.fit(frame)
    assert _fitted_names(model) == []
    with pytest.raises(NotFittedError):
        model.predict(frame, t=[8.5])


@pytest.mark.parametrize("error", [RuntimeError("a callback failed"), MemoryError()])
def test_any_exception_escaping_fit_leaves_it_unfitted(oscillator, error):
    frame, _ = oscillator
    model = NeuralODE(**SMALL, callbacks=[RaiseAt(2, error)])
    with pytest.raises(type(error)):
        model.fit(frame)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


def test_a_warm_start_refit_that_fails_keeps_the_previous_model(oscillator, monkeypatch):
    frame, _ = oscillator
    model = NeuralODE(**SMALL).fit(frame)
    before = model.predict(frame, t=[8.5])
    n_epochs, history = model.n_epochs_, model.history_.to_frame()
    model.set_params(warm_start=True)
    _loss_turns_nan_after(model, 5, monkeypatch)
    with pytest.raises(TrainingError):
        model.fit(frame)
    assert model.n_epochs_ == n_epochs and not model.module_.training
    assert model.history_.to_frame().equals(history)
    np.testing.assert_array_equal(model.predict(frame, t=[8.5]), before)


def test_an_interrupted_fit_keeps_the_best_weights_and_every_fitted_attribute(oscillator):
    frame, _ = oscillator
    spoil = SpoilAndInterruptAt(3)
    model = NeuralODE(**SMALL, callbacks=[spoil])
    with pytest.raises(KeyboardInterrupt):
        model.fit(frame)
    check_is_fitted(model)
    weights = model.module_.state_dict()
    assert all(torch.equal(weights[k], spoil.best[k]) for k in weights)
    assert not model.module_.training
    assert model.n_epochs_ == 3 and len(model.history_) == 3
    assert 1 <= model.best_epoch_ <= 3 and model.training_time_ > 0
    reference = NeuralODE(**{**SMALL, "max_epochs": 3}).fit(frame)
    if model.best_epoch_ == 3:
        np.testing.assert_array_equal(model.predict(frame, t=[8.5]), reference.predict(frame, t=[8.5]))
    assert np.isfinite(model.predict(frame, t=[8.5]).drop(columns=["series_id", "time"]).to_numpy()).all()


def test_an_interrupt_before_training_leaves_the_estimator_unfitted(oscillator, monkeypatch):
    frame, _ = oscillator
    model = NeuralODE(**SMALL)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "_windows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(frame)
    assert _fitted_names(model) == []


def test_a_fit_that_blows_up_warns_with_advice():
    frame = make_damped_oscillator(n_series=4, n_times=20, random_state=0)
    # At learning_rate=10 the training loss goes from about 1 to thousands within two epochs.
    with pytest.warns(DivergenceWarning, match="Lower learning_rate"):
        NeuralODE(**{**SMALL, "learning_rate": 10.0}).fit(frame)
    assert issubclass(DivergenceWarning, ConvergenceWarning) and issubclass(DivergenceWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        NeuralODE(**SMALL).fit(frame)


# ---------------------------------------------------------------- callbacks=
def test_callbacks_see_every_hook_in_order(oscillator):
    frame, _ = oscillator
    record = Record()
    NeuralODE(**SMALL, callbacks=[record]).fit(frame)
    assert record.calls == ["begin", 1, 2, 3, 4, "end"]


def test_step_decay_sets_each_epochs_rate(oscillator):
    frame, _ = oscillator
    record = Record()  # runs after StepDecay has set the next epoch's rate
    NeuralODE(**SMALL, learning_rate=0.01, callbacks=[StepDecay(every=2, factor=0.5), record]).fit(frame)
    assert record.rates == pytest.approx([0.01, 0.005, 0.005, 0.0025])


def test_csv_logger_writes_one_row_per_epoch(oscillator, tmp_path):
    frame, _ = oscillator
    path = tmp_path / "history.csv"
    model = NeuralODE(**SMALL, callbacks=[CSVLogger(path)]).fit(frame)
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(model.history_.to_frame()["train_loss"].tolist())


def test_estimators_with_callbacks_clone_pickle_and_refit_the_same(oscillator, tmp_path):
    frame, _ = oscillator
    model = NeuralODE(**SMALL, callbacks=[StepDecay(every=2), CSVLogger(tmp_path / "h.csv")],
                      checkpoint=Checkpoint(tmp_path / "ckpt", every=2))
    twin = clone(model)
    assert twin.callbacks is not model.callbacks and twin.callbacks[0] is not model.callbacks[0]
    assert repr(twin.callbacks) == repr(model.callbacks) and repr(twin.checkpoint) == repr(model.checkpoint)
    fitted = twin.set_params(checkpoint=None).fit(frame)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(frame, t=[8.5]), fitted.predict(frame, t=[8.5]))
    assert not [k for k in vars(fitted) if k in ("_streams", "_resume")]  # no training scratch is kept


@pytest.mark.parametrize(
    "callbacks, match",
    [
        ([lambda state: None], "dynlearn.training.Callback"),
        ([Checkpoint("somewhere")], "checkpoint="),
        (Record(), "callbacks"),
    ],
)
def test_invalid_callbacks_are_refused_before_training(oscillator, callbacks, match):
    frame, _ = oscillator
    with pytest.raises((InputError, ValueError), match=match):
        NeuralODE(**SMALL, callbacks=callbacks).fit(frame)
