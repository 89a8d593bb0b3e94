"""benchmarks/gpu_checks.sh: its steps run (on the CPU here) and it says plainly when torch sees no GPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"


def _run(out: Path, device: str, families: str = "", benchmarks: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "FAMILIES": families, "BENCHMARKS": benchmarks}
    return subprocess.run(["bash", str(SCRIPT), str(out), device], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=600)


def test_the_steps_run_on_the_cpu(tmp_path):
    done = _run(tmp_path, "cpu", families="hamiltonian", benchmarks="solve_overhead")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"torch {torch.__version__}" in (tmp_path / "device.txt").read_text()
    with open(tmp_path / "speed_vs_peers.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ratios = {r["metric"]: float(r["value"]) for r in rows if r["metric"].endswith(".ratio_dynlearn_over_peer")}
    assert set(ratios) == {"hamiltonian.small.ratio_dynlearn_over_peer", "hamiltonian.large.ratio_dynlearn_over_peer"}
    assert all(0 < value < 10 for value in ratios.values())
    assert {r["device"] for r in rows} == {"cpu"}
    assert "hamiltonian.small.ratio_dynlearn_over_peer" in (tmp_path / "speed_vs_peers.log").read_text()
    assert (tmp_path / "solve_overhead" / "results_quick.csv").exists()
    assert not (tmp_path / "cuda_tests.log").exists()  # the CUDA tests are the GPU's step only


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_it_fails_with_a_message(tmp_path):
    done = _run(tmp_path, "cuda", families="hamiltonian", benchmarks="solve_overhead")
    assert done.returncode == 1
    assert "torch sees no CUDA device" in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["device.txt"]  # it stops at once
