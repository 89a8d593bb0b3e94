"""Biological, dissipative and chaotic ODE systems: Lotka–Volterra, Van der Pol, FitzHugh–Nagumo, Lorenz."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ._simulate import Sampling, System, check_finite, check_nonnegative, check_positive, simulate


# ------------------------------------------------------------ Lotka-Volterra
def _lotka_volterra_field(x: np.ndarray, *, alpha: float, beta: float, gamma: float, delta: float) -> np.ndarray:
    prey, predator = x[..., 0], x[..., 1]
    return np.stack([alpha * prey - beta * prey * predator, delta * prey * predator - gamma * predator], axis=-1)


def _lotka_volterra_invariant(x: np.ndarray, *, alpha: float, beta: float, gamma: float, delta: float) -> np.ndarray:
    prey, predator = x[..., 0], x[..., 1]
    return delta * prey - gamma * np.log(prey) + beta * predator - alpha * np.log(predator)


def make_lotka_volterra(
    n_series: int = 20,
    n_times: int = 100,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    alpha: float = 1.5,
    beta: float = 1.0,
    gamma: float = 3.0,
    delta: float = 1.0,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Lotka–Volterra predator–prey dynamics, integrated accurately.

    ``dx/dt = α x - β x y`` (prey), ``dy/dt = δ x y - γ y`` (predator).
    The defaults ``(α, β, γ, δ) = (1.5, 1, 3, 1)`` are the usual benchmark
    values (e.g. the SciML documentation and universal-differential-equation
    studies); orbits are closed cycles around the equilibrium ``(γ/δ, α/β)``,
    each a level set of the first integral
    ``V = δ x - γ ln x + β y - α ln y``. Initial prey densities are
    ``U(1, 4)`` and predator densities ``U(0.5, 2.5)`` (arbitrary
    population units).

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=100
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
        Observation window; every series starts at ``t_span[0]``.
    alpha : float, default=1.5
        Prey growth rate ``α``.
    beta : float, default=1.0
        Predation rate ``β``.
    gamma : float, default=3.0
        Predator death rate ``γ``.
    delta : float, default=1.0
        Predator growth per prey eaten ``δ``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN; every row keeps at least one value.
    return_truth : bool, default=False
        Also return the noise-free truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``prey``, ``predator``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 2),
        ``derivatives`` (same shape), ``invariant`` (the first integral
        ``V``, n_series × n_times), ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_lotka_volterra
    >>> make_lotka_volterra(n_series=2, n_times=5, random_state=0).columns.tolist()
    ['series_id', 'time', 'prey', 'predator']
    """
    check_positive(alpha=alpha, beta=beta, gamma=gamma, delta=delta)
    parameters = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
    system = System(
        names=("prey", "predator"),
        vector_field=partial(_lotka_volterra_field, **parameters),
        parameters=parameters,
        quantities={"invariant": partial(_lotka_volterra_invariant, **parameters)},
    )
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform([1.0, 0.5], [4.0, 2.5], size=(n, 2)),
        random_state=random_state,
        return_truth=return_truth,
    )


# -------------------------------------------------------------- Van der Pol
def _van_der_pol_field(x: np.ndarray, *, mu: float) -> np.ndarray:
    position, velocity = x[..., 0], x[..., 1]
    return np.stack([velocity, mu * (1 - position**2) * velocity - position], axis=-1)


