"""PhysioNet 2012: what the per-patient descriptors add, as ``static_covariates``, to mortality and interpolation.

Data: the first 400 records of set A (``../shared/data/physionet2012_seta_slice``
or ``--path``), 37 variables on an hourly grid over the first 48 hours, each
scaled to [0, 1] over the data. Descriptors: age (years / 100), gender, and
the ICU type as four indicators; height and weight are left out (44% and 9%
of the records lack them, and a static covariate must be known for every
series).

- **Mortality**: in-hospital death from the 48 hours, stratified 5-fold
  cross-validation (``--folds``), ROC AUC of ``ODERNNClassifier`` and
  ``LatentODEClassifier`` with and without ``static_covariates``, beside a
  logistic regression on per-variable summary statistics (mean, last value,
  count) with and without the descriptors.
- **Interpolation**: 20% of the observed rows of 80 held-out patients hidden;
  MSE of ``ODERNN`` with and without the descriptors, beside carrying each
  variable's last value.

Run::

    OMP_NUM_THREADS=1 python benchmarks/physionet_static.py            # writes benchmarks/results/physionet_static/
    OMP_NUM_THREADS=1 python benchmarks/physionet_static.py --quick    # 2 folds, short training (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dynlearn import LastValueForecaster, LatentODEClassifier, ODERNN, ODERNNClassifier
from dynlearn.datasets import fetch_physionet2012

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT.parent / "shared" / "data" / "physionet2012_seta_slice"
OUT = ROOT / "benchmarks" / "results" / "physionet_static"
STATIC = ["age", "gender", "icu_coronary", "icu_cardiac_surgery", "icu_medical", "icu_surgical"]


def load(path: Path) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """The scaled hourly frame with the descriptors as columns, the death labels by series, the variable names."""
    data = fetch_physionet2012("a", path=path, download_if_missing=False, quantization=1.0)
    frame = data.frame
    names = [c for c in data.feature_names if frame[c].notna().any()]
    low, high = frame[names].min(), frame[names].max()
    frame[names] = (frame[names] - low) / (high - low).where(high > low, 1.0)
    static = pd.DataFrame(index=data.static.index)
    static["age"] = data.static["Age"] / 100.0
    static["gender"] = data.static["Gender"].fillna(0.5)
    for code, column in enumerate(STATIC[2:], start=1):
        static[column] = (data.static["ICUType"] == code).astype(float)
    # Each descriptor on every row of its patient (on one row would do as well).
    frame = frame[["series_id", "time", *names]].merge(static, left_on="series_id", right_index=True)
    labels = data.outcomes["In-hospital_death"].reindex(frame["series_id"].unique())
    return frame.reset_index(drop=True), labels, names


def summary_features(frame: pd.DataFrame, names: list[str], static: bool) -> pd.DataFrame:
    grouped = frame.groupby("series_id", sort=False)[names]
    parts = [grouped.mean().fillna(-1), grouped.last().fillna(-1), grouped.count()]
    features = pd.concat(parts, axis=1)
    features.columns = range(features.shape[1])
    if static:
        features = features.join(frame.groupby("series_id", sort=False)[STATIC].first().set_axis(
            range(features.shape[1], features.shape[1] + len(STATIC)), axis=1))
    return features


def mortality(frame: pd.DataFrame, labels: pd.Series, names: list[str], folds: int, epochs: int | None,
              seed: int) -> list[dict]:
    rows = []
    ids = labels.index.to_numpy()
    y = labels.to_numpy()
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(ids, y)):
        train_ids, test_ids = ids[train], ids[test]
        for static in (False, True):
            columns = ["series_id", "time", *names, *(STATIC if static else [])]
            X_train = frame[frame.series_id.isin(train_ids)][columns]
            X_test = frame[frame.series_id.isin(test_ids)][columns]
            features = summary_features(frame, names, static)
            baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            baseline.fit(features.loc[train_ids], y[train])
            rows.append(dict(task="mortality", model="summary+logistic", static=static, fold=fold,
                             metric="auc", value=roc_auc_score(y[test], baseline.predict_proba(
                                 features.loc[test_ids])[:, 1]), fit_time=0.0))
            for name, model_class in (("ODERNNClassifier", ODERNNClassifier),
                                      ("LatentODEClassifier", LatentODEClassifier)):
                settings = dict(random_state=seed, static_covariates=STATIC if static else None)
                if epochs is not None:
                    settings["max_epochs"] = epochs
                model = model_class(**settings)
                began = time.perf_counter()
                model.fit(X_train, y[train])
                elapsed = time.perf_counter() - began
                score = roc_auc_score(y[test], model.predict_proba(X_test)[:, 1])
                rows.append(dict(task="mortality", model=name, static=static, fold=fold, metric="auc",
                                 value=score, fit_time=elapsed))
                print(rows[-1], flush=True)
    return rows


def interpolation(frame: pd.DataFrame, names: list[str], epochs: int | None, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    ids = frame.series_id.unique()
    test_ids = rng.permutation(ids)[:80]
    train = frame[~frame.series_id.isin(test_ids)]
    test = frame[frame.series_id.isin(test_ids)]
    first = ~test.duplicated("series_id")
    hidden = (rng.uniform(size=len(test)) < 0.2) & ~first.to_numpy()
    history, targets = test[~hidden], test[hidden]
    rows = []
    truth = targets[names].to_numpy(float)
    seen = np.isfinite(truth)

    def mse(predicted: pd.DataFrame) -> float:
        values = predicted[names].to_numpy(float)
        return float(np.mean((values[seen] - truth[seen]) ** 2))

    queries = targets[["series_id", "time"]]
    rows.append(dict(task="interpolation", model="LastValue", static=False, fold=0, metric="mse",
                     value=mse(LastValueForecaster().fit(train[["series_id", "time", *names]]).predict(
                         history[["series_id", "time", *names]], t=queries)), fit_time=0.0))
    for static in (False, True):
        columns = ["series_id", "time", *names, *(STATIC if static else [])]
        settings = dict(random_state=seed, static_covariates=STATIC if static else None)
        if epochs is not None:
            settings["max_epochs"] = epochs
        model = ODERNN(**settings)
        began = time.perf_counter()
        model.fit(train[columns])
        elapsed = time.perf_counter() - began
        rows.append(dict(task="interpolation", model="ODERNN", static=static, fold=0, metric="mse",
                         value=mse(model.predict(history[columns], t=queries)), fit_time=elapsed))
        print(rows[-1], flush=True)
    return rows


def report(results: pd.DataFrame, command: str) -> str:
    table = results.groupby(["task", "metric", "model", "static"])["value"].agg(["mean", "std", "count"])
    times = results.groupby(["task", "model", "static"])["fit_time"].median()
    lines = ["# PhysioNet 2012: static descriptors as static_covariates", "", f"Command: `{command}`",
             f"Threads: torch {__import__('torch').get_num_threads()}, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", "",
             "| task | metric | model | without descriptors | with descriptors | median fit s (without / with) |",
             "|---|---|---|---:|---:|---|"]
    for (task, metric, model), part in table.groupby(level=[0, 1, 2]):
        cells = []
        for static in (False, True):
            if (task, metric, model, static) in part.index:
                mean, std, count = part.loc[(task, metric, model, static)]
                cells.append(f"{mean:.4g}" + (f" ± {std:.2g} ({int(count)})" if count > 1 else ""))
            else:
                cells.append("–")
        fit = " / ".join(f"{times.get((task, model, s), float('nan')):.0f}" for s in (False, True))
        lines.append(f"| {task} | {metric} | {model} | {cells[0]} | {cells[1]} | {fit} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=SLICE)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["mortality", "interpolation"], default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    frame, labels, names = load(args.path)
    epochs = 5 if args.quick else None
    folds = 2 if args.quick else args.folds
    rows = []
    if args.only in (None, "mortality"):
        rows += mortality(frame, labels, names, folds, epochs, args.seed)
    if args.only in (None, "interpolation"):
        rows += interpolation(frame, names, epochs, args.seed)
    results = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    results.to_csv(args.out / f"results{suffix}.csv", index=False)
    command = "OMP_NUM_THREADS=1 python benchmarks/physionet_static.py" + (" --quick" if args.quick else "")
    text = report(results, command)
    (args.out / f"report{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
