"""The ``batch_size="auto"`` rule: minibatch size from the number of examples, their size and the device."""

from __future__ import annotations

import math

import torch

# The size "auto" starts from on a CPU: the shared default of the estimators, which
# keeps small data sets (the usual tens to thousands of windows) training as before.
BASE_BATCH_SIZE = 64
# Optimiser steps per epoch above which "auto" grows the minibatch: a million windows at
# 64 per batch would be 15 625 steps, each paying Python and solver overhead per call.
MAX_STEPS_PER_EPOCH = 200
# Minibatch sizes "auto" aims for on a GPU, where a step costs about the same for a
# few rows as for thousands until the device is full.
ACCELERATOR_BATCH_SIZES = (512, 4096)
# Values of the training tensors (examples x times x features) one minibatch may hold
# before "auto" stops growing it: 2**24 float32 values are 64 MiB; the solver keeps
# hidden states for every stage and step on top of that, a few hundred times more at
# the default widths, which stays within a GPU's memory.
MAX_BATCH_VALUES = 2**24


def auto_batch_size(n_examples: int, values_per_example: int, device: torch.device | str = "cpu") -> int:
    """The ``batch_size="auto"`` rule: examples per minibatch for a data set and a device.

    Parameters
    ----------
    n_examples : int
        Training examples (windows, series, transitions or rows) of one
        epoch.
    values_per_example : int
        Values one example holds (its length times its features, for a
        window): the memory bound's unit.
    device : torch.device or str, default="cpu"
        Where the model trains.

    Returns
    -------
    int
        On a CPU, ``BASE_BATCH_SIZE`` (64), grown to
        ``ceil(n_examples / MAX_STEPS_PER_EPOCH)`` where an epoch would
        otherwise take more than ``MAX_STEPS_PER_EPOCH`` (200) steps. On a GPU,
        ``ceil(n_examples / MAX_STEPS_PER_EPOCH)`` clipped to
        ``ACCELERATOR_BATCH_SIZES`` (512 to 4096). Growth past 64 stops where
        a minibatch would hold more than ``MAX_BATCH_VALUES`` (2**24) values.
        Never more than ``n_examples`` (one minibatch is the whole data set),
        at least 1.

    Examples
    --------
    >>> from dynlearn.training import auto_batch_size
    >>> auto_batch_size(2_000, 30 * 2)
    64
    >>> auto_batch_size(1_000_000, 30 * 2)
    5000
    >>> auto_batch_size(1_000_000, 30 * 2, "cuda")
    4096
    """
    n_examples, values_per_example = max(1, int(n_examples)), max(1, int(values_per_example))
    spread = math.ceil(n_examples / MAX_STEPS_PER_EPOCH)
    if torch.device(device).type == "cpu":
        wanted = max(BASE_BATCH_SIZE, spread)
    else:
        low, high = ACCELERATOR_BATCH_SIZES
        wanted = min(max(low, spread), high)
    fits = max(1, MAX_BATCH_VALUES // values_per_example)
    return max(1, min(n_examples, max(BASE_BATCH_SIZE, min(wanted, fits))))
