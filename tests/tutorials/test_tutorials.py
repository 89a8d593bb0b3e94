"""Tutorials run end to end in their fast mode and write their figures."""

from __future__ import annotations

import runpy
from pathlib import Path

import matplotlib
import pytest


matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
SHARED_DATA = ROOT.parent / "shared" / "data"  # the project's measured data, beside the checkout
PHYSIONET = SHARED_DATA / "physionet2012_seta_slice"
PENDULUM = SHARED_DATA / "lipson_pendulum_real"
MOCAP = SHARED_DATA / "cmu_mocap6"


@pytest.fixture
def fast_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYNLEARN_TUTORIAL_FAST", "1")
    monkeypatch.setenv("DYNLEARN_DATA", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.skipif(not (PHYSIONET.exists() and MOCAP.exists()), reason="needs the project's shared data")
def test_datasets_tour(fast_mode, monkeypatch):
    monkeypatch.setenv("DYNLEARN_PHYSIONET_PATH", str(PHYSIONET))
    monkeypatch.setenv("DYNLEARN_MOCAP6_PATH", str(MOCAP))
    namespace = runpy.run_path(str(TUTORIALS / "datasets_tour.py"), run_name="__main__")
    assert namespace["drift"] < 1e-6
    assert namespace["icu"]["series_id"].nunique() == 400
    assert namespace["motion"].shape == (2058, 14)
    for figure in ("conservative", "predator_prey", "stochastic_chaotic", "physionet", "mocap"):
        assert (fast_mode / f"tour_{figure}.png").stat().st_size > 10_000


@pytest.mark.skipif(not PENDULUM.exists(), reason="needs the real pendulum of the project's shared data")
def test_conserved_quantity(fast_mode, monkeypatch):
    monkeypatch.setenv("DYNLEARN_PENDULUM_PATH", str(PENDULUM))
    namespace = runpy.run_path(str(TUTORIALS / "conserved_quantity.py"), run_name="__main__")
    # The HNN's rollout follows a level set of its learned energy; the baseline's does not.
    assert namespace["hnn_drift"] < 1e-3
    assert namespace["hnn_drift"] < namespace["baseline_drift"]
    for figure in ("landscape", "phase", "rollouts"):
        assert (fast_mode / f"conserved_{figure}.png").stat().st_size > 10_000


def test_forecasting_real_series(fast_mode):
    namespace = runpy.run_path(str(TUTORIALS / "forecasting_real_series.py"), run_name="__main__")
    leaderboard = namespace["leaderboard"]
    # Every default candidate was backtested on the lynx–hare training years, the naive one among them.
    assert set(leaderboard["candidate"]) == {"last_value", "node_delay", "node_encoder", "odernn", "neural_sde"}
    assert (leaderboard["status"] == "ok").all() and (leaderboard["n_folds"] == 3).all()
    assert leaderboard["candidate"].iloc[0] == namespace["auto"].best_name_
    # The chosen model beats persistence on the four held-out years, and the 90% fan holds most of them.
    assert namespace["ratio"] < 1.0
    assert namespace["coverage"] >= 0.5
    assert (fast_mode / "forecasting_fan.png").stat().st_size > 10_000


TANKS = SHARED_DATA / "cascaded_tanks"


@pytest.mark.skipif(not (TANKS.exists() and PHYSIONET.exists()), reason="needs the project's shared data")
def test_systems_with_inputs(fast_mode, monkeypatch):
    monkeypatch.setenv("DYNLEARN_TANKS_PATH", str(TANKS))
    monkeypatch.setenv("DYNLEARN_PHYSIONET_PATH", str(PHYSIONET))
    namespace = runpy.run_path(str(TUTORIALS / "systems_with_inputs.py"), run_name="__main__")
    # Even briefly trained, the pump-driven simulation beats the mean level by far, and its bands hold most of it.
    assert namespace["ours"] < 0.5 * namespace["naive"]
    assert namespace["coverage"] > 0.5
    assert set(namespace["aucs"]) == {"without", "with descriptors"}
    assert all(0.5 < auc <= 1.0 for auc in namespace["aucs"].values())
    assert (fast_mode / "inputs_cascaded_tanks.png").stat().st_size > 10_000
