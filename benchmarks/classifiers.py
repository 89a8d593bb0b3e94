"""Per-series classifiers at their defaults against a feature baseline, on public UCR/UEA sets.

Each set ships in sktime's wheel (the ``bench`` extra: ``pip install dynlearn[bench]``)
with its official train/test split. Series become dynlearn's long frame
(``series_id, time, channels``; labels per series); ``ODERNNClassifier`` and
``LatentODEClassifier`` are fitted at their defaults (only ``random_state``
set) and compared with per-channel summary statistics (mean, std, min, max,
last value, least-squares slope over time) + ``StandardScaler`` +
``LogisticRegression``. Accuracy is on the official test split.

Registered in ``run.py`` as ``classifiers``; run on its own with::

    OMP_NUM_THREADS=1 python benchmarks/run.py --only classifiers --out benchmarks/results/classifiers
    OMP_NUM_THREADS=1 python benchmarks/classifiers.py --sets basic_motions --models ODERNNClassifier \\
        --param pooling=last --seeds 0 1      # one variant, printed (nothing written)
    python benchmarks/classifiers.py --table benchmarks/results/classifiers/results.csv   # the README table
"""

from __future__ import annotations

import argparse
import ast
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dynlearn import LatentODEClassifier, ODERNNClassifier

from harness import Context, Record, register

# name -> sktime loader name; sets of a few hundred series at most, so that one fit takes seconds to minutes.
SETS = {
    "basic_motions": "load_basic_motions",  # 6 channels, 100 steps, 4 classes, 40 / 40
    "japanese_vowels": "load_japanese_vowels",  # 12 channels, 7-29 steps, 9 classes, 270 / 370
    "gunpoint": "load_gunpoint",  # 1 channel, 150 steps, 2 classes, 50 / 150
    "italy_power_demand": "load_italy_power_demand",  # 1 channel, 24 steps, 2 classes, 67 / 1029
    "arrow_head": "load_arrow_head",  # 1 channel, 251 steps, 3 classes, 36 / 175
}
# Quick runs are a smoke test of the machinery: one set, one seed, 20 epochs (not the defaults' accuracy).
QUICK_SETS = ("basic_motions",)
QUICK_EPOCHS = 20
MODELS: dict[str, Callable[..., Any]] = {"ODERNNClassifier": ODERNNClassifier, "LatentODEClassifier": LatentODEClassifier}
BASELINE = "features+logistic"


@dataclass(frozen=True)
class Split:
    frame: pd.DataFrame  # long frame: series_id, time, channel columns
    labels: pd.Series  # one label per series, indexed by series_id


def load(name: str, split: str) -> Split:
    """One split of a set as a long frame and per-series labels."""
    import sktime.datasets  # the bench extra; imported here so that run.py works without it

    loader = getattr(sktime.datasets, SETS[name])
    X, y = loader(split=split, return_X_y=True, return_type="pd-multiindex")
    frame = X.reset_index()
    frame.columns = ["series_id", "time", *[f"x{k}" for k in range(X.shape[1])]]
    frame["time"] = frame["time"].astype(float)
    ids = frame["series_id"].unique()
    return Split(frame, pd.Series(np.asarray(y), index=ids, name="label"))


def summary_features(frame: pd.DataFrame) -> np.ndarray:
    """Per series and channel: mean, std, min, max, last value and slope over time (NaN ignored)."""
    channels = [c for c in frame.columns if c not in ("series_id", "time")]
    rows = []
    for _, series in frame.groupby("series_id", sort=False):
        t = series["time"].to_numpy()
        features = []
        for column in channels:
            x = series[column].to_numpy(dtype=float)
            seen = ~np.isnan(x)
            ts, xs = t[seen], x[seen]
            slope = np.polyfit(ts, xs, 1)[0] if len(xs) > 1 and np.ptp(ts) > 0 else 0.0
            features += [xs.mean(), xs.std(), xs.min(), xs.max(), xs[-1], slope]
        rows.append(features)
    return np.asarray(rows)


def fit_baseline(train: Split, seed: int):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    return model.fit(summary_features(train.frame), train.labels.to_numpy())


