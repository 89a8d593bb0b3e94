"""narrow_products: both layouts of each product are timed and written."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import narrow_products


def test_the_benchmark_times_both_layouts_and_writes_its_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(narrow_products, "SHAPES", narrow_products.SHAPES[:1])
    monkeypatch.setattr(narrow_products, "KEPT", narrow_products.KEPT[-1:])
    monkeypatch.setattr(sys, "argv", ["narrow_products.py", "--rounds", "2", "--out", str(tmp_path)])
    narrow_products.main()
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("product,where,shape,seconds_as_written,seconds_chosen")
    assert len(lines) == 1 + 3  # input adjoint and weight gradient of the shape, and the kept product
    assert "| kept row-major: widening" in (tmp_path / "report.md").read_text()
