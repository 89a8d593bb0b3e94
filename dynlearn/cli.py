"""Command line: ``dynlearn demo``, ``fit``, ``predict``, ``datasets`` and ``bench``.

Nothing heavy is imported at module level: ``dynlearn --help`` and
``--version`` answer without loading torch, pandas or scikit-learn, and each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

if TYPE_CHECKING:
    import pandas as pd

# Command-line name -> public estimator. Classifiers read each series' label from --label-column.
MODELS = {
    "neuralode": "NeuralODE",
    "neuralsde": "NeuralSDE",
    "odernn": "ODERNN",
    "latentode": "LatentODE",
    "latentsde": "LatentSDE",
    "hamiltoniannn": "HamiltonianNN",
    "lagrangiannn": "LagrangianNN",
    "odernnclassifier": "ODERNNClassifier",
    "neuralcde": "NeuralCDE",
    "neuralcdeclassifier": "NeuralCDEClassifier",
    "latentodeclassifier": "LatentODEClassifier",
}
DEFAULT_ID_COLUMN = "series_id"  # dynlearn.data.ID_COLUMN, spelled here so that --help imports nothing
DEFAULT_TIME_COLUMN = "time"  # dynlearn.data.TIME_COLUMN
PICKLE_MAGIC = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 or later
_LITERAL_HINTS = {"true": "True", "false": "False", "none": "None", "null": "None"}


class CommandError(ValueError):
    """A bad invocation, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the usage itself is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynlearn`` command and ``python -m dynlearn``.

    Every error is one line on standard error with a non-zero exit status;
    ``--traceback`` shows the full traceback instead.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    command = " ".join(p for p in ("dynlearn", args.command, getattr(args, "action", None)) if p)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *_, **__: print(
            f"{command}: {category.__name__}: {' '.join(str(message).split())}", file=sys.stderr
        )
        try:
            return args.run(args)
        except KeyboardInterrupt:
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # noqa: BLE001 - the command line reports every failure as one line
            if args.traceback:
                raise
            print(f"{command}: error: {_one_line(error)}", file=sys.stderr)
            return 1


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, (ValueError, OSError, ImportError)) or not text:
        return text or type(error).__name__
    # Not a user-input error: name its type, which is what a bug report needs.
    return f"{type(error).__name__}: {text} (rerun with --traceback for details)"


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="dynlearn",
        description="Learn dynamical systems from time series. Data files are long tables "
        "(CSV or Parquet) with a series id column, a time column and one column per variable "
        f"(by default named {DEFAULT_ID_COLUMN} and {DEFAULT_TIME_COLUMN}).",
    )
    parser.add_argument("--version", action="version", version=f"dynlearn {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error (before the command: dynlearn --traceback fit ...)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="fit a NeuralODE on a simulated oscillator, compare its forecast with a naive baseline, write a plot",
        description="Simulates an irregularly sampled, noisy damped oscillator with missing values, fits a "
        "NeuralODE, forecasts held-out futures and prints the error beside a last-value baseline.",
    )
    demo.add_argument("--out", default="dynlearn_demo.png", help="where to write the plot (PNG; needs matplotlib)")
    demo.add_argument("--max-epochs", type=_positive_int, default=150, help="training epochs (default 150)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")
    demo.add_argument("--device", default="cpu", help="'cpu', 'cuda', 'cuda:1' or 'auto' (default cpu)")
    demo.set_defaults(run=_demo)

    fit = commands.add_parser(
        "fit", help="fit a model on a CSV/Parquet long table and save it",
        description="Fit an estimator on a long table and save it as a model file (a zip of JSON and tensors "
        "that loads without running code; see dynlearn.load).",
    )
    fit.add_argument("data", help="CSV or Parquet file with a series id, a time and variable columns")
    fit.add_argument("--model", choices=list(MODELS), default="neuralode", metavar="MODEL",
                     help=f"which estimator: {', '.join(MODELS)} (default neuralode)")
    fit.add_argument("--out", default="model.dlm", help="where to save the fitted model (default model.dlm)")
    fit.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="an estimator parameter as a Python literal, e.g. --param max_epochs=50 or "
                     "--param hidden_layer_sizes=(32,32) (repeatable)")
    _add_column_options(fit)
    fit.add_argument("--label-column", metavar="NAME",
                     help="classifiers only: the column holding each series' label (one value per series)")
    fit.set_defaults(run=_fit)

    predict = commands.add_parser(
        "predict", help="forecast with a saved model from a table of histories",
        description="Condition a saved model on each series' history and write predictions at the requested "
        "times as a long table (classifiers: one predicted label per series).",
    )
    predict.add_argument("model", help="a model file saved by 'dynlearn fit' or estimator.save")
    predict.add_argument("data", help="CSV or Parquet histories (series id, time, the model's variables; other "
                         "columns are ignored)")
    when = predict.add_mutually_exclusive_group()
    when.add_argument("--times", help="comma-separated query times shared by all series: numbers (8,9,10) or, for "
                      "a model fitted on dates, ISO dates (2024-01-08,2024-01-09T12:00)")
    when.add_argument("--horizon", help="forecast this far past each series' last time: a positive number, or for "
                      "a model fitted on dates a duration such as 7D, 12h or 30min")
    predict.add_argument("--steps", type=int, default=10, help="points per series with --horizon (default 10)")
    predict.add_argument("--out", default="-", help="output CSV or Parquet (default: standard output)")
    _add_column_options(predict)
    predict.add_argument("--allow-pickle", action="store_true",
                         help="also read a model pickled by an older dynlearn; unpickling runs code from the "
                         "file, so use it only for files you trust")
    predict.set_defaults(run=_predict)

    datasets = commands.add_parser("datasets", help="list, describe and get datasets (simulated, bundled, downloaded)",
                                   description="The dataset catalogue. Without a subcommand, list it.")
    datasets.set_defaults(run=_datasets_list)
    actions = datasets.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
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
        "stochastic, driven by inputs, real data) over several seeds, add the performance rows, and write report.md, results.csv "
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


