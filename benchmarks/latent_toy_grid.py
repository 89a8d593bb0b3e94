"""LatentODE on the toy periodic data at several learning rates, one process per fit.

Each fit is the ``latent_toy_periodic`` protocol's LatentODE interpolation cell
(1,000 series, 80% train, paper sizes, ``$DYNLEARN_GRID_EPOCHS`` epochs, default
50) with the learning rate replaced; the twelve fits (learning rates 1e-2,
5e-3, 3e-3, 2e-3 × 50 / 30 / 10 % observed) run in parallel processes, so use
a machine with a dozen idle cores. Prints one JSON line per fit:

    OMP_NUM_THREADS=1 python benchmarks/latent_toy_grid.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import irregular  # noqa: E402

LEARNING_RATES = (1e-2, 5e-3, 3e-3, 2e-3)
FRACTIONS = (0.5, 0.3, 0.1)


def fit(job: tuple[float, float, int]) -> dict:
    learning_rate, fraction, epochs = job
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    protocol = irregular.Protocol(
        "grid", toy_series=1000, toy_epochs=epochs, fractions=(fraction,), physionet_epochs=1, seeds=(0,)
    )
    irregular.LATENT_TOY = {**irregular.LATENT_TOY, "learning_rate": learning_rate}
    started = time.perf_counter()
    try:
        result = irregular.toy_score("latent_ode", "interpolation", fraction, protocol, 0, "cpu")
    except Exception as error:  # a diverged fit is a result of the grid, not a reason to stop it
        result = {"mse": float("nan"), "error": str(error).split(". ")[0]}
    result.update(learning_rate=learning_rate, fraction=fraction, epochs=epochs,
                  wall=time.perf_counter() - started)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    epochs = int(os.environ.get("DYNLEARN_GRID_EPOCHS", "50"))
    jobs = [(rate, fraction, epochs) for rate in LEARNING_RATES for fraction in FRACTIONS]
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(fit, jobs))


if __name__ == "__main__":
    main()
