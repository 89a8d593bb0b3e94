"""Checkpoints: an interrupted or killed fit resumes to the very weights of an uninterrupted one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dynlearn import (
    ConvergenceWarning,
    HamiltonianNN,
    InputError,
    LagrangianNN,
    LatentODE,
    LatentODEClassifier,
    LatentSDE,
    NeuralODE,
    NeuralSDE,
    ODERNN,
    ODERNNClassifier,
)
from dynlearn.datasets import make_damped_oscillator, make_ou_process, make_periodic
from dynlearn.training import Callback, Checkpoint

REPO = Path(__file__).resolve().parents[2]
COMMON = dict(random_state=0, device="cpu", patience=None, max_epochs=4)
LATENT = dict(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(4,), ode_layer_sizes=(4,), solver="rk4", batch_size=4)
# Each case: estimator, its small settings, the data kind, and the epoch at which training is interrupted
# (the phase-space models train in two stages: 4 epochs on derivatives, then 1 + ... on trajectories).
CASES = {
    "NeuralODE": (NeuralODE, dict(hidden_layer_sizes=(8,), window_size=4, noise_std=0.05), "oscillator", 2),
    "NeuralSDE": (NeuralSDE, dict(hidden_layer_sizes=(8,)), "oscillator", 2),
    "HamiltonianNN": (HamiltonianNN, dict(hidden_layer_sizes=(8,), window_size=4, max_epochs=8), "oscillator", 10),
    "LagrangianNN": (LagrangianNN, dict(hidden_layer_sizes=(8,), window_size=4, max_epochs=8), "oscillator", 3),
    "LatentODE": (LatentODE, dict(LATENT, n_samples_train=2), "periodic", 2),
    "LatentODEClassifier": (LatentODEClassifier, dict(LATENT, observed_fraction=0.5), "labelled", 2),
    "LatentSDE": (LatentSDE, dict(latent_dim=2, context_dim=4, hidden_layer_sizes=(8,), encoder_hidden_size=8,
                                  diffusion_hidden_size=4, dt=1.0, batch_size=4), "ou", 2),
    "ODERNN": (ODERNN, dict(hidden_dim=4, ode_hidden_layer_sizes=(8,), batch_size=4), "periodic", 2),
    "ODERNNClassifier": (ODERNNClassifier, dict(hidden_dim=4, ode_hidden_layer_sizes=(8,), batch_size=4), "labelled", 3),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(kind):
    if kind == "oscillator":
        return (make_damped_oscillator(n_series=6, n_times=12, random_state=0),), {}
    if kind == "ou":
        return (make_ou_process(n_series=6, n_times=10, random_state=0),), {}
    frame = make_periodic(n_series=8, n_times=10, irregular=True, random_state=0)
    if kind == "labelled":
        return (frame, np.arange(8) % 2), {}
    return (frame,), {}


class InterruptAt(Callback):
    """Press Ctrl-C at the end of epoch ``epoch`` (before that epoch's checkpoint is written)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


class CountEpochs(Callback):
    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, state):
        self.epochs.append(state.epoch)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.module_.state_dict().items()}


