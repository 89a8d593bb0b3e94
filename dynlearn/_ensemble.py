"""Seed ensembles: one estimator fitted from several random starts, its forecasts averaged.

A neural model fitted on one short real series lands in a different local
optimum for every seed, and its forecast error can differ several-fold
between seeds. Averaging the forecasts of a few members fitted from
different seeds removes most of that spread (the ensemble's error is at most
the members' mean error under squared loss, by convexity) at the cost of
fitting each member.
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ._random import numpy_stream
from .exceptions import input_error
from .metrics import forecast_score

__all__ = ["SeedEnsemble"]


class SeedEnsemble(BaseEstimator):
    """Clones of one forecaster fitted with different seeds; forecasts averaged.

    Each member is ``clone(estimator)`` with its own ``random_state`` drawn
    from this ensemble's ``random_state``, fitted on the same data.
    ``predict`` averages the members' forecasts (``simulate`` their
    simulations); ``predict_quantiles`` and
    ``predict_interval`` average their quantiles level by level (quantile
    averaging, which keeps lower ≤ upper and sits between the members'
    bands); ``sample`` pools draws from every member, so the spread between
    members enters the samples. An estimator with a ``checkpoint`` gives each
    member a folder of its own inside it (``member_0``, ``member_1``, ...),
    so a refit with the same seeds resumes every member.

    Parameters
    ----------
    estimator : estimator
        An unfitted dynlearn forecaster (anything with a ``random_state``
        parameter and ``predict(X, t)``), e.g. ``NeuralODE()``.
    n_members : int, default=5
        How many members to fit. Fit time grows linearly with it.
    random_state : int, RandomState or None, default=None
        Seeds the members' seeds; an int makes the whole ensemble
        reproducible.

    Attributes
    ----------
    estimators_ : list of estimator
        The fitted members, in the order of ``member_seeds_``.
    member_seeds_ : ndarray of int
        The ``random_state`` each member was fitted with.
    n_features_in_ : int
        Number of variables seen in ``fit``.
    feature_names_in_ : ndarray of str
        Variable names seen in ``fit`` (frames only).

    Examples
    --------
    >>> from dynlearn import NeuralODE, SeedEnsemble
    >>> from dynlearn.datasets import make_damped_oscillator
    >>> frame = make_damped_oscillator(n_series=4, n_times=10, random_state=0)
    >>> ensemble = SeedEnsemble(NeuralODE(max_epochs=2), n_members=2, random_state=0).fit(frame)
    >>> ensemble.predict(frame, t=[10.0, 11.0]).shape
    (8, 4)
    """

    def __init__(self, estimator: Any = None, n_members: int = 5, random_state: Any = None) -> None:
        self.estimator = estimator
        self.n_members = n_members
        self.random_state = random_state

    # ----------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "SeedEnsemble":
        """Fit ``n_members`` clones of ``estimator``, each with its own seed.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Training series, as the estimator's ``fit`` takes them.
        y : None
            Passed on (forecasters ignore it).
        **fit_params
            Passed to every member's ``fit`` (e.g. ``t=`` for arrays).

        Returns
        -------
        self
        """
        self._check_params()
        seeds = _stream(self.random_state, "members").integers(0, 2**31 - 1, size=self.n_members)
        members = [self._member(k, seed).fit(X, y, **fit_params) for k, seed in enumerate(seeds)]
        self.estimators_ = members
        self.member_seeds_ = seeds
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(members[0], name):
                setattr(self, name, getattr(members[0], name))
        return self

    def _member(self, k: int, seed: Any) -> Any:
        """The ``k``-th member: a clone with its seed, and a checkpoint folder of its own (``member_k``) when the
        estimator checkpoints (one folder would hold one member's run, which the next member's seed refuses)."""
        member = clone(self.estimator).set_params(random_state=int(seed))
        checkpoint = member.get_params(deep=False).get("checkpoint")
        if checkpoint is not None:
            from .training import Checkpoint

            every = checkpoint.every if isinstance(checkpoint, Checkpoint) else 1
            folder = Path(checkpoint.directory if isinstance(checkpoint, Checkpoint) else checkpoint) / f"member_{k}"
            member.set_params(checkpoint=Checkpoint(folder, every=every))
        return member

    def _check_params(self) -> None:
        if self.estimator is None or not hasattr(self.estimator, "fit") or not hasattr(self.estimator, "predict"):
            raise input_error("estimator", "an unfitted dynlearn forecaster such as NeuralODE()",
                              repr(self.estimator), "Pass e.g. SeedEnsemble(NeuralODE(), n_members=5).")
        if "random_state" not in self.estimator.get_params(deep=False):
            raise input_error("estimator", "an estimator with a random_state parameter (members differ by seed)",
                              type(self.estimator).__name__, "Wrap a neural dynlearn estimator.")
        if isinstance(self.n_members, bool) or not isinstance(self.n_members, Integral) or self.n_members < 1:
            raise input_error("n_members", "an int of at least 1", repr(self.n_members),
                              "Pass e.g. n_members=5.")

    # ------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, **kwargs: Any) -> Any:
        """The members' mean forecast, in the format of one member's ``predict``.

        Parameters
        ----------
        X, t, **kwargs
            As for the estimator's ``predict`` (e.g. ``X_t=`` for arrays).
        """
        check_is_fitted(self, "estimators_")
        return _average([member.predict(X, t, **kwargs) for member in self.estimators_], self._columns())

    def predict_quantiles(self, X: Any, t: Any = None, quantiles: Any = (0.05, 0.95), **kwargs: Any) -> Any:
        """The members' quantiles averaged level by level (see the estimator's ``predict_quantiles``)."""
        check_is_fitted(self, "estimators_")
        self._require("predict_quantiles")
        outputs = [member.predict_quantiles(X, t, quantiles, **kwargs) for member in self.estimators_]
        return _average(outputs, self._columns())

    def predict_interval(self, X: Any, t: Any = None, coverage: float = 0.9, **kwargs: Any) -> Any:
        """The members' central intervals averaged bound by bound (see the estimator's ``predict_interval``)."""
        check_is_fitted(self, "estimators_")
        self._require("predict_interval")
        outputs = [member.predict_interval(X, t, coverage, **kwargs) for member in self.estimators_]
        return _average(outputs, self._columns())

    def simulate(self, x0: Any, t: Any, **kwargs: Any) -> np.ndarray:
        """The members' mean simulation from explicit initial states (see the estimator's ``simulate``).

        For models driven by known inputs (``covariates=``) this is the
        ensemble's free-run simulation under the given input signal.

        Parameters
        ----------
        x0, t, **kwargs
            As for the estimator's ``simulate`` (e.g. ``covariates=`` for the
            input signal).
        """
        check_is_fitted(self, "estimators_")
        self._require("simulate")
        return _average([member.simulate(x0, t, **kwargs) for member in self.estimators_], None)

    def sample(self, X: Any = None, t: Any = None, n_samples: int = 100, random_state: Any = None,
               **kwargs: Any) -> Any:
        """``n_samples`` draws pooled from the members (as equal shares as they divide).

        The output has the format of one member's ``sample``: a leading
        sample axis for arrays, a ``sample`` index level (0, 1, ...) for
        frames.
        """
        check_is_fitted(self, "estimators_")
        self._require("sample")
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise input_error("n_samples", "an int of at least 1", repr(n_samples), "Pass e.g. n_samples=100.")
        shares = np.diff(np.linspace(0, n_samples, len(self.estimators_) + 1).round().astype(int))
        seeds = _stream(random_state, "sampling").integers(0, 2**31 - 1, size=len(shares))
        draws = [member.sample(X, t, n_samples=int(share), random_state=int(seed), **kwargs)
                 for member, share, seed in zip(self.estimators_, shares, seeds) if share > 0]
        return _pool(draws)

    def score(self, X: Any, y: Any = None, *, t: Any = None, horizon: Any = None) -> float:
        """R² of the ensemble's forecasts of each series' last ``horizon`` (see :func:`dynlearn.metrics.forecast_score`).

        Without ``horizon``: the mean of the members' own ``score``.
        """
        check_is_fitted(self, "estimators_")
        if horizon is not None:
            return forecast_score(self, X, horizon, t=t)
        return float(np.mean([member.score(X, t=t) for member in self.estimators_]))

    def _require(self, method: str) -> None:
        if not hasattr(self.estimators_[0], method):
            raise AttributeError(f"{type(self.estimators_[0]).__name__} has no {method}, so neither has its SeedEnsemble")

    def _columns(self) -> list[Any] | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else list(names)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        if self.estimator is not None and hasattr(self.estimator, "__sklearn_tags__"):
            # NaN marks a missing entry for dynlearn's estimators: the members decide what input they take.
            tags.input_tags = self.estimator.__sklearn_tags__().input_tags
        return tags


def _stream(random_state: Any, name: str) -> np.random.Generator:
    """Random stream ``name`` of ``random_state``; fresh OS entropy when it is None."""
    seed = _seed_of(random_state)
    return np.random.default_rng() if seed is None else numpy_stream(seed, name)


def _seed_of(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, (Integral, np.integer)):
        return None if random_state is None else int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise input_error("random_state", "None, an int or a numpy RandomState", repr(random_state),
                      "Pass e.g. random_state=0.")


def _average(outputs: list[Any], columns: list[Any] | None) -> Any:
    """Entry-wise mean of members' outputs of one format (frames: their variable columns; arrays; lists of arrays)."""
    first = outputs[0]
    if isinstance(first, tuple):  # (lower, upper) of predict_interval
        return tuple(_average([output[i] for output in outputs], columns) for i in range(len(first)))
    if isinstance(first, pd.DataFrame):
        names = [c for c in (columns or []) if c in first.columns] or list(first.select_dtypes("number").columns)
        mean = first.copy()
        mean[names] = np.mean([output[names].to_numpy(dtype=float) for output in outputs], axis=0)
        return mean
    if isinstance(first, list):
        return [np.mean([output[i] for output in outputs], axis=0) for i in range(len(first))]
    return np.mean(np.stack([np.asarray(output, dtype=float) for output in outputs]), axis=0)


def _pool(draws: list[Any]) -> Any:
    """Members' samples joined along their sample axis, the sample count restarting at 0."""
    first = draws[0]
    if isinstance(first, pd.DataFrame):
        level = first.index.names.index("sample")
        pieces, offset = [], 0
        for draw in draws:
            numbers = draw.index.get_level_values(level)
            shifted = draw.copy()
            shifted.index = shifted.index.set_levels(shifted.index.levels[level] + offset, level=level)
            pieces.append(shifted)
            offset += int(numbers.max()) + 1
        return pd.concat(pieces)
    if isinstance(first, list) and first and isinstance(first[0], list):
        return [sample for draw in draws for sample in draw]
    return np.concatenate([np.asarray(draw) for draw in draws], axis=0)
