"""The literature benchmarks follow their published protocols (Latent ODE sinusoids, Neural ODE spirals)."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from dynlearn.datasets import make_periodic, make_spirals


# ---------------------------------------------------------------- periodic
def test_periodic_defaults_are_the_latent_ode_protocol():
    frame, truth = make_periodic(return_truth=True, random_state=0)
    assert frame.shape == (1000 * 100, 3)
    times = truth.times
    # One irregular set of 100 times on [0, 5], starting at 0, shared by all series.
    assert_array_equal(times, np.broadcast_to(times[0], times.shape))
    assert times[0, 0] == 0.0 and times[0, -1] <= 5.0 and np.all(np.diff(times[0]) > 0)
    assert np.std(np.diff(times[0])) > 0.2 * np.mean(np.diff(times[0]))  # irregular, not a grid
    # Per-series frequency U(0.4, 0.8) and offset N(1, 0.1²); amplitude 1.
    assert truth.frequency.min() >= 0.4 and truth.frequency.max() <= 0.8
    assert abs(truth.frequency.mean() - 0.6) < 5 * 0.4 / np.sqrt(12 * 1000)
    assert abs(truth.offset.mean() - 1.0) < 5 * 0.1 / np.sqrt(1000)
    assert abs(truth.offset.std() / 0.1 - 1) < 5 / np.sqrt(2 * 1000)
    expected = np.sin(2 * np.pi * truth.frequency[:, None] * times) + truth.offset[:, None]
    assert_allclose(truth.states[..., 0], expected, atol=1e-12)
    # Observation noise of standard deviation 0.01.
    residual = frame["y"].to_numpy() - truth.states.ravel()
    assert abs(residual.std() / 0.01 - 1) < 0.02
    assert abs(residual.mean()) < 5 * 0.01 / np.sqrt(residual.size)


def test_periodic_phase_starts_at_the_window_start():
    truth = make_periodic(n_series=5, n_times=10, t_span=(2.0, 4.0), noise=0.0, return_truth=True, random_state=0)[1]
    assert_allclose(truth.states[:, 0, 0], truth.offset)
    assert_allclose(truth.derivatives[:, 0, 0], 2 * np.pi * truth.frequency)


# ----------------------------------------------------------------- spirals
def polar(states, centre):
    shifted = states[..., 0] - centre, states[..., 1]
    return np.hypot(*shifted), np.arctan2(shifted[1], shifted[0])


def test_spirals_follow_the_published_curves():
    truth = make_spirals(n_series=400, n_times=50, noise=0.0, return_truth=True, random_state=0)[1]
    theta = truth.start_angle[:, None] + truth.times
    cw, ccw = truth.clockwise, ~truth.clockwise
    # Counter-clockwise: r = 0.3 θ around (5, 0), at polar angle θ.
    radius, angle = polar(truth.states[ccw], 5.0)
    assert_allclose(radius, 0.3 * theta[ccw], rtol=1e-12)
    assert_allclose(np.cos(angle), np.cos(theta[ccw]), atol=1e-9)
    # Clockwise: r = 50 · 0.3 / φ around (-5, 0), at polar angle φ = 6π + 1 - θ.
    phi = 6 * np.pi + 1 - theta[cw]
    radius, angle = polar(truth.states[cw], -5.0)
    assert_allclose(radius, 15.0 / phi, rtol=1e-12)
    assert_allclose(np.sin(angle), np.sin(phi), atol=1e-9)
    # The direction of travel matches the name.
    for rows, centre, sign in ((ccw, 5.0, 1), (cw, -5.0, -1)):
        offset = truth.states[rows] - np.array([centre, 0.0])
        cross = offset[..., 0] * truth.derivatives[rows][..., 1] - offset[..., 1] * truth.derivatives[rows][..., 0]
        assert np.all(sign * cross > 0)


def test_spirals_draw_directions_and_windows_as_published():
    truth = make_spirals(return_truth=True, random_state=1)[1]
    sweep = 99 * 6 * np.pi / 999
    assert_allclose(truth.times[:, 0], 0.0)
    assert truth.times.max() <= sweep
    assert abs(truth.clockwise.mean() - 0.5) < 5 * 0.5 / np.sqrt(1000)
    # Windows start uniformly in [L, 6π - L], so no series runs off either end of the curve.
    low, high = sweep, 6 * np.pi - sweep
    assert truth.start_angle.min() >= low and truth.start_angle.max() <= high
    assert abs(truth.start_angle.mean() - (low + high) / 2) < 5 * (high - low) / np.sqrt(12 * 1000)


def test_spirals_are_irregular_and_noisy_by_default():
    frame, truth = make_spirals(n_series=200, return_truth=True, random_state=2)
    assert len({tuple(row) for row in truth.times}) == 200
    residual = frame[["x", "y"]].to_numpy() - truth.states.reshape(-1, 2)
    assert_allclose(residual.std(axis=0), 0.3, rtol=0.03)
    grid = make_spirals(n_series=3, irregular=False, return_truth=True, random_state=2)[1]
    assert_allclose(grid.times[0], np.arange(100) * 6 * np.pi / 999)
