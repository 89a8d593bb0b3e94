"""The private parts of torchdiffeq, torchsde and scikit-learn that dynlearn builds on still behave as it expects.

None of these names is public API, so a release may change them without notice; pyproject.toml bounds each
package above for that reason (ARCHITECTURE.md, "Dependencies on private internals"). Each failure names the
internal, the installed version, and the dynlearn file to adapt before a bound is lifted.
"""

from __future__ import annotations

import inspect
import os
import warnings
from importlib.metadata import version
from numbers import Integral, Real

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

from dynlearn.solvers import _ode, _registry, _sde


def _changed(package: str, internal: str, files: str, found: object) -> str:
    installed = version(package)
    return (
        f"{package} {installed}: {internal} is no longer what {files} relies on (found: {found}). "
        f"Pin {package}<{installed} in pyproject.toml, or adapt {files} to this version and then raise "
        "the upper bound there."
    )


# ---------------------------------------------------------------- torchdiffeq
ODE_FILE = "dynlearn/solvers/_ode.py"
REGISTRY_FILE = "dynlearn/solvers/_registry.py"
# One-step adaptive methods _odeint_stacked drives step by step (solve_ode_irregular's shifted path among them).
RK_METHODS = sorted(name for name, info in _registry.ODE_METHODS.items() if info.adaptive and not info.multistep)


def test_torchdiffeq_private_modules_import():
    # _ode.py falls back to plain odeint when these imports fail, which silently drops the stacked outputs
    # and the shifted autonomous solve: a failed import must show up here instead.
    try:
        from torchdiffeq._impl.odeint import SOLVERS, _check_inputs  # noqa: F401
        from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver  # noqa: F401
        from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver  # noqa: F401
    except ImportError as error:
        pytest.fail(_changed("torchdiffeq", "the torchdiffeq._impl module layout", f"{ODE_FILE} and {REGISTRY_FILE}",
                             error))  # fmt: skip
    assert _ode._TORCHDIFFEQ_SOLVERS is SOLVERS, _changed("torchdiffeq", "SOLVERS", ODE_FILE, "a different table")


def test_torchdiffeq_solver_table_has_every_method_dynlearn_describes():
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

    missing = sorted(set(_registry._KNOWN) - set(SOLVERS))
    assert not missing, _changed("torchdiffeq", "SOLVERS (method name -> solver class)", REGISTRY_FILE,
                                 f"no {missing}")  # fmt: skip
    for name, (adaptive, _, _) in _registry._KNOWN.items():
        assert issubclass(SOLVERS[name], AdaptiveStepsizeODESolver) == adaptive, _changed(
            "torchdiffeq", f"the base class of SOLVERS[{name!r}]", REGISTRY_FILE, SOLVERS[name].__mro__
        )
    for name in RK_METHODS:
        assert issubclass(SOLVERS[name], RKAdaptiveStepsizeODESolver), _changed(
            "torchdiffeq", f"SOLVERS[{name!r}] as an RKAdaptiveStepsizeODESolver", ODE_FILE, SOLVERS[name].__mro__
        )


