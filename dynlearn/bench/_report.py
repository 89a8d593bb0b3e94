"""The suite's output files: results.csv, report.md and PNG figures."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import TIME_COLUMN
from ._models import MODELS
from ._perf import PERF
from ._suite import METRICS, SuiteResult
from ._tasks import TASKS
from ._timing import format_value

CSV_COLUMNS = (
    "model", "estimator", "family", "task", "seed", "metric", "value", "unit", "status", "note",
    "dynlearn_version", "torch_version", "device", "date", "mode",
)  # fmt: skip

# Columns of the per-task tables: (metric, header).
TABLE = (
    ("interp_mse", "interp MSE"),
    ("forecast_mse", "forecast MSE"),
    ("crps", "CRPS"),
    ("coverage90", "90% cov."),
    ("energy_drift", "energy drift"),
    ("fit_time", "fit s"),
    ("time_per_iteration", "s / step"),
    ("nfe_forward", "NFE fwd / step"),
    ("nfe_backward", "NFE bwd / step"),
    ("graph_memory", "graph MiB"),
    ("peak_memory", "GPU peak MiB"),
    ("n_parameters", "params"),
)


def write_report(result: SuiteResult, out: Path | str, *, figures: bool = True) -> dict[str, Path]:
    """Write ``results.csv``, ``report.md`` and (with matplotlib) PNG figures into ``out``.

    Returns
    -------
    dict of str to Path
        What was written, by kind ("csv", "report", and one entry per figure).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"csv": write_csv(result, out / "results.csv")}
    figure_note = ""
    if figures:
        try:
            written.update(write_figures(result, out))
        except ImportError:
            figure_note = "Figures skipped: matplotlib is not installed (pip install 'dynlearn[plot]')."
    report = out / "report.md"
    report.write_text(markdown(result, [p.name for k, p in written.items() if k.startswith("figure")], figure_note))
    written["report"] = report
    return written


def write_csv(result: SuiteResult, path: Path) -> Path:
    """One row per model × task × seed × metric, then the performance rows, with the environment on each."""
    env = result.environment
    common = {"dynlearn_version": env.dynlearn_version, "torch_version": env.torch_version, "device": env.device,
              "date": env.date, "mode": env.mode}
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({**asdict(row), **common})
        for record in result.perf:
            writer.writerow({"model": "(performance)", "estimator": "", "family": "", "task": record.benchmark,
                             "seed": 0, "metric": record.metric, "value": record.value, "unit": record.unit,
                             "status": "ok", "note": "", **common})
        for task, reason in result.skipped_tasks.items():
            writer.writerow({"model": "", "estimator": "", "family": "", "task": task, "seed": "", "metric": "data",
                             "value": math.nan, "unit": "", "status": "skipped", "note": reason, **common})
    return path


