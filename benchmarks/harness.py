"""The script layer of dynlearn's benchmarks: registration, running, result files.

A benchmark is a function ``(context) -> list[Record]`` registered with
:func:`register`, into the package's one registry (``dynlearn.bench.PERF``,
beside the performance rows that ``dynlearn bench`` also runs);
:func:`run_all` runs the selected ones and :func:`write_results` stores
their figures as a CSV table and a markdown report. Nothing here asserts on
time: benchmarks measure, people judge.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

# The registry, records, timing and the environment live in the package
# (dynlearn.bench), which `dynlearn bench` runs from an installed copy;
# re-exported here for the benchmark modules of this folder.
from dynlearn.bench import PERF, Environment, Record, format_value, median, register_perf, time_interleaved, warm_up
from dynlearn.bench import BenchContext as Context

__all__ = [
    "PERF", "Arithmetic", "Context", "Environment", "Record", "compare_iterations",
    "default_seconds", "matrix_product_profile",
    "median", "register", "run_all", "time_interleaved", "warm_up", "write_results",
]  # fmt: skip


def default_seconds(quick: bool) -> float:
    """Seconds each comparison aims to spend unless told otherwise: 2 in a quick run, 20 in a full one."""
    return 2.0 if quick else 20.0


def register(name: str, description: str) -> Callable[[Callable[[Context], list[Record]]], Callable]:
    """Decorator adding a benchmark function to ``dynlearn.bench.PERF`` under ``name``, run by run.py only.

    The performance rows of the package are registered there already (and
    also run by ``dynlearn bench``); a name taken by either is refused.
    """
    return register_perf(name, description, suite=False)


# Torch operators that are matrix products (a linear layer's forward and backward run these; torch.mv runs addmv_).
MATRIX_PRODUCTS = (
    "aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::addmv",
    "aten::addmv_",
)  # fmt: skip

# The activations' own kernels and their derivatives' (what a hidden layer computes besides its product).
ACTIVATIONS = (
    "aten::tanh", "aten::tanh_backward", "aten::relu", "aten::threshold_backward", "aten::softplus",
    "aten::softplus_backward", "aten::elu", "aten::elu_backward", "aten::sigmoid", "aten::sigmoid_backward",
    "aten::tanh_", "aten::relu_", "aten::elu_", "aten::sigmoid_",
)  # fmt: skip


@dataclass
class Arithmetic:
    """One iteration's matrix products and activation kernels (torch profiler self time, with dispatch)."""

    product_seconds: float
    products: float
    activation_seconds: float
    operators: float


def matrix_product_profile(candidates: dict[str, Callable[[], object]], iterations: int = 4) -> dict[str, Arithmetic]:
    """Per candidate, per iteration: seconds inside matrix products and activation kernels, and operator counts.

    Profiles ``iterations`` iterations of each candidate with torch's
    profiler and sums the self time of :data:`MATRIX_PRODUCTS` and of
    :data:`ACTIVATIONS`; ``operators`` counts every ``aten`` operator
    called. The two times are what an iteration that did nothing else (no
    other elementwise work, no Python between the kernels) would take.
    """
    from torch.profiler import ProfilerActivity, profile

    figures = {}
    for candidate, iteration in candidates.items():
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(iterations):
                iteration()
        events = profiler.key_averages()

        def seconds(names: tuple[str, ...]) -> float:
            return sum(e.self_cpu_time_total for e in events if e.key in names) / 1e6 / iterations  # noqa: B023

        figures[candidate] = Arithmetic(
            product_seconds=seconds(MATRIX_PRODUCTS),
            products=sum(e.count for e in events if e.key in MATRIX_PRODUCTS) / iterations,
            activation_seconds=seconds(ACTIVATIONS),
            operators=sum(e.count for e in events if e.key.startswith("aten::")) / iterations,
        )
    return figures


