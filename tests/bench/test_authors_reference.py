"""The benchmark that times the authors' code needs a checkout of it, and says so when it has none."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from authors_reference import AUTHORS_PATH_VARIABLE, irregular_speed_authors  # noqa: E402

from dynlearn.bench import BenchContext  # noqa: E402


def _context() -> BenchContext:
    return BenchContext(quick=True, device=torch.device("cpu"), seconds_per_comparison=0.1, repeats=1)


def test_without_a_checkout_it_is_skipped_with_the_variable_to_set(monkeypatch):
    monkeypatch.delenv(AUTHORS_PATH_VARIABLE, raising=False)
    (record,) = irregular_speed_authors(_context())
    assert record.metric == "skipped"
    assert AUTHORS_PATH_VARIABLE in record.unit


def test_a_folder_that_is_not_a_checkout_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv(AUTHORS_PATH_VARIABLE, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=AUTHORS_PATH_VARIABLE):
        irregular_speed_authors(_context())
