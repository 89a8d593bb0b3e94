"""Turning model outputs back into the kind of input the user gave."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ._container import ARRAY, FRAME, LONG, MULTIINDEX, PANEL, RAGGED, InputSpec, QueryTimes, SeriesBatch

# The index level of outputs with a leading sample axis (``sample`` draws).
SAMPLE_LEVEL = "sample"


def as_frame_spec(spec: InputSpec, feature_names: Any) -> InputSpec:
    """``spec`` with outputs formatted as frames named ``feature_names``.

    A batch read from a panel or a list of arrays comes back as a long frame
    (series id and time columns), one read from a single array as a
    time-indexed frame; what makes ``set_output(transform="pandas")`` work
    for array input.

    Parameters
    ----------
    spec : InputSpec
        The spec of an array batch.
    feature_names : sequence of str
        Column names of the outputs.

    Returns
    -------
    InputSpec

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn.data import as_frame_spec, check_series
    >>> batch = check_series(np.zeros((2, 3, 1)))
    >>> as_frame_spec(batch.spec, ["x"]).kind
    'long'
    """
    kind = LONG if spec.kind in (PANEL, RAGGED) else FRAME
    return replace(spec, kind=kind, feature_names=tuple(str(n) for n in feature_names))


def to_user_kind(values: np.ndarray, query: QueryTimes, batch: SeriesBatch) -> Any:
    """Format outputs at ``query`` times like the input ``batch`` came in.

    Parameters
    ----------
    values : ndarray of shape (n_series, n_queries, n_outputs) or (n_samples, n_series, n_queries, n_outputs)
        Outputs; a leading sample axis becomes a leading array axis or a
        ``sample`` index level of a frame.
    query : QueryTimes
        The validated query times the outputs are at.
    batch : SeriesBatch
        The validated input (for ids, names, kind and time encoding).

    Returns
    -------
    DataFrame, ndarray or list of ndarray
        Frames have one row per query, in the order of a query frame with
        its index where ``query`` came from one (an output indexed by
        (series, time) or by time keeps that index); a panel gets ``(n_series, n_queries,
        n_outputs)`` with NaN where a series has fewer queries than others; a
        single array gets ``(n_queries, n_outputs)``; a ragged list gets one
        ``(n_queries_i, n_outputs)`` array per series.
    """
    spec = batch.spec
    sampled = values.ndim == 4
    stack = values if sampled else values[None]
    if not spec.is_frame:
        if spec.kind == PANEL:
            # Padded query slots repeat the last query; NaN keeps them from
            # passing for real outputs.
            out = stack if query.mask.all() else np.where(query.mask[None, :, :, None], stack, np.nan)
        elif spec.kind == ARRAY:
            out = stack[:, 0]
        else:
            out = [[s[i][query.mask[i]] for i in range(batch.n_series)] for s in stack]
            return out if sampled else out[0]
        return out if sampled else out[0]
    frames = [_frame(s, query, batch) for s in stack]
    if not sampled:
        return frames[0]
    return pd.concat(frames, keys=range(len(frames)), names=[SAMPLE_LEVEL])


def _frame(values: np.ndarray, query: QueryTimes, batch: SeriesBatch) -> pd.DataFrame:
    frame = _frame_by_series(values, query, batch)
    if query.rows is None:
        return frame
    frame = frame.iloc[query.rows]
    if batch.spec.kind == MULTIINDEX or (batch.spec.kind == FRAME and not batch.spec.time_in_column):
        return frame  # the index says which series and time each row is
    return frame.set_axis(query.index, axis=0)


def _frame_by_series(values: np.ndarray, query: QueryTimes, batch: SeriesBatch) -> pd.DataFrame:
    spec = batch.spec
    series, position = np.nonzero(query.mask)
    times = spec.time_encoding.decode(query.times[series, position])
    data = values[series, position]
    names = _column_names(spec, data.shape[1])
    if spec.kind == MULTIINDEX:
        arrays, levels = [batch.ids[series], times], [spec.id_name, spec.time_name]
        source = batch.source_index
        if isinstance(source, pd.MultiIndex) and list(source.names) == levels[::-1]:  # X had (time, series)
            arrays, levels = arrays[::-1], levels[::-1]
        return pd.DataFrame(data, index=pd.MultiIndex.from_arrays(arrays, names=levels), columns=names)
    if spec.kind == LONG:
        frame = pd.DataFrame({spec.id_name: batch.ids[series], spec.time_name: times})
        return pd.concat([frame, pd.DataFrame(data, columns=names)], axis=1)
    assert spec.kind == FRAME
    if spec.time_in_column:
        frame = pd.DataFrame({spec.time_name: times})
        return pd.concat([frame, pd.DataFrame(data, columns=names)], axis=1)
    return pd.DataFrame(data, index=pd.Index(times, name=spec.time_name), columns=names)


def _column_names(spec: InputSpec, n_outputs: int) -> list[Any]:
    """Output column labels: the input's own when the outputs are its features."""
    names = spec.feature_names
    if names is None or len(names) != n_outputs:
        return [f"x{j}" for j in range(n_outputs)]
    labels = spec.column_labels
    if labels is not None and tuple(str(c) for c in labels) == tuple(names):
        return list(labels)
    return list(names)


def batch_to_user_kind(batch: SeriesBatch) -> Any:
    """The batch itself as the user's kind (missing entries as NaN)."""
    from ._validation import check_query_times

    values = np.where(batch.mask, batch.values, np.nan)
    return to_user_kind(values, check_query_times(None, batch), batch)
