"""Command line: ``dynlearn demo``, ``fit``, ``predict``, ``datasets`` and ``bench``."""

from __future__ import annotations

import argparse
import ast
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

MODELS = {"neuralode": "NeuralODE"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynlearn`` command and ``python -m dynlearn``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        print(f"dynlearn {args.command}: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dynlearn",
        description="Learn dynamical systems from time series. Data files are long tables "
        "(CSV or Parquet) with columns series_id, time and one column per variable.",
    )
    parser.add_argument("--version", action="version", version=f"dynlearn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="fit a NeuralODE on a simulated oscillator, compare its forecast with a naive baseline, write a plot",
        description="Simulates an irregularly sampled, noisy damped oscillator with missing values, fits a "
        "NeuralODE, forecasts held-out futures and prints the error beside a last-value baseline.",
    )
    demo.add_argument("--out", default="dynlearn_demo.png", help="where to write the plot (PNG; needs matplotlib)")
    demo.add_argument("--max-epochs", type=int, default=150, help="training epochs (default 150)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1' or 'auto' (default cpu)")
    demo.set_defaults(run=_demo)

    fit = commands.add_parser("fit", help="fit a model on a CSV/Parquet long table and save it",
                              description="Fit an estimator on a long table and pickle it.")
    fit.add_argument("data", help="CSV or Parquet file with series_id, time and variable columns")
    fit.add_argument("--model", choices=sorted(MODELS), default="neuralode", help="which estimator (default neuralode)")
    fit.add_argument("--out", default="model.pkl", help="where to save the fitted model (default model.pkl)")
    fit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="an estimator parameter, e.g. --param max_epochs=50 (repeatable)")
    fit.set_defaults(run=_fit)

    predict = commands.add_parser("predict", help="forecast with a saved model from a table of histories",
                                  description="Condition a saved model on each series' history and "
                                  "write predictions at the requested times as a long table.")
    predict.add_argument("model", help="a model saved by 'dynlearn fit'")
    predict.add_argument("data", help="CSV or Parquet histories (series_id, time, variables)")
    when = predict.add_mutually_exclusive_group(required=True)
    when.add_argument("--times", help="comma-separated query times shared by all series, e.g. 8,9,10")
    when.add_argument("--horizon", type=float, help="forecast this far past each series' last time")
    predict.add_argument("--steps", type=int, default=10, help="points per series with --horizon (default 10)")
    predict.add_argument("--out", default="-", help="output CSV (default: standard output)")
    predict.set_defaults(run=_predict)

    datasets = commands.add_parser("datasets", help="list, describe and get datasets (simulated, bundled, downloaded)",
                                   description="The dataset catalogue. Without a subcommand, list it.")
    datasets.set_defaults(run=_datasets_list)
    actions = datasets.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list every dataset with its kind").set_defaults(run=_datasets_list)
    info = actions.add_parser("info", help="show a dataset's card (source, licence, variables, units)")
    info.add_argument("name", help="a name from 'dynlearn datasets list'")
    info.set_defaults(run=_datasets_info)
    get = actions.add_parser("fetch", help="simulate, load or download a dataset; optionally write its table",
                             description="Simulated datasets are generated (--param sets arguments), bundled ones "
                             "loaded, downloaded ones fetched once into the cache (or read from --path).")
    get.add_argument("name", help="a name from 'dynlearn datasets list'")
    get.add_argument("--path", help="a local file, archive or folder in the original layout (downloaded datasets)")
    get.add_argument("--data-home", help="cache folder (default: $DYNLEARN_DATA or ~/dynlearn_data)")
    get.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="an argument of the dataset function, e.g. --param n_series=5 (repeatable)")
    get.add_argument("--out", help="write the long table to this CSV/Parquet file ('-' for standard output)")
    get.set_defaults(run=_datasets_fetch)

    bench = commands.add_parser(
        "bench", help="compare every model on every task and write one report (results.csv, report.md, figures)",
        description="Fit every registered model (each public estimator, ResNet-style and linear-multistep "
        "discretisations, a last-value baseline) on every registered task (irregular, conservative, chaotic, "
        "stochastic, real data) over several seeds, add the performance rows, and write report.md, results.csv "
        "and PNG figures into --out. Without --quick or --tiny this is the full run (published data sizes, "
        "3 seeds: hours).")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small data and training (under 10 min on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="a smoke test of the machinery (seconds; numbers mean nothing)")
    bench.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default cpu)")
    bench.add_argument("--out", default="dynlearn_bench", help="output folder (default ./dynlearn_bench)")
    bench.add_argument("--seeds", type=int, help="seeds per cell (default 3; 2 with --quick or --tiny)")
    bench.add_argument("--only", nargs="+", metavar="NAME", help="run only these tasks, models or performance rows")
    bench.add_argument("--list", action="store_true", help="list the registered tasks, models and rows, then stop")
    bench.add_argument("--pendulum-path", help="local copy of the real pendulum (default: $DYNLEARN_PENDULUM_PATH)")
    bench.add_argument("--physionet-path", help="local PhysioNet 2012 folder (default: $DYNLEARN_PHYSIONET_PATH)")
    bench.add_argument("--no-figures", action="store_true", help="write no PNG figures")
    bench.set_defaults(run=_bench)
    return parser


