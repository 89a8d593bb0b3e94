"""Symplectic methods in the registry, and the failures of solve_hamiltonian the user must see as dynlearn errors."""

from __future__ import annotations

import pytest
import torch

from dynlearn.exceptions import InputError, IntegrationError
from dynlearn.solvers import (
    ODE_METHODS,
    SYMPLECTIC_METHODS,
    available_methods,
    available_ode_methods,
    available_symplectic_methods,
    solve_hamiltonian,
    symplectic_method,
)

Q0 = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
P0 = torch.zeros(2, 1, dtype=torch.float64)
TIMES = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.2, 0.4]], dtype=torch.float64)


def _spring(q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return q


def _velocity(q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return p


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return q


# ------------------------------------------------------------------ registry
def test_symplectic_methods_are_registered_with_their_order():
    assert {name: info.order for name, info in SYMPLECTIC_METHODS.items()} == {
        "leapfrog": 2,
        "yoshida4": 4,
        "implicit_midpoint": 2,
    }
    for info in SYMPLECTIC_METHODS.values():
        assert info.backend == "symplectic" and not info.adaptive and not info.multistep


def test_available_methods_adds_symplectic_names_to_the_unchanged_ode_list():
    ode = available_ode_methods()
    assert not set(SYMPLECTIC_METHODS) & set(ode), "torchdiffeq names stay torchdiffeq's"
    assert not set(SYMPLECTIC_METHODS) & set(ODE_METHODS)
    assert available_methods() == ode + available_symplectic_methods()
    assert set(SYMPLECTIC_METHODS) <= set(available_methods())


@pytest.mark.parametrize(
    "alias, target", [("Verlet", "leapfrog"), ("stormer_verlet", "leapfrog"), ("YOSHIDA4", "yoshida4")]
)
def test_aliases_and_case_resolve_to_the_registered_name(alias, target):
    assert symplectic_method(alias).name == target


@pytest.mark.parametrize("name", available_symplectic_methods())
def test_every_advertised_symplectic_method_solves_an_oscillator(name):
    """A name that is listed but fails to integrate would break a grid search over methods."""
    q, p = solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method=name, step_size=0.01)
    torch.testing.assert_close(q[..., 0], Q0 * torch.cos(TIMES), rtol=0, atol=1e-4)
    torch.testing.assert_close(p[..., 0], -Q0 * torch.sin(TIMES), rtol=0, atol=1e-4)


# ------------------------------------------------------------------ methods
def test_unknown_method_is_an_input_error_listing_the_choices():
    with pytest.raises(InputError, match="method") as error:
        solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method="ruth3")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "ruth3" in message
    for name in SYMPLECTIC_METHODS:
        assert name in message


def test_an_ode_method_name_points_to_solve_ode():
    with pytest.raises(InputError, match="solve_ode"):
        solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method="rk4")


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_explicit_methods_refuse_a_non_separable_hamiltonian(method):
    with pytest.raises(InputError, match="separable") as error:
        solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method=method, separable=False)
    assert "implicit_midpoint" in str(error.value)


def test_implicit_midpoint_accepts_a_non_separable_hamiltonian():
    q, _ = solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method="implicit_midpoint", separable=False)
    assert q.shape == (2, 3, 1)


# ------------------------------------------------------------------ budgets
def test_a_solve_over_its_step_budget_fails_before_any_work():
    grad_q = _Counting()
    times = torch.tensor([[0.0, 100.0], [0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(IntegrationError, match="max_num_steps") as error:
        solve_hamiltonian(grad_q, _velocity, Q0, P0, times, step_size=1e-3)
    assert isinstance(error.value, RuntimeError)
    assert "100000 steps" in str(error.value)
    assert grad_q.calls == 0


def test_the_budget_counts_every_segment_times_its_substeps():
    """5 segments x 4 substeps = 20 steps: allowed at 20, refused at 19."""
    times = torch.linspace(0.0, 1.0, 6, dtype=torch.float64).expand(2, -1)
    solve_hamiltonian(_spring, _velocity, Q0, P0, times, step_size=0.05, max_num_steps=20)
    with pytest.raises(IntegrationError, match="20 steps"):
        solve_hamiltonian(_spring, _velocity, Q0, P0, times, step_size=0.05, max_num_steps=19)


def test_implicit_midpoint_that_cannot_converge_says_to_shorten_the_step():
    """Stiffness 1e4 at step 0.1: the fixed-point map expands by ~500 per iteration."""
    with pytest.raises(IntegrationError, match="step_size"):
        solve_hamiltonian(
            lambda q, p, t: 1e4 * q, _velocity, Q0, P0, TIMES, method="implicit_midpoint", step_size=0.1
        )


def test_implicit_midpoint_out_of_iterations_is_an_integration_error():
    with pytest.raises(IntegrationError, match="did not converge in 2 iterations"):
        solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, method="implicit_midpoint", implicit_max_iter=2)


def test_an_unstable_explicit_step_is_an_integration_error_not_nan():
    """Leapfrog on a unit oscillator is unstable for h > 2; 1000 steps of 3 overflow."""
    times = torch.tensor([[0.0, 3000.0], [0.0, 30.0]], dtype=torch.float64)
    with pytest.raises(IntegrationError, match="non-finite"):
        solve_hamiltonian(_spring, _velocity, Q0, P0, times, step_size=3.0)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    "q0, p0, times, culprit",
    [
        (Q0[:, 0], P0, TIMES, "q0"),
        (Q0, P0[:, 0], TIMES, "p0"),
        (Q0, torch.zeros(2, 2, dtype=torch.float64), TIMES, "p0"),
        (Q0, P0.float(), TIMES, "p0"),
        (Q0.long(), P0, TIMES, "q0"),
        (Q0, P0, TIMES[0], "times"),
        (Q0, P0, TIMES[:1], "times"),
        (Q0, P0, torch.tensor([[0.0, float("nan")], [0.0, 1.0]], dtype=torch.float64), "times"),
    ],
)
def test_wrong_shapes_are_input_errors_naming_the_argument(q0, p0, times, culprit):
    with pytest.raises(InputError, match=rf"^{culprit}: expected"):
        solve_hamiltonian(_spring, _velocity, q0, p0, times)


@pytest.mark.parametrize("which", ["grad_q", "grad_p"])
def test_a_gradient_of_the_wrong_shape_is_named(which):
    wrong = lambda q, p, t: q[:, 0]  # noqa: E731 - (batch,) instead of (batch, d)
    grads = {"grad_q": _spring, "grad_p": _velocity, which: wrong}
    with pytest.raises(InputError, match=rf"^{which}: expected .*\(batch=2, d=1\).*got shape \(2,\)"):
        solve_hamiltonian(grads["grad_q"], grads["grad_p"], Q0, P0, TIMES)


@pytest.mark.parametrize(
    "option, value",
    [
        ("step_size", 0.0),
        ("step_size", -0.1),
        ("step_size", float("inf")),
        ("max_num_steps", 0),
        ("implicit_tol", 0.0),
        ("implicit_max_iter", 0),
        ("separable", "yes"),
    ],
)
def test_bad_settings_are_input_errors_naming_them(option, value):
    with pytest.raises(InputError, match=rf"^{option}: expected"):
        solve_hamiltonian(_spring, _velocity, Q0, P0, TIMES, **{option: value})
