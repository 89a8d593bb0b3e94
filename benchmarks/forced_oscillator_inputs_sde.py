"""What knowing the input buys the stochastic models: NeuralSDE and LatentSDE with and without ``covariates``.

Forecasts: 24 series of ``make_forced_oscillator`` with observation noise
0.05 (60 samples over 15 time units, a different multisine force per
series); fit on 16, forecast the second half of the other 8 — under input
signals never seen in training — from their first half. Figures: R² and MSE
of the forecast means, fit seconds, with and without the input, at the
settings of ``tests/estimators/test_covariates_sde.py``.

Intervals: oscillators with process noise on the momentum
(:func:`forced_langevin`, σ = 0.3), same split; share of held-out forecast
entries inside the driven NeuralSDE's 90% intervals, from its Gaussian
moments and from 200 simulated paths, for three fit seeds, on the split's 8
held-out series and on 200 fresh ones. Then the same share on the
observation-noise data above (multi-step and one-step-ahead).

    OMP_NUM_THREADS=1 python benchmarks/forced_oscillator_inputs_sde.py

writes ``benchmarks/results/forced_oscillator_inputs_sde/report.md``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

OUT = Path(__file__).resolve().parent / "results" / "forced_oscillator_inputs_sde"
STATES = ["q", "p"]
CUT = 7.5
SDE = dict(hidden_layer_sizes=(32, 32), max_epochs=40, random_state=0, device="cpu")
LATENT = dict(latent_dim=4, hidden_layer_sizes=(32, 32), dt=1.0, max_epochs=60, patience=None, random_state=0,
              device="cpu")
# The calibration fit: the diffusion's output must travel far from its start (the position's increments are
# tiny), which a larger learning rate over more epochs reaches; all series train (no early-stopping split).
CALIBRATION = dict(hidden_layer_sizes=(32, 32), learning_rate=1e-2, max_epochs=150, validation_fraction=0.0,
                   patience=None, random_state=0, device="cpu")
# The calibration's fit seeds, and how many fresh held-out series it is also measured on: 8 series (one path each)
# measure a coverage to within about ±0.1, so the figure users read comes from many.
CALIBRATION_SEEDS = (0, 1, 2)
FRESH = 200


def forced_langevin(n_series: int, n_times: int, t_end: float, sigma: float, seed: int,
                    fine: int = 20) -> pd.DataFrame:
    """Oscillators ``dq = p dt``, ``dp = (-q - 0.3 p + u) dt + σ dW`` under multisine forces, observed exactly.

    Euler–Maruyama with ``fine`` steps per observation gap; one frame with
    columns ``series_id``, ``time``, ``q``, ``p``, ``u``.
    """
    rng = np.random.default_rng(seed)
    omega = rng.uniform(0.2, 2.0, (n_series, 5))
    amplitude = rng.normal(size=(n_series, 5)) / np.sqrt(5)
    phase = rng.uniform(0, 2 * np.pi, (n_series, 5))

    def force(t: float) -> np.ndarray:
        return (amplitude * np.sin(omega * t + phase)).sum(axis=1)

    q, p = rng.uniform(-1, 1, (2, n_series))
    h = t_end / (n_times - 1) / fine
    rows = []
    for k in range(n_times):
        t = k * fine * h
        rows.append(np.stack([np.arange(n_series), np.full(n_series, t), q, p, force(t)], axis=1))
        for j in range(fine):
            noise = sigma * np.sqrt(h) * rng.normal(size=n_series)
            q, p = q + h * p, p + h * (-q - 0.3 * p + force(t + j * h)) + noise
    frame = pd.DataFrame(np.concatenate(rows), columns=["series_id", "time", *STATES, "u"])
    frame["series_id"] = frame.series_id.astype(int)
    return frame.sort_values(["series_id", "time"]).reset_index(drop=True)


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train = frame[frame.series_id < 16].reset_index(drop=True)
    test = frame[frame.series_id >= 16].reset_index(drop=True)
    return train, test[test.time <= CUT], test[test.time > CUT]


def _inside(truth: np.ndarray, low: pd.DataFrame, high: pd.DataFrame) -> np.ndarray:
    """Which entries of ``truth`` lie inside the interval bounds ``low`` and ``high``."""
    return (truth >= low[STATES].to_numpy()) & (truth <= high[STATES].to_numpy())


def main() -> None:
    from dynlearn import LastValueForecaster, LatentSDE, NeuralSDE
    from dynlearn.datasets import make_forced_oscillator
    from dynlearn.metrics import r2_score

    warnings.simplefilter("ignore")
    noisy = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), noise=0.05, random_state=0)
    train, history, future = _split(noisy)
    truth = future[["series_id", "time", *STATES]]
    lines = ["# Stochastic models: forecasts under unseen input signals (forced oscillator)", "",
             f"`benchmarks/forced_oscillator_inputs_sde.py`, OMP_NUM_THREADS=1, torch threads "
             f"{torch.get_num_threads()}, CPU. 8 held-out series, second half forecast from the first.", "",
             "| model | R² | MSE | fit s |", "|---|---:|---:|---:|"]
    fitted = {}
    for name, estimator, options in [("NeuralSDE", NeuralSDE, SDE), ("LatentSDE", LatentSDE, LATENT)]:
        for driven in (True, False):
            model = estimator(**(dict(options, covariates=["u"], covariate_interpolation="linear") if driven
                                 else options))
            started = time.perf_counter()
            model.fit(train if driven else train.drop(columns="u"))
            seconds = time.perf_counter() - started
            query = future[["series_id", "time", "u"]] if driven else future[["series_id", "time"]]
            predicted = model.predict(history if driven else history.drop(columns="u"), t=query)
            mse = float(np.mean((predicted[STATES].to_numpy() - truth[STATES].to_numpy()) ** 2))
            label = f"{name}, {'inputs, linear' if driven else 'no inputs'}"
            lines.append(f"| {label} | {r2_score(truth, predicted):.3f} | {mse:.3g} | {seconds:.1f} |")
            print(lines[-1], flush=True)
            fitted[(name, driven)] = model

    lines += ["", "## 90% intervals of the driven NeuralSDE", "",
              ("Process noise σ=0.3 (`forced_langevin`). Each seed's model forecasts the second half of the split's "
               f"8 held-out series and of {FRESH} fresh series (own forces, seed 1) from their first half; coverage "
               "of all forecast entries, and of the first forecast step alone."), "",
              "| fit seed | intervals | 8 held-out | fresh | fresh, first step | fresh, mean width |",
              "|---:|---|---:|---:|---:|---:|"]
    train_l, history_l, future_l = _split(forced_langevin(24, 60, 15.0, sigma=0.3, seed=0))
    fresh = forced_langevin(FRESH, 60, 15.0, sigma=0.3, seed=1)
    history_f, future_f = fresh[fresh.time <= CUT], fresh[fresh.time > CUT]
    first = (future_f.groupby("series_id").cumcount() == 0).to_numpy()
    for seed in CALIBRATION_SEEDS:
        model = NeuralSDE(covariates=["u"], covariate_interpolation="linear",
                          **dict(CALIBRATION, random_state=seed)).fit(train_l)
        for n_samples in (None, 200):
            kind = "Gaussian moments" if n_samples is None else "200 simulated paths"
            shares = []
            for past, ahead in ((history_l, future_l), (history_f, future_f)):
                low, high = model.predict_interval(past, t=ahead[["series_id", "time", "u"]], coverage=0.9,
                                                   n_samples=n_samples, random_state=0)
                shares.append(_inside(ahead[STATES].to_numpy(), low, high))
            width = (high[STATES] - low[STATES]).to_numpy().mean()
            lines.append(f"| {seed} | {kind} | {shares[0].mean():.3f} | {shares[1].mean():.3f} | "
                         f"{shares[1][first].mean():.3f} | {width:.3f} |")
            print(lines[-1], flush=True)
    # What a user has without a model: the last value, with conformal intervals from its validation series.
    naive = LastValueForecaster().fit(train_l.drop(columns="u"))
    shares = []
    for past, ahead in ((history_l, future_l), (history_f, future_f)):
        low, high = naive.predict_interval(past.drop(columns="u"), t=ahead[["series_id", "time"]], coverage=0.9)
        shares.append(_inside(ahead[STATES].to_numpy(), low, high))
    width = (high[STATES] - low[STATES]).to_numpy().mean()
    lines.append(f"| LastValueForecaster | conformal | {shares[0].mean():.3f} | {shares[1].mean():.3f} | "
                 f"{shares[1][first].mean():.3f} | {width:.3f} |")
    print(lines[-1], flush=True)
    lines += ["", "| data | intervals | coverage |", "|---|---|---:|"]
    driven = fitted[("NeuralSDE", True)]
    low, high = driven.predict_interval(history, t=future[["series_id", "time", "u"]], coverage=0.9)
    lines.append(f"| observation noise 0.05, forecasts | Gaussian moments | "
                 f"{_inside(future[STATES].to_numpy(), low, high).mean():.3f} |")
    test = noisy[noisy.series_id >= 16].reset_index(drop=True)
    low, high = driven.predict_interval(test, coverage=0.9)
    later = (test.groupby("series_id").cumcount() > 0).to_numpy()
    inside = _inside(test[STATES].to_numpy(), low, high)
    lines.append(f"| observation noise 0.05, one step ahead | Gaussian moments | {inside[later].mean():.3f} |")
    print(*lines[-2:], sep="\n", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
