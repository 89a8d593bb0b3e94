"""Probabilistic metrics: CRPS from samples, interval coverage, Gaussian NLL; known values and masks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from dynlearn.exceptions import InputError
from dynlearn.metrics import crps_ensemble, crps_from_samples, gaussian_nll, interval_coverage, mean_absolute_error


def gaussian_crps(y, mu, sigma):
    """Closed form of Gneiting & Raftery (2007) for N(mu, sigma²)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def test_crps_of_a_point_ensemble_is_the_absolute_error():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 6, 2))
    pred = rng.normal(size=(4, 6, 2))
    samples = np.repeat(pred[None], 5, axis=0)
    assert crps_ensemble(y, samples) == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert crps_from_samples is crps_ensemble


def test_crps_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(1)
    y = np.array([[0.0], [1.0], [-2.5]])
    mu, sigma = 0.3, 0.8
    samples = rng.normal(mu, sigma, size=(20_000, 3, 1))
    expected = gaussian_crps(y, mu, sigma)
    got = crps_ensemble(y, samples, multioutput="raw_values")
    assert got[0] == pytest.approx(expected.mean(), rel=0.02)


def test_crps_ignores_missing_entries_and_orders_forecasts():
    rng = np.random.default_rng(2)
    y = np.array([[0.0, np.nan], [1.0, 2.0]])
    sharp = rng.normal(0.0, 0.1, size=(500, 2, 2)) + np.nan_to_num(y)
    vague = rng.normal(0.0, 2.0, size=(500, 2, 2)) + np.nan_to_num(y)
    assert crps_ensemble(y, sharp) < crps_ensemble(y, vague)
    broken = sharp.copy()
    broken[:, 0, 1] = 1e9  # under the mask: ignored
    assert crps_ensemble(y, broken) == crps_ensemble(y, sharp)


def test_metrics_read_sample_frames_aligned_on_series_and_time():
    y = pd.DataFrame({"series_id": [0, 0, 1], "time": [1.0, 2.0, 1.0], "x": [0.5, np.nan, -1.0]})
    draws = []
    for s, shift in enumerate((0.0, 1.0, -1.0)):
        rows = y.iloc[::-1].assign(x=[7.0, 3.0 + shift, 0.5 + shift])  # rows in another order
        draws.append(rows.reset_index(drop=True))
    samples = pd.concat(draws, keys=range(3), names=["sample"])
    # series 0 @ 1: members 0.5, 1.5, -0.5 vs 0.5; series 1 @ 1: 7 always vs -1.
    first = (0 + 1 + 1) / 3 - 0.5 * (2 * (1 + 1 + 2)) / 9  # E|X - y| - E|X - X'| / 2 over the 9 ordered pairs
    expected = (first + 8.0) / 2
    assert crps_ensemble(y, samples) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(InputError, match="sample"):
        crps_ensemble(y, draws[0])


def test_coverage_of_exact_quantiles_is_nominal():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2000, 3))
    y = mu + rng.normal(size=mu.shape) * 0.5
    lower, upper = mu + 0.5 * norm.ppf(0.05), mu + 0.5 * norm.ppf(0.95)
    assert interval_coverage(y, lower, upper) == pytest.approx(0.9, abs=0.015)
    y[:10] = np.nan
    lower[:10] = np.inf  # never inside, but missing: ignored
    assert interval_coverage(y, lower, upper) == pytest.approx(0.9, abs=0.015)
    assert interval_coverage(y, upper, lower) == 0.0


def test_gaussian_nll_known_value_and_mask():
    y = np.array([[0.0], [2.0], [np.nan]])
    mean = np.array([[0.0], [0.0], [5.0]])
    std = np.array([[1.0], [2.0], [0.0]])
    expected = np.mean([0.5 * math.log(2 * math.pi), 0.5 * math.log(2 * math.pi * 4) + 0.5])
    assert gaussian_nll(y, mean, std) == pytest.approx(expected, rel=1e-12)
    assert gaussian_nll(y, mean, std) == pytest.approx(-norm(mean[:2], std[:2]).logpdf(y[:2]).mean(), rel=1e-12)
    with pytest.raises(InputError, match="y_std"):
        gaussian_nll(y, mean, np.zeros_like(std))
