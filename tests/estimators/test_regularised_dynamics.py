"""kinetic_weight / jacobian_weight of NeuralODE and LatentODE: off by default, checked, and acting on the field."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dynlearn import LatentODE, NeuralODE, load
from dynlearn._compat import InvalidParameterError
from dynlearn.exceptions import InputError

T = np.linspace(0.0, 4.0, 25)
# Two decaying spirals: a field that fits them must move, and a kinetic penalty makes it move less.
SPIRALS = np.stack(
    [np.stack([np.exp(-0.3 * T) * np.cos(2 * T + p), np.exp(-0.3 * T) * np.sin(2 * T + p)], -1) for p in (0.0, 1.0)]
)
NODE = dict(hidden_layer_sizes=(16,), max_epochs=4, window_size=6, patience=None, random_state=0, device="cpu")
LATENT = dict(
    latent_dim=3, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,), max_epochs=2, batch_size=4,
    refine_steps=0, random_state=0, device="cpu",
)  # fmt: skip


def fitted(estimator, X=SPIRALS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X, t=T)


def latent_series() -> np.ndarray:
    rng = np.random.RandomState(0)
    return np.sin(T[None, :] * rng.uniform(1.0, 2.0, (8, 1)) + rng.uniform(0, 3, (8, 1)))[..., None]


@pytest.mark.parametrize("estimator", [NeuralODE(**NODE), LatentODE(**LATENT)], ids=["NeuralODE", "LatentODE"])
def test_zero_weights_train_exactly_as_without_them(estimator):
    X = SPIRALS if isinstance(estimator, NeuralODE) else latent_series()
    plain = fitted(estimator, X)
    explicit = fitted(type(estimator)(**estimator.get_params()).set_params(kinetic_weight=0.0, jacobian_weight=0.0), X)
    for name, value in plain.module_.state_dict().items():
        assert torch.equal(value, explicit.module_.state_dict()[name]), name
    assert plain.history_.to_frame()["train_loss"].tolist() == explicit.history_.to_frame()["train_loss"].tolist()


@pytest.mark.parametrize("estimator_class", [NeuralODE, LatentODE])
@pytest.mark.parametrize("name", ["kinetic_weight", "jacobian_weight"])
def test_a_negative_weight_is_refused_naming_it(estimator_class, name):
    # Declared constraints raise scikit-learn's message shape, as every other hyperparameter does.
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {estimator_class.__name__}"):
        estimator_class(**{name: -0.1}).fit(SPIRALS[:, :, :1], t=T)


def test_noise_injection_and_a_penalty_are_refused_together():
    with pytest.raises(InputError, match="jacobian_weight"):
        NeuralODE(**NODE, noise_std=0.1, jacobian_weight=0.1).fit(SPIRALS, t=T)


def kinetic_energy(model: NeuralODE) -> float:
    """Mean ‖f‖² of the fitted field over the data's states (user units)."""
    states = SPIRALS.reshape(-1, 2)
    return float(np.mean(np.sum(model.vector_field(states) ** 2, axis=-1)))


def test_a_kinetic_weight_slows_the_learned_field():
    # Long enough for the unpenalised field to learn the spirals' speed (about 0.9 here, 0.01 with the penalty).
    settings = dict(NODE, max_epochs=12, validation_fraction=0.0)
    plain = fitted(NeuralODE(**settings))
    penalised = fitted(NeuralODE(**settings, kinetic_weight=10.0))
    assert kinetic_energy(penalised) < 0.3 * kinetic_energy(plain)


def test_a_jacobian_weight_changes_the_latent_fit_reproducibly_and_survives_save_and_load(tmp_path):
    X = latent_series()
    plain = fitted(LatentODE(**LATENT), X)
    first = fitted(LatentODE(**LATENT, kinetic_weight=0.5, jacobian_weight=0.5), X)
    again = fitted(LatentODE(**LATENT, kinetic_weight=0.5, jacobian_weight=0.5), X)
    weights = [p for p in first.module_.field.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights, again.module_.field.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(weights, plain.module_.field.parameters()))
    first.save(tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.get_params()["jacobian_weight"] == 0.5 and loaded.get_params()["kinetic_weight"] == 0.5
    np.testing.assert_array_equal(loaded.transform(X, t=T), first.transform(X, t=T))
