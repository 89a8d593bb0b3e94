"""The probabilistic-forecasting tutorial runs end to end in its fast mode, and its SDE forecasts are calibrated."""

from __future__ import annotations

import runpy
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]


def test_probabilistic_forecasting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYNLEARN_TUTORIAL_FAST", "1")
    namespace = runpy.run_path(str(ROOT / "tutorials" / "probabilistic_forecasting.py"), run_name="__main__")

    scores = namespace["scores"]
    # The SDEs' nominal 90% intervals hold about 90% of the held-out future (the exact law's do too).
    assert 0.75 <= scores["NeuralSDE"]["90% coverage"] <= 0.98
    assert 0.65 <= scores["LatentSDE"]["90% coverage"] <= 0.98
    assert 0.8 <= scores["exact law"]["90% coverage"] <= 0.98
    # A learned distribution beats a single curve on CRPS, and comes close to the exact law's.
    for model in ("NeuralSDE", "LatentSDE"):
        assert scores[model]["CRPS"] < scores["NeuralODE"]["CRPS"]
        assert scores[model]["CRPS"] < 1.2 * scores["exact law"]["CRPS"]
    # A point forecast's CRPS is its mean absolute error.
    point, truth = namespace["points"]["NeuralODE"], namespace["y_future"]
    assert np.isclose(scores["NeuralODE"]["CRPS"], np.abs(point - truth).mean())
    # The learned noise has the right size: far ahead the spread nears the stationary one.
    assert abs(namespace["spread_far"]["NeuralSDE"] / namespace["stationary"] - 1) < 0.25
    # The Gaussian intervals of predict_quantiles agree with the sampled ones.
    assert abs(namespace["gaussian_coverage"] - scores["NeuralSDE"]["90% coverage"]) < 0.08
    for figure in ("fan", "calibration"):
        assert (tmp_path / f"probabilistic_{figure}.png").stat().st_size > 10_000