def test_torchdiffeq_check_inputs_takes_and_returns_what_odeint_stacked_unpacks():
    from torchdiffeq._impl.odeint import SOLVERS, _check_inputs

    internal = "_check_inputs (its arguments and its 10 return values)"
    parameters = list(inspect.signature(_check_inputs).parameters)
    expected = ["func", "y0", "t", "rtol", "atol", "method", "options", "event_fn", "SOLVERS"]
    assert parameters == expected, _changed("torchdiffeq", internal, ODE_FILE, parameters)
    y0, t = torch.ones(2, 1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = _check_inputs(lambda t, y: -y, y0, t, 1e-6, 1e-8, "dopri5", {"max_num_steps": 10}, None, SOLVERS)
    assert isinstance(out, tuple) and len(out) == 10, _changed("torchdiffeq", internal, ODE_FILE, type(out))
    shapes, _, y0_out, t_out, _, _, method, options, _, _ = out
    assert shapes is None and method == "dopri5" and options["max_num_steps"] == 10, _changed(
        "torchdiffeq", internal, ODE_FILE, (shapes, method, options)
    )
    assert torch.equal(y0_out, y0) and torch.equal(t_out, t), _changed("torchdiffeq", internal, ODE_FILE, t_out)


@pytest.mark.parametrize("method", RK_METHODS)
def test_torchdiffeq_rk_stepping_api(method):
    from torchdiffeq._impl.odeint import SOLVERS, _check_inputs

    # Built as _odeint_stacked builds it: from _check_inputs' normalised arguments.
    y0, t = torch.ones(3, 2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    _, func, y0, t, rtol, atol, _, options, _, _ = _check_inputs(
        lambda t, y: -y, y0, t, 1e-6, 1e-8, method, {"max_num_steps": 50}, None, SOLVERS
    )
    solver = SOLVERS[method](func=func, y0=y0, rtol=rtol, atol=atol, **options)
    for name in ("_before_integrate", "_adaptive_step", "integrate", "y0", "dtype", "max_num_steps"):
        assert hasattr(solver, name), _changed("torchdiffeq", f"{type(solver).__name__}.{name}", ODE_FILE, "missing")
    solver._before_integrate(t.to(solver.dtype))
    state = solver._adaptive_step(solver.rk_state)
    internal = f"{type(solver).__name__}.rk_state (t0, t1 and five interp_coeff tensors)"
    assert {"t0", "t1", "interp_coeff"} <= set(getattr(state, "_fields", ())), _changed(
        "torchdiffeq", internal, ODE_FILE, getattr(state, "_fields", type(state))
    )
    assert float(state.t1) > float(state.t0) == 0.0, _changed("torchdiffeq", internal, ODE_FILE, (state.t0, state.t1))
    assert len(state.interp_coeff) == 5 and state.interp_coeff[0].shape == y0.shape, _changed(
        "torchdiffeq", internal, ODE_FILE, [tuple(c.shape) for c in state.interp_coeff]
    )


@pytest.mark.parametrize("method", RK_METHODS)
def test_stacked_outputs_match_torchdiffeq_odeint(method):
    # _odeint_stacked re-creates odeint's loop and its quartic interpolant: same steps, same states.
    from torchdiffeq import odeint

    matrix = torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=torch.float64)

    def field(t, y):
        return y @ matrix.T

    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 17, dtype=torch.float64)
    kwargs = dict(rtol=1e-5, atol=1e-7, method=method)
    expected = odeint(field, y0, t, options={}, **kwargs)
    got = _ode._odeint_stacked(field, y0, t, options={}, **kwargs)
    difference = float((got - expected).abs().max())
    assert difference < 1e-10, _changed(
        "torchdiffeq", f"the adaptive stepping or interpolation of {method}", f"{ODE_FILE} (_odeint_stacked)",
        f"max difference to odeint {difference:.2e}",
    )  # fmt: skip


def test_torchdiffeq_accepts_the_options_dynlearn_sets():
    # Unknown options only warn in torchdiffeq, so a renamed option would be silently ignored.
    from torchdiffeq import odeint

    y0, t = torch.ones(1, 1, dtype=torch.float64), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    grid = _ode._integer_aligned_grid(2)
    cases = {
        "dopri5": {"jump_t": t[1:2], "step_t": t[2:], "max_num_steps": 100},
        "rk4": {"grid_constructor": grid, "perturb": True},
        "explicit_adams": {"max_order": 5, "step_size": 0.1},
    }
    for method, options in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                odeint(lambda t, y: -y, y0, t, method=method, options=options)
            except Warning as warning:
                pytest.fail(_changed("torchdiffeq", f"the options of {method} ({sorted(options)})", ODE_FILE, warning))


