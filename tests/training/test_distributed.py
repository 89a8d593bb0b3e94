"""Data-parallel fits under torchrun (two gloo processes on the CPU) equal the single-process fit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dynlearn.training._distributed as distributed

SCRIPT = Path(__file__).with_name("distributed_fit.py")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], out: Path) -> dict[int, dict[str, np.ndarray]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {int(p.stem[4:]): dict(np.load(p)) for p in sorted(out.glob("rank*.npz"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    for name in ("one", "two", "ck_one", "ck_two"):
        (root / name).mkdir()
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(SCRIPT), str(root / "two"), str(root / "ck_two"),
    ]  # fmt: skip
    two = _run(torchrun, root / "two")
    one = _run([sys.executable, str(SCRIPT), str(root / "one"), str(root / "ck_one")], root / "one")
    return one[0], two, root


def test_every_process_ends_with_the_same_model(runs):
    _, two, _ = runs
    assert sorted(two) == [0, 1]
    for key in ("neural_ode_prediction", "latent_ode_prediction", "unseeded_prediction", "latent_ode_history"):
        np.testing.assert_array_equal(two[0][key], two[1][key], err_msg=key)


@pytest.mark.parametrize("model", ["neural_ode", "latent_ode"])
def test_two_processes_fit_what_one_process_fits(runs, model):
    one, two, _ = runs
    np.testing.assert_allclose(two[0][f"{model}_prediction"], one[f"{model}_prediction"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(two[0][f"{model}_history"], one[f"{model}_history"], rtol=1e-9)


def test_only_rank_zero_writes_the_checkpoint(runs):
    _, two, root = runs
    assert bool(two[0]["main"]) and not bool(two[1]["main"])
    assert int(two[0]["checkpoint_writes"]) > 0 and int(two[1]["checkpoint_writes"]) == 0
    assert [p.name for p in (root / "ck_two").iterdir()] == ["checkpoint.pt"]


def test_only_rank_zero_writes_the_csv_log(runs):
    _, _, root = runs
    assert not (root / "two" / "history1.csv").exists()
    assert len((root / "two" / "history0.csv").read_text().splitlines()) == 1 + 3  # header and three epochs


def test_shares_of_a_batch_cover_it_once_and_differ_by_one_at_most():
    for world_size in (2, 3, 4):
        for n in range(1, 12):
            groups = [distributed.DataParallel.__new__(distributed.DataParallel) for _ in range(world_size)]
            shares = []
            for rank, group in enumerate(groups):
                group.rank, group.world_size = rank, world_size
                shares.append(list(range(n))[group.rows(n)])
            assert sum(shares, []) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_draw_rows_gives_a_share_the_rows_of_the_whole_batch_draw():
    draw = lambda n: torch.randn((2, n, 3), generator=torch.Generator().manual_seed(0))  # noqa: E731
    whole = draw(5)
    data = {"x": torch.arange(10.0)[:, None]}
    with distributed.sharded(data, torch.tensor([9, 1, 4, 7, 0]), slice(2, 5)):
        share = distributed.draw_rows(draw, 3, dim=1)
        assert distributed.whole_batch(data)["x"].ravel().tolist() == [9.0, 1.0, 4.0, 7.0, 0.0]
    torch.testing.assert_close(share, whole[:, 2:5])
    assert distributed.current_shard() is None
    torch.testing.assert_close(distributed.draw_rows(draw, 5, dim=1), whole)
