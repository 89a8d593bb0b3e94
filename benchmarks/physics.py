"""Energy-based estimators against the NeuralODE baseline, on published tasks.

``hnn_table1`` runs tasks 1–4 of Table 1 of Greydanus, Dzamba & Yosinski,
"Hamiltonian Neural Networks" (NeurIPS 2019) and reports the published
figures beside dynlearn's; ``lnn_double_pendulum`` is the energy-conservation
comparison of Cranmer et al., "Lagrangian Neural Networks" (2020). The
protocols, and where these runs depart from them, are described in
``benchmarks/README.md``.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from scipy.integrate import solve_ivp

from dynlearn import HamiltonianNN, LagrangianNN, NeuralODE
from dynlearn.datasets import (
    DatasetNotFoundError,
    DownloadError,
    fetch_real_pendulum,
    make_double_pendulum,
    make_mass_spring,
    make_pendulum,
    make_two_body,
)
# Private by need: energies and fields at rollout states the simulators never produced (truth holds simulated ones).
from dynlearn.datasets._physical import _double_pendulum_energy, _pendulum_energy, _pendulum_field, _two_body_energy
from dynlearn.exceptions import DynlearnError

from harness import Context, Record, register

PENDULUM_PATH_VARIABLE = "DYNLEARN_PENDULUM_PATH"

# HNN Table 1 as published: (mean, ±) in the table's units, ×10³ (two-body ×10⁶).
PUBLISHED = {
    "mass_spring": {
        "test_loss": {"baseline": (37, 2), "hnn": (36, 2)},
        "energy_mse": {"baseline": (170, 20), "hnn": (0.38, 0.1)},
    },
    "pendulum": {
        "test_loss": {"baseline": (35, 2), "hnn": (36, 2)},
        "energy_mse": {"baseline": (42, 10), "hnn": (25, 5)},
    },
    "real_pendulum": {
        "test_loss": {"baseline": (2.2, 0.3), "hnn": (6.0, 0.6)},
        "energy_mse": {"baseline": (390, 7), "hnn": (14, 5)},
    },
    "two_body": {
        "test_loss": {"baseline": (30, 0.1), "hnn": (2.8, 0.1)},
        "energy_mse": {"baseline": (6.3e4, 3e4), "hnn": (39, 5)},
    },
}
TABLE_SCALE = {"mass_spring": 1e3, "pendulum": 1e3, "real_pendulum": 1e3, "two_body": 1e6}

# The published networks: two hidden layers of 200 tanh units, Adam at 1e-3,
# full batch (one minibatch holding every example), no held-out series.
NETWORK = dict(hidden_layer_sizes=(200, 200), activation="tanh", learning_rate=1e-3)
FULL_BATCH = 1_000_000_000
TRAINING = dict(batch_size=FULL_BATCH, validation_fraction=0.0, patience=None)
# The published models regress time derivatives: on the simulated tasks the
# true derivatives of the noise-free states (measured derivatives, passed as
# ``fit(..., derivatives=...)``), on the real pendulum central differences of
# the observations, as Greydanus et al. did. ("auto" without derivatives would
# add a trajectory stage that alone costs more than a quick run's whole budget.)
FIT_ON = "derivatives"
# The published protocol integrates rollouts at 1e-9. The networks run in
# float32, so their fields are only defined to about 1e-7 relative: a tighter
# tolerance makes the integrator chase rounding noise with hundreds of times
# more steps, and on the mass-spring task it changed no energy MSE in its
# first five significant digits.
ROLLOUT_TOLERANCE = 1e-7
# A rollout that needs more vector-field evaluations than this (four times
# what the slowest well-behaved one took, a LagrangianNN's on the double
# pendulum) has left the region the model was trained on and blows up; it is
# counted as failed.
ROLLOUT_EVALUATIONS = 100_000
IDEAL_SERIES = 25  # training series of tasks 1 and 2; as many are held out


@dataclass(frozen=True)
class Budget:
    """How much of the published protocols a run can afford.

    Parameters
    ----------
    seeds : tuple of int
        Each seed draws the simulated data and initialises the models.
    steps : dict of str to int
        Full-batch Adam steps per model (``"baseline"``, ``"hnn"``) on
        tasks 1–3 (published: 2,000).
    two_body_steps : dict of str to int
        The same on the two-body task (published: 10,000).
    two_body_series : int
        Two-body series, 80% of them for training (published: 200).
    rollout_times : int
        Points at which the energy of each rollout is compared.
    lnn_seeds : tuple of int
        Seeds of the double-pendulum comparison.
    lnn_steps : dict of str to int
        Steps per model (``"baseline"``, ``"lnn"``) on the double pendulum.
    """

    seeds: tuple[int, ...]
    steps: dict[str, int]
    two_body_steps: dict[str, int]
    two_body_series: int
    rollout_times: int
    lnn_seeds: tuple[int, ...]
    lnn_steps: dict[str, int]


FULL = Budget(
    seeds=(0, 1, 2),
    steps={"baseline": 300, "hnn": 2000},
    two_body_steps={"baseline": 60, "hnn": 1000},
    two_body_series=200,
    rollout_times=200,
    lnn_seeds=(0, 1),
    lnn_steps={"baseline": 200, "lnn": 800},
)
QUICK = Budget(
    seeds=(0,),
    steps={"baseline": 200, "hnn": 1000},
    two_body_steps={"baseline": 50, "hnn": 800},
    two_body_series=100,
    rollout_times=100,
    lnn_seeds=(0,),
    lnn_steps={"baseline": 100, "lnn": 500},
)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread, restoring the previous setting afterwards.

    The networks are small, so a second intra-op thread adds only
    synchronisation; and while another process keeps the other core busy,
    two threads make every step tens of times slower.
    """
    with torch_threads(1):
        yield


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------ rollouts
class RolloutFailed(RuntimeError):
    """A model's rollout could not be integrated to the end."""