def test_torchdiffeq_signals_a_step_limit_with_assertion_error():
    # _integrate maps AssertionError to IntegrationError; another exception type would escape unmapped.
    from torchdiffeq import odeint

    y0, t = torch.ones(1, 1, dtype=torch.float64), torch.tensor([0.0, 100.0], dtype=torch.float64)
    try:
        odeint(lambda t, y: -50 * y, y0, t, rtol=1e-10, atol=1e-12, method="dopri5", options={"max_num_steps": 3})
    except AssertionError:
        return
    except Exception as error:  # noqa: BLE001 - any other type is the change this test reports
        pytest.fail(_changed("torchdiffeq", "the exception for max_num_steps", f"{ODE_FILE} (_integrate)", error))
    pytest.fail(_changed("torchdiffeq", "max_num_steps", f"{ODE_FILE} (_integrate)", "no error past the limit"))


# ------------------------------------------------------------------- torchsde
SDE_FILE = "dynlearn/solvers/_sde.py"


@pytest.mark.parametrize("name", sorted(_sde.SDE_METHODS))
def test_torchsde_method_classes_match_dynlearns_table(name):
    # SDE_METHODS is transcribed from torchsde 0.2's method classes; they decide what sdeint accepts.
    from torchsde._core.methods import select

    info = _sde.SDE_METHODS[name]
    for sde_type in info.sde_types:
        try:
            cls = select(method=name, sde_type=sde_type)
        except ValueError as error:
            pytest.fail(_changed("torchsde", f"the method {name!r}", f"{SDE_FILE} (SDE_METHODS)", error))
        internal = f"{cls.__name__} ({name!r}, {sde_type})"
        found = (cls.sde_type, sorted(cls.noise_types), cls.weak_order, cls.levy_area_approximations)
        assert cls.sde_type == sde_type, _changed("torchsde", internal, f"{SDE_FILE} (SDE_METHODS)", found)
        assert set(cls.noise_types) == set(info.noise_types), _changed("torchsde", internal, SDE_FILE, found)
        assert cls.weak_order == info.weak_order, _changed("torchsde", internal, SDE_FILE, found)
        assert info.levy_area in cls.levy_area_approximations, _changed("torchsde", internal, SDE_FILE, found)
        if isinstance(getattr(cls, "strong_order", None), float):  # others set it per noise type when built
            assert cls.strong_order == info.strong_order, _changed("torchsde", internal, SDE_FILE, cls.strong_order)


