"""SeriesScaler: mask-aware per-feature standardisation of series data."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..data import as_frame_spec, check_query_times, check_series, masked_mean_scale, to_user_kind
from ..exceptions import input_error


class SeriesScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Standardise each feature over its observed entries, for any series input.

    Like scikit-learn's ``StandardScaler``, but it accepts every series
    input dynlearn accepts (long frames, panels, ragged lists), ignores
    missing entries (NaN stays NaN) and returns the kind it was given.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract each feature's mean.
    with_std : bool, default=True
        Divide by each feature's standard deviation (constant features keep
        scale 1).

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature standardisation.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.

    Notes
    -----
    In ``Pipeline([("scale", SeriesScaler()), ("model", NeuralODE())])`` the
    model sees scaled data, so ``pipe.predict`` returns scaled values; map
    them back with ``pipe["scale"].inverse_transform(prediction)``. dynlearn
    estimators already standardise internally (``standardize=True``), so the
    scaler is only needed when other steps want scaled inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import SeriesScaler
    >>> X = np.array([[[1.0, 10.0], [3.0, np.nan]]])
    >>> SeriesScaler().fit_transform(X)
    array([[[-1.,  0.],
            [ 1., nan]]])
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, with_mean: bool = True, with_std: bool = True):
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "SeriesScaler":
        """Compute per-feature mean and scale over observed entries of X."""
        self._validate_params()
        batch = check_series(X, t)
        self.input_spec_ = batch.spec
        self.n_features_in_ = batch.n_features
        if batch.spec.feature_names is not None:
            self.feature_names_in_ = np.asarray(batch.spec.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        mean, scale = masked_mean_scale(batch.values, batch.mask)
        self.mean_ = mean if self.with_mean else np.zeros_like(mean)
        self.scale_ = scale if self.with_std else np.ones_like(scale)
        return self

    def transform(self, X: Any, t: Any = None) -> Any:
        """Scale X; returns the kind of X (or a frame after ``set_output(transform="pandas")``)."""
        return self._apply(X, t, lambda v: (v - self.mean_) / self.scale_)

    def inverse_transform(self, X: Any, t: Any = None) -> Any:
        """Map scaled values (for example a pipeline's predictions) back to the original units."""
        return self._apply(X, t, lambda v: v * self.scale_ + self.mean_)

    def set_output(self, *, transform: str | None = None) -> "SeriesScaler":
        """Choose the output of ``transform``: ``"default"`` (the input's kind) or ``"pandas"``.

        With ``"pandas"``, array inputs come back as frames: one series as a
        time-indexed frame, several as a long frame with ``series_id`` and
        ``time`` columns.
        """
        if transform is not None:
            if transform not in ("default", "pandas"):
                raise input_error("transform", "'default' or 'pandas'", repr(transform), "Pick one of those.")
            self._output = transform
        return self

    def _apply(self, X: Any, t: Any, function: Any) -> Any:
        check_is_fitted(self, "mean_")
        batch = check_series(X, t, reference=self.input_spec_, owner=type(self).__name__)
        values = np.where(batch.mask, function(batch.values), np.nan)
        if getattr(self, "_output", "default") == "pandas" and not batch.spec.is_frame:
            batch = replace(batch, spec=as_frame_spec(batch.spec, self.get_feature_names_out()))
        return to_user_kind(values, check_query_times(None, batch), batch)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags

