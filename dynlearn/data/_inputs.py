"""Known inputs (covariates): columns of the same table that drive the states and are never forecast.

A model with inputs reads its table like any other; the columns named as
inputs are then split off the states here, once, for every estimator:
:func:`input_columns` resolves the names at fit, :func:`split_inputs`
moves those columns from a validated :class:`SeriesBatch` into its
``inputs`` (refusing a missing value at any row), and
:func:`query_inputs` reads the inputs of a query frame at its query times.

Static covariates (per-series constants: a patient's age, a machine's
type) are inputs too: they follow the time-varying ones in ``inputs``,
hold their series' value at every row (``SeriesBatch.n_static`` counts
them), and are taken from the history at query time, so a query needs
only the time-varying inputs. A model reads both the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd

from ..exceptions import input_error
from ._container import InputSpec, QueryTimes, SeriesBatch

# Rows listed in a missing-input error.
_SHOWN_ROWS = 5


def input_columns(covariates: Any, spec: InputSpec, argument: str = "covariates") -> np.ndarray:
    """Positions ``(n_inputs,)`` among the feature columns of the inputs named by ``covariates``.

    Frames name their columns (labels as in the frame, or their text);
    arrays and lists give column indices. At least one column must remain a
    state. None gives no inputs.
    """
    if covariates is None:
        return np.empty(0, dtype=np.int64)
    names = [covariates] if isinstance(covariates, (str, Integral)) else list(covariates)
    if not names:
        return np.empty(0, dtype=np.int64)
    if spec.is_frame:
        labels = list(spec.column_labels or spec.feature_names or ())
        text = [str(label) for label in labels]
        positions = []
        for name in names:
            if name in labels:
                positions.append(labels.index(name))
            elif str(name) in text:
                positions.append(text.index(str(name)))
            else:
                raise input_error(
                    argument,
                    f"names of value columns of X, among {labels}",
                    repr(name),
                    "Name the input columns as they appear in the frame (series id and time are not inputs).",
                )
    else:
        if not all(isinstance(name, Integral) and not isinstance(name, bool) for name in names):
            raise input_error(
                argument,
                f"column indices in [0, {spec.n_features}) for array input (arrays have no column names)",
                repr(covariates),
                "Pass e.g. covariates=[2] for the third feature, or fit on a DataFrame to use names.",
            )
        positions = [int(name) for name in names]
        bad = [p for p in positions if not 0 <= p < spec.n_features]
        if bad:
            raise input_error(
                argument, f"column indices in [0, {spec.n_features})", repr(covariates),
                f"X has {spec.n_features} features; pick the input columns among them.",
            )
    if len(set(positions)) != len(positions):
        raise input_error(argument, "each input column once", repr(covariates), "Remove the repeated column.")
    if len(positions) >= spec.n_features:
        raise input_error(
            argument,
            "some columns left as states to model",
            f"all {spec.n_features} value columns named as inputs",
            "Keep at least one measured variable out of covariates.",
        )
    return np.asarray(positions, dtype=np.int64)


def split_inputs(
    batch: SeriesBatch, positions: np.ndarray | None, argument: str = "X", static: np.ndarray | None = None
) -> SeriesBatch:
    """``batch`` with the columns at ``positions`` and ``static`` moved from its values into its ``inputs``.

    The returned batch's values, mask and spec hold the states only (so
    outputs are named after them); ``inputs`` is ``(n_series, max_len,
    n_inputs)``, the columns at ``positions`` then those at ``static``, and
    ``input_names`` their labels. Time-varying inputs must be known at
    every row of every series, since the dynamics read them between
    observations: a missing one raises an error naming the column and the
    rows. A static column must hold one value per series: it may be blank
    on some rows (it is then that value, as documented), but two different
    values in one series, or none at all, are refused. Without positions the
    batch is returned as it is.
    """
    positions = np.empty(0, dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
    static = np.empty(0, dtype=np.int64) if static is None else np.asarray(static, dtype=np.int64)
    if len(positions) == 0 and len(static) == 0:
        return batch
    spec = batch.spec
    labels = spec.column_labels or spec.feature_names or tuple(range(spec.n_features))
    missing = ~batch.mask[:, :, positions] & batch.row_mask[:, :, None]
    if missing.any():
        raise _missing_inputs(missing, batch, tuple(labels[p] for p in positions), argument)
    constants = _static_values(batch, static, tuple(labels[p] for p in static))
    positions = np.concatenate([positions, static])
    keep = np.setdiff1d(np.arange(spec.n_features), positions)
    input_names = tuple(labels[p] for p in positions)
    states = batch.mask[:, :, keep]
    empty = ~states.any(axis=(1, 2))
    if empty.any():
        raise input_error(
            argument,
            "at least one observed state value (a column other than the inputs) in every series",
            f"{int(empty.sum())} series with inputs only, ids {_show(batch.ids[empty][:_SHOWN_ROWS])}",
            "Drop series without any measured state, or pass their observations.",
        )
    inputs = batch.values[:, :, positions].copy()
    if len(static):
        inputs[:, :, len(positions) - len(static):] = constants[:, None, :]
    for i, n in enumerate(batch.lengths):  # padding repeats each series' last row, as its times do
        inputs[i, n:] = inputs[i, n - 1]
    state_spec = replace(
        spec,
        n_features=len(keep),
        feature_names=None if spec.feature_names is None else tuple(spec.feature_names[j] for j in keep),
        column_labels=None if spec.column_labels is None else tuple(spec.column_labels[j] for j in keep),
    )
    return replace(
        batch,
        values=batch.values[:, :, keep],
        mask=states,
        spec=state_spec,
        inputs=inputs,
        input_names=input_names,
        n_static=len(static),
    )


def _static_values(batch: SeriesBatch, positions: np.ndarray, names: tuple[Any, ...]) -> np.ndarray:
    """Each series' value of the static columns at ``positions``, ``(n_series, n_static)``; refuse the ambiguous."""
    if len(positions) == 0:
        return np.empty((batch.n_series, 0))
    seen = batch.mask[:, :, positions] & batch.row_mask[:, :, None]
    values = np.where(seen, batch.values[:, :, positions], np.nan)
    none = ~seen.any(axis=1)
    if none.any():
        j = int(np.argwhere(none)[0][1])
        count = int(none[:, j].sum())
        raise input_error(
            "static_covariates",
            f"a value of static column {names[j]!r} in every series",
            f"{count} series without any, ids {_show(batch.ids[none[:, j]][:_SHOWN_ROWS])}",
            "Give each series its value (on any of its rows), or drop those series.",
        )
    with np.errstate(invalid="ignore"):
        low, high = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
    varies = ~np.isclose(low, high, rtol=1e-12, atol=0.0)
    if varies.any():
        series, j = np.argwhere(varies)[0]
        raise input_error(
            "static_covariates",
            f"one value of {names[j]!r} per series (a static covariate is constant within a series)",
            f"values from {low[series, j]:.6g} to {high[series, j]:.6g} in series {_show(batch.ids[series])!r}"
            f" ({int(varies[:, j].sum())} series vary)",
            "Name a column that changes over time in covariates= instead, or fix the table.",
        )
    return low