def test_torchsde_euler_steps_and_logqp_are_what_the_written_out_solve_mirrors():
    # _euler.py transcribes torchsde's fixed-step clock (steps of dt cut at ts[-1], outputs interpolated), its
    # Euler step and its logqp column (|(f - h) / g|^2 / 2 with a floor on |g|); the same Brownian motion must
    # give the same numbers.
    from torchsde import BrownianInterval, sdeint

    from dynlearn.solvers import solve_sde

    class Posterior(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return torch.sin(y) - t

        def h(self, t, y):
            return -y

        def g(self, t, y):
            return 0.5 + 0.1 * torch.cos(y)

    y0 = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(4, 2)
    ts = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    bm = {"t0": 0.0, "t1": 1.0, "size": (4, 3), "dtype": torch.float64, "entropy": 5}
    ours = solve_sde(Posterior(), y0, ts, dt=0.07, bm=BrownianInterval(**bm), logqp=True)
    theirs = sdeint(Posterior(), y0, ts, bm=BrownianInterval(**bm), method="euler", dt=0.07, logqp=True)
    for name, a, b in zip(("states", "logqp increments"), ours, theirs):
        gap = float((a - b).abs().max())
        assert gap < 1e-12, _changed("torchsde", f"sdeint(method='euler', logqp=True)'s {name}",
                                     "dynlearn/solvers/_euler.py", f"a difference of {gap:.3g}")  # fmt: skip


# --------------------------------------------------------------- scikit-learn
COMPAT_FILE = "dynlearn/_compat.py (and the estimators' _parameter_constraints tables)"


def test_sklearn_private_names_import():
    try:
        from sklearn.utils._available_if import available_if  # noqa: F401
        from sklearn.utils._param_validation import (  # noqa: F401
            Interval,
            InvalidParameterError,
            StrOptions,
            validate_parameter_constraints,
        )
    except ImportError as error:
        pytest.fail(_changed("scikit-learn", "sklearn.utils._param_validation / _available_if", COMPAT_FILE, error))


def test_interval_and_str_options_accept_what_the_constraint_tables_mean():
    from dynlearn._compat import Interval, StrOptions

    cases = [
        (Interval(Integral, 1, None, closed="left"), [1, 7], [0, 1.5, "1"]),
        (Interval(Real, 0, None, closed="neither"), [1e-9, 3], [0.0, -1]),
        (Interval(Real, 0, 1, closed="right"), [1.0, 0.5], [0.0, 1.1]),
        (Interval(Real, 0, 1, closed="left"), [0.0, 0.5], [1.0]),
        (StrOptions({"auto", "learned"}), ["auto"], ["other", 1]),
    ]
    for constraint, good, bad in cases:
        for value in good:
            assert constraint.is_satisfied_by(value), _changed("scikit-learn", repr(constraint), COMPAT_FILE, value)
        for value in bad:
            assert not constraint.is_satisfied_by(value), _changed("scikit-learn", repr(constraint), COMPAT_FILE,
                                                                  value)  # fmt: skip


def _constraints():
    from dynlearn._compat import Interval, StrOptions
    from dynlearn.training import Checkpoint

    # Every kind of constraint the estimators' tables use.
    return {
        "n": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "flag": ["boolean"],
        "data": ["array-like", None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "checkpoint": [str, os.PathLike, Checkpoint, None],
        "callbacks": [list, tuple, None],
    }


def test_validate_parameter_constraints_accepts_and_refuses_like_dynlearn_expects():
    from dynlearn._compat import InvalidParameterError, validate_parameter_constraints

    internal = "validate_parameter_constraints"
    good = {"n": "auto", "flag": True, "data": np.zeros(2), "random_state": np.random.RandomState(0), "verbose": 1,
            "checkpoint": "ckpt", "callbacks": []}  # fmt: skip
    try:
        validate_parameter_constraints(_constraints(), good, caller_name="Model")
    except Exception as error:  # noqa: BLE001 - any refusal of valid values is the change reported
        pytest.fail(_changed("scikit-learn", internal, COMPAT_FILE, error))
    bad = {"n": 0, "flag": "yes", "random_state": "x", "checkpoint": 3, "callbacks": {}}
    for name, value in bad.items():
        with pytest.raises(InvalidParameterError) as caught:
            validate_parameter_constraints(_constraints(), {**good, name: value}, caller_name="Model")
        message = str(caught.value)
        # dynlearn documents (and its tests match) this one message shape; errors are ValueErrors to callers.
        assert message.startswith(f"The '{name}' parameter of Model must be") and "Got" in message, _changed(
            "scikit-learn", f"{internal}'s message", COMPAT_FILE, message
        )
        assert isinstance(caught.value, ValueError), _changed("scikit-learn", "InvalidParameterError", COMPAT_FILE,
                                                              type(caught.value).__mro__)  # fmt: skip


def test_base_estimator_validate_params_reads_parameter_constraints():
    from dynlearn._compat import Interval, InvalidParameterError

    class Model(BaseEstimator):
        _parameter_constraints = {"size": [Interval(Integral, 1, None, closed="left")]}

        def __init__(self, size=1):
            self.size = size

    internal = "BaseEstimator._validate_params"
    files = "dynlearn/estimators/_base.py and dynlearn/preprocessing/_scaler.py"
    assert hasattr(Model(), "_validate_params"), _changed("scikit-learn", internal, files, "missing")
    Model(size=2)._validate_params()
    with pytest.raises(InvalidParameterError, match="'size' parameter of Model"):
        Model(size=0)._validate_params()


def test_available_if_hides_a_method_its_check_refuses():
    from dynlearn._compat import available_if

    class Model:
        def __init__(self, offers):
            self.offers = offers

        @available_if(lambda self: self.offers)
        def extra(self):
            return "called"

    files = "dynlearn/_auto.py and dynlearn/estimators/_intervals.py"
    assert Model(True).extra() == "called", _changed("scikit-learn", "available_if", files, "method not callable")
    assert not hasattr(Model(False), "extra"), _changed("scikit-learn", "available_if", files,
                                                        "hasattr is True when the check is False")  # fmt: skip