# ------------------------------------------------------------------ commands
def _demo(args: argparse.Namespace) -> int:
    from . import NeuralODE
    from .datasets import make_damped_oscillator
    from .metrics import mean_squared_error

    frame = make_damped_oscillator(
        n_series=40, n_times=40, t_span=(0.0, 12.0), noise=0.02, irregular=True, missing_fraction=0.1,
        random_state=args.seed,
    )
    split = 8.0
    test_ids = frame["series_id"].unique()[-8:]
    train = frame[~frame["series_id"].isin(test_ids)]
    history = frame[frame["series_id"].isin(test_ids) & (frame["time"] <= split)]
    future = frame[frame["series_id"].isin(test_ids) & (frame["time"] > split)]
    print(f"Data: {frame['series_id'].nunique()} irregularly sampled series of a damped oscillator "
          f"(q, p), 2% noise, 10% missing. Training on {train['series_id'].nunique()}, "
          f"forecasting the rest from t={split}.")
    model = NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=args.max_epochs, random_state=args.seed,
                      device=args.device)
    model.fit(train)
    print(f"Fit: {model.n_epochs_} epochs in {model.training_time_:.1f} s "
          f"(best validation loss {model.history_.to_frame()['valid_loss'].min():.4f}).")
    queries = future[["series_id", "time"]]
    forecast = model.predict(history, t=queries)
    baseline = _last_value_forecast(history, queries)
    truth = future.set_index(["series_id", "time"])
    mse_model = mean_squared_error(truth, forecast.set_index(["series_id", "time"]))
    mse_naive = mean_squared_error(truth, baseline.set_index(["series_id", "time"]))
    print(f"Forecast MSE over t in ({split}, 12]: NeuralODE {mse_model:.4f}  |  last-value baseline {mse_naive:.4f}  "
          f"({mse_naive / mse_model:.1f}x lower error)")
    _demo_plot(model, history, future, split, args.out)
    return 0


