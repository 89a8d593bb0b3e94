"""The SDE simulators sample the laws they document: exact OU and GBM transitions, Euler–Maruyama Lorenz.

Each statistic is checked against its exact value with a tolerance of about
five standard errors, so a correct sampler fails with negligible probability
while a wrong transition (an Euler step, a missing Itô correction, the wrong
noise scale) is caught.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dynlearn.datasets import _simulate, make_geometric_brownian_motion, make_ou_process, make_stochastic_lorenz

N_SERIES = 20_000


def consecutive_pairs(truth):
    """(previous states, next states, gaps) over every step of every series, flattened."""
    previous, following = truth.states[:, :-1, 0].ravel(), truth.states[:, 1:, 0].ravel()
    gaps = np.diff(truth.times, axis=1).ravel()
    return previous, following, gaps


def assert_standard_normal(z: np.ndarray, against: np.ndarray | None = None) -> None:
    """Mean 0, variance 1 and, when given, no correlation with ``against``."""
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    if against is not None:
        assert abs(np.corrcoef(z, against)[0, 1]) < 5 / np.sqrt(n)


# --------------------------------------------------------- Ornstein-Uhlenbeck
THETA, MU, SIGMA = 0.8, 1.5, 0.6


def ou_mean(x, dt):
    return MU + (x - MU) * np.exp(-THETA * dt)


def ou_variance(dt):
    return SIGMA**2 / (2 * THETA) * (1 - np.exp(-2 * THETA * dt))


def test_ou_transitions_between_irregular_times_follow_the_exact_gaussian_law():
    truth = make_ou_process(
        n_series=N_SERIES, n_times=4, t_span=(0.0, 4.0), theta=THETA, mu=MU, sigma=SIGMA, irregular=True,
        return_truth=True, random_state=0,
    )[1]
    previous, following, gaps = consecutive_pairs(truth)
    assert gaps.max() > 2.0  # long gaps, where an Euler step would be far off
    standardised = (following - ou_mean(previous, gaps)) / np.sqrt(ou_variance(gaps))
    assert_standard_normal(standardised, against=previous)


def test_ou_truth_reports_the_exact_transition_and_stationary_moments():
    truth = make_ou_process(n_series=2, theta=THETA, mu=MU, sigma=SIGMA, return_truth=True, random_state=0)[1]
    x, dt = np.array([-1.0, 0.5, 3.0]), np.array([0.01, 1.0, 7.0])
    assert_allclose(truth.transition_mean(x, dt), ou_mean(x, dt))
    assert_allclose(truth.transition_variance(x, dt), ou_variance(dt))
    assert truth.stationary_mean == MU
    assert truth.stationary_variance == pytest.approx(SIGMA**2 / (2 * THETA))
    assert_allclose(truth.derivatives, THETA * (MU - truth.states))
    assert_array_equal(truth.diffusion, SIGMA)


def test_ou_ensemble_relaxes_to_the_stationary_law():
    truth = make_ou_process(
        n_series=N_SERIES, n_times=3, t_span=(0.0, 20.0), theta=THETA, mu=MU, sigma=SIGMA, return_truth=True,
        random_state=1,
    )[1]
    final = truth.states[:, -1, 0]
    variance = SIGMA**2 / (2 * THETA)
    assert abs(final.mean() - MU) < 5 * np.sqrt(variance / N_SERIES)
    assert abs(final.var() / variance - 1) < 5 * np.sqrt(2 / N_SERIES)


# --------------------------------------------- geometric Brownian motion
DRIFT, VOLATILITY = 0.5, 0.4


def test_gbm_log_increments_are_exactly_gaussian_at_irregular_times():
    truth = make_geometric_brownian_motion(
        n_series=N_SERIES, n_times=4, t_span=(0.0, 3.0), mu=DRIFT, sigma=VOLATILITY, irregular=True,
        return_truth=True, random_state=0,
    )[1]
    previous, following, gaps = consecutive_pairs(truth)
    log_return = np.log(following / previous)
    standardised = (log_return - (DRIFT - VOLATILITY**2 / 2) * gaps) / (VOLATILITY * np.sqrt(gaps))
    assert_standard_normal(standardised, against=np.log(previous))


def test_gbm_transition_mean_and_variance_match_the_log_normal_formulas():
    gap = 1.0
    truth = make_geometric_brownian_motion(
        n_series=N_SERIES, n_times=3, t_span=(0.0, 2 * gap), mu=DRIFT, sigma=VOLATILITY, return_truth=True,
        random_state=2,
    )[1]
    ratio = (truth.states[:, 1:, 0] / truth.states[:, :-1, 0]).ravel()
    mean = np.exp(DRIFT * gap)
    variance = np.exp(2 * DRIFT * gap) * (np.exp(VOLATILITY**2 * gap) - 1)
    assert abs(ratio.mean() - mean) < 5 * np.sqrt(variance / ratio.size)
    # The sample variance of a log-normal has a heavy tail; 10% is ~7 standard errors at this size.
    assert abs(ratio.var() / variance - 1) < 0.1
    assert_allclose(truth.transition_mean(2.0, gap), 2.0 * mean)
    assert_allclose(truth.transition_variance(2.0, gap), 4.0 * variance)
    assert_allclose(truth.derivatives, DRIFT * truth.states)
    assert_allclose(truth.diffusion, VOLATILITY * truth.states)
    assert np.all(truth.states > 0)


# -------------------------------------------------------- stochastic Lorenz
def lorenz(x, sigma=10.0, rho=28.0, beta=8 / 3):
    u, v, w = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([sigma * (v - u), u * (rho - w) - v, u * v - beta * w], axis=-1)


def test_stochastic_lorenz_steps_are_euler_maruyama_with_the_documented_noise():
    alpha = np.array([0.15, 0.3, 0.6])
    dt = 1e-3
    # Observing on the internal grid itself exposes single Euler–Maruyama steps.
    truth = make_stochastic_lorenz(
        n_series=400, n_times=51, t_span=(0.0, 50 * dt), dt=dt, alpha=tuple(alpha), return_truth=True,
        random_state=0,
    )[1]
    steps = np.diff(truth.states, axis=1)
    predicted = lorenz(truth.states[:, :-1]) * dt
    standardised = (steps - predicted) / (alpha * np.sqrt(dt))
    for k in range(3):
        assert_standard_normal(standardised[..., k].ravel())
    assert_allclose(truth.derivatives, lorenz(truth.states))
    assert_array_equal(truth.diffusion, np.broadcast_to(alpha, truth.states.shape))


def test_stochastic_lorenz_without_noise_follows_the_lorenz_flow():
    _, truth = make_stochastic_lorenz(
        n_series=3, n_times=11, t_span=(0.0, 0.5), alpha=(0.0, 0.0, 0.0), dt=1e-4, return_truth=True, random_state=0
    )
    exact = _simulate.integrate_ode(lorenz, truth.states[:, 0], truth.times)
    # Euler's global error is O(dt): about 1e-3 relative here.
    assert_allclose(truth.states, exact, rtol=0, atol=5e-3 * np.abs(exact).max())


def test_stochastic_lorenz_observes_irregular_times_without_changing_the_law():
    """Between a series' own times the increments carry exactly the Brownian variance of their gap."""
    alpha = np.array([4.0, 4.0, 4.0])  # noise dominates the drift over these short gaps
    truth = make_stochastic_lorenz(
        n_series=300, n_times=11, t_span=(0.0, 0.01), alpha=tuple(alpha), dt=1e-3, irregular=True,
        return_truth=True, random_state=0,
    )[1]
    gaps = np.diff(truth.times, axis=1)[..., None]
    steps = np.diff(truth.states, axis=1) - lorenz(truth.states[:, :-1]) * gaps
    standardised = steps / (alpha * np.sqrt(gaps))
    assert_standard_normal(standardised.ravel())
