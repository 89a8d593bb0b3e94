"""thread_budget restores the caller's torch threads; the "auto" rule follows its documented terms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dynlearn.training import PARALLEL_WORK, auto_threads, largest_product, thread_budget
from dynlearn.training import _threads


@pytest.fixture
def two_caller_threads():
    """The caller runs torch at 2 threads (whatever the machine), restored after the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_budget_sets_and_restores(two_caller_threads):
    with thread_budget(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_budget_restores_after_an_exception(two_caller_threads):
    with pytest.raises(ZeroDivisionError):
        with thread_budget(1):
            assert torch.get_num_threads() == 1
            1 / 0
    assert torch.get_num_threads() == 2


def test_nested_budgets_restore_each_level_and_remember_the_caller(two_caller_threads):
    with thread_budget(1):
        with thread_budget(3):
            assert torch.get_num_threads() == 3
            assert _threads.caller_threads() == 2
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert not _threads.budget_active()


def test_none_leaves_torch_alone(two_caller_threads):
    with thread_budget(None):
        assert torch.get_num_threads() == 2
        assert not _threads.budget_active()


def test_auto_is_one_thread_below_the_work_threshold(two_caller_threads, monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    assert auto_threads(PARALLEL_WORK - 1) == 1
    assert auto_threads(0) == 1


def test_auto_uses_free_cores_capped_by_the_caller_setting(two_caller_threads, monkeypatch):
    monkeypatch.setattr(_threads, "other_runnable", lambda: 0)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    assert auto_threads(PARALLEL_WORK) == 2  # the caller's 2 threads (OMP_NUM_THREADS, joblib workers) cap it
    monkeypatch.setattr(_threads, "usable_cores", lambda: 1)
    assert auto_threads(PARALLEL_WORK) == 1  # a process pinned to one core gets one thread
    # Inside a budget the cap is the caller's setting, not the budget's own.
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    with thread_budget(1):
        assert auto_threads(PARALLEL_WORK) == 2


def test_auto_does_not_count_cores_other_work_keeps_busy(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(_threads, "caller_threads", lambda: 8)
    monkeypatch.setattr(_threads, "other_runnable", lambda: 5)
    assert auto_threads(PARALLEL_WORK) == 3
    monkeypatch.setattr(_threads, "other_runnable", lambda: 12)
    assert auto_threads(PARALLEL_WORK) == 1  # never fewer than one
    monkeypatch.setattr(_threads, "other_runnable", lambda: 0)
    assert auto_threads(PARALLEL_WORK) == 8


def test_other_runnable_reads_a_count():
    assert isinstance(_threads.other_runnable(), int) and _threads.other_runnable() >= 0


def test_largest_product_is_rows_times_the_largest_weight_matrix():
    net = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 512), nn.Linear(512, 2))
    assert largest_product(net, rows=10) == 10 * 64 * 512
    assert largest_product(None, rows=10) == 0
    # The default NeuralODE field (2 x 64, minibatches of 64) is far below the threshold.
    assert largest_product(nn.Linear(64, 64), rows=64) < PARALLEL_WORK
    assert largest_product(nn.Linear(512, 512), rows=256) >= PARALLEL_WORK
