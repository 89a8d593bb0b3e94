"""The machinery shared by dynlearn's benchmarks: registry, timing, result files.

A benchmark is a function ``(context) -> list[Record]`` registered with
:func:`register`; :func:`run_all` runs the selected ones and
:func:`write_results` stores their figures as a CSV table and a markdown
report. Nothing here asserts on time: benchmarks measure, people judge.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Record:
    """One figure: ``value`` of ``metric`` in ``unit``, measured by ``benchmark``."""

    benchmark: str
    metric: str
    value: float
    unit: str


@dataclass
class Context:
    """What every benchmark is told about the run.

    Parameters
    ----------
    quick : bool
        Smaller workloads and shorter timing, for a check that finishes in
        seconds rather than a measurement to quote.
    device : torch.device
        Where tensors and models live.
    seconds_per_comparison : float
        Wall-clock time :func:`time_interleaved` aims to spend on one
        comparison: cheap candidates are repeated many times, a candidate
        that takes a minute is timed once.
    repeats : int or None
        A fixed number of timed rounds instead of the time target.
    """

    quick: bool
    device: torch.device
    seconds_per_comparison: float
    repeats: int | None = None

    def synchronize(self) -> None:
        """Wait for queued GPU work, so wall-clock readings include it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    function: Callable[[Context], list[Record]]


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, description: str) -> Callable[[Callable[[Context], list[Record]]], Callable]:
    """Decorator adding a benchmark function to :data:`BENCHMARKS` under ``name``."""

    def decorate(function: Callable[[Context], list[Record]]) -> Callable[[Context], list[Record]]:
        if name in BENCHMARKS:
            raise ValueError(f"A benchmark named {name!r} is already registered.")
        BENCHMARKS[name] = Benchmark(name, description, function)
        return function

    return decorate


# Bounds on the timed rounds of one comparison: a candidate that takes a
# minute is timed once; a millisecond-long one does not run for ever.
MIN_ROUNDS, MAX_ROUNDS = 1, 1000


def time_interleaved(candidates: dict[str, Callable[[], Any]], context: Context) -> dict[str, list[float]]:
    """Wall-clock seconds of each candidate, run in turn (A, B, A, B, ...) after one warm-up round.

    On a shared machine the load drifts during a run; interleaving exposes
    every candidate to the same drift, so their ratio stays fair even when
    the absolute times do not. The warm-up round absorbs one-off costs
    (allocator growth, lazy initialisation); timed rounds then follow until
    ``context.seconds_per_comparison`` is spent (or exactly
    ``context.repeats`` rounds when that is set).
    """
    for candidate in candidates.values():
        candidate()
    context.synchronize()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    started = time.perf_counter()
    rounds = 0
    while rounds < MAX_ROUNDS and not _enough(rounds, time.perf_counter() - started, context):
        for name, candidate in candidates.items():
            begun = time.perf_counter()
            candidate()
            context.synchronize()
            seconds[name].append(time.perf_counter() - begun)
        rounds += 1
    return seconds


def _enough(rounds: int, spent_s: float, context: Context) -> bool:
    if context.repeats is not None:
        return rounds >= context.repeats
    return rounds >= MIN_ROUNDS and spent_s >= context.seconds_per_comparison


def warm_up(context: Context, seconds: float = 1.0) -> None:
    """Keep the device busy for a moment before any timing.

    A fresh process on a shared virtual machine can run its first second or
    so of tensor work many times slower (thread pools starting, cores being
    scheduled in); that should not land in the first benchmark's figures.
    """
    x = torch.randn(256, 64, device=context.device)
    w = torch.randn(64, 64, device=context.device)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.tanh(x @ w)
        context.synchronize()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Environment:
    """Where and with what the figures were measured; one copy per CSV row."""

    dynlearn_version: str
    torch_version: str
    torchdiffeq_version: str
    device: str
    date: str
    machine_cores: int
    usable_cores: int
    torch_threads: int
    mode: str
    python: str = field(default_factory=platform.python_version)

    @classmethod
    def detect(cls, context: Context) -> "Environment":
        import dynlearn
        import torchdiffeq

        device = str(context.device)
        if context.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(context.device)})"
        return cls(
            dynlearn_version=dynlearn.__version__,
            torch_version=torch.__version__,
            torchdiffeq_version=torchdiffeq.__version__,
            device=device,
            date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            machine_cores=os.cpu_count() or 1,
            usable_cores=_usable_cores(),
            torch_threads=torch.get_num_threads(),
            mode="quick" if context.quick else "full",
        )


def _usable_cores() -> int:
    """Cores this process may run on (a container may see fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _log(line: str) -> None:
    print(line, flush=True)  # progress must show even when stdout is a file


def run_all(names: list[str], context: Context, log: Callable[[str], None] = _log) -> tuple[list[Record], dict]:
    """Run the named benchmarks in order; returns their records and seconds spent on each."""
    records: list[Record] = []
    spent: dict[str, float] = {}
    warm_up(context)
    for name in names:
        benchmark = BENCHMARKS[name]
        log(f"[{name}] {benchmark.description}")
        started = time.perf_counter()
        found = benchmark.function(context)
        spent[name] = time.perf_counter() - started
        for record in found:
            log(f"  {record.metric:<36} {_format(record.value):>12} {record.unit}")
        records.extend(found)
    return records, spent


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
        lines += ["", f"## {name}", "", BENCHMARKS[name].description, "", "| metric | value | unit |", "|---|---:|---|"]
        lines += [f"| {r.metric} | {_format(r.value)} | {r.unit} |" for r in records if r.benchmark == name]
        lines += ["", f"Benchmark wall time: {spent[name]:.1f} s."]
    return "\n".join(lines) + "\n"


def _format(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"
