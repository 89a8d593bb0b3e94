"""The suite's tasks: each one a registered function that builds train/test frames from dynlearn.datasets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..data import ID_COLUMN, TIME_COLUMN

PENDULUM_PATH_VARIABLE = "DYNLEARN_PENDULUM_PATH"
PHYSIONET_PATH_VARIABLE = "DYNLEARN_PHYSIONET_PATH"


class TaskUnavailable(Exception):
    """A task's data cannot be had here (a file that was not given); the suite skips it with this note."""


@dataclass
class TaskData:
    """What a task hands the suite for one seed.

    Frames are long frames (``series_id``, ``time``, variables). Models fit
    on ``train``; they are then conditioned on ``history`` (test series, or
    the training series themselves for single-series data) and asked for
    ``interpolation`` (held-out rows inside the history's span) and
    ``future`` (rows after it). Both are compared with the observed entries
    only.

    Conservative tasks also give ``energy`` (the true energy of states
    ``(..., n_features)`` in column order) and long-rollout starting states
    ``rollout_x0`` ``(n, n_features)`` at times ``rollout_times[0]``.

    Tasks with known inputs name their columns in ``covariates``: they are
    not scored, query frames carry them (:meth:`queries`), and a model that
    takes ``covariates=`` is given them (the others are fitted without those
    columns, so the table shows what reading the inputs is worth).
    """

    train: pd.DataFrame
    history: pd.DataFrame
    interpolation: pd.DataFrame
    future: pd.DataFrame
    energy: Callable[[np.ndarray], np.ndarray] | None = None
    rollout_x0: np.ndarray | None = None
    rollout_times: np.ndarray | None = None
    covariates: tuple[str, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        """The scored columns: every value column but the inputs."""
        return [c for c in self.train.columns if c not in (ID_COLUMN, TIME_COLUMN, *self.covariates)]

    def queries(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The query rows of ``frame``: series, time and the known inputs at those times."""
        return frame[[ID_COLUMN, TIME_COLUMN, *self.covariates]]

    def without_inputs(self) -> "TaskData":
        """The same split with the input columns dropped, for a model that cannot read them."""
        if not self.covariates:
            return self
        drop = list(self.covariates)
        return replace(
            self, covariates=(), train=self.train.drop(columns=drop), history=self.history.drop(columns=drop),
            interpolation=self.interpolation.drop(columns=drop), future=self.future.drop(columns=drop),
        )

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


@dataclass(frozen=True)
class Task:
    """One registered task.

    Parameters
    ----------
    name : str
        Row label and ``--only`` name.
    kind : str
        "irregular", "conservative", "chaotic", "stochastic", "real" or "inputs".
    description : str
        One line for the report: data, sizes, split.
    build : callable ``(size, seed) -> TaskData``
        ``size`` is "tiny" (seconds: a smoke test), "quick" or "full" (see
        :func:`pick`). Raises :class:`TaskUnavailable` when the data cannot
        be had.
    phase_space : bool
        Columns are positions then their momenta/velocities (energy-based models apply).
    published : dict
        ``(estimator, metric) -> (mean, std, source)`` published figures for
        cells that correspond (the protocol is stated in ``source``).
    real_seeds : bool
        Whether the data change with the seed (simulated data do; real data do not).
    """

    name: str
    kind: str
    description: str
    build: Callable[[str, int], TaskData]
    phase_space: bool = False
    published: dict[tuple[str, str], tuple[float, float, str]] = field(default_factory=dict)


TASKS: dict[str, Task] = {}

SIZES = ("tiny", "quick", "full")


def pick(size: str, *, tiny: Any, quick: Any, full: Any) -> Any:
    """The setting for a run size: "tiny" (a smoke test), "quick" or "full"."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {SIZES}; got {size!r}.")
    return {"tiny": tiny, "quick": quick, "full": full}[size]


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to :data:`TASKS`; that is all a new task needs."""
    if task.name in TASKS and not replace:
        raise ValueError(f"A task named {task.name!r} is already registered; pass replace=True to swap it.")
    TASKS[task.name] = task
    return task


# ------------------------------------------------------------------ splitting
def split_series(
    frame: pd.DataFrame,
    *,
    split_time: float,
    seed: int,
    test_fraction: float | None = 0.25,
    interpolation_fraction: float = 0.2,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, history, interpolation, future) frames.

    ``test_fraction`` of the series are held out (None: single-series data,
    where the history rows are also the training rows). Rows of test series
    up to ``split_time`` are the history, less ``interpolation_fraction`` of
    them (never a series' first row) held out as interpolation targets;
    later rows are the forecast targets.
    """
    rng = np.random.RandomState(seed)
    ids = frame[ID_COLUMN].unique()
    if test_fraction is None:
        test_ids = ids
    else:
        n_test = max(1, int(round(test_fraction * len(ids))))
        test_ids = rng.permutation(ids)[:n_test]
    is_test = frame[ID_COLUMN].isin(test_ids).to_numpy()
    past = frame[TIME_COLUMN].to_numpy() <= split_time
    first = ~frame.duplicated(ID_COLUMN, keep="first").to_numpy()
    held = is_test & past & ~first & (rng.uniform(size=len(frame)) < interpolation_fraction)
    history = frame[is_test & past & ~held]
    interpolation = frame[held]
    future = frame[is_test & ~past]
    train = history if test_fraction is None else frame[~is_test]
    parts = (train, history, interpolation, future)
    return tuple(part.reset_index(drop=True) for part in parts)  # type: ignore[return-value]


def _span_split(frame: pd.DataFrame, fraction: float) -> float:
    low, high = frame[TIME_COLUMN].min(), frame[TIME_COLUMN].max()
    return float(low + fraction * (high - low))


# ------------------------------------------------------------------ built-ins
PERIODIC_PUBLISHED = (
    "Rubanova et al. 2019, toy periodic: 1,000 series × 100 shared points, 50% observed (interpolation), "
    "first half conditions the second (extrapolation)"
)


def _periodic(size: str, seed: int) -> TaskData:
    from ..datasets import make_periodic

    n_series, n_times = pick(size, tiny=(10, 12), quick=(24, 30), full=(1000, 100))
    # The published protocol draws one set of irregular times for all series; smaller runs give
    # each series its own, which the per-series clock is for.
    irregular = pick(size, tiny=True, quick=True, full="shared")
    frame = make_periodic(n_series=n_series, n_times=n_times, irregular=irregular, random_state=seed)
    # Half the span conditions, half is forecast; half of the history is
    # held out for interpolation: the "50% observed" cells of the protocol.
    parts = split_series(frame, split_time=2.5, seed=seed, test_fraction=0.2, interpolation_fraction=0.5)
    return TaskData(*parts)


register_task(
    Task(
        "periodic",
        "irregular",
        "make_periodic: sinusoids on [0, 5] at irregular times (quick: each series its own; full: shared, as "
        "published), noise 0.01; 20% of the "
        "series held out, conditioned on t ≤ 2.5 with half those rows hidden (interpolation targets), "
        "forecast t > 2.5. Quick: 24 series × 30 points; full: 1,000 × 100 (the Latent ODE toy protocol).",
        _periodic,
        published={
            ("ODERNN", "interp_mse"): (0.01666, float("nan"), PERIODIC_PUBLISHED),
            ("LatentODE", "interp_mse"): (0.01717, float("nan"), PERIODIC_PUBLISHED),
            ("LatentODE", "forecast_mse"): (0.01388, float("nan"), PERIODIC_PUBLISHED),
        },
    )
)


def mass_spring_energy(states: np.ndarray) -> np.ndarray:
    """``H = q²/2 + p²/2`` (unit mass and stiffness), of states ``(..., 2)``."""
    return 0.5 * states[..., 0] ** 2 + 0.5 * states[..., 1] ** 2


def _mass_spring(size: str, seed: int) -> TaskData:
    from ..datasets import make_mass_spring

    frame, truth = make_mass_spring(
        n_series=pick(size, tiny=8, quick=50, full=50), n_times=30, t_span=(0.0, 3.0), noise=0.1,
        return_truth=True, random_state=seed,
    )
    train, history, interpolation, future = split_series(frame, split_time=2.0, seed=seed, test_fraction=0.5)
    test_ids = history[ID_COLUMN].unique()
    order = {name: i for i, name in enumerate(frame[ID_COLUMN].unique())}
    x0 = truth.states[[order[i] for i in test_ids], 0]
    horizon = pick(size, tiny=5.0, quick=10.0, full=30.0)  # 1.6 / 4.8 periods: well past the 3 time units seen
    return TaskData(
        train, history, interpolation, future,
        energy=mass_spring_energy,
        rollout_x0=x0,
        rollout_times=np.arange(0.0, horizon + 1e-9, 0.1),
    )


register_task(
    Task(
        "mass_spring",
        "conservative",
        "make_mass_spring (H = q²/2 + p²/2): 50 series × 30 points on [0, 3], noise 0.1 (the HNN Table 1 "
        "protocol); 25 train, 25 test series conditioned on t ≤ 2 (20% of rows hidden), forecast t > 2; energy "
        "drift over a rollout from the test series' true initial states, 10 (quick) or 30 (full) time units.",
        _mass_spring,
        phase_space=True,
    )
)


def _lorenz(size: str, seed: int) -> TaskData:
    from ..datasets import make_lorenz

    n_series, n_times = pick(size, tiny=(8, 15), quick=(24, 40), full=(128, 200))
    frame = make_lorenz(n_series=n_series, n_times=n_times, t_span=(0.0, 2.0), noise=0.1, irregular=True,
                        random_state=seed)
    return TaskData(*split_series(frame, split_time=1.5, seed=seed))


register_task(
    Task(
        "lorenz",
        "chaotic",
        "make_lorenz (σ=10, ρ=28, β=8/3): series on their own irregular times on [0, 2], noise 0.1; 25% of "
        "the series held out, conditioned on t ≤ 1.5, forecast t > 1.5 (about half a Lyapunov time). "
        "Quick: 24 series × 40 points; full: 128 × 200.",
        _lorenz,
    )
)


def _ou(size: str, seed: int) -> TaskData:
    from ..datasets import make_ou_process

    n_series, n_times = pick(size, tiny=(8, 12), quick=(48, 30), full=(512, 40))
    frame = make_ou_process(n_series=n_series, n_times=n_times, t_span=(0.0, 5.0), irregular=True, random_state=seed)
    return TaskData(*split_series(frame, split_time=3.5, seed=seed))


register_task(
    Task(
        "ou",
        "stochastic",
        "make_ou_process (θ=1, μ=0, σ=0.5): series on their own irregular times on [0, 5], initial states "
        "N(0, 1); 25% held out, conditioned on t ≤ 3.5, forecast t > 3.5. The best deterministic forecast is "
        "the conditional mean; CRPS and coverage judge models that sample. Quick: 48 series × 30 points; "
        "full: 512 × 40.",
        _ou,
    )
)


def _lynx_hare(size: str, seed: int) -> TaskData:
    from ..datasets import load_lynx_hare

    frame = load_lynx_hare().frame
    frame = frame.assign(time=frame[TIME_COLUMN].astype(float))
    parts = split_series(frame, split_time=1915.0, seed=seed, test_fraction=None, interpolation_fraction=0.15)
    return TaskData(*parts)


register_task(
    Task(
        "lynx_hare",
        "real",
        "load_lynx_hare (shipped): one series of hare and lynx pelts, 1900–1920; fit on 1900–1915 with 15% "
        "of those years held out (interpolation), forecast 1916–1920.",
        _lynx_hare,
    )
)


def _real_pendulum(size: str, seed: int) -> TaskData:
    from ..datasets import DatasetNotFoundError, fetch_real_pendulum

    path = os.environ.get(PENDULUM_PATH_VARIABLE) or None
    try:
        frame = fetch_real_pendulum(path=path, download_if_missing=False).frame
    except (DatasetNotFoundError, OSError) as error:
        raise TaskUnavailable(
            f"real pendulum not found ({error}); pass --pendulum-path DIR or set ${PENDULUM_PATH_VARIABLE}, "
            "or run 'dynlearn datasets fetch real_pendulum' once"
        ) from None
    seconds = pick(size, tiny=10.0, quick=30.0, full=np.inf)
    frame = frame[frame[TIME_COLUMN] < frame[TIME_COLUMN].min() + seconds]
    split = _span_split(frame, 0.8)
    parts = split_series(frame, split_time=split, seed=seed, test_fraction=None, interpolation_fraction=0.2)
    return TaskData(*parts)


register_task(
    Task(
        "real_pendulum",
        "real",
        "fetch_real_pendulum (Schmidt & Lipson 2009; --pendulum-path or the cache, never downloaded here): angle "
        "and angular velocity; fit on the first 80% of the recording (quick: of its first 30 s) with 20% of "
        "those rows held out, forecast the rest.",
        _real_pendulum,
        phase_space=True,
    )
)


PHYSIONET_PUBLISHED = (
    "Rubanova et al. 2019: 8,000 patients, 0.1 h grid, variables scaled to [0, 1], interpolation from 50% of "
    "the points, extrapolation of the second 24 h; this task hides 20% of the rows and forecasts after 24 h"
)


def _forced_oscillator(size: str, seed: int) -> TaskData:
    from ..datasets import make_forced_oscillator

    n_series, n_times = pick(size, tiny=(8, 20), quick=(24, 40), full=(200, 100))
    frame = make_forced_oscillator(n_series, n_times, t_span=(0.0, 15.0), input="multisine", random_state=seed)
    train, history, interpolation, future = split_series(frame, split_time=_span_split(frame, 0.5), seed=seed)
    return TaskData(train, history, interpolation, future, covariates=("u",))


register_task(
    Task(
        "forced_oscillator",
        "inputs",
        "make_forced_oscillator: damped oscillator (q, p) driven by a random multisine force u, a new signal "
        "per series; 25% of the series held out, conditioned on the first half (20% of rows hidden) and "
        "forecast under their own future u. Models with covariates= read u; the others are fitted without "
        "it. Quick: 24 series × 40 times; full: 200 × 100.",
        _forced_oscillator,
        phase_space=True,
    )
)


def _physionet(size: str, seed: int) -> TaskData:
    from ..datasets import DatasetNotFoundError, fetch_physionet2012

    path = os.environ.get(PHYSIONET_PATH_VARIABLE) or None
    try:
        grid = pick(size, tiny=1.0, quick=1.0, full=0.1)  # hours
        data = fetch_physionet2012("a", path=path, download_if_missing=False, quantization=grid)
    except (DatasetNotFoundError, OSError) as error:
        raise TaskUnavailable(
            f"PhysioNet 2012 set A not found ({error}); pass --physionet-path DIR or set "
            f"${PHYSIONET_PATH_VARIABLE}"
        ) from None
    frame = data.frame
    ids = frame[ID_COLUMN].unique()
    frame = frame[frame[ID_COLUMN].isin(ids[: pick(size, tiny=12, quick=16, full=len(ids))])]
    # Each variable scaled to [0, 1] over the data, as in the published protocol.
    values = frame[data.feature_names]
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low).where(high > low, 1.0)
    frame = pd.concat([frame[[ID_COLUMN, TIME_COLUMN]], scaled], axis=1)
    frame = frame.loc[:, frame.notna().any()]
    return TaskData(*split_series(frame, split_time=24.0, seed=seed))


register_task(
    Task(
        "physionet",
        "real",
        "fetch_physionet2012 set A (--physionet-path or the cache, never downloaded here): 37 sparse ICU "
        "variables scaled to [0, 1]; 25% of the patients held out, conditioned on the first 24 h (20% of rows "
        "hidden), forecast 24–48 h. Quick: 16 patients on an hourly grid; full: every patient, 6-minute grid.",
        _physionet,
        published={
            ("ODERNN", "interp_mse"): (2.361e-3, 0.086e-3, PHYSIONET_PUBLISHED),
            ("LatentODE", "interp_mse"): (2.118e-3, 0.271e-3, PHYSIONET_PUBLISHED),
            ("LatentODE", "forecast_mse"): (2.231e-3, 0.029e-3, PHYSIONET_PUBLISHED),
        },
    )
)
