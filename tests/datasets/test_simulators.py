"""The ``make_*`` simulators: what every one of them promises, and the numerics of the deterministic ones."""

from __future__ import annotations

import doctest
import inspect
from functools import partial

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dynlearn import datasets
from dynlearn.data import check_series
from dynlearn.datasets import (
    _benchmarks,
    _forced,
    _physical,
    _sim_dissipative,
    _simulate,
    _stochastic,
    make_damped_oscillator,
    make_double_pendulum,
    make_fitzhugh_nagumo,
    make_geometric_brownian_motion,
    make_lorenz,
    make_lotka_volterra,
    make_mass_spring,
    make_ou_process,
    make_pendulum,
    make_periodic,
    make_spirals,
    make_stochastic_lorenz,
    make_two_body,
    make_van_der_pol,
)
from dynlearn.exceptions import InputError

# Each simulator with a small, fast configuration and its variable names.
SMALL = {
    make_damped_oscillator: ({}, ["q", "p"]),
    make_mass_spring: ({}, ["q", "p"]),
    make_pendulum: ({"t_span": (0.0, 3.0)}, ["q", "p"]),
    make_double_pendulum: ({"t_span": (0.0, 2.0)}, ["q1", "q2", "p1", "p2"]),
    make_two_body: ({"t_span": (0.0, 5.0)}, ["x1", "y1", "x2", "y2", "px1", "py1", "px2", "py2"]),
    make_lotka_volterra: ({"t_span": (0.0, 3.0)}, ["prey", "predator"]),
    make_van_der_pol: ({"t_span": (0.0, 5.0)}, ["x", "y"]),
    make_fitzhugh_nagumo: ({"t_span": (0.0, 20.0)}, ["v", "w"]),
    make_lorenz: ({"t_span": (0.0, 2.0)}, ["x", "y", "z"]),
    make_ou_process: ({}, ["x"]),
    make_geometric_brownian_motion: ({}, ["s"]),
    make_stochastic_lorenz: ({"t_span": (0.0, 0.5)}, ["x", "y", "z"]),
    make_periodic: ({}, ["y"]),
    make_spirals: ({}, ["x", "y"]),
}
ALL = [pytest.param(function, id=function.__name__) for function in SMALL]
DETERMINISTIC = [
    pytest.param(function, id=function.__name__)
    for function in SMALL
    if function not in (make_ou_process, make_geometric_brownian_motion, make_stochastic_lorenz)
]


def run(function, **options):
    """``function`` on its small configuration, with ``options`` on top."""
    kwargs, _ = SMALL[function]
    return function(**{"n_series": 4, "n_times": 20, **kwargs, **options})


def t_span_of(function) -> tuple[float, float]:
    kwargs, _ = SMALL[function]
    return kwargs.get("t_span", inspect.signature(function).parameters["t_span"].default)


# ------------------------------------------------------------ the contract
# Needs the optional `mujoco` extra, which CI does not install; tests/datasets/test_hopper.py covers it.
OPTIONAL_EXTRA = {"make_hopper"}
# Driven systems: their frames carry an input column beside the states; tests/datasets/test_forced_and_tanks.py.
WITH_INPUTS = {"make_forced_oscillator"}


def test_every_simulator_is_exported_and_tested():
    exported = {name for name in datasets.__all__ if name.startswith("make_")}
    assert exported - OPTIONAL_EXTRA - WITH_INPUTS == {function.__name__ for function in SMALL}


@pytest.mark.parametrize("function", ALL)
def test_same_seed_same_data_and_other_seeds_differ(function):
    options = {"noise": 0.1, "irregular": True, "missing_fraction": 0.2, "return_truth": True}
    first, truth = run(function, random_state=7, **options)
    again, truth_again = run(function, random_state=np.random.RandomState(7), **options)
    other = run(function, random_state=8, **options)[0]
    pd.testing.assert_frame_equal(first, again)
    assert_array_equal(truth.states, truth_again.states)
    assert not np.allclose(first["time"], other["time"])
    assert not np.allclose(first.iloc[:, 2:].fillna(0), other.iloc[:, 2:].fillna(0))


@pytest.mark.parametrize("function", ALL)
def test_global_numpy_seed_is_never_used(function):
    np.random.seed(0)
    first = run(function, random_state=3)
    np.random.seed(1)
    pd.testing.assert_frame_equal(first, run(function, random_state=3))


