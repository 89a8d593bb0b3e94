"""The batch_size="auto" rule: the default size on small data, fewer steps per epoch on large data, bounded by memory."""

from __future__ import annotations

import math

import pytest

from dynlearn.training import BASE_BATCH_SIZE, _batch, auto_batch_size

WINDOW = 30 * 2  # a window of 30 times of two features


@pytest.mark.parametrize("n_examples", [64, 500, 12_800])
def test_small_data_on_a_cpu_keeps_the_default_size(n_examples):
    assert auto_batch_size(n_examples, WINDOW, "cpu") == BASE_BATCH_SIZE == 64


def test_a_minibatch_is_never_larger_than_the_data():
    assert auto_batch_size(10, WINDOW, "cpu") == 10
    assert auto_batch_size(300, WINDOW, "cuda") == 300
    assert auto_batch_size(0, WINDOW, "cpu") == 1


@pytest.mark.parametrize("n_examples", [100_000, 1_000_000, 3_000_001])
def test_large_data_on_a_cpu_takes_at_most_the_step_limit_per_epoch(n_examples):
    size = auto_batch_size(n_examples, WINDOW, "cpu")
    assert math.ceil(n_examples / size) <= _batch.MAX_STEPS_PER_EPOCH == 200
    assert math.ceil(n_examples / BASE_BATCH_SIZE) > 200  # the default would have taken more


def test_a_gpu_takes_larger_minibatches_within_its_range():
    assert auto_batch_size(10_000, WINDOW, "cuda") == 512
    assert auto_batch_size(400_000, WINDOW, "cuda:0") == 2000
    assert auto_batch_size(1_000_000, WINDOW, "cuda") == 4096
    assert auto_batch_size(10_000, WINDOW, "cpu") == 64


def test_long_examples_stop_the_growth_but_never_shrink_below_the_default():
    values = 2**16  # e.g. 8192 times of 8 features: 256 such windows fill the bound
    assert auto_batch_size(1_000_000, values, "cpu") == _batch.MAX_BATCH_VALUES // values == 256
    assert auto_batch_size(1_000_000, values, "cuda") == 256
    assert auto_batch_size(1_000_000, 2**22, "cuda") == BASE_BATCH_SIZE
