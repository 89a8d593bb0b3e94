"""neural_sde_loss_node: the NeuralSDE step is timed with its loss node on and off, and the switch is undone."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import neural_sde_loss_node as bench

from dynlearn.estimators._neural_sde import _SDEModel


def test_the_benchmark_times_the_node_and_the_recorded_loss_and_restores_the_switch(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "SIZES", {"small": ((8,), 8)})
    switch = _SDEModel._node_may_apply
    bench.main(rounds=2, large_rounds=2)
    assert _SDEModel._node_may_apply is switch
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "case,side,seconds_per_iteration"
    # undriven: node, recorded and the peer; driven: node and recorded
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["undriven small", "node"], ["undriven small", "recorded"], ["undriven small", "peer"],
        ["driven small", "node"], ["driven small", "recorded"]]
    report = (tmp_path / "report.md").read_text()
    assert "| undriven small |" in report and "| driven small |" in report and "Command:" in report
