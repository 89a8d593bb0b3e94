"""Stochastic dynamics: probabilistic forecasts of NeuralSDE and LatentSDE, the CMU motion-capture stand-in, and the
cost of the stochastic adjoint.

``sde_synthetic`` fits the models on geometric Brownian motion and the
stochastic Lorenz attractor of Li, Wong, Chen & Duvenaud (AISTATS 2020),
conditions on the first half of held-out series and scores the forecast of
the second half against the observations (CRPS, 90% interval coverage) and
against the true conditional law of the process (mean and spread at a few
horizons). ``mocap_forecast`` conditions on the first 3 frames of held-out
motion-capture segments and forecasts the rest (test MSE, LatentSDE beside
LatentODE). ``sde_adjoint_memory`` times one training iteration of LatentSDE
and measures its peak memory with and without the adjoint as the number of
solver steps grows, each configuration in a fresh process. How to read the
figures, and where the runs depart from the published protocols, is in
``benchmarks/README.md``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynlearn import LatentODE, LatentSDE, NeuralODE, NeuralSDE
from dynlearn.datasets import (
    DatasetNotFoundError, DownloadError, fetch_mocap6, make_geometric_brownian_motion, make_stochastic_lorenz,
)
from dynlearn.metrics import crps_ensemble, interval_coverage

from harness import Context, Record, register

MOCAP_PATH_VARIABLE = "DYNLEARN_MOCAP6_PATH"
DEFAULT_MOCAP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_mocap6"
# Published CMU mocap subject 35 test MSE (Li et al. 2020, Table 2; mean ± std).
PUBLISHED_MOCAP = {"latent_sde": (4.03, 0.20), "latent_ode": (5.98, 0.28)}
N_SAMPLES = 200  # sample paths per test series for CRPS, intervals and path statistics
HORIZONS = (0.1, 0.25, 0.5)  # time after the conditioning cut (t = 0.5) at which path statistics are compared


def _quiet() -> None:
    """Training-length warnings would drown the progress log; the epochs run are reported instead."""
    import warnings

    warnings.filterwarnings("ignore", message=".*max_epochs.*")


# --------------------------------------------------------------- shared helpers
def split_at(frame: pd.DataFrame, cut: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows at or before ``cut`` (the history) and after it (the forecast targets), sorted by series and time."""
    frame = frame.sort_values(["series_id", "time"]).reset_index(drop=True)
    early = frame["time"] <= cut + 1e-9
    return frame[early].reset_index(drop=True), frame[~early].reset_index(drop=True)


def sample_array(paths: pd.DataFrame, future: pd.DataFrame, features: list[str], n_samples: int) -> np.ndarray:
    """A model's sampled frame as ``(n_samples, n_rows, n_features)`` aligned on ``future``'s rows."""
    values = paths[features].to_numpy().reshape(n_samples, len(future), len(features))
    keys = paths[["series_id", "time"]].to_numpy().reshape(n_samples, len(future), 2)
    expected = future[["series_id", "time"]].to_numpy()
    if not np.allclose(keys.astype(float), expected.astype(float)[None]):
        raise RuntimeError("sampled rows are not in the order of the forecast targets")
    return values


def probabilistic_scores(truth: np.ndarray, samples: np.ndarray) -> tuple[float, float]:
    """CRPS from the samples and coverage of their 5–95% quantile band."""
    lower, upper = np.quantile(samples, [0.05, 0.95], axis=0)
    return float(crps_ensemble(truth, samples)), float(interval_coverage(truth, lower, upper))


# ------------------------------------------------------------- sde_synthetic
SYNTHETIC = {
    # name: n_series (train + test), n_times, epochs (NeuralSDE, LatentSDE, NeuralODE)
    "quick": {"gbm": (64, 21, (15, 4, 4)), "lorenz": (48, 41, (10, 3, 3))},
    "full": {"gbm": (256, 41, (60, 20, 15)), "lorenz": (160, 101, (50, 15, 10))},
}
GBM = dict(mu=1.0, sigma=0.5)
LORENZ = dict(sigma=10.0, rho=28.0, beta=8.0 / 3.0, alpha=(0.15, 0.15, 0.15))
LORENZ_DT = 1e-3
TRUE_ENSEMBLE = 1000  # paths of the true process per test series (stochastic Lorenz)