@pytest.mark.parametrize("function", ALL)
def test_frame_columns_and_truth_shapes(function):
    _, names = SMALL[function]
    frame, truth = run(function, n_series=3, n_times=7, noise=0.0, return_truth=True, random_state=0)
    assert list(frame.columns) == ["series_id", "time", *names]
    assert frame.shape == (3 * 7, 2 + len(names))
    assert truth.states.shape == truth.derivatives.shape == (3, 7, len(names))
    assert truth.times.shape == (3, 7)
    assert isinstance(truth.parameters, dict)
    # Without noise or gaps the frame is the truth itself.
    assert_array_equal(frame[names].to_numpy(), truth.states.reshape(-1, len(names)))
    assert_array_equal(frame["time"].to_numpy(), truth.times.ravel())


@pytest.mark.parametrize("function", ALL)
def test_frames_round_trip_through_check_series(function):
    _, names = SMALL[function]
    frame, truth = run(function, noise=0.05, irregular=True, missing_fraction=0.3, return_truth=True, random_state=1)
    batch = check_series(frame)
    assert batch.n_series == 4
    assert batch.n_features == len(names)
    assert batch.spec.feature_names == tuple(names)
    assert_array_equal(batch.lengths, 20)
    assert_allclose(batch.times, truth.times)
    observed = frame[names].to_numpy().reshape(4, 20, len(names))
    assert_array_equal(batch.mask, ~np.isnan(observed))
    assert_array_equal(batch.values[batch.mask], observed[batch.mask])


@pytest.mark.parametrize("function", ALL)
def test_irregular_times_are_sorted_per_series_from_the_start(function):
    start, end = t_span_of(function)
    times = run(function, irregular=True, return_truth=True, random_state=2)[1].times
    assert np.all(np.diff(times, axis=1) > 0)
    assert_array_equal(times[:, 0], start)
    assert times.max() <= end
    assert len({tuple(row) for row in times[:, 1:]}) == len(times)

    shared = run(function, irregular="shared", return_truth=True, random_state=2)[1].times
    assert_array_equal(shared, np.broadcast_to(shared[:1], shared.shape))
    assert not np.allclose(shared[0], np.linspace(start, end, shared.shape[1]))

    grid = run(function, irregular=False, return_truth=True, random_state=2)[1].times
    assert_allclose(grid, np.broadcast_to(np.linspace(start, end, grid.shape[1]), grid.shape))


@pytest.mark.parametrize(
    "function", [make_mass_spring, make_ou_process, make_stochastic_lorenz, make_spirals, make_two_body]
)
@pytest.mark.parametrize("fraction", [0.1, 0.4])
def test_missing_fraction_is_the_share_of_nan_entries(function, fraction):
    _, names = SMALL[function]
    n_vars = len(names)
    frame = run(function, n_series=50, n_times=60, missing_fraction=fraction, random_state=4)
    missing = frame[names].isna().to_numpy()
    # A row never loses all its variables: one of them is kept when all were drawn.
    expected = fraction - fraction**n_vars / n_vars if n_vars > 1 else fraction
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / missing.size)
    assert abs(missing.mean() - expected) < tolerance
    if n_vars > 1:
        assert not missing.all(axis=1).any()
        # The kept entry is any of the row's variables alike: every column has the same share missing.
        per_column = 4.5 * np.sqrt(expected * (1 - expected) / len(missing))
        assert np.all(np.abs(missing.mean(axis=0) - expected) < per_column), missing.mean(axis=0)


def test_every_series_keeps_an_observation_even_when_almost_everything_is_missing():
    frame = make_ou_process(n_series=200, n_times=2, missing_fraction=0.9, random_state=0)
    assert check_series(frame).n_series == 200


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "function, options, argument",
    [
        (make_pendulum, {"n_series": 0}, "n_series"),
        (make_lorenz, {"n_series": 2.5}, "n_series"),
        (make_van_der_pol, {"n_times": 1}, "n_times"),
        (make_two_body, {"t_span": (1.0, 0.0)}, "t_span"),
        (make_mass_spring, {"t_span": 5.0}, "t_span"),
        (make_lotka_volterra, {"t_span": (0.0, np.inf)}, "t_span"),
        (make_ou_process, {"noise": -0.1}, "noise"),
        (make_geometric_brownian_motion, {"missing_fraction": 1.0}, "missing_fraction"),
        (make_fitzhugh_nagumo, {"irregular": "sometimes"}, "irregular"),
        (make_pendulum, {"length": 0.0}, "length"),
        (make_double_pendulum, {"mass2": -1.0}, "mass2"),
        (make_two_body, {"speed_perturbation": -0.2}, "speed_perturbation"),
        (make_lotka_volterra, {"gamma": np.nan}, "gamma"),
        (make_van_der_pol, {"mu": -1.0}, "mu"),
        (make_fitzhugh_nagumo, {"tau": 0}, "tau"),
        (make_lorenz, {"rho": "28"}, "rho"),
        (make_ou_process, {"theta": 0.0}, "theta"),
        (make_geometric_brownian_motion, {"sigma": 0.0}, "sigma"),
        (make_stochastic_lorenz, {"alpha": (0.1, 0.1)}, "alpha"),
        (make_stochastic_lorenz, {"alpha": (0.1, -0.1, 0.1)}, "alpha"),
        (make_stochastic_lorenz, {"dt": 0.0}, "dt"),
        (make_periodic, {"frequency_range": (0.8, 0.4)}, "frequency_range"),
        (make_spirals, {"t_span": (0.0, 10.0)}, "t_span"),
        (make_spirals, {"b": 0.0}, "b"),
    ],
)
def test_bad_arguments_raise_input_errors_naming_the_argument(function, options, argument):
    with pytest.raises(InputError, match=rf"^{argument.replace('[', '.')}: expected"):
        function(**{"n_series": 2, "n_times": 5, **options})


