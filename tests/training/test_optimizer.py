"""The AdamW every fit steps: torch's fused kernel where one exists, the same iterates as the plain one."""

import copy
import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.training import adamw, train_step
from dynlearn.training._optim import _fused_adamw_calls, clip_gradients

FUSED_ON_CPU = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)


def _steps(optimizer_of, dtype=torch.float64, n=25):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)
    optimizer = optimizer_of(net.parameters())
    x = torch.randn(16, 3, dtype=dtype)
    for _ in range(n):
        optimizer.zero_grad()
        (net(x) ** 2).mean().backward()
        optimizer.step()
    return net, optimizer


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_gives_the_plain_adamw_iterates(dtype):
    fused, optimizer = _steps(lambda p: adamw(p, lr=1e-2, weight_decay=1e-3), dtype)
    plain, _ = _steps(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-3), dtype)
    assert optimizer.defaults["fused"] is True
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    for a, b in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


def test_falls_back_to_plain_adamw_where_fused_is_refused(monkeypatch):
    made = []
    real = torch.optim.AdamW

    def refusing(*args, fused=None, **kwargs):
        made.append(fused)
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", refusing)
    net, optimizer = _steps(lambda p: adamw(p, lr=1e-2), n=3)
    assert made == [True, None]
    assert isinstance(optimizer, real) and not optimizer.defaults.get("fused")
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_parameter_groups_keep_their_rates_and_their_parameters():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer = adamw([{"params": a.parameters()}, {"params": b.parameters(), "lr": 1e-4}], lr=1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-4]
    # Generators in the groups are read once to choose the kernel and again by torch: both must see them.
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]
    single = adamw([{"params": a.weight}], lr=1e-2)
    assert single.param_groups[0]["params"][0] is a.weight


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
def test_estimators_step_the_fused_adamw_and_resume_its_state():
    frame = make_damped_oscillator(n_series=4, n_times=12, random_state=0)
    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(frame)
    optimizer = model._optimizer()
    assert optimizer.defaults["fused"] is True
    model.partial_fit(frame)  # Adam's moments carried across the calls load into the fused optimiser
    assert int(model._kept_optimizer().state_dict()["state"][0]["step"]) > 0


# ----------------------------------------------------------------- the step's own calls of the fused kernel
def _twins(dtype=torch.float32, seed=0):
    """Two copies of one network with parameter groups of their own rates, and the batch they train on."""
    torch.manual_seed(seed)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    nets[0][0].bias.requires_grad_(False), nets[1][0].bias.requires_grad_(False)  # in a group, never a gradient
    optimizers = [adamw([{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 3e-3}], lr=1e-2,
                        weight_decay=1e-2) for net in nets]  # fmt: skip
    return nets, optimizers, {"x": torch.randn(16, 3, dtype=dtype)}


def _loss(module, batch):
    return (module(batch["x"]) ** 2).mean()


