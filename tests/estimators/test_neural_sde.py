"""NeuralSDE: recovers an OU process, calibrated intervals, seeded samples, the masked likelihood."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal

from dynlearn import ConvergenceWarning, InputError, NeuralSDE
from dynlearn.datasets import make_geometric_brownian_motion, make_ou_process
from dynlearn.estimators._neural_sde import _gaussian_nll_per_entry, _SDEModel
from dynlearn.metrics import interval_coverage

TINY = dict(hidden_layer_sizes=(8,), max_epochs=3, random_state=0, device="cpu")


@pytest.fixture(scope="module")
def ou_fit():
    """An OU process (theta=1, mu=0, sigma=0.5) seen through 100 series of 50 steps of 0.2."""
    frame, truth = make_ou_process(
        n_series=100, n_times=50, t_span=(0.0, 10.0), theta=1.0, mu=0.0, sigma=0.5, return_truth=True, random_state=0
    )
    # All series train (validation_fraction=0): the likelihood surface is flat near the optimum and a
    # held-out tenth of the series is too noisy a stopping signal at this size.
    model = NeuralSDE(hidden_layer_sizes=(16,), batch_size=256, max_epochs=40, validation_fraction=0.0,
                      random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(frame)
    return model, truth


@pytest.mark.parametrize("x0", [0.5, 1.0])
def test_recovers_the_ou_transition(ou_fit, x0):
    """Sampled transitions over a horizon of 0.5 match the exact OU mean and variance within 15%."""
    model, truth = ou_fit
    horizon = 0.5
    paths = model.sample(np.full((1, 1, 1), x0), t=[horizon], n_samples=4000, random_state=0, X_t=[0.0])
    exact_mean, exact_var = truth.transition_mean(x0, horizon), truth.transition_variance(x0, horizon)
    assert paths.mean() == pytest.approx(exact_mean, rel=0.15)
    assert paths.var() == pytest.approx(exact_var, rel=0.15)
    # predict / return_std come from the moment propagation and agree with the samples.
    mean, std = model.predict(np.full((1, 1, 1), x0), t=[horizon], return_std=True, X_t=[0.0])
    assert float(mean.ravel()[0]) == pytest.approx(exact_mean, rel=0.15)
    assert float(std.ravel()[0]) ** 2 == pytest.approx(exact_var, rel=0.15)


def test_learned_coefficients_are_the_ou_drift_and_diffusion(ou_fit):
    model, truth = ou_fit
    x = np.linspace(-0.5, 0.5, 11)[:, None]
    slope = np.polyfit(x[:, 0], model.drift(x)[:, 0], 1)[0]
    assert slope == pytest.approx(-truth.parameters["theta"], rel=0.15)
    np.testing.assert_allclose(model.diffusion(x), truth.parameters["sigma"], rtol=0.15)


def test_simulate_from_explicit_states(ou_fit):
    model, truth = ou_fit
    paths = model.simulate([1.0], [0.0, 0.25, 0.5], n_samples=3000, random_state=0)
    assert paths.shape == (3000, 3, 1)
    np.testing.assert_allclose(paths[:, 0], 1.0, rtol=1e-6)  # float32 round trip of the scaling
    assert paths[:, 2].mean() == pytest.approx(truth.transition_mean(1.0, 0.5), rel=0.15)
    assert paths[:, 2].var() == pytest.approx(truth.transition_variance(1.0, 0.5), rel=0.15)
    np.testing.assert_array_equal(paths, model.simulate([1.0], [0.0, 0.25, 0.5], n_samples=3000, random_state=0))
    with pytest.raises(InputError, match="non-decreasing"):
        model.simulate([1.0], [0.0, -0.5])


def test_long_horizon_reaches_the_stationary_law(ou_fit):
    model, truth = ou_fit
    paths = model.sample(np.full((1, 1, 1), 1.0), t=[6.0], n_samples=3000, random_state=1, X_t=[0.0])
    assert abs(paths.mean() - truth.stationary_mean) < 0.1
    assert paths.var() == pytest.approx(truth.stationary_variance, rel=0.2)


def test_held_out_intervals_are_calibrated():
    """Nominal 90% one-step-ahead intervals on held-out GBM series (irregular times) cover 80-98%."""
    frame = make_geometric_brownian_motion(n_series=80, n_times=30, mu=0.2, sigma=0.4, irregular=True, random_state=3)
    train = frame[frame["series_id"] < 60]
    test = frame[frame["series_id"] >= 60]
    model = NeuralSDE(hidden_layer_sizes=(16,), batch_size=256, max_epochs=30, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train)
    # The first row of a series is its own anchor (zero spread): leave it out as a missing entry.
    scored = test.assign(s=test["s"].where(test.groupby("series_id").cumcount() > 0))
    for kwargs in ({}, {"n_samples": 200, "random_state": 0}):
        bounds = model.predict_quantiles(test, quantiles=(0.05, 0.95), **kwargs)
        coverage = interval_coverage(scored, bounds.loc[0.05], bounds.loc[0.95])
        assert 0.80 <= coverage <= 0.98, (kwargs, coverage)


def test_same_seed_same_samples_and_global_rng_untouched():
    frame = make_ou_process(n_series=6, n_times=12, irregular=True, missing_fraction=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NeuralSDE(**TINY).fit(frame)
        again = NeuralSDE(**TINY).fit(frame)
    state = torch.random.get_rng_state()
    a = model.sample(frame, t=[5.5, 6.0], n_samples=20, random_state=7)
    b = model.sample(frame, t=[5.5, 6.0], n_samples=20, random_state=7)
    c = model.sample(frame, t=[5.5, 6.0], n_samples=20, random_state=8)
    d = again.sample(frame, t=[5.5, 6.0], n_samples=20, random_state=7)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, d)
    assert not np.allclose(a["x"], c["x"])
    assert torch.equal(state, torch.random.get_rng_state())


def test_forecast_samples_are_paths(ou_fit):
    """Queries after the same observation lie on one path: later draws correlate with earlier ones."""
    model, _ = ou_fit
    start = np.full((1, 1, 1), 1.0)  # the state at time 0
    paths = model.sample(start, t=[0.2, 0.4, 2.0], n_samples=2000, random_state=0, X_t=[0.0])[:, 0, :, 0]
    assert np.corrcoef(paths[:, 0], paths[:, 1])[0, 1] > 0.5
    assert paths[:, 0].var() < paths[:, 1].var() < paths[:, 2].var()
    shuffled = model.sample(start, t=[2.0, 0.4, 0.2], n_samples=2000, random_state=0, X_t=[0.0])[:, 0, ::-1, 0]
    np.testing.assert_allclose(shuffled, paths)  # query order does not change the path


def test_moment_propagation_is_exact_for_a_linear_drift():
    """With f(x) = -theta x and constant g, sub-steps converge to the exact OU transition."""
    module = _SDEModel(1, (), "tanh", False, "diagonal", 1e-3).double()
    theta, sigma, x0, gap = 0.7, 0.4, 2.0, 1.5
    with torch.no_grad():
        module.drift_net[0].weight.fill_(-theta)
        module.drift_net[0].bias.zero_()
        module.diffusion_net[0].weight.zero_()
        module.diffusion_net[0].bias.fill_(math.log(math.expm1(sigma - 1e-3)))  # softplus(b) + floor = sigma
    exact_var = sigma**2 * (1 - math.exp(-2 * theta * gap)) / (2 * theta)
    errors = []
    for n in (1, 4, 64):
        mean, cov = module.moments(torch.tensor([[x0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                   torch.tensor([gap], dtype=torch.float64), n)
        errors.append((abs(float(mean.detach()) - x0 * math.exp(-theta * gap)), abs(float(cov.detach()) - exact_var)))
    assert errors[0][0] > 10 * errors[-1][0] and errors[0][1] > 10 * errors[-1][1]
    assert errors[-1][0] < 0.01 and errors[-1][1] < 0.005


def test_masked_likelihood_is_the_marginal_over_observed_entries():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + 0.5 * np.eye(3)
    mean, y = rng.normal(size=3), rng.normal(size=3)
    mask = np.array([True, False, True])
    got = _gaussian_nll_per_entry(torch.tensor(y)[None], torch.tensor(mask)[None], torch.tensor(mean)[None],
                                  torch.tensor(cov)[None])
    expected = -multivariate_normal(mean[mask], cov[np.ix_(mask, mask)]).logpdf(y[mask]) / mask.sum()
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # What is hidden by the mask cannot change the likelihood.
    y2 = y.copy()
    y2[1] = 1e6
    again = _gaussian_nll_per_entry(torch.tensor(y2)[None], torch.tensor(mask)[None], torch.tensor(mean)[None],
                                    torch.tensor(cov)[None])
    assert float(again) == float(got)


@pytest.mark.parametrize("complete", [True, False])
def test_likelihood_per_entry_sums_the_rows_densities(complete):
    """Complete rows take the unmasked path; both give the rows' summed densities over the observed entries."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 3, 3))
    cov = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(3)
    mean, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mask = np.ones((4, 3), bool) if complete else rng.random((4, 3)) < 0.7
    mask[:, 0] = True
    got = _gaussian_nll_per_entry(*(torch.tensor(v) for v in (y, mask, mean, cov)))
    expected = -sum(multivariate_normal(mean[i, m], cov[i][np.ix_(m, m)]).logpdf(y[i, m]) for i, m in enumerate(mask))
    assert float(got) == pytest.approx(expected / mask.sum(), rel=1e-10)
    singular = cov.copy()
    singular[1] = np.zeros((3, 3))  # not positive definite: NaN, which the training loop turns into an error
    assert math.isnan(float(_gaussian_nll_per_entry(*(torch.tensor(v) for v in (y, mask, mean, singular)))))


