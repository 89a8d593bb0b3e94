"""Conservative mechanical systems in canonical coordinates, with their energies.

All four are Hamiltonian: ``dq/dt = ∂H/∂p``, ``dp/dt = -∂H/∂q``, and the
truth's ``energy`` is ``H`` at the noise-free states, constant along each
series up to the integration error.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from ._simulate import Sampling, System, check_nonnegative, check_positive, linear_flow, simulate


# -------------------------------------------------------------- mass-spring
def make_mass_spring(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    stiffness: float = 1.0,
    mass: float = 1.0,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Ideal mass on a spring, solved exactly.

    ``H = k q²/2 + p²/(2m)``, so ``dq/dt = p/m`` and ``dp/dt = -k q``: a
    harmonic oscillation of angular frequency ``ω = sqrt(k/m)``. Initial
    states lie at a uniform angle on a circle of radius ``r ~ U(0.1, 1.1)``
    in the ``(q, p)`` plane, the range used by Greydanus, Dzamba & Yosinski,
    "Hamiltonian Neural Networks", NeurIPS 2019.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
        Observation window; every series starts at ``t_span[0]``.
    stiffness : float, default=1.0
        Spring constant ``k``.
    mass : float, default=1.0
        Mass ``m``.
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
        Columns ``series_id``, ``time``, ``q`` (position) and ``p`` (momentum).
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 2),
        ``derivatives`` (same shape), ``energy`` (n_series, n_times),
        ``times`` (n_series, n_times), ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_mass_spring
    >>> frame, truth = make_mass_spring(n_series=2, n_times=5, return_truth=True, random_state=0)
    >>> list(frame.columns), truth.energy.shape
    (['series_id', 'time', 'q', 'p'], (2, 5))
    """
    check_positive(stiffness=stiffness, mass=mass)
    matrix = np.array([[0.0, 1.0 / mass], [-stiffness, 0.0]])
    system = System(
        names=("q", "p"),
        vector_field=lambda x: x @ matrix.T,
        parameters={"stiffness": stiffness, "mass": mass},
        quantities={"energy": lambda x: 0.5 * stiffness * x[..., 0] ** 2 + x[..., 1] ** 2 / (2 * mass)},
    )
    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        partial(_on_rings, low=0.1, high=1.1),
        random_state=random_state,
        return_truth=return_truth,
        solve=lambda _, x0, times: linear_flow(matrix, x0, times),
    )


def _on_rings(rng: np.random.RandomState, n_series: int, *, low: float, high: float) -> np.ndarray:
    """Points at a uniform angle and a radius uniform in [low, high]: energy levels spread evenly."""
    radius = rng.uniform(low, high, size=n_series)
    angle = rng.uniform(0.0, 2 * np.pi, size=n_series)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


# ----------------------------------------------------------------- pendulum
def _pendulum_field(x: np.ndarray, *, mass: float, length: float, gravity: float) -> np.ndarray:
    q, p = x[..., 0], x[..., 1]
    return np.stack([p / (mass * length**2), -mass * gravity * length * np.sin(q)], axis=-1)


def _pendulum_energy(x: np.ndarray, *, mass: float, length: float, gravity: float) -> np.ndarray:
    q, p = x[..., 0], x[..., 1]
    return p**2 / (2 * mass * length**2) + mass * gravity * length * (1 - np.cos(q))


