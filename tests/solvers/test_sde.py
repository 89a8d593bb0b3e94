"""solve_sde / solve_sde_irregular: known laws, convergence, seeding, adjoint gradients, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchsde import BrownianInterval

from dynlearn.exceptions import InputError, IntegrationError
from dynlearn.solvers import SDE_METHODS, SolverStats, available_sde_methods, solve_sde, solve_sde_irregular

THETA, MU, SIGMA = 1.5, 0.5, 0.8


class OU(nn.Module):
    """dX = theta (mu - X) dt + sigma dW, diagonal Itô noise."""

    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return THETA * (MU - y)

    def g(self, t, y):
        return SIGMA * torch.ones_like(y)


class GBM(nn.Module):
    """dX = a X dt + b X dW: multiplicative noise, exact solution from the same Brownian path."""

    noise_type = "diagonal"

    def __init__(self, sde_type="ito", a=0.3, b=0.6):
        super().__init__()
        self.sde_type = sde_type
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def f(self, t, y):
        # The Stratonovich drift of the same process is (a - b²/2) X.
        shift = 0.5 * self.b**2 if self.sde_type == "stratonovich" else 0.0
        return (self.a - shift) * y

    def g(self, t, y):
        return self.b * y


def ou_moments(x0, h):
    decay = math.exp(-THETA * h)
    return MU + (x0 - MU) * decay, SIGMA**2 * (1 - decay**2) / (2 * THETA)


def test_ou_moments_match_the_exact_transition():
    x0, n = 2.0, 20_000
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    ys = solve_sde(OU(), torch.full((n, 1), x0, dtype=torch.float64), ts, method="euler", dt=0.01, seed=1)
    assert ys.shape == (3, n, 1)
    for k, h in ((1, 0.5), (2, 1.0)):
        mean, var = ou_moments(x0, h)
        # Standard error of the mean ~ sqrt(var / n) ~ 0.004; of the variance ~ var * sqrt(2 / n) ~ 1%.
        assert float(ys[k].mean()) == pytest.approx(mean, abs=0.02)
        assert float(ys[k].var()) == pytest.approx(var, rel=0.06)


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_every_ito_method_gets_the_ou_law(method):
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = solve_sde(OU(), torch.zeros(4000, 1, dtype=torch.float64), ts, method=method, dt=0.05, seed=3)
    mean, var = ou_moments(0.0, 1.0)
    assert float(ys[-1].mean()) == pytest.approx(mean, abs=0.04)
    assert float(ys[-1].var()) == pytest.approx(var, rel=0.12)


def _strong_error(method, sde_type, dt, n=400):
    sde = GBM(sde_type)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    from torchsde import BrownianInterval

    bm = BrownianInterval(0.0, 1.0, size=(n, 1), dtype=torch.float64, entropy=7,
                          levy_area_approximation="space-time")
    with torch.no_grad():
        ys = solve_sde(sde, y0, ts, method=method, dt=dt, bm=bm)
        w = bm(0.0, 1.0)
        exact = torch.exp((sde.a - 0.5 * sde.b**2) + sde.b * w)
    return float((ys[-1] - exact).abs().mean())


def test_strong_convergence_orders():
    """Halving dt cuts the pathwise error by 2^order: Euler-Maruyama 0.5, Milstein 1 (GBM, same paths)."""
    dts = [2.0**-4, 2.0**-6, 2.0**-8]
    for method, sde_type, order in (("euler", "ito", 0.5), ("milstein", "ito", 1.0), ("midpoint", "stratonovich", 1.0)):
        errors = [_strong_error(method, sde_type, dt) for dt in dts]
        slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
        assert order - 0.2 < slope < order + 0.35, (method, errors, slope)


def test_weak_error_of_euler_shrinks_with_dt():
    """E[X_1] of GBM is e^a; the Euler-Maruyama weak error is O(dt)."""
    n, ts = 40_000, torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = torch.ones(n, 1, dtype=torch.float64)
    with torch.no_grad():
        coarse = solve_sde(GBM(a=1.0, b=0.2), y0, ts, dt=0.5, seed=5)[-1].mean()
        fine = solve_sde(GBM(a=1.0, b=0.2), y0, ts, dt=0.05, seed=5)[-1].mean()
    exact = math.exp(1.0)
    # Euler with dt=0.5 gives E = (1 + 0.5)^2 = 2.25 (error 0.47); with dt=0.05, (1.05)^20 = 2.65.
    assert abs(float(coarse) - exact) > 0.35
    assert abs(float(fine) - exact) < 0.1


def test_same_seed_same_paths_and_global_rng_untouched():
    y0, ts = torch.zeros(5, 1), torch.linspace(0, 1, 4)
    state = torch.random.get_rng_state()
    a = solve_sde(OU(), y0, ts, dt=0.1, seed=11)
    b = solve_sde(OU(), y0, ts, dt=0.1, seed=11)
    c = solve_sde(OU(), y0, ts, dt=0.1, seed=12)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    d, e = solve_sde(OU(), y0, ts, dt=0.1, generator=g1), solve_sde(OU(), y0, ts, dt=0.1, generator=g2)
    assert torch.equal(a, b) and torch.equal(d, e)
    assert not torch.equal(a, c)
    assert torch.equal(state, torch.random.get_rng_state())


def test_adjoint_and_direct_gradients_agree():
    """Reversible Heun and its adjoint reconstruct the forward pass exactly: gradients agree closely."""
    ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    y0 = torch.full((64, 1), 1.0, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        sde = GBM("stratonovich")
        kwargs = dict(adjoint_method="adjoint_reversible_heun") if adjoint else {}
        ys = solve_sde(sde, y0, ts, method="reversible_heun", dt=2.0**-4, seed=2, adjoint=adjoint, **kwargs)
        (ys[-1] ** 2).mean().backward()
        grads.append(torch.stack([sde.a.grad, sde.b.grad]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-6), grads


def test_ito_adjoint_gradient_agrees_with_direct():
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    y0 = torch.ones(256, 1, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        sde = GBM("ito", b=0.3)
        # One Brownian path for both: the direct solve is written out and draws its own increments otherwise.
        bm = BrownianInterval(t0=0.0, t1=1.0, size=(256, 1), dtype=torch.float64, entropy=9, dt=2.0**-7)
        ys = solve_sde(sde, y0, ts, method="euler", dt=2.0**-7, bm=bm, adjoint=adjoint)
        ys[-1].mean().backward()
        grads.append(torch.stack([sde.a.grad, sde.b.grad]))
    # The Itô adjoint is a different discretisation of the same gradient: close, not identical.
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=0.02), grads


def test_logqp_is_the_kl_integrand():
    class Posterior(OU):
        def h(self, t, y):  # prior drift; f - h = 1 everywhere
            return self.f(t, y) - 1.0

    ts = torch.tensor([0.0, 0.5, 1.5])
    ys, log_ratio = solve_sde(Posterior(), torch.zeros(3, 1), ts, dt=0.25, seed=0, logqp=True)
    assert ys.shape == (3, 3, 1) and log_ratio.shape == (2, 3)
    # ∫ |1 / sigma|² / 2 dt over each gap.
    expected = torch.tensor([0.5, 1.0])[:, None] / (2 * SIGMA**2)
    assert torch.allclose(log_ratio, expected.expand(2, 3), rtol=1e-5)


def test_irregular_rows_follow_their_own_clocks():
    """Each row is reported at its own times; zero gaps hold the state; the law is the OU transition."""
    n = 6000
    times = torch.tensor([[0.0, 0.5, 1.0], [2.0, 2.0, 3.0]], dtype=torch.float64).repeat(n, 1)
    y0 = torch.full((2 * n, 1), 2.0, dtype=torch.float64)
    ys = solve_sde_irregular(OU(), y0, times, step_size=0.02, seed=4)
    assert ys.shape == (2 * n, 3, 1)
    first, second = ys[0::2], ys[1::2]
    assert torch.equal(second[:, 1], second[:, 0])
    for values, h in ((first[:, 2], 1.0), (first[:, 1], 0.5), (second[:, 2], 1.0)):
        mean, var = ou_moments(2.0, h)
        assert float(values.mean()) == pytest.approx(mean, abs=0.03)
        assert float(values.var()) == pytest.approx(var, rel=0.1)
    again = solve_sde_irregular(OU(), y0, times, step_size=0.02, seed=4)
    assert torch.equal(ys, again)


def test_irregular_logqp_and_adjoint_run():
    class Posterior(OU):
        def h(self, t, y):
            return self.f(t, y) - 1.0

    times = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.5, 0.5]])
    ys, ratio = solve_sde_irregular(Posterior(), torch.zeros(2, 1), times, step_size=0.25, seed=0, logqp=True)
    assert ys.shape == (2, 3, 1)
    assert torch.allclose(ratio, torch.tensor([[1.0, 2.0], [0.5, 0.0]]) / (2 * SIGMA**2), rtol=1e-5)

    sde = GBM("stratonovich")
    times = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 1.0]], dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        sde.zero_grad()
        ys = solve_sde_irregular(sde, torch.ones(2, 1, dtype=torch.float64), times, method="reversible_heun",
                                 step_size=0.125, seed=1, adjoint=adjoint,
                                 adjoint_method="adjoint_reversible_heun" if adjoint else None)
        ys.sum().backward()
        grads.append(torch.stack([sde.a.grad.clone(), sde.b.grad.clone()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-6), grads


def test_registry_lists_methods_and_their_properties():
    names = available_sde_methods()
    assert {"euler", "milstein", "srk", "reversible_heun", "midpoint"} <= set(names)
    assert "adjoint_reversible_heun" not in names
    assert SDE_METHODS["srk"].sde_types == ("ito",) and "general" not in SDE_METHODS["srk"].noise_types
    assert SDE_METHODS["reversible_heun"].sde_types == ("stratonovich",)


def test_stats_count_drift_evaluations():
    stats = SolverStats()
    solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), dt=0.1, seed=0, stats=stats)
    assert 10 <= stats.nfe_forward <= 12


# ------------------------------------------------------------------ errors
def test_method_that_does_not_fit_the_sde_fails_before_work():
    with pytest.raises(InputError, match="stratonovich"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), method="reversible_heun")
    with pytest.raises(InputError, match="one of"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), method="rk4")
    with pytest.raises(InputError, match="adjoint_method"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), method="adjoint_reversible_heun")


def test_bad_shapes_and_times_are_named():
    class Wrong(OU):
        def g(self, t, y):
            return torch.ones(y.shape[0], 3)

    with pytest.raises(InputError, match="diffusion"):
        solve_sde(Wrong(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(InputError, match="y0"):
        solve_sde(OU(), torch.zeros(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(InputError, match="increasing"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([1.0, 0.0]))
    with pytest.raises(InputError, match="noise_type"):
        solve_sde(object(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(InputError, match="dt"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), dt=-1.0)
    with pytest.raises(InputError, match="seed"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), seed=-3)
    with pytest.raises(InputError, match="decreasing"):
        solve_sde_irregular(OU(), torch.zeros(1, 1), torch.tensor([[1.0, 0.0]]))


def test_step_limit_and_blow_up_raise_integration_error():
    with pytest.raises(IntegrationError, match="max_num_steps"):
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 1.0]), dt=1e-4, max_num_steps=100)

    class Explodes(OU):
        def f(self, t, y):
            return y**3 + 1.0

    with pytest.raises(IntegrationError, match="non-finite"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solve_sde(Explodes(), torch.ones(2, 1), torch.tensor([0.0, 10.0]), dt=0.1, seed=0)
    with pytest.raises(IntegrationError, match="step limit"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns that adaptive Euler-Maruyama may not converge
        solve_sde(OU(), torch.zeros(2, 1), torch.tensor([0.0, 100.0]), dt=1e-3, adaptive=True, rtol=1e-12,
                  atol=1e-12, max_num_steps=50, seed=0)
