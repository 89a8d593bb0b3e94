"""The README's quickstart, and the user guide's examples that a test pins down, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from dynlearn import LastValueForecaster
from dynlearn.metrics import mean_squared_error

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FORECASTING_GUIDE = ROOT / "docs" / "user_guide" / "forecasting.md"
INPUTS_GUIDE = ROOT / "docs" / "user_guide" / "inputs.md"


def _python_block(containing: str, page: Path = README) -> str:
    """The one python block of ``page`` with ``containing`` in it, found by content so that edits elsewhere keep it."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S) if containing in b]
    assert len(blocks) == 1, f"expected one python block in {page.name} containing {containing!r}, found {len(blocks)}"
    return blocks[0]


def _run(block: str, name: str) -> dict:
    namespace: dict = {}
    exec(compile(block, name, "exec"), namespace)
    return namespace


def test_quickstart_forecasts_the_real_table_better_than_naive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _run(_python_block("AutoForecaster("), "README quickstart")
    future, train, test = namespace["future"], namespace["train"], namespace["test"]
    assert list(future.columns) == ["series_id", "time", "hare", "lynx"] and len(future) == 4
    assert (namespace["lower"][["hare", "lynx"]] <= namespace["upper"][["hare", "lynx"]]).all().all()
    assert len(namespace["auto"].leaderboard_) == 5
    # The chosen model beats persistence on the held-out years, as the text after the block says.
    naive = LastValueForecaster().fit(train).predict(train, t=namespace["queries"])
    assert mean_squared_error(test, future) < mean_squared_error(test, naive)
    assert list(namespace["by_hand"].columns) == ["series_id", "time", "hare", "lynx"]


def test_panel_example_runs_and_forecasts_in_user_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _run(_python_block("make_damped_oscillator(n_series=40"), "README panel example")
    future = namespace["future"]
    assert isinstance(future, pd.DataFrame)
    assert list(future.columns) == ["series_id", "time", "q", "p"]
    assert len(future) == 8 * 3 and future[["q", "p"]].notna().all().all()
    assert (tmp_path / "forecast.png").stat().st_size > 10_000


def test_seed_ensemble_example_averages_its_members(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _run(_python_block("SeedEnsemble(", FORECASTING_GUIDE), "user guide seed ensemble example")
    ensemble, frame = namespace["ensemble"], namespace["frame"]
    assert len(ensemble.estimators_) == 3
    forecast = ensemble.predict(frame, t=[21.0])
    members = [m.predict(frame, t=[21.0])[["q", "p"]].to_numpy() for m in ensemble.estimators_]
    assert abs(forecast[["q", "p"]].to_numpy() - sum(members) / 3).max() < 1e-12


def test_systems_with_inputs_example_forecasts_under_known_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _run(_python_block("free_run = model.simulate(", INPUTS_GUIDE), "user guide systems with inputs example")
    forecast, future, free_run = namespace["forecast"], namespace["future"], namespace["free_run"]
    assert list(forecast.columns) == ["series_id", "time", "q", "p"]
    from dynlearn.metrics import r2_score

    assert r2_score(future[["series_id", "time", "q", "p"]], forecast) > 0.9
    assert free_run.shape == (60, 2)


def test_static_covariates_example_runs_and_answers_in_the_states_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = _run(_python_block("static_covariates=[0.5]", INPUTS_GUIDE), "user guide static covariates example")
    forecast, run = namespace["forecast"], namespace["run"]
    assert list(forecast.columns) == ["series_id", "time", "x"] and len(forecast) == 2 * 20
    assert run.shape == (25, 1) and abs(run[-1, 0] - np.exp(-0.5 * 4.0)) < 0.1
