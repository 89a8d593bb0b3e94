"""How many threads torch's operators use while an estimator works, and the ``"auto"`` rule.

torch starts with one intra-op thread per core. The models dynlearn trains
by default (two hidden layers of 64, minibatches of tens of series) multiply
matrices far too small to split: every operator then pays the threads'
synchronisation, and beside another busy process a thread that lost its core
stalls the others at every operator. Measured on two shared cores
(``python benchmarks/run.py --quick --only threads``, other work on the
machine, load average 2.6): a default NeuralODE epoch took 1.2x as long at
two threads as at one, 4.7x beside one more busy process (9.5x and 13x at
load 4.4); hidden layers of 512 with minibatches of 256 ran 1.5x faster at
two threads, but 4.5x slower beside one more busy process.

Only the intra-op count is set (``torch.set_num_threads``); the inter-op
count cannot change once torch has run parallel work.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import torch

# Multiply-adds of the largest matrix product of one step (rows of a minibatch
# times the largest weight matrix) from which "auto" uses more than one
# thread: 2**24 is a 256-row minibatch through a 256 x 256 layer, about 10 ms
# per training step on one core, long enough that splitting it pays for the
# synchronisation; the defaults (64 rows x 64 x 64) are 64 times smaller.
PARALLEL_WORK = 2**24

_callers = threading.local()  # per thread: torch's setting when each active budget began


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else all cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def caller_threads() -> int:
    """torch's intra-op thread count before the outermost active :func:`thread_budget` of this thread began.

    Outside any budget, the current count. It is the caller's ceiling: it
    follows ``OMP_NUM_THREADS``, which joblib's process workers (those of
    ``GridSearchCV(n_jobs=k)``) receive as ``cores // k``, and any
    ``torch.set_num_threads`` call of the caller.
    """
    stack = getattr(_callers, "stack", None)
    return stack[0] if stack else torch.get_num_threads()


def budget_active() -> bool:
    """Whether this thread runs inside a :func:`thread_budget`."""
    return bool(getattr(_callers, "stack", None))


def dask_task_threads() -> int | None:
    """Threads a task of the Dask worker running this thread may use; None outside a Dask task.

    Dask runs as many tasks at once as a worker has threads and sizes a
    cluster's workers x threads to the cores, so each running task stands
    for one core. Its worker processes start with ``OMP_NUM_THREADS`` from
    the ``distributed.nanny.pre-spawn-environ`` setting (1 by default), which
    torch follows; workers that are threads of the client's process
    (``LocalCluster(processes=False)``) inherit the client's count instead,
    so the same setting is read here and applies to both. ``distributed`` is
    only looked for, never imported: a task on a Dask worker has imported it.
    """
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        distributed.get_worker()
    except ValueError:  # this thread runs no Dask task
        return None
    environ = sys.modules["dask"].config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    try:
        return max(1, int(environ.get("OMP_NUM_THREADS", 1)))
    except (TypeError, ValueError):
        return 1


def other_runnable() -> int:
    """Threads of the whole machine that want a core right now, besides the one asking (Linux; 0 elsewhere).

    Read from the runnable count of ``/proc/loadavg`` at the moment of the
    call: other processes (and other threads of this one) that compete for
    the cores.
    """
    try:
        with open("/proc/loadavg") as handle:
            runnable = int(handle.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, runnable - 1)


def auto_threads(work: float) -> int:
    """The ``n_threads="auto"`` rule: one thread for small products, else the free cores.

    Parameters
    ----------
    work : float
        Multiply-adds of the largest matrix product of one step (see
        :func:`largest_product`).

    Returns
    -------
    int
        1 when ``work < PARALLEL_WORK``. Otherwise the free cores, at least
        1: the process's usable cores (:func:`usable_cores`) less the threads
        of other work that want a core now (:func:`other_runnable`), capped
        by the caller's torch setting (``caller_threads()``, which divides
        the machine among joblib's process workers) and, in a task of a Dask
        worker, by the threads Dask gives each task (:func:`dask_task_threads`,
        1 by default), so a search on a Dask cluster, whose workers may be
        threads of one process, does not oversubscribe. Beside a busy process
        a thread that loses its core stalls the others at every operator
        (``benchmarks/run.py --only threads``), so busy cores are not counted.
    """
    if work < PARALLEL_WORK:
        return 1
    ceiling = caller_threads()
    per_task = dask_task_threads()
    if per_task is not None:
        ceiling = min(ceiling, per_task)
    return max(1, min(usable_cores() - other_runnable(), ceiling))


def largest_product(module: torch.nn.Module | None, rows: int) -> int:
    """Multiply-adds of ``rows`` rows through the largest weight matrix of ``module`` (0 without a module).

    Weight matrices are the parameters with two or more axes (linear and
    recurrent layers); the product of their axes is the work per row.
    """
    if module is None:
        return 0
    sizes = [p.numel() for p in module.parameters() if p.dim() >= 2]
    return int(rows) * max(sizes, default=0)


@contextmanager
def thread_budget(n_threads: int | None) -> Iterator[None]:
    """Run the block with torch using ``n_threads`` intra-op threads, then restore the caller's count.

    The count in force when the block began is restored on leaving it, also
    when the block raises. Budgets nest (an inner budget restores the outer
    one's count) and are kept per thread, as torch's OpenMP setting is.

    Parameters
    ----------
    n_threads : int or None
        Threads for the block (at least 1); None leaves torch's setting alone.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.training import thread_budget
    >>> before = torch.get_num_threads()
    >>> with thread_budget(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n_threads is None:
        yield
        return
    stack = getattr(_callers, "stack", None)
    if stack is None:
        stack = _callers.stack = []
    previous = torch.get_num_threads()
    stack.append(previous)
    try:
        if n_threads != previous:
            torch.set_num_threads(int(n_threads))
        yield
    finally:
        stack.pop()
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
