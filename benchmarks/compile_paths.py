"""Benchmark ``compile_paths``: training iterations of dynlearn's solve paths, eager against torch.compile.

For each path and size: seconds per training iteration (forward, loss,
backward) eagerly and compiled, the first compiled call (which compiles the
forward and backward graphs) on its own, and the break-even count of
iterations: compile time over the seconds one iteration saves. That count is
set against the iterations of a default ``NeuralODE`` fit on
``make_damped_oscillator(n_series=64, n_times=50)``, and against the number
of graphs such a fit needs (one per training minibatch shape).

Paths: (a) a fixed-step rk4 rollout over a training window (the training
solve of ``NeuralODE(solver="rk4")``: torchdiffeq's fixed grid today,
``fixed_rollout`` unrolled, and compiled); (b) a dopri5 training solve with
the vector field compiled (the adaptive loop stays Python); (c) the ODE-RNN
encoder's Euler loop; (d) a leapfrog rollout of a separable Hamiltonian
network. Run with one torch thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import warnings
from typing import Callable

import torch
import torch._inductor.config

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.nn import HamiltonianField, MLPVectorField, ODERNNEncoder
from dynlearn.solvers import CompiledFunction, fixed_rollout, solve_hamiltonian, solve_ode_irregular
from dynlearn.training import Callback

from harness import Context, Record, median, register, time_interleaved

NAME = "compile_paths"
SIZES = {"small": ((64, 64), 64), "large": ((256, 256), 256)}
# --quick: one tiny graph of the rk4 path only (a compile takes minutes on a loaded two-core machine).
QUICK_SIZES = {"tiny": ((8,), 16)}
WINDOW = 13  # rows of NeuralODE's default training window on 50-point series (a quarter, at least 10)
N_STATES = 2


def _window(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial states, per-series increasing times and targets of a batch of training windows."""
    gaps = 0.5 + torch.rand(batch, WINDOW - 1, generator=generator)
    times = torch.cat([torch.zeros(batch, 1), gaps.cumsum(1)], dim=1)
    y0 = torch.randn(batch, N_STATES, generator=generator)
    return y0, times, torch.randn(batch, WINDOW, N_STATES, generator=generator)


def _iteration(forward: Callable[[], torch.Tensor], target: torch.Tensor, params: list[torch.Tensor]) -> Callable:
    """One training iteration: forward, mean squared error, backward (gradients reset first)."""

    def run() -> None:
        for p in params:
            p.grad = None
        loss = ((forward() - target) ** 2).mean()
        loss.backward()

    return run


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the C++ compiler runs inductor's kernels)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _first_call(run: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    run()
    return time.perf_counter() - started, _cpu_seconds() - cpu


def _compare(name: str, size: str, candidates: dict[str, Callable], compiled: CompiledFunction,
             context: Context) -> list[Record]:
    """Time every candidate; the one named "compiled" is called once first, for its compile time."""
    first, first_cpu = _first_call(candidates["compiled"])
    if compiled.fell_back:
        print(f"  {name}.{size}: compiling failed, {compiled.fallback_reason}", flush=True)
        return [Record(NAME, f"{name}.{size}.compile_failed", 1.0, "flag")]
    seconds = {key: median(values) for key, values in time_interleaved(candidates, context).items()}
    prefix = f"{name}.{size}"
    records = [Record(NAME, f"{prefix}.{key}_iteration", value, "s") for key, value in seconds.items()]
    compile_s = max(first - seconds["compiled"], 0.0)
    records += [Record(NAME, f"{prefix}.compile_time", compile_s, "s"),
                Record(NAME, f"{prefix}.compile_cpu_time", first_cpu, "s"),
                Record(NAME, f"{prefix}.graphs", compiled.n_compiled, "graphs")]
    for key, value in seconds.items():
        if key == "compiled":
            continue
        saving = value - seconds["compiled"]
        records.append(Record(NAME, f"{prefix}.speedup_over_{key}", value / seconds["compiled"], "x"))
        records.append(Record(NAME, f"{prefix}.break_even_vs_{key}",
                              compile_s / saving if saving > 0 else float("inf"), "iterations"))
    return records


