"""The Latent ODE's importance-weighted bound: its value is logsumexp's, its gradient has no subnormal numbers."""

from __future__ import annotations

import math

import pytest
import torch

from dynlearn import LatentODE
from dynlearn.datasets import make_periodic
from dynlearn.estimators import _latent_ode as latent_ode
from dynlearn.estimators._latent_ode import importance_logsumexp
from dynlearn.training import Callback, TrainState


def _subnormal(t: torch.Tensor) -> int:
    magnitude = t.abs()
    return int(((magnitude > 0) & (magnitude < torch.finfo(t.dtype).tiny)).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_is_logsumexp_and_close_weights_are_kept(dtype):
    generator = torch.Generator().manual_seed(0)
    # Draws spread over a few hundred nats, as log-likelihoods at obs_std 0.01 are, with some within reach.
    terms = (torch.randn(3, 400, generator=generator, dtype=dtype) * 60).requires_grad_(True)
    ours = importance_logsumexp(terms)
    theirs = torch.logsumexp(terms, dim=0)
    assert torch.equal(ours, theirs)  # bitwise
    (ours_grad,) = torch.autograd.grad(ours.sum(), terms)
    (theirs_grad,) = torch.autograd.grad(theirs.sum(), terms)
    cut = math.sqrt(torch.finfo(dtype).tiny)  # weights below it are dropped, the rest are logsumexp's own
    kept = theirs_grad >= cut
    assert torch.equal(ours_grad[kept], theirs_grad[kept])
    assert torch.all(ours_grad[~kept] == 0)
    if dtype == torch.float32:
        assert _subnormal(theirs_grad) > 0  # the case the function is for occurs in this draw
    assert _subnormal(ours_grad) == 0


def test_edge_terms_keep_logsumexp_values():
    terms = torch.tensor([[0.0, -math.inf, 5.0, -math.inf], [-200.0, -math.inf, 5.0, 1.0]], requires_grad=True)
    ours = importance_logsumexp(terms)
    assert torch.equal(ours, torch.logsumexp(terms, dim=0))
    ours.sum().backward()
    grad = terms.grad
    plain = terms.detach().clone().requires_grad_(True)
    torch.logsumexp(plain, dim=0).sum().backward()
    assert torch.equal(grad[:, 0], torch.tensor([1.0, 0.0]))  # the far draw: exactly zero weight
    torch.testing.assert_close(grad[:, 1], plain.grad[:, 1], rtol=0, atol=0, equal_nan=True)  # all -inf: as logsumexp
    assert torch.allclose(grad[:, 2], torch.tensor([0.5, 0.5]))  # ties share
    assert torch.allclose(grad[:, 3].sum(), torch.tensor(1.0))


class _Capture(Callback):
    def on_train_begin(self, state: TrainState) -> None:
        self.module, self.loss_fn, self.train_data = state.module, state.loss_fn, state.train_data


def _subnormal_gradients(module, loss_fn, data) -> int:
    """Subnormal entries in the gradients every node of the loss's graph passes on, in one backward pass."""
    loss = loss_fn(module, data)
    counts, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        node.register_hook(lambda grads_in, _: counts.append(sum(_subnormal(g) for g in grads_in if g is not None)))
        stack += [parent for parent, _ in node.next_functions]
    loss.backward()
    return sum(counts)


def test_latent_ode_backward_has_no_subnormal_gradients(monkeypatch):
    """With several draws at obs_std 0.01 their log-likelihoods differ by hundreds of nats; no importance weight
    reaches the backward pass as a subnormal number, which would slow every product it meets."""
    frame = make_periodic(n_series=64, n_times=40, random_state=0)
    seen = _Capture()
    LatentODE(latent_dim=6, encoder_dim=10, encoder_layer_sizes=(32,), ode_layer_sizes=(32,), obs_std=0.01, n_samples_train=3,
              max_epochs=1, patience=None, validation_fraction=0.0, random_state=0, n_threads=1,
              callbacks=[seen]).fit(frame)
    assert _subnormal_gradients(seen.module, seen.loss_fn, seen.train_data) == 0
    # The plain logsumexp does pass subnormal weights on here: the check above can fail.
    monkeypatch.setattr(latent_ode, "importance_logsumexp", lambda terms: torch.logsumexp(terms, dim=0))
    seen.module.zero_grad()
    assert _subnormal_gradients(seen.module, seen.loss_fn, seen.train_data) > 0