def _positive_int(text: str) -> int:
    """argparse type of counts: an error names what was given and what is needed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1; got {value}")
    return value


def _seed(text: str) -> int:
    """argparse type of a random seed: what numpy's generators take."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**32 - 1; got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**32 - 1; got {value}")
    return value


def _add_column_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--time-column", default=None, metavar="NAME",
                         help=f"the column of observation times (default {DEFAULT_TIME_COLUMN})")
    command.add_argument("--id-column", default=None, metavar="NAME",
                         help=f"the column naming each series (default {DEFAULT_ID_COLUMN}; a table without it "
                         "is one series)")


# ------------------------------------------------------------------ commands
def _demo(args: argparse.Namespace) -> int:
    from . import NeuralODE
    from .data import ID_COLUMN, TIME_COLUMN
    from .datasets import make_damped_oscillator
    from .metrics import mean_squared_error

    frame = make_damped_oscillator(
        n_series=40, n_times=40, t_span=(0.0, 12.0), noise=0.02, irregular=True, missing_fraction=0.1,
        random_state=args.seed,
    )
    split = 8.0
    test_ids = frame[ID_COLUMN].unique()[-8:]
    train = frame[~frame[ID_COLUMN].isin(test_ids)]
    history = frame[frame[ID_COLUMN].isin(test_ids) & (frame[TIME_COLUMN] <= split)]
    future = frame[frame[ID_COLUMN].isin(test_ids) & (frame[TIME_COLUMN] > split)]
    print(f"Data: {frame[ID_COLUMN].nunique()} irregularly sampled series of a damped oscillator "
          f"(q, p), 2% noise, 10% missing. Training on {train[ID_COLUMN].nunique()}, "
          f"forecasting the rest from t={split}.")
    model = NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=args.max_epochs, random_state=args.seed,
                      device=args.device)
    model.fit(train)
    print(f"Fit: {model.n_epochs_} epochs in {model.training_time_:.1f} s "
          f"(best validation loss {model.history_.to_frame()['valid_loss'].min():.4f}).")
    queries = future[[ID_COLUMN, TIME_COLUMN]]
    forecast = model.predict(history, t=queries)
    baseline = _last_value_forecast(history, queries)
    truth = future.set_index([ID_COLUMN, TIME_COLUMN])
    mse_model = mean_squared_error(truth, forecast.set_index([ID_COLUMN, TIME_COLUMN]))
    mse_naive = mean_squared_error(truth, baseline.set_index([ID_COLUMN, TIME_COLUMN]))
    print(f"Forecast MSE over t in ({split}, 12]: NeuralODE {mse_model:.4f}  |  last-value baseline {mse_naive:.4f}  "
          f"({mse_naive / mse_model:.1f}x lower error)")
    _demo_plot(model, history, future, split, args.out)
    return 0


