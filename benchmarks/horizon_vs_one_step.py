"""Benchmark ``horizon_vs_one_step``: NeuralODE trained on multi-step rollouts (``horizon=``) against one-step training.

Van der Pol oscillators (``mu=1``, 60 observations over ``t`` in [0, 15],
observation noise 0.1) are the training data; 20 clean held-out series are
forecast 20 steps (about 5 time units, three quarters of a period) ahead
from their first 40 observations. Both models share everything but the
training windows: ``window_size=2`` (every window one step long) against
``horizon=20 * gap`` (windows of 21 observations, after warm-up stages on
shorter ones), with the same seed, layers and ``max_epochs``. Two settings:

- ``partial``: only ``x`` is observed, so the velocity lives in the hidden
  dimensions (``augment_dim="auto"``: 2, started from delay coordinates);
- ``full``: ``x`` and ``y`` are observed.

The figure is the forecast's mean squared error over the held-out data's
variance (per seed, and the median over seeds), with the epochs each fit
ran and its seconds.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from dynlearn import NeuralODE
from dynlearn.datasets import make_van_der_pol

from harness import Context, Record, median, register

N_TIMES, STEPS, NOISE = 60, 20, 0.1
T_SPAN = (0.0, 15.0)
GAP = (T_SPAN[1] - T_SPAN[0]) / (N_TIMES - 1)
SETTINGS = {"partial": ["x"], "full": ["x", "y"]}
TRAININGS = {"one_step": dict(window_size=2), "horizon": dict(horizon=STEPS * GAP)}


def _forecast_error(model: NeuralODE, test, columns: list[str]) -> float:
    X = test[columns].to_numpy().reshape(-1, N_TIMES, len(columns))
    t = test["time"].to_numpy()[:N_TIMES]
    origin = N_TIMES - STEPS
    forecast = model.predict(X[:, :origin], t=t[origin:], X_t=t[:origin])
    return float(np.mean((forecast - X[:, origin:]) ** 2) / np.mean(X.var(axis=(0, 1))))


@register(
    "horizon_vs_one_step",
    "20-step forecast MSE (over the data's variance) of NeuralODE(hidden_layer_sizes=(32, 32)) trained with "
    "horizon=20 steps against window_size=2, same seed and max_epochs, on make_van_der_pol(n_series=8, "
    "n_times=60, t_span=(0, 15), noise=0.1): x only (partial) and x, y (full); 20 held-out series.",
)
def horizon_vs_one_step(context: Context) -> list[Record]:
    seeds, epochs = ((0, 1), 20) if context.quick else ((0, 1, 2, 3, 4), 30)
    name = "horizon_vs_one_step"
    records = [Record(name, "max_epochs", epochs, "epochs"), Record(name, "seeds", len(seeds), "seeds")]
    for setting, columns in SETTINGS.items():
        errors: dict[str, list[float]] = {training: [] for training in TRAININGS}
        for seed in seeds:
            train = make_van_der_pol(n_series=8, n_times=N_TIMES, t_span=T_SPAN, noise=NOISE, random_state=seed)
            test = make_van_der_pol(n_series=20, n_times=N_TIMES, t_span=T_SPAN, random_state=seed + 1000)
            for training, options in TRAININGS.items():
                model = NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=epochs, random_state=seed,
                                  device=context.device.type, **options)
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=UserWarning)  # unconverged fits are part of the budget
                    model.fit(train[["series_id", "time", *columns]])
                seconds = time.perf_counter() - started
                error = _forecast_error(model, test, columns)
                errors[training].append(error)
                prefix = f"{setting}_{training}_seed{seed}"
                records += [
                    Record(name, f"{prefix}_mse_over_variance", error, "x"),
                    Record(name, f"{prefix}_epochs", model.n_epochs_, "epochs"),
                    Record(name, f"{prefix}_fit", seconds, "s"),
                ]
        ratios = [h / o for h, o in zip(errors["horizon"], errors["one_step"])]
        records += [
            Record(name, f"{setting}_one_step_median_mse_over_variance", median(errors["one_step"]), "x"),
            Record(name, f"{setting}_horizon_median_mse_over_variance", median(errors["horizon"]), "x"),
            Record(name, f"{setting}_median_ratio_horizon_over_one_step", median(ratios), "x"),
            Record(name, f"{setting}_seeds_where_horizon_wins", sum(r < 1 for r in ratios), "seeds"),
        ]
    return records
