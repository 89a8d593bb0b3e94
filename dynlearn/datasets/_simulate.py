"""Shared machinery of the simulators: sampling times, noise, missing values, frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from ..exceptions import input_error


def check_sampling(n_series: int, n_times: int, t_span: tuple[float, float], noise: float, missing_fraction: float) -> None:
    """Shared argument checks of the ``make_*`` functions."""
    if not (isinstance(n_series, (int, np.integer)) and n_series >= 1):
        raise input_error("n_series", "a positive int", repr(n_series), "E.g. n_series=10.")
    if not (isinstance(n_times, (int, np.integer)) and n_times >= 2):
        raise input_error("n_times", "an int of at least 2", repr(n_times), "E.g. n_times=50.")
    if len(t_span) != 2 or not t_span[1] > t_span[0]:
        raise input_error("t_span", "(start, end) with end > start", repr(t_span), "E.g. t_span=(0.0, 10.0).")
    if not noise >= 0:
        raise input_error("noise", "a non-negative standard deviation", repr(noise), "E.g. noise=0.01.")
    if not 0 <= missing_fraction < 1:
        raise input_error("missing_fraction", "a fraction in [0, 1)", repr(missing_fraction), "E.g. 0.1.")


def sample_times(rng: np.random.RandomState, n_series: int, n_times: int, t_span: tuple[float, float], irregular: bool) -> np.ndarray:
    """(n_series, n_times) observation times: a shared grid, or sorted uniform draws per series.

    Irregular series keep ``t_span[0]`` as their first time so every series
    starts from its (known) initial condition.
    """
    start, end = t_span
    if not irregular:
        return np.broadcast_to(np.linspace(start, end, n_times), (n_series, n_times)).copy()
    draws = np.sort(rng.uniform(start, end, size=(n_series, n_times - 1)), axis=1)
    return np.concatenate([np.full((n_series, 1), start), draws], axis=1)


def observe(
    rng: np.random.RandomState, states: np.ndarray, noise: float, missing_fraction: float
) -> np.ndarray:
    """Add Gaussian noise and set a random fraction of entries to NaN."""
    observed = states + noise * rng.standard_normal(states.shape)
    if missing_fraction > 0:
        drop = rng.uniform(size=states.shape) < missing_fraction
        if states.shape[-1] > 1:  # keep rows partly observed so the row (a time point) stays
            drop[drop.all(axis=-1), 0] = False
        observed = np.where(drop, np.nan, observed)
    return observed


def long_frame(times: np.ndarray, values: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The long frame users bring: series_id, time, one column per variable."""
    n_series, n_times = times.shape
    frame = pd.DataFrame(
        {
            "series_id": np.repeat(np.arange(n_series), n_times),
            "time": times.ravel(),
        }
    )
    for j, name in enumerate(names):
        frame[name] = values[..., j].ravel()
    return frame


def linear_flow(matrix: np.ndarray, x0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Exact solution ``x(t) = expm(A (t - t0)) x0`` of ``dx/dt = A x`` for every series.

    Uses the eigendecomposition of ``A`` (assumed diagonalisable), so all
    series and times are computed at once.
    """
    eigenvalues, vectors = np.linalg.eig(matrix)
    coefficients = np.linalg.solve(vectors, x0.T).T  # (n_series, dim)
    elapsed = times - times[:, :1]
    modes = np.exp(eigenvalues[None, None, :] * elapsed[..., None]) * coefficients[:, None, :]
    return np.real(modes @ vectors.T)


def make_damped_oscillator(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    stiffness: float = 1.0,
    damping: float = 0.1,
    mass: float = 1.0,
    noise: float = 0.0,
    irregular: bool = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Damped harmonic oscillator, solved exactly.

    ``dq/dt = p / m``, ``dp/dt = -k q - (c / m) p``: a linear system
    ``dx/dt = A x`` with ``A = [[0, 1/m], [-k, -c/m]]``, whose eigenvalues
    are ``-c/(2m) ± i sqrt(k/m - c²/(4m²))`` when underdamped. Initial
    states are drawn uniformly from ``[-1, 1]²``.

    Parameters
    ----------
    n_series : int, default=20
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
    stiffness, damping, mass : float, default=1.0, 0.1, 1.0
        ``k``, ``c`` and ``m``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool, default=False
        Draw each series' times uniformly at random (first time at
        ``t_span[0]``) instead of a shared grid.
    missing_fraction : float, default=0.0
        Fraction of entries set to NaN at random.
    return_truth : bool, default=False
        Also return a Bunch with the noise-free ``states``, ``derivatives``,
        ``energy`` (``k q²/2 + p²/(2m)``), ``times``, the system ``matrix``
        and its ``eigenvalues``.
    random_state : int, RandomState or None, default=None

    Returns
    -------
    frame : DataFrame with columns series_id, time, q, p
    truth : Bunch
        Only when ``return_truth=True``.

    Examples
    --------
    >>> from dynlearn.datasets import make_damped_oscillator
    >>> make_damped_oscillator(n_series=2, n_times=3, random_state=0).shape
    (6, 4)
    """
    check_sampling(n_series, n_times, t_span, noise, missing_fraction)
    rng = check_random_state(random_state)
    matrix = np.array([[0.0, 1.0 / mass], [-stiffness, -damping / mass]])
    x0 = rng.uniform(-1.0, 1.0, size=(n_series, 2))
    times = sample_times(rng, n_series, n_times, t_span, irregular)
    states = linear_flow(matrix, x0, times)
    frame = long_frame(times, observe(rng, states, noise, missing_fraction), ["q", "p"])
    if not return_truth:
        return frame
    truth = Bunch(
        states=states,
        derivatives=states @ matrix.T,
        energy=0.5 * stiffness * states[..., 0] ** 2 + states[..., 1] ** 2 / (2 * mass),
        times=times,
        matrix=matrix,
        eigenvalues=np.linalg.eigvals(matrix),
        parameters={"stiffness": stiffness, "damping": damping, "mass": mass},
    )
    return frame, truth
