"""Performance rows: what dynlearn's numerics cost against the obvious alternatives.

Each function takes a :class:`BenchContext` and returns :class:`Record`\\ s.
:data:`PERF` is the one registry of measurements: the rows below, which the
suite (``dynlearn bench``) runs, and the benchmarks of the ``benchmarks/``
scripts, which register with ``suite=False`` and run from
``benchmarks/run.py`` (with the rows below, under the same names).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..nn import MLPVectorField
from ..solvers import SolverStats, solve_ode, solve_ode_irregular
from ._timing import BenchContext, Record, median, time_interleaved

# ------------------------------------------------------------ solve problems
BATCH, STATE_DIM, HIDDEN = 256, 8, (64, 64)
N_OUTPUT_TIMES, N_SERIES_TIMES, T_END = 50, 20, 5.0
SOLVE = dict(method="dopri5", rtol=1e-5, atol=1e-6)
# Backpropagating through the union formulation grows with the square of the
# number of union times (torchdiffeq writes each output into one tensor in
# place): about a minute for 256 series on two cores. Quick runs use fewer.
QUICK_IRREGULAR_SERIES = 64


@dataclass(frozen=True)
class Benchmark:
    """A registered measurement: ``function(context) -> list[Record]``.

    ``suite``: whether ``dynlearn bench`` runs it as a performance row
    (False for the benchmarks of the ``benchmarks/`` scripts, which run
    from ``benchmarks/run.py`` only).
    """

    name: str
    description: str
    function: Callable[[BenchContext], list[Record]]
    suite: bool = True


PERF: dict[str, Benchmark] = {}


def register_perf(name: str, description: str, *, suite: bool = True) -> Callable:
    """Decorator adding a measurement ``(context) -> list[Record]`` to :data:`PERF` under ``name``."""

    def decorate(function: Callable[[BenchContext], list[Record]]) -> Callable[[BenchContext], list[Record]]:
        if name in PERF:
            raise ValueError(
                f"A benchmark named {name!r} is already registered (by {PERF[name].function.__module__}); "
                "pick another name."
            )
        PERF[name] = Benchmark(name, description, function, suite)
        return function

    return decorate


def suite_rows() -> list[str]:
    """Names of the measurements ``dynlearn bench`` runs, in registration order."""
    return [name for name, benchmark in PERF.items() if benchmark.suite]


def benchmark_field(device: torch.device, state_dim: int = STATE_DIM) -> MLPVectorField:
    """dynlearn's 2-layer tanh MLP, with weights large enough for non-trivial dynamics."""
    generator = torch.Generator().manual_seed(0)
    field = MLPVectorField(state_dim, HIDDEN, "tanh")
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
    return field.to(device)


class _Counted(torch.nn.Module):
    """Counts evaluations of a field called straight from torchdiffeq (untimed runs only)."""

    def __init__(self, field: torch.nn.Module):
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, y)


