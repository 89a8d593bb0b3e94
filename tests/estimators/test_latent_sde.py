"""LatentSDE numerics: calibrated forecasts, masks, seeds, adjoint gradients."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from dynlearn import ConvergenceWarning, LatentSDE
from dynlearn.data import check_query_times
from dynlearn.datasets import make_ou_process
from dynlearn.metrics import interval_coverage

TINY = dict(
    latent_dim=2,
    context_dim=4,
    hidden_layer_sizes=(8,),
    encoder_hidden_size=8,
    diffusion_hidden_size=4,
    dt=0.5,
    n_samples_predict=4,
    max_epochs=3,
    random_state=0,
    device="cpu",
)


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


@pytest.fixture(scope="module")
def ou_split():
    """Noisy Ornstein–Uhlenbeck series: 32 to train on, 16 held out (history up to t=2.8, future after)."""
    frame = make_ou_process(n_series=48, n_times=20, t_span=(0.0, 4.0), sigma=0.5, noise=0.15, random_state=0)
    train = frame[frame["series_id"] < 32]
    held = frame[frame["series_id"] >= 32]
    return train, held[held["time"] <= 2.8], held[held["time"] > 2.8]


@pytest.fixture(scope="module")
def trained(ou_split):
    train, _, _ = ou_split
    model = LatentSDE(
        latent_dim=2, dt=0.5, batch_size=16, learning_rate=2e-2, max_epochs=60, patience=None, random_state=0,
        device="cpu",
    )
    return _fit(model, train)


def test_forecast_intervals_cover_held_out_observations(trained, ou_split):
    _, history, future = ou_split
    draws = trained.sample(history, t=future[["series_id", "time"]], n_samples=200, random_state=0)
    by_query = draws.groupby(["series_id", "time"])["x"]
    lower, upper = by_query.quantile(0.05).reset_index(), by_query.quantile(0.95).reset_index()
    coverage = interval_coverage(future, lower, upper)
    assert 0.80 <= coverage <= 0.98, coverage
    # The spread of a forecast grows with its horizon, as the process' own does.
    spread = by_query.std().groupby("time").mean()
    assert spread.iloc[-3:].mean() > 1.1 * spread.iloc[:3].mean()


def test_reconstruction_explains_held_out_series(trained, ou_split):
    _, history, _ = ou_split
    assert trained.score(history) > 0.8


def test_masked_values_cannot_change_samples():
    frame = make_ou_process(n_series=4, n_times=10, missing_fraction=0.3, random_state=1)
    model = _fit(LatentSDE(**TINY), frame)
    batch = model._check_input(frame)
    query = check_query_times(np.array([1.0, 5.5, 6.5]), batch)
    garbage = np.random.RandomState(0).normal(scale=1e6, size=batch.values.shape)
    tampered = replace(batch, values=np.where(batch.mask, batch.values, garbage))
    clean = model._sample_batch(batch, query, 8, seed=5, observation_noise=True)
    np.testing.assert_array_equal(model._sample_batch(tampered, query, 8, seed=5, observation_noise=True), clean)
    assert batch.mask.mean() < 0.9  # the mask really hides entries


def test_samples_are_reproducible_and_seeded():
    frame = make_ou_process(n_series=3, n_times=10, random_state=2)
    model = _fit(LatentSDE(**TINY), frame)
    before = torch.random.get_rng_state()
    first = model.sample(frame, t=[5.5, 6.0], n_samples=6, random_state=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(model.sample(frame, t=[5.5, 6.0], n_samples=6, random_state=7)["x"], first["x"])
    other = model.sample(frame, t=[5.5, 6.0], n_samples=6, random_state=8)
    assert not np.allclose(other["x"], first["x"])
    assert first.groupby("sample")["x"].mean().std() > 0  # draws differ from one another


def test_adjoint_gradients_match_direct_backpropagation():
    """Reversible Heun and its algebraic adjoint give the same gradients on the same Brownian path.

    The observation gaps are whole multiples of ``dt`` so the backward pass retraces the forward steps.
    """
    frame = make_ou_process(n_series=3, n_times=8, random_state=3)
    model = _fit(LatentSDE(**{**TINY, "solver": "reversible_heun", "dtype": "float64", "max_epochs": 1}), frame)
    data = {k: model._tensor(v) for k, v in model._windows(model._check_input(frame)).items() if k != "series"}
    module = model.module_.train()

    def gradients(adjoint):
        module.zero_grad()
        loss = model._negative_elbo(module, data, 1.0, torch.Generator().manual_seed(0), adjoint)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.parameters()]

    direct_loss, direct = gradients(False)
    adjoint_loss, adjoint = gradients(True)
    torch.testing.assert_close(adjoint_loss, direct_loss, rtol=1e-10, atol=1e-12)
    assert any(float(g.abs().max()) > 1e-6 for g in direct)
    for a, d in zip(adjoint, direct):
        torch.testing.assert_close(a, d, rtol=1e-6, atol=1e-8)


def test_queries_inside_the_window_follow_the_observations(trained, ou_split):
    """Inside the observed window samples come from the posterior: they sit near what was observed."""
    _, history, _ = ou_split
    draws = trained.sample(history, n_samples=50, random_state=0)
    mean = draws.droplevel("sample").groupby(["series_id", "time"])["x"].mean()
    observed = history.set_index(["series_id", "time"])["x"]
    residual = (mean - observed.loc[mean.index]).abs().mean()
    assert residual < 0.5 * observed.std()
