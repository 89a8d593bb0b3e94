"""The AdamW every fit steps: torch's fused kernel where one exists, the same iterates as the plain one."""

import pytest
import torch

from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
from dynlearn.training import adamw

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


def test_parameter_groups_keep_their_rates():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer = adamw([{"params": a.parameters()}, {"params": b.parameters(), "lr": 1e-4}], lr=1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-4]


@pytest.mark.skipif(not FUSED_ON_CPU, reason="torch before 2.4 has no fused AdamW on the CPU")
def test_estimators_step_the_fused_adamw_and_resume_its_state():
    frame = make_damped_oscillator(n_series=4, n_times=12, random_state=0)
    model = NeuralODE(hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(frame)
    optimizer = model._optimizer()
    assert optimizer.defaults["fused"] is True
    model.partial_fit(frame)  # Adam's moments carried across the calls load into the fused optimiser
    assert int(model._kept_optimizer().state_dict()["state"][0]["step"]) > 0
