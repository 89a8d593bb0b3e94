"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quickstart_runs_and_forecasts_in_user_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_blocks()[0], "README quickstart", "exec"), namespace)
    future = namespace["future"]
    assert isinstance(future, pd.DataFrame)
    assert list(future.columns) == ["series_id", "time", "q", "p"]
    assert len(future) == 8 * 3 and future[["q", "p"]].notna().all().all()
    assert (tmp_path / "forecast.png").stat().st_size > 10_000
