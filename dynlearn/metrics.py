"""Error metrics over observed entries only.

Each metric accepts what estimators return: arrays (NaN in ``y_true`` marks
a missing entry), lists of arrays, or long frames (rows are matched on
series and time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .data import ID_COLUMN, TIME_COLUMN
from .exceptions import input_error

__all__ = ["mean_absolute_error", "mean_squared_error", "r2_score", "r2_score_masked"]


def mean_squared_error(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean squared error over the entries observed in ``y_true``.

    Parameters
    ----------
    y_true, y_pred : DataFrame, ndarray or list of ndarray
        Same kind and shape; frames are aligned on (series, time).
    multioutput : {"uniform_average", "raw_values"}
        Average over features, or one value per feature.
    """
    true, pred, mask = _aligned(y_true, y_pred)
    return _reduce(np.where(mask, (true - pred) ** 2, 0.0), mask, multioutput)


def mean_absolute_error(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean absolute error over the entries observed in ``y_true``."""
    true, pred, mask = _aligned(y_true, y_pred)
    return _reduce(np.where(mask, np.abs(true - pred), 0.0), mask, multioutput)


def r2_score(y_true: Any, y_pred: Any, *, multioutput: str = "uniform_average") -> Any:
    """Coefficient of determination per feature over observed entries (1 is perfect)."""
    true, pred, mask = _aligned(y_true, y_pred)
    return r2_score_masked(true, pred, mask, multioutput=multioutput)


def r2_score_masked(true: np.ndarray, pred: np.ndarray, mask: np.ndarray, *, multioutput: str = "uniform_average") -> Any:
    """R² of ``pred`` against ``true`` where ``mask``; arrays of shape (..., n_features)."""
    true = true.reshape(-1, true.shape[-1])
    pred = pred.reshape(-1, pred.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    count = np.maximum(mask.sum(axis=0), 1)
    mean = np.where(mask, true, 0.0).sum(axis=0) / count
    residual = np.where(mask, (true - pred) ** 2, 0.0).sum(axis=0)
    total = np.where(mask, (true - mean) ** 2, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0))
    return _finish(score, multioutput)


def _reduce(errors: np.ndarray, mask: np.ndarray, multioutput: str) -> Any:
    errors = errors.reshape(-1, errors.shape[-1])
    mask = mask.reshape(-1, mask.shape[-1])
    return _finish(errors.sum(axis=0) / np.maximum(mask.sum(axis=0), 1), multioutput)


def _finish(per_feature: np.ndarray, multioutput: str) -> Any:
    if multioutput == "raw_values":
        return per_feature
    if multioutput == "uniform_average":
        return float(np.mean(per_feature))
    raise input_error("multioutput", "'uniform_average' or 'raw_values'", repr(multioutput), "Pick one.")


def _aligned(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(y_true, pd.DataFrame):
        if not isinstance(y_pred, pd.DataFrame):
            raise input_error("y_pred", "a DataFrame like y_true", type(y_pred).__name__, "Pass predictions as returned.")
        true, pred = _indexed(y_true), _indexed(y_pred)
        missing = true.index.difference(pred.index)
        if len(missing):
            raise input_error(
                "y_pred",
                "a row for every (series, time) of y_true",
                f"{len(missing)} missing rows, e.g. {list(missing[:3])}",
                "Predict at y_true's times, e.g. model.predict(history, t=y_true).",
            )
        columns = [c for c in true.columns]
        absent = [c for c in columns if c not in pred.columns]
        if absent:
            raise input_error("y_pred", f"columns {columns}", f"columns missing {absent}", "Pass matching frames.")
        true_values = true[columns].to_numpy(dtype=float, na_value=np.nan)
        pred_values = pred.loc[true.index, columns].to_numpy(dtype=float, na_value=np.nan)
    else:
        true_values = _stack(y_true, "y_true")
        pred_values = _stack(y_pred, "y_pred")
        if true_values.shape != pred_values.shape:
            raise input_error("y_pred", f"shape {true_values.shape} like y_true", f"shape {pred_values.shape}", "Pass matching arrays.")
    mask = np.isfinite(true_values)
    if not mask.any():
        raise input_error("y_true", "at least one observed value", "only missing entries", "Pass observed data.")
    if not np.isfinite(pred_values[mask]).all():
        raise input_error("y_pred", "finite predictions where y_true is observed", "NaN or inf", "Check the model output.")
    return np.where(mask, true_values, 0.0), np.where(mask, pred_values, 0.0), mask


def _indexed(frame: pd.DataFrame) -> pd.DataFrame:
    if ID_COLUMN in frame.columns and TIME_COLUMN in frame.columns:
        return frame.set_index([ID_COLUMN, TIME_COLUMN])
    if TIME_COLUMN in frame.columns:
        return frame.set_index(TIME_COLUMN)
    return frame


def _stack(y: Any, argument: str) -> np.ndarray:
    if isinstance(y, (list, tuple)):
        y = np.concatenate([np.asarray(a, dtype=float).reshape(len(a), -1) for a in y])
    array = np.asarray(y, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    return array
