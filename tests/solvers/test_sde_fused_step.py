"""A latent SDE's Euler–Maruyama solve as one autograd node (dynlearn.solvers._euler_fused) against step by step."""

from __future__ import annotations

import pytest
import torch

from dynlearn import LatentSDE
from dynlearn.datasets import make_forced_oscillator, make_ou_process
from dynlearn.estimators._latent_sde import _LatentDynamics
from dynlearn.solvers import ControlPath, PosteriorLayers, SolverStats, _euler, _euler_fused, solve_sde

ACTIVATIONS = ["tanh", "relu", "softplus", "elu"]
D, CONTEXT, DT = 3, 5, 0.3


def _dynamics(
    activation: str = "tanh", hidden: tuple[int, ...] = (8, 7), n_series: int = 6, seed: int = 0, repeats: int = 1,
    n_inputs: int = 0, interpolation: str = "previous", dtype: torch.dtype = torch.float64,
):
    """Dynamics conditioned on a random context (and ``n_inputs`` random input signals read by
    ``interpolation``), with the tensors a solve reads: (dynamics, z0, ts, context)."""
    torch.manual_seed(seed)
    dynamics = _LatentDynamics(D, CONTEXT, hidden, 4, activation, "ito", n_inputs).to(dtype)
    with torch.no_grad():  # make_mlp's shrunken last layers would leave the correction and so the KL nearly still
        dynamics.correction[-1].weight.mul_(10.0)
        dynamics.prior[-1].weight.mul_(10.0)
    generator = torch.Generator().manual_seed(seed + 1)
    width = 5
    context = torch.randn(n_series, width, CONTEXT, generator=generator, dtype=dtype, requires_grad=True)
    times = torch.sort(torch.rand(n_series, width, generator=generator, dtype=dtype) * 3.0, dim=1).values
    times[:, 0] = 0.0
    lengths = torch.randint(2, width + 1, (n_series,), generator=generator)
    control = None
    if n_inputs:  # knots of their own, between and beyond the observations, some met by a step start
        knots = torch.sort(torch.rand(n_series, 8, generator=generator, dtype=dtype) * 3.0, dim=1).values
        knots[:, 0], knots[:, 3] = 0.0, 2 * DT
        values = torch.randn(n_series, 8, n_inputs, generator=generator, dtype=dtype)
        lead = (torch.full((n_series,), 0.5, dtype=dtype), torch.randn(n_series, n_inputs, dtype=dtype))
        control = ControlPath(knots, values, interpolation, lead)
    dynamics.condition(context, times, lengths, 1e-3 * DT, repeats=repeats, control=control)
    z0 = torch.randn(n_series * repeats, D, generator=generator, dtype=dtype, requires_grad=True)
    return dynamics, z0, torch.unique(times), context


def _solve(dynamics, z0, ts, context, fused: bool, create_graph: bool = False, stats: SolverStats | None = None):
    """Paths, KL increments, and the gradients of a loss of both w.r.t. z0, the context and every parameter."""
    if not fused:
        dynamics.posterior_layers = lambda: None
    try:
        ys, kl = solve_sde(dynamics, z0, ts, method="euler", dt=DT, seed=3, logqp=True, stats=stats)
    finally:
        dynamics.__dict__.pop("posterior_layers", None)
    loss = (ys**2).sum() + (kl * torch.arange(1.0, kl.shape[0] + 1, dtype=kl.dtype)[:, None]).sum()
    inputs = [z0, context, *dynamics.parameters()]
    grads = torch.autograd.grad(loss, inputs, create_graph=create_graph)
    # The fused solve runs its steps in inference mode; what it hands out must be ordinary tensors.
    assert not any(t.is_inference() for t in (ys, kl, *grads))
    return ys, kl, grads


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> bool:
    a, b = a.detach(), b.detach()
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


def _same(first, second) -> bool:
    ys, kl, grads = first
    ys2, kl2, grads2 = second
    return _close(ys, ys2) and _close(kl, kl2) and all(_close(a, b) for a, b in zip(grads, grads2))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(8, 7), ()])
def test_fused_solve_matches_step_by_step(activation, hidden):
    dynamics, z0, ts, context = _dynamics(activation, hidden)
    assert dynamics.posterior_layers() is not None
    fused, plain = _solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False)
    assert fused[0].shape == (len(ts), len(z0), D) and fused[1].shape == (len(ts) - 1, len(z0))
    assert float(fused[1].detach().abs().max()) > 1e-3  # the KL term is exercised
    assert _same(fused, plain)