def make_pendulum(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    mass: float = 1.0,
    length: float = 1.0,
    gravity: float = 9.81,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Ideal pendulum (a point mass on a massless rod), integrated accurately.

    ``H = p²/(2 m l²) + m g l (1 - cos q)``, so ``dq/dt = p/(m l²)`` and
    ``dp/dt = -m g l sin q``. The angle ``q`` (rad) is measured from the
    downward vertical and ``p`` (kg m²/s) is the angular momentum. Initial
    angles are ``U(-π/2, π/2)`` and initial angular velocities ``U(-1, 1)``
    rad/s, so every series swings (never goes over the top) with large,
    clearly nonlinear amplitudes. Defaults are SI units on Earth.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
        Observation window (s); every series starts at ``t_span[0]``.
    mass : float, default=1.0
        Bob mass ``m`` (kg).
    length : float, default=1.0
        Rod length ``l`` (m).
    gravity : float, default=9.81
        Gravitational acceleration ``g`` (m/s²).
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
        Columns ``series_id``, ``time``, ``q`` (angle) and ``p`` (angular momentum).
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 2),
        ``derivatives`` (same shape), ``energy`` (n_series, n_times, in J),
        ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_pendulum
    >>> make_pendulum(n_series=2, n_times=5, random_state=0).shape
    (10, 4)
    """
    check_positive(mass=mass, length=length, gravity=gravity)
    parameters = {"mass": mass, "length": length, "gravity": gravity}
    system = System(
        names=("q", "p"),
        vector_field=partial(_pendulum_field, **parameters),
        parameters=parameters,
        quantities={"energy": partial(_pendulum_energy, **parameters)},
    )

    def draw_initial(rng: np.random.RandomState, n: int) -> np.ndarray:
        angle = rng.uniform(-np.pi / 2, np.pi / 2, size=n)
        angular_velocity = rng.uniform(-1.0, 1.0, size=n)
        return np.stack([angle, mass * length**2 * angular_velocity], axis=-1)

    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        draw_initial,
        random_state=random_state,
        return_truth=return_truth,
    )


# ---------------------------------------------------------- double pendulum
def _double_pendulum_terms(x: np.ndarray, m1: float, m2: float, l1: float, l2: float) -> tuple[np.ndarray, ...]:
    """Pieces shared by H and its gradient: Δ, the kinetic numerator N and denominator factor s."""
    q1, q2, p1, p2 = np.moveaxis(x, -1, 0)
    delta = q1 - q2
    numerator = m2 * l2**2 * p1**2 + (m1 + m2) * l1**2 * p2**2 - 2 * m2 * l1 * l2 * p1 * p2 * np.cos(delta)
    shape = m1 + m2 * np.sin(delta) ** 2
    return q1, q2, p1, p2, delta, numerator, shape


def _double_pendulum_field(
    x: np.ndarray, *, mass1: float, mass2: float, length1: float, length2: float, gravity: float
) -> np.ndarray:
    m1, m2, l1, l2, g = mass1, mass2, length1, length2, gravity
    q1, q2, p1, p2, delta, numerator, shape = _double_pendulum_terms(x, m1, m2, l1, l2)
    dq1 = (l2 * p1 - l1 * p2 * np.cos(delta)) / (l1**2 * l2 * shape)
    dq2 = ((m1 + m2) * l1 * p2 - m2 * l2 * p1 * np.cos(delta)) / (m2 * l1 * l2**2 * shape)
    # ∂H_kinetic/∂Δ, which enters dp1/dt and dp2/dt with opposite signs.
    coupling = p1 * p2 * np.sin(delta) / (l1 * l2 * shape) - numerator * np.sin(2 * delta) / (
        2 * l1**2 * l2**2 * shape**2
    )
    dp1 = -(m1 + m2) * g * l1 * np.sin(q1) - coupling
    dp2 = -m2 * g * l2 * np.sin(q2) + coupling
    return np.stack([dq1, dq2, dp1, dp2], axis=-1)


def _double_pendulum_energy(
    x: np.ndarray, *, mass1: float, mass2: float, length1: float, length2: float, gravity: float
) -> np.ndarray:
    m1, m2, l1, l2, g = mass1, mass2, length1, length2, gravity
    q1, q2, _, _, _, numerator, shape = _double_pendulum_terms(x, m1, m2, l1, l2)
    kinetic = numerator / (2 * m2 * l1**2 * l2**2 * shape)
    return kinetic - (m1 + m2) * g * l1 * np.cos(q1) - m2 * g * l2 * np.cos(q2)


def make_double_pendulum(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 10.0),
    mass1: float = 1.0,
    mass2: float = 1.0,
    length1: float = 1.0,
    length2: float = 1.0,
    gravity: float = 9.81,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Double pendulum (two point masses on massless rods) in canonical coordinates, integrated accurately.

    Angles ``q1``, ``q2`` (rad) are measured from the downward vertical; ``p1``,
    ``p2`` are their conjugate momenta (kg m²/s), not angular velocities. With
    ``Δ = q1 - q2`` and ``s = m1 + m2 sin²Δ``::

        H = [m2 l2² p1² + (m1 + m2) l1² p2² - 2 m2 l1 l2 p1 p2 cos Δ] / (2 m2 l1² l2² s)
            - (m1 + m2) g l1 cos q1 - m2 g l2 cos q2

    and Hamilton's equations give the vector field. The angular velocities
    follow from the momenta as ``dq1/dt = (l2 p1 - l1 p2 cos Δ) / (l1² l2 s)``
    and ``dq2/dt = ((m1 + m2) l1 p2 - m2 l2 p1 cos Δ) / (m2 l1 l2² s)`` (the
    first two columns of the truth's ``derivatives``). Both pendulums are
    released from rest at angles drawn from ``U(-π/2, π/2)``; from such
    states the motion is typically chaotic.

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 10.0)
        Observation window (s); every series starts at ``t_span[0]``.
    mass1, mass2 : float, default=1.0
        Masses of the upper and lower bob (kg).
    length1, length2 : float, default=1.0
        Lengths of the upper and lower rod (m).
    gravity : float, default=9.81
        Gravitational acceleration ``g`` (m/s²).
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
        Columns ``series_id``, ``time``, ``q1``, ``q2``, ``p1``, ``p2``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 4),
        ``derivatives`` (same shape), ``energy`` (n_series, n_times, in J),
        ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_double_pendulum
    >>> make_double_pendulum(n_series=1, n_times=5, t_span=(0.0, 1.0), random_state=0).shape
    (5, 6)
    """
    check_positive(mass1=mass1, mass2=mass2, length1=length1, length2=length2, gravity=gravity)
    parameters = {"mass1": mass1, "mass2": mass2, "length1": length1, "length2": length2, "gravity": gravity}
    system = System(
        names=("q1", "q2", "p1", "p2"),
        vector_field=partial(_double_pendulum_field, **parameters),
        parameters=parameters,
        quantities={"energy": partial(_double_pendulum_energy, **parameters)},
    )

    def draw_initial(rng: np.random.RandomState, n: int) -> np.ndarray:
        angles = rng.uniform(-np.pi / 2, np.pi / 2, size=(n, 2))
        return np.concatenate([angles, np.zeros((n, 2))], axis=1)

    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        draw_initial,
        random_state=random_state,
        return_truth=return_truth,
    )


