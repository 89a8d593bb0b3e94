"""fixed_rollout and CompiledFunction: the compiled training path agrees with the eager one, and falls back cleanly.

Compiling with inductor takes tens of seconds per graph on a CPU, so one test
compiles for real (the smallest rollout, marked slow); the others replace
torch.compile by a stand-in that returns the function unchanged or raises.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from dynlearn.exceptions import InputError
from dynlearn.nn import MLPVectorField
from dynlearn.solvers import FIXED_STEP_METHODS, CompiledFunction, fixed_rollout, solve_ode_irregular


def _problem(seed: int = 0, batch: int = 5, n_times: int = 6):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = MLPVectorField(2, (8,)).double()
    y0 = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
    times = (0.2 + torch.rand(batch, n_times - 1, generator=generator, dtype=torch.float64)).cumsum(1)
    times = torch.cat([torch.zeros(batch, 1, dtype=torch.float64), times], dim=1)
    return field, y0, times


def _values_and_grads(run, field):
    field.zero_grad()
    out = run()
    (out**2).sum().backward()
    return out.detach(), [p.grad.clone() for p in field.parameters()]


@pytest.mark.parametrize("method", sorted(FIXED_STEP_METHODS))
def test_rollout_takes_the_steps_of_solve_ode_irregular(method):
    field, y0, times = _problem()
    rolled, rolled_grads = _values_and_grads(lambda: fixed_rollout(method, lambda y: field(None, y), y0, times), field)
    solved, solved_grads = _values_and_grads(
        lambda: solve_ode_irregular(field, y0, times, method=method, autonomous=True), field
    )
    torch.testing.assert_close(rolled, solved, rtol=1e-12, atol=1e-12)
    for a, b in zip(rolled_grads, solved_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_rollout_holds_a_repeated_time_and_steps_backwards():
    y0 = torch.ones(2, 1, dtype=torch.float64)
    times = torch.tensor([[0.0, 0.0, 1.0], [0.0, -0.5, -1.0]], dtype=torch.float64)
    out = fixed_rollout("rk4", lambda y: -y, y0, times)
    assert out[0, 1, 0].item() == 1.0
    # One rk4 step of dy/dt = -y keeps the Taylor terms of exp(-dt) up to dt^4.
    assert out[0, 2, 0].item() == pytest.approx(1 - 1 + 1 / 2 - 1 / 6 + 1 / 24, rel=1e-12)
    assert out[1, 2, 0].item() == pytest.approx((1 + 0.5 + 0.5**2 / 2 + 0.5**3 / 6 + 0.5**4 / 24) ** 2, rel=1e-12)


def test_rollout_refuses_an_adaptive_method_and_mismatched_times():
    with pytest.raises(InputError, match="method.*'dopri5'"):
        fixed_rollout("dopri5", lambda y: -y, torch.ones(1, 1), torch.zeros(1, 2))
    with pytest.raises(InputError, match="times"):
        fixed_rollout("rk4", lambda y: -y, torch.ones(2, 1), torch.zeros(3, 2))


def test_compile_that_raises_falls_back_with_a_warning_naming_the_reason(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Windows not yet supported for torch.compile")

    monkeypatch.setattr(torch, "compile", refuse)
    field, y0, times = _problem()
    compiled = CompiledFunction(lambda y0, t: fixed_rollout("rk4", lambda y: field(None, y), y0, t), what="a rollout")
    with pytest.warns(RuntimeWarning, match="could not compile a rollout.*Windows not yet supported"):
        out = compiled(y0, times)
    torch.testing.assert_close(out, fixed_rollout("rk4", lambda y: field(None, y), y0, times))
    assert compiled.fell_back and compiled.n_compiled == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per call
        compiled(y0, times)


def test_failure_in_the_compiled_backward_falls_back_before_the_callers_backward(monkeypatch):
    class _BackwardFails(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: lambda *a: _BackwardFails.apply(function(*a)))
    field, y0, times = _problem()
    compiled = CompiledFunction(
        lambda y0, t: fixed_rollout("euler", lambda y: field(None, y), y0, t), parameters=field.parameters
    )
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        out = compiled(y0, times)
    out.sum().backward()  # the eager result: its backward works
    assert all(p.grad is not None for p in field.parameters())


def test_an_error_of_the_function_itself_is_raised_not_hidden(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)

    def broken(x):
        raise ValueError("x: expected a positive step")

    compiled = CompiledFunction(broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="positive step"):
            compiled(torch.ones(1))
    assert not compiled.fell_back


def test_one_compile_per_signature(monkeypatch):
    calls = []

    def counting_compile(function, **kwargs):
        calls.append(kwargs)
        return function

    monkeypatch.setattr(torch, "compile", counting_compile)
    compiled = CompiledFunction(lambda x: 2 * x, mode="max-autotune-no-cudagraphs")
    for shape in [(3, 2), (3, 2), (4, 2), (3, 2)]:
        compiled(torch.ones(shape))
    with torch.no_grad():
        compiled(torch.ones(3, 2))
    assert compiled.n_compiled == 3
    assert calls == [{"dynamic": False, "mode": "max-autotune-no-cudagraphs"}] * 3


def test_unknown_mode_is_refused():
    with pytest.raises(InputError, match="mode"):
        CompiledFunction(lambda x: x, mode="fast")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_inductor_rollout_matches_eager_values_and_gradients():
    torch._dynamo.reset()
    field, y0, times = _problem(batch=3, n_times=2)  # one rk4 step: the smallest graph that has all four stages
    field.float()
    y0, times = y0.float(), times.float()

    def rollout(y0, t):
        return fixed_rollout("rk4", lambda y: field(None, y), y0, t)

    compiled = CompiledFunction(rollout, parameters=field.parameters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        fast, fast_grads = _values_and_grads(lambda: compiled(y0, times), field)
    if compiled.fell_back:
        pytest.skip(f"torch.compile is unavailable here: {caught[0].message if caught else compiled.fallback_reason}")
    slow, slow_grads = _values_and_grads(lambda: rollout(y0, times), field)
    assert compiled.n_compiled == 1
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
