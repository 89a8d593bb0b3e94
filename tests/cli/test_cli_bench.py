"""`dynlearn bench` and its thin wrapper benchmarks/suite.py."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynlearn.bench import MODELS, TASKS, suite_rows
from dynlearn.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_report_csv_and_figures(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--tiny", "--only", "lynx_hare", "--seeds", "1", "--out", str(out)]) == 0
    assert "Wrote" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "dynlearn bench --tiny --device cpu --seeds 1 --only lynx_hare" in report
    for model in MODELS:
        assert f"| {model} |" in report
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["task"] for r in rows} == {"lynx_hare"} and {r["model"] for r in rows} == set(MODELS)
    assert (out / "forecast_lynx_hare.png").stat().st_size > 5_000
    assert (out / "cost_vs_accuracy.png").stat().st_size > 5_000


def test_bench_lists_what_is_registered(capsys):
    assert main(["bench", "--list"]) == 0
    text = capsys.readouterr().out
    for name in [*TASKS, *MODELS, *suite_rows()]:
        assert name in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "no_such_task"], "--only"),
        (["--seeds", "0"], "--seeds"),
        (["--tiny", "--quick"], None),  # argparse refuses the pair itself
    ],
)
def test_bench_refuses_bad_arguments_with_a_message(argv, message, capsys, tmp_path):
    if message is None:
        with pytest.raises(SystemExit):
            main(["bench", *argv])
        return
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bench_on_cuda_without_a_gpu_says_so(capsys, tmp_path):
    assert main(["bench", "--tiny", "--device", "cuda", "--out", str(tmp_path)]) == 1
    assert "no CUDA device" in capsys.readouterr().err


def test_suite_script_is_the_same_command(tmp_path):
    out = tmp_path / "suite"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--tiny", "--only", "lynx_hare", "LastValue",
         "--seeds", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()
