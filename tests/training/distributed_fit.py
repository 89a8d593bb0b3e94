"""Fit a small NeuralODE and LatentODE and save what each process ends with (run under torchrun, or alone).

``python distributed_fit.py OUT_DIR CHECKPOINT_DIR`` writes ``OUT_DIR/rank<r>.npz``
with each model's predictions and history, and how many checkpoint files this
process wrote, and the NeuralODE's CSV log as ``OUT_DIR/history<r>.csv`` where
the process writes one. tests/training/test_distributed.py runs it with two processes
and in one, and compares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

import dynlearn.training._checkpoint as checkpoint_module
from dynlearn import LatentODE, NeuralODE
from dynlearn.training import CSVLogger, is_main_process


def series(n_series: int = 11, n_times: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Damped oscillations with random phases and gaps (11 series, so global minibatches split unevenly).

    The gaps give shares of a batch different numbers of observed entries,
    which the losses average over, so each share's gradient must be weighted by them.
    """
    rng = np.random.RandomState(0)
    t = np.linspace(0.0, 3.0, n_times)
    phase = rng.uniform(0, 2 * np.pi, size=(n_series, 1))
    x = np.exp(-0.3 * t) * np.cos(2.0 * t + phase)
    v = np.exp(-0.3 * t) * np.sin(2.0 * t + phase)
    X = np.stack([x, v], axis=-1)
    X[rng.uniform(size=X.shape) < 0.2] = np.nan
    X[:, 0] = np.where(np.isnan(X[:, 0]), 0.5, X[:, 0])
    return X, t


def models(checkpoint: Path, log: Path) -> dict[str, object]:
    shared = dict(solver="rk4", max_epochs=3, batch_size=5, dtype="float64", device="cpu", n_threads=1, patience=None)
    return {
        "neural_ode": NeuralODE(hidden_layer_sizes=(8,), window_size=4, random_state=0, checkpoint=checkpoint,
                                callbacks=[CSVLogger(log)], **shared),  # fmt: skip
        "latent_ode": LatentODE(
            latent_dim=3, encoder_dim=4, encoder_layer_sizes=(6,), ode_layer_sizes=(6,), n_samples_train=2,
            validation_fraction=0.2, random_state=1, **shared,
        ),
        # Unseeded: processes agree with each other (on rank 0's seed), not with another run.
        "unseeded": NeuralODE(hidden_layer_sizes=(4,), window_size=4, random_state=None, **{**shared, "max_epochs": 1}),
    }


def main(out: Path, checkpoint: Path) -> None:
    writes = []
    write = checkpoint_module.write_atomically
    checkpoint_module.write_atomically = lambda *args: (writes.append(args[1]), write(*args))
    X, t = series()
    results: dict[str, np.ndarray] = {}
    # Each process names its own log file, so a file written by another rank than 0 would show.
    log = out / f"history{os.environ.get('RANK', '0')}.csv"
    for name, model in models(checkpoint, log).items():
        model.fit(X, t=t)
        results[f"{name}_prediction"] = np.asarray(model.predict(X, X_t=t))
        results[f"{name}_history"] = model.history_.to_frame()[["train_loss", "valid_loss"]].to_numpy()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    results["checkpoint_writes"] = np.array(len(writes))
    results["main"] = np.array(is_main_process())
    np.savez(out / f"rank{rank}.npz", **results)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
