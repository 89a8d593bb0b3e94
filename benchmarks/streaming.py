"""Streamed Parquet fit against the in-memory fit: rows per second and peak memory.

Writes damped-oscillator series (``dynlearn.datasets.make_damped_oscillator``,
long format, sorted by series) to Parquet one block at a time, then fits one
epoch of a small NeuralODE in a child process per run, once from a DataFrame
read whole (``pd.read_parquet``) and once from the file a chunk of series at
a time (``ParquetSeries``). The parent samples each child's resident memory
(``/proc/<pid>/status``) and, with a limit, kills a child that goes over it.

Then a larger file is written, sized so that an in-memory fit would need at
least three times the memory limit (extrapolated from the measured in-memory
peak per row), and both fits run under the limit: the streamed fit must
finish below it; the in-memory one is expected to be stopped.

Run from the repository root (figures in benchmarks/results/streaming/)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/streaming.py
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "streaming"
MODEL = dict(hidden_layer_sizes=(16,), max_epochs=1, window_size=8, batch_size=1024, solver="rk4", augment_dim=0,
             hidden_init="zeros", n_threads=1, random_state=0)
FIELDS = ["run", "rows", "series", "file_mb", "chunk_size", "limit_mb", "status", "seconds", "rows_per_second",
          "peak_rss_mb", "load_before"]


def write_dataset(path: Path, n_series: int, n_times: int, block: int = 500) -> None:
    """Write ``n_series`` series of ``n_times`` rows to one Parquet file, ``block`` series at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dynlearn.datasets import make_damped_oscillator

    writer = None
    try:
        for start in range(0, n_series, block):
            count = min(block, n_series - start)
            frame = make_damped_oscillator(n_series=count, n_times=n_times, random_state=start)
            frame["series_id"] += start
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=100_000)
    finally:
        if writer is not None:
            writer.close()