def lorenz_ensemble(start: np.ndarray, horizons: np.ndarray, n_paths: int, seed: int) -> np.ndarray:
    """Euler–Maruyama paths of the stochastic Lorenz system from each start state.

    The scheme and step (1e-3) of ``make_stochastic_lorenz``; returns
    ``(n_paths, n_starts, len(horizons), 3)`` states at the horizons.
    """
    rng = np.random.default_rng(seed)
    sigma, rho, beta, alpha = LORENZ["sigma"], LORENZ["rho"], LORENZ["beta"], np.asarray(LORENZ["alpha"])
    state = np.broadcast_to(start, (n_paths, *start.shape)).copy()
    steps = np.rint(np.asarray(horizons) / LORENZ_DT).astype(int)
    out = np.empty((n_paths, start.shape[0], len(horizons), 3))
    done = 0
    for index, target in enumerate(steps):
        while done < target:
            x, y, z = state[..., 0], state[..., 1], state[..., 2]
            drift = np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)
            state = state + drift * LORENZ_DT + alpha * np.sqrt(LORENZ_DT) * rng.standard_normal(state.shape)
            done += 1
        out[:, :, index] = state
    return out


def synthetic_models(epochs: tuple[int, int, int], n_times: int, seed: int) -> dict[str, Any]:
    nsde, lsde, node = epochs
    window = min(20, n_times)
    return {
        "NeuralSDE": NeuralSDE(hidden_layer_sizes=(32, 32), max_epochs=nsde, batch_size=256, patience=None,
                               random_state=seed),
        "LatentSDE": LatentSDE(latent_dim=4, context_dim=16, hidden_layer_sizes=(32, 32), dt=0.5, window_size=window,
                               batch_size=32, max_epochs=lsde, patience=None, random_state=seed),
        "NeuralODE": NeuralODE(hidden_layer_sizes=(32, 32), max_epochs=node, patience=None, random_state=seed),
    }  # fmt: skip


def synthetic_task(system: str, size: str, seed: int) -> list[Record]:
    n_series, n_times, epochs = SYNTHETIC[size][system]
    if system == "gbm":
        frame, truth = make_geometric_brownian_motion(
            n_series=n_series, n_times=n_times, t_span=(0.0, 1.0), return_truth=True, random_state=seed, **GBM
        )
    else:
        frame = make_stochastic_lorenz(
            n_series=n_series, n_times=n_times, t_span=(0.0, 1.0), dt=LORENZ_DT, random_state=seed, **LORENZ
        )
    features = [column for column in frame.columns if column not in ("series_id", "time")]
    n_train = int(0.75 * n_series)
    train = frame[frame["series_id"] < n_train]
    history, future = split_at(frame[frame["series_id"] >= n_train], 0.5)
    y_future = future[features].to_numpy()
    queries = future[["series_id", "time"]]

    # The true conditional law at the horizons, given each test series' state at the cut.
    last = history.groupby("series_id")[features].last()
    starts = last.to_numpy()
    horizon_times = 0.5 + np.asarray(HORIZONS)
    if system == "gbm":
        true_mean = np.stack([truth.transition_mean(starts, h) for h in HORIZONS], axis=1)
        true_std = np.sqrt(np.stack([truth.transition_variance(starts, h) for h in HORIZONS], axis=1))
    else:
        ensemble = lorenz_ensemble(starts, np.asarray(HORIZONS), TRUE_ENSEMBLE, seed + 1000)
        true_mean, true_std = ensemble.mean(axis=0), ensemble.std(axis=0)
    # Rows of `future` at each (series, horizon), in the order of `last`.
    at_horizon = np.stack(
        [
            np.array([np.flatnonzero((future["series_id"] == sid).to_numpy()
                                     & np.isclose(future["time"].to_numpy(), t))[0] for t in horizon_times])
            for sid in last.index
        ]
    )  # fmt: skip

    records: list[Record] = []
    name = "sde_synthetic"
    for label, model in synthetic_models(epochs, n_times, seed).items():
        started = time.perf_counter()
        model.fit(train)
        fit_time = time.perf_counter() - started
        prefix = f"{system}.{label}"
        records += [
            Record(name, f"{prefix}.fit_time.seed{seed}", fit_time, "s"),
            Record(name, f"{prefix}.epochs.seed{seed}", model.n_epochs_, "epochs"),
        ]
        if label == "NeuralODE":
            point = model.predict(history, t=queries)[features].to_numpy()
            # A point forecast is an ensemble of one: its CRPS is its mean absolute error.
            crps = float(crps_ensemble(y_future, point[None]))
            records.append(Record(name, f"{prefix}.crps.seed{seed}", crps, "data units"))
            mse = float(np.mean((point - y_future) ** 2))
            records.append(Record(name, f"{prefix}.mse.seed{seed}", mse, "data units²"))
            mean_at = point[at_horizon]
            records += _path_statistics(name, prefix, seed, mean_at, None, true_mean, true_std)
            continue
        paths = model.sample(history, t=queries, n_samples=N_SAMPLES, random_state=seed)
        samples = sample_array(paths, future, features, N_SAMPLES)
        crps, coverage = probabilistic_scores(y_future, samples)
        mse = float(np.mean((samples.mean(axis=0) - y_future) ** 2))
        records += [
            Record(name, f"{prefix}.crps.seed{seed}", crps, "data units"),
            Record(name, f"{prefix}.coverage90.seed{seed}", coverage, "share"),
            Record(name, f"{prefix}.mse.seed{seed}", mse, "data units²"),
        ]
        at = samples[:, at_horizon]  # (n_samples, n_test, n_horizons, n_features)
        records += _path_statistics(name, prefix, seed, at.mean(axis=0), at.std(axis=0), true_mean, true_std)
    return records


