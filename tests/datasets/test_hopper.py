"""``make_hopper``: the Latent ODE MuJoCo benchmark, its protocol, its physics and its optional dependency."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dynlearn.data import check_series
from dynlearn.datasets import make_hopper
from dynlearn.exceptions import DynlearnError, InputError

JOINTS = ["rootx", "rootz", "rooty", "waist", "hip", "knee", "ankle"]
NAMES = [f"qpos_{joint}" for joint in JOINTS] + [f"qvel_{joint}" for joint in JOINTS]
TIMESTEP = 0.005


# ------------------------------------------- without the extra (runs everywhere)
def test_missing_dm_control_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)
    with pytest.raises(ImportError, match=r'pip install "dynlearn\[mujoco\]"') as caught:
        make_hopper(n_series=1, n_times=5, random_state=0)
    assert isinstance(caught.value, DynlearnError)
    assert "mujoco 4" in str(caught.value)


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"n_series": 0}, "n_series"),
        ({"n_times": 1}, "n_times"),
        ({"noise": -1.0}, "noise"),
        ({"n_times": 50, "n_steps": 100}, "n_steps"),  # the even grid observes every step
        ({"n_times": 50, "n_steps": 20, "irregular": True}, "n_steps"),  # too few steps to choose from
        ({"n_steps": 1.5, "irregular": True}, "n_steps"),
    ],
)
def test_bad_arguments_are_reported_before_dm_control_is_needed(monkeypatch, options, argument):
    monkeypatch.setitem(sys.modules, "dm_control", None)
    with pytest.raises(InputError, match=argument):
        make_hopper(**options, random_state=0)


# ------------------------------------------------------------ with the extra
@pytest.fixture
def suite():
    return pytest.importorskip("dm_control.suite")


def test_a_mujoco_that_cannot_load_the_hopper_is_named(suite, monkeypatch):
    def load(*args, **kwargs):
        raise AttributeError("'MjModel' object has no attribute 'flex_vertedge'")

    monkeypatch.setattr(suite, "load", load)
    with pytest.raises(ImportError, match=r"mujoco .*flex_vertedge.*dynlearn\[mujoco\]"):
        make_hopper(n_series=1, n_times=5, random_state=0)


def test_frame_columns_times_and_truth(suite):
    frame, truth = make_hopper(n_series=3, n_times=40, return_truth=True, random_state=0)
    assert list(frame.columns) == ["series_id", "time", *NAMES]
    assert frame.shape == (3 * 40, 2 + 14)
    assert truth.states.shape == truth.derivatives.shape == (3, 40, 14)
    assert_array_equal(truth.steps, np.broadcast_to(np.arange(40), (3, 40)))
    assert_allclose(truth.times, truth.steps * TIMESTEP, rtol=0, atol=1e-15)
    # Without noise or gaps the frame is the truth itself.
    assert_array_equal(frame[NAMES].to_numpy(), truth.states.reshape(-1, 14))
    assert_array_equal(frame["time"].to_numpy(), truth.times.ravel())
    assert truth.parameters["timestep"] == TIMESTEP and truth.parameters["task"] == "stand"


def test_frames_round_trip_through_check_series(suite):
    frame, truth = make_hopper(
        n_series=4, n_times=30, noise=0.05, irregular=True, missing_fraction=0.3, return_truth=True, random_state=1
    )
    batch = check_series(frame)
    assert (batch.n_series, batch.n_features) == (4, 14)
    assert batch.spec.feature_names == tuple(NAMES)
    assert_array_equal(batch.lengths, 30)
    assert_allclose(batch.times, truth.times)
    observed = frame[NAMES].to_numpy().reshape(4, 30, 14)
    assert_array_equal(batch.mask, ~np.isnan(observed))
    assert_array_equal(batch.values[batch.mask], observed[batch.mask])
    residual = observed - truth.states
    assert 0.03 < np.nanstd(residual) < 0.07


def test_same_seed_same_data_other_seed_other_data_global_seed_unused(suite):
    options = {"n_series": 3, "n_times": 25, "noise": 0.1, "irregular": True, "missing_fraction": 0.2}
    np.random.seed(0)
    first = make_hopper(**options, random_state=7)
    np.random.seed(1)
    again = make_hopper(**options, random_state=np.random.RandomState(7))
    other = make_hopper(**options, random_state=8)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["time"], other["time"])
    assert not np.allclose(first[NAMES].fillna(0), other[NAMES].fillna(0))


def test_initial_states_are_the_papers_draws(suite):
    # The paper seeds NumPy with 123, then per series draws qpos[:2] ~ U(0, 0.5),
    # qpos[2:] ~ U(-2, 2), qvel ~ U(-5, 5), in that order.
    rng = np.random.RandomState(123)
    expected = np.array(
        [np.concatenate([rng.uniform(0, 0.5, 2), rng.uniform(-2, 2, 5), rng.uniform(-5, 5, 7)]) for _ in range(5)]
    )
    truth = make_hopper(n_series=5, n_times=2, return_truth=True, random_state=123)[1]
    assert_array_equal(truth.states[:, 0], expected)


def test_positions_advance_by_the_new_velocities(suite):
    # MuJoCo's semi-implicit Euler step sets qpos[k+1] = qpos[k] + dt qvel[k+1] for slide and hinge joints,
    # all of the hopper's: the recorded velocities are the finite differences of the positions.
    states = make_hopper(n_series=5, n_times=200, return_truth=True, random_state=2)[1].states
    finite_differences = np.diff(states[..., :7], axis=1) / TIMESTEP
    assert_allclose(finite_differences, states[:, 1:, 7:], rtol=0, atol=1e-8)


def test_derivatives_are_velocities_and_forward_dynamics(suite):
    mujoco = pytest.importorskip("mujoco")
    truth = make_hopper(n_series=3, n_times=100, return_truth=True, random_state=3)[1]
    assert_array_equal(truth.derivatives[..., :7], truth.states[..., 7:])
    model = suite.load("hopper", "stand").physics.model.ptr
    data = mujoco.MjData(model)
    for i, k in [(0, 0), (1, 10), (2, 99)]:
        data.qpos[:], data.qvel[:] = truth.states[i, k, :7], truth.states[i, k, 7:]
        mujoco.mj_forward(model, data)
        assert_allclose(truth.derivatives[i, k, 7:], data.qacc, rtol=0, atol=1e-8 * np.abs(data.qacc).max())


def test_the_hopper_falls_and_stays_above_the_floor(suite):
    states = make_hopper(n_series=20, n_times=200, return_truth=True, random_state=4)[1].states
    assert np.isfinite(states).all()
    # The torso's frame starts 1 m above the floor (rootz = 0) and contacts keep it from going through.
    height = 1.0 + states[..., 1]
    assert height.min() > 0.0
    # With no control the mean vertical velocity ends lower than it starts: gravity pulls it down.
    assert states[:, -1, 8].mean() < states[:, 0, 8].mean()


def test_irregular_series_are_subsets_of_the_simulated_steps(suite):
    regular = make_hopper(n_series=4, n_times=60, return_truth=True, random_state=5)[1]
    frame, truth = make_hopper(n_series=4, n_times=15, n_steps=60, irregular=True, return_truth=True, random_state=5)
    steps = truth.steps
    assert_array_equal(steps[:, 0], 0)
    assert np.all(np.diff(steps, axis=1) > 0) and steps.max() < 60
    assert len({tuple(row) for row in steps}) == 4
    assert_allclose(truth.times, steps * TIMESTEP, rtol=0, atol=1e-15)
    # Same seed, same initial states: the observations are the regular trajectory at the drawn steps.
    assert_array_equal(truth.states, regular.states[np.arange(4)[:, None], steps])

    shared = make_hopper(n_series=3, n_times=10, irregular="shared", return_truth=True, random_state=5)[1]
    assert_array_equal(shared.steps, np.broadcast_to(shared.steps[:1], (3, 10)))
    assert shared.parameters["n_steps"] == 200  # drawn from the paper's 200 steps by default
