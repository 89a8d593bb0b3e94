"""Fitting on a Parquet dataset a chunk of whole series at a time, and partial_fit."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")

from dynlearn import (HamiltonianNN, LatentODE, LatentODEClassifier, LatentSDE, NeuralCDE, NeuralCDEClassifier,
                      NeuralODE, NeuralSDE, ODERNN, ODERNNClassifier)
from dynlearn.data import ID_COLUMN, TIME_COLUMN, ParquetSeries
from dynlearn.datasets import make_damped_oscillator
from dynlearn.exceptions import ConvergenceWarning, InputError

TINY = dict(hidden_layer_sizes=(8,), max_epochs=3, batch_size=16, random_state=0)


@pytest.fixture(scope="module")
def frame():
    return make_damped_oscillator(n_series=12, n_times=30, random_state=0)


@pytest.fixture(scope="module")
def path(frame, tmp_path_factory):
    # Row groups of 7 rows: every series of 30 rows spans several of them.
    target = tmp_path_factory.mktemp("parquet") / "series.parquet"
    frame.to_parquet(target, row_group_size=7)
    return target


def _weights(model):
    return [p.detach().numpy().copy() for p in model.module_.parameters()]


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def test_one_chunk_gives_the_in_memory_model(frame, path):
    memory = _fit(NeuralODE(**TINY), frame)
    streamed = _fit(NeuralODE(**TINY), str(path))  # the default chunk holds all 12 series
    for a, b in zip(_weights(memory), _weights(streamed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(memory.history_.to_frame().drop(columns="duration"),
                                  streamed.history_.to_frame().drop(columns="duration"))
    for name in ("mean_", "scale_", "data_min_", "data_max_"):
        np.testing.assert_allclose(getattr(memory, name), getattr(streamed, name), rtol=1e-12)
    assert streamed.time_scale_ == pytest.approx(memory.time_scale_)
    assert streamed.window_size_ == memory.window_size_
    np.testing.assert_allclose(memory.predict(frame), streamed.predict(frame), atol=1e-5)


def test_several_chunks_train_on_the_same_windows_and_hold_out_the_same_series(frame, path):
    # With a vanishing learning rate the weights stay put, so an epoch's losses are the means over its windows:
    # equal losses mean the chunks together hold exactly the in-memory training and validation windows.
    settings = dict(TINY, max_epochs=1, learning_rate=1e-12, window_size=6)
    memory = _fit(NeuralODE(**settings), frame)
    streamed = _fit(NeuralODE(**settings), ParquetSeries(path, chunk_size=5))
    a, b = memory.history_[-1], streamed.history_[-1]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-5)
    np.testing.assert_allclose(memory.scale_, streamed.scale_, rtol=1e-12)


def test_several_chunks_learn_like_the_in_memory_fit(frame, path):
    settings = dict(TINY, window_size=6, max_epochs=4)
    memory = _fit(NeuralODE(**settings), frame)
    streamed = _fit(NeuralODE(**settings), ParquetSeries(path, chunk_size=5))
    # Minibatches do not cross chunks and come in another order: close, not equal.
    assert any(not np.allclose(a, b) for a, b in zip(_weights(memory), _weights(streamed)))
    assert streamed.history_[-1]["valid_loss"] == pytest.approx(memory.history_[-1]["valid_loss"], rel=0.5)
    assert streamed.history_[-1]["valid_loss"] < streamed.history_[0]["valid_loss"]


def test_chunks_hold_whole_series_spanning_row_groups(frame, path):
    source = ParquetSeries(path, chunk_size=5)
    assert len(source.pieces) > source.n_chunks  # series cross row-group boundaries
    assert source.n_chunks == 3
    seen = []
    for k in range(source.n_chunks):
        chunk = source.read_frame(k)
        ids = list(pd.unique(chunk[ID_COLUMN]))
        seen += ids
        pd.testing.assert_frame_equal(chunk.reset_index(drop=True),
                                      frame[frame[ID_COLUMN].isin(ids)].reset_index(drop=True))
    assert seen == list(range(12))


def test_a_directory_of_files_and_a_dataset_object(frame, tmp_path):
    import pyarrow.dataset as ds

    # A series split across two files still comes back whole.
    frame.iloc[:200].to_parquet(tmp_path / "part-0.parquet")
    frame.iloc[200:].to_parquet(tmp_path / "part-1.parquet")
    for source in (tmp_path, ds.dataset(tmp_path, format="parquet")):
        series = ParquetSeries(source, chunk_size=4)
        np.testing.assert_array_equal(series.lengths, np.full(12, 30))


def test_interleaved_series_are_refused(frame, tmp_path):
    target = tmp_path / "shuffled.parquet"
    frame.sort_values([TIME_COLUMN, ID_COLUMN]).to_parquet(target)
    with pytest.raises(InputError, match="contiguous.*sorted by 'series_id'"):
        NeuralODE(**TINY).fit(target)


def test_missing_id_column_is_named(frame, tmp_path):
    target = tmp_path / "no_id.parquet"
    frame.rename(columns={ID_COLUMN: "unit"}).to_parquet(target)
    with pytest.raises(InputError, match="without \\['series_id'\\]"):
        NeuralODE(**TINY).fit(target)


def test_models_that_do_not_stream_say_so(path):
    with pytest.raises(InputError, match="HamiltonianNN does not train from a Parquet dataset.*read_parquet.*"
                                         "LatentODE, LatentSDE, NeuralCDE, NeuralODE, NeuralSDE, ODERNN, which "
                                         "stream"):
        HamiltonianNN(max_epochs=1).fit(path)
    # A classifier built on a streaming model needs labels with the series in memory.
    with pytest.raises(InputError, match="ODERNNClassifier does not train from a Parquet dataset"):
        ODERNNClassifier(max_epochs=1).fit(path, np.arange(12) % 2)
    for classifier in (ODERNNClassifier, LatentODEClassifier, NeuralCDEClassifier):
        assert not hasattr(classifier(), "partial_fit")


def test_times_and_checkpoints_are_refused_with_a_dataset(path, tmp_path):
    with pytest.raises(InputError, match="^t: expected None"):
        NeuralODE(**TINY).fit(path, t=np.arange(30))
    with pytest.raises(InputError, match="^checkpoint: expected None"):
        NeuralODE(**TINY, checkpoint=tmp_path / "ckpt").fit(path)


def test_missing_pyarrow_names_the_extra(path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.dataset", None)
    with pytest.raises(InputError, match=r"dynlearn\[parquet\]"):
        NeuralODE(**TINY).fit(path)


def test_dynlearn_imports_and_fits_without_pyarrow():
    # pandas imports pyarrow itself when it is installed, so the check blocks it instead.
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "import numpy as np, dynlearn, dynlearn.data\n"
        "dynlearn.NeuralODE(hidden_layer_sizes=(), max_epochs=1).fit(np.zeros((2, 5, 1)))\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_partial_fit_continues_on_two_halves(frame, path):
    first, second = frame[frame[ID_COLUMN] < 6], frame[frame[ID_COLUMN] >= 6]
    model = NeuralODE(**dict(TINY, window_size=6))
    model.partial_fit(first)
    scaling = model.mean_.copy()
    losses, weights = [model.history_[-1]["train_loss"]], [_weights(model)]
    for _ in range(4):
        model.partial_fit(second).partial_fit(first)
        losses.append(model.history_[-1]["train_loss"])
        weights.append(_weights(model))
    assert model.n_epochs_ == len(model.history_) == 9
    assert [r["epoch"] for r in model.history_] == list(range(1, 10))
    np.testing.assert_array_equal(model.mean_, scaling)  # scaling stays that of the first call
    assert losses[-1] < 0.5 * losses[0]
    assert all(any(not np.array_equal(a, b) for a, b in zip(w0, w1)) for w0, w1 in zip(weights, weights[1:]))
    model.partial_fit(ParquetSeries(path, chunk_size=4))  # a dataset too, one epoch over its chunks
    assert model.n_epochs_ == 10


def test_partial_fit_refuses_other_columns(frame):
    model = NeuralODE(**TINY).partial_fit(frame)
    before = _weights(model)
    with pytest.raises(InputError, match="features"):
        model.partial_fit(frame.drop(columns="p"))
    assert model.n_epochs_ == 1  # the failed call left the model as it was
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_auto_batch_size_counts_the_examples_of_every_chunk(frame, path):
    settings = dict(TINY, max_epochs=1, batch_size="auto", window_size=6)
    memory = _fit(NeuralODE(**settings), frame)
    streamed = _fit(NeuralODE(**settings), ParquetSeries(path, chunk_size=5))
    assert streamed.batch_size_ == memory.batch_size_


# ------------------------------------------------ the other streaming estimators
# Small settings each; fixed-step solvers, so a minibatch's losses do not depend on which series share it.
OTHERS = {
    LatentSDE: dict(latent_dim=2, context_dim=4, hidden_layer_sizes=(8,), encoder_hidden_size=8,
                    diffusion_hidden_size=4, n_samples_predict=4, window_size=8, batch_size=8),
    LatentODE: dict(latent_dim=3, encoder_dim=6, encoder_layer_sizes=(8,), ode_layer_sizes=(8,), solver="rk4",
                    refine_steps=2, batch_size=5),
    ODERNN: dict(hidden_dim=4, batch_size=5),
    NeuralSDE: dict(hidden_layer_sizes=(8,), batch_size=16),
    NeuralCDE: dict(hidden_dim=4, hidden_layer_sizes=(8,), history_length=6, batch_size=16),
}
SHARED = dict(max_epochs=3, random_state=0, validation_fraction=0.25)


@pytest.fixture(scope="module")
def ragged(frame, tmp_path_factory):
    """Series of 30 and of 21 rows: whole-series minibatches are padded to their longest series."""
    shorter = frame[~((frame[ID_COLUMN] % 3 == 0) & (frame[TIME_COLUMN] > 20))].reset_index(drop=True)
    target = tmp_path_factory.mktemp("ragged") / "series.parquet"
    shorter.to_parquet(target, row_group_size=7)
    return shorter, target


def _numbers(frame):
    return frame.drop(columns=[ID_COLUMN, TIME_COLUMN]).to_numpy()


@pytest.mark.parametrize("estimator", list(OTHERS), ids=lambda e: e.__name__)
def test_one_chunk_gives_the_in_memory_model_of_each_streaming_estimator(estimator, ragged):
    frame, target = ragged
    settings = dict(SHARED, **OTHERS[estimator])
    memory = _fit(estimator(**settings), frame)
    streamed = _fit(estimator(**settings), target)  # the default chunk holds all 12 series
    for a, b in zip(_weights(memory), _weights(streamed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(memory.history_.to_frame().drop(columns="duration"),
                                  streamed.history_.to_frame().drop(columns="duration"))
    assert streamed.time_scale_ == pytest.approx(memory.time_scale_)
    np.testing.assert_allclose(memory.scale_, streamed.scale_, rtol=1e-12)
    np.testing.assert_allclose(_numbers(memory.predict(frame)), _numbers(streamed.predict(frame)), atol=1e-5)


# LatentSDE validates on draws of its training noise stream, which depend on the minibatches before: not here.
@pytest.mark.parametrize("estimator", [LatentODE, ODERNN, NeuralSDE, NeuralCDE], ids=lambda e: e.__name__)
def test_several_chunks_validate_on_the_in_memory_examples(estimator, ragged):
    # With a vanishing learning rate the weights stay put: an equal validation loss means the chunks together
    # hold the in-memory validation examples, padded differently only where masked, with the same fixed draws.
    frame, target = ragged
    settings = dict(SHARED, **OTHERS[estimator], max_epochs=1, learning_rate=1e-12)
    memory = _fit(estimator(**settings), frame)
    streamed = _fit(estimator(**settings), ParquetSeries(target, chunk_size=5))
    assert streamed.history_[-1]["valid_loss"] == pytest.approx(memory.history_[-1]["valid_loss"], rel=1e-5)
    assert streamed.history_[-1]["train_loss"] == pytest.approx(memory.history_[-1]["train_loss"], rel=1e-2)
    if estimator is LatentODE:  # estimated on the held-out series, read a chunk at a time
        np.testing.assert_allclose(streamed.noise_std_, memory.noise_std_, rtol=1e-5)


@pytest.mark.parametrize("estimator", list(OTHERS), ids=lambda e: e.__name__)
def test_several_chunks_train_and_predict(estimator, ragged):
    frame, target = ragged
    model = _fit(estimator(**SHARED, **OTHERS[estimator]), ParquetSeries(target, chunk_size=4))
    assert model.n_epochs_ == 3
    assert np.isfinite(_numbers(model.predict(frame))).all()


@pytest.mark.parametrize("estimator", list(OTHERS), ids=lambda e: e.__name__)
def test_partial_fit_of_each_streaming_estimator_continues(estimator, ragged):
    frame, target = ragged
    model = estimator(**SHARED, **OTHERS[estimator])
    steps = []  # Adam's step count: it goes on from call to call where the optimiser state is kept
    for part in (frame[frame[ID_COLUMN] < 6], frame[frame[ID_COLUMN] >= 6], ParquetSeries(target, chunk_size=5)):
        model.partial_fit(part)
        steps.append(int(model._optimizer_state["state"][0]["step"]))
        if len(steps) == 1:
            scale = model.scale_.copy()
    assert model.n_epochs_ == len(model.history_) == 3
    assert [r["epoch"] for r in model.history_] == [1, 2, 3]
    np.testing.assert_array_equal(model.scale_, scale)  # the scaling of the first call
    assert steps[1] == 2 * steps[0] and steps[2] > steps[1]  # the two halves take as many steps each
    before = _weights(model)
    with pytest.raises(InputError, match="features"):
        model.partial_fit(frame.drop(columns="p"))
    assert model.n_epochs_ == 3
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_intervals_after_a_streamed_fit_ask_for_calibration_on_series_in_memory(frame, path):
    """A streamed fit keeps no held-out series in memory to calibrate on: the error says so, and calibrate works."""
    model = _fit(NeuralODE(**TINY), str(path))
    with pytest.raises(InputError, match="Parquet stream.*calibrate"):
        model.predict_interval(frame)
    model.calibrate(make_damped_oscillator(n_series=4, n_times=30, random_state=1))
    lower, upper = model.predict_interval(frame)
    assert (np.asarray(lower) <= np.asarray(upper)).all()
