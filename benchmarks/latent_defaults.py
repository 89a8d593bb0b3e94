"""LatentODE defaults on a panel of irregular sinusoids of varied frequency, amplitude and phase.

300 series of 100 times on [0, 5]: ``y = a sin(2π f t + φ)`` plus N(0, 0.01²) noise, with
``f ~ U(0.5, 1.5) × 0.25``, ``a ~ U(0.5, 1.5)``, ``φ ~ U(0, 2π)``; each entry is observed with
probability 0.5. The models are fitted on 240 series' observed entries; each of the 60 held-back
series is conditioned on its observed entries and predicted at its unobserved times. Prints one
JSON line per configuration (``name=key=value,...`` arguments, values read as Python literals):

    OMP_NUM_THREADS=1 python benchmarks/latent_defaults.py default former=refine_steps=0,refine_rate=0.02,patience=20

An argument ``grid:name=key=value,...`` fits once and prints the held-out MSE at several
``refine_steps`` and ``refine_rate`` (set after the fit).
"""

from __future__ import annotations

import ast
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd

from dynlearn import LastValueForecaster, LatentODE, ODERNN

N_SERIES, N_TIMES, N_HELD, SPAN, BASE_FREQUENCY, NOISE = 300, 100, 60, 5.0, 0.25, 0.01


def panel(seed: int = 0, n_series: int = N_SERIES, n_times: int = N_TIMES, n_held: int = N_HELD):
    """Observed training rows, observed held-back rows, and the held-back rows to predict (with truth)."""
    rng = np.random.RandomState(seed)
    times = np.linspace(0.0, SPAN, n_times)
    frequency = BASE_FREQUENCY * rng.uniform(0.5, 1.5, n_series)
    amplitude = rng.uniform(0.5, 1.5, n_series)
    phase = rng.uniform(0.0, 2 * np.pi, n_series)
    values = amplitude[:, None] * np.sin(2 * np.pi * frequency[:, None] * times + phase[:, None])
    values += NOISE * rng.standard_normal(values.shape)
    frame = pd.DataFrame({"series_id": np.repeat(np.arange(n_series), n_times),
                          "time": np.tile(times, n_series), "y": values.ravel()})
    observed = rng.uniform(size=len(frame)) < 0.5
    held = frame["series_id"].to_numpy() >= n_series - n_held
    return frame[observed & ~held], frame[observed & held], frame[~observed & held]


def last_value(given: pd.DataFrame, queries: pd.DataFrame) -> np.ndarray:
    """Each query answered with its series' latest observation before it: dynlearn's LastValueForecaster."""
    return LastValueForecaster().fit(given).predict(given, t=queries[["series_id", "time"]])["y"].to_numpy()


def run(name: str, params: dict, seed: int = 0) -> dict:
    train, given, hidden = panel()
    estimator = ODERNN if params.pop("model", "latent") == "odernn" else LatentODE
    model = estimator(random_state=seed, **params)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
    fit_time = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict(given, t=hidden[["series_id", "time"]])["y"].to_numpy()
    predict_time = time.perf_counter() - started
    truth = hidden["y"].to_numpy()
    mse = float(np.mean((predicted - truth) ** 2))
    baseline = float(np.mean((last_value(given, hidden) - truth) ** 2))
    result = dict(name=name, params=params, seed=seed, mse=mse, last_value_mse=baseline, ratio=baseline / mse,
                  epochs=int(model.n_epochs_), fit_time=fit_time, predict_time=predict_time)
    if isinstance(model, LatentODE):
        started = time.perf_counter()
        lower, upper = (part["y"].to_numpy() for part in
                        model.predict_interval(given, t=hidden[["series_id", "time"]], coverage=0.9))
        result["coverage"] = float(np.mean((truth >= lower) & (truth <= upper)))
        result["interval_time"] = time.perf_counter() - started
        result["noise_std"] = float(model.noise_std_[0])
    return result


def refine_grid(name: str, params: dict, seed: int = 0) -> list[dict]:
    """One fit, then its predictions at each (refine_steps, refine_rate) of a grid (no refit needed)."""
    train, given, hidden = panel()
    model = LatentODE(random_state=seed, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
    truth = hidden["y"].to_numpy()
    baseline = float(np.mean((last_value(given, hidden) - truth) ** 2))
    results = []
    for steps, rate in [(0, 0.02), (40, 0.02), (40, 0.05), (40, 0.1), (100, 0.02), (100, 0.05), (100, 0.1),
                        (100, 0.2), (200, 0.1)]:
        model.set_params(refine_steps=steps, refine_rate=rate)
        started = time.perf_counter()
        mse = float(np.mean((model.predict(given, t=hidden[["series_id", "time"]])["y"].to_numpy() - truth) ** 2))
        results.append(dict(name=name, params=params, epochs=int(model.n_epochs_), refine_steps=steps,
                            refine_rate=rate, mse=mse, ratio=baseline / mse,
                            predict_time=time.perf_counter() - started))
        print(json.dumps(results[-1]), flush=True)
    return results


def parse(argument: str) -> tuple[str, dict]:
    name, _, spec = argument.partition("=")
    params = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return name, params


if __name__ == "__main__":
    seed = 0
    for argument in sys.argv[1:]:
        if argument.startswith("seed="):
            seed = int(argument[5:])
            continue
        if argument.startswith("grid:"):
            refine_grid(*parse(argument[5:]), seed=seed)
            continue
        print(json.dumps(run(*parse(argument), seed=seed)), flush=True)
