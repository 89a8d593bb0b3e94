"""Benchmark ``threads``: seconds per NeuralODE epoch at one and two torch threads, alone and beside a busy process.

What it measures is what ``n_threads="auto"`` decides: a small model (the
defaults) and a large one (hidden layers of 512, minibatches of 256), each
trained for a few epochs at ``n_threads=1`` and ``n_threads=2`` in turn, first
with nothing of ours beside it, then beside a subprocess that keeps one core
busy. ``auto_*`` rows say what "auto" picks for each model in this process;
it counts the cores other work keeps busy (``other_runnable``) as taken.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

from dynlearn import ConvergenceWarning, NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.training import PARALLEL_WORK, auto_threads, largest_product, other_runnable, usable_cores
from dynlearn.training import caller_threads

from harness import Context, Record, median, register

MODELS = {
    "small": dict(hidden_layer_sizes=(64, 64), batch_size=64),
    "large": dict(hidden_layer_sizes=(512, 512), batch_size=256),
}


@contextmanager
def _busy_core() -> Iterator[None]:
    """A subprocess spinning on one core for the duration of the block."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def _epoch_seconds(frame, sizes: dict, n_threads: int | str, epochs: int, context: Context) -> tuple[float, NeuralODE]:
    """Median seconds of the epochs after the first (which pays one-off costs)."""
    model = NeuralODE(
        **sizes, max_epochs=epochs, patience=None, random_state=0, n_threads=n_threads, device=context.device.type
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(frame)
    return median(list(model.history_.to_frame()["duration"].iloc[1:])), model


def _compare(frame, sizes: dict, epochs: int, rounds: int, context: Context) -> dict[str, list[float]]:
    """Epoch seconds at 1 and 2 threads, interleaved (1, 2, 1, 2, ...) so drifting load hits both alike."""
    times: dict[str, list[float]] = {"1": [], "2": []}
    for _ in range(rounds):
        for n in (1, 2):
            times[str(n)].append(_epoch_seconds(frame, sizes, n, epochs, context)[0])
    return times


@register(
    "threads",
    "Seconds per NeuralODE epoch on make_damped_oscillator(n_series=32, n_times=50, random_state=0) at "
    "n_threads=1 and 2: small = hidden (64, 64), batch 64 (the defaults); large = hidden (512, 512), batch 256; "
    "alone and beside a subprocess spinning on one core; and what n_threads='auto' picks.",
)
def threads(context: Context) -> list[Record]:
    frame = make_damped_oscillator(n_series=32, n_times=50, random_state=0)
    epochs, rounds = (3, 2) if context.quick else (5, 3)
    name = "threads"
    records = [
        Record(name, "usable_cores", usable_cores(), "cores"),
        Record(name, "caller_torch_threads", caller_threads(), "threads"),
        Record(name, "load_average_1min_at_start", os.getloadavg()[0], "runnable processes"),
        Record(name, "other_runnable_at_start", other_runnable(), "threads wanting a core besides this one"),
    ]
    for label, sizes in MODELS.items():
        _, model = _epoch_seconds(frame, sizes, "auto", 2, context)
        work = largest_product(model.module_, model.batch_size)
        records += [
            Record(name, f"{label}_largest_product", work, f"multiply-adds (auto threshold {PARALLEL_WORK})"),
            Record(name, f"auto_{label}", model.n_threads_, "threads (fitted n_threads_)"),
            Record(name, f"auto_rule_{label}", auto_threads(work), "threads (auto_threads of the product)"),
        ]
        for condition in ("alone", "busy"):
            if condition == "busy":
                with _busy_core():
                    times = _compare(frame, sizes, epochs, rounds, context)
            else:
                times = _compare(frame, sizes, epochs, rounds, context)
            ratios = [two / one for one, two in zip(times["1"], times["2"])]
            records += [
                Record(name, f"{label}_{condition}_epoch_1_thread", median(times["1"]), "s"),
                Record(name, f"{label}_{condition}_epoch_2_threads", median(times["2"]), "s"),
                Record(name, f"{label}_{condition}_ratio_2_over_1", median(ratios), "x"),
            ]
    records.append(Record(name, "load_average_1min_at_end", os.getloadavg()[0], "runnable processes"))
    records.append(Record(name, "rounds", rounds, f"interleaved fits of {epochs} epochs per candidate"))
    return records

