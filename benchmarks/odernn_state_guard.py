"""ODERNN forecasts of real yearly series with and without the hidden-state box (``stabilize``).

The series and the split are those of ``neural_ode_forecast.py``: the first
80% of each series is the history, the last 20% is forecast from its end,
and the figure is the forecast's MSE divided by that of the naive forecast
(the last value carried forward). ODERNN runs with its default parameters
(``device="cpu"``), seeds 0 to 4. The box acts only when predicting, so each
fitted model forecasts twice, ``stabilize=False`` then ``True``: the two
columns differ by the guard alone. ``max_over_data_max`` is the forecast's
largest value over the history's.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/odernn_state_guard.py

writes ``results.csv`` and ``report.md`` in ``benchmarks/results/odernn_state_guard/``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from neural_ode_forecast import load_series, split

OUT = Path(__file__).resolve().parent / "results" / "odernn_state_guard"
SEEDS = (0, 1, 2, 3, 4)
COMMAND = "OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/odernn_state_guard.py"


def guard_rows(name: str, times: np.ndarray, values: np.ndarray) -> list[dict]:
    from dynlearn import ODERNN

    t_train, x_train, t_test, x_test = split(times, values)
    naive = np.mean((x_test - x_train[-1]) ** 2)
    rows = []
    for seed in SEEDS:
        model = ODERNN(random_state=seed, device="cpu")
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_train[:, None], t=t_train)
        fit_time = time.perf_counter() - started
        for stabilize in (False, True):
            model.set_params(stabilize=stabilize)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                forecast = model.predict(x_train[:, None], t=t_test, X_t=t_train)[:, 0]
            rows.append(dict(
                series=name, seed=seed, stabilize=stabilize,
                mse_over_naive=float(np.mean((forecast - x_test) ** 2) / naive),
                max_over_data_max=float(forecast.max() / x_train.max()),
                range_warning=any(w.category.__name__ == "ForecastRangeWarning" for w in caught),
                fit_time_s=fit_time, epochs=model.n_epochs_, n_train=len(x_train), n_test=len(x_test),
            ))
            print(rows[-1], flush=True)
    return rows


def write_report(frame: pd.DataFrame) -> None:
    lines = [
        "# ODERNN forecasts of real series: hidden-state box off and on",
        "",
        "MSE of the forecast of the last 20% of each series divided by the naive (last value) forecast's;",
        f"median [min, max] over seeds {', '.join(map(str, SEEDS))}, default ODERNN, one thread. Both columns",
        "forecast with the same fitted model.",
        "",
        "| series | stabilize=False | stabilize=True | max forecast ÷ data max, False → True |",
        "|---|---|---|---|",
    ]
    for series, rows in frame.groupby("series", sort=False):
        cells = []
        for stabilize in (False, True):
            mse = rows.loc[rows["stabilize"] == stabilize, "mse_over_naive"]
            cells.append(f"{mse.median():.3g} [{mse.min():.3g}, {mse.max():.3g}]")
        peak = rows.groupby("stabilize")["max_over_data_max"].max()
        lines.append(f"| {series} | {cells[0]} | {cells[1]} | {peak[False]:.3g} → {peak[True]:.3g} |")
    lines += ["", "Per seed in `results.csv`. Produced by:", "", "```", COMMAND, "```", ""]
    (OUT / "report.md").write_text("\n".join(lines))


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for name, (times, values) in load_series().items():
        rows += guard_rows(name, times, values)
    OUT.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(OUT / "results.csv", index=False)
    write_report(frame)


if __name__ == "__main__":
    main()