def _assert_same_weights(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def _losses(model):
    # A fit without validation records NaN validation losses; None stands for them so that equal histories compare equal.
    def same(value):
        return None if isinstance(value, float) and value != value else value

    return [(r["epoch"], r["train_loss"], same(r["valid_loss"]), r.get("fit_on")) for r in model.history_]


@pytest.mark.parametrize("name", list(CASES))
def test_an_interrupted_fit_resumes_to_the_uninterrupted_weights(name, tmp_path):
    cls, settings, kind, stop_at = CASES[name]
    args, _ = _data(kind)
    params = {**COMMON, **settings}
    reference = cls(**params).fit(*args)
    interrupted = cls(**params, checkpoint=tmp_path, callbacks=[InterruptAt(stop_at)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(*args)
    assert interrupted.n_epochs_ == stop_at
    count = CountEpochs()
    resumed = cls(**params, checkpoint=tmp_path, callbacks=[count]).fit(*args)
    # The checkpoint of the interrupted epoch was never written: that epoch (only) is trained again.
    assert count.epochs[0] == stop_at
    _assert_same_weights(_weights(resumed), _weights(reference))
    assert _losses(resumed) == _losses(reference)
    assert resumed.best_epoch_ == reference.best_epoch_ and resumed.n_epochs_ == reference.n_epochs_


def test_a_finished_checkpoint_restores_the_result_without_training(tmp_path, oscillator):
    frame, _ = oscillator
    params = dict(COMMON, hidden_layer_sizes=(8,), window_size=4, checkpoint=tmp_path)
    first = NeuralODE(**params).fit(frame)
    count = CountEpochs()
    again = NeuralODE(**params, callbacks=[count]).fit(frame)
    assert count.epochs == []
    _assert_same_weights(_weights(again), _weights(first))
    np.testing.assert_array_equal(again.predict(frame, t=[8.5]), first.predict(frame, t=[8.5]))


def test_every_k_epochs_loses_at_most_k_epochs(tmp_path):
    (frame,), _ = _data("oscillator")
    params = dict(COMMON, hidden_layer_sizes=(8,), window_size=4, max_epochs=6)
    with pytest.raises(KeyboardInterrupt):
        NeuralODE(**params, checkpoint=Checkpoint(tmp_path, every=3), callbacks=[InterruptAt(5)]).fit(frame)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 3
    count = CountEpochs()
    resumed = NeuralODE(**params, checkpoint=Checkpoint(tmp_path, every=3), callbacks=[count]).fit(frame)
    assert count.epochs == [4, 5, 6]
    _assert_same_weights(_weights(resumed), _weights(NeuralODE(**params).fit(frame)))


def test_resume_takes_back_the_seed_of_an_unseeded_fit(tmp_path):
    (frame,), _ = _data("oscillator")
    params = dict(COMMON, hidden_layer_sizes=(8,), window_size=4, random_state=None)
    interrupted = NeuralODE(**params, checkpoint=tmp_path, callbacks=[InterruptAt(2)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(frame)
    resumed = NeuralODE(**params, checkpoint=tmp_path).fit(frame)
    assert _losses(resumed)[:2] == _losses(interrupted)


def test_a_checkpoint_of_other_parameters_or_data_is_refused(tmp_path):
    (frame,), _ = _data("oscillator")
    params = dict(COMMON, hidden_layer_sizes=(8,), window_size=4, max_epochs=2)
    NeuralODE(**params, checkpoint=tmp_path).fit(frame)
    with pytest.raises(InputError, match=r"learning_rate=0\.003 \(now 0\.1\)"):
        NeuralODE(**{**params, "learning_rate": 0.1}, checkpoint=tmp_path).fit(frame)
    with pytest.raises(InputError, match="X: expected the data the checkpoint"):
        NeuralODE(**params, checkpoint=tmp_path).fit(frame.assign(q=frame["q"] * 2))
    with pytest.raises(InputError, match="shapes"):
        NeuralODE(**params, checkpoint=tmp_path).fit(frame[frame["series_id"] != frame["series_id"].iloc[0]])
    with pytest.raises(InputError, match="written by 'NeuralODE'"):
        NeuralSDE(hidden_layer_sizes=(8,), max_epochs=2, device="cpu", checkpoint=tmp_path).fit(frame)
    # verbose, callbacks and the checkpoint itself do not change the result: they may differ.
    NeuralODE(**params, checkpoint=Checkpoint(tmp_path, every=2), verbose=0, callbacks=[CountEpochs()]).fit(frame)


def test_a_checkpoint_from_before_named_random_streams_is_refused(tmp_path):
    # Format 1 saved the training generators under seed offsets ("1", "2"); its streams cannot be resumed.
    (frame,), _ = _data("oscillator")
    params = dict(COMMON, hidden_layer_sizes=(8,), window_size=4, max_epochs=2, noise_std=0.05)
    NeuralODE(**params, checkpoint=tmp_path).fit(frame)
    path = tmp_path / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    assert set(saved["random_streams"]) == {"minibatch", "noise"}
    saved["format"] = 1
    saved["random_streams"] = {"minibatch": saved["random_streams"]["minibatch"], "2": saved["random_streams"]["noise"]}
    torch.save(saved, path)
    with pytest.raises(InputError, match=r"format 2\).*format 1\).*delete the file"):
        NeuralODE(**params, checkpoint=tmp_path).fit(frame)


def test_an_unreadable_checkpoint_file_is_refused_with_advice(tmp_path):
    (frame,), _ = _data("oscillator")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="Delete the file"):
        NeuralODE(**COMMON, hidden_layer_sizes=(8,), checkpoint=tmp_path).fit(frame)


# ------------------------------------------------------- killed processes
KILLED = dict(max_epochs=10, patience=None, random_state=0, device="cpu")


def _killable(name, **params):
    """The model and data of the kill test: each draws fresh randomness every minibatch."""
    if name == "NeuralODE":
        data = make_damped_oscillator(n_series=6, n_times=12, random_state=0)
        return NeuralODE(hidden_layer_sizes=(8,), window_size=4, noise_std=0.05, **KILLED, **params), data
    data = make_periodic(n_series=8, n_times=10, irregular=True, random_state=0)
    settings = dict(LATENT, n_samples_train=2)
    return LatentODE(**settings, **KILLED, **params), data


_CHILD = textwrap.dedent(
    """
    import sys, time, warnings
    import torch
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.path.insert(0, sys.argv[4])
    from test_checkpoint_resume import _killable
    from dynlearn.training import Callback

    class Report(Callback):
        def __init__(self, delay):
            self.delay = delay
        def on_epoch_end(self, state):
            print("epoch", state.epoch, flush=True)
            time.sleep(self.delay)

    name, directory, mode = sys.argv[1:4]
    model, data = _killable(name, checkpoint=directory, callbacks=[Report(0.1 if mode == "train" else 0.0)])
    model.fit(data)
    torch.save(model.module_.state_dict(), directory + "/resumed.pt")
    """
)


def _run_child(script, name, directory, mode):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, str(script), name, str(directory), mode, str(Path(__file__).parent)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("name", ["NeuralODE", "LatentODE"])
def test_a_fit_killed_at_a_random_moment_resumes_bit_identically(name, tmp_path):
    """SIGKILL after at least one checkpoint; a new process resumes; weights equal an uninterrupted fit's."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    directory = tmp_path / "checkpoints"
    delay = random.uniform(0.0, 0.5)  # after the first checkpoint: anywhere in the next few epochs
    child = _run_child(script, name, directory, "train")
    try:
        printed = []
        for line in child.stdout:
            printed.append(int(line.split()[1]))
            if (directory / "checkpoint.pt").exists():
                break
        assert (directory / "checkpoint.pt").exists(), child.stderr.read()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, f"the fit ended before the kill (delay {delay:.3f} s)"
    printed += [int(line.split()[1]) for line in child.stdout.read().splitlines() if line.startswith("epoch")]
    saved_epoch = torch.load(directory / "checkpoint.pt", weights_only=True)["epoch"]
    # At most one finished epoch is lost: the one whose checkpoint was being written when the kill came.
    assert saved_epoch >= max(printed) - 1, (saved_epoch, printed, delay)

    resume = _run_child(script, name, directory, "resume")
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    resumed_epochs = [int(line.split()[1]) for line in out.splitlines() if line.startswith("epoch")]
    assert resumed_epochs == list(range(saved_epoch + 1, KILLED["max_epochs"] + 1)), (resumed_epochs, saved_epoch)
    assert not list(directory.glob(".checkpoint-*")), "a temporary file of the killed write was left behind"
    reference, data = _killable(name)
    reference.fit(data)
    _assert_same_weights(torch.load(directory / "resumed.pt", weights_only=True), _weights(reference))
