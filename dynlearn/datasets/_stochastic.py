"""Stochastic differential equations: Ornstein–Uhlenbeck, geometric Brownian motion, stochastic Lorenz.

The "noise-free" states of the truth are the latent SDE paths before
observation noise; ``derivatives`` is the drift at those states and
``diffusion`` the (diagonal) diffusion coefficient. OU and GBM are sampled
from their exact transition laws between each series' own times, so
irregular sampling costs no accuracy; the stochastic Lorenz system has no
closed-form transition and is integrated by Euler–Maruyama on a fine grid.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from ..exceptions import input_error
from ._sim_dissipative import lorenz_field
from ._simulate import Sampling, System, check_finite, check_positive, simulate

Transition = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def sample_exact_chain(
    rng: np.random.RandomState, x0: np.ndarray, times: np.ndarray, transition: Transition
) -> np.ndarray:
    """Sample a Markov process at each series' own times from its exact transition.

    ``transition(x, dt, z)`` maps the states (n_series, n_vars) at one
    observation, the gaps (n_series, 1) to the next and standard normal
    draws (n_series, n_vars) to the states at the next observation.
    """
    states = np.empty(times.shape + x0.shape[1:])
    states[:, 0] = x0
    for j in range(1, times.shape[1]):
        gap = (times[:, j] - times[:, j - 1])[:, None]
        states[:, j] = transition(states[:, j - 1], gap, rng.standard_normal(x0.shape))
    return states


def euler_maruyama(
    rng: np.random.RandomState,
    drift: Callable[[np.ndarray], np.ndarray],
    diffusion: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    times: np.ndarray,
    dt: float,
) -> np.ndarray:
    """Euler–Maruyama for a diagonal-noise Itô SDE, reported at each series' own times.

    Each series steps through the union of a fine even grid (step at most
    ``dt``) and its own observation times, so every observation is a state
    of the scheme rather than an interpolation, and all series advance
    together (one vectorised step per grid column).
    """
    n_series = times.shape[0]
    start, end = times[0, 0], times[:, -1].max()
    grid = np.linspace(start, end, max(int(np.ceil((end - start) / dt)), 1) + 1)
    merged = np.concatenate([np.broadcast_to(grid, (n_series, grid.size)), times], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    clock = np.take_along_axis(merged, order, axis=1)
    observation = order - grid.size  # index into the series' times, negative for grid points
    states = np.empty(times.shape + x0.shape[1:])
    x = x0.astype(float)
    rows = np.arange(n_series)
    for column in range(clock.shape[1]):
        if column > 0:
            step = (clock[:, column] - clock[:, column - 1])[:, None]
            shock = np.sqrt(step) * rng.standard_normal(x.shape)
            x = x + drift(x) * step + diffusion(x) * shock
        seen = observation[:, column] >= 0
        states[rows[seen], observation[seen, column]] = x[seen]
    return states


# ------------------------------------------------------ Ornstein-Uhlenbeck
def _ou_mean(x: np.ndarray, dt: np.ndarray, *, theta: float, mu: float) -> np.ndarray:
    return mu + (x - mu) * np.exp(-theta * dt)


def _ou_variance(x: np.ndarray, dt: np.ndarray, *, theta: float, sigma: float) -> np.ndarray:
    # -expm1 keeps 1 - exp(-2 θ dt) accurate for small gaps.
    return np.broadcast_to(-(sigma**2) / (2 * theta) * np.expm1(-2 * theta * dt), np.broadcast(x, dt).shape)


def make_ou_process(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 5.0),
    theta: float = 1.0,
    mu: float = 0.0,
    sigma: float = 0.5,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Ornstein–Uhlenbeck process, sampled exactly at arbitrary times.

    ``dX = θ (μ - X) dt + σ dW``. Between observations a gap ``Δ`` apart the
    transition is Gaussian, with mean ``μ + (X - μ) e^{-θΔ}`` and variance
    ``σ² (1 - e^{-2θΔ}) / (2θ)``; paths are drawn from it directly, so they
    are exact for any (irregular) times. The stationary law is
    ``N(μ, σ²/(2θ))``. Initial states are ``N(μ, 1)``, away from
    stationarity so the relaxation shows.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 5.0)
        Observation window; every series starts at ``t_span[0]``.
    theta : float, default=1.0
        Mean-reversion rate ``θ``.
    mu : float, default=0.0
        Long-run mean ``μ``.
    sigma : float, default=0.5
        Diffusion coefficient ``σ``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise, added on top of the process.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN (every series keeps at least one value).
    return_truth : bool, default=False
        Also return the truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``x``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (the latent paths,
        n_series × n_times × 1), ``derivatives`` (the drift there),
        ``diffusion`` (``σ`` there), ``times``, ``parameters``, and the exact
        transition moments as functions ``transition_mean(x, dt)`` and
        ``transition_variance(x, dt)``, plus ``stationary_mean`` and
        ``stationary_variance``.

    Examples
    --------
    >>> from dynlearn.datasets import make_ou_process
    >>> frame, truth = make_ou_process(n_series=2, n_times=4, return_truth=True, random_state=0)
    >>> frame.shape, float(truth.transition_variance(0.0, 1e9))
    ((8, 3), 0.125)
    """
    check_positive(theta=theta, sigma=sigma)
    check_finite(mu=mu)
    mean = partial(_ou_mean, theta=theta, mu=mu)
    variance = partial(_ou_variance, theta=theta, sigma=sigma)
    system = System(
        names=("x",),
        vector_field=lambda x: theta * (mu - x),
        parameters={"theta": theta, "mu": mu, "sigma": sigma},
        quantities={"diffusion": lambda x: np.full_like(x, sigma)},
    )

    def solve(rng: np.random.RandomState, x0: np.ndarray, times: np.ndarray) -> np.ndarray:
        return sample_exact_chain(rng, x0, times, lambda x, dt, z: mean(x, dt) + np.sqrt(variance(x, dt)) * z)

    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.normal(mu, 1.0, size=(n, 1)),
        random_state=random_state,
        return_truth=return_truth,
        solve=solve,
        transition_mean=mean,
        transition_variance=variance,
        stationary_mean=mu,
        stationary_variance=sigma**2 / (2 * theta),
    )


