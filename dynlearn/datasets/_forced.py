"""A system with a known input: the damped (optionally Duffing) oscillator driven by a force u(t)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp
from sklearn.utils import Bunch, check_random_state

from ..exceptions import IntegrationError, input_error
from ._simulate import ATOL, RTOL, Sampling, check_nonnegative, check_positive, long_frame, observe, sample_times

INPUT_KINDS = ("multisine", "steps")
# Sinusoids in a multisine input, and the band their angular frequencies are drawn from (rad per time unit,
# relative to the undamped natural frequency sqrt(k/m)): the force excites the resonance and both sides of it.
_N_SINES = 5
_BAND = (0.2, 2.0)
# Mean number of observation intervals a "steps" level is held for.
_MEAN_HOLD = 8


def make_forced_oscillator(
    n_series: int = 20,
    n_times: int = 100,
    *,
    t_span: tuple[float, float] = (0.0, 20.0),
    stiffness: float = 1.0,
    damping: float = 0.3,
    mass: float = 1.0,
    duffing: float = 0.0,
    input: str = "multisine",
    input_scale: float = 1.0,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Damped oscillator driven by a random known force, one input signal per series.

    ``dq/dt = p / m``, ``dp/dt = -k q - a q³ - (c / m) p + u(t)``: with
    ``duffing = a > 0`` a hardening Duffing oscillator. Each series has its
    own input ``u``, recorded (without noise) in the column ``u`` at the
    observation times, so a model can be fitted on some input signals and
    asked to forecast under new ones. Initial states are drawn uniformly
    from ``[-1, 1]²``.

    Parameters
    ----------
    n_series : int, default=20
        Number of series, each with its own input signal and initial state.
    n_times : int, default=100
        Observations per series.
    t_span : (float, float), default=(0.0, 20.0)
        First and last observation time of every series.
    stiffness, damping, mass : float, default=1.0, 0.3, 1.0
        ``k``, ``c`` and ``m``.
    duffing : float, default=0.0
        ``a``, the cubic stiffness (0: a linear oscillator).
    input : {"multisine", "steps"}, default="multisine"
        ``"multisine"``: ``u(t) = input_scale · Σ a_j sin(ω_j t + φ_j)``, five
        sinusoids with ``ω_j`` drawn uniformly in ``[0.2, 2] · sqrt(k/m)``,
        ``a_j`` standard normal over ``sqrt(5)`` and uniform phases; a smooth
        signal, read between samples by ``"linear"`` or ``"cubic"``
        interpolation. ``"steps"``: levels drawn uniformly in
        ``[-input_scale, input_scale]``, each held from one observation time
        over a geometric number of intervals (mean 8): exactly a zero-order
        hold on the observation times (``"previous"`` interpolation), as a
        digital controller applies it.
    input_scale : float, default=1.0
        Amplitude of the force.
    noise : float, default=0.0
        Standard deviation of Gaussian observation noise on ``q`` and ``p``
        (the input is known exactly).
    irregular : bool or "shared", default=False
        Draw each series' times uniformly at random (first time at
        ``t_span[0]``) instead of a shared grid; ``"shared"`` draws one such
        set of times for all series.
    missing_fraction : float, default=0.0
        Fraction of ``q`` and ``p`` entries set to NaN at random (the input
        is never missing).
    return_truth : bool, default=False
        Also return a Bunch with the noise-free ``states``, the ``inputs``
        at the observation times ``(n_series, n_times)``, ``derivatives``
        (the vector field at the states under those inputs), ``times``,
        ``parameters`` and ``input_function``, a callable ``(series, t)`` ->
        the force of that series at times ``t``.
    random_state : int, RandomState or None, default=None
        Seeds the input signals, initial states, sampling times and noise.

    Returns
    -------
    frame : DataFrame with columns series_id, time, q, p, u
    truth : Bunch
        Only when ``return_truth=True``.

    Examples
    --------
    >>> from dynlearn.datasets import make_forced_oscillator
    >>> make_forced_oscillator(n_series=2, n_times=3, random_state=0).columns.tolist()
    ['series_id', 'time', 'q', 'p', 'u']
    """
    check_positive(stiffness=stiffness, mass=mass)
    check_nonnegative(damping=damping, duffing=duffing, input_scale=input_scale)
    if input not in INPUT_KINDS:
        raise input_error("input", f"one of {list(INPUT_KINDS)}", repr(input), "E.g. input='multisine'.")
    sampling = Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction)
    sampling.check()
    rng = check_random_state(random_state)
    x0 = rng.uniform(-1.0, 1.0, size=(n_series, 2))
    times = sample_times(rng, n_series, n_times, t_span, irregular)
    natural = np.sqrt(stiffness / mass)
    forces = [_draw_input(rng, input, input_scale, natural, series_times) for series_times in times]

    def field(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        q, p = x[..., 0], x[..., 1]
        return np.stack([p / mass, -stiffness * q - duffing * q**3 - damping / mass * p + u], axis=-1)

    smooth = input == "multisine"
    states = np.stack([
        _integrate(field, start, t, force, smooth, i) for i, (start, t, force) in enumerate(zip(x0, times, forces))
    ])
    inputs = np.stack([force(t) for force, t in zip(forces, times)])
    frame = long_frame(times, observe(rng, states, noise, missing_fraction), ["q", "p"])
    frame["u"] = inputs.ravel()
    if not return_truth:
        return frame
    return frame, Bunch(
        states=states,
        inputs=inputs,
        derivatives=field(states, inputs),
        times=times,
        parameters={"stiffness": stiffness, "damping": damping, "mass": mass, "duffing": duffing,
                    "input": input, "input_scale": input_scale},
        input_function=lambda series, t: forces[series](np.asarray(t, dtype=float)),
    )


def _draw_input(rng: np.random.RandomState, kind: str, scale: float, natural: float,
                times: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """One series' force ``u(t)`` as a function of time."""
    if kind == "multisine":
        omega = rng.uniform(*_BAND, size=_N_SINES) * natural
        amplitude = scale * rng.standard_normal(_N_SINES) / np.sqrt(_N_SINES)
        phase = rng.uniform(0.0, 2 * np.pi, size=_N_SINES)
        return lambda t: (amplitude * np.sin(np.multiply.outer(t, omega) + phase)).sum(axis=-1)
    # Steps: levels switch at observation times, held over geometric numbers of intervals.
    switches, row = [0], 0
    while True:
        row += int(rng.geometric(1.0 / _MEAN_HOLD))
        if row >= len(times) - 1:
            break
        switches.append(row)
    starts = times[switches]
    levels = rng.uniform(-scale, scale, size=len(starts))
    # Held from each switch time on, including the switch time itself.
    return lambda t: levels[np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(levels) - 1)]


def _integrate(field: Callable, x0: np.ndarray, times: np.ndarray, force: Callable, smooth: bool,
               series: int) -> np.ndarray:
    """States at ``times`` under ``force``, DOP853 between consecutive times (a step input switches there).

    A ``smooth`` force is read at every time the solver asks for; a step
    force is constant on each interval ``[t_k, t_{k+1})`` and read once.
    """
    if smooth:
        solution = solve_ivp(lambda t, x: field(x, force(np.array([t]))[0]), (times[0], times[-1]), x0,
                             method="DOP853", t_eval=times, rtol=RTOL, atol=ATOL)
        _check_solved(solution, series)
        return solution.y.T
    states = np.empty((len(times), 2))
    states[0] = x0
    for k in range(len(times) - 1):
        if times[k + 1] == times[k]:
            states[k + 1] = states[k]
            continue
        start = times[k]
        held = force(np.array([start]))[0]
        solution = solve_ivp(lambda t, x, held=held: field(x, held), (start, times[k + 1]), states[k], method="DOP853",
                             rtol=RTOL, atol=ATOL)
        _check_solved(solution, series)
        states[k + 1] = solution.y[:, -1]
    return states


def _check_solved(solution: Any, series: int) -> None:
    if not solution.success:
        raise IntegrationError(
            f"Series {series} could not be integrated: {solution.message} "
            "Try a smaller input_scale or duffing, or a shorter t_span."
        )

