"""Mask-aware per-feature statistics, shared by estimators and SeriesScaler."""

from __future__ import annotations

import numpy as np


def masked_mean_scale(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over observed entries only.

    Parameters
    ----------
    values, mask : ndarray of shape (..., n_features)

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
    var = np.where(flat_mask, (flat_values - mean) ** 2, 0.0).sum(axis=0) / safe
    scale = np.sqrt(var)
    scale = np.where((count == 0) | (scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)), 1.0, scale)
    return mean, scale
