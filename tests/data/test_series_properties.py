"""Properties of the series container that must hold for any input."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

from dynlearn.data import batch_to_user_kind, check_series, masked_mean_scale

FAST = settings(max_examples=30, deadline=None)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)
entry = st.one_of(st.just(np.nan), finite)


@st.composite
def long_frames(draw) -> pd.DataFrame:
    """Long frames of 1-4 series of unequal length, NaN anywhere, rows shuffled.

    Every series keeps at least one observation; integer times stay integers.
    """
    n_series = draw(st.integers(1, 4))
    n_features = draw(st.integers(1, 3))
    integer_times = draw(st.booleans())
    ids = draw(st.lists(st.integers(-1000, 1000), min_size=n_series, max_size=n_series, unique=True))
    rows = []
    for series_id in ids:
        steps = draw(st.lists(st.integers(-40, 40), min_size=1, max_size=6, unique=True))
        values = draw(st.lists(st.lists(entry, min_size=n_features, max_size=n_features), min_size=len(steps),
                               max_size=len(steps)))
        if np.isnan(values).all():
            values[0][0] = 1.0
        for step, row in zip(steps, values):
            rows.append([series_id, step if integer_times else step / 4.0, *row])
    columns = ["series_id", "time", *(f"f{j}" for j in range(n_features))]
    frame = pd.DataFrame(rows, columns=columns).astype({f"f{j}": np.float64 for j in range(n_features)})
    order = draw(st.permutations(range(len(frame))))
    return frame.iloc[order].reset_index(drop=True)


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["series_id", "time"], ignore_index=True)


@FAST
@given(long_frames())
def test_long_frame_round_trip_is_the_identity_up_to_row_order(frame):
    out = batch_to_user_kind(check_series(frame))
    pd.testing.assert_frame_equal(sorted_rows(out), sorted_rows(frame))


@FAST
@given(long_frames(), st.data())
def test_reordering_and_relabelling_series_permutes_the_container(frame, data):
    old_ids = list(pd.unique(frame["series_id"]))
    new_order = data.draw(st.permutations(old_ids))
    labels = data.draw(st.permutations([f"unit-{k}" for k in range(len(old_ids))]))
    relabel = dict(zip(old_ids, labels))
    moved = pd.concat([frame[frame["series_id"] == i] for i in new_order]).assign(
        series_id=lambda f: f["series_id"].map(relabel)
    )

    before, after = check_series(frame), check_series(moved)

    assert after.ids.tolist() == [relabel[i] for i in new_order]
    where = [after.ids.tolist().index(relabel[i]) for i in before.ids]
    assert_array_equal(after.values[where], before.values)
    assert_array_equal(after.mask[where], before.mask)
    assert_array_equal(after.times[where], before.times)
    assert_array_equal(after.lengths[where], before.lengths)


panels = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5),
    elements=entry,
).filter(lambda a: (~np.isnan(a)).any(axis=(1, 2)).all())

garbage = st.floats(allow_nan=True, allow_infinity=True, width=64)


@FAST
@given(panels, st.data())
@pytest.mark.filterwarnings("error")
def test_values_under_the_mask_change_nothing(panel, data):
    batch = check_series(panel)
    assert (batch.values[~batch.mask] == 0.0).all()

    noise = data.draw(hnp.arrays(np.float64, panel.shape, elements=garbage))
    dirty = replace(batch, values=np.where(batch.mask, batch.values, noise))

    for got, want in zip(masked_mean_scale(dirty.values, dirty.mask), masked_mean_scale(batch.values, batch.mask)):
        assert_array_equal(got, want)
    assert_array_equal(dirty.filled_values(), batch.filled_values())


# Multiples of 1/8 keep every non-constant feature's spread far above
# rounding, so "constant" is unambiguous.
grid = st.one_of(st.just(np.nan), st.integers(-8000, 8000).map(lambda k: k / 8.0))


@FAST
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6), elements=grid))
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:Degrees of freedom")
def test_masked_mean_scale_matches_nanmean_and_nanstd(values):
    mask = ~np.isnan(values)
    mean, scale = masked_mean_scale(np.nan_to_num(values), mask)

    axes = tuple(range(values.ndim - 1))
    seen = mask.any(axis=axes)
    want_mean = np.where(seen, np.nanmean(values, axis=axes), 0.0)
    want_std = np.nanstd(values, axis=axes)
    want_scale = np.where(seen & (want_std > 0), want_std, 1.0)
    assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-9)
    assert_allclose(scale, want_scale, rtol=1e-9)


@pytest.mark.parametrize("level", [0.0, 1e-3, -7.25, 0.1, 123456.789, 3.3e15])
def test_masked_mean_scale_gives_unit_scale_to_constant_features(level):
    values = np.full((4, 50, 2), level)
    values[..., 1] = np.linspace(-1.0, 1.0, 50)
    mask = np.ones(values.shape, dtype=bool)
    mask[0, :10] = False
    mean, scale = masked_mean_scale(values, mask)
    assert scale[0] == 1.0
    assert_allclose(mean[0], level)
    assert scale[1] != 1.0


def test_masked_mean_scale_of_a_never_observed_feature_is_zero_and_one():
    values = np.arange(12.0).reshape(2, 3, 2)
    mask = np.zeros(values.shape, dtype=bool)
    mask[..., 0] = True
    mean, scale = masked_mean_scale(values, mask)
    assert (mean[1], scale[1]) == (0.0, 1.0)
    assert_allclose((mean[0], scale[0]), (np.mean(values[..., 0]), np.std(values[..., 0])))