# ----------------------------------------------------------------- two body
def _two_body_field(x: np.ndarray, *, mass: float, gravitational_constant: float) -> np.ndarray:
    positions, momenta = x[..., :4], x[..., 4:]
    separation = positions[..., 2:] - positions[..., :2]  # from body 1 to body 2
    distance = np.linalg.norm(separation, axis=-1, keepdims=True)
    pull = gravitational_constant * mass**2 * separation / distance**3  # force on body 1
    return np.concatenate([momenta / mass, pull, -pull], axis=-1)


def _two_body_energy(x: np.ndarray, *, mass: float, gravitational_constant: float) -> np.ndarray:
    positions, momenta = x[..., :4], x[..., 4:]
    distance = np.linalg.norm(positions[..., 2:] - positions[..., :2], axis=-1)
    return (momenta**2).sum(axis=-1) / (2 * mass) - gravitational_constant * mass**2 / distance


def make_two_body(
    n_series: int = 20,
    n_times: int = 50,
    *,
    t_span: tuple[float, float] = (0.0, 20.0),
    mass: float = 1.0,
    gravitational_constant: float = 1.0,
    speed_perturbation: float = 0.05,
    noise: float = 0.0,
    irregular: bool | str = False,
    missing_fraction: float = 0.0,
    return_truth: bool = False,
    random_state: Any = None,
) -> Any:
    """Two equal point masses orbiting each other in a plane, integrated accurately.

    With positions ``r1``, ``r2`` and momenta ``p1``, ``p2``::

        H = (|p1|² + |p2|²) / (2m) - G m² / |r2 - r1|

    Initial states follow the near-circular orbits of Greydanus, Dzamba &
    Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019: body 1 starts at
    ``r1`` with both coordinates ``U(0.5, 1.5)`` and body 2 at ``-r1`` (centre
    of mass at rest at the origin); body 1 moves counter-clockwise at the
    circular-orbit speed ``sqrt(G m / (4 |r1|))`` times ``1 + ε``, with
    ``ε ~ N(0, speed_perturbation²)`` drawn per series, and body 2 moves
    opposite. The perturbation makes orbits slightly elliptical; the default
    0.05 is the published one. Larger values give eccentric orbits whose close
    approaches have large accelerations, and for ``1 + ε >= sqrt(2)`` (about
    2% of series at 0.2) the pair is unbound and drifts apart. Units are
    arbitrary (``G = m = 1``).

    Parameters
    ----------
    n_series : int, default=20
        Number of series.
    n_times : int, default=50
        Observations per series.
    t_span : (float, float), default=(0.0, 20.0)
        Observation window; every series starts at ``t_span[0]``. One
        circular orbit takes ``4π |r1|^1.5 / sqrt(G m)``, about 7 to 39 time
        units at the defaults.
    mass : float, default=1.0
        Mass ``m`` of each body.
    gravitational_constant : float, default=1.0
        ``G``.
    speed_perturbation : float, default=0.05
        Standard deviation of the relative perturbation ``ε`` of the initial speed.
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
        Columns ``series_id``, ``time``, positions ``x1``, ``y1``, ``x2``,
        ``y2`` and momenta ``px1``, ``py1``, ``px2``, ``py2``.
    truth : Bunch
        Only with ``return_truth=True``: ``states`` (n_series, n_times, 8),
        ``derivatives`` (same shape), ``energy`` (n_series, n_times),
        ``times``, ``parameters``.

    Examples
    --------
    >>> from dynlearn.datasets import make_two_body
    >>> make_two_body(n_series=2, n_times=5, random_state=0).shape
    (10, 10)
    """
    check_positive(mass=mass, gravitational_constant=gravitational_constant)
    check_nonnegative(speed_perturbation=speed_perturbation)
    parameters = {"mass": mass, "gravitational_constant": gravitational_constant}
    system = System(
        names=("x1", "y1", "x2", "y2", "px1", "py1", "px2", "py2"),
        vector_field=partial(_two_body_field, **parameters),
        parameters={**parameters, "speed_perturbation": speed_perturbation},
        quantities={"energy": partial(_two_body_energy, **parameters)},
    )

    def draw_initial(rng: np.random.RandomState, n: int) -> np.ndarray:
        position = rng.uniform(0.5, 1.5, size=(n, 2))
        radius = np.linalg.norm(position, axis=1, keepdims=True)
        tangent = np.stack([-position[:, 1], position[:, 0]], axis=1) / radius  # counter-clockwise
        speed = np.sqrt(gravitational_constant * mass / (4 * radius))
        speed = speed * (1 + speed_perturbation * rng.standard_normal((n, 1)))
        momentum = mass * speed * tangent
        return np.concatenate([position, -position, momentum, -momentum], axis=1)

    return simulate(
        system,
        Sampling(n_series, n_times, t_span, noise, irregular, missing_fraction),
        draw_initial,
        random_state=random_state,
        return_truth=return_truth,
    )
