"""Benchmark ``batch_size``: a NeuralODE on tens of thousands of windows at ``batch_size=64`` and ``"auto"``.

What ``batch_size="auto"`` changes on a CPU is the number of optimiser steps
per epoch once the training windows exceed 200 x 64: each candidate trains
for the same few epochs, and the records give the size used
(``batch_size_``), the median epoch time and the validation loss
reached. The third candidate is "auto" with the learning
rate scaled by ``batch_size_ / 64`` (the linear scaling rule), which is what
keeps the progress per epoch of the larger batches.
"""

from __future__ import annotations

import warnings

from dynlearn import ConvergenceWarning, NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.training import BASE_BATCH_SIZE

from harness import Context, Record, median, register

LEARNING_RATE = 3e-3  # NeuralODE's default


def _fit(frame, batch_size: int | str, learning_rate: float, epochs: int, context: Context) -> NeuralODE:
    model = NeuralODE(
        window_size=4, batch_size=batch_size, learning_rate=learning_rate, max_epochs=epochs, patience=None,
        random_state=0, n_threads=1, device=context.device.type,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(frame)


@register(
    "batch_size",
    "NeuralODE (window_size=4, n_threads=1) on make_damped_oscillator(n_series=3000, n_times=40, random_state=0) "
    "(quick: 1500 series, about 26 000 training windows, 3 epochs) for the same epochs at batch_size=64, 'auto', "
    "and 'auto' with learning_rate x batch_size_/64: size used, median epoch seconds, validation loss.",
)
def batch_size(context: Context) -> list[Record]:
    n_series, epochs = (1500, 3) if context.quick else (3000, 5)
    frame = make_damped_oscillator(n_series=n_series, n_times=40, random_state=0)
    name = "batch_size"
    records = []
    # The size "auto" picks, read from a first fit, sets the scaled learning rate of the third candidate.
    auto_size = _fit(frame, "auto", LEARNING_RATE, 1, context).batch_size_
    candidates = {
        "fixed_64": (64, LEARNING_RATE),
        "auto": ("auto", LEARNING_RATE),
        "auto_scaled_lr": ("auto", LEARNING_RATE * auto_size / BASE_BATCH_SIZE),
    }
    for label, (size, rate) in candidates.items():
        model = _fit(frame, size, rate, epochs, context)
        history = model.history_.to_frame()
        records += [
            Record(name, f"{label}_batch_size", model.batch_size_, "windows per minibatch (batch_size_)"),
            Record(name, f"{label}_learning_rate", rate, "AdamW learning rate"),
            Record(name, f"{label}_epoch_median", median(list(history["duration"].iloc[1:])), "s"),
            Record(name, f"{label}_final_valid_loss", float(history["valid_loss"].iloc[-1]), "mse (standardised)"),
        ]
    records.append(Record(name, "epochs", epochs, "epochs per candidate"))
    return records