def _assert_same_state(a, b):
    for p, q in zip(a.param_groups, b.param_groups):
        for x, y in zip(p["params"], q["params"]):
            assert torch.equal(x, y)
            for key in a.state.get(x, {}):
                assert torch.equal(a.state[x][key], b.state[y][key]), key


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_step_calls_the_fused_kernel_itself_with_torchs_iterates_bit_for_bit(dtype):
    (ours, theirs), (mine, reference), batch = _twins(dtype)
    for i in range(6):
        train_step(ours, _loss, batch, mine, clip_grad_norm=None)
        if i == 0:
            assert _fused_adamw_calls(mine) is not None  # from the second step on, the kernel is called directly
        reference.zero_grad()
        _loss(theirs, batch).backward()
        reference.step()
        for optimizer in (mine, reference):  # a rate changed between steps, as the loop's decay does
            optimizer.param_groups[1]["lr"] *= 0.5
    _assert_same_state(mine, reference)
    assert int(mine.state[ours[2].weight]["step"]) == 6


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
def test_the_direct_kernel_calls_follow_missing_gradients_late_parameters_and_a_loaded_state():
    (ours, theirs), (mine, reference), batch = _twins()

    def loss(module, batch, step):  # the last layer's bias is left out of every third loss, and of the first two
        hidden = module[1](module[0](batch["x"]))
        if step % 3 == 0 or step < 2:
            return (torch.nn.functional.linear(hidden, module[2].weight) ** 2).mean()
        return (module[2](hidden) ** 2).mean()

    for step in range(9):
        train_step(ours, lambda m, b, step=step: loss(m, b, step), batch, mine, clip_grad_norm=None)
        reference.zero_grad()
        loss(theirs, batch, step).backward()
        reference.step()
        if step == 4:  # a checkpoint loaded into both: new state tensors, gathered again
            kept = reference.state_dict()
            mine.load_state_dict(copy.deepcopy(kept)), reference.load_state_dict(copy.deepcopy(kept))
        _assert_same_state(mine, reference)
    assert int(mine.state[ours[2].bias]["step"]) == 5  # stepped only where it had a gradient: 2, 4, 5, 7, 8


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
def test_a_step_that_is_more_than_one_kernel_call_goes_through_optimizer_step():
    """Hooks, a scheduler's wrapper, a subclass or other options: torch's step, hooks and all."""
    (net, _), (optimizer, _), batch = _twins()
    train_step(net, _loss, batch, optimizer)
    assert _fused_adamw_calls(optimizer) is not None
    seen = []
    handle = optimizer.register_step_post_hook(lambda *args: seen.append(1))
    assert _fused_adamw_calls(optimizer) is None
    train_step(net, _loss, batch, optimizer)
    assert seen == [1]
    handle.remove()
    handle = register_optimizer_step_pre_hook(lambda *args: seen.append(2))
    try:
        train_step(net, _loss, batch, optimizer)
    finally:
        handle.remove()
    assert seen == [1, 2]
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # wraps optimizer.step
    assert _fused_adamw_calls(optimizer) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        train_step(net, _loss, batch, optimizer)
        scheduler.step()
    optimizer.param_groups[0]["lr"] = torch.tensor(0.01)  # a tensor rate: torch's step places it
    assert _fused_adamw_calls(optimizer) is None
    (net, _), (optimizer, _), batch = _twins()
    optimizer.param_groups[0]["amsgrad"] = True
    train_step(net, _loss, batch, optimizer)
    assert _fused_adamw_calls(optimizer) is None and "max_exp_avg_sq" in optimizer.state[net[0].weight]


def test_an_optimizer_with_its_own_zero_grad_is_asked_to_zero():
    class Counting(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none=True):
            Counting.calls += 1
            super().zero_grad(set_to_none)

    net = torch.nn.Linear(3, 1)
    train_step(net, _loss, {"x": torch.randn(4, 3)}, Counting(net.parameters(), lr=0.1))
    assert Counting.calls == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_clip_coefficient_formed_on_the_host_is_torchs_bit_for_bit(dtype):
    """Norms across many scales, limits that do and do not bind: the clipped gradients are torch's exactly."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        shapes = [(7, 5), (7,), (2, 7)]
        scale = 10.0 ** torch.empty(()).uniform_(-8, 8, generator=generator).item()
        grads = [torch.randn(s, generator=generator, dtype=dtype) * scale for s in shapes]
        max_norm = [1.0, 0.7, 3e-5, 123.456][trial % 4]
        ours = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes]
        theirs = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        assert clip_gradients(ours, max_norm)
        torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        for p, q in zip(ours, theirs):
            assert torch.equal(p.grad, q.grad), (trial, scale, max_norm)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_direct_kernel_call_is_torchs_step_bit_for_bit():
    (ours, theirs), (_, _), batch = _twins()
    ours, theirs = ours.cuda(), theirs.cuda()
    mine, reference = (adamw([{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 3e-3}], lr=1e-2,
                             weight_decay=1e-2) for net in (ours, theirs))  # fmt: skip
    batch = {"x": batch["x"].cuda()}
    for i in range(4):
        train_step(ours, _loss, batch, mine, clip_grad_norm=0.1)
        if i == 0:
            assert _fused_adamw_calls(mine) is not None
        reference.zero_grad()
        _loss(theirs, batch).backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
        reference.step()
    _assert_same_state(mine, reference)
