"""The training loop: early stopping, best-weights restore, divergence, seeds, history, devices."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dynlearn import InputError, TrainingError
from dynlearn.training import Callback, LearningRateDecay, resolve_device, resolve_dtype, train, train_step


def _regression(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return {"x": x, "y": x @ torch.tensor([[1.0], [-2.0], [0.5]])}


def _mse(module, batch):
    return ((module(batch["x"]) - batch["y"]) ** 2).mean()


def _linear(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(3, 1)


def test_learns_and_records_history():
    module = _linear()
    state = train(module, _mse, _regression(), max_epochs=200, learning_rate=0.05, patience=None,
                  generator=torch.Generator().manual_seed(0))
    frame = state.history.to_frame()
    assert list(frame.columns) == ["train_loss", "valid_loss", "duration"]
    assert len(frame) == 200 and frame["train_loss"].iloc[-1] < 1e-3 * frame["train_loss"].iloc[0]


def test_early_stopping_restores_best_weights():
    class Drift(Callback):  # ruin the weights after the best epoch to see them restored
        def on_epoch_end(self, state):
            if state.epoch > 3:
                with torch.no_grad():
                    state.module.weight.add_(1.0)

    module = _linear()
    data = _regression()
    state = train(module, _mse, data, valid_data=data, max_epochs=50, learning_rate=0.01, patience=3,
                  callbacks=[Drift()], generator=torch.Generator().manual_seed(0))
    assert state.stop and state.epoch < 50
    with torch.no_grad():
        assert float(_mse(module, data)) == pytest.approx(state.best_loss, rel=1e-5)


def test_non_finite_loss_raises_and_keeps_best_weights():
    calls = {"n": 0}

    def loss(module, batch):
        calls["n"] += 1
        value = _mse(module, batch)
        return value * math.nan if calls["n"] > 6 else value

    module = _linear()
    data = _regression(n=32)
    with pytest.raises(TrainingError, match="non-finite") as error:
        train(module, loss, data, batch_size=16, max_epochs=10, learning_rate=0.01,
              generator=torch.Generator().manual_seed(0))
    assert "restored" in str(error.value)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_finite_gradient_whose_norm_overflows_is_clipped_not_called_divergence():
    """Gradient entries of 1e25 are finite, but the float32 norm of a few of them is inf."""
    scale = {"value": 1.0}

    def loss(module, batch):
        return _mse(module, batch) * scale["value"]

    data = _regression(n=32)
    module = _linear()
    scale["value"] = 1e25
    train(module, loss, data, batch_size=32, max_epochs=1, learning_rate=0.01, clip_grad_norm=1.0,
          generator=torch.Generator().manual_seed(0))
    reference = _linear()
    scale["value"] = 1.0  # the same direction, clipped to the same norm: the same step
    train(reference, loss, data, batch_size=32, max_epochs=1, learning_rate=0.01, clip_grad_norm=1.0,
          generator=torch.Generator().manual_seed(0))
    for ours, theirs in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)

    def infinite_gradient(module, batch):  # finite value, infinite slope: a real divergence
        return torch.sqrt(module.weight - module.weight.detach()).sum() + _mse(module, batch)

    with pytest.raises(TrainingError, match="gradient norm"):
        train(_linear(), infinite_gradient, data, batch_size=32, max_epochs=1,
              generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("max_norm", [1e-3, 0.7, 1e6])
@pytest.mark.parametrize("mixed", [False, True])
def test_the_step_clips_exactly_as_torch_clip_grad_norm_does(max_norm, mixed):
    """One foreach norm and no multiply below the limit: the same clipped gradients as torch's, bit for bit."""
    torch.manual_seed(0)
    ours, theirs = (nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    if mixed:  # a float64 layer: torch's own function, which groups by dtype, takes these
        ours[2].double(), theirs[2].double()
    batch = {"x": torch.randn(9, 5)}

    def loss(module, batch):
        hidden = module[1](module[0](batch["x"]))
        return module[2](hidden.to(module[2].weight.dtype)).pow(2).sum()

    ours[0].bias.requires_grad_(False), theirs[0].bias.requires_grad_(False)  # no gradient: left alone
    train_step(ours, loss, batch, torch.optim.SGD(ours.parameters(), lr=1.0), clip_grad_norm=max_norm)
    loss(theirs, batch).backward()
    nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    torch.optim.SGD(theirs.parameters(), lr=1.0).step()  # p - g exactly: equal weights are equal gradients
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)


def test_the_step_clips_the_gradients_its_optimizer_steps():
    """The norm is that of the stepped parameters' gradients; a parameter the optimiser leaves keeps its gradient."""
    torch.manual_seed(0)
    ours, theirs = (nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    batch = {"x": torch.randn(9, 5)}

    def loss(module, batch):
        return module(batch["x"]).pow(2).sum()

    train_step(ours, loss, batch, torch.optim.SGD(ours[2].parameters(), lr=1.0), clip_grad_norm=0.1)
    loss(theirs, batch).backward()
    untouched = theirs[0].weight.grad.clone()
    nn.utils.clip_grad_norm_(theirs[2].parameters(), 0.1)
    torch.optim.SGD(theirs[2].parameters(), lr=1.0).step()
    assert torch.equal(ours[0].weight.grad, untouched)  # not scaled: it is not stepped
    assert torch.equal(ours[0].weight, theirs[0].weight)
    for mine, reference in zip(ours[2].parameters(), theirs[2].parameters()):
        assert torch.equal(mine, reference)
    assert torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ours[2].parameters()])) <= 0.1 + 1e-6


