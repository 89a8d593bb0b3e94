"""What knowing the input buys: every forecaster on forced oscillators, with and without ``covariates``.

24 series of ``make_forced_oscillator`` (60 samples over 15 time units, a
different multisine force per series): fit on 16, forecast the second half
of the other 8 — under input signals never seen in training — from their
first half. Figures: R² and MSE of the forecasts, fit seconds, beside the
naive forecast (``LastValueForecaster``: each state keeps its last value).
NeuralODE for each ``covariate_interpolation`` and without the input (on
rk4, as the driven models, and on the adaptive dopri5); then ODERNN (which
holds the input between samples), LatentODE, NeuralSDE, LatentSDE and
NeuralCDE, each with and without it, at the small settings their tests use.
The energy models, which need an undamped system, have their own script
(``forced_oscillator_energy_inputs.py``).

    OMP_NUM_THREADS=1 python benchmarks/forced_oscillator_inputs.py

writes ``benchmarks/results/forced_oscillator_inputs/report.md``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "forced_oscillator_inputs"
MODEL = dict(hidden_layer_sizes=(32, 32), max_epochs=40, random_state=0, device="cpu")
RNN = dict(hidden_dim=16, max_epochs=60, task="extrapolation", batch_size=10, random_state=0, device="cpu")
LATENT_ODE = dict(latent_dim=4, encoder_dim=16, encoder_layer_sizes=(32,), ode_layer_sizes=(32,), solver="rk4",
                  task="extrapolation", refine_steps=0, max_epochs=30, random_state=0, device="cpu")
SDE = dict(hidden_layer_sizes=(32, 32), max_epochs=40, random_state=0, device="cpu")
LATENT_SDE = dict(latent_dim=4, hidden_layer_sizes=(32, 32), dt=1.0, max_epochs=60, patience=None, random_state=0,
                  device="cpu")
CDE = dict(history_length=8, horizon=7.5, solver="midpoint", max_epochs=20, random_state=0, device="cpu")
STATES = ["q", "p"]


def main() -> None:
    from dynlearn import ODERNN, LastValueForecaster, LatentODE, LatentSDE, NeuralCDE, NeuralODE, NeuralSDE
    from dynlearn.datasets import make_forced_oscillator

    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), random_state=0)
    runs = [(f"NeuralODE, inputs, {i}, rk4", NeuralODE, dict(MODEL, covariates=["u"], covariate_interpolation=i,
                                                                solver="rk4"))
            for i in ("previous", "linear", "cubic")]
    runs += [("NeuralODE, no inputs, rk4", NeuralODE, dict(MODEL, solver="rk4")),
             ("NeuralODE, no inputs, dopri5", NeuralODE, dict(MODEL, solver="dopri5")),
             ("ODERNN, inputs, previous", ODERNN, dict(RNN, covariates=["u"])),
             ("ODERNN, no inputs", ODERNN, dict(RNN))]
    for name, estimator, options in (("LatentODE", LatentODE, LATENT_ODE), ("NeuralSDE", NeuralSDE, SDE),
                                     ("LatentSDE", LatentSDE, LATENT_SDE), ("NeuralCDE", NeuralCDE, CDE)):
        reading = {} if estimator is NeuralCDE else {"covariate_interpolation": "linear"}
        runs += [(f"{name}, inputs, linear", estimator, dict(options, covariates=["u"], **reading)),
                 (f"{name}, no inputs", estimator, dict(options))]
    runs.append(("naive (last value)", LastValueForecaster, {}))
    write_table(frame, runs, "# Forecasts under unseen input signals (forced oscillator)",
                "benchmarks/forced_oscillator_inputs.py", OUT)


def write_table(frame, runs: list, title: str, script: str, out: Path) -> None:
    """Fit each ``(name, estimator, options)`` on series 0–15 of ``frame``, forecast the second half of 16–23.

    A run with ``covariates`` in its options reads the input ``u`` (the
    query frame carries it); the others are fitted without that column.
    Writes R², MSE and fit seconds as ``out/report.md``, a row per run.
    """
    from dynlearn.metrics import r2_score

    train, test = frame[frame.series_id < 16], frame[frame.series_id >= 16]
    history, future = test[test.time <= 7.5], test[test.time > 7.5]
    truth = future[["series_id", "time", *STATES]]
    lines = [title, "", f"`{script}`, OMP_NUM_THREADS=1, torch threads {torch.get_num_threads()}, "
             "CPU. 8 held-out series, second half forecast from the first.", "",
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
