"""The series container every estimator works on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._time import TimeEncoding

# Column names of long frames: the one place they are spelled.
ID_COLUMN = "series_id"
TIME_COLUMN = "time"

# Input kinds, named once so conversions back can dispatch on them.
MULTIINDEX = "multiindex"  # DataFrame indexed by (series, time)
LONG = "long"  # DataFrame with series_id and time columns
FRAME = "frame"  # one series: DataFrame with a time index (or a time column)
PANEL = "panel"  # ndarray (n_series, n_times, n_features)
ARRAY = "array"  # ndarray (n_times, n_features), one series
RAGGED = "ragged"  # list of (n_times_i, n_features) arrays


@dataclass(frozen=True)
class InputSpec:
    """What the user passed, kept so outputs come back in the same kind."""

    kind: str
    n_features: int
    feature_names: tuple[str, ...] | None = None
    id_name: Any = ID_COLUMN
    time_name: Any = TIME_COLUMN
    time_in_column: bool = False
    time_encoding: TimeEncoding = field(default_factory=TimeEncoding)
    # The frame's own column labels; ``feature_names`` holds their str() for
    # scikit-learn, these give outputs the labels the user indexes with.
    column_labels: tuple[Any, ...] | None = None
    # Whether the times were the default ``0, 1, ..., n_times - 1`` of an
    # array or list given without ``t``: True or False for specs made now,
    # None (unknown) for specs unpickled from before it was recorded.
    default_times: bool | None = None

    @property
    def is_frame(self) -> bool:
        return self.kind in (MULTIINDEX, LONG, FRAME)


@dataclass(frozen=True)
class SeriesBatch:
    """A collection of multivariate series, each with its own observation times.

    Attributes
    ----------
    values : ndarray of shape (n_series, max_len, n_features)
        Observations; ``0.0`` wherever ``mask`` is False, so NaN never
        reaches a network, a solver or a loss.
    mask : ndarray of bool, shape (n_series, max_len, n_features)
        True where a value was observed.
    times : ndarray of shape (n_series, max_len)
        Float clock of each row, sorted within each series; rows past a
        series' length repeat its last time.
    lengths : ndarray of int, shape (n_series,)
        Number of time rows of each series (a row may have some or all of its
        features missing).
    ids : ndarray of shape (n_series,)
        Series identifiers, in order of first appearance.
    spec : InputSpec
        The kind of input, feature names and time encoding.
    inputs : ndarray of shape (n_series, max_len, n_inputs) or None
        Known inputs (covariates) at every row, split off the values by
        :func:`~dynlearn.data.split_inputs` for a model driven by them;
        None otherwise. Rows past a series' length repeat its last row.
    input_names : tuple or None
        Their column labels.
    n_static : int
        How many of the inputs, the last ones, are per-series constants
        (static covariates); each holds its series' value at every row.
    source_rows, source_index : ndarray of int and Index, or None
        For a batch read from a frame: for each of the frame's rows, in its
        order, the position of that row among the batch's rows taken series
        by series (the order of ``np.nonzero(row_mask)``), and the frame's
        index. Outputs at the batch's own times come back in the frame's
        row order with its index (:func:`~dynlearn.data.check_query_times`
        with ``t=None``). A batch whose rows were changed has None.
    """

    values: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    lengths: np.ndarray
    ids: np.ndarray
    spec: InputSpec
    inputs: np.ndarray | None = None
    input_names: tuple[Any, ...] | None = None
    n_static: int = 0
    source_rows: np.ndarray | None = None
    source_index: Any = None

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def max_len(self) -> int:
        return self.values.shape[1]

    @property
    def n_features(self) -> int:
        return self.values.shape[2]

    @property
    def row_mask(self) -> np.ndarray:
        """(n_series, max_len) True for rows that exist (observed or not)."""
        return np.arange(self.max_len)[None, :] < self.lengths[:, None]

    def subset(self, index: Any) -> "SeriesBatch":
        """The series at ``index`` (integer array or boolean mask), trimmed."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        lengths = self.lengths[index]
        width = int(lengths.max()) if len(lengths) else 0
        return replace(
            self,
            values=self.values[index, :width],
            mask=self.mask[index, :width],
            times=self.times[index, :width],
            lengths=lengths,
            ids=self.ids[index],
            inputs=None if self.inputs is None else self.inputs[index, :width],
            source_rows=None,
            source_index=None,
        )

    def filled_values(self, unobserved: np.ndarray | None = None) -> np.ndarray:
        """Values with each feature's gaps filled by linear interpolation in time.

        Before a feature's first observation its first value is used, after its
        last the last value; a feature never observed in a series takes its
        value in ``unobserved`` (n_features,), 0 where None: an estimator
        passes its training means, so the fill does not depend on the
        feature's units. This is how a state-space model gets a full initial
        state from a partly observed row.
        """
        filled = np.zeros_like(self.values)
        if unobserved is not None:
            filled[:] = np.asarray(unobserved, dtype=filled.dtype)
        for i in range(self.n_series):
            n = self.lengths[i]
            times = self.times[i, :n]
            for j in range(self.n_features):
                seen = self.mask[i, :n, j]
                if seen.any():
                    filled[i, :n, j] = np.interp(times, times[seen], self.values[i, :n, j][seen])
            if n < self.max_len:
                filled[i, n:] = filled[i, n - 1]
        return filled


@dataclass(frozen=True)
class QueryTimes:
    """Times at which an estimator is asked for outputs, per series.

    ``times`` is (n_series, n_queries) on the float clock, padded by
    repeating the last query; ``mask`` marks the real queries.

    For a frame of query rows, ``rows`` gives, for each of its rows in its
    order, the position of that query among the real queries taken series
    by series (the order of ``np.nonzero(mask)``), and ``index`` is its
    index, so outputs come back row for row like the query frame.

    ``inputs`` ``(n_series, n_queries, n_inputs)`` holds the known inputs at
    the query times for a model driven by them (None otherwise).
    """

    times: np.ndarray
    mask: np.ndarray
    rows: np.ndarray | None = None
    index: Any = None
    inputs: np.ndarray | None = None

    @property
    def n_queries(self) -> int:
        return self.times.shape[1]