# ------------------------------------------------------- numerics (ODEs)
def fourth_order_differences(truth):
    """Derivative estimates at interior times of an even grid, error O(step⁴)."""
    step = truth.times[0, 1] - truth.times[0, 0]
    x = truth.states
    estimate = (-x[:, 4:] + 8 * x[:, 3:-1] - 8 * x[:, 1:-3] + x[:, :-4]) / (12 * step)
    return estimate, truth.derivatives[:, 2:-2]


@pytest.mark.parametrize("function", DETERMINISTIC)
def test_derivatives_match_finite_differences_of_dense_states(function):
    start, _ = t_span_of(function)
    width = 2.0 if function is not make_spirals else 1.5
    truth = function(
        n_series=3, n_times=2001, t_span=(start, start + width), noise=0.0, irregular=False, return_truth=True,
        random_state=5,
    )[1]
    estimate, derivatives = fourth_order_differences(truth)
    scale = np.abs(derivatives).max(axis=(0, 1))
    assert np.all(np.abs(estimate - derivatives).max(axis=(0, 1)) < 1e-6 * scale)


def test_ode_integration_matches_the_exact_linear_flow():
    """The generic solver against the exact solution of the same linear system."""
    rng = np.random.RandomState(0)
    matrix = np.array([[0.0, 1.0], [-4.0, -0.3]])
    x0 = rng.normal(size=(3, 2))
    times = _simulate.sample_times(rng, 3, 25, (0.0, 10.0), irregular=True)
    solved = _simulate.integrate_ode(lambda x: x @ matrix.T, x0, times)
    assert_allclose(solved, _simulate.linear_flow(matrix, x0, times), atol=1e-9)