def evaluate(set_name: str, model: str, seed: int, params: dict[str, Any] | None = None, device: str = "cpu",
             data: tuple[Split, Split] | None = None) -> tuple[float, float]:
    """(test accuracy, fit seconds) of one model on one set."""
    train, test = data or (load(set_name, "train"), load(set_name, "test"))
    started = time.perf_counter()
    if model == BASELINE:
        fitted = fit_baseline(train, seed)
        seconds = time.perf_counter() - started
        return float(np.mean(fitted.predict(summary_features(test.frame)) == test.labels.to_numpy())), seconds
    estimator = MODELS[model](random_state=seed, device=device, **(params or {}))
    estimator.fit(train.frame, train.labels)
    seconds = time.perf_counter() - started
    return float(np.mean(estimator.predict(test.frame) == test.labels.to_numpy())), seconds


@register(
    "classifiers",
    "Test accuracy and fit seconds of ODERNNClassifier and LatentODEClassifier at their defaults against "
    "per-channel summary statistics + StandardScaler + LogisticRegression, on UCR/UEA sets shipped with sktime "
    "(official splits). Full: five sets, two seeds; quick: basic_motions, one seed, max_epochs=20 (a smoke test).",
)
def classifiers(context: Context) -> list[Record]:
    try:
        import sktime  # noqa: F401
    except ImportError:
        return [Record("classifiers", "skipped", float("nan"), "sktime is not installed: pip install dynlearn[bench]")]
    sets = QUICK_SETS if context.quick else tuple(SETS)
    seeds = (0,) if context.quick else (0, 1)
    params = {"max_epochs": QUICK_EPOCHS} if context.quick else {}
    records = []
    for set_name in sets:
        data = (load(set_name, "train"), load(set_name, "test"))
        for model in (BASELINE, *MODELS):
            scores = []
            for seed in seeds:
                scores.append(evaluate(set_name, model, seed, params, context.device.type, data))
                print(f"  {set_name} {model} seed {seed}: accuracy {scores[-1][0]:.3f}, fit {scores[-1][1]:.1f} s",
                      flush=True)  # fits take minutes: progress before the records are listed
            for seed, (accuracy, seconds) in zip(seeds, scores):
                records.append(Record("classifiers", f"{set_name}.{model}.accuracy.seed{seed}", accuracy, "fraction"))
                records.append(Record("classifiers", f"{set_name}.{model}.fit_time.seed{seed}", seconds, "s"))
            records.append(
                Record("classifiers", f"{set_name}.{model}.accuracy.mean", float(np.mean([a for a, _ in scores])),
                       "fraction")
            )
    return records


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def accuracy_table(results_csv: str) -> str:
    """Markdown table of a run's accuracies (mean and per seed) and fit seconds, one row per set."""
    rows = pd.read_csv(results_csv)
    rows = rows[rows["benchmark"] == "classifiers"]
    parts = rows["metric"].str.split(".", n=3, expand=True)
    rows = rows.assign(set=parts[0], model=parts[1], kind=parts[2], which=parts[3])
    models = [BASELINE, *MODELS]
    lines = ["| set | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for set_name in dict.fromkeys(rows["set"]):
        cells = []
        for model in models:
            mine = rows[(rows["set"] == set_name) & (rows["model"] == model)]
            seeds = mine[(mine["kind"] == "accuracy") & mine["which"].str.startswith("seed")]["value"]
            seconds = mine[mine["kind"] == "fit_time"]["value"]
            cells.append(f"{seeds.mean():.3f} ({' / '.join(f'{v:.3f}' for v in seeds)}; {seconds.mean():.0f} s)")
        lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="One classifier variant on some sets, printed.")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--models", nargs="+", default=[BASELINE, *MODELS], choices=[BASELINE, *MODELS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--param", nargs="*", default=[], help="estimator parameters as name=value")
    parser.add_argument("--table", metavar="RESULTS_CSV", help="print a run's results as a markdown table and stop")
    args = parser.parse_args()
    if args.table:
        print(accuracy_table(args.table))
        return
    params = _parse_params(args.param)
    for set_name in args.sets:
        data = (load(set_name, "train"), load(set_name, "test"))
        for model in args.models:
            for seed in args.seeds:
                accuracy, seconds = evaluate(set_name, model, seed, None if model == BASELINE else params, data=data)
                print(f"{set_name:<20} {model:<20} seed {seed} {params} accuracy {accuracy:.3f} fit {seconds:.1f} s",
                      flush=True)


if __name__ == "__main__":
    main()
