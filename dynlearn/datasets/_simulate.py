"""Shared machinery of the simulators: argument checks, sampling times, solving, noise, missing values, frames.

Every ``make_*`` function is the same pipeline: check the arguments, draw one
initial state per series, draw the observation times, compute the noise-free
states at those times, then add observation noise and missing values and
return the long frame (and, on request, the truth). :func:`simulate` runs it
for state-space systems; the benchmarks whose states are closed-form curves
use the pieces (:func:`sample_times`, :func:`package`) directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from sklearn.utils import Bunch, check_random_state

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import IntegrationError, input_error

# Tolerances of every ODE solve: with DOP853 they keep energies of the
# conservative systems to about 1e-9 relative over their default spans.
RTOL = 1e-10
ATOL = 1e-12

VectorField = Callable[[np.ndarray], np.ndarray]

# Above this condition number of A's eigenvectors, the eigenbasis solution of
# dx/dt = A x loses more than about 1e-12 relative accuracy.
_MAX_EIGENBASIS_CONDITION = 1e4


# ------------------------------------------------------------------ checks
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_span(t_span: Any) -> bool:
    try:
        start, end = t_span
    except (TypeError, ValueError):
        return False
    return _is_number(start) and _is_number(end) and np.isfinite([start, end]).all() and end > start


def check_sampling(
    n_series: int,
    n_times: int,
    t_span: tuple[float, float],
    noise: float,
    missing_fraction: float,
    *,
    irregular: bool | str = False,
) -> None:
    """Shared argument checks of the ``make_*`` functions."""
    if not (_is_count(n_series) and n_series >= 1):
        raise input_error("n_series", "a positive int", repr(n_series), "E.g. n_series=10.")
    if not (_is_count(n_times) and n_times >= 2):
        raise input_error("n_times", "an int of at least 2", repr(n_times), "E.g. n_times=50.")
    if not _is_span(t_span):
        raise input_error("t_span", "(start, end) with finite end > start", repr(t_span), "E.g. t_span=(0.0, 10.0).")
    if not (_is_number(noise) and 0 <= noise < np.inf):
        raise input_error("noise", "a non-negative standard deviation", repr(noise), "E.g. noise=0.01.")
    if not (_is_number(missing_fraction) and 0 <= missing_fraction < 1):
        raise input_error("missing_fraction", "a fraction in [0, 1)", repr(missing_fraction), "E.g. 0.1.")
    if not (isinstance(irregular, (bool, np.bool_)) or (isinstance(irregular, str) and irregular == "shared")):
        raise input_error(
            "irregular", "True, False or 'shared'", repr(irregular), "E.g. irregular=True for per-series times."
        )


def check_positive(**values: float) -> None:
    """Physical parameters that must be positive finite numbers (masses, lengths, rates)."""
    for name, value in values.items():
        if not (_is_number(value) and 0 < value < np.inf):
            raise input_error(name, "a positive finite number", repr(value), f"E.g. {name}=1.0.")


def check_finite(**values: float) -> None:
    """Parameters that may take any real value (offsets, external currents)."""
    for name, value in values.items():
        if not (_is_number(value) and np.isfinite(value)):
            raise input_error(name, "a finite number", repr(value), f"E.g. {name}=0.0.")


def check_nonnegative(**values: float) -> None:
    """Parameters for which zero is meaningful (noise intensities, nonlinearity strengths)."""
    for name, value in values.items():
        if not (_is_number(value) and 0 <= value < np.inf):
            raise input_error(name, "a non-negative finite number", repr(value), f"E.g. {name}=0.1.")


# ---------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Sampling:
    """How a simulator observes its series: the options every ``make_*`` function shares."""

    n_series: int
    n_times: int
    t_span: tuple[float, float]
    noise: float = 0.0
    irregular: bool | str = False
    missing_fraction: float = 0.0

    def check(self) -> None:
        check_sampling(
            self.n_series, self.n_times, self.t_span, self.noise, self.missing_fraction, irregular=self.irregular
        )


def sample_times(
    rng: np.random.RandomState, n_series: int, n_times: int, t_span: tuple[float, float], irregular: bool | str
) -> np.ndarray:
    """(n_series, n_times) observation times: an even grid, or sorted uniform draws.

    ``irregular=True`` draws each series' times on its own; ``"shared"`` draws
    one irregular set used by every series (the protocol of some published
    benchmarks). Irregular series keep ``t_span[0]`` as their first time so
    every series starts from its (known) initial condition.
    """
    start, end = t_span
    if not irregular:
        return np.broadcast_to(np.linspace(start, end, n_times), (n_series, n_times)).copy()
    n_draws = 1 if irregular == "shared" else n_series
    draws = np.sort(rng.uniform(start, end, size=(n_draws, n_times - 1)), axis=1)
    times = np.concatenate([np.full((n_draws, 1), start), draws], axis=1)
    return np.broadcast_to(times, (n_series, n_times)).copy()


def observe(
    rng: np.random.RandomState, states: np.ndarray, noise: float, missing_fraction: float
) -> np.ndarray:
    """Add Gaussian noise and set a random fraction of entries to NaN."""
    observed = states + noise * rng.standard_normal(states.shape)
    if missing_fraction > 0:
        draws = rng.uniform(size=states.shape)
        drop = draws < missing_fraction
        if states.shape[-1] > 1:  # keep rows partly observed so the row (a time point) stays
            # The kept entry of a fully dropped row is its largest draw: a column drawn uniformly, no extra draw.
            emptied = np.nonzero(drop.all(axis=-1))
            drop[(*emptied, draws[emptied].argmax(axis=-1))] = False
        # A series with nothing observed is no data at all (check_series rejects it).
        drop[drop.all(axis=(1, 2)), 0, 0] = False
        observed = np.where(drop, np.nan, observed)
    return observed


def long_frame(times: np.ndarray, values: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The long frame users bring: series_id, time, one column per variable."""
    n_series, n_times = times.shape
    frame = pd.DataFrame(
        {
            ID_COLUMN: np.repeat(np.arange(n_series), n_times),
            TIME_COLUMN: times.ravel(),
        }
    )
    for j, name in enumerate(names):
        frame[name] = values[..., j].ravel()
    return frame