def integrate(model: Any, start: np.ndarray, times: np.ndarray) -> np.ndarray:
    """States ``(n_rollouts, n_times, n_features)`` of a fitted model's flow from ``start``, all solved at once.

    scipy's DOP853 integrates in double precision around the model's
    ``vector_field`` at ``ROLLOUT_TOLERANCE``: the published protocol
    integrates every model this way, and one integrator for all models
    means that differences come from the models.

    Raises
    ------
    RolloutFailed
        When the model's field cannot be evaluated on the way (a
        LagrangianNN's singular mass matrix), the integration fails, or it
        needs more than ``ROLLOUT_EVALUATIONS`` evaluations.
    """
    shape = start.shape
    evaluations = 0

    def field(_: float, flat: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        if evaluations > ROLLOUT_EVALUATIONS:
            raise RolloutFailed(f"more than {ROLLOUT_EVALUATIONS} evaluations of the field")
        return model.vector_field(flat.reshape(shape)).ravel()

    try:
        solution = solve_ivp(
            field, (times[0], times[-1]), start.ravel(), method="DOP853", t_eval=times,
            rtol=ROLLOUT_TOLERANCE, atol=ROLLOUT_TOLERANCE,
        )
    except DynlearnError as error:
        # Its first sentence says what failed; the rest is advice for fitting.
        raise RolloutFailed(str(error).split(". ")[0]) from None
    if not solution.success:
        raise RolloutFailed(solution.message)
    return solution.y.T.reshape(len(times), *shape).swapaxes(0, 1)


def rollouts(model: Any, start: np.ndarray, times: np.ndarray) -> np.ndarray:
    """States ``(n_rollouts, n_times, n_features)`` from each initial state, NaN for rollouts that failed.

    Solving all rollouts together costs one call of the network per step
    for all of them; when that fails, each is solved alone, so that one
    rollout that blows up does not void the others.
    """
    try:
        return integrate(model, start, times)
    except RolloutFailed:
        pass
    states = np.full((len(start), len(times), start.shape[1]), np.nan)
    for i, x0 in enumerate(start):
        try:
            states[i] = integrate(model, x0[None], times)[0]
        except RolloutFailed as failure:
            print(f"    rollout {i} of {type(model).__name__} failed: {failure}", flush=True)
    return states


# ------------------------------------------------------------- HNN Table 1
@dataclass
class Split:
    """One task's data for one seed: what the models fit and what they are judged on.

    Attributes
    ----------
    train : DataFrame
        The long frame (``series_id``, ``time``, features) the estimators fit.
    states, rates : ndarray of shape (n_points, n_features)
        Held-out observed states and their true time derivatives.
    start : ndarray of shape (n_rollouts, n_features)
        Initial states of the rollouts.
    times : ndarray of shape (n_times,)
        Rollout times, the first being the time of ``start``.
    energy : callable
        The true energy of states ``(..., n_features)``.
    reference : ndarray of shape (n_rollouts, n_times)
        The true energy along the true trajectories from ``start``.
    field : callable or None
        The true vector field, when known: the test loss it would score at
        the noisy held-out states is the floor no model can beat.
    train_rates : DataFrame or None
        The true time derivatives at ``train``'s rows (same layout), when
        the task has them; the derivative-trained model fits on them.
    """

    train: pd.DataFrame
    states: np.ndarray
    rates: np.ndarray
    start: np.ndarray
    times: np.ndarray
    energy: Callable[[np.ndarray], np.ndarray]
    reference: np.ndarray
    field: Callable[[np.ndarray], np.ndarray] | None = None
    train_rates: pd.DataFrame | None = None


def spring_energy(x: np.ndarray) -> np.ndarray:
    """``H = q²/2 + p²/2`` of the ideal mass-spring (k = m = 1)."""
    return 0.5 * (x[..., 0] ** 2 + x[..., 1] ** 2)


def spring_field(x: np.ndarray) -> np.ndarray:
    """``(dq/dt, dp/dt) = (p, -q)``."""
    return np.stack([x[..., 1], -x[..., 0]], axis=-1)


def real_pendulum_energy(x: np.ndarray) -> np.ndarray:
    """``H = 2.4 (1 - cos q) + p²``, the Hamiltonian Greydanus et al. fitted to the real pendulum."""
    return 2.4 * (1 - np.cos(x[..., 0])) + x[..., 1] ** 2


# The published pendulum: m = l = 1, g = 3.
PENDULUM = dict(mass=1.0, length=1.0, gravity=3.0)
pendulum_energy = partial(_pendulum_energy, **PENDULUM)
pendulum_field = partial(_pendulum_field, **PENDULUM)
two_body_energy = partial(_two_body_energy, mass=1.0, gravitational_constant=1.0)


def held_out_split(
    frame: pd.DataFrame, truth: Any, n_train: int, energy: Callable, n_times: int, **extra: Any
) -> Split:
    """Split simulated series: the first ``n_train`` train, the others are judged.

    Test inputs are the observed (noisy) states, compared with the true
    derivatives at the same rows, as published. Rollouts start from the
    noise-free first state of each held-out series and last 20 time units;
    the systems are conservative, so the true energy is that of the start.
    """
    features = list(frame.columns[2:])
    held_out = frame["series_id"] >= n_train
    start = truth.states[n_train:, 0]
    train_rates = frame.copy()
    train_rates[features] = truth.derivatives.reshape(-1, len(features))
    return Split(
        train=frame[~held_out].reset_index(drop=True),
        train_rates=train_rates[~held_out].reset_index(drop=True),
        states=frame.loc[held_out, features].to_numpy(),
        rates=truth.derivatives[n_train:].reshape(-1, len(features)),
        start=start,
        times=np.linspace(0.0, 20.0, n_times),
        energy=energy,
        reference=np.repeat(energy(start)[:, None], n_times, axis=1),
        **extra,
    )


def mass_spring_split(seed: int, budget: Budget) -> Split:
    """Task 1: 30 noisy points (σ = 0.1) on t ∈ [0, 3] per series."""
    frame, truth = make_mass_spring(
        n_series=2 * IDEAL_SERIES, n_times=30, t_span=(0.0, 3.0), noise=0.1, return_truth=True, random_state=seed
    )
    return held_out_split(frame, truth, IDEAL_SERIES, spring_energy, budget.rollout_times, field=spring_field)


def pendulum_split(seed: int, budget: Budget) -> Split:
    """Task 2: the pendulum with m = l = 1 and g = 3, sampled as task 1."""
    frame, truth = make_pendulum(
        n_series=2 * IDEAL_SERIES, n_times=30, t_span=(0.0, 3.0), noise=0.1, return_truth=True, random_state=seed,
        **PENDULUM,
    )
    return held_out_split(frame, truth, IDEAL_SERIES, pendulum_energy, budget.rollout_times, field=pendulum_field)


def two_body_split(seed: int, budget: Budget) -> Split:
    """Task 4: noise-free orbits, 50 points on t ∈ [0, 20]; 80% of the series train."""
    n_series = budget.two_body_series
    frame, truth = make_two_body(
        n_series=n_series, n_times=50, t_span=(0.0, 20.0), return_truth=True, random_state=seed
    )
    return held_out_split(frame, truth, int(0.8 * n_series), two_body_energy, budget.rollout_times)


def pendulum_data_path() -> str | None:
    """The local copy of the real pendulum named by ``DYNLEARN_PENDULUM_PATH`` (``--pendulum-path`` sets it)."""
    return os.environ.get(PENDULUM_PATH_VARIABLE) or None


def real_pendulum_split(seed: int, budget: Budget) -> Split:
    """Task 3: the first 80% of the recording train; the rest is judged.

    The "true" derivatives of the held-out rows are central differences in
    time. The rollout runs from the first held-out state over the held-out
    span, and its energy is compared with the published Hamiltonian along
    the measured motion (which loses energy to friction). The data are the
    same for every seed; the seed initialises the models.
    """
    frame = fetch_real_pendulum(path=pendulum_data_path()).frame
    n_train = int(0.8 * len(frame))
    test = frame.iloc[n_train:]
    states, times = test[["q", "p"]].to_numpy(), test["time"].to_numpy()
    return Split(
        train=frame.iloc[:n_train].reset_index(drop=True),
        states=states,
        rates=np.gradient(states, times, axis=0),
        start=states[:1],
        times=times,
        energy=real_pendulum_energy,
        reference=real_pendulum_energy(states)[None],
    )


@dataclass(frozen=True)
class Task:
    name: str
    split: Callable[[int, Budget], Split]

    def steps(self, budget: Budget) -> dict[str, int]:
        return budget.two_body_steps if self.name == "two_body" else budget.steps


TASKS = (
    Task("mass_spring", mass_spring_split),
    Task("pendulum", pendulum_split),
    Task("real_pendulum", real_pendulum_split),
    Task("two_body", two_body_split),
)


def table1_models(steps: dict[str, int], seed: int, device: str) -> dict[str, Any]:
    """The baseline and the HNN with the published network and optimiser (NeuralODE keeps its own windows)."""
    common = dict(**NETWORK, **TRAINING, random_state=seed, device=device)
    return {
        "baseline": NeuralODE(max_epochs=steps["baseline"], **common),
        "hnn": HamiltonianNN(max_epochs=steps["hnn"], fit_on=FIT_ON, **common),
    }


def table1_scores(model: Any, split: Split) -> dict[str, float]:
    """One fitted model's figures on one split, in raw units.

    ``test_loss`` is the MSE of the time derivatives; ``energy_mse`` the MSE
    of the energy over every rollout that reached the end, and
    ``energy_mse_median`` the median of the rollouts' own MSEs (one rollout
    that escapes can dominate the mean); ``rollouts_failed`` counts the
    others.
    """
    test_loss = float(np.mean((model.vector_field(split.states) - split.rates) ** 2))
    errors = split.energy(rollouts(model, split.start, split.times)) - split.reference
    per_rollout = np.mean(errors**2, axis=1)
    finished = per_rollout[np.isfinite(per_rollout)]
    return {
        "test_loss": test_loss,
        "energy_mse": float(np.mean(finished)) if len(finished) else float("nan"),
        "energy_mse_median": float(np.median(finished)) if len(finished) else float("nan"),
        "rollouts_failed": len(per_rollout) - len(finished),
    }


def summary(name: str, values: list[float], unit: str, published: tuple[float, float] | None = None) -> list[Record]:
    """Mean and standard deviation over seeds (ddof 1; NaN for one seed), then the published pair if any."""
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    records = [
        Record("hnn_table1", f"{name}.mean", float(np.mean(values)), unit),
        Record("hnn_table1", f"{name}.std", spread, unit),
    ]
    if published is not None:
        records += [
            Record("hnn_table1", f"{name}.published_mean", published[0], unit),
            Record("hnn_table1", f"{name}.published_std", published[1], unit),
        ]
    return records


def run_task(task: Task, budget: Budget, device: str) -> list[Record]:
    """Every seed of one task: per-seed figures, then summaries beside the published ones."""
    scale = TABLE_SCALE[task.name]
    unit = f"×10^{round(np.log10(scale))}"
    steps = task.steps(budget)
    scores: dict[tuple[str, str], list[float]] = {}
    seconds: dict[str, list[float]] = {}
    floors = []
    records = []
    for seed in budget.seeds:
        split = task.split(seed, budget)
        if split.field is not None:
            floors.append(float(np.mean((split.field(split.states) - split.rates) ** 2)) * scale)
        for name, model in table1_models(steps, seed, device).items():
            started = time.perf_counter()
            measured = {"derivatives": split.train_rates} if name == "hnn" and split.train_rates is not None else {}
            model.fit(split.train, **measured)
            seconds.setdefault(name, []).append(time.perf_counter() - started)
            for metric, value in table1_scores(model, split).items():
                if metric == "rollouts_failed":
                    records.append(Record("hnn_table1", f"{task.name}.{metric}.{name}.seed{seed}", value, "rollouts"))
                    continue
                scores.setdefault((metric, name), []).append(value * scale)
                records.append(Record("hnn_table1", f"{task.name}.{metric}.{name}.seed{seed}", value * scale, unit))
    for (metric, name), values in sorted(scores.items()):
        published = PUBLISHED[task.name].get(metric, {}).get(name)
        records += summary(f"{task.name}.{metric}.{name}", values, unit, published)
    if floors:
        records.append(Record("hnn_table1", f"{task.name}.test_loss.true_field.mean", float(np.mean(floors)), unit))
    for name, spent in seconds.items():
        records += [
            Record("hnn_table1", f"{task.name}.steps.{name}", steps[name], "full-batch steps"),
            Record("hnn_table1", f"{task.name}.fit_time.{name}.mean", float(np.mean(spent)), "s"),
        ]
    return records


@register(
    "hnn_table1",
    "HNN Table 1, tasks 1–4 (ideal mass-spring, ideal pendulum, real pendulum of Schmidt & Lipson, two-body): "
    "HamiltonianNN (fit on the true derivatives of the simulated states, on central differences of the real pendulum) vs the NeuralODE baseline (windows of 10 observations), both "
    "2 × 200 tanh, Adam 1e-3, full batch. test_loss: MSE of vector_field against the true time derivatives at "
    "held-out observed states (true_field: what the true dynamics score there, the noise floor); energy_mse: MSE "
    "of the true energy along rollouts from held-out initial states (DOP853, tol 1e-7) against the true energy. "
    "In the table's units (×10³, two-body ×10⁶); std over seeds (ddof 1). Full runs: 3 seeds, published data "
    "sizes, steps as listed (published: 2,000; two-body 10,000); quick runs: 1 seed, fewer steps, 100 two-body "
    "series. Real pendulum from --pendulum-path or $DYNLEARN_PENDULUM_PATH, else the download cache.",
)
def hnn_table1(context: Context) -> list[Record]:
    budget = QUICK if context.quick else FULL
    records = [Record("hnn_table1", "seeds", len(budget.seeds), "seeds")]
    with single_thread():
        for task in TASKS:
            try:
                records += run_task(task, budget, context.device.type)
            except (DatasetNotFoundError, DownloadError) as error:
                reason = (
                    f"skipped, no data ({type(error).__name__}): pass --pendulum-path or set "
                    f"{PENDULUM_PATH_VARIABLE} to a folder holding real_pend_h_1.txt"
                )
                print(f"  {task.name} {reason}", flush=True)
                records.append(Record("hnn_table1", f"{task.name}.skipped", 1, reason))
    return records


# ------------------------------------------------------ LNN double pendulum
DOUBLE_PENDULUM = dict(mass1=1.0, mass2=1.0, length1=1.0, length2=1.0, gravity=9.81)
LNN_TRAIN_SERIES, LNN_TEST_SERIES, LNN_TIMES, LNN_SPAN = 24, 8, 100, 5.0
# Four times the span of a training series. Over 50 s, six of the eight
# rollouts of a quick run's LagrangianNN failed (singular learned mass matrix,
# or a stalled integrator).
LNN_HORIZON = 20.0
LNN_NETWORK = dict(hidden_layer_sizes=(128, 128), learning_rate=1e-3)
ENERGY_METRICS = {"energy_error_first_tenth": "J", "energy_error_last_tenth": "J", "energy_mse": "J²"}
LNN_UNITS = {**ENERGY_METRICS, "rollouts_failed": "rollouts"}


def double_pendulum_energy(x: np.ndarray) -> np.ndarray:
    """True energy (J) of states ``(..., 4)``: angles ``q1, q2``, then angular velocities ``v1, v2``.

    The simulator's Hamiltonian takes conjugate momenta:
    ``p1 = (m1 + m2) l1² v1 + m2 l1 l2 v2 cos Δ`` and
    ``p2 = m2 l2² v2 + m2 l1 l2 v1 cos Δ``, with ``Δ = q1 - q2``.
    """
    m1, m2, l1, l2 = (DOUBLE_PENDULUM[k] for k in ("mass1", "mass2", "length1", "length2"))
    q1, q2, v1, v2 = np.moveaxis(x, -1, 0)
    coupling = m2 * l1 * l2 * np.cos(q1 - q2)
    p1 = (m1 + m2) * l1**2 * v1 + coupling * v2
    p2 = m2 * l2**2 * v2 + coupling * v1
    return _double_pendulum_energy(np.stack([q1, q2, p1, p2], axis=-1), **DOUBLE_PENDULUM)


def double_pendulum_data(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Training frame of angles and angular velocities (``q1, q2, v1, v2``), and held-out initial states."""
    frame, truth = make_double_pendulum(
        n_series=LNN_TRAIN_SERIES + LNN_TEST_SERIES, n_times=LNN_TIMES, t_span=(0.0, LNN_SPAN), return_truth=True,
        random_state=seed, **DOUBLE_PENDULUM,
    )
    # The first two time derivatives of the canonical state are the angular velocities.
    states = np.concatenate([truth.states[..., :2], truth.derivatives[..., :2]], axis=-1)
    columns = {name: states[..., k].ravel() for k, name in enumerate(("q1", "q2", "v1", "v2"))}
    frame = frame[["series_id", "time"]].assign(**columns)
    return frame[frame["series_id"] < LNN_TRAIN_SERIES].reset_index(drop=True), states[LNN_TRAIN_SERIES:, 0]


def energy_errors(model: Any, start: np.ndarray, n_times: int) -> dict[str, float]:
    """Mean absolute true-energy error over the first and the last tenth of the finished rollouts, and the MSE."""
    states = rollouts(model, start, np.linspace(0.0, LNN_HORIZON, n_times))
    error = double_pendulum_energy(states) - double_pendulum_energy(start)[:, None]
    finished = error[np.isfinite(error).all(axis=1)]
    if not len(finished):
        return {**dict.fromkeys(ENERGY_METRICS, float("nan")), "rollouts_failed": len(error)}
    tenth = max(1, n_times // 10)
    return {
        "energy_error_first_tenth": float(np.abs(finished[:, :tenth]).mean()),
        "energy_error_last_tenth": float(np.abs(finished[:, -tenth:]).mean()),
        "energy_mse": float(np.mean(finished**2)),
        "rollouts_failed": len(error) - len(finished),
    }


@register(
    "lnn_double_pendulum",
    f"LagrangianNN (fit on central differences of the velocities) vs the NeuralODE baseline on "
    f"make_double_pendulum (m = l = 1, g = 9.81) observed as angles and angular velocities: {LNN_TRAIN_SERIES} "
    f"noise-free training series of {LNN_TIMES} points on [0, {LNN_SPAN:g}] s, both 2 × 128 units, Adam 1e-3, "
    f"full batch. Rollouts from {LNN_TEST_SERIES} held-out initial states over {LNN_HORIZON:g} s (DOP853, tol "
    "1e-7). Energy errors are |E(rollout) − E(start)| of the true energy, averaged over the first and the last "
    "tenth of the rollouts: a bounded error stays flat, a drifting one grows. Full runs: 2 seeds; quick: 1 seed, "
    "fewer steps.",
)
def lnn_double_pendulum(context: Context) -> list[Record]:
    budget = QUICK if context.quick else FULL
    scores: dict[tuple[str, str], list[float]] = {}
    records = [
        Record("lnn_double_pendulum", f"steps.{name}", n, "full-batch steps") for name, n in budget.lnn_steps.items()
    ]
    with single_thread():
        for seed in budget.lnn_seeds:
            train, start = double_pendulum_data(seed)
            common = dict(**LNN_NETWORK, **TRAINING, random_state=seed, device=context.device.type)
            models = {
                "baseline": NeuralODE(max_epochs=budget.lnn_steps["baseline"], **common),
                "lnn": LagrangianNN(max_epochs=budget.lnn_steps["lnn"], fit_on=FIT_ON, **common),
            }
            for name, model in models.items():
                started = time.perf_counter()
                model.fit(train)
                spent = time.perf_counter() - started
                records.append(Record("lnn_double_pendulum", f"fit_time.{name}.seed{seed}", spent, "s"))
                for metric, value in energy_errors(model, start, 2 * budget.rollout_times).items():
                    scores.setdefault((metric, name), []).append(value)
                    metric_name = f"{metric}.{name}.seed{seed}"
                    records.append(Record("lnn_double_pendulum", metric_name, value, LNN_UNITS[metric]))
    for (metric, name), values in sorted(scores.items()):
        mean = float(np.mean(values))
        records.append(Record("lnn_double_pendulum", f"{metric}.{name}.mean", mean, LNN_UNITS[metric]))
    return records