def make_van_der_pol(
    n_series: int = 20,
    n_times: int = 100,
    *,
    t_span: tuple[float, float] = (0.0, 20.0),
    mu: float = 1.0,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Van der Pol oscillator, integrated accurately.

    ``dx/dt = y``, ``dy/dt = μ (1 - x²) y - x``: negative damping near the
    origin and positive damping far from it, so every series is drawn to
    one limit cycle (amplitude ≈ 2, period ≈ 6.66 at ``μ = 1``). Initial
    states are uniform on ``[-3, 3]²``.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=100
        Observations per series.
    t_span : (float, float), default=(0.0, 20.0)
        Observation window; every series starts at ``t_span[0]``.
    mu : float, default=1.0
        Nonlinear damping ``μ``; 0 gives the harmonic oscillator, large
        values relaxation oscillations (stiff: integration slows down).
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN; every row keeps at least one value.
    return_truth : bool, default=False
        Also return the noise-free truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``x`` (position), ``y`` (velocity).
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 2),
        ``derivatives`` (same shape), ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_van_der_pol
    >>> make_van_der_pol(n_series=2, n_times=5, random_state=0).shape
    (10, 4)
    """
    check_nonnegative(mu=mu)
    system = System(names=("x", "y"), vector_field=partial(_van_der_pol_field, mu=mu), parameters={"mu": mu})
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform(-3.0, 3.0, size=(n, 2)),
        random_state=random_state,
        return_truth=return_truth,
    )


# ---------------------------------------------------------- FitzHugh-Nagumo
def _fitzhugh_nagumo_field(x: np.ndarray, *, a: float, b: float, tau: float, current: float) -> np.ndarray:
    v, w = x[..., 0], x[..., 1]
    return np.stack([v - v**3 / 3 - w + current, (v + a - b * w) / tau], axis=-1)


def make_fitzhugh_nagumo(
    n_series: int = 20,
    n_times: int = 200,
    *,
    t_span: tuple[float, float] = (0.0, 100.0),
    a: float = 0.7,
    b: float = 0.8,
    tau: float = 12.5,
    current: float = 0.5,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """FitzHugh–Nagumo model of a spiking neuron, integrated accurately.

    ``dv/dt = v - v³/3 - w + I``, ``dw/dt = (v + a - b w) / τ``, with the
    membrane potential ``v`` and the recovery variable ``w`` (both
    dimensionless). The defaults ``a = 0.7``, ``b = 0.8``, ``τ = 12.5``
    (FitzHugh 1961) with external current ``I = 0.5`` put the system on a
    stable limit cycle: periodic spikes of period ≈ 39.5. Initial states are
    ``v ~ U(-2, 2)``, ``w ~ U(-1, 1.5)``.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=200
        Observations per series.
    t_span : (float, float), default=(0.0, 100.0)
        Observation window; every series starts at ``t_span[0]``.
    a : float, default=0.7
        Offset of the recovery nullcline.
    b : float, default=0.8
        Recovery self-damping.
    tau : float, default=12.5
        Time scale ``τ`` of the recovery variable.
    current : float, default=0.5
        External stimulus current ``I``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN; every row keeps at least one value.
    return_truth : bool, default=False
        Also return the noise-free truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``v``, ``w``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 2),
        ``derivatives`` (same shape), ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_fitzhugh_nagumo
    >>> make_fitzhugh_nagumo(n_series=2, n_times=5, random_state=0).shape
    (10, 4)
    """
    check_finite(a=a, current=current)
    check_nonnegative(b=b)
    check_positive(tau=tau)
    parameters = {"a": a, "b": b, "tau": tau, "current": current}
    system = System(
        names=("v", "w"), vector_field=partial(_fitzhugh_nagumo_field, **parameters), parameters=parameters
    )
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform([-2.0, -1.0], [2.0, 1.5], size=(n, 2)),
        random_state=random_state,
        return_truth=return_truth,
    )


# ------------------------------------------------------------------- Lorenz
def lorenz_field(x: np.ndarray, *, sigma: float, rho: float, beta: float) -> np.ndarray:
    """The Lorenz (1963) vector field on states (..., 3); also the drift of the stochastic Lorenz system."""
    u, v, w = x[..., 0], x[..., 1], x[..., 2]
    return np.stack([sigma * (v - u), u * (rho - w) - v, u * v - beta * w], axis=-1)


def make_lorenz(
    n_series: int = 20,
    n_times: int = 1001,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Lorenz (1963) system, integrated accurately.

    ``dx/dt = σ (y - x)``, ``dy/dt = x (ρ - z) - y``, ``dz/dt = x y - β z``
    with the classic chaotic parameters ``σ = 10``, ``ρ = 28``, ``β = 8/3``.
    Initial states are uniform on ``[-15, 15] × [-20, 20] × [5, 40]``, a box
    around the butterfly attractor, so series reach it quickly and then
    switch irregularly between its two lobes. Nearby states separate at the
    leading Lyapunov exponent (≈ 0.9 per time unit), so the integration
    error of order 1e-10 grows to about 1e-6 over the default span: the
    series are accurate solutions, but no solver reproduces them far beyond.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=1001
        Observations per series (a step of 0.01 on the default span).
    t_span : (float, float), default=(0.0, 10.0)
        Observation window; every series starts at ``t_span[0]``.
    sigma : float, default=10.0
        Prandtl number ``σ``.
    rho : float, default=28.0
        Rayleigh number ``ρ``.
    beta : float, default=8/3
        Geometric factor ``β``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN; every row keeps at least one value.
    return_truth : bool, default=False
        Also return the noise-free truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``x``, ``y``, ``z``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 3),
        ``derivatives`` (same shape), ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_lorenz
    >>> make_lorenz(n_series=2, n_times=5, t_span=(0.0, 1.0), random_state=0).shape
    (10, 5)
    """
    check_positive(sigma=sigma, rho=rho, beta=beta)
    parameters = {"sigma": sigma, "rho": rho, "beta": beta}
    system = System(names=("x", "y", "z"), vector_field=partial(lorenz_field, **parameters), parameters=parameters)
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform([-15.0, -20.0, 5.0], [15.0, 20.0, 40.0], size=(n, 3)),
        random_state=random_state,
        return_truth=return_truth,
    )