def _path_statistics(
    name: str, prefix: str, seed: int, mean: np.ndarray, std: np.ndarray | None, true_mean: np.ndarray,
    true_std: np.ndarray,
) -> list[Record]:
    """Per horizon: error of the predictive mean in units of the true spread, and the ratio of spreads."""
    records = []
    for index, horizon in enumerate(HORIZONS):
        scale = true_std[:, index].mean()
        error = np.abs(mean[:, index] - true_mean[:, index]).mean() / scale
        records.append(Record(name, f"{prefix}.mean_error_h{horizon:g}.seed{seed}", float(error), "true stds"))
        if prefix.endswith("NeuralODE"):  # once per task: the scale of the two rows above and below
            system = prefix.split(".")[0]
            records.append(Record(name, f"{system}.true_std_h{horizon:g}.seed{seed}", float(scale), "data units"))
        if std is not None:
            ratio = std[:, index].mean() / scale
            records.append(Record(name, f"{prefix}.std_ratio_h{horizon:g}.seed{seed}", float(ratio), "model / true"))
    return records


def _summaries(name: str, records: list[Record]) -> list[Record]:
    """``mean`` and ``std`` (ddof 1) over seeds of every ``...seedN`` metric."""
    groups: dict[str, list[float]] = {}
    for record in records:
        stem, _, last = record.metric.rpartition(".")
        if last.startswith("seed"):
            groups.setdefault(stem, []).append(record.value)
    units = {record.metric.rpartition(".")[0]: record.unit for record in records}
    out = []
    for stem, values in groups.items():
        out.append(Record(name, f"{stem}.mean", float(np.mean(values)), units[stem]))
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        out.append(Record(name, f"{stem}.std", spread, units[stem]))
    return out


@register(
    "sde_synthetic",
    "NeuralSDE, LatentSDE and a deterministic NeuralODE on geometric Brownian motion (mu 1, sigma 0.5) and the "
    "stochastic Lorenz attractor (10, 28, 8/3, diffusion 0.15) on [0, 1]: condition on t <= 0.5 of held-out series, "
    "forecast the rest; CRPS, 90% coverage, predictive mean and spread against the true process.",
)
def sde_synthetic(context: Context) -> list[Record]:
    _quiet()
    size = "quick" if context.quick else "full"
    seeds = (0,) if context.quick else (0, 1)
    records: list[Record] = []
    for system in ("gbm", "lorenz"):
        for seed in seeds:
            records += synthetic_task(system, size, seed)
    return records + _summaries("sde_synthetic", records)


# ------------------------------------------------------------ mocap_forecast
MOCAP_SEGMENT = 50  # frames per segment (5 s at 10 fps)
MOCAP_CONDITION = 3  # frames conditioned on
MOCAP_TRAIN_SHARE = 0.7  # of each sequence's frames, from its start, for training segments


def load_mocap6() -> tuple[pd.DataFrame, list[str]] | None:
    """The six CMU sequences (``fetch_mocap6``) and their 12 channels, or None when no copy is at hand.

    Read from ``$DYNLEARN_MOCAP6_PATH`` or the shared data folder beside the
    checkout when either holds ``mocap6.mat``, else from the download cache
    (downloading it when the network allows).
    """
    local = Path(os.environ.get(MOCAP_PATH_VARIABLE, DEFAULT_MOCAP))
    try:
        data = fetch_mocap6(path=local) if (local / "mocap6.mat").is_file() else fetch_mocap6()
    except (DatasetNotFoundError, DownloadError):
        return None
    return data.frame, data.feature_names