def summary(result: SuiteResult) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN with one seed) and seed count of every ok (model, task, metric)."""
    frame = result.frame()
    if frame.empty:
        return pd.DataFrame(columns=["model", "task", "metric", "mean", "std", "n"])
    ok = frame[frame["status"] == "ok"]
    grouped = ok.groupby(["model", "task", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def _cell(stats: pd.DataFrame, model: str, task: str, metric: str) -> str:
    found = stats[(stats["model"] == model) & (stats["task"] == task) & (stats["metric"] == metric)]
    if found.empty:
        return ""
    mean, std = found["mean"].iloc[0], found["std"].iloc[0]
    text = format_value(mean)
    # Deterministic figures (parameter counts, evaluations of a fixed grid) vary by nothing: no "± 0".
    return f"{text} ± {std:.2g}" if np.isfinite(std) and std > 0 else text


def markdown(result: SuiteResult, figure_names: list[str], figure_note: str = "") -> str:
    env = result.environment
    stats = summary(result)
    frame = result.frame()
    lines = [
        f"# dynlearn comparison suite ({env.mode} run)",
        "",
        f"Command: `{result.command}`" if result.command else "",
        "",
        f"dynlearn {env.dynlearn_version}, torch {env.torch_version}, torchdiffeq {env.torchdiffeq_version}, "
        f"Python {env.python}; device {env.device}, {env.usable_cores} usable cores of {env.machine_cores}, "
        f"{env.torch_threads} torch threads; {env.date}; the whole run took {result.seconds:.0f} s.",
        "",
        "Every cell is mean ± std over seeds (std with ddof 1; each seed draws new simulated data and new "
        "weights). MSEs are over observed entries only, in the task's data units. `n/a` says why a model does "
        "not apply; `failed` gives the error. Every figure is also in `results.csv`; "
        "`benchmarks/README.md` (section \"The comparison suite\") explains how to read and extend this report.",
        "",
        "## Models",
        "",
        "| model | built on | family | settings |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {MODELS[m].estimator or '–'} | {MODELS[m].family} | {MODELS[m].description} |"
              for m in result.models]
    lines += ["", "## Tasks", ""]
    for name in result.tasks:
        task = TASKS[name]
        lines.append(f"- **{name}** ({task.kind}): {task.description}")
        if name in result.skipped_tasks:
            lines.append(f"  - *Skipped*: {result.skipped_tasks[name]}.")
    metrics_seen = set(stats["metric"]) if not stats.empty else set()
    lines += _at_a_glance(result, stats)
    for name in result.tasks:
        if name in result.skipped_tasks:
            continue
        columns = [(m, h) for m, h in TABLE if m in set(stats[stats["task"] == name]["metric"])]
        lines += ["", f"## {name}", "", "| model | " + " | ".join(h for _, h in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for model in result.models:
            cell = frame[(frame["task"] == name) & (frame["model"] == model)] if not frame.empty else frame
            not_ok = cell[cell["status"] != "ok"] if not cell.empty else cell
            if not cell.empty and len(not_ok) == len(cell):
                status, note = not_ok["status"].iloc[0], not_ok["note"].iloc[0]
                lines.append(f"| {model} | {status}: {note} |" + " |" * max(len(columns) - 1, 0))
                continue
            lines.append(f"| {model} | " + " | ".join(_cell(stats, model, name, m) for m, _ in columns) + " |")
            failed = not_ok["note"].unique() if not cell.empty else []
            for note in failed:
                lines.append(f"| ↳ some seeds failed | {note} |" + " |" * max(len(columns) - 1, 0))
    lines += ["", "Units and meaning of the columns:", ""]
    lines += [f"- **{h}** ({METRICS[m][0]}): {METRICS[m][1]}." for m, h in TABLE if m in metrics_seen]
    lines += _published(result, stats)
    lines += _performance(result)
    if figure_names or figure_note:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({name})" for name in figure_names]
        if figure_note:
            lines.append(figure_note)
    return "\n".join(lines) + "\n"


# (metric, what "best" means in the summary): all are lower-is-better.
_GLANCE = (("interp_mse", "interpolation"), ("forecast_mse", "forecast"), ("crps", "CRPS"),
           ("energy_drift", "energy drift"))


def _at_a_glance(result: SuiteResult, stats: pd.DataFrame) -> list[str]:
    """Per task: the model with the lowest mean of each headline metric, and the last-value baseline's."""
    rows = []
    for task in result.tasks:
        if task in result.skipped_tasks:
            continue
        cells = []
        for metric, label in _GLANCE:
            found = stats[(stats["task"] == task) & (stats["metric"] == metric)]
            if found.empty:
                continue
            best = found.loc[found["mean"].idxmin()]
            text = f"{label}: **{best['model']}** {format_value(best['mean'])}"
            baseline = found[found["model"].map(lambda m: MODELS[m].family == "baseline")]
            if len(baseline) and baseline["model"].iloc[0] != best["model"]:
                text += f" (LastValue {format_value(baseline['mean'].iloc[0])})"
            cells.append(text)
        rows.append(f"- **{task}**: " + "; ".join(cells) + ".")
    if not rows:
        return []
    return ["", "## At a glance", "", "Lowest mean over seeds per task (lower is better for each):", "", *rows]


def _published(result: SuiteResult, stats: pd.DataFrame) -> list[str]:
    rows = []
    for task_name in result.tasks:
        for (estimator, metric), (mean, std, source) in TASKS[task_name].published.items():
            for model in result.models:
                if MODELS[model].name != estimator:
                    continue
                ours = _cell(stats, model, task_name, metric) or "not run"
                published = format_value(mean) + (f" ± {format_value(std)}" if np.isfinite(std) else "")
                protocol = "this run: published sizes" if result.environment.mode == "full" else (
                    f"this run: {result.environment.mode} sizes, not the protocol")
                rows.append(f"| {task_name} | {model} | {metric} | {ours} | {published} | {source}; {protocol} |")
    if not rows:
        return []
    return ["", "## Beside the published numbers", "",
            "Cells whose task and metric correspond to a published figure (`../shared/YARDSTICKS.md`); a quick run "
            "uses smaller data and training than the protocol, so only a full run is a reproduction.", "",
            "| task | model | metric | dynlearn | published | protocol |", "|---|---|---|---:|---:|---|", *rows]