def query_inputs(t: pd.DataFrame, query: QueryTimes, batch: SeriesBatch, argument: str = "t") -> QueryTimes:
    """``query`` with the inputs of the query frame ``t`` at its query times ``(n_series, n_queries, n_inputs)``.

    Each input column of ``batch`` must be a column of ``t`` with a value on
    every row: a forecast under inputs needs them known at the times asked
    for.
    """
    names = (batch.input_names or ())[: _n_varying(batch)]
    absent = [name for name in names if name not in t.columns]
    if absent:
        raise input_error(
            argument,
            f"a query frame with the input column(s) {list(names)} beside the series and time of each row",
            f"no column {absent[0]!r} (columns {list(t.columns)[:10]})",
            "Add the inputs' values at the query times to the query frame: the model is driven by them.",
        )
    values = t[list(names)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = np.flatnonzero(bad[:, j])
        shown = ", ".join(repr(i) for i in list(t.index[rows[:_SHOWN_ROWS]]))
        raise input_error(
            argument,
            f"a finite value of input column {names[j]!r} on every query row",
            f"{len(rows)} missing or non-numeric value(s), at index {shown}{' ...' if len(rows) > _SHOWN_ROWS else ''}",
            "Fill in the inputs at the query times (they are known in advance), or drop those query rows.",
        )
    padded = np.zeros(query.times.shape + (len(names),))
    series, position = np.nonzero(query.mask)
    padded[series, position] = values[np.argsort(query.rows)] if query.rows is not None else values
    # Padded slots repeat each series' last query, as the times do.
    counts = query.mask.sum(axis=1)
    for i, n in enumerate(counts):
        if 0 < n < query.n_queries:
            padded[i, n:] = padded[i, n - 1]
    return replace(query, inputs=np.concatenate([padded, _static_at(query, batch)], axis=-1))


def static_query_inputs(query: QueryTimes, batch: SeriesBatch) -> QueryTimes:
    """``query`` with inputs for a batch whose inputs are all static: each series' constants at every query."""
    return replace(query, inputs=_static_at(query, batch))


def only_static(batch: SeriesBatch) -> bool:
    """Whether every input of ``batch`` is a per-series constant (queries then need no inputs)."""
    return batch.inputs is not None and _n_varying(batch) == 0


def _n_varying(batch: SeriesBatch) -> int:
    return (0 if batch.inputs is None else batch.inputs.shape[-1]) - batch.n_static


def _static_at(query: QueryTimes, batch: SeriesBatch) -> np.ndarray:
    constants = batch.inputs[:, :1, batch.inputs.shape[-1] - batch.n_static:]
    return np.broadcast_to(constants, query.times.shape + (batch.n_static,)).copy()


def own_inputs(query: QueryTimes, batch: SeriesBatch) -> QueryTimes:
    """``query`` at the batch's own times (``check_query_times(None, batch)``) with the batch's inputs."""
    if batch.inputs is None:
        return query
    return replace(query, inputs=batch.inputs.copy())


def refuse_array_queries(batch: SeriesBatch, argument: str = "t") -> None:
    """A model with inputs needs them at the query times, which only a query frame carries."""
    raise input_error(
        argument,
        f"a query frame (series id, time and the input column(s) {list((batch.input_names or ())[: _n_varying(batch)])})"
        " for a model "
        "driven by inputs",
        "query times as an array",
        "Pass a DataFrame of query rows holding the inputs' values at the query times, e.g. the future rows "
        "of your table without the state columns.",
    )


def _missing_inputs(missing: np.ndarray, batch: SeriesBatch, names: Sequence[Any], argument: str) -> Exception:
    j = int(np.flatnonzero(missing.any(axis=(0, 1)))[0])
    series, row = np.nonzero(missing[:, :, j])
    times = batch.spec.time_encoding.decode(batch.times[series, row])
    shown = ", ".join(f"({_show(batch.ids[s])}, {_show(time)})" for s, time in list(zip(series, times))[:_SHOWN_ROWS])
    more = " ..." if len(series) > _SHOWN_ROWS else ""
    return input_error(
        argument,
        f"a value of input column {names[j]!r} at every row (the dynamics read the inputs between observations)",
        f"{len(series)} missing value(s) at (series, time) {shown}{more}",
        "Fill in the measured inputs, or drop those rows; inputs are never filled in for you.",
    )


def _show(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