def mocap_segments(table: pd.DataFrame, channels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Non-overlapping segments of ``MOCAP_SEGMENT`` frames, each a series starting at time 0.

    Segments inside the first 70% of a sequence train, those inside the last
    30% test (no segment straddles the cut); channels are standardised with
    the training segments' statistics.
    """
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "test": []}
    series = 0
    for _, sequence in table.groupby("series_id", sort=True):
        values = sequence.sort_values("time")
        cut = int(MOCAP_TRAIN_SHARE * len(values))
        for split, block in (("train", values.iloc[:cut]), ("test", values.iloc[cut:])):
            for start in range(0, len(block) - MOCAP_SEGMENT + 1, MOCAP_SEGMENT):
                segment = block.iloc[start : start + MOCAP_SEGMENT]
                part = pd.DataFrame({"series_id": series, "time": np.arange(MOCAP_SEGMENT) * 0.1})
                part[channels] = segment[channels].to_numpy()
                parts[split].append(part)
                series += 1
    train, test = pd.concat(parts["train"], ignore_index=True), pd.concat(parts["test"], ignore_index=True)
    mean, scale = train[channels].mean(), train[channels].std()
    train[channels] = (train[channels] - mean) / scale
    test[channels] = (test[channels] - mean) / scale
    return train, test


MOCAP_EPOCHS = {"quick": (8, 8), "full": (50, 50)}  # LatentSDE, LatentODE


@register(
    "mocap_forecast",
    "CMU motion capture, six sequences (mocap6, 12 channels, 10 fps) cut into 50-frame segments: condition on the "
    "first 3 frames of held-out segments, forecast the other 47; test MSE (standardised) of LatentSDE and LatentODE "
    "beside the published subject-35 figures (a different data set: indicative only).",
)
def mocap_forecast(context: Context) -> list[Record]:
    _quiet()
    name = "mocap_forecast"
    loaded = load_mocap6()
    if loaded is None:
        reason = f"skipped: no mocap6.mat (set {MOCAP_PATH_VARIABLE} to a folder holding it, or allow the download)"
        return [Record(name, reason, float("nan"), "")]
    table, channels = loaded
    train, test = mocap_segments(table, channels)
    history = test[test["time"] < (MOCAP_CONDITION - 0.5) * 0.1].reset_index(drop=True)
    future = test[test["time"] >= (MOCAP_CONDITION - 0.5) * 0.1].reset_index(drop=True)
    queries, truth = future[["series_id", "time"]], future[channels].to_numpy()
    size = "quick" if context.quick else "full"
    seeds = (0,) if context.quick else (0, 1, 2)
    sde_epochs, ode_epochs = MOCAP_EPOCHS[size]
    records = [
        Record(name, "train_segments", train["series_id"].nunique(), "series"),
        Record(name, "test_segments", test["series_id"].nunique(), "series"),
        Record(name, "channels", len(channels), "features"),
    ]
    # Floors any model should beat: the last conditioned frame held, and the training mean (0 once standardised).
    held = history.groupby("series_id")[channels].last().loc[future["series_id"]].to_numpy()
    records.append(Record(name, "test_mse.last_value", float(np.mean((held - truth) ** 2)), "standardised²"))
    records.append(Record(name, "test_mse.train_mean", float(np.mean(truth**2)), "standardised²"))
    per_seed: list[Record] = []
    for seed in seeds:
        models = {
            "latent_sde": LatentSDE(latent_dim=6, context_dim=16, hidden_layer_sizes=(30, 30), dt=0.5, window_size=None,
                                    batch_size=8, max_epochs=sde_epochs, validation_fraction=0.0, patience=None,
                                    random_state=seed),
            "latent_ode": LatentODE(latent_dim=6, encoder_dim=16, encoder_layer_sizes=(30,), ode_layer_sizes=(30, 30),
                                    task="extrapolation", solver="rk4", batch_size=8, max_epochs=ode_epochs,
                                    validation_fraction=0.0, patience=None, refine_steps=0, random_state=seed),
        }  # fmt: skip
        for label, model in models.items():
            started = time.perf_counter()
            model.fit(train)
            fit_time = time.perf_counter() - started
            forecast = model.predict(history, t=queries)[channels].to_numpy()
            per_seed += [
                Record(name, f"test_mse.{label}.seed{seed}", float(np.mean((forecast - truth) ** 2)), "standardised²"),
                Record(name, f"fit_time.{label}.seed{seed}", fit_time, "s"),
                Record(name, f"epochs.{label}.seed{seed}", model.n_epochs_, "epochs"),
            ]
    records += per_seed + _summaries(name, per_seed)
    for label, (mean, std) in PUBLISHED_MOCAP.items():
        records.append(Record(name, f"test_mse.{label}.published_mean", mean, "subject 35, 50-D"))
        records.append(Record(name, f"test_mse.{label}.published_std", std, "subject 35, 50-D"))
    return records


# -------------------------------------------------------- sde_adjoint_memory
ADJOINT_STEPS = {"quick": (1, 10), "full": (1, 10, 100)}  # multiples of the base number of solver steps
ADJOINT_BASE_DT = 1.0  # solver step at x1, in median observation gaps
ADJOINT_ITERATIONS = {"quick": 3, "full": 4}


def _reset_peak_rss() -> int:
    """Reset this process's peak resident set size to the current one (Linux); returns the current one in bytes.

    ``ru_maxrss`` survives ``exec``: a child forked from a large parent
    starts with the parent's peak, so the peak is read from ``VmHWM`` of
    ``/proc/self/status``, which ``clear_refs`` resets.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # an older kernel: VmHWM then holds the peak since exec, which the warm-up fit already set
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def adjoint_child(config: dict) -> dict:
    """One configuration, in this (fresh) process: seconds per training iteration and peak RSS growth."""
    import torch

    torch.set_num_threads(1)
    _quiet()
    from dynlearn.datasets import make_ou_process

    frame = make_ou_process(n_series=16, n_times=20, t_span=(0.0, 4.0), noise=0.1, random_state=0)
    settings = dict(latent_dim=4, context_dim=16, hidden_layer_sizes=(32, 32), solver="reversible_heun",
                    adjoint=config["adjoint"], batch_size=16, max_epochs=1, validation_fraction=0.0, patience=None,
                    kl_anneal_epochs=0, random_state=0, max_num_steps=1_000_000)  # fmt: skip
    # One-off costs (lazy library initialisation, allocator pools) are paid by a one-iteration fit at the
    # base step first, so that the growth measured next is the training step's own.
    LatentSDE(dt=ADJOINT_BASE_DT, **settings).fit(frame)
    model = LatentSDE(dt=config["dt"], **settings)
    before = _reset_peak_rss()
    model.fit(frame)  # one iteration: warm-up, and the peak memory of a training step
    peak = _peak_rss()
    model.set_params(max_epochs=config["iterations"], warm_start=True)
    started = time.perf_counter()
    model.fit(frame)
    seconds = (time.perf_counter() - started) / config["iterations"]
    return {"seconds_per_iteration": seconds, "peak_rss_growth": max(peak - before, 0)}


@register(
    "sde_adjoint_memory",
    "LatentSDE (reversible Heun, 16 OU series of 20 points, one minibatch) with direct backpropagation and with the "
    "adjoint as the solver steps grow x1, x10, x100: seconds per training iteration and peak RSS growth, each in a "
    "fresh process.",
)
def sde_adjoint_memory(context: Context) -> list[Record]:
    name = "sde_adjoint_memory"
    size = "quick" if context.quick else "full"
    records: list[Record] = []
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for multiple in ADJOINT_STEPS[size]:
        found = {}
        for adjoint in (False, True):
            config = {"dt": ADJOINT_BASE_DT / multiple, "adjoint": adjoint, "iterations": ADJOINT_ITERATIONS[size]}
            done = subprocess.run(
                [sys.executable, __file__, "--adjoint-child", json.dumps(config)],
                capture_output=True, text=True, env=environment, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"adjoint child {config} failed:\n{done.stderr[-2000:]}")
            found[adjoint] = json.loads(done.stdout.strip().splitlines()[-1])
            stem = f"steps_x{multiple}.{'adjoint' if adjoint else 'direct'}"
            records += [
                Record(name, f"{stem}.seconds_per_iteration", found[adjoint]["seconds_per_iteration"], "s"),
                Record(name, f"{stem}.peak_rss_growth", found[adjoint]["peak_rss_growth"] / 2**20, "MiB"),
            ]
        records += [
            Record(name, f"steps_x{multiple}.time_ratio_adjoint_over_direct",
                   found[True]["seconds_per_iteration"] / found[False]["seconds_per_iteration"], "ratio"),
            Record(name, f"steps_x{multiple}.memory_ratio_adjoint_over_direct",
                   found[True]["peak_rss_growth"] / max(found[False]["peak_rss_growth"], 1), "ratio"),
        ]  # fmt: skip
    return records


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--adjoint-child":
    print(json.dumps(adjoint_child(json.loads(sys.argv[2]))))
