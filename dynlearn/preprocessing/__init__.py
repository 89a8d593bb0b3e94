"""Transformers for series data."""

from ._scaler import SeriesScaler

__all__ = ["SeriesScaler"]