def _last_value_forecast(history: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    from .data import ID_COLUMN, TIME_COLUMN

    last = history.sort_values(TIME_COLUMN).groupby(ID_COLUMN).last().drop(columns=TIME_COLUMN)
    return queries.join(last, on=ID_COLUMN)


def _demo_plot(model: Any, history: pd.DataFrame, future: pd.DataFrame, split: float, out: str) -> None:
    import numpy as np
    import pandas as pd

    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("Plot skipped: matplotlib is not installed (pip install 'dynlearn[plot]').")
        return
    from .data import ID_COLUMN, TIME_COLUMN
    from .plotting import plot_trajectories

    ids = history[ID_COLUMN].unique()[:3]
    dense = np.linspace(history[TIME_COLUMN].min(), future[TIME_COLUMN].max(), 120)
    queries = pd.DataFrame({ID_COLUMN: np.repeat(ids, len(dense)), TIME_COLUMN: np.tile(dense, len(ids))})
    shown = history[history[ID_COLUMN].isin(ids)]
    curve = model.predict(shown, t=queries)
    fig = plot_trajectories(pd.concat([shown, future[future[ID_COLUMN].isin(ids)]]), curve)
    for ax in fig.axes:
        ax.axvline(split, color="grey", linestyle="--", linewidth=1)
    fig.suptitle("NeuralODE: history (t ≤ 8) and forecast", y=1.02)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"Plot written to {out}")


