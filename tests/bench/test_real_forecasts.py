"""The real-series forecast benchmark scores every model against the naive forecast of the same split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sm = pytest.importorskip("statsmodels.api")
pytest.importorskip("pmdarima")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import real_forecasts


def test_the_ratio_divides_by_the_mse_of_carrying_the_last_value_forward():
    history = np.array([[1.0], [2.0], [4.0]])
    actual = np.array([[5.0], [3.0]])
    # naive forecasts 4 twice: errors 1 and -1, MSE 1; the forecast's errors are 1 and 3, MSE 5.
    mse, ratio = real_forecasts.score(np.array([6.0, 6.0]), history, actual)
    assert mse == pytest.approx(5.0)
    assert ratio == pytest.approx(5.0)
    assert real_forecasts.coverage(np.array([4.5, 3.5]), np.array([5.5, 4.0]), actual) == pytest.approx(0.5)


def test_seasonal_naive_repeats_the_last_period():
    forecast, lower, upper = real_forecasts._seasonal_naive(np.arange(10.0), 5, 4, None)
    np.testing.assert_array_equal(forecast, [6.0, 7.0, 8.0, 9.0, 6.0])
    assert lower is None and upper is None


def test_a_run_on_nile_scores_every_model_against_a_hand_computed_naive(tmp_path):
    options = real_forecasts.Options(
        series=("nile",), estimators=("naive", "ets", "auto_arima", "NeuralODE", "NeuralSDE"), seeds=(0, 1),
        max_epochs=2, quick=True,
    )
    rows = real_forecasts.run(options, log=lambda line: None)

    volume = sm.datasets.nile.load_pandas().data["volume"].to_numpy(float)
    history, actual = volume[:80], volume[80:]  # the last 20% of the 100 years
    naive = np.mean((actual - history[-1]) ** 2)
    assert [(row["model"], row["seed"]) for row in rows] == [
        ("naive", None), ("ets", None), ("auto_arima", None), ("NeuralODE", 0), ("NeuralODE", 1), ("NeuralSDE", 0),
    ]
    for row in rows:
        assert (row["n_train"], row["horizon"]) == (80, 20)
        assert row["naive_mse"] == pytest.approx(naive)
        assert row["status"] == "ok", row
        assert row["mse_over_naive"] == pytest.approx(row["mse"] / naive)
    by_model = {(row["model"], row["seed"]): row for row in rows}
    assert by_model[("naive", None)]["mse_over_naive"] == pytest.approx(1.0)
    for model in ("ets", "auto_arima", "NeuralODE", "NeuralSDE"):  # every model here gives an interval
        assert 0.0 <= by_model[(model, 0 if model.startswith("Neural") else None)]["coverage90"] <= 1.0

    # ETS's ratio, recomputed from statsmodels directly.
    ets_forecast, _, _ = real_forecasts._ets(history, 20, None, real_forecasts.SERIES["nile"])
    assert by_model[("ets", None)]["mse"] == pytest.approx(np.mean((ets_forecast - actual) ** 2))

    json_path, md_path = real_forecasts.write(rows, options, tmp_path, "command")
    payload = json.loads(json_path.read_text())
    assert json_path.name == "real_forecasts_quick.json"
    assert payload["environment"]["torch_threads"] == 1
    assert len(payload["rows"]) == len(rows)
    seeds = sorted(row["mse_over_naive"] for row in rows if row["model"] == "NeuralODE")
    summary = real_forecasts.summary(rows)[("nile", "NeuralODE")]
    assert (summary["low"], summary["high"]) == pytest.approx(tuple(seeds))
    report = md_path.read_text()
    assert "| nile | 20 |" in report and "NeuralODE" in report

    # Runs of different series side by side merge into one pair of files.
    lynx_rows = [dict(row, series="lynx_hare") for row in rows]
    other_json, _ = real_forecasts.write(lynx_rows, options, tmp_path / "other", "other command")
    merged_json, merged_md = real_forecasts.merge([json_path, other_json], tmp_path / "merged")
    merged = json.loads(merged_json.read_text())
    assert len(merged["rows"]) == 2 * len(rows) and merged["command"] == "command & other command"
    assert "| nile | 20 |" in merged_md.read_text() and "| lynx_hare | 20 |" in merged_md.read_text()

    # A later run of one model replaces that model's cells and keeps the rest.
    again = [dict(row, mse_over_naive=0.5) for row in rows if row["model"] == "NeuralODE"]
    again_json, _ = real_forecasts.write(again, options, tmp_path / "again", "again command")
    remerged = json.loads(real_forecasts.merge([json_path, again_json], tmp_path / "remerged")[0].read_text())
    assert len(remerged["rows"]) == len(rows)
    assert all((row["mse_over_naive"] == 0.5) == (row["model"] == "NeuralODE") for row in remerged["rows"])


def test_a_model_that_fails_its_forecast_is_reported_not_raised(monkeypatch):
    class Exploding:
        def __init__(self, **params):
            pass

        def get_params(self):
            return {"random_state": None}

        def fit(self, X, t=None):
            return self

        def predict(self, X, t=None):
            raise RuntimeError("the solve blew up")

    monkeypatch.setattr(real_forecasts, "dynlearn_estimator", lambda name: Exploding)
    history, actual = np.arange(10.0)[:, None], np.arange(10.0, 13.0)[:, None]
    row = real_forecasts.run_dynlearn("NeuralODE", real_forecasts.SERIES["nile"], history, actual, 0, "cpu", 1)
    assert row["status"].startswith("RuntimeError")
    assert np.isnan(row["mse_over_naive"])
    entry = real_forecasts.summary([row])[("nile", "NeuralODE")]
    assert entry["failed"] == 1 and real_forecasts._cell(entry) == "failed (1/1)"
