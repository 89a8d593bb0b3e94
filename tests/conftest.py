"""Shared fixtures: small simulated data and a small fitted model, built once."""

from __future__ import annotations

import pytest

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator


@pytest.fixture(scope="session")
def oscillator():
    """A long frame (series_id, time, q, p) of 24 irregular series with 10% missing, and its truth."""
    return make_damped_oscillator(
        n_series=24, n_times=30, t_span=(0.0, 8.0), irregular=True, missing_fraction=0.1, return_truth=True,
        random_state=0,
    )


@pytest.fixture(scope="session")
def fitted_ode(oscillator):
    """A small NeuralODE fitted for a few epochs: for API tests, not accuracy."""
    frame, _ = oscillator
    return NeuralODE(hidden_layer_sizes=(16,), max_epochs=3, window_size=5, random_state=0, device="cpu").fit(frame)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker():
    """Tests run as parallel workers on few cores; extra BLAS/torch threads only contend."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)