def _fit(args: argparse.Namespace) -> int:
    from sklearn.base import is_classifier

    from . import estimators

    estimator_class = getattr(estimators, MODELS[args.model])
    estimator = estimator_class(**_params(args.param, estimator_class().get_params(), f"--model {args.model}"))
    classifier = is_classifier(estimator)
    if classifier and args.label_column is None:
        raise CommandError(f"--label-column: expected the column holding each series' label, which --model "
                           f"{args.model} (a classifier) learns to predict; got none. Pass e.g. --label-column label.")
    if not classifier and args.label_column is not None:
        raise CommandError(f"--label-column: expected only with a classifier; got it with --model {args.model}, "
                           "which forecasts. Drop --label-column or pick a classifier.")
    _check_out(args.out)
    table = _read_table(args.data)
    labels = None
    if classifier:
        labels = _labels(table, args.label_column, args)
        table = table.drop(columns=[args.label_column])
    series = _series_frame(table, args)
    started = time.perf_counter()
    estimator.fit(series, labels) if classifier else estimator.fit(series)
    path = estimator.save(args.out)
    print(f"Fitted {type(estimator).__name__} in {time.perf_counter() - started:.1f} s; saved to {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sklearn.base import is_classifier

    _check_out(args.out)
    estimator = _load_model(args.model, args.allow_pickle)
    table = _read_table(args.data)
    table = _default_columns_from_fit(args, estimator, table)
    history = _series_frame(table, args, _time_kind(estimator))
    if is_classifier(estimator):
        if args.times is not None or args.horizon is not None:
            raise CommandError(f"--times/--horizon: expected none for a classifier ({type(estimator).__name__} "
                               "predicts one label per series); got one. Drop them.")
        _write_table(_labels_frame(estimator, history), args.out)
        return 0
    if args.times is None and args.horizon is None:
        raise CommandError("--times/--horizon: expected one of them; got neither. Pass e.g. --horizon 5 "
                           "(or --horizon 7D for dates) or --times 8,9,10.")
    if args.times is not None:
        t: Any = _parse_times(args.times, estimator)
    else:
        t = _horizon_queries(history, _parse_horizon(args.horizon, estimator), args.steps)
    _write_table(estimator.predict(history, t=t), args.out)
    return 0


# ------------------------------------------------------------ model files
def _load_model(path: str, allow_pickle: bool) -> Any:
    from . import load
    from .estimators._base import SeriesModel
    from .exceptions import ModelFileError

    if not Path(path).is_file():
        got = "a folder" if Path(path).is_dir() else "no such file"
        raise CommandError(f"model {path!r}: expected a model file written by 'dynlearn fit'; got {got}. "
                           "Check the path.")
    try:
        return load(path)
    except ModelFileError:
        with open(path, "rb") as handle:
            is_pickle = handle.read(1) == PICKLE_MAGIC
        if not is_pickle:
            raise
    if not allow_pickle:
        raise CommandError(
            f"model {path!r}: expected a model file written by 'dynlearn fit' (model.dlm); got a pickle, the "
            "format older versions wrote. Unpickling runs code stored in the file: if you trust it, pass "
            "--allow-pickle (then refit, or re-save it with estimator.save, to stop needing it)."
        )
    import pickle

    with open(path, "rb") as handle:
        estimator = pickle.load(handle)  # noqa: S301 - the user vouched for this file with --allow-pickle
    if not isinstance(estimator, SeriesModel):
        raise CommandError(f"model {path!r}: expected a pickled dynlearn estimator; got a "
                           f"{type(estimator).__name__}. Pass a model saved by 'dynlearn fit'.")
    return estimator


# ------------------------------------------------------------------- tables
def _default_columns_from_fit(args: argparse.Namespace, estimator: Any, table: pd.DataFrame) -> pd.DataFrame:
    """Default --time-column/--id-column to the model's own columns when the table has them; drop other columns.

    Columns that are neither the id, the time nor one of the model's
    variables (a label column, notes) are dropped.
    """
    spec = getattr(estimator, "input_spec_", None)
    if spec is None:
        return table
    if args.time_column is None and spec.time_name in table.columns:
        args.time_column = spec.time_name
    if args.id_column is None and spec.id_name in table.columns:
        args.id_column = spec.id_name
    if spec.column_labels is not None and set(spec.column_labels) <= set(table.columns):
        # Other columns (a label, notes) are not variables of the model: keep only its own, in fit order.
        keep = [c for c in (args.id_column, args.time_column) if c in table.columns] + list(spec.column_labels)
        table = table.drop(columns=[c for c in table.columns if c not in keep])
    return table


def _check_out(out: str) -> None:
    """Fail before any work when ``--out`` cannot be written: a folder, or in a folder that does not exist."""
    if out == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise CommandError(f"--out: expected a file path; got the folder {out!r}. Pass a file name in it.")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise CommandError(f"--out: expected a file in an existing folder; got {out!r}, whose folder "
                           f"{str(path.parent)!r} does not exist. Create it first, or pass another path.")


def _read_table(path: str) -> pd.DataFrame:
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        got = "a folder" if Path(path).is_dir() else "no such file"
        raise CommandError(f"data {path!r}: expected a CSV or Parquet file; got {got}. Check the path.")
    try:
        table = pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CommandError(f"data {path!r}: expected a CSV or Parquet table; got a file pandas cannot read "
                           f"({' '.join(str(error).split())}). Pass a table with one row per observation.") from error
    if table.empty:
        raise CommandError(f"data {path!r}: expected at least one row; got none. Pass a table with observations.")
    return table


def _series_frame(table: pd.DataFrame, args: argparse.Namespace, time_kind: str | None = None) -> pd.DataFrame:
    """The table indexed by (id, time), or by time alone when it has no id column (one series).

    The user's column names become the index names, so outputs come back
    with them. ``time_kind`` (a fitted model's) turns date strings into dates.
    """
    columns = list(table.columns)
    time_column = args.time_column or DEFAULT_TIME_COLUMN
    if time_column not in table.columns:
        fix = (f"Name the time column with --time-column, e.g. --time-column {_time_candidates(table)[0]}"
               if _time_candidates(table) else "Add a column of observation times")
        raise CommandError(
            f"--time-column: expected a column {time_column!r} of observation times; got columns {columns[:12]}. "
            f"{fix}"
            f"{' (and the series column with --id-column)' if DEFAULT_ID_COLUMN not in table.columns else ''}."
        )
    if args.id_column is not None and args.id_column not in table.columns:
        raise CommandError(f"--id-column: expected a column {args.id_column!r}; got columns {columns[:12]}. "
                           "Pass the column that names each series.")
    id_column = args.id_column or (DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in table.columns else None)
    if id_column == time_column:
        raise CommandError(f"--id-column/--time-column: expected two different columns; got {id_column!r} for both. "
                           "Name the series column and the time column.")
    table = table.assign(**{time_column: _as_times(table[time_column], time_kind, f"--time-column {time_column}")})
    if id_column is None:
        repeated = int(table[time_column].duplicated().sum())
        if repeated:
            raise CommandError(
                f"--id-column: expected a column naming each series ({DEFAULT_ID_COLUMN!r} is missing, so the table "
                f"was read as one series); got {repeated} rows repeating a time of that one series. Name the "
                f"series column with --id-column (columns {columns[:12]})."
            )
        return table.set_index(time_column)
    return table.set_index([id_column, time_column])


def _time_candidates(table: pd.DataFrame) -> list[str]:
    """Columns that could hold times: named like a time, else numeric or date-typed, in table order."""
    import pandas as pd

    named = [c for c in table.columns if any(w in str(c).lower() for w in ("time", "date", "year", "day", "hour"))]
    typed = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) or
             pd.api.types.is_datetime64_any_dtype(table[c])]
    return [str(c) for c in dict.fromkeys(named + typed)]


