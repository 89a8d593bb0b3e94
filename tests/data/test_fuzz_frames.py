"""Generated frames of every shape users bring: the only error allowed is a documented InputError.

Ids, times, values, NaN patterns and dtypes are drawn at random, including
the malformed ones (duplicate rows, inf, text, series with nothing observed,
times of the wrong kind). Whatever comes in, validation and a fitted model's
``predict`` either answer or raise :class:`dynlearn.exceptions.InputError`;
and ``predict`` does not depend on the order of the rows.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynlearn import NeuralODE
from dynlearn.data import check_series
from dynlearn.exceptions import InputError

# The test suite draws 1,500 frames; .ci/run draws 10,000 (8,000 through validation, 2,000 through
# a fitted model's predict) with DYNLEARN_FUZZ_VALIDATION=8000 DYNLEARN_FUZZ_PREDICT=2000.
N_VALIDATION = int(os.environ.get("DYNLEARN_FUZZ_VALIDATION", 1200))
N_PREDICT = int(os.environ.get("DYNLEARN_FUZZ_PREDICT", 300))
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)

value = st.one_of(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64),
    st.just(np.nan),
    st.sampled_from([np.inf, -np.inf, 0.0, 1e300]),
)


@st.composite
def times_of(draw, kind: str, n: int) -> list:
    steps = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n, unique=draw(st.booleans())))
    if kind == "int":
        return steps
    if kind == "float":
        return [s / 4.0 for s in steps]
    if kind == "datetime":
        return list(pd.Timestamp("2024-01-01") + pd.to_timedelta(steps, unit="h"))
    if kind == "timedelta":
        return list(pd.to_timedelta(steps, unit="min"))
    if kind == "nan":
        return [np.nan if i == 0 else float(s) for i, s in enumerate(steps)]
    return [f"t{s}" for s in steps]  # text times


@st.composite
def frames(draw, *, features: tuple[str, ...] | None = None, time_kinds=None, clean: bool = False) -> pd.DataFrame:
    """A long frame in one of the accepted layouts, possibly malformed unless ``clean``."""
    kinds = time_kinds or ["int", "float", "datetime", "timedelta", "nan", "text"]
    time_kind = draw(st.sampled_from(kinds))
    names = features or tuple(f"x{j}" for j in range(draw(st.integers(1, 3))))
    id_kind = draw(st.sampled_from(["int", "str", "category"]))
    n_series = draw(st.integers(1, 4))
    rows = []
    for i in range(n_series):
        n = draw(st.integers(1, 6))
        times = draw(times_of(time_kind, n))
        for time in times:
            values = [draw(value) for _ in names]
            if clean:
                values = [v if np.isnan(v) or abs(v) < 1e4 else 1.0 for v in values]
            rows.append([i if id_kind == "int" else f"s{i}", time, *values])
    frame = pd.DataFrame(rows, columns=["series_id", "time", *names])
    if id_kind == "category":
        frame["series_id"] = frame["series_id"].astype("category")
    dtype = draw(st.sampled_from(["float64", "float32", "object", "int"]))
    for name in names:
        if dtype == "object":
            frame[name] = frame[name].astype(object)
        elif dtype == "float32":
            with np.errstate(over="ignore"):
                frame[name] = frame[name].astype("float32")
        elif dtype == "int" and frame[name].notna().all() and np.isfinite(frame[name]).all():
            frame[name] = frame[name].round().astype("int64")
    if not clean and draw(st.booleans()):
        frame[names[0]] = frame[names[0]].astype(object)
        frame.loc[frame.index[0], names[0]] = "text"
    layout = draw(st.sampled_from(["columns", "multiindex", "time_index"]))
    if layout == "multiindex":
        frame = frame.set_index(["series_id", "time"])
    elif layout == "time_index":
        frame = frame[frame["series_id"] == frame["series_id"].iloc[0]].drop(columns="series_id").set_index("time")
    order = draw(st.permutations(range(len(frame))))
    return frame.iloc[order]


@settings(max_examples=N_VALIDATION, **FUZZ)
@given(frames())
def test_validation_answers_or_raises_an_input_error(frame):
    try:
        batch = check_series(frame)
    except InputError as error:
        assert str(error).strip(), "an InputError must say what is wrong"
        return
    assert batch.mask.any(axis=(1, 2)).all(), "every series kept must have an observation"
    assert np.isfinite(batch.values[batch.mask]).all()
    assert not np.isnan(batch.values).any(), "NaN must become a mask entry, never a value"
    assert np.isfinite(batch.times).all()


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    times = np.linspace(0.0, 6.0, 12)
    rows = [[i, t, np.sin(t + i), np.cos(t + i) + 0.1 * rng.normal()] for i in range(4) for t in times]
    frame = pd.DataFrame(rows, columns=["series_id", "time", "a", "b"])
    return NeuralODE(hidden_layer_sizes=(8,), max_epochs=1, solver="rk4", random_state=0, device="cpu").fit(frame)


@settings(max_examples=N_PREDICT, **FUZZ)
@given(frame=frames(features=("a", "b"), time_kinds=["int", "float"], clean=True), data=st.data())
def test_predict_answers_or_raises_an_input_error_and_ignores_row_order(fitted, frame, data):
    try:
        predicted = fitted.predict(frame)
    except InputError:
        return
    assert np.isfinite(predicted[["a", "b"]].to_numpy(dtype=float)).all()
    shuffled = frame.iloc[data.draw(st.permutations(range(len(frame))))]
    again = fitted.predict(shuffled)

    def key(out):
        rows = out.reset_index()
        return rows.sort_values([c for c in ("series_id", "time") if c in rows.columns])

    np.testing.assert_allclose(key(again)[["a", "b"]].to_numpy(), key(predicted)[["a", "b"]].to_numpy(), atol=1e-5)
