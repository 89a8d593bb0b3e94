"""The input–output baselines recover a linear system they can represent and simulate it from its input alone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import io_baselines


def _linear_record(n, seed):
    rng = np.random.default_rng(seed)
    u = np.repeat(rng.uniform(-1, 1, n // 10 + 1), 10)[:n]
    y = np.zeros(n)
    for k in range(2, n):
        y[k] = 0.5 + 1.2 * y[k - 1] - 0.5 * y[k - 2] + 0.3 * u[k - 1]
    return u, y


def test_arx_finds_the_orders_and_coefficients_of_a_linear_system_and_simulates_a_new_record():
    u_train, y_train = _linear_record(400, 0)
    u_test, y_test = _linear_record(300, 1)
    assert io_baselines.select_arx(y_train, u_train, range(1, 4))[0] >= 2
    theta = io_baselines.fit_arx(y_train, u_train, 2, 1)
    np.testing.assert_allclose(theta, [0.5, 1.2, -0.5, 0.3], atol=1e-8)
    simulated, info = io_baselines.arx_free_run(y_train, u_train, y_test, u_test, range(1, 4))
    assert io_baselines.rmse(simulated, y_test) < 1e-6
    assert info["n_start"] == max(info["na"], info["nb"])


def test_an_unstable_fit_ends_its_free_run_in_nan_instead_of_overflowing():
    run = io_baselines.simulate_arx(np.array([0.0, 2.0, 0.0]), 1, 1, np.array([1.0]), np.zeros(2000))
    assert np.isnan(run[-1]) and np.isfinite(run[:10]).all()


def test_sarimax_with_the_input_as_regressor_runs_from_the_first_samples():
    pytest.importorskip("statsmodels")
    u_train, y_train = _linear_record(300, 0)
    u_test, y_test = _linear_record(100, 1)
    simulated, info = io_baselines.sarimax_free_run(y_train, u_train, y_test, u_test, orders=(1, 2))
    assert simulated.shape == y_test.shape and np.isfinite(simulated).all()
    np.testing.assert_array_equal(simulated[: info["n_start"]], y_test[: info["n_start"]])
    assert io_baselines.rmse(simulated, y_test) < io_baselines.rmse(io_baselines.mean_output(y_train, u_test), y_test)
