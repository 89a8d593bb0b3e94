"""Energy models under known forces: HamiltonianNN and LagrangianNN forecasts of forced oscillators with and without inputs.

24 undamped series of ``make_forced_oscillator`` (``damping=0``: exactly a
forced Hamiltonian system, ``dp/dt = -q + u``; with unit mass ``p = dq/dt``,
so the same columns serve the Lagrangian model as positions and velocities),
60 samples over 15 time units, a different multisine force per series: fit
on 16, forecast the second half of the other 8 — under input signals never
seen in training — from their first half. Figures: R² and MSE of the
forecasts and fit seconds, for each ``covariate_interpolation``, for a
separable ``H`` on the leapfrog stepper, and for the same model without the
input.

    OMP_NUM_THREADS=1 python benchmarks/forced_oscillator_energy_inputs.py

writes ``benchmarks/results/forced_oscillator_energy_inputs/report.md``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "forced_oscillator_energy_inputs"
MODEL = dict(hidden_layer_sizes=(32, 32), max_epochs=100, random_state=0, device="cpu", n_threads=1)
STATES = ["q", "p"]


def main() -> None:
    from dynlearn import HamiltonianNN, LagrangianNN
    from dynlearn.datasets import make_forced_oscillator
    from dynlearn.metrics import r2_score

    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), damping=0.0, random_state=0)
    train, test = frame[frame.series_id < 16], frame[frame.series_id >= 16]
    history, future = test[test.time <= 7.5], test[test.time > 7.5]
    truth = future[["series_id", "time", *STATES]]
    runs = []
    for estimator in (HamiltonianNN, LagrangianNN):
        name = estimator.__name__
        runs += [(f"{name}, inputs, {i}", estimator, dict(MODEL, covariates=["u"], covariate_interpolation=i))
                 for i in ("previous", "linear", "cubic")]
        runs.append((f"{name}, no inputs", estimator, dict(MODEL)))
    runs.append(("HamiltonianNN separable, inputs, linear, leapfrog", HamiltonianNN,
                 dict(MODEL, covariates=["u"], covariate_interpolation="linear", separable=True, solver="leapfrog")))
    lines = ["# Energy models forecasting under unseen forces (undamped forced oscillator)", "",
             f"`benchmarks/forced_oscillator_energy_inputs.py`, OMP_NUM_THREADS=1, torch threads "
             f"{torch.get_num_threads()}, CPU. 8 held-out series, second half forecast from the first.", "",
             "| model | R² | MSE | fit s |", "|---|---:|---:|---:|"]
    for name, estimator, options in runs:
        model = estimator(**options)
        driven = "covariates" in options
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train if driven else train.drop(columns="u"))
            seconds = time.perf_counter() - started
            query = future[["series_id", "time", "u"]] if driven else future[["series_id", "time"]]
            predicted = model.predict(history if driven else history.drop(columns="u"), t=query)
        mse = float(np.mean((predicted[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2))
        lines.append(f"| {name} | {r2_score(truth, predicted):.3f} | {mse:.3g} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
