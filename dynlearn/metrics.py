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
from .data._output import SAMPLE_LEVEL
from .exceptions import input_error

__all__ = [
    "crps_ensemble",
    "crps_from_samples",
    "gaussian_nll",
    "interval_coverage",
    "mean_absolute_error",
    "mean_squared_error",
    "r2_score",
    "r2_score_masked",
]


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


# ------------------------------------------------------------ probabilistic
def crps_ensemble(y_true: Any, y_samples: Any, *, multioutput: str = "uniform_average") -> Any:
    """Continuous ranked probability score of a sample ensemble, over observed entries (lower is better).

    For each entry, ``CRPS = E|X - y| - E|X - X'| / 2`` with ``X, X'``
    drawn independently from the ``m`` samples (the plain ensemble estimator,
    all ``m²`` pairs); an ensemble of identical members scores the absolute
    error, and the score is in the units of ``y``.

    Parameters
    ----------
    y_true : DataFrame, ndarray or list of ndarray
        Observations; NaN marks a missing entry, which is ignored.
    y_samples : DataFrame, ndarray or list
        What ``sample`` returns for the same rows: an array with a leading
        sample axis ``(n_samples, *y_true.shape)``, a frame with an outer
        ``sample`` index level (each sample aligned on series and time), or a
        list of ``n_samples`` ragged lists.
    multioutput : {"uniform_average", "raw_values"}
    """
    true, samples, mask = _aligned_samples(y_true, y_samples)
    ordered = np.sort(samples, axis=0)
    m = ordered.shape[0]
    weights = (2.0 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (ordered.ndim - 1))
    spread = 2.0 * (weights * ordered).sum(axis=0) / m**2  # E|X - X'| from the sorted members
    score = np.abs(samples - true).mean(axis=0) - 0.5 * spread
    return _reduce(np.where(mask, score, 0.0), mask, multioutput)


crps_from_samples = crps_ensemble


def interval_coverage(y_true: Any, y_lower: Any, y_upper: Any, *, multioutput: str = "uniform_average") -> Any:
    """Share of observed entries inside ``[y_lower, y_upper]``.

    A calibrated 90% interval (e.g. the 0.05 and 0.95 quantiles of
    ``predict_quantiles``) covers about 0.9 of the observations.
    """
    true, lower, mask = _aligned(y_true, y_lower)
    _, upper, _ = _aligned(y_true, y_upper)
    inside = (lower <= true) & (true <= upper)
    return _reduce(np.where(mask, inside, 0.0), mask, multioutput)


def gaussian_nll(y_true: Any, y_mean: Any, y_std: Any, *, multioutput: str = "uniform_average") -> Any:
    """Mean negative log-density of observed entries under independent ``N(y_mean, y_std²)`` (lower is better).

    Per entry ``log(2π σ²) / 2 + (y - μ)² / (2σ²)``, in nats; ``y_mean``,
    ``y_std`` as returned by ``predict(X, t, return_std=True)``.
    """
    true, mean, mask = _aligned(y_true, y_mean)
    _, std, _ = _aligned(y_true, y_std)
    if not (std[mask] > 0).all():
        raise input_error("y_std", "positive standard deviations where y_true is observed", "zero or negative values",
                          "Drop entries predicted with zero spread (e.g. a query at its own anchor observation).")
    safe = np.where(mask, std, 1.0)
    nll = 0.5 * np.log(2 * np.pi * safe**2) + 0.5 * ((true - mean) / safe) ** 2
    return _reduce(np.where(mask, nll, 0.0), mask, multioutput)


def _aligned_samples(y_true: Any, y_samples: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``y_true`` and every sample aligned like :func:`_aligned`; samples stacked on a leading axis."""
    if isinstance(y_true, pd.DataFrame):
        if not isinstance(y_samples, pd.DataFrame) or SAMPLE_LEVEL not in (y_samples.index.names or []):
            raise input_error("y_samples", f"a DataFrame with a {SAMPLE_LEVEL!r} index level", type(y_samples).__name__,
                              "Pass what model.sample(...) returns for y_true's rows.")
        draws = [group.droplevel(SAMPLE_LEVEL) for _, group in y_samples.groupby(level=SAMPLE_LEVEL, sort=True)]
    elif isinstance(y_true, (list, tuple)):
        draws = list(y_samples)
    else:
        draws = np.asarray(y_samples, dtype=float)
        if draws.shape[1:] != np.shape(y_true):
            raise input_error("y_samples", f"shape (n_samples, {', '.join(map(str, np.shape(y_true)))})",
                              f"shape {draws.shape}", "Put the samples on a leading axis, as model.sample returns.")
    if len(draws) == 0:
        raise input_error("y_samples", "at least one sample", "none", "Draw samples with model.sample(...).")
    aligned = [_aligned(y_true, draw) for draw in draws]
    true, mask = aligned[0][0], aligned[0][2]
    return true, np.stack([pred for _, pred, _ in aligned]), mask


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