def _forward_only(solve: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A candidate that solves without building a graph, as prediction does."""

    def run() -> None:
        with torch.no_grad():
            solve()

    return run


def _forward_and_backward(solve: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A candidate that solves and backpropagates the sum of the solution, as training does."""

    def run() -> None:
        solve().sum().backward()

    return run


def compare_solves(
    benchmark: str, names: tuple[str, ...], solves: tuple[Callable, ...], context: BenchContext
) -> list[Record]:
    """Median seconds of each solve, forward and forward+backward, and each one's paired ratio over the last."""
    *candidates, reference = names
    records = []
    for mode, wrap in (("forward", _forward_only), ("forward_backward", _forward_and_backward)):
        seconds = time_interleaved({name: wrap(solve) for name, solve in zip(names, solves)}, context)
        records += [Record(benchmark, f"{mode}_{name}", median(seconds[name]), "s") for name in names]
        for name in candidates:
            # The ratio is the median of per-round ratios: each round's candidates
            # ran back to back, so load that drifts between rounds cancels out.
            ratios = [a / b for a, b in zip(seconds[name], seconds[reference])]
            records.append(Record(benchmark, f"{mode}_ratio_{name}_over_{reference}", median(ratios), "x"))
        records.append(Record(benchmark, f"{mode}_rounds_{'_vs_'.join(names)}", len(seconds[reference]), "runs"))
    return records


def wrapper_overhead(field: torch.nn.Module, context: BenchContext, benchmark: str = "solve_overhead") -> list[Record]:
    """``solve_ode`` against ``torchdiffeq.odeint`` on one shared time grid (batch 256, state 8, dopri5)."""
    from torchdiffeq import odeint

    generator = torch.Generator().manual_seed(1)
    y0 = torch.randn(BATCH, STATE_DIM, generator=generator).to(context.device)
    t = torch.linspace(0.0, T_END, N_OUTPUT_TIMES, device=context.device)
    records = compare_solves(
        benchmark,
        ("dynlearn", "direct"),
        (lambda: solve_ode(field, y0, t, **SOLVE), lambda: odeint(field, y0, t, **SOLVE)),
        context,
    )
    stats, counted = SolverStats(), _Counted(field)
    with torch.no_grad():
        solve_ode(field, y0, t, stats=stats, **SOLVE)
        odeint(counted, y0, t, **SOLVE)
    return records + [
        Record(benchmark, "nfe_dynlearn", stats.nfe, "evaluations"),
        Record(benchmark, "nfe_direct", counted.calls, "evaluations"),
    ]


def _per_series_times(n_series: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n_series, N_SERIES_TIMES) sorted times, all starting at 0 (the union formulation needs one start)."""
    draws = torch.rand(n_series, N_SERIES_TIMES - 1, generator=generator) * T_END
    return torch.cat([torch.zeros(n_series, 1), draws.sort(dim=1).values], dim=1).to(device)


def solve_on_union(field, y0: torch.Tensor, times: torch.Tensor, stats: SolverStats | None = None) -> torch.Tensor:
    """Solve once on the sorted union of every series' times, then pick each series' own rows."""
    union, where = torch.unique(times, return_inverse=True)
    on_union = solve_ode(field, y0, union, stats=stats, **SOLVE)  # (n_union, batch, dim)
    return on_union[where, torch.arange(len(y0), device=y0.device)[:, None]]


def irregular_vs_union(
    field: torch.nn.Module, context: BenchContext, benchmark: str = "solve_overhead"
) -> list[Record]:
    """The per-series clock against the union of all times, on series that each have their own times."""
    n_series = QUICK_IRREGULAR_SERIES if context.quick else BATCH
    generator = torch.Generator().manual_seed(2)
    y0 = torch.randn(n_series, STATE_DIM, generator=generator).to(context.device)
    times = _per_series_times(n_series, generator, context.device)
    records = compare_solves(
        benchmark,
        ("irregular", "shifted", "union"),
        (
            lambda: solve_ode_irregular(field, y0, times, **SOLVE),
            lambda: solve_ode_irregular(field, y0, times, autonomous=True, **SOLVE),
            lambda: solve_on_union(field, y0, times),
        ),
        context,
    )
    clock_stats, shifted_stats, union_stats = SolverStats(), SolverStats(), SolverStats()
    with torch.no_grad():
        on_clock = solve_ode_irregular(field, y0, times, stats=clock_stats, **SOLVE)
        shifted = solve_ode_irregular(field, y0, times, autonomous=True, stats=shifted_stats, **SOLVE)
        on_union = solve_on_union(field, y0, times, stats=union_stats)
    return records + [
        Record(benchmark, "irregular_n_series", n_series, "series"),
        Record(benchmark, "union_n_times", len(torch.unique(times)), "times"),
        Record(benchmark, "nfe_irregular", clock_stats.nfe, "evaluations"),
        Record(benchmark, "nfe_shifted", shifted_stats.nfe, "evaluations"),
        Record(benchmark, "nfe_union", union_stats.nfe, "evaluations"),
        Record(benchmark, "max_abs_difference_irregular_vs_union", float((on_clock - on_union).abs().max()), "state units"),
        Record(benchmark, "max_abs_difference_shifted_vs_union", float((shifted - on_union).abs().max()), "state units"),
    ]


@register_perf(
    "solve_overhead",
    "dynlearn.solvers.solve_ode vs torchdiffeq.odeint on the same problem (2-layer tanh MLP, batch 256, "
    "state 8, dopri5, rtol 1e-5, 50 output times); then solve_ode_irregular (per-series clock; each series "
    "has its own 20 sorted random times in [0, 5]) and with autonomous=True (the series shifted to a common start, "
    "one solve) vs solve_ode on the sorted union of all times, then gather.",
)
def solve_overhead(context: BenchContext) -> list[Record]:
    field = benchmark_field(context.device)
    return wrapper_overhead(field, context) + irregular_vs_union(field, context)


# ----------------------------------------------------- adjoint vs direct memory
ADJOINT_BASE_STEPS = 10


def saved_tensor_bytes(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``run()`` and count the bytes autograd keeps for the backward pass (distinct storages)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return out, sum(storages.values())


def _peak_bytes(run: Callable[[], None], device: torch.device) -> float:
    """Peak CUDA memory allocated during ``run`` above what was allocated before."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


@register_perf(
    "adjoint_memory",
    "Memory of backpropagation through a fixed-step rk4 solve (2-layer tanh MLP, batch 64, state 8) with "
    "10, 100 and 1000 steps: direct backpropagation (autograd keeps every step) vs the adjoint method "
    "(solves backwards, keeps nothing). graph_bytes: bytes autograd saves for the backward pass; "
    "peak_bytes: peak CUDA memory of forward+backward (GPU runs only); seconds: one forward+backward.",
)
def adjoint_memory(context: BenchContext) -> list[Record]:
    field = benchmark_field(context.device)
    y0 = torch.randn(64, STATE_DIM, generator=torch.Generator().manual_seed(3)).to(context.device)
    t = torch.tensor([0.0, 1.0], device=context.device)
    records = []
    for factor in (1, 10, 100):
        steps = ADJOINT_BASE_STEPS * factor
        for adjoint in (False, True):
            mode = "adjoint" if adjoint else "direct"

            def solve() -> torch.Tensor:
                return solve_ode(
                    field, y0, t, method="rk4", adjoint=adjoint, options={"step_size": 1.0 / steps},
                    max_num_steps=steps + 10,
                )

            started = time.perf_counter()
            out, graph = saved_tensor_bytes(solve)
            out.sum().backward()
            context.synchronize()
            seconds = time.perf_counter() - started
            records += [
                Record("adjoint_memory", f"graph_bytes_{mode}_{steps}_steps", graph, "bytes"),
                Record("adjoint_memory", f"seconds_{mode}_{steps}_steps", seconds, "s"),
            ]
            if context.device.type == "cuda":
                peak = _peak_bytes(lambda: solve().sum().backward(), context.device)
                records.append(Record("adjoint_memory", f"peak_bytes_{mode}_{steps}_steps", peak, "bytes"))
    for mode in ("direct", "adjoint"):
        base = _value(records, f"graph_bytes_{mode}_{ADJOINT_BASE_STEPS}_steps")
        for factor in (10, 100):
            grown = _value(records, f"graph_bytes_{mode}_{ADJOINT_BASE_STEPS * factor}_steps")
            records.append(
                Record("adjoint_memory", f"graph_growth_{mode}_{factor}x_steps", grown / base if base else np.nan, "x")
            )
    return records


def _value(records: list[Record], metric: str) -> float:
    return next(r.value for r in records if r.metric == metric)


# ---------------------------------------------------------- long-frame loading
LONG_FRAME_ROWS = 1_000_000


def long_frame(n_rows: int = LONG_FRAME_ROWS, n_features: int = 3, seed: int = 0):
    """A long frame of ``n_rows`` rows: 1,000 series of irregular length, shuffled, 5% missing entries."""
    import pandas as pd

    from ..data import ID_COLUMN, TIME_COLUMN

    rng = np.random.RandomState(seed)
    n_series = 1000
    lengths = rng.multinomial(n_rows - n_series, np.full(n_series, 1.0 / n_series)) + 1
    series = np.repeat(np.arange(n_series), lengths)
    time_ = rng.uniform(0.0, 100.0, size=n_rows)
    values = rng.normal(size=(n_rows, n_features))
    values[rng.uniform(size=values.shape) < 0.05] = np.nan
    frame = pd.DataFrame(values, columns=[f"x{i}" for i in range(n_features)])
    frame.insert(0, TIME_COLUMN, time_)
    frame.insert(0, ID_COLUMN, series)
    return frame.sample(frac=1.0, random_state=rng).reset_index(drop=True)


@register_perf(
    "long_frame_load",
    "Seconds to turn a 1,000,000-row long frame (1,000 series of irregular length, 3 variables, 5% "
    "missing, rows shuffled) into dynlearn's series container (check_series: validation, sorting, packing).",
)
def long_frame_load(context: BenchContext) -> list[Record]:
    from ..data import check_series

    frame = long_frame()
    seconds = []
    for _ in range(1 if context.quick else 3):
        started = time.perf_counter()
        batch = check_series(frame)
        seconds.append(time.perf_counter() - started)
    return [
        Record("long_frame_load", "rows", len(frame), "rows"),
        Record("long_frame_load", "series", batch.n_series, "series"),
        Record("long_frame_load", "seconds", median(seconds), "s"),
        Record("long_frame_load", "rounds", len(seconds), "runs"),
    ]
