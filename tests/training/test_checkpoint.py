"""Checkpoint files: atomic writes, a full disk, resuming the loop with its random streams and callbacks."""

from __future__ import annotations

import errno
import warnings

import pytest
import torch
from torch import nn

from dynlearn import InputError
from dynlearn.exceptions import CheckpointWarning
from dynlearn.training import Callback, Checkpoint, StepDecay, train
from dynlearn.training._checkpoint import write_atomically


def _regression(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5]])}


def _linear(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(3, 1)


class Counter(Callback):
    """A callback with state of its own, which a checkpoint must carry."""

    def __init__(self):
        self.seen = 0

    def on_epoch_end(self, state):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


class Epochs(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, state):
        self.seen.append(state.epoch)


class InterruptAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def _run(directory=None, callbacks=(), resume=None):
    """A noisy fit: the loss draws from its own generator each minibatch, so the stream must be restored."""
    module, noise = _linear(), torch.Generator().manual_seed(5)

    def loss(module, batch):
        jitter = 0.1 * torch.randn(batch["x"].shape, generator=noise)
        return ((module(batch["x"] + jitter) - batch["y"]) ** 2).mean()

    counter = Counter()
    checkpoint = [Checkpoint(directory)] if directory is not None else []
    state = train(module, loss, _regression(), batch_size=16, max_epochs=6, learning_rate=0.05, patience=None,
                  generator=torch.Generator().manual_seed(0), random_streams={"noise": noise},
                  callbacks=[counter, StepDecay(every=2), *callbacks, *checkpoint], resume=resume)
    return module, state, counter


def test_the_loop_resumes_where_the_checkpoint_left_it(tmp_path):
    reference, reference_state, _ = _run()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, callbacks=[InterruptAt(4)])
    saved = Checkpoint(tmp_path).read()
    assert saved["epoch"] == 3 and not saved["completed"]
    module, state, counter = _run(tmp_path, resume=saved)
    assert counter.seen == 6  # 3 restored + 3 trained
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), reference.state_dict().values()))
    assert [r["train_loss"] for r in state.history] == [r["train_loss"] for r in reference_state.history]
    assert state.optimizer.param_groups[0]["lr"] == reference_state.optimizer.param_groups[0]["lr"]


def test_a_finished_run_is_restored_without_training(tmp_path):
    trained, _, _ = _run(tmp_path)
    saved = Checkpoint(tmp_path).read()
    assert saved["completed"]
    epochs = Epochs()
    module, state, counter = _run(tmp_path, callbacks=[epochs], resume=saved)
    assert epochs.seen == [] and state.completed and not module.training
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), trained.state_dict().values()))


def test_a_checkpoint_loads_without_unpickling_code(tmp_path):
    _run(tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # raises on anything but tensors and containers
    assert {"module", "optimizer", "best_weights", "history", "random_streams", "callbacks"} <= set(saved)
    assert set(saved["random_streams"]) == {"minibatch", "noise"}


def test_a_full_disk_leaves_no_partial_file_and_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    _run(tmp_path)
    previous = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def save_until_the_disk_is_full(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)  # half of it made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space"):
        write_atomically({"x": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    with pytest.warns(CheckpointWarning, match="No space left"):
        _, state, _ = _run(tmp_path)  # training goes on without its checkpoints
    assert state.completed
    assert (tmp_path / "checkpoint.pt").read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_stale_temporary_files_of_killed_writes_are_removed(tmp_path):
    (tmp_path / ".checkpoint-abc.tmp").write_bytes(b"half a checkpoint")
    assert Checkpoint(tmp_path).read() is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [dict(every=0), dict(every=1.5), dict(directory=3)])
def test_checkpoint_settings_are_checked(kwargs):
    with pytest.raises(InputError):
        Checkpoint(**{"directory": "somewhere", **kwargs})


def test_learning_rate_schedule_settings_are_checked():
    with pytest.raises(InputError, match="factor"):
        StepDecay(factor=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert StepDecay(every=3, factor=0.1).rate(1.0, 7) == pytest.approx(0.01)