# --------------------------------------------------- geometric Brownian motion
def _gbm_mean(x: np.ndarray, dt: np.ndarray, *, mu: float) -> np.ndarray:
    return x * np.exp(mu * dt)


def _gbm_variance(x: np.ndarray, dt: np.ndarray, *, mu: float, sigma: float) -> np.ndarray:
    return x**2 * np.exp(2 * mu * dt) * np.expm1(sigma**2 * dt)


def make_geometric_brownian_motion(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 5.0),
    mu: float = 0.1,
    sigma: float = 0.2,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Geometric Brownian motion, sampled exactly at arbitrary times.

    ``dS = μ S dt + σ S dW`` (Itô). Over a gap ``Δ``,
    ``S(t + Δ) = S(t) exp((μ - σ²/2) Δ + σ sqrt(Δ) Z)`` with ``Z ~ N(0, 1)``:
    a log-normal transition with mean ``S e^{μΔ}`` and variance
    ``S² e^{2μΔ} (e^{σ²Δ} - 1)``, drawn directly, so paths are exact for any
    times. The defaults (drift 10%, volatility 20% per time unit) are the
    textbook values for a stock price in years. Initial values are
    ``U(0.5, 1.5)``.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 5.0)
        Observation window; every series starts at ``t_span[0]``.
    mu : float, default=0.1
        Drift rate ``μ``.
    sigma : float, default=0.2
        Volatility ``σ``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise, added on top of the process.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN (every series keeps at least one value).
    return_truth : bool, default=False
        Also return the truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``s``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (the latent paths,
        n_series × n_times × 1), ``derivatives`` (the drift ``μ S``),
        ``diffusion`` (``σ S``), ``times``, ``parameters``, and the exact
        transition moments as functions ``transition_mean(x, dt)`` and
        ``transition_variance(x, dt)``.

    Examples
    --------
    >>> from dynlearn.datasets import make_geometric_brownian_motion
    >>> frame = make_geometric_brownian_motion(n_series=2, n_times=4, random_state=0)
    >>> bool((frame["s"] > 0).all())
    True
    """
    check_finite(mu=mu)
    check_positive(sigma=sigma)
    mean = partial(_gbm_mean, mu=mu)
    variance = partial(_gbm_variance, mu=mu, sigma=sigma)
    system = System(
        names=("s",),
        vector_field=lambda x: mu * x,
        parameters={"mu": mu, "sigma": sigma},
        quantities={"diffusion": lambda x: sigma * x},
    )

    def step(x: np.ndarray, dt: np.ndarray, z: np.ndarray) -> np.ndarray:
        return x * np.exp((mu - sigma**2 / 2) * dt + sigma * np.sqrt(dt) * z)

    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform(0.5, 1.5, size=(n, 1)),
        random_state=random_state,
        return_truth=return_truth,
        solve=lambda rng, x0, times: sample_exact_chain(rng, x0, times, step),
        transition_mean=mean,
        transition_variance=variance,
    )


# -------------------------------------------------------- stochastic Lorenz
def make_stochastic_lorenz(
    n_series: int = 20,
    n_times: int = 100,
    *,
    t_span: tuple[float, float] = (0.0, 1.0),
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    alpha: tuple[float, float, float] = (0.15, 0.15, 0.15),
    dt: float = 1e-3,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Lorenz system driven by additive diagonal noise, integrated by Euler–Maruyama.

    ``dX = σ (Y - X) dt + α_x dW_x``, ``dY = (X (ρ - Z) - Y) dt + α_y dW_y``,
    ``dZ = (X Y - β Z) dt + α_z dW_z``: the stochastic Lorenz attractor of
    Li, Wong, Chen & Duvenaud, "Scalable Gradients for Stochastic
    Differential Equations", AISTATS 2020 (Section 7.2), with their
    parameters ``σ = 10``, ``ρ = 28``, ``β = 8/3``, ``α = (0.15, 0.15, 0.15)``
    and initial states ``N(0, I)``. They standardise each variable before
    adding observation noise; here the states are returned in their own
    units (standardise with :class:`~dynlearn.SeriesScaler`).

    Paths are Euler–Maruyama solutions on a fine even grid of step at most
    ``dt``, refined so that every observation time is a grid point; with
    additive noise the scheme converges with strong order 1 in ``dt``.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=100
        Observations per series.
    t_span : (float, float), default=(0.0, 1.0)
        Observation window; every series starts at ``t_span[0]``.
    sigma, rho, beta : float, default=10.0, 28.0, 8/3
        Lorenz drift parameters.
    alpha : (float, float, float), default=(0.15, 0.15, 0.15)
        Diffusion coefficient of each variable.
    dt : float, default=1e-3
        Largest internal Euler–Maruyama step.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise, added on top of the process.
    irregular : bool or "shared", default=False
        ``True``: sorted uniform times drawn per series (the first at
        ``t_span[0]``); ``"shared"``: one such draw for all series;
        ``False``: an even grid.
    missing_fraction : float, default=0.0
        Probability that an entry is NaN; every row keeps at least one value.
    return_truth : bool, default=False
        Also return the truth.
    random_state : int, RandomState instance or None, default=None
        The output is a pure function of it.

    Returns
    -------
    frame : DataFrame
        Columns ``series_id``, ``time``, ``x``, ``y``, ``z``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (the latent paths,
        n_series × n_times × 3), ``derivatives`` (the Lorenz drift there),
        ``diffusion`` (``α`` at every state), ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_stochastic_lorenz
    >>> make_stochastic_lorenz(n_series=2, n_times=5, random_state=0).shape
    (10, 5)
    """
    check_positive(sigma=sigma, rho=rho, beta=beta, dt=dt)
    alpha = _check_alpha(alpha)
    parameters = {"sigma": sigma, "rho": rho, "beta": beta}

    def diffusion(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(alpha, x.shape)

    system = System(
        names=("x", "y", "z"),
        vector_field=partial(lorenz_field, **parameters),
        parameters={**parameters, "alpha": tuple(alpha.tolist()), "dt": dt},
        quantities={"diffusion": lambda x: diffusion(x).copy()},
    )
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.standard_normal((n, 3)),
        random_state=random_state,
        return_truth=return_truth,
        solve=lambda rng, x0, times: euler_maruyama(rng, system.vector_field, diffusion, x0, times, dt),
    )


def _check_alpha(alpha: Any) -> np.ndarray:
    try:
        values = np.asarray(alpha, dtype=float)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape == (3,) and np.isfinite(values).all() and (values >= 0).all():
        return values
    raise input_error(
        "alpha",
        "three non-negative diffusion coefficients (x, y, z)",
        repr(alpha),
        "E.g. alpha=(0.15, 0.15, 0.15).",
    )
