"""LatentODEClassifier: a Latent ODE trained jointly with a classifier on its latent initial state."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch.nn import functional

from .._compat import Interval
from ..exceptions import input_error
from ..nn import make_mlp
from ._base import PENALTY_CONSTRAINTS, guarded_fit
from ._latent_ode import _ENCODE_CHUNK, LatentODE, _LatentODEModel, _Schedule
from ._odernn import _SeriesClassifier, _series_labels


class _LatentODEClassifierModel(_LatentODEModel):
    """The Latent ODE's modules plus ``head``, a map from ``z0`` to class scores."""

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        encoder_dim: int,
        encoder_layers: Sequence[int],
        ode_layers: Sequence[int],
        decoder_layers: Sequence[int],
        activation: str,
        n_classes: int,
        head_layers: Sequence[int],
        n_inputs: int = 0,
        interpolation: str = "previous",
    ):
        super().__init__(n_features, latent_dim, encoder_dim, encoder_layers, ode_layers, decoder_layers, activation,
                         n_inputs, interpolation)
        self.head = make_mlp(latent_dim, n_classes, tuple(head_layers), activation)


class LatentODEClassifier(_SeriesClassifier, ClassifierMixin, LatentODE):
    """Latent ODE trained jointly with a classifier on the latent initial state.

    The per-series classification of Rubanova, Chen & Duvenaud, "Latent ODEs
    for Irregularly-Sampled Time Series", NeurIPS 2019 (their PhysioNet
    in-hospital mortality task). The model is :class:`LatentODE` (an
    ODE-RNN encoder gives ``q(z0 | x)``, a latent neural ODE is decoded to
    observations) with a head that maps ``z0`` to class scores. Training
    minimises, per minibatch::

        -(importance-weighted bound, per target entry) + classification_weight * cross-entropy

    where the cross-entropy is that of the head applied to the bound's own
    draws of ``z0`` (averaged over the ``n_samples_train`` draws and the
    series), as in the paper. The bound, the KL warm-up and the learning-rate
    schedule are those of :class:`LatentODE`. Validation (early stopping)
    scores the bound at weight 1 plus the weighted cross-entropy at the
    posterior mean of ``z0``, the point :meth:`predict_proba` uses: a
    deterministic function of the weights.

    Predictions: each series is encoded from all its observed entries
    (missing entries never enter the encoder) and the head is applied to
    the posterior mean of ``z0`` at the series' first time (refined first
    when ``refine_steps > 0``, as in :class:`LatentODE`). ``predict``
    returns labels; trajectories are :meth:`predict_trajectory` (decoded
    from the posterior mean) and :meth:`sample` (decoded from draws), and
    :meth:`transform` gives the posterior mean of ``z0``, as in
    :class:`LatentODE`.

    Labels: one per series, aligned as in :class:`ODERNNClassifier` (rows
    of a 3-D array, items of a list, series of a long frame in order of
    first appearance; a pandas Series indexed by series id is aligned by
    id). ``cross_val_score(clf, X, y, cv=5, scoring="roc_auc")`` works with
    X a 3-D array or a list of series. A 2-D array is one series.

    Parameters not listed below are those of :class:`LatentODE`.

    Parameters
    ----------
    classification_weight : float, default=100.0
        Weight of the cross-entropy against minus the bound (the paper's
        ``ce_weight``; the bound is per target entry, like the paper's
        per-entry likelihood). 0 trains the Latent ODE alone and leaves the
        head at its initial, near-uniform scores.
    head_hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the head, with ``activation`` between layers;
        ``()`` is linear (the paper used two layers of 300 ReLU units).
    observed_fraction : float, default=1.0
        Share of each series' observation times shown to the encoder in
        training. 1 (unlike :class:`LatentODE`'s 0.5) trains the head on
        codes of whole series, which is what it sees when predicting; the
        paper's classification run also shows the encoder every point.

    obs_std : float, default=0.1
        Standard deviation of the observation noise in standardised units.
        Not the paper's 0.01: at 0.01 the reconstruction term outweighs the
        cross-entropy for many epochs and the head learns slowly (on
        italy_power_demand, test accuracy 0.57 against 0.66 at 0.1 with the
        earlier 10% validation split and patience 20).
    validation_fraction : float, default=0.0
        Share of series held out for early stopping; 0 trains on every series (see ``patience``).
    patience : int or None, default=None
        Every fit trains ``max_epochs`` on every series, as
        :class:`ODERNNClassifier` does: labelled series are scarce, and a
        held-out tenth of a small set stops training on noise (on
        italy_power_demand, 67 training series, test accuracy 0.66 with a
        10% split and patience 20 against 0.90 without). With hundreds of
        series, ``validation_fraction=0.1, patience=20`` stops early on
        held-out series.
    covariates : list of str or int, str or None, default=None
        Known inputs driving each series, as in :class:`LatentODE`: the
        encoder reads them at every row it encodes and the latent field is
        ``f(z, u(t))``, so ``z0`` (which the head reads) can code how a
        series responds to its input, e.g. a gain or a damping that the
        states alone do not reveal. Inputs must be known at every row, in
        ``fit`` and in every later call.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the latent field reads the inputs between samples, as in :class:`LatentODE`.
    static_covariates : list of str or int, str or None, default=None
        Per-series constants (a patient's age, a machine's type): value
        columns of X, one value per series (it may be given on any of the
        series' rows and left blank on the others; two different values in
        one series are refused). They enter the model like ``covariates``
        held constant over the whole series, so the dynamics and the initial
        state depend on them. Queries need not carry them: they are read
        from each series' history (``simulate``, where the model has it,
        takes them as ``static_covariates=``). Outputs hold the other
        columns only.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of ``predict_proba``.
    module_ : torch.nn.Module
        :class:`LatentODE`'s ``encoder``, ``posterior``, ``field`` and
        ``decoder``, and the classification ``head``.
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import LatentODEClassifier
    >>> t = np.linspace(0, 5, 12)
    >>> freq = np.array([0.2, 0.2, 1.0, 1.0])
    >>> X = np.sin(2 * np.pi * freq[:, None, None] * t[None, :, None])
    >>> clf = LatentODEClassifier(latent_dim=2, encoder_dim=4, encoder_layer_sizes=(8,), ode_layer_sizes=(8,),
    ...                           solver="rk4", max_epochs=2, random_state=0)
    >>> clf.fit(X, ["slow", "slow", "fast", "fast"], t=t).predict_proba(X, t=t).shape
    (4, 2)
    >>> clf.transform(X, t=t).shape
    (4, 2)
    """

    # The dynamics penalties and the field's own rate are LatentODE's alone: the classifier's training keeps its
    # plain bound and one rate (the field's rate was measured on LatentODE's reconstruction only).
    _parameter_constraints = {
        **{
            name: rule
            for name, rule in LatentODE._parameter_constraints.items()
            if name not in PENALTY_CONSTRAINTS and name != "ode_learning_rate_scale"
        },
        "classification_weight": [Interval(Real, 0, None, closed="left")],
        "head_hidden_layer_sizes": [tuple, list],
    }

    def __init__(
        self,
        latent_dim: int = 10,
        encoder_dim: int = 20,
        encoder_layer_sizes: Sequence[int] = (100, 100),
        ode_layer_sizes: Sequence[int] = (100, 100),
        decoder_layer_sizes: Sequence[int] = (),
        head_hidden_layer_sizes: Sequence[int] = (),
        classification_weight: float = 100.0,
        activation: str = "tanh",
        obs_std: float = 0.1,
        n_samples_train: int = 1,
        kl_warmup_epochs: int = 10,
        kl_anneal_rate: float = 0.99,
        observed_fraction: float = 1.0,
        task: str = "interpolation",
        refine_steps: int = 0,
        refine_rate: float = 0.02,
        encoder_solver: str = "euler",
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int | str = 50,
        learning_rate: float = 1e-2,
        learning_rate_decay: float = 0.999,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.0,
        patience: int | None = None,
        standardize: bool = True,
        device: str = "auto",
        n_threads: int | str | None = "auto",
        dtype: str = "float32",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        checkpoint: Any = None,
        callbacks: Sequence[Any] | None = None,
        covariates: Sequence[Any] | str | None = None,
        covariate_interpolation: str = "previous",
        static_covariates: Sequence[Any] | str | None = None,
    ):
        super().__init__(
            latent_dim=latent_dim,
            encoder_dim=encoder_dim,
            encoder_layer_sizes=encoder_layer_sizes,
            ode_layer_sizes=ode_layer_sizes,
            decoder_layer_sizes=decoder_layer_sizes,
            activation=activation,
            obs_std=obs_std,
            n_samples_train=n_samples_train,
            kl_warmup_epochs=kl_warmup_epochs,
            kl_anneal_rate=kl_anneal_rate,
            observed_fraction=observed_fraction,
            task=task,
            refine_steps=refine_steps,
            refine_rate=refine_rate,
            encoder_solver=encoder_solver,
            solver=solver,
            rtol=rtol,
            atol=atol,
            adjoint=adjoint,
            max_num_steps=max_num_steps,
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_decay=learning_rate_decay,
            ode_learning_rate_scale=1.0,
            weight_decay=weight_decay,
            validation_fraction=validation_fraction,
            patience=patience,
            standardize=standardize,
            device=device,
            n_threads=n_threads,
            dtype=dtype,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
            checkpoint=checkpoint,
            callbacks=callbacks,
            covariates=covariates,
            covariate_interpolation=covariate_interpolation,
            static_covariates=static_covariates,
        )
        self.head_hidden_layer_sizes = head_hidden_layer_sizes
        self.classification_weight = classification_weight

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any, *, t: Any = None) -> "LatentODEClassifier":
        """Train the Latent ODE and the head on the series in ``X`` and their labels ``y``.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_series, n_times, n_features) or list of ndarray
            Series in any accepted kind; NaN marks missing entries.
        y : array-like of shape (n_series,) or pandas Series indexed by series id
            One label per series, any dtype.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        batch = self._setup_fit(X, t)
        self._check_settings(batch)
        sizes = self.head_hidden_layer_sizes
        if not all(isinstance(w, Integral) and w >= 1 for w in sizes):
            raise input_error(
                "head_hidden_layer_sizes", "a tuple of positive ints", repr(sizes), "E.g. (300, 300), or () for linear."
            )
        labels = _series_labels(y, batch)
        codes = self._fit_classes(labels, fresh=not (self.warm_start and hasattr(self, "module_")))
        examples = self._examples(batch)
        examples["label"] = codes.astype(np.float64)
        train_data, valid_data = self._split_examples(examples, batch)
        self._init_module(self._build_module)
        draws = self._generator("noise")
        schedule = _Schedule(self, n_batches=math.ceil(len(train_data["values"]) / self._minibatch_size(train_data)))
        weight = float(self.classification_weight)

        def loss_fn(module: _LatentODEClassifierModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            # The bound as LatentODE trains and validates it; the head reads the z0 draws of that same pass.
            # Validation scores the head at the posterior mean, as predict_proba does.
            if module.training:
                loss, _, codes = self._negative_bound(module, data, draws, kl_weight=schedule.kl_weight)
            else:
                loss, mean, _ = self._negative_bound(module, data, None)
                codes = mean[None]
            if weight == 0:
                return loss
            logits = module.head(codes)
            target = data["label"].long().expand(codes.shape[0], -1)
            return loss + weight * functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

        self._train(loss_fn, train_data, valid_data, callbacks=[schedule])
        return self

    def _build_module(self) -> _LatentODEClassifierModel:
        return _LatentODEClassifierModel(
            self._n_states,
            self.latent_dim,
            self.encoder_dim,
            self.encoder_layer_sizes,
            self.ode_layer_sizes,
            self.decoder_layer_sizes,
            self.activation,
            len(self.classes_),
            self.head_hidden_layer_sizes,
            self._n_inputs,
            self.covariate_interpolation,
        )

    def fit_transform(self, X: Any, y: Any = None, *, t: Any = None) -> np.ndarray:
        """``fit(X, y, t=t)`` then ``transform(X, t=t)``: the posterior mean of ``z0`` per series."""
        return self.fit(X, y, t=t).transform(X, t=t)

    # ------------------------------------------------------------- predict
    def _logits(self, X: Any, t: Any = None) -> np.ndarray:
        check_is_fitted(self, "module_")
        batch = self._check_input(X, t)
        mean, _, _ = self._posterior(batch, path=self._history_path(batch))
        module = self.module_.eval()
        with torch.no_grad():
            pieces = [module.head(mean[s : s + _ENCODE_CHUNK]) for s in range(0, len(mean), _ENCODE_CHUNK)]
        return torch.cat(pieces).cpu().double().numpy()

    def predict_trajectory(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """Posterior-mean trajectory of each series at query times (:meth:`LatentODE.predict`).

        ``t`` holds query times and ``X_t`` the observation times of an array
        or list ``X``, as for :meth:`LatentODE.predict`.
        """
        return LatentODE.predict(self, X, t, X_t=X_t)
