"""NeuralODE forecasts of real yearly series against the naive forecast and statsmodels.

Each series is split in time: the first 80% is the history the models are
fitted on, the last 20% is forecast from the end of the history. The figure
is the forecast's mean squared error divided by that of the naive forecast
(the last observed value carried forward): below 1 beats naive. NeuralODE
runs with its default parameters (``device="cpu"``), three seeds per series;
ExponentialSmoothing (additive damped trend) and ARIMA(2, 0, 0) from
statsmodels are references.

    OMP_NUM_THREADS=1 python benchmarks/neural_ode_forecast.py --label after

appends rows for ``--label`` to ``results.csv`` and rewrites ``report.md``
in ``benchmarks/results/neural_ode_forecast/``. ``--label before`` with
``PYTHONPATH`` pointing at an older checkout of the package measures that
version with the same script. ``--models neural_ode`` or ``--models
reference`` runs only one group; ``--options '{"augment_dim": 0}'`` passes
parameters to NeuralODE (recorded in the label). ``--ensemble 5`` fits a
``SeedEnsemble`` of five NeuralODEs per seed instead of one model, which
measures how much averaging over seeds narrows the spread between seeds.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

OUT = Path(__file__).resolve().parent / "results" / "neural_ode_forecast"
SEEDS = (0, 1, 2)
COMMANDS = """git archive <previous commit> dynlearn | tar -x -C /tmp/before
OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python benchmarks/neural_ode_forecast.py --label before
OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/neural_ode_forecast.py --label after --models neural_ode
OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/neural_ode_forecast.py --label after --models neural_ode \\
    --options '{"hidden_init": "encoder"}'   # likewise '{"hidden_init": "zeros"}', '{"augment_dim": 0}'
OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/neural_ode_forecast.py --label after --models neural_ode --ensemble 5"""
TEST_FRACTION = 0.2


def load_series() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (times, values) of the univariate real series."""
    import statsmodels.api as sm

    from dynlearn.datasets import load_lynx_hare

    lynx = load_lynx_hare().frame
    sunspots = sm.datasets.sunspots.load_pandas().data
    nile = sm.datasets.nile.load_pandas().data
    return {
        "lynx": (lynx["time"].to_numpy(float), lynx["lynx"].to_numpy(float)),
        "sunspots": (sunspots["YEAR"].to_numpy(float), sunspots["SUNACTIVITY"].to_numpy(float)),
        "nile": (nile["year"].to_numpy(float), nile["volume"].to_numpy(float)),
    }


def split(times: np.ndarray, values: np.ndarray):
    n_train = int(round(len(values) * (1 - TEST_FRACTION)))
    return times[:n_train], values[:n_train], times[n_train:], values[n_train:]


def neural_ode_rows(name, times, values, label, options, ensemble=0):
    from dynlearn import NeuralODE, SeedEnsemble

    t_train, x_train, t_test, x_test = split(times, values)
    naive = np.mean((x_test - x_train[-1]) ** 2)
    rows = []
    for seed in SEEDS:
        model = NeuralODE(random_state=seed, device="cpu", **options)
        if ensemble:
            model = SeedEnsemble(model, n_members=ensemble, random_state=seed)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_train[:, None], t=t_train)
            fit_time = time.perf_counter() - started
            try:
                forecast = model.predict(x_train[:, None], t=t_test, X_t=t_train)[:, 0]
                status = "ok"
            except RuntimeError as error:  # a forecast that blows up fails its solve (IntegrationError)
                forecast, status = np.full(len(x_test), np.inf), type(error).__name__
        mse = float(np.mean((forecast - x_test) ** 2))
        members = model.estimators_ if ensemble else [model]
        rows.append(dict(label=label, series=name, model=f"SeedEnsemble(NeuralODE, {ensemble})" if ensemble else "NeuralODE",
                         seed=seed, mse_over_naive=mse / naive,
                         status=status, fit_time_s=fit_time, epochs=int(np.median([m.n_epochs_ for m in members])), n_train=len(x_train), n_test=len(x_test),
                         max_abs_forecast_over_range=float(np.max(np.abs(forecast - x_train.mean())) / np.ptp(x_train))))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def reference_rows(name, times, values):
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    _, x_train, _, x_test = split(times, values)
    naive = np.mean((x_test - x_train[-1]) ** 2)
    fits = {
        "ExponentialSmoothing(damped trend)": lambda: ExponentialSmoothing(x_train, trend="add", damped_trend=True).fit(),
        "ARIMA(2,0,0)": lambda: ARIMA(x_train, order=(2, 0, 0)).fit(),
    }
    rows = []
    for model, fit in fits.items():
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forecast = np.asarray(fit().forecast(len(x_test)))
        rows.append(dict(label="reference", series=name, model=model, seed=-1,
                         mse_over_naive=float(np.mean((forecast - x_test) ** 2) / naive), status="ok",
                         fit_time_s=time.perf_counter() - started, epochs=np.nan, n_train=len(x_train),
                         n_test=len(x_test), max_abs_forecast_over_range=np.nan))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_report(frame: pd.DataFrame, command: str) -> None:
    summary = (
        frame.groupby(["series", "model", "label"], sort=False)
        .agg(median=("mse_over_naive", "median"), low=("mse_over_naive", "min"), high=("mse_over_naive", "max"),
             fit_time_s=("fit_time_s", "median"), runs=("mse_over_naive", "size"),
             failed=("status", lambda s: int((s != "ok").sum())))
        .reset_index()
    )
    lines = [
        "# NeuralODE forecasts of real series",
        "",
        "MSE of the forecast of the last 20% of each series divided by the naive (last value) forecast's;",
        "median [min, max] over seeds 0, 1, 2 for NeuralODE; fit time is the median in seconds on one thread.",
        "",
        "| series | model | label | MSE ÷ naive, median [range] | fit time (s) |",
        "|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        spread = f"{row.median:.3g} [{row.low:.3g}, {row.high:.3g}]" if row.runs > 1 else f"{row.median:.3g}"
        if row.failed:
            spread += f" ({row.failed} forecast solve{'s' if row.failed > 1 else ''} failed: inf)"
        lines.append(f"| {row.series} | {row.model} | {row.label} | {spread} | {row.fit_time_s:.2f} |")
    lines += ["", "Produced by:", "", "```", command, "```", ""]
    (OUT / "report.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--models", choices=["all", "neural_ode", "reference"], default="all")
    parser.add_argument("--options", default="{}", help="JSON of NeuralODE parameters")
    parser.add_argument("--series", nargs="*", default=None)
    parser.add_argument("--ensemble", type=int, default=0, help="members of a SeedEnsemble per seed (0: one model)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = json.loads(args.options)
    label = args.label + (f" {json.dumps(options, sort_keys=True)}" if options else "")
    rows = []
    for name, (times, values) in load_series().items():
        if args.series and name not in args.series:
            continue
        if args.models in ("all", "reference"):
            rows += reference_rows(name, times, values)
        if args.models in ("all", "neural_ode"):
            rows += neural_ode_rows(name, times, values, label, options, args.ensemble)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.csv"
    frame = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        keep = ~(old["label"].isin(frame["label"].unique()) & old["series"].isin(frame["series"].unique())
                 & old["model"].isin(frame["model"].unique()))
        frame = pd.concat([old[keep], frame], ignore_index=True)
    frame.to_csv(path, index=False)
    write_report(frame, COMMANDS)


if __name__ == "__main__":
    main()
