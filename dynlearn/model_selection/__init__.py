"""Model selection by backtest: time splits of series for scikit-learn's cross-validation."""

from ._split import SeriesTimeSplit

__all__ = ["SeriesTimeSplit"]