@pytest.mark.parametrize(
    "function, key",
    [
        (make_damped_oscillator, None),
        (make_mass_spring, "energy"),
        (make_pendulum, "energy"),
        (make_double_pendulum, "energy"),
        (make_two_body, "energy"),
        (make_lotka_volterra, "invariant"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_conserved_quantities_stay_constant_over_the_default_span(function, key):
    truth = function(n_series=4, return_truth=True, random_state=6)[1]
    if key is None:  # damped: the energy must fall instead
        assert np.all(np.diff(truth.energy, axis=1) < 0)
        return
    quantity = truth[key]
    drift = np.abs(quantity - quantity[:, :1]).max(axis=1) / np.abs(quantity[:, 0])
    assert drift.max() < 1e-6
    assert np.ptp(quantity[:, 0]) > 0  # series sit on different levels


# Hamiltonians written independently of the package: H(q, p) for states (..., n_vars).
def _h_mass_spring(x, stiffness=1.0, mass=1.0):
    return stiffness * x[..., 0] ** 2 / 2 + x[..., 1] ** 2 / (2 * mass)


def _h_pendulum(x, mass=1.0, length=1.0, gravity=9.81):
    return x[..., 1] ** 2 / (2 * mass * length**2) + mass * gravity * length * (1 - np.cos(x[..., 0]))


def _h_double_pendulum(x, mass1=1.0, mass2=1.0, length1=1.0, length2=1.0, gravity=9.81):
    q1, q2, p = x[..., 0], x[..., 1], x[..., 2:]
    off_diagonal = mass2 * length1 * length2 * np.cos(q1 - q2)
    inertia = np.stack(
        [
            np.stack([np.full_like(q1, (mass1 + mass2) * length1**2), off_diagonal], axis=-1),
            np.stack([off_diagonal, np.full_like(q1, mass2 * length2**2)], axis=-1),
        ],
        axis=-2,
    )
    velocity = np.linalg.solve(inertia, p[..., None])[..., 0]
    kinetic = 0.5 * (p * velocity).sum(axis=-1)
    return kinetic - (mass1 + mass2) * gravity * length1 * np.cos(q1) - mass2 * gravity * length2 * np.cos(q2)


def _h_two_body(x, mass=1.0, gravitational_constant=1.0):
    r1, r2, p = x[..., 0:2], x[..., 2:4], x[..., 4:]
    return (p**2).sum(axis=-1) / (2 * mass) - gravitational_constant * mass**2 / np.linalg.norm(r2 - r1, axis=-1)


@pytest.mark.parametrize(
    "function, hamiltonian, parameters",
    [
        (make_mass_spring, _h_mass_spring, {"stiffness": 2.0, "mass": 0.5}),
        (make_pendulum, _h_pendulum, {"mass": 2.0, "length": 0.5, "gravity": 3.0}),
        (make_double_pendulum, _h_double_pendulum, {"mass1": 1.0, "mass2": 2.0, "length1": 1.5, "length2": 0.7}),
        (make_two_body, _h_two_body, {"mass": 1.5, "gravitational_constant": 2.0}),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_vector_fields_are_hamiltonian_for_the_documented_energy(function, hamiltonian, parameters):
    truth = function(n_series=3, n_times=6, return_truth=True, random_state=9, **parameters)[1]
    states = truth.states.reshape(-1, truth.states.shape[-1])
    assert_allclose(truth.energy.ravel(), hamiltonian(states, **parameters), rtol=1e-12, atol=1e-12)
    half = states.shape[1] // 2
    step = 1e-6
    gradient = np.stack(
        [
            (hamiltonian(states + step * unit, **parameters) - hamiltonian(states - step * unit, **parameters))
            / (2 * step)
            for unit in np.eye(states.shape[1])
        ],
        axis=-1,
    )
    symplectic = np.concatenate([gradient[:, half:], -gradient[:, :half]], axis=1)
    derivatives = truth.derivatives.reshape(states.shape)
    assert_allclose(derivatives, symplectic, atol=1e-6 * np.abs(symplectic).max())


def test_lorenz_is_chaotic_but_bounded():
    truth = make_lorenz(n_series=4, n_times=2001, t_span=(0.0, 20.0), return_truth=True, random_state=0)[1]
    settled = truth.states[:, truth.times[0] > 2.0]
    # The attractor lies in |x| < 20, |y| < 28, 0 < z < 50.
    assert np.all(np.abs(settled[..., 0]) < 22) and np.all(np.abs(settled[..., 1]) < 30)
    assert np.all((settled[..., 2] > 0) & (settled[..., 2] < 52))
    # Irregular switching between the two lobes: x changes sign often, at different times per series.
    switches = np.diff(np.sign(settled[..., 0]), axis=1) != 0
    assert np.all(switches.sum(axis=1) >= 3)
    assert len({tuple(np.flatnonzero(row)[:3]) for row in switches}) == len(switches)
    # Sensitive dependence: a 1e-8 nudge of the initial state grows by orders of magnitude.
    lorenz = partial(_sim_dissipative.lorenz_field, sigma=10.0, rho=28.0, beta=8 / 3)
    nudged = _simulate.integrate_ode(lorenz, truth.states[:1, 0] + 1e-8, truth.times[:1])
    assert np.linalg.norm(nudged[0, -1] - truth.states[0, -1]) > 1e4 * np.sqrt(3) * 1e-8


def test_damped_oscillator_keeps_its_exact_solution():
    truth = make_damped_oscillator(n_series=3, n_times=30, return_truth=True, random_state=0)[1]
    q0, p0 = truth.states[:, 0, 0:1], truth.states[:, 0, 1:2]
    t = truth.times
    damping, frequency = 0.05, np.sqrt(1 - 0.05**2)  # c/(2m) and the damped angular frequency
    oscillation = q0 * np.cos(frequency * t) + (p0 + damping * q0) / frequency * np.sin(frequency * t)
    expected_q = np.exp(-damping * t) * oscillation
    assert_allclose(truth.states[..., 0], expected_q, atol=1e-12)
    assert_allclose(truth.eigenvalues.real, -damping)


def test_critically_damped_oscillator_is_exact_although_its_matrix_is_defective():
    truth = make_damped_oscillator(n_series=3, n_times=30, damping=2.0, irregular=True, return_truth=True,
                                   random_state=0)[1]
    q0, p0, t = truth.states[:, :1, 0], truth.states[:, :1, 1], truth.times
    assert_allclose(truth.states[..., 0], (q0 + (p0 + q0) * t) * np.exp(-t), atol=1e-12)


@pytest.mark.parametrize("module", [_simulate, _physical, _sim_dissipative, _stochastic, _benchmarks, _forced])
def test_docstring_examples_run(module):
    results = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0
    assert results.failed == 0