def _last_value_forecast(history: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    last = history.sort_values("time").groupby("series_id").last().drop(columns="time")
    return queries.join(last, on="series_id")


def _demo_plot(model: Any, history: pd.DataFrame, future: pd.DataFrame, split: float, out: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("Plot skipped: matplotlib is not installed (pip install 'dynlearn[plot]').")
        return
    from .plotting import plot_trajectories

    ids = history["series_id"].unique()[:3]
    dense = np.linspace(history["time"].min(), future["time"].max(), 120)
    queries = pd.DataFrame({"series_id": np.repeat(ids, len(dense)), "time": np.tile(dense, len(ids))})
    shown = history[history["series_id"].isin(ids)]
    curve = model.predict(shown, t=queries)
    fig = plot_trajectories(pd.concat([shown, future[future["series_id"].isin(ids)]]), curve)
    for ax in fig.axes:
        ax.axvline(split, color="grey", linestyle="--", linewidth=1)
    fig.suptitle("NeuralODE: history (t ≤ 8) and forecast", y=1.02)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"Plot written to {out}")


def _fit(args: argparse.Namespace) -> int:
    from . import estimators

    estimator = getattr(estimators, MODELS[args.model])(**_params(args.param))
    started = time.perf_counter()
    estimator.fit(_read_table(args.data))
    with open(args.out, "wb") as handle:
        pickle.dump(estimator, handle)
    print(f"Fitted {type(estimator).__name__} in {time.perf_counter() - started:.1f} s; saved to {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    with open(args.model, "rb") as handle:
        estimator = pickle.load(handle)
    history = _read_table(args.data)
    if args.times is not None:
        t: Any = np.array([float(v) for v in args.times.split(",")])
    else:
        last = history.groupby("series_id", sort=False)["time"].max()
        steps = np.linspace(0, args.horizon, args.steps + 1)[1:]
        t = pd.DataFrame({"series_id": np.repeat(last.index, len(steps)),
                          "time": (last.to_numpy()[:, None] + steps).ravel()})
    _write_table(estimator.predict(history, t=t), args.out)
    return 0


def _datasets_list(args: argparse.Namespace) -> int:
    from .datasets import catalogue

    for entry in catalogue().values():
        print(f"{entry.name:26s} {entry.kind:10s} {entry.summary}")
    return 0


def _datasets_info(args: argparse.Namespace) -> int:
    from .datasets import dataset

    print(dataset(args.name).description())
    return 0


def _datasets_fetch(args: argparse.Namespace) -> int:
    from .datasets import dataset

    entry = dataset(args.name)
    params = _params(args.param)
    if entry.kind == "download":
        params.update({k: v for k, v in (("path", args.path), ("data_home", args.data_home)) if v is not None})
    result = entry.function(**params)
    frame = result if isinstance(result, pd.DataFrame) else result["frame"]
    if args.out:
        _write_table(frame, args.out)
    if args.out != "-":
        print(f"{entry.name}: {frame['series_id'].nunique()} series, {len(frame)} rows, "
              f"variables {[c for c in frame.columns if c not in ('series_id', 'time')][:12]}"
              + (f"; written to {args.out}" if args.out else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import os

    import torch

    from . import bench

    if args.list:
        for kind, registry in (("task", bench.TASKS), ("model", bench.MODELS), ("performance", bench.PERF)):
            for name, entry in registry.items():
                print(f"{kind:12s} {name:16s} {entry.description[:100]}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds: expected a positive number of seeds; got {args.seeds}. Pass e.g. --seeds 2.")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to torch; run with --device cpu.")
    for path, variable in ((args.pendulum_path, bench.PENDULUM_PATH_VARIABLE),
                           (args.physionet_path, bench.PHYSIONET_PATH_VARIABLE)):
        if path is not None:
            os.environ[variable] = path  # the tasks read their data paths from these variables
    tasks, models, perf = bench.select(args.only)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    result = bench.run_suite(size=size, device=args.device, seeds=args.seeds, tasks=tasks, models=models,
                             perf=perf, command=_bench_command(args))
    written = bench.write_report(result, args.out, figures=not args.no_figures)
    print(f"Wrote {written['report']}, {written['csv']} and {len(written) - 2} figure(s) in {result.seconds:.0f} s.")
    return 0


def _bench_command(args: argparse.Namespace) -> str:
    parts = ["dynlearn bench"] + (["--quick"] if args.quick else ["--tiny"] if args.tiny else [])
    parts += [f"--device {args.device}"]
    parts += [f"--seeds {args.seeds}"] if args.seeds is not None else []
    parts += ["--only " + " ".join(args.only)] if args.only else []
    parts += [f"--pendulum-path {args.pendulum_path}"] if args.pendulum_path else []
    parts += [f"--physionet-path {args.physionet_path}"] if args.physionet_path else []
    return " ".join(parts)


# ------------------------------------------------------------------ helpers
def _params(pairs: Sequence[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--param: expected NAME=VALUE; got {pair!r}. Write e.g. --param max_epochs=50.")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def _read_table(path: str) -> pd.DataFrame:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _write_table(frame: pd.DataFrame, out: str) -> None:
    if out == "-":
        frame.to_csv(sys.stdout, index=isinstance(frame.index, pd.MultiIndex))
    elif Path(out).suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out)
    else:
        frame.to_csv(out, index=isinstance(frame.index, pd.MultiIndex))