def compare_iterations(
    steps: dict[str, Callable[[], tuple[float, int]]], rounds: int, reference: str, device: str = "cpu"
) -> list[dict]:
    """Training iterations of several ways of computing one model, timed interleaved, one row per way.

    Each step takes one iteration and returns its loss and its field
    evaluations. :func:`time_interleaved` runs one untimed warm-up round,
    then exactly ``rounds`` rounds (A, B, C, A, B, C, ...). A row gives the
    median seconds per iteration, the median of the per-round ratios to
    ``reference``'s seconds, the median evaluations and the loss of the last
    iteration.
    """
    losses: dict[str, float] = {}
    evaluations: dict[str, list[int]] = {way: [] for way in steps}

    def recorded(way: str) -> Callable[[], None]:
        def run() -> None:
            losses[way], count = steps[way]()
            evaluations[way].append(count)

        return run

    context = Context(quick=False, device=torch.device(device), seconds_per_comparison=0.0, repeats=rounds)
    seconds = time_interleaved({way: recorded(way) for way in steps}, context)
    return [
        {"way": way, "rounds": rounds, "seconds_per_iteration": median(seconds[way]),
         f"ratio_to_{reference.replace(' ', '_')}": median([a / b for a, b in zip(seconds[way], seconds[reference])]),
         "evaluations_per_iteration": median(evaluations[way]), "final_loss": losses[way]}
        for way in steps
    ]  # fmt: skip


def _log(line: str) -> None:
    print(line, flush=True)  # progress must show even when stdout is a file


def run_all(names: list[str], context: Context, log: Callable[[str], None] = _log) -> tuple[list[Record], dict]:
    """Run the named benchmarks in order; returns their records and seconds spent on each."""
    records: list[Record] = []
    spent: dict[str, float] = {}
    warm_up(context)
    for name in names:
        benchmark = PERF[name]
        log(f"[{name}] {benchmark.description}")
        started = time.perf_counter()
        found = benchmark.function(context)
        spent[name] = time.perf_counter() - started
        for record in found:
            log(f"  {record.metric:<36} {format_value(record.value):>12} {record.unit}")
        records.extend(found)
    return records, spent


def write_rows(out: Path, rows: list[dict], name: str = "results.csv", report: list[str] | None = None,
               report_name: str = "report.md") -> None:
    """Write ``rows`` (dicts with the same keys) to ``out / name``; with ``report``, its lines to
    ``out / report_name`` (and print them)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if report is not None:
        (out / report_name).write_text("\n".join(report) + "\n")
        print("\n".join(report))


def write_results(
    records: list[Record], environment: Environment, spent: dict[str, float], out: Path, command: str
) -> tuple[Path, Path]:
    """Write ``results[_quick].csv`` and ``report[_quick].md`` into ``out``.

    Quick and full runs get their own files, so a quick check never
    overwrites the figures of a full run.
    """
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if environment.mode == "quick" else ""
    table = out / f"results{suffix}.csv"
    report = out / f"report{suffix}.md"
    context_columns = asdict(environment)
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*asdict(records[0]), *context_columns])
        writer.writeheader()
        for record in records:
            writer.writerow({**asdict(record), **context_columns})
    report.write_text(_markdown(records, environment, spent, command, table.name))
    return table, report


def _markdown(
    records: list[Record], environment: Environment, spent: dict[str, float], command: str, table: str
) -> str:
    lines = [
        f"# dynlearn benchmarks ({environment.mode} run)",
        "",
        f"Command: `{command}`",
        "",
        f"dynlearn {environment.dynlearn_version}, torch {environment.torch_version}, "
        f"torchdiffeq {environment.torchdiffeq_version}, Python {environment.python}; "
        f"device {environment.device}, {environment.usable_cores} usable cores of {environment.machine_cores}, "
        f"{environment.torch_threads} torch threads; {environment.date}.",
        "",
        f"Every figure is also in `{table}`. Times are medians over timed rounds; "
        "see `benchmarks/README.md` for how to read them.",
    ]
    for name in dict.fromkeys(record.benchmark for record in records):
        lines += ["", f"## {name}", "", PERF[name].description, "", "| metric | value | unit |", "|---|---:|---|"]
        lines += [f"| {r.metric} | {format_value(r.value)} | {r.unit} |" for r in records if r.benchmark == name]
        lines += ["", f"Benchmark wall time: {spent[name]:.1f} s."]
    return "\n".join(lines) + "\n"