# ----------------------------------------------------------------- solving
def linear_flow(matrix: np.ndarray, x0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Exact solution ``x(t) = expm(A (t - t0)) x0`` of ``dx/dt = A x`` for every series.

    Uses the eigendecomposition of ``A``, so all series and times are
    computed at once. When ``A`` is (nearly) defective, as for a critically
    damped oscillator, its eigenvectors are (nearly) parallel and the
    decomposition loses all accuracy; the matrix exponential is then
    evaluated at each time instead.
    """
    eigenvalues, vectors = np.linalg.eig(matrix)
    elapsed = times - times[:, :1]
    if np.linalg.cond(vectors) > _MAX_EIGENBASIS_CONDITION:
        return np.einsum("stij,sj->sti", expm(matrix * elapsed[..., None, None]), x0)
    coefficients = np.linalg.solve(vectors, x0.T).T  # (n_series, dim)
    modes = np.exp(eigenvalues[None, None, :] * elapsed[..., None]) * coefficients[:, None, :]
    return np.real(modes @ vectors.T)


def integrate_ode(
    vector_field: VectorField, x0: np.ndarray, times: np.ndarray, *, rtol: float = RTOL, atol: float = ATOL
) -> np.ndarray:
    """Solve ``dx/dt = f(x)`` from ``x0[i]`` and report it at ``times[i]``, for every series.

    DOP853 with tight tolerances, stepping to each series' own output times.
    ``vector_field`` maps states of shape (..., n_vars) to derivatives of the
    same shape, so the function that drives the solve also gives the true
    derivatives of the returned states.

    Returns
    -------
    ndarray of shape (n_series, n_times, n_vars)
    """
    states = np.empty(times.shape + x0.shape[1:])
    for i, (start, series_times) in enumerate(zip(x0, times)):
        solution = solve_ivp(
            lambda _, x: vector_field(x),
            (series_times[0], series_times[-1]),
            start,
            method="DOP853",
            t_eval=series_times,
            rtol=rtol,
            atol=atol,
        )
        if not solution.success:
            raise IntegrationError(
                f"Series {i} from initial state {start.tolist()} could not be integrated: {solution.message} "
                "Try a shorter t_span or less extreme parameters."
            )
        states[i] = solution.y.T
    return states


# ---------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class System:
    """A state-space system: variable names, vector field, parameters and conserved quantities.

    ``quantities`` maps a truth key (``"energy"``, ``"invariant"``) to a
    function of states (..., n_vars) -> (...).
    """

    names: tuple[str, ...]
    vector_field: VectorField
    parameters: dict[str, Any]
    quantities: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)


def package(
    rng: np.random.RandomState,
    sampling: Sampling,
    names: tuple[str, ...],
    times: np.ndarray,
    states: np.ndarray,
    return_truth: bool,
    truth: Callable[[], dict[str, Any]],
) -> Any:
    """Observe ``states`` (noise, missing values) into the long frame; add the truth Bunch on request.

    ``truth`` is called only when asked for, so frames alone skip computing it.
    """
    frame = long_frame(times, observe(rng, states, sampling.noise, sampling.missing_fraction), list(names))
    if not return_truth:
        return frame
    return frame, Bunch(states=states, times=times, **truth())


def simulate(
    system: System,
    sampling: Sampling,
    draw_initial: Callable[[np.random.RandomState, int], np.ndarray],
    *,
    random_state: Any,
    return_truth: bool,
    solve: Callable[[np.random.RandomState, np.ndarray, np.ndarray], np.ndarray] | None = None,
    **extra_truth: Any,
) -> Any:
    """Run the simulator pipeline for a state-space system.

    Parameters
    ----------
    system : System
    sampling : Sampling
    draw_initial : callable
        ``draw_initial(rng, n_series)`` -> initial states (n_series, n_vars).
    random_state : int, RandomState or None
        Seeds the initial states, the sampling times, the noise and the missing entries.
    return_truth : bool
    solve : callable, default=None
        ``solve(rng, x0, times)`` -> states (n_series, n_times, n_vars): an
        exact solution or an SDE sampler. Defaults to :func:`integrate_ode`
        of the system's vector field.
    **extra_truth
        Further entries of the truth Bunch.

    Returns
    -------
    frame : DataFrame, or (frame, truth) with ``return_truth=True``
        The truth holds ``states``, ``derivatives`` (the vector field, or the
        drift of an SDE, at the states), each of ``system.quantities``,
        ``times``, ``parameters`` and ``extra_truth``.
    """
    sampling.check()
    rng = check_random_state(random_state)
    x0 = draw_initial(rng, sampling.n_series)
    times = sample_times(rng, sampling.n_series, sampling.n_times, sampling.t_span, sampling.irregular)
    states = integrate_ode(system.vector_field, x0, times) if solve is None else solve(rng, x0, times)

    def truth() -> dict[str, Any]:
        quantities = {name: function(states) for name, function in system.quantities.items()}
        return {
            "derivatives": system.vector_field(states),
            **quantities,
            "parameters": dict(system.parameters),
            **extra_truth,
        }

    return package(rng, sampling, system.names, times, states, return_truth, truth)


# -------------------------------------------------------- damped oscillator
def make_damped_oscillator(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    stiffness: float = 1.0,
    damping: float = 0.1,
    mass: float = 1.0,
    noise: float = 0.0,
    irregular: bool | str = False,
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
        Number of series (independent initial states).
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
        Start and end time of each series.
    stiffness, damping, mass : float, default=1.0, 0.1, 1.0
        ``k``, ``c`` and ``m``.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise.
    irregular : bool or "shared", default=False
        Draw each series' times uniformly at random (first time at
        ``t_span[0]``) instead of a shared grid; ``"shared"`` draws one such
        set of times for all series.
    missing_fraction : float, default=0.0
        Fraction of entries set to NaN at random.
    return_truth : bool, default=False
        Also return a Bunch with the noise-free ``states``, ``derivatives``,
        ``energy`` (``k q²/2 + p²/(2m)``), ``times``, the system ``matrix``
        and its ``eigenvalues``.
    random_state : int, RandomState or None, default=None
        Seeds the initial states, the sampling times, the noise and the missing entries.

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
    check_nonnegative(damping=damping)
    check_positive(stiffness=stiffness, mass=mass)
    matrix = np.array([[0.0, 1.0 / mass], [-stiffness, -damping / mass]])
    system = System(
        names=("q", "p"),
        vector_field=lambda x: x @ matrix.T,
        parameters={"stiffness": stiffness, "damping": damping, "mass": mass},
        quantities={"energy": lambda x: 0.5 * stiffness * x[..., 0] ** 2 + x[..., 1] ** 2 / (2 * mass)},
    )
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        lambda rng, n: rng.uniform(-1.0, 1.0, size=(n, 2)),
        random_state=random_state,
        return_truth=return_truth,
        solve=lambda _, x0, times: linear_flow(matrix, x0, times),
        matrix=matrix,
        eigenvalues=np.linalg.eigvals(matrix),
    )