def _rk4(size: str, hidden: tuple[int, ...], batch: int, context: Context) -> list[Record]:
    generator = torch.Generator().manual_seed(0)
    field = MLPVectorField(N_STATES, hidden)
    y0, times, target = _window(batch, generator)

    def rollout(y0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        return fixed_rollout("rk4", lambda y: field(None, y), y0, times)

    compiled = CompiledFunction(rollout, what="the rk4 rollout", parameters=field.parameters)
    params = list(field.parameters())
    candidates = {
        "compiled": _iteration(lambda: compiled(y0, times), target, params),
        "torchdiffeq": _iteration(lambda: solve_ode_irregular(field, y0, times, method="rk4", autonomous=True),
                                  target, params),
        "unrolled": _iteration(lambda: rollout(y0, times), target, params),
    }
    return _compare("rk4_rollout", size, candidates, compiled, context)


def _dopri5(size: str, hidden: tuple[int, ...], batch: int, context: Context) -> list[Record]:
    generator = torch.Generator().manual_seed(0)
    field = MLPVectorField(N_STATES, hidden)
    y0, times, target = _window(batch, generator)
    compiled_field = CompiledFunction(lambda y: field(None, y), what="the vector field", parameters=field.parameters)
    params = list(field.parameters())
    candidates = {
        "compiled": _iteration(lambda: solve_ode_irregular(lambda t, y: compiled_field(y), y0, times,
                                                           method="dopri5", autonomous=True), target, params),
        "eager": _iteration(lambda: solve_ode_irregular(field, y0, times, method="dopri5", autonomous=True),
                            target, params),
    }
    return _compare("dopri5_field", size, candidates, compiled_field, context)


def _odernn(size: str, hidden: tuple[int, ...], batch: int, context: Context) -> list[Record]:
    generator = torch.Generator().manual_seed(0)
    encoder = ODERNNEncoder(N_STATES, hidden_dim=hidden[0] // 2, ode_hidden=hidden)
    _, times, _ = _window(batch, generator)
    values = torch.randn(batch, WINDOW, N_STATES, generator=generator)
    mask = torch.ones(batch, WINDOW, N_STATES, dtype=torch.bool)
    lengths = torch.full((batch,), WINDOW)
    target = torch.randn(batch, hidden[0] // 2, generator=generator)

    def encode(values: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        return encoder(values, mask, times, lengths, solve=dict(method="euler"))[1]

    compiled = CompiledFunction(encode, what="the ODE-RNN Euler loop", parameters=encoder.parameters)
    params = list(encoder.parameters())
    candidates = {
        "compiled": _iteration(lambda: compiled(values, times), target, params),
        "eager": _iteration(lambda: encode(values, times), target, params),
    }
    return _compare("odernn_euler", size, candidates, compiled, context)


def _leapfrog(size: str, hidden: tuple[int, ...], batch: int, context: Context) -> list[Record]:
    generator = torch.Generator().manual_seed(0)
    field = HamiltonianField(1, hidden, separable=True)
    y0, times, target = _window(batch, generator)

    def rollout(y0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        q, p = solve_hamiltonian(lambda q, p, t: field.potential_gradient(q), lambda q, p, t: field.kinetic_gradient(p),
                                 y0[:, :1], y0[:, 1:], times, method="leapfrog", separable=True)
        return torch.cat([q, p], dim=-1)

    compiled = CompiledFunction(rollout, what="the leapfrog rollout", parameters=field.parameters)
    params = list(field.parameters())
    candidates = {
        "compiled": _iteration(lambda: compiled(y0, times), target, params),
        "eager": _iteration(lambda: rollout(y0, times), target, params),
    }
    return _compare("leapfrog_rollout", size, candidates, compiled, context)


class _BatchShapes(Callback):
    """Counts training minibatches and their distinct shapes, per training stage."""

    def __init__(self) -> None:
        self.stages: list[dict] = []

    def on_train_begin(self, state) -> None:
        self.stages.append({"batches": 0, "shapes": set(), "epochs_seen": 0})

    def on_batch_end(self, state, batch, loss) -> None:
        stage = self.stages[-1]
        stage["batches"] += 1
        stage["shapes"].add(tuple(batch["values"].shape))


def _default_fit_iterations() -> list[Record]:
    """Iterations and minibatch shapes of a default NeuralODE fit, from one epoch per training stage."""
    frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
    shapes = _BatchShapes()
    default_epochs = NeuralODE().max_epochs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # four epochs converge nowhere; only the batches are counted
        # max_epochs=4 gives every stage of the window curriculum one epoch (stages share half of max_epochs).
        NeuralODE(max_epochs=4, patience=None, random_state=0, callbacks=[shapes], solver="rk4").fit(frame)
    n_stages = len(shapes.stages)
    per_epoch = [stage["batches"] for stage in shapes.stages]
    # Epoch budgets at the default max_epochs: warm-up stages share half, the last stage may use all of them.
    budgets = [max(1, default_epochs // (2 * (n_stages - 1)))] * (n_stages - 1) + [default_epochs]
    total = sum(b * e for b, e in zip(per_epoch, budgets))
    graphs = sum(len(stage["shapes"]) for stage in shapes.stages)
    return [
        Record(NAME, "default_fit.stages", n_stages, "stages"),
        Record(NAME, "default_fit.batches_per_epoch_last_stage", per_epoch[-1], "batches"),
        Record(NAME, "default_fit.max_iterations", total, "iterations"),
        Record(NAME, "default_fit.training_shapes", graphs, "graphs"),
    ]


@register(
    NAME,
    "torch.compile against eager, per training iteration (forward + backward) of an rk4 rollout, a dopri5 solve "
    "with a compiled field, the ODE-RNN Euler loop and a leapfrog rollout, at hidden (64, 64) batch 64 and "
    "(256, 256) batch 256 on 13-row windows; compile time of the first call and the break-even iteration count, "
    "beside the iterations and minibatch shapes of a default NeuralODE fit on make_damped_oscillator(64, 50).",
)
def compile_paths(context: Context) -> list[Record]:
    records = [Record(NAME, "load_average_1min.start", os.getloadavg()[0], "runnable")]
    records += _default_fit_iterations()
    sizes = QUICK_SIZES if context.quick else SIZES
    paths = {"rk4_rollout": _rk4, "dopri5_field": _dopri5, "odernn_euler": _odernn, "leapfrog_rollout": _leapfrog}
    if context.quick:
        paths = {"rk4_rollout": _rk4}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    # A fresh inductor cache: kernels cached on disk by an earlier run would make compiling look cheap.
    previous_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    scratch = tempfile.TemporaryDirectory(prefix="dynlearn_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = scratch.name
    # Kernels compiled in this process (no worker pool), so that the C++ compiler's CPU time is counted.
    previous_compile_threads = torch._inductor.config.compile_threads
    torch._inductor.config.compile_threads = 1
    try:
        for path_name, path in paths.items():
            for size, (hidden, batch) in sizes.items():
                torch._dynamo.reset()  # every compile time starts from an empty cache
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        records += path(size, hidden, batch, context)
                except Exception as error:  # a path the compiler cannot take is a result, not a crash
                    print(f"  {path_name}.{size} failed: {type(error).__name__}: {error}", flush=True)
                    records.append(Record(NAME, f"{path_name}.{size}.failed", 1.0, "flag"))
        records.append(Record(NAME, "load_average_1min.end", os.getloadavg()[0], "runnable"))
    finally:
        torch.set_num_threads(previous)
        torch._inductor.config.compile_threads = previous_compile_threads
        if previous_cache is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous_cache
        scratch.cleanup()
    return records
