"""The loop says when a fit restored its first epoch and when a silent fit will take long."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

from dynlearn.exceptions import ConvergenceWarning, NoImprovementWarning, SlowFitWarning
from dynlearn.training import SLOW_FIT_SECONDS, _loop, train


def _data(sign, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return {"x": x, "y": sign * x @ torch.tensor([[1.0], [-2.0], [0.5]])}


def _mse(module, batch):
    return ((module(batch["x"]) - batch["y"]) ** 2).mean()


def _linear():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Linear(3, 1)


def _fit(valid_sign, **kwargs):
    settings = dict(max_epochs=30, learning_rate=0.05, patience=5, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = train(_linear(), _mse, _data(1.0), valid_data=_data(valid_sign, seed=1), **{**settings, **kwargs})
    return state, caught


def test_early_stopping_that_restores_the_first_epoch_warns():
    # Validation asks for the opposite map: every epoch of learning the training data makes it worse.
    state, caught = _fit(valid_sign=-1.0)
    assert state.best_epoch == 1 and state.epoch == 6 and state.stop
    messages = [str(w.message) for w in caught if w.category is NoImprovementWarning]
    assert len(messages) == 1
    assert "never improved on its first epoch" in messages[0] and "learning_rate" in messages[0]
    assert issubclass(NoImprovementWarning, ConvergenceWarning)


def test_the_first_epoch_warning_also_comes_without_early_stopping():
    state, caught = _fit(valid_sign=-1.0, patience=None, max_epochs=8)
    assert state.best_epoch == 1 and state.epoch == 8
    assert any(w.category is NoImprovementWarning for w in caught)


def test_a_fit_that_improves_or_runs_one_epoch_does_not_warn_of_no_improvement():
    state, caught = _fit(valid_sign=1.0)
    assert state.best_epoch > 1
    _, one_epoch = _fit(valid_sign=-1.0, max_epochs=1)
    assert not any(w.category is NoImprovementWarning for w in caught + one_epoch)


@pytest.fixture
def slow_clock(monkeypatch):
    """A clock that advances 1 s at each reading: an epoch (read at its start and end) lasts 1 s."""
    ticks = itertools.count(step=1.0)
    monkeypatch.setattr(_loop, "_clock", lambda: next(ticks))


def test_a_long_silent_fit_says_so_once_after_its_first_epoch(slow_clock):
    # 1 s per epoch on the fake clock: 100 epochs project to 100 s, past the threshold.
    assert 100 > SLOW_FIT_SECONDS
    state, caught = _fit(valid_sign=1.0, max_epochs=100, patience=None)
    slow = [w for w in caught if w.category is SlowFitWarning]
    assert len(slow) == 1 and state.epoch == 100
    message = str(slow[0].message)
    assert "about 100 s" in message and "max_epochs=100" in message
    assert "batch_size" in message and "verbose=1" in message and "SlowFitWarning" in message


def test_a_short_or_verbose_fit_does_not_warn_it_is_slow(slow_clock):
    _, short = _fit(valid_sign=1.0, max_epochs=int(SLOW_FIT_SECONDS) - 10, patience=None)
    _, verbose = _fit(valid_sign=1.0, max_epochs=100, patience=None, verbose=1)
    assert not any(w.category is SlowFitWarning for w in short + verbose)