def replicate_dataset(source: Path, path: Path, rows: int) -> int:
    """Write ``source``'s series again and again, with new ids, until ``path`` holds at least ``rows`` rows.

    Cheaper than simulating that many series; the streamed fit's speed and
    memory depend on the rows, not on whether series repeat. Returns the rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    n_ids = pc.max(table["series_id"]).as_py() + 1
    written, copy = 0, 0
    with pq.ParquetWriter(path, table.schema) as writer:
        while written < rows:
            ids = pc.add(table["series_id"], pa.scalar(copy * n_ids, table.schema.field("series_id").type))
            writer.write_table(table.set_column(table.schema.get_field_index("series_id"), "series_id", ids),
                               row_group_size=100_000)  # fmt: skip
            written, copy = written + table.num_rows, copy + 1
    return written


def child(mode: str, path: str, chunk_size: int) -> None:
    """One fit; prints its figures as JSON."""
    import resource
    import warnings

    import pandas as pd

    from dynlearn import NeuralODE
    from dynlearn.data import ParquetSeries

    warnings.simplefilter("ignore")
    started = time.perf_counter()
    data = pd.read_parquet(path) if mode == "memory" else ParquetSeries(path, chunk_size=chunk_size)
    NeuralODE(**MODEL).fit(data)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def run(mode: str, path: Path, chunk_size: int, limit_mb: float | None) -> dict:
    """Fit in a child process, sampling its memory; stop it past ``limit_mb``."""
    command = [sys.executable, __file__, "--child", mode, str(path), str(chunk_size)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, status = 0.0, "finished"
    while process.poll() is None:
        peak = max(peak, _rss_mb(process.pid))
        if limit_mb is not None and peak > limit_mb:
            process.kill()
            status = "stopped at the limit"
            break
        time.sleep(0.02)
    out, err = process.communicate()
    if status == "finished" and process.returncode != 0:
        raise RuntimeError(f"{mode} fit failed:\n{err}")
    figures = json.loads(out.strip().splitlines()[-1]) if status == "finished" else {"seconds": math.nan}
    peak = max(peak, figures.get("peak_rss_mb", 0.0))
    return {"status": status, "seconds": figures["seconds"], "peak_rss_mb": peak}


def measure(name: str, mode: str, path: Path, rows: int, series: int, chunk_size: int, limit_mb: float | None) -> dict:
    load = os.getloadavg()[0]  # the machine is shared: timings under load are slower
    result = run(mode, path, chunk_size, limit_mb)
    record = {
        "run": name, "rows": rows, "series": series, "file_mb": round(path.stat().st_size / 2**20, 1),
        "chunk_size": chunk_size if mode == "stream" else "", "limit_mb": limit_mb or "", "status": result["status"],
        "seconds": "", "rows_per_second": "", "peak_rss_mb": round(result["peak_rss_mb"]), "load_before": round(load, 2),
    }  # fmt: skip
    if math.isfinite(result["seconds"]):
        record["seconds"], record["rows_per_second"] = round(result["seconds"], 1), round(rows / result["seconds"])
    print(record, flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the file both fits run on")
    parser.add_argument("--n-times", type=int, default=400, help="rows per series")
    parser.add_argument("--chunk-size", type=int, default=128, help="series per chunk of the streamed fit")
    parser.add_argument("--limit-mb", type=float, default=1024.0, help="memory limit of the large-file runs")
    parser.add_argument("--repeat", type=int, default=3, help="in-memory and streamed runs on the first file, alternated")
    parser.add_argument("--work", default="/tmp/dynlearn_streaming", help="where the Parquet files are written")
    parser.add_argument("--huge-rows", type=int, default=0,
                        help="also stream a file of this many rows (the large file's series repeated under new ids) "
                             "under --huge-limit-mb; the in-memory fit is not tried on it")  # fmt: skip
    parser.add_argument("--huge-limit-mb", type=float, default=2048.0)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    n_series = args.rows // args.n_times
    rows = n_series * args.n_times
    medium = work / f"oscillator_{rows}.parquet"
    started = time.perf_counter()
    write_dataset(medium, n_series, args.n_times)
    print(f"wrote {rows} rows in {time.perf_counter() - started:.0f} s", flush=True)
    records = []
    for _ in range(args.repeat):  # alternated, so load from other work hits both alike
        records += [
            measure("in-memory", "memory", medium, rows, n_series, args.chunk_size, None),
            measure("streamed", "stream", medium, rows, n_series, args.chunk_size, None),
        ]

    # Size the large file from the in-memory fit's measured peak per row, above a bare interpreter's.
    baseline = run_baseline()
    per_row = (max(r["peak_rss_mb"] for r in records if r["run"] == "in-memory") - baseline) / rows
    large_series = math.ceil(3 * args.limit_mb / per_row / args.n_times)
    large_rows = large_series * args.n_times
    large = work / f"oscillator_{large_rows}.parquet"
    write_dataset(large, large_series, args.n_times)
    records += [
        measure("streamed, large file", "stream", large, large_rows, large_series, args.chunk_size, args.limit_mb),
        measure("in-memory, large file", "memory", large, large_rows, large_series, args.chunk_size, args.limit_mb),
    ]
    if args.huge_rows:
        huge = work / f"oscillator_repeated_{args.huge_rows}.parquet"
        huge_rows = replicate_dataset(large, huge, args.huge_rows)
        records.append(measure("streamed, huge file (series repeated)", "stream", huge, huge_rows,
                               huge_rows // args.n_times, args.chunk_size, args.huge_limit_mb))  # fmt: skip
    write_results(records, args, baseline, per_row)


def run_baseline() -> float:
    """Resident memory of a child that imports dynlearn, torch and pyarrow and does nothing else."""
    code = ("import resource, dynlearn, torch, pyarrow.dataset, pandas; from dynlearn import NeuralODE; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def write_results(records: list[dict], args: argparse.Namespace, baseline: float, per_row: float) -> None:
    with open(RESULTS / "streaming.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(records)
    lines = [
        "# Streamed Parquet fit against the in-memory fit",
        "",
        f"One epoch of `NeuralODE({', '.join(f'{k}={v!r}' for k, v in MODEL.items())})` on damped-oscillator "
        f"series of {args.n_times} rows (series_id, time, q, p), OMP_NUM_THREADS=1, a shared 2-core machine. "
        "Seconds include reading the data (and, streamed, the statistics pass). Peak RSS sampled from "
        f"/proc every 20 ms and the child's ru_maxrss; a bare interpreter with the imports holds {baseline:.0f} MB. "
        "`load` is the 1-minute load average when the run started (2 cores shared with other work).",
        "",
        "| run | rows | file MB | chunk (series) | limit MB | status | seconds | rows/s | peak RSS MB | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['run']} | {r['rows']:,} | {r['file_mb']} | {r['chunk_size']} | {r['limit_mb']} | "
                     f"{r['status']} | {r['seconds']} | {r['rows_per_second']} | {r['peak_rss_mb']} | {r['load_before']} |")
    streamed = [r["rows_per_second"] for r in records if r["run"].startswith("streamed") and r["rows_per_second"]]
    memory = [r["rows_per_second"] for r in records if r["run"] == "in-memory"]
    slowest, fastest = min(streamed), max(streamed)
    lines += [
        "",
        f"Throughput: in-memory {min(memory):,}-{max(memory):,} rows/s, streamed {slowest:,}-{fastest:,} rows/s. "
        f"Extrapolated at those streamed rates, one epoch over 100 million rows would take "
        f"{1e8 / fastest / 60:.0f}-{1e8 / slowest / 60:.0f} min with the same peak memory (set by the chunk, "
        f"not the file), where an in-memory fit would need about {per_row * 1e8 / 1024:.0f} GB"
        + ("; the huge-file row measures it." if args.huge_rows else "; not measured."),
        "",
        f"The in-memory fit needed {per_row * 1e6:.0f} MB per million rows above the bare interpreter; the large "
        f"file is sized so that it would need at least 3 x {args.limit_mb:.0f} MB in memory.",
        "",
        "Reproduce: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/streaming.py` "
        f"(--rows {args.rows} --chunk-size {args.chunk_size} --limit-mb {args.limit_mb:.0f} --repeat {args.repeat}"
        + (f" --huge-rows {args.huge_rows} --huge-limit-mb {args.huge_limit_mb:.0f}" if args.huge_rows else "") + ").",
    ]
    (RESULTS / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