def _performance(result: SuiteResult) -> list[str]:
    if not result.perf:
        return []
    lines = ["", "## Performance", ""]
    for name in dict.fromkeys(r.benchmark for r in result.perf):
        lines += [f"### {name}", "", PERF[name].description if name in PERF else "", "",
                  "| metric | value | unit |", "|---|---:|---|"]
        lines += [f"| {r.metric} | {format_value(r.value)} | {r.unit} |" for r in result.perf if r.benchmark == name]
        lines.append("")
    return lines


# -------------------------------------------------------------------- figures
def write_figures(result: SuiteResult, out: Path) -> dict[str, Path]:
    """Forecasts with bands per task, energy over time, cost against accuracy. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    for task in result.tasks:
        curves = {m: c for (t, m), c in result.curves.items() if t == task and "mean" in c}
        if curves:
            path = out / f"forecast_{task}.png"
            _forecast_figure(plt, task, curves).savefig(path, dpi=90, bbox_inches="tight")
            plt.close("all")
            written[f"figure forecast {task}"] = path
        energies = {m: e for (t, m), e in result.energy.items() if t == task}
        if energies:
            path = out / f"energy_{task}.png"
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for model, (times, relative) in energies.items():
                ax.plot(times, np.maximum(relative, 1e-12), label=model)
            ax.set(yscale="log", xlabel="time", ylabel="|H(t) − H(0)| / |H(0)|", title=f"{task}: energy along rollouts")
            ax.legend(fontsize=7)
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close("all")
            written[f"figure energy {task}"] = path
    stats = summary(result)
    if not stats.empty:
        path = out / "cost_vs_accuracy.png"
        _cost_figure(plt, result, stats).savefig(path, dpi=90, bbox_inches="tight")
        plt.close("all")
        written["figure cost"] = path
    return written


def _forecast_figure(plt, task: str, curves: dict) -> object:
    n = len(curves)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (model, curve) in zip(axes.ravel(), curves.items()):
        names = curve["names"][:3]
        for j, name in enumerate(names):
            color = f"C{j}"
            ax.plot(curve["history"][TIME_COLUMN], curve["history"][name], ".", color=color, ms=3)
            ax.plot(curve["future"][TIME_COLUMN], curve["future"][name], "x", color=color, ms=3)
            ax.plot(curve["times"], curve["mean"][:, j], "-", color=color, lw=1)
            if "band" in curve:
                ax.fill_between(curve["times"], curve["band"][0][:, j], curve["band"][1][:, j], color=color, alpha=0.2)
        ax.set_title(model, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{task}: history (dots), future (crosses), forecast (line, 90% band where sampled)", fontsize=9)
    fig.tight_layout()
    return fig


def _cost_figure(plt, result: SuiteResult, stats: pd.DataFrame) -> object:
    from matplotlib.ticker import NullFormatter

    tasks = [t for t in result.tasks if t not in result.skipped_tasks]
    cols = min(len(tasks), 3) or 1
    rows = int(np.ceil(len(tasks) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks):
        for i, model in enumerate(result.models):
            found = stats[(stats["task"] == task) & (stats["model"] == model)].set_index("metric")["mean"]
            if "fit_time" not in found or "forecast_mse" not in found:
                continue
            if MODELS[model].family == "baseline":  # trains for no time: a reference level, not a point
                ax.axhline(found["forecast_mse"], color="black", linestyle="--", linewidth=1, label=model)
            else:
                ax.loglog(found["fit_time"], found["forecast_mse"], "o", color=f"C{i % 10}", label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("fit time (s)", fontsize=7)
        ax.set_ylabel("forecast MSE", fontsize=7)
        ax.tick_params(which="both", labelsize=6)
        # Minor labels crowd an axis spanning decades (which then has major labels); keep them otherwise.
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if low > 0 and high / low > 10:
                axis.set_minor_formatter(NullFormatter())
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    handles, labels = {}, {}
    for ax in axes.ravel():
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Cost against accuracy (mean over seeds)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