def test_learning_rate_decays_per_minibatch_to_its_floor():
    class Record(Callback):
        def __init__(self):
            self.rates = []

        def on_epoch_end(self, state):  # runs after the decay callback has set the next epoch's rate
            self.rates.append(state.optimizer.param_groups[0]["lr"])

    data = _regression(n=64)  # 4 minibatches of 16 per epoch
    record = Record()
    train(_linear(), _mse, data, batch_size=16, max_epochs=6, learning_rate=0.1, patience=None,
          callbacks=[LearningRateDecay(0.1, 0.5, n_batches=4, floor=0.01), record],
          generator=torch.Generator().manual_seed(0))
    # Epoch e trains at 0.1 * 0.5 ** (4 (e - 1)), never below 0.1 * 0.01.
    assert record.rates == pytest.approx([0.1 * max(0.5 ** (4 * e), 0.01) for e in range(1, 7)])


def test_same_generator_seed_gives_identical_weights():
    results = []
    for _ in range(2):
        module = _linear()
        train(module, _mse, _regression(), batch_size=8, max_epochs=3, learning_rate=0.01, patience=None,
              generator=torch.Generator().manual_seed(7))
        results.append(torch.cat([p.detach().ravel() for p in module.parameters()]))
    assert torch.equal(results[0], results[1])


def test_progress_bar_when_verbose(capsys):
    train(_linear(), _mse, _regression(), max_epochs=2, verbose=1, patience=None,
          generator=torch.Generator().manual_seed(0))
    assert "epoch" in capsys.readouterr().err


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda:1")
    with pytest.raises(InputError, match="dtype"):
        resolve_dtype("float16")


def test_keyboard_interrupt_restores_the_best_weights_in_eval_mode():
    class SpoilThenInterrupt(Callback):
        def on_epoch_end(self, state):
            if state.epoch == 3:
                self.best = {k: v.clone() for k, v in state.best_weights.items()}
                with torch.no_grad():
                    state.module.weight.add_(5.0)
                raise KeyboardInterrupt

        def on_train_end(self, state):
            self.interrupted = state.interrupted

    module, spoil = _linear(), SpoilThenInterrupt()
    with pytest.raises(KeyboardInterrupt):
        train(module, _mse, _regression(), max_epochs=10, learning_rate=0.01, callbacks=[spoil],
              generator=torch.Generator().manual_seed(0))
    assert spoil.interrupted and not module.training
    assert all(torch.equal(v, spoil.best[k]) for k, v in module.state_dict().items())


def test_a_run_whose_loss_blows_up_warns():
    from dynlearn.exceptions import DivergenceWarning

    module = _linear()
    too_fast = torch.optim.SGD(module.parameters(), lr=1.5)  # beyond 1 / curvature: each step doubles the error
    with pytest.warns(DivergenceWarning, match="learning_rate"):
        train(module, _mse, _regression(), batch_size=16, max_epochs=4, optimizer=too_fast, clip_grad_norm=None,
              patience=None, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- step hook
class _Batches(Callback):
    def __init__(self):
        self.seen = []

    def on_train_begin(self, state):
        self.loss_fn, self.train_data = state.loss_fn, state.train_data

    def on_batch_end(self, state, batch, loss):
        self.seen.append((state.epoch, len(batch["x"]), loss))


def test_the_step_hook_fires_once_per_minibatch_with_its_size_and_loss():
    data, hook = _regression(n=50), _Batches()
    state = train(_linear(), _mse, data, max_epochs=3, batch_size=16, patience=None, callbacks=[hook],
                  generator=torch.Generator().manual_seed(0))
    # 50 examples in minibatches of 16: 16, 16, 16, 2 per epoch.
    assert [(epoch, size) for epoch, size, _ in hook.seen] == [(e, s) for e in (1, 2, 3) for s in (16, 16, 16, 2)]
    for epoch, record in enumerate(state.history, start=1):
        losses = [(size, loss) for e, size, loss in hook.seen if e == epoch]
        assert record["train_loss"] == pytest.approx(sum(s * l for s, l in losses) / 50, rel=1e-12)
    assert hook.loss_fn is _mse and hook.train_data is data


def test_train_step_takes_the_loops_step():
    data = _regression(n=16)
    looped, stepped = _linear(), _linear()
    train(looped, _mse, data, max_epochs=1, batch_size=16, learning_rate=0.05, patience=None,
          generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(stepped.parameters(), lr=0.05, weight_decay=0.0)  # train's optimizer
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    loss = train_step(stepped, _mse, {k: v[order] for k, v in data.items()}, optimizer, clip_grad_norm=1.0)
    with torch.no_grad():
        assert loss == pytest.approx(float(_mse(_linear(), data)), rel=1e-6)
    for a, b in zip(looped.parameters(), stepped.parameters()):
        assert torch.equal(a, b)


def test_train_step_refuses_a_non_finite_loss_without_stepping():
    module = _linear()
    before = [p.detach().clone() for p in module.parameters()]
    bad = {"x": torch.full((4, 3), float("nan")), "y": torch.zeros(4, 1)}
    with pytest.raises(TrainingError, match="not finite"):
        train_step(module, _mse, bad, torch.optim.SGD(module.parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))