@pytest.mark.parametrize("interpolation", ["previous", "linear", "cubic"])
@pytest.mark.parametrize(("activation", "hidden"), [("tanh", (8, 7)), ("softplus", ()), ("relu", (6,))])
def test_driven_fused_solve_matches_step_by_step(interpolation, activation, hidden):
    dynamics, z0, ts, context = _dynamics(activation, hidden, n_inputs=2, interpolation=interpolation)
    layers = dynamics.posterior_layers()
    assert layers is not None and layers.input_diffusion is dynamics.diffusion.wu
    fused, plain = _solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False)
    assert float(fused[1].detach().abs().max()) > 1e-3
    assert float(fused[2][-1].abs().max()) > 1e-3  # the inputs' diffusion weights have a gradient to compare
    assert _same(fused, plain)


def test_driven_large_layers_and_repeated_series():
    dynamics, z0, ts, context = _dynamics("tanh", (150,), n_series=120, n_inputs=2, interpolation="linear")
    assert 120 * (150 + D + 2) > _euler_fused._ACCUMULATE_ABOVE
    assert _same(_solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False))
    dynamics, z0, ts, context = _dynamics("elu", n_inputs=3, interpolation="cubic", repeats=3)
    assert _same(_solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False))


def test_driven_wrong_terms_are_caught():
    from dataclasses import replace

    dynamics, z0, ts, context = _dynamics("tanh", n_inputs=2, interpolation="linear")
    plain = _solve(dynamics, z0, ts, context, False)
    declared = type(dynamics).posterior_layers
    wrongs = {  # inputs read half a step late; a diffusion that ignores them
        "late": lambda: replace(declared(dynamics), inputs=lambda s: declared(dynamics).inputs(s + DT / 2)),
        "no diffusion": lambda: replace(declared(dynamics), input_diffusion=torch.zeros_like(dynamics.diffusion.wu)),
    }
    for wrong in wrongs.values():
        dynamics.posterior_layers = wrong
        ys, kl = solve_sde(dynamics, z0, ts, method="euler", dt=DT, seed=3, logqp=True)
        del dynamics.posterior_layers
        assert not _close(ys, plain[0]) and not _close(kl, plain[1])


def test_inputs_with_gradients_step_by_step():
    dynamics, _z0, _ts, _context = _dynamics("tanh", n_inputs=2, interpolation="linear")
    knots, values = dynamics._control.times, torch.randn(6, 8, 2, dtype=torch.float64, requires_grad=True)
    dynamics._control = ControlPath(knots, values, "linear")
    assert dynamics.posterior_layers() is None


def test_large_layers_accumulate_their_gradients_step_by_step():
    dynamics, z0, ts, context = _dynamics("tanh", (150,), n_series=120)
    assert 120 * (150 + D) > _euler_fused._ACCUMULATE_ABOVE  # the other way of summing the weight gradients
    assert _same(_solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False))


@pytest.mark.parametrize("driven", [{}, {"n_inputs": 2, "interpolation": "linear"}], ids=["undriven", "driven"])
def test_a_float32_solve_runs_tanh_layers_as_sigmoids_to_the_tanh_steps_rounding(monkeypatch, driven):
    """float32: the prior's, the correction's and the diffusion's tanh layers run as rescaled sigmoids (a sigmoid
    costs a fraction of a tanh on CPU); the paths, KL and gradients are the tanh steps' to float32 rounding."""
    calls = []
    rescaled = PosteriorLayers.rescaled
    monkeypatch.setattr(PosteriorLayers, "rescaled", lambda self: calls.append(self) or rescaled(self))
    dynamics, z0, ts, context = _dynamics("tanh", (8, 7), dtype=torch.float32, **driven)
    fused, plain = _solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False)
    assert len(calls) == 1  # in the fused solve only
    run = rescaled(calls[0])
    assert run.prior.activations == run.correction.activations == ("sigmoid", "sigmoid") and run.activation == "sigmoid"
    assert float(fused[1].detach().abs().max()) > 1e-3
    for ours, theirs in zip([fused[0], fused[1], *fused[2]], [plain[0], plain[1], *plain[2]]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * max(1.0, float(theirs.detach().abs().max())))
    # float64 keeps tanh: no rescaling.
    calls.clear()
    _solve(*_dynamics("tanh", (8, 7), **driven), True)
    assert calls == []


def test_repeated_series_read_their_own_context_rows():
    dynamics, z0, ts, context = _dynamics("tanh", repeats=3)
    assert _same(_solve(dynamics, z0, ts, context, True), _solve(dynamics, z0, ts, context, False))


def test_a_wrong_term_is_caught(monkeypatch):
    dynamics, z0, ts, context = _dynamics("tanh")
    plain = _solve(dynamics, z0, ts, context, False)
    declared = type(dynamics).posterior_layers
    from dataclasses import replace

    # A diffusion floor other than the model's: the paths and KL differ.
    dynamics.posterior_layers = lambda: replace(declared(dynamics), floor=2e-3)
    wrong = solve_sde(dynamics, z0, ts, method="euler", dt=DT, seed=3, logqp=True)
    del dynamics.posterior_layers
    assert not _close(wrong[0], plain[0]) and not _close(wrong[1], plain[1])
    # An activation derivative off by a part in a million: only the gradients differ.
    backward = _euler_fused._activation_backward
    monkeypatch.setattr(_euler_fused, "_activation_backward", lambda *a: backward(*a) * (1 + 1e-6))
    off = _solve(dynamics, z0, ts, context, True)
    assert _close(off[0], plain[0]) and _close(off[1], plain[1]) and not _same(off, plain)


