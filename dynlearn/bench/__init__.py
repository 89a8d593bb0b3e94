"""The comparison suite behind ``dynlearn bench``: every model on every task, one report.

- :data:`TASKS` / :func:`register_task`: tasks built from :mod:`dynlearn.datasets`
  (an irregular panel, a conservative, a chaotic and a stochastic system,
  real data).
- :data:`MODELS` / :func:`register_model`: every public estimator, the
  discrete-depth counterparts of the continuous model (ResNet-style Euler
  unrolling, a linear-multistep unrolling) and a naive baseline.
- :data:`PERF` / :func:`register_perf`: the one registry of measurements
  (:class:`Benchmark`): the suite's performance rows (solve overhead
  against torchdiffeq, adjoint against direct memory, per-series clocks
  against the union of times, loading a million-row frame), and the
  ``benchmarks/`` scripts' benchmarks (``suite=False``).
- :func:`run_suite` measures; :func:`write_report` writes ``results.csv``,
  ``report.md`` and figures.

Adding a model or a task is one call to :func:`register_model` or
:func:`register_task`.
"""

from ._measure import Counts, PeakMemory, instrument
from ._models import (
    MODELS,
    LinearMultistepODE,
    ModelSpec,
    adams_bashforth2,
    hidden,
    public_estimators,
    register_model,
    training,
)
from ._perf import (
    PERF,
    Benchmark,
    compare_solves,
    irregular_vs_union,
    register_perf,
    solve_on_union,
    suite_rows,
    wrapper_overhead,
)
from ._report import CSV_COLUMNS, write_report
from ._suite import METRICS, Row, SuiteResult, run_suite, select
from ._tasks import (
    PENDULUM_PATH_VARIABLE,
    PHYSIONET_PATH_VARIABLE,
    SIZES,
    TASKS,
    Task,
    TaskData,
    TaskUnavailable,
    pick,
    register_task,
    split_series,
)
from ._timing import BenchContext, Environment, Record, format_value, median, time_interleaved, warm_up

__all__ = [
    "BenchContext",
    "Benchmark",
    "CSV_COLUMNS",
    "Counts",
    "Environment",
    "LinearMultistepODE",
    "METRICS",
    "MODELS",
    "ModelSpec",
    "PENDULUM_PATH_VARIABLE",
    "PERF",
    "PHYSIONET_PATH_VARIABLE",
    "PeakMemory",
    "Record",
    "Row",
    "SIZES",
    "SuiteResult",
    "TASKS",
    "Task",
    "TaskData",
    "TaskUnavailable",
    "adams_bashforth2",
    "compare_solves",
    "format_value",
    "hidden",
    "instrument",
    "irregular_vs_union",
    "median",
    "pick",
    "public_estimators",
    "register_model",
    "register_perf",
    "register_task",
    "run_suite",
    "select",
    "solve_on_union",
    "split_series",
    "suite_rows",
    "time_interleaved",
    "training",
    "warm_up",
    "wrapper_overhead",
]
