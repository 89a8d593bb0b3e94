"""A grid search runs on a Dask cluster through joblib, with the results of a local one and one thread per task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

from sklearn.model_selection import GridSearchCV  # noqa: E402

from dynlearn import NeuralODE  # noqa: E402
from dynlearn.datasets import make_damped_oscillator  # noqa: E402
from dynlearn.metrics import make_forecast_scorer  # noqa: E402
from dynlearn.model_selection import SeriesTimeSplit  # noqa: E402
from dynlearn.training import PARALLEL_WORK, _threads, auto_threads, dask_task_threads  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two single-thread workers as threads of this process: they start in a second, even on two cores."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _search():
    frame = make_damped_oscillator(n_series=4, n_times=30, random_state=0)
    model = NeuralODE(hidden_layer_sizes=(16,), window_size=4, max_epochs=4, random_state=0, device="cpu")
    search = GridSearchCV(
        model, {"learning_rate": [3e-4, 3e-2]}, scoring=make_forecast_scorer(horizon=5),
        cv=SeriesTimeSplit(n_splits=2, horizon=5), n_jobs=2,
    )
    return search, frame


def test_a_grid_search_on_dask_workers_matches_the_local_one(client):
    local, frame = _search()
    local.fit(frame)
    remote, _ = _search()
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        remote.fit(frame)
    assert len(stream.data) >= 4  # the 2 candidates x 2 folds ran as tasks on the workers
    assert remote.best_params_ == local.best_params_
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-6)
    assert local.cv_results_["mean_test_score"][0] != local.cv_results_["mean_test_score"][1]


@pytest.fixture
def eight_idle_cores(monkeypatch):
    """A machine whose eight cores are all free, where "auto" would otherwise take them."""
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(_threads, "other_runnable", lambda: 0)


def _threads_chosen_at_four_caller_threads():
    """What "auto" picks, and what a fit of a model big enough to split records, with torch set to 4 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        frame = make_damped_oscillator(n_series=4, n_times=12, random_state=0)
        wide = NeuralODE(hidden_layer_sizes=(256, 256), batch_size=256, window_size=3, max_epochs=1,
                         random_state=0, device="cpu").fit(frame)
        return auto_threads(PARALLEL_WORK), wide.n_threads_
    finally:
        torch.set_num_threads(before)


def test_a_fit_in_a_dask_task_uses_one_thread_where_it_would_take_the_free_cores(client, eight_idle_cores):
    # Outside Dask the caller's 4 threads are the ceiling; in a task each task slot is one core.
    assert _threads_chosen_at_four_caller_threads() == (4, 4)
    assert client.submit(_threads_chosen_at_four_caller_threads, pure=False).result() == (1, 1)


def test_outside_a_task_the_dask_rule_does_not_apply(client):
    assert dask_task_threads() is None
    assert client.submit(dask_task_threads, pure=False).result() == 1