def test_scalar_noise_and_missing_entries_fit_and_sample():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 12, 2)).cumsum(axis=1) * 0.3
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, 0] = rng.normal(size=(5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NeuralSDE(noise_type="scalar", **TINY).fit(X)
    samples = model.sample(X, t=[12.0, 13.0], n_samples=8, random_state=0)
    assert samples.shape == (8, 5, 2, 2) and np.isfinite(samples).all()
    quantiles = model.predict_quantiles(X, t=[12.0, 13.0], quantiles=(0.1, 0.5, 0.9))
    assert quantiles.shape == (3, 5, 2, 2)
    assert (quantiles[0] <= quantiles[1]).all() and (quantiles[1] <= quantiles[2]).all()
    np.testing.assert_allclose(quantiles[1], model.predict(X, t=[12.0, 13.0]), rtol=1e-6, atol=1e-9)


def test_errors_name_the_argument():
    frame = make_ou_process(n_series=3, n_times=8, random_state=0)
    with pytest.raises(InputError, match="solver"):
        NeuralSDE(solver="reversible_heun", **TINY).fit(frame)
    with pytest.raises(InputError, match="solver"):
        NeuralSDE(solver="dopri5", **TINY).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NeuralSDE(**TINY).fit(frame)
    with pytest.raises(InputError, match="first observation"):
        model.sample(frame, t=[-1.0, 1.0], n_samples=2)
    with pytest.raises(InputError, match="quantiles"):
        model.predict_quantiles(frame, t=[6.0], quantiles=(0.0, 0.9))
    with pytest.raises(InputError, match="n_samples"):
        model.sample(frame, t=[6.0], n_samples=0)