def _as_times(column: pd.Series, kind: str | None, argument: str) -> pd.Series:
    import pandas as pd

    types = pd.api.types
    if kind == "float" and not types.is_numeric_dtype(column):
        numbers = pd.to_numeric(column, errors="coerce")
        bad = column[numbers.isna() & column.notna()]
        if len(bad):
            raise CommandError(f"{argument}: expected numbers, as the model was fitted on; got values such as "
                               f"{bad.iloc[:2].tolist()}. Fix or drop those rows.")
        return numbers
    if kind not in ("datetime", "timedelta") or any(
        check(column) for check in (types.is_numeric_dtype, types.is_datetime64_any_dtype, types.is_timedelta64_dtype)
    ):
        return column  # as read; at fit the data layer parses date strings itself
    try:
        return pd.to_datetime(column) if kind == "datetime" else pd.to_timedelta(column)
    except (ValueError, TypeError) as error:
        raise CommandError(f"{argument}: expected {kind}s, as the model was fitted on; got values such as "
                           f"{column.iloc[:2].tolist()} ({' '.join(str(error).split())}).") from error


def _labels(table: pd.DataFrame, label_column: str, args: argparse.Namespace) -> pd.Series:
    """Each series' label from ``label_column``, indexed by series id."""
    if label_column not in table.columns:
        raise CommandError(f"--label-column: expected a column {label_column!r}; got columns "
                           f"{list(table.columns)[:12]}. Pass the column holding each series' label.")
    id_column = args.id_column or DEFAULT_ID_COLUMN
    if id_column not in table.columns:
        raise CommandError(f"--id-column: expected a column naming each series, which classifiers need; "
                           f"{id_column!r} is missing from columns {list(table.columns)[:12]}. Pass --id-column.")
    per_series = table.groupby(id_column, sort=False)[label_column]
    mixed = per_series.nunique(dropna=False) > 1
    if mixed.any():
        raise CommandError(f"--label-column {label_column}: expected one label per series; got several in series "
                           f"{mixed[mixed].index[:5].tolist()}. Give every row of a series the same label.")
    return per_series.first()


