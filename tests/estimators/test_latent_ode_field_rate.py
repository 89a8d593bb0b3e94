"""The latent field's own learning rate keeps LatentODE's learned dynamics slow.

At the rate shared with the encoder and decoder, the latent field learns a fast rotation in the first
iterations, before the model fits anything, and dopri5 takes several times the steps
(benchmarks/latent_evaluations.py). A lower ``ode_learning_rate_scale`` keeps it slow.
"""

from __future__ import annotations

import warnings

import pytest

from dynlearn import ConvergenceWarning, LatentODE
from dynlearn.datasets import make_periodic
from dynlearn.solvers import count_evaluations
from dynlearn.training import Callback

# The paper's toy data and model sizes (the defaults), a few epochs: 4 minibatches of 50 series per epoch.
N_SERIES, EPOCHS, BATCH = 200, 12, 50
ITERATIONS_PER_EPOCH = N_SERIES // BATCH
# Latent-solve evaluations per training iteration in the last epoch (about 20 at the start). Measured at these
# settings (random_state=0, one torch thread): 84 at ode_learning_rate_scale=0.3, 282 at the shared rate (1).
EVALUATION_BOUND = 150


class _EvaluationsPerEpoch(Callback):
    """Solver evaluations counted in each epoch, read from an open ``count_evaluations`` block."""

    def __init__(self, counted):
        self.counted, self.seen, self.per_epoch = counted, 0, []

    def on_epoch_end(self, state):
        self.per_epoch.append(self.counted.nfe - self.seen)
        self.seen = self.counted.nfe


def _last_epoch_evaluations_per_iteration(**settings) -> float:
    frame = make_periodic(n_series=N_SERIES, random_state=0)
    with count_evaluations() as counted, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        epochs = _EvaluationsPerEpoch(counted)
        LatentODE(
            max_epochs=EPOCHS, batch_size=BATCH, validation_fraction=0.0, patience=None, refine_steps=0,
            device="cpu", n_threads=1, random_state=0, callbacks=[epochs], **settings,
        ).fit(frame)  # fmt: skip
    assert len(epochs.per_epoch) == EPOCHS
    return epochs.per_epoch[-1] / ITERATIONS_PER_EPOCH


@pytest.mark.parametrize("scale, slow", [(0.3, True), (1.0, False)], ids=["field_rate_0.3", "shared_rate"])
def test_a_lower_field_rate_keeps_latent_solves_short(scale, slow):
    per_iteration = _last_epoch_evaluations_per_iteration(ode_learning_rate_scale=scale)
    assert (per_iteration < EVALUATION_BOUND) == slow, per_iteration


def test_the_field_rate_is_its_own_parameter_group_and_decays_with_the_rest():
    model = LatentODE(
        latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,), max_epochs=2, batch_size=8,
        validation_fraction=0.0, patience=None, refine_steps=0, learning_rate_decay=0.5, ode_learning_rate_scale=0.25,
        device="cpu", random_state=0,
    )  # fmt: skip
    rates = []

    class _Rates(Callback):
        def on_epoch_end(self, state):
            rates.append([group["lr"] for group in state.optimizer.param_groups])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(callbacks=[_Rates()]).fit(make_periodic(n_series=8, n_times=10, random_state=0))
    # The rates the next epoch is stepped at, after each epoch's decay: the field's a quarter of the rest's.
    for rest, own in rates:
        assert own == pytest.approx(0.25 * rest)
    assert rates[1][0] == pytest.approx(0.5 * rates[0][0])
