"""One registry of measurements: the package's performance rows and the benchmarks/ scripts' benchmarks."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from dynlearn.bench import PERF, Benchmark, Record, register_perf, select, suite_rows

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if not BENCHMARKS.is_dir():
    pytest.skip("benchmarks/ is part of a checkout, not of an installed package", allow_module_level=True)
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402
import run  # noqa: E402  (imports every benchmark module, which register)

PACKAGE_ROWS = ["solve_overhead", "adjoint_memory", "long_frame_load"]


@pytest.fixture
def throwaway():
    """A name registered only for the test, removed afterwards."""
    name = "registry_test_benchmark"
    yield name
    PERF.pop(name, None)


def test_the_scripts_have_no_registry_of_their_own():
    assert harness.PERF is run.PERF is PERF
    own = [name for module in (harness, run) for name, value in vars(module).items()
           if isinstance(value, dict) and not name.startswith("__") and value is not PERF]  # fmt: skip
    assert own == []


def test_every_benchmark_is_registered_once_with_its_own_function():
    assert list(PERF)[:3] == PACKAGE_ROWS  # the package's rows come first, then the scripts' in import order
    assert all(isinstance(b, Benchmark) and b.name == name for name, b in PERF.items())
    functions = [b.function for b in PERF.values()]
    assert len(set(functions)) == len(functions)
    for name in PACKAGE_ROWS:
        assert PERF[name].suite and PERF[name].function.__module__ == "dynlearn.bench._perf"
    scripts = [b for b in PERF.values() if not b.suite]
    assert {"neuralode_epoch", "irregular_speed", "threads", "real_forecasts"} <= {b.name for b in scripts}
    assert all(Path(sys.modules[b.function.__module__].__file__).parent == BENCHMARKS for b in scripts)


def test_script_benchmarks_stay_out_of_dynlearn_bench():
    assert suite_rows() == PACKAGE_ROWS
    assert select(None)[2] == PACKAGE_ROWS
    with pytest.raises(ValueError, match="neuralode_epoch"):
        select(["neuralode_epoch"])


def test_a_taken_name_is_refused_whoever_registered_it(throwaway):
    harness.register(throwaway, "first")(lambda context: [])
    for register in (harness.register, register_perf):
        with pytest.raises(ValueError, match=f"{throwaway!r} is already registered"):
            register(throwaway, "second")(lambda context: [])
    with pytest.raises(ValueError, match="solve_overhead"):
        harness.register("solve_overhead", "again")(lambda context: [])
    assert PERF[throwaway].description == "first" and not PERF[throwaway].suite


def test_run_writes_a_registered_benchmarks_rows(tmp_path, throwaway, monkeypatch):
    monkeypatch.setattr(run, "warm_up", lambda context: None, raising=False)
    monkeypatch.setattr(harness, "warm_up", lambda context: None)
    harness.register(throwaway, "Two fixed rows.")(
        lambda context: [Record(throwaway, "answer", 42.0, "units"), Record(throwaway, "quick", float(context.quick), "flag")]
    )
    assert run.main(["--quick", "--only", throwaway, "--out", str(tmp_path)]) == 0
    with (tmp_path / "results_quick.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["benchmark"], r["metric"], float(r["value"]), r["unit"], r["mode"]) for r in rows] == [
        (throwaway, "answer", 42.0, "units", "quick"), (throwaway, "quick", 1.0, "flag", "quick"),
    ]  # fmt: skip
    assert list(rows[0])[:4] == ["benchmark", "metric", "value", "unit"]
    report = (tmp_path / "report_quick.md").read_text()
    assert f"## {throwaway}" in report and "Two fixed rows." in report and "| answer | 42 | units |" in report
