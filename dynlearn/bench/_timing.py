"""Timing, figures and the environment they were measured in: shared by the suite and benchmarks/."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
class BenchContext:
    """What every measurement is told about the run.

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


# Bounds on the timed rounds of one comparison: a candidate that takes a
# minute is timed once; a millisecond-long one does not run for ever.
MIN_ROUNDS, MAX_ROUNDS = 1, 1000


def time_interleaved(candidates: dict[str, Callable[[], Any]], context: BenchContext) -> dict[str, list[float]]:
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


def _enough(rounds: int, spent_s: float, context: BenchContext) -> bool:
    if context.repeats is not None:
        return rounds >= context.repeats
    return rounds >= MIN_ROUNDS and spent_s >= context.seconds_per_comparison


def warm_up(context: BenchContext, seconds: float = 1.0) -> None:
    """Keep the device busy for a moment before any timing.

    A fresh process on a shared virtual machine can run its first second or
    so of tensor work many times slower (thread pools starting, cores being
    scheduled in); that should not land in the first measurement.
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
    def detect(cls, context: BenchContext) -> "Environment":
        import torchdiffeq

        from .. import __version__

        device = str(context.device)
        if context.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(context.device)})"
        return cls(
            dynlearn_version=__version__,
            torch_version=torch.__version__,
            torchdiffeq_version=torchdiffeq.__version__,
            device=device,
            date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            machine_cores=os.cpu_count() or 1,
            usable_cores=usable_cores(),
            torch_threads=torch.get_num_threads(),
            mode="quick" if context.quick else "full",
        )


def usable_cores() -> int:
    """Cores this process may run on (a container may see fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def format_value(value: float) -> str:
    """A figure as the reports print it: integers plainly, others to four significant digits."""
    if math.isfinite(value) and abs(value) < 1e9 and value == int(value):
        return str(int(value))
    return f"{value:.4g}"
