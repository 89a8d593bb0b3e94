"""kernel_choices: both choices of each product and activation are timed and written."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import kernel_choices


def test_the_benchmark_times_both_layouts_and_writes_its_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_choices, "SHAPES", kernel_choices.SHAPES[:1])
    monkeypatch.setattr(kernel_choices, "KEPT", kernel_choices.KEPT[-1:])
    monkeypatch.setattr(kernel_choices, "ACTIVATIONS", kernel_choices.ACTIVATIONS[:1])
    monkeypatch.setattr(kernel_choices, "UNFOLDED", kernel_choices.UNFOLDED[-1:])
    monkeypatch.setattr(sys, "argv", ["kernel_choices.py", "--rounds", "2", "--out", str(tmp_path)])
    kernel_choices.main()
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("product,where,shape,seconds_as_written,seconds_alternative")
    # input adjoint and weight gradient of the shape, the kept product, the activation, the recorded tanh via
    # sigmoid, three row operations, three number operands
    assert len(lines) == 1 + 5 + 3 + 3
    report = (tmp_path / "report.md").read_text()
    assert "| kept row-major: widening" in report and "| activation, recorded tanh via sigmoid" in report
    assert "| row operations, grad off / inference mode" in report and "split once / row by row" in report
    assert "| number operands: the fused AdamW's step counts" in report