def _labels_frame(estimator: Any, history: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    labels = estimator.predict(history)
    if isinstance(history.index, pd.MultiIndex):
        ids = history.index.get_level_values(0).unique()
        return pd.DataFrame({history.index.names[0]: ids, "label": labels})
    return pd.DataFrame({"label": labels})


def _write_table(frame: pd.DataFrame, out: str) -> None:
    index = frame.index.nlevels > 1 or frame.index.name is not None
    if out == "-":
        frame.to_csv(sys.stdout, index=index)
    elif Path(out).suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out)
    else:
        frame.to_csv(out, index=index)


# ------------------------------------------------------------- query times
def _time_kind(estimator: Any) -> str:
    """``"float"``, ``"datetime"`` or ``"timedelta"``: the kind of times the model was fitted on."""
    spec = getattr(estimator, "input_spec_", None)
    if spec is None:
        raise CommandError(f"model: expected a fitted estimator; got an unfitted {type(estimator).__name__}. "
                           "Save it after fit.")
    return spec.time_encoding.kind


def _parse_times(text: str, estimator: Any) -> Any:
    """``--times`` as numbers, datetimes or timedeltas, whichever the model was fitted on."""
    import numpy as np
    import pandas as pd

    kind = _time_kind(estimator)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CommandError(f"--times: expected comma-separated times; got {text!r}. Pass e.g. --times 8,9,10.")
    try:
        if kind == "float":  # whole numbers stay integers: beyond 2^53 a float would merge neighbouring times
            numbers = [int(item) if item.lstrip("+-").isdigit() else float(item) for item in items]
            return np.array(numbers, dtype=np.int64 if all(isinstance(n, int) for n in numbers) else np.float64)
        if kind == "timedelta":
            return pd.TimedeltaIndex([pd.Timedelta(item) for item in items])
        stamps = pd.DatetimeIndex([pd.Timestamp(item) for item in items])
    except ValueError as error:
        example = {"float": "8,9.5,10", "datetime": "2024-01-08,2024-01-09T12:00", "timedelta": "1D,36h"}[kind]
        raise CommandError(f"--times: expected {'numbers' if kind == 'float' else kind + 's'}, as the model was "
                           f"fitted on {kind} times; got {text!r} ({' '.join(str(error).split())}). "
                           f"Pass e.g. --times {example}.") from error
    origin = estimator.input_spec_.time_encoding.origin
    if stamps.tz is None and origin.tz is not None:
        stamps = stamps.tz_localize(origin.tz)  # dates without a zone are read in the model's zone
    return stamps


def _parse_horizon(text: str, estimator: Any) -> Any:
    """``--horizon`` as a positive number, or a positive duration for models fitted on dates."""
    import pandas as pd

    kind = _time_kind(estimator)
    number = _as_number(text)
    if kind == "float":
        if number is None:
            raise CommandError(f"--horizon: expected a positive number (the model was fitted on numeric times); "
                               f"got {text!r}. Pass e.g. --horizon 5.")
        horizon: Any = number
    else:
        if number is not None:
            raise CommandError(f"--horizon: expected a duration with a unit (the model was fitted on {kind} "
                               f"times); got the bare number {text!r}. Pass e.g. --horizon 7D, 12h or 30min.")
        try:
            horizon = pd.Timedelta(text)
        except ValueError as error:
            raise CommandError(f"--horizon: expected a duration such as 7D, 12h or 30min; got {text!r} "
                               f"({' '.join(str(error).split())}).") from error
    if not horizon > type(horizon)(0):
        raise CommandError(f"--horizon: expected a positive span past each series' last time; got {text}. "
                           "Pass e.g. --horizon 5 (use --times for times inside the history).")
    return horizon


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _horizon_queries(history: pd.DataFrame, horizon: Any, steps: int) -> Any:
    """``steps`` evenly spaced query times per series in (last time, last time + horizon]."""
    import numpy as np
    import pandas as pd

    if steps < 1:
        raise CommandError(f"--steps: expected a positive number of points per series; got {steps}. "
                           "Pass e.g. --steps 10.")
    offsets = [horizon * (k / steps) for k in range(1, steps + 1)]
    if not isinstance(history.index, pd.MultiIndex):
        last = history.index.max()
        return pd.Index([last + offset for offset in offsets])
    id_name, time_name = history.index.names
    last = history.index.to_frame(index=False).groupby(id_name, sort=False)[time_name].max()
    ids = np.repeat(last.index.to_numpy(), steps)
    times = [t + offset for t in last for offset in offsets]
    return pd.DataFrame(index=pd.MultiIndex.from_arrays([ids, times], names=[id_name, time_name]))


