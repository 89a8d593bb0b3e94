"""speed_vs_peers at a tiny size: every family's rows are written, ratios are finite and positive, and the
hand-written loops train the same model as dynlearn (same losses where training is deterministic)."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import speed_vs_peers
from harness import Environment, write_results

from dynlearn.bench import BenchContext

TINY = {"tiny": ((8,), 16)}
FAMILIES = ["neural_ode", "hamiltonian", "lagrangian", "neural_sde", "latent_sde", "neural_ode_irregular_torchode",
            "neural_ode_driven_held", "neural_ode_driven_linear"]


@pytest.fixture(scope="module")
def records():
    context = BenchContext(quick=True, device=torch.device("cpu"), seconds_per_comparison=0.0, repeats=2)
    # No back-to-back blocks (one iteration is a block): the two sides' training, equal up to round-off, is compared
    # after the same few iterations; the blocks are tested on their own below.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(speed_vs_peers, "BLOCK_SECONDS", 0.0)
        return speed_vs_peers.peers(context, sizes=TINY, iterations=2, families=FAMILIES)


def _values(records) -> dict[str, float]:
    return {record.metric: record.value for record in records}


def test_every_family_has_its_rows_and_finite_positive_ratios(records):
    values = _values(records)
    assert values["torch_threads"] == 1
    for family in FAMILIES:
        if family.endswith("torchode") and importlib.util.find_spec("torchode") is None:
            assert values[f"{family}.skipped"] == 1
            continue
        prefix = f"{family}.tiny"
        ratio = values[f"{prefix}.ratio_dynlearn_over_peer"]
        assert math.isfinite(ratio) and ratio > 0
        assert values[f"{prefix}.rounds"] == 2
        # counted, warm-up, timed rounds, back-to-back blocks (2 timed and a warm-up, where a block is more than
        # one iteration), profiled; then 2 more
        block = values[f"{prefix}.iterations_per_block"]
        blocks = 3 * block if block > 1 else 0
        assert values[f"{prefix}.iterations_trained"] == 2 + 2 + blocks + speed_vs_peers.PROFILED + 2
        back_to_back = values[f"{prefix}.ratio_back_to_back"]
        assert math.isfinite(back_to_back) and back_to_back > 0 and block >= 1
        floor = values[f"{prefix}.ratio_floor_matrix_products_only"]
        assert 0 < floor <= values[f"{prefix}.ratio_floor_products_and_activations"]
        for who in ("dynlearn", "peer"):
            assert values[f"{prefix}.seconds_per_iteration.{who}"] > 0
            assert values[f"{prefix}.seconds_per_iteration_back_to_back.{who}"] > 0
            assert values[f"{prefix}.matrix_products_per_iteration.{who}"] >= 1
            assert values[f"{prefix}.matrix_product_seconds_per_iteration.{who}"] > 0
            assert values[f"{prefix}.evaluations_per_iteration.{who}"] >= 1
            assert math.isfinite(values[f"{prefix}.final_loss.{who}"])
            assert values[f"{prefix}.final_loss_range.{who}"] >= 0  # spread of the points final_loss averages


def test_the_hand_written_loops_train_the_same_model(records):
    values = _values(records)
    # Deterministic training from the same weights on the same minibatches: the same loss up to round-off.
    for family in ("neural_ode", "hamiltonian", "lagrangian", "neural_sde"):
        ours, theirs = (values[f"{family}.tiny.final_loss.{who}"] for who in ("dynlearn", "peer"))
        assert ours == pytest.approx(theirs, rel=1e-3)
        evaluations = (values[f"{family}.tiny.evaluations_per_iteration.{who}"] for who in ("dynlearn", "peer"))
        assert len(set(evaluations)) == 1
    # The SDE's Euler steps: 49 unit gaps at dt 0.25, one posterior drift per step on both sides (within one).
    sde = [values[f"latent_sde.tiny.evaluations_per_iteration.{who}"] for who in ("dynlearn", "peer")]
    assert all(196 <= count <= 200 for count in sde)
    # Driven: the same model from the same weights, both ending a dopri5 step (6 evaluations) on each of a
    # 16-row window's 15 gaps at least (dynlearn's segment clock, the loop's jump_t); the loop that steps across
    # the samples solves less accurately.
    for family in ("neural_ode_driven_held", "neural_ode_driven_linear"):
        ours, theirs = (values[f"{family}.tiny.final_loss.{who}"] for who in ("dynlearn", "peer"))
        assert ours == pytest.approx(theirs, rel=0.05)
        evaluations = [values[f"{family}.tiny.evaluations_per_iteration.{who}"] for who in ("dynlearn", "peer")]
        assert min(evaluations) >= 6 * 15 + 2 and abs(evaluations[0] - evaluations[1]) <= 6
        assert values[f"{family}.tiny.solve_error.naive"] > 3 * values[f"{family}.tiny.solve_error.peer"]


def test_back_to_back_blocks_time_consecutive_iterations_of_each_side(monkeypatch):
    order = []

    def side(who: str, seconds: float) -> speed_vs_peers.Side:
        def iteration() -> float:
            order.append(who)
            time.sleep(seconds)
            return 0.0
        return speed_vs_peers.Side(iteration, lambda: 1, lambda: 0.0)

    sides = {"dynlearn": side("dynlearn", 0.002), "peer": side("peer", 0.004)}
    context = BenchContext(quick=True, device=torch.device("cpu"), seconds_per_comparison=0.0, repeats=2)
    monkeypatch.setattr(speed_vs_peers, "BLOCK_SECONDS", 0.008)
    records, done = speed_vs_peers._back_to_back("x", sides, {"dynlearn": [0.002], "peer": [0.004]}, [0.5], context)
    values = _values(records)
    assert values["x.iterations_per_block"] == 4 and done == 3 * 4  # a warm-up block and two timed ones
    assert order == (["dynlearn"] * 4 + ["peer"] * 4) * 3
    assert values["x.seconds_per_iteration_back_to_back.dynlearn"] == pytest.approx(0.002, rel=0.5)
    assert values["x.ratio_back_to_back"] == pytest.approx(0.5, rel=0.4)
    # An iteration as long as a block: the interleaved rounds' figures, no more timing.
    order.clear()
    records, done = speed_vs_peers._back_to_back("x", sides, {"dynlearn": [0.01], "peer": [0.02]}, [0.5], context)
    values = _values(records)
    assert not order and done == 0 and values["x.iterations_per_block"] == 1
    assert values["x.ratio_back_to_back"] == 0.5 and values["x.seconds_per_iteration_back_to_back.peer"] == 0.02


def test_the_rows_reach_the_csv(records, tmp_path):
    context = BenchContext(quick=True, device=torch.device("cpu"), seconds_per_comparison=0.0, repeats=2)
    table, report = write_results(records, Environment.detect(context), {"speed_vs_peers": 1.0}, tmp_path, "test")
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"benchmark", "metric", "value", "unit", "torch_threads"} <= set(rows[0])
    assert {row["benchmark"] for row in rows} == {"speed_vs_peers"}
    assert any(row["metric"] == "neural_ode.tiny.ratio_dynlearn_over_peer" for row in rows)
    assert "ratio_dynlearn_over_peer" in report.read_text()


def test_without_a_checkout_the_authors_rows_say_what_to_set(monkeypatch):
    monkeypatch.delenv("DYNLEARN_AUTHORS_LATENT_ODE", raising=False)
    context = BenchContext(quick=True, device=torch.device("cpu"), seconds_per_comparison=0.0, repeats=1)
    (record,) = speed_vs_peers.authors_rows(context)
    assert record.metric == "authors.skipped" and "DYNLEARN_AUTHORS_LATENT_ODE" in record.unit


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_both_sides_are_built_there_and_the_cpu_floors_are_left_out():
    context = BenchContext(quick=True, device=torch.device("cuda"), seconds_per_comparison=0.0, repeats=2)
    values = _values(speed_vs_peers.peers(context, sizes=TINY, iterations=2, families=["neural_ode", "hamiltonian"]))
    for family in ("neural_ode", "hamiltonian"):
        assert math.isfinite(values[f"{family}.tiny.ratio_dynlearn_over_peer"])
        assert f"{family}.tiny.ratio_floor_matrix_products_only" not in values  # CPU self time is launch time there
        ours, theirs = (values[f"{family}.tiny.final_loss.{who}"] for who in ("dynlearn", "peer"))
        assert ours == pytest.approx(theirs, rel=1e-2)
