"""Mask-aware per-feature statistics, shared by estimators and SeriesScaler."""

from __future__ import annotations

import numpy as np


def masked_mean_scale(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over observed entries only.

    Parameters
    ----------
    values, mask : ndarray of shape (..., n_features)
        Values and the boolean mask of observed entries (True where observed).

    Returns
    -------
    mean, scale : ndarray of shape (n_features,)
        A feature that is constant or never observed gets scale 1 (and mean 0
        when never observed), so scaling never divides by zero.
    """
    flat_values = values.reshape(-1, values.shape[-1])
    flat_mask = mask.reshape(-1, mask.shape[-1])
    count = flat_mask.sum(axis=0)
    safe = np.maximum(count, 1)
    mean = np.where(flat_mask, flat_values, 0.0).sum(axis=0) / safe
    # Centre only observed entries: whatever sits under the mask must not
    # overflow into the variance.
    centred = np.where(flat_mask, flat_values, mean) - mean
    scale = np.sqrt((centred**2).sum(axis=0) / safe)
    # Summing many copies of one value leaves rounding error in the mean, and
    # so a tiny nonzero spread; judge constancy on the values themselves.
    constant = _observed_min(flat_values, flat_mask) >= _observed_max(flat_values, flat_mask)
    negligible = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(constant | negligible, 1.0, scale)


def _observed_min(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, values, np.inf).min(axis=0)


def _observed_max(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, values, -np.inf).max(axis=0)