# ---------------------------------------------------------------- --param
def _params(pairs: Sequence[str], allowed: Any, owner: str) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as keyword arguments, values read as Python literals (bare words stay strings).

    ``allowed`` holds the valid names; an unknown one is an error naming the
    closest ones, and a lower-case ``true``/``false``/``none`` is an error
    that suggests the Python spelling.
    """
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CommandError(f"--param: expected NAME=VALUE; got {pair!r}. Write e.g. --param max_epochs=50.")
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=3)
            hint = (f"Did you mean {' or '.join(close)}?" if close else
                    f"Valid names: {', '.join(sorted(allowed))}." if allowed else f"{owner} takes no --param.")
            raise CommandError(f"--param {name}: expected a parameter of {owner}; got unknown name {name!r}. {hint}")
        if value.strip().lower() in _LITERAL_HINTS and value.strip() not in ("True", "False", "None"):
            raise CommandError(f"--param {pair}: expected a Python literal; got the bare word {value.strip()!r}. "
                               f"Did you mean {name}={_LITERAL_HINTS[value.strip().lower()]}?")
        try:
            params[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            params[name] = value  # a bare word such as solver=rk4 is a string
    return params


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
    import pandas as pd

    from .data import ID_COLUMN, TIME_COLUMN
    from .datasets import dataset

    entry = dataset(args.name)
    if args.out:
        _check_out(args.out)
    # The command writes the observed table; the noise-free truth is for code (return_truth=True in Python).
    names = [name for name in _argument_names(entry.function) if name != "return_truth"]
    params = _params(args.param, names, f"dataset {entry.name}")
    if entry.kind == "download":
        params.update({k: v for k, v in (("path", args.path), ("data_home", args.data_home)) if v is not None})
    result = entry.function(**params)
    frame = result if isinstance(result, pd.DataFrame) else result["frame"]
    if args.out:
        _write_table(frame, args.out)
    if args.out != "-":
        print(f"{entry.name}: {frame[ID_COLUMN].nunique()} series, {len(frame)} rows, "
              f"variables {[c for c in frame.columns if c not in (ID_COLUMN, TIME_COLUMN)][:12]}"
              + (f"; written to {args.out}" if args.out else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import os

    import torch

    from . import bench

    if args.list:
        performance = {name: bench.PERF[name] for name in bench.suite_rows()}
        for kind, registry in (("task", bench.TASKS), ("model", bench.MODELS), ("performance", performance)):
            for name, entry in registry.items():
                print(f"{kind:12s} {name:16s} {entry.description[:100]}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds: expected a positive number of seeds; got {args.seeds}. Pass e.g. --seeds 2.")
    if not (args.device in ("cpu", "cuda") or args.device.startswith("cuda:")):
        raise CommandError(f"--device: expected 'cpu', 'cuda' or 'cuda:<index>'; got {args.device!r}. "
                           "Pass e.g. --device cpu.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device}: expected a CUDA device visible to torch; got no CUDA device. "
                           "Run with --device cpu.")
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


def _argument_names(function: Any) -> list[str]:
    import inspect

    return [name for name, p in inspect.signature(function).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
