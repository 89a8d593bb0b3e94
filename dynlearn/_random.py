"""Named random streams: every random draw of a model comes from one base seed and the name of its purpose.

A stream is ``SeedSequence(seed, spawn_key=(crc32(name),))``: streams of different names (or seeds) are
statistically independent, and the same seed and name give the same numbers on every run and platform (CRC-32
of the name is fixed, unlike Python's salted ``hash``). Adding a stream, or drawing more from one, leaves the
others' numbers unchanged.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

# Each stream's purpose. A name must be listed here, so a misspelt name fails instead of silently opening a new stream.
STREAMS: dict[str, str] = {
    "weights": "initial module weights",
    "split": "which series (or last rows) are held out for validation",
    "minibatches": "the order of training examples in each epoch",
    "chunks": "the order of a streamed dataset's chunks in each epoch",
    "noise": "the training loss's draws: rows shown to an encoder, posterior samples, Brownian paths, injected noise",
    "probes": "the Gaussian probes of the Jacobian penalty's Hutchinson estimate (jacobian_weight)",
    "validation": "the one fixed draw the validation loss uses every epoch",
    "validation_subsets": "the fixed rows shown to an encoder when scoring validation series",
    "noise_estimate": "the rows shown to an encoder when estimating observation noise after fit",
    "prediction": "the paths a stochastic model averages in predict",
    "intervals": "forecast intervals and quantiles asked for without a random_state",
    "sampling": "the draws of one sample / interval call, from that call's random_state",
    "observation_noise": "observation noise added to one call's sampled paths",
    "members": "the seeds of an ensemble's members",
}

_SEED_BITS = 63  # fits a signed 64-bit integer, which torch and torchsde take as a seed


def stream_sequence(seed: int, name: str) -> np.random.SeedSequence:
    """The ``SeedSequence`` of stream ``name`` under base ``seed`` (a non-negative int)."""
    if name not in STREAMS:
        raise ValueError(f"Unknown random stream {name!r}; expected one of {sorted(STREAMS)}. Add new streams to "
                         "dynlearn._random.STREAMS.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"A random stream's base seed must be a non-negative int; got {seed!r}.")
    return np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(name.encode("ascii")),))


def stream_seed(seed: int, name: str) -> int:
    """An int seed (below ``2**63``) for stream ``name``: for ``torch.manual_seed`` or a solver's ``seed=``."""
    word = stream_sequence(seed, name).generate_state(1, np.uint64)[0]
    return int(word) >> (64 - _SEED_BITS)


def torch_stream(seed: int, name: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for stream ``name``."""
    return torch.Generator().manual_seed(stream_seed(seed, name))


def numpy_stream(seed: int, name: str) -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) for stream ``name``."""
    return np.random.default_rng(stream_sequence(seed, name))


def uniform_rows(seed: int, name: str, width: int, rows: slice) -> np.ndarray:
    """Rows ``rows`` of ``numpy_stream(seed, name).uniform(size=(n, width))``, for any ``n >= rows.stop``.

    The rows before ``rows.start`` are skipped without being drawn (PCG64 draws one word per double and jumps
    ahead in constant time), so a chunk of series gets the per-series draws the whole data in memory gives them.
    """
    generator = numpy_stream(seed, name)
    generator.bit_generator.advance(int(rows.start) * int(width))
    return generator.uniform(size=(rows.stop - rows.start, width))