@pytest.mark.parametrize("driven", [dict(), dict(n_inputs=2, interpolation="cubic")], ids=["undriven", "driven"])
def test_second_derivatives_match(driven):
    dynamics, z0, ts, context = _dynamics("softplus", (6,), **driven)
    results = []
    for fused in (True, False):
        _, _, grads = _solve(dynamics, z0, ts, context, fused, create_graph=True)
        inputs = [z0, context, *dynamics.parameters()]
        norm = sum((g**2).sum() for g in grads)
        results.append(torch.autograd.grad(norm, inputs, allow_unused=True, materialize_grads=True))
    assert all(_close(a, b) for a, b in zip(*results))


def test_drift_evaluations_are_counted_as_step_by_step():
    dynamics, z0, ts, context = _dynamics("tanh")
    counts = []
    for fused in (True, False):
        stats = SolverStats()
        _solve(dynamics, z0, ts, context, fused, stats=stats)
        counts.append(stats.nfe)
    assert counts[0] == counts[1] == len(_euler.step_grid(ts, DT).steps)


def test_configurations_without_layers_step_by_step():
    dynamics, _z0, _ts, _context = _dynamics("tanh")
    dynamics._forecast = True  # sampling: the prior after each series' last observation
    assert dynamics.posterior_layers() is None
    assert _dynamics("gelu")[0].posterior_layers() is None  # its derivative needs the layer's input
    assert _dynamics("silu")[0].posterior_layers() is None
    unconditioned = _LatentDynamics(D, CONTEXT, (4,), 4, "tanh", "ito")
    assert unconditioned.posterior_layers() is None
    with pytest.raises(ValueError, match="activation"):
        PosteriorLayers(*(None,) * 5, activation="gelu", floor=1e-3)


def test_renamed_functions_step_by_step():
    """A declaration describes f, g and h: a solve through other names calls them step by step."""
    dynamics, z0, ts, context = _dynamics("tanh")
    calls = []
    dynamics.drift = lambda t, z: calls.append(1) or dynamics.f(t, z)
    ys, kl = solve_sde(dynamics, z0, ts, method="euler", dt=DT, seed=3, logqp=True, names={"drift": "drift"})
    assert len(calls) >= len(_euler.step_grid(ts, DT).steps)  # every step (and the shape check) called it
    fused = _solve(dynamics, z0, ts, context, True)
    assert _close(ys, fused[0]) and _close(kl, fused[1])


def test_fit_history_is_the_same_fused_or_not(monkeypatch):
    frame = make_ou_process(n_series=8, n_times=12, random_state=0)

    def fit():
        model = LatentSDE(
            latent_dim=2,
            hidden_layer_sizes=(8,),
            max_epochs=2,
            batch_size=4,
            random_state=0,
            dtype="float64",
            n_threads=1,
        )
        return model.fit(frame).history_.to_frame()

    applied = []
    apply = _euler_fused.EulerPosterior.apply
    monkeypatch.setattr(_euler_fused.EulerPosterior, "apply", lambda *a: applied.append(1) or apply(*a))
    fused = fit()
    assert applied  # the fit took the fused path
    monkeypatch.setattr(_LatentDynamics, "posterior_layers", lambda self: None)
    plain = fit()
    for column in ("train_loss", "valid_loss"):
        assert fused[column].to_numpy() == pytest.approx(plain[column].to_numpy(), rel=1e-9)


def test_driven_fit_history_is_the_same_fused_or_not(monkeypatch):
    frame = make_forced_oscillator(n_series=6, n_times=16, t_span=(0.0, 6.0), noise=0.05, random_state=0)

    def fit():
        model = LatentSDE(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=2, batch_size=3, random_state=0,
                          dtype="float64", n_threads=1, covariates=["u"], covariate_interpolation="linear")
        return model.fit(frame).history_.to_frame()

    applied = []
    apply = _euler_fused.EulerPosterior.apply
    monkeypatch.setattr(_euler_fused.EulerPosterior, "apply",
                        lambda *a: applied.append(a[3] is not None) or apply(*a))  # fmt: skip
    fused = fit()
    assert applied and all(applied)  # the fit took the fused path, with its inputs
    taken = len(applied)
    monkeypatch.setattr(_LatentDynamics, "posterior_layers", lambda self: None)
    plain = fit()
    assert len(applied) == taken  # this one stepped one step at a time
    for column in ("train_loss", "valid_loss"):
        assert fused[column].to_numpy() == pytest.approx(plain[column].to_numpy(), rel=1e-9)
