"""SeriesScaler and the masked metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics

from dynlearn import SeriesScaler
from dynlearn.metrics import mean_absolute_error, mean_squared_error, r2_score


def test_scaler_standardises_observed_entries_and_inverts(oscillator):
    frame, _ = oscillator
    frame = frame.assign(q=frame["q"] * 120.0 + 80.0)
    scaler = SeriesScaler().fit(frame)
    scaled = scaler.transform(frame)
    assert list(scaled.columns) == list(frame.columns)
    assert scaled["q"].mean() == pytest.approx(0.0, abs=1e-12) and scaled["q"].std(ddof=0) == pytest.approx(1.0)
    assert scaled["q"].isna().sum() == frame["q"].isna().sum()
    back = scaler.inverse_transform(scaled)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), frame.sort_values(["series_id", "time"], kind="stable")
                                  .set_index("series_id").loc[frame["series_id"].unique()].reset_index()
                                  [back.columns], check_dtype=False)


@pytest.mark.parametrize("kind", ["panel", "single", "ragged"])
def test_scaler_accepts_every_array_kind(kind):
    rng = np.random.RandomState(0)
    panel = rng.normal(5.0, 3.0, size=(4, 10, 2))
    panel[0, 2, 1] = np.nan
    X = {"panel": panel, "single": panel[0], "ragged": [panel[0], panel[1, :6]]}[kind]
    out = SeriesScaler().fit_transform(X)
    stacked = np.concatenate([a for a in out]) if kind == "ragged" else out.reshape(-1, 2)
    assert np.nanmean(stacked, axis=0) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert np.isnan(stacked).sum() == 1


def test_scaler_pandas_output():
    X = np.random.RandomState(0).normal(size=(3, 5, 2))
    out = SeriesScaler().set_output(transform="pandas").fit_transform(X)
    assert list(out.columns) == ["series_id", "time", "x0", "x1"] and len(out) == 15
    single = SeriesScaler().set_output(transform="pandas").fit_transform(X[0])
    assert list(single.columns) == ["x0", "x1"] and single.index.name == "time"


def test_metrics_agree_with_sklearn_when_nothing_is_missing():
    rng = np.random.RandomState(0)
    true, pred = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    assert mean_squared_error(true, pred) == pytest.approx(sklearn.metrics.mean_squared_error(true, pred))
    assert mean_absolute_error(true, pred) == pytest.approx(sklearn.metrics.mean_absolute_error(true, pred))
    assert r2_score(true, pred) == pytest.approx(sklearn.metrics.r2_score(true, pred))


def test_metrics_ignore_missing_entries_and_align_frames():
    true = pd.DataFrame({"series_id": [0, 0, 1], "time": [0.0, 1.0, 0.0], "x": [1.0, np.nan, 3.0]})
    pred = pd.DataFrame({"series_id": [1, 0, 0], "time": [0.0, 1.0, 0.0], "x": [2.0, 1e9, 1.0]})
    assert mean_squared_error(true, pred) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="y_pred"):
        mean_squared_error(true, pred.iloc[:2])
