"""What every dynlearn estimator shares: parameters, data entry, scaling, device, pickling."""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import math
import os
import time
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._compat import Interval, StrOptions, available_if, validate_parameter_constraints
from .._random import numpy_stream, stream_seed, torch_stream
from ..data import (
    QueryTimes,
    SeriesBatch,
    check_query_times,
    ParquetSeries,
    SeriesSummary,
    check_series,
    input_columns,
    is_parquet_source,
    masked_mean_scale,
    parquet_series,
    split_inputs,
    summarize,
    to_user_kind,
)
from ..exceptions import ForecastRangeWarning, input_error
from ..metrics import forecast_score, r2_score_masked
from ..solvers import DynamicsPenalty, ode_method
from ..training import (
    BASE_BATCH_SIZE,
    Callback,
    Checkpoint,
    ChunkedData,
    History,
    TrainState,
    adamw,
    agree_on_seed,
    auto_batch_size,
    auto_threads,
    budget_active,
    draw_rows,
    largest_product,
    prepare_process_group,
    resolve_device,
    resolve_dtype,
    thread_budget,
    train,
)

SHARED_CONSTRAINTS: dict[str, list[Any]] = {
    "solver": [str],
    "rtol": [Interval(Real, 0, None, closed="neither")],
    "atol": [Interval(Real, 0, None, closed="neither")],
    "adjoint": ["boolean"],
    "max_num_steps": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left"), None],
    "standardize": ["boolean"],
    "device": [str],
    "n_threads": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    "dtype": [StrOptions({"float32", "float64"})],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "checkpoint": [str, os.PathLike, Checkpoint, None],
    "callbacks": [list, tuple, None],
}

# The regularisers of the learned dynamics (Finlay et al. 2020), for the estimators whose training solves an ODE.
PENALTY_CONSTRAINTS: dict[str, list[Any]] = {
    "kinetic_weight": [Interval(Real, 0, None, closed="left")],
    "jacobian_weight": [Interval(Real, 0, None, closed="left")],
}

# Parameters that do not change what a fit computes (compile= changes rounding only): a checkpoint resumes
# whatever they are.
_RESUMABLE_ACROSS = frozenset({"checkpoint", "callbacks", "verbose", "n_threads", "compile"})

# A prediction farther outside a feature's observed range than this many times the range's width triggers
# ForecastRangeWarning: nothing an estimator fitted to the data should forecast lies that far out.
RANGE_FACTOR = 10.0

# Where a checkpoint format changes, older files are refused instead of misread.
CHECKPOINT_FORMAT = 2  # 2: random streams derived and saved by name

# Attributes that live only while fit runs.
_FIT_SCRATCH = (
    "_streams", "_resume", "_fingerprints", "_series_print", "_stage", "_interrupted", "_fitting", "_fit_batch",
    "_held_series", "_continuing", "_partial",
)

# ``held`` of ``_examples``: hold out the last rows of every series in time instead of whole series.
HOLD_OUT_IN_TIME = "time"

_SHARED_FIT_NOTES = """

        Notes
        -----
        If fit raises (``TrainingError``, ``IntegrationError``, invalid
        input...), the estimator is left unfitted, or, for a ``warm_start``
        refit, as fitted before the call. On ``KeyboardInterrupt`` during
        training the best weights seen are restored, the module is put in
        eval mode and every fitted attribute is set (``n_epochs_``,
        ``best_epoch_``, ``history_``, ``training_time_``, ...) before the
        interrupt is re-raised, so the model can be used or saved. With
        ``checkpoint`` set, a fit with the same parameters and data resumes
        from the saved state (see :class:`dynlearn.training.Checkpoint`).
"""


def guarded_fit(fit: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fit`` all-or-nothing on failure, and leave a usable model on ``KeyboardInterrupt``.

    A fit that returns records ``training_time_``, its wall-clock seconds
    before ``_after_fit`` (calibration), so no estimator times itself.

    Any exception escaping ``fit`` removes the fitted attributes this call
    made (a fresh fit ends unfitted) or, for a warm-start refit of a fitted
    model, restores the model as it was before the call. A
    ``KeyboardInterrupt`` during training keeps the best weights, which the
    training loop has restored, and records ``training_time_``.
    """

    @functools.wraps(fit)
    def guarded(self: "SeriesModel", *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_fitting"):  # a fit called from another fit: the outer one guards
            return fit(self, *args, **kwargs)
        started = time.perf_counter()
        before = dict(vars(self))  # a failed fit gives back the optimiser state dropped below too
        # partial_fit always goes on from the fitted model, so a failure gives it back as it was.
        warm = (bool(self.warm_start) or fit.__name__ == "partial_fit") and "module_" in before
        if warm:  # training changes the module and the history in place
            before["module_"] = copy.deepcopy(self.module_)
            before["history_"] = copy.deepcopy(self.history_)
        self._fitting = True
        if fit.__name__ != "partial_fit":  # a fit steps an optimiser of its own: partial_fit's state no longer applies
            self.__dict__.pop("_optimizer_state", None)
        try:
            fitted = fit(self, *args, **kwargs)
            self.training_time_ = time.perf_counter() - started
            self._after_fit()
            return fitted
        except KeyboardInterrupt:
            if self.__dict__.get("_interrupted"):
                self.training_time_ = time.perf_counter() - started
            else:
                _restore(self, before, warm)
            raise
        except BaseException:
            _restore(self, before, warm)
            raise
        finally:
            for name in _FIT_SCRATCH:
                self.__dict__.pop(name, None)

    if fit.__doc__:  # every guarded fit documents what failures and interrupts leave behind
        guarded.__doc__ = fit.__doc__.rstrip() + _SHARED_FIT_NOTES.rstrip() + "\n        "
    return guarded


def _streams(estimator: "SeriesModel") -> bool:
    """Whether ``estimator`` trains from a Parquet dataset and in parts (classifiers built on such a model do not)."""
    return bool(type(estimator)._streams_parquet)


def partial_fit_method(partial_fit: Callable[..., Any]) -> Any:
    """An estimator's ``partial_fit``: guarded like ``fit``, under the thread budget; absent (``hasattr`` False) on
    subclasses that do not stream (``_streams_parquet``), such as a classifier built on the estimator.
    """
    return available_if(_streams)(_under_thread_budget(guarded_fit(partial_fit)))


def _restore(estimator: "SeriesModel", before: dict[str, Any], warm: bool) -> None:
    kept = before if warm else {k: v for k, v in before.items() if not _is_fitted_name(k)}
    estimator.__dict__.clear()
    estimator.__dict__.update(kept)


def _is_fitted_name(name: str) -> bool:
    """scikit-learn's test of a fitted attribute (``check_is_fitted``)."""
    return name.endswith("_") and not name.startswith("__")


class SeriesModel(BaseEstimator):
    """Base of dynlearn's estimators (not public).

    Subclasses declare their own ``__init__`` (scikit-learn reads parameters
    from its signature) and use the helpers below, so that every estimator
    enters data, scales it, seeds itself and pickles the same way.
    """

    _parameter_constraints: dict[str, list[Any]] = SHARED_CONSTRAINTS
    # The attribute fit sets last, which methods that need a fitted model check for.
    _fitted_attribute = "module_"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Run every public method of an estimator class under its thread budget (``n_threads``).

        Public methods are wrapped once, where the class is made, so a method
        added later (fit, predict, sample, energy, ...) gets the budget without
        code of its own; scikit-learn's own methods (``get_params``,
        ``set_params``, ...) run no model and stay as they are. The wrapper
        keeps the method's name, docstring and signature, and lives on the
        class, so clone and pickling see only parameters.
        """
        super().__init_subclass__(**kwargs)
        for name in dir(cls):
            if name.startswith("_"):
                continue
            method = inspect.getattr_static(cls, name)
            if (
                inspect.isfunction(method)
                and not (method.__module__ or "").startswith("sklearn.")
                and not getattr(method, "_under_thread_budget", False)
            ):
                setattr(cls, name, _under_thread_budget(method))

    def _thread_count(self) -> int | None:
        """Intra-op threads for a call: ``n_threads``, or the "auto" rule for ``module_`` (None: torch's own)."""
        n_threads = getattr(self, "n_threads", "auto")  # subclasses with their own __init__ may lack it
        validate_parameter_constraints(
            {"n_threads": SHARED_CONSTRAINTS["n_threads"]}, {"n_threads": n_threads}, caller_name=type(self).__name__
        )
        if isinstance(n_threads, str):
            return auto_threads(largest_product(getattr(self, "module_", None), self._rows_per_step()))
        return None if n_threads is None else int(n_threads)

    def _rows_per_step(self) -> int:
        """Minibatch rows the thread rule sizes for: the size resolved for training, else ``batch_size``.

        Before ``batch_size="auto"`` is first resolved (the module is built
        before the training examples), the rule's base size stands in.
        """
        batch_size = getattr(self, "batch_size", 1)
        if not isinstance(batch_size, str):
            return int(batch_size)
        return self.__dict__.get("batch_size_", BASE_BATCH_SIZE)

    def _minibatch_size(self, train_data: Mapping[str, torch.Tensor]) -> int:
        """Examples per minibatch for training on ``train_data``, recorded as ``batch_size_``.

        An int ``batch_size`` is used as given; ``"auto"`` applies
        :func:`dynlearn.training.auto_batch_size` to the number of examples,
        the values of one example (its largest tensor's) and ``device_``.
        Every estimator reads its size here, so a stage's learning-rate
        schedule and its training loop agree.
        """
        if isinstance(self.batch_size, str):
            if isinstance(train_data, ChunkedData):
                counts, values = train_data.sizes()
                n_examples = sum(counts)
            else:
                n_examples = len(next(iter(train_data.values())))
                values = max(math.prod(tensor.shape[1:]) for tensor in train_data.values())
            self.batch_size_ = auto_batch_size(n_examples, values, self.device_)
        else:
            self.batch_size_ = int(self.batch_size)
        return self.batch_size_

    def _steps_per_epoch(self, train_data: "Mapping[str, torch.Tensor] | ChunkedData") -> int:
        """Minibatches of one epoch on ``train_data`` (a streamed epoch's do not cross chunks), for schedules."""
        batch_size = self._minibatch_size(train_data)
        if isinstance(train_data, ChunkedData):
            counts = train_data.sizes()[0]
        else:
            counts = [len(next(iter(train_data.values())))]
        return sum(math.ceil(n / batch_size) for n in counts)

    def _apply_thread_budget(self) -> None:
        """Set torch's threads for the module just built (its size decides "auto") and record ``n_threads_``."""
        count = self._thread_count()
        if count is not None and budget_active():
            torch.set_num_threads(count)
        self.n_threads_ = torch.get_num_threads()

    # ------------------------------------------------------------ fit setup
    # Whether fit accepts a Parquet dataset and trains on it a chunk of series at a time.
    _streams_parquet = False

    def _keeps_fitted(self) -> bool:
        """Whether this fit goes on from the fitted model (``warm_start``, or ``partial_fit`` after a first call)."""
        return bool(self.warm_start or self.__dict__.get("_continuing")) and hasattr(self, "module_")

    def _fit(self, X: Any, t: Any) -> "SeriesModel":
        """The steps of ``fit`` (and of each ``partial_fit`` call) for estimators with ``partial_fit``."""
        raise NotImplementedError(
            f"{type(self).__name__} sets _streams_parquet, so it must define _fit (what fit and partial_fit run)."
        )

    def _partial_fit(self, X: Any, t: Any) -> "SeriesModel":
        """What every ``partial_fit`` does: ``_fit`` as a first fit, then one more epoch per call.

        The first call on an unfitted model sets up as ``fit`` does. Later
        calls keep scaling and structure (``_continuing``: ``_setup_fit``
        checks ``X`` against the columns seen first) and ``_train`` runs a
        single epoch without early stopping, stepping an optimiser that goes
        on from the state the call before left (``_partial``).
        """
        first = not hasattr(self, "module_")
        self._continuing, self._partial = not first, True
        if first:
            self.__dict__.pop("_optimizer_state", None)
        return self._fit(X, t)

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups; a group's ``lr_scale`` multiplies the learning rate it is stepped at."""
        return [{"params": list(self.module_.parameters())}]

    def _optimizer(self) -> torch.optim.Optimizer:
        """The AdamW ``fit`` steps, over ``_parameter_groups`` at their scaled initial rates."""
        rate = self.learning_rate
        groups = [{**group, "lr": rate * group.get("lr_scale", 1.0)} for group in self._parameter_groups()]
        return adamw(groups, lr=self.learning_rate, weight_decay=self.weight_decay)

    def _kept_optimizer(self) -> torch.optim.Optimizer:
        """``partial_fit``'s optimiser (``_optimizer``), with the state the previous call left."""
        optimizer = self._optimizer()
        if self.__dict__.get("_optimizer_state") is not None:
            optimizer.load_state_dict(self._optimizer_state)
        return optimizer

    def _setup_fit(self, X: Any, t: Any) -> "SeriesBatch | SeriesStream":
        """Validate parameters and data, record what fit saw, resolve device and seed.

        A Parquet dataset (a path, a ``pyarrow.dataset.Dataset`` or a
        :class:`~dynlearn.data.ParquetSeries`) gives a :class:`SeriesStream`
        instead of a batch, for estimators that train from one.
        """
        self._validate_params()
        self._check_solver()
        self._check_callbacks()
        if is_parquet_source(X):
            return self._setup_stream(X, t)
        reference = self.input_spec_ if self._keeps_fitted() else None  # warm_start and partial_fit: the same columns
        batch = check_series(X, t, reference=reference, owner=type(self).__name__)
        self._record_spec(batch.spec)
        batch = self._split_inputs(batch)
        _check_every_feature_observed(batch)
        self._fit_batch = batch
        self._resolve_run()
        self._resume = self._read_checkpoint(batch)
        if not self._keeps_fitted():
            self._fit_scaling(batch)
            self._record_data_range(batch)
        return batch

    def _record_spec(self, spec: Any) -> None:
        self.input_spec_ = spec
        self.n_features_in_ = spec.n_features
        if spec.feature_names is not None:
            self.feature_names_in_ = np.asarray(spec.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._resolve_covariates(spec)

    def _resolve_run(self) -> None:
        """Device, dtype, the seed of this fit and its random streams."""
        # Under torchrun (or in an initialised process group) fit trains data-parallel: each process on its own
        # device, all from rank 0's seed, so random_state=None still gives every process one split and one order.
        self.device_ = prepare_process_group(resolve_device(self.device))
        self.dtype_ = resolve_dtype(self.dtype)
        self._seed = agree_on_seed(int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max)))
        self._streams: dict[str, torch.Generator] = {}
        self._stage, self._fingerprints = 0, []

    def _setup_stream(self, X: Any, t: Any) -> "SeriesStream":
        """``_setup_fit`` for a Parquet dataset: one pass over its chunks gathers what scaling needs."""
        name = type(self).__name__
        if not self._streams_parquet:
            raise input_error(
                "X",
                f"series in memory (a DataFrame, an array or a list of arrays): {name} does not train from a "
                "Parquet dataset in chunks",
                f"{type(X).__name__} {_preview(X)}",
                "Read the data into memory with pandas.read_parquet(path) and pass the DataFrame, or fit one of "
                f"{', '.join(_streaming_estimators())}, which stream Parquet data larger than memory.",
            )
        if t is not None:
            raise input_error("t", "None for a Parquet dataset (its rows carry their times)", _preview(t),
                              "Drop t; the times are read from the 'time' column.")
        if self.checkpoint is not None:
            raise input_error(
                "checkpoint", "None when fitting on a Parquet dataset", repr(self.checkpoint),
                "Fit without a checkpoint, or call partial_fit once per epoch and save the model in between.",
            )
        source = parquet_series(X)
        continuing = self._keeps_fitted() and self.__dict__.get("_continuing")
        reference = self.input_spec_ if continuing else source.read(0).spec
        self._record_spec(reference)
        self._resolve_run()
        self._resume = None
        summary = summarize(source, reference, self._split_inputs, self._seed)
        _check_every_feature_observed_in(summary, self._state_names())
        stream = SeriesStream(source, reference, summary, self._split_inputs)
        if not self._keeps_fitted():
            self._fit_scaling(stream)
        return stream

    def _state_names(self) -> np.ndarray | None:
        """Names of the modelled columns (X's value columns less the known inputs), None for unnamed columns."""
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else np.delete(names, self._input_index)

    def _fit_scaling_from(self, summary: SeriesSummary) -> None:
        """``_fit_scaling`` and ``_record_data_range`` from a streamed summary (the same statistics)."""
        n_features = len(summary.values.count)
        if self.standardize:
            self.mean_, self.scale_ = summary.values.mean_scale()
            self.time_scale_ = summary.median_gap
        else:
            self.mean_, self.scale_, self.time_scale_ = np.zeros(n_features), np.ones(n_features), 1.0
        self.time_offset_ = summary.first_time
        if summary.inputs is not None:
            if self.standardize:
                self.covariate_mean_, self.covariate_scale_ = summary.inputs.mean_scale()
            else:
                n_inputs = len(summary.inputs.count)
                self.covariate_mean_, self.covariate_scale_ = np.zeros(n_inputs), np.ones(n_inputs)
        else:
            self.__dict__.pop("covariate_mean_", None)
            self.__dict__.pop("covariate_scale_", None)
        self.data_min_, self.data_max_ = summary.values.low.copy(), summary.values.high.copy()

    def _stream_examples(
        self, stream: "SeriesStream", make: Callable[[SeriesBatch, Any, slice], tuple[dict[str, torch.Tensor], Any]]
    ) -> tuple[ChunkedData, ChunkedData | None]:
        """Training and validation examples of a stream, a chunk at a time.

        ``make(batch, held, rows)`` gives a chunk's training and validation
        tensors; ``held`` marks the chunk's series held out for validation
        (bool per series), or is ``HOLD_OUT_IN_TIME``; ``rows`` is the slice
        of the chunk's series among all series. The held-out series are
        drawn from all of the stream's series as ``_split_examples`` draws
        them in memory, so a stream and a frame of the same rows hold out
        the same series; ``_held_series`` records them (positions among
        all). Validation rereads the chunks holding them after each epoch.
        """
        n_series = stream.n_series
        n_valid = int(round(self.validation_fraction * n_series))
        by_series = self.validation_fraction == 0 or 1 <= n_valid < n_series
        held_all = np.zeros(n_series, dtype=bool)
        if by_series and self.validation_fraction > 0:
            held_all[numpy_stream(self._seed, "split").permutation(n_series)[:n_valid]] = True
        self._held_series = np.flatnonzero(held_all) if held_all.any() else None
        last: dict[int, tuple[dict[str, torch.Tensor], Any]] = {}

        def load(k: int) -> tuple[dict[str, torch.Tensor], Any]:
            if k not in last:  # validation right after training on the same chunk does not read it again
                last.clear()
                rows = stream.source.chunk_series(k)
                last[k] = make(stream.read(k), held_all[rows] if by_series else HOLD_OUT_IN_TIME, rows)
            return last[k]

        n_chunks = stream.source.n_chunks
        train_data = ChunkedData(lambda k: load(k)[0], n_chunks, order=self._generator("chunks"))
        if self.validation_fraction == 0:
            return train_data, None
        chunks = [k for k in range(n_chunks) if not by_series or held_all[stream.source.chunk_series(k)].any()]
        empty = lambda k: {}  # noqa: E731
        valid_data = ChunkedData(lambda k: load(k)[1] or empty(k), n_chunks, chunks=chunks)
        return train_data, valid_data

    def _split_data(
        self, data: "SeriesBatch | SeriesStream", examples_of: Callable[..., dict[str, np.ndarray]]
    ) -> tuple[Any, Any]:
        """Training and validation examples tagged by ``"series"``, of data in memory or of a stream.

        ``examples_of(batch)`` gives the examples of a batch in memory;
        for a stream it is called per chunk as ``examples_of(chunk, rows,
        width)``, with the chunk's positions among all series and the
        longest series' length, so that per-series draws can be those of
        the whole data in memory. The split is ``_split_examples``'s, with
        the held-out series drawn from all series of a stream.
        """
        if not isinstance(data, SeriesStream):
            return self._split_examples(examples_of(data), data)
        width = int(data.lengths.max())

        def make(chunk: SeriesBatch, held: Any, rows: slice) -> tuple[Any, Any]:
            return self._split_examples(examples_of(chunk, rows, width), chunk, held)

        return self._stream_examples(data, make)

    def _resolve_covariates(self, spec: Any) -> None:
        """Record ``covariate_index_`` and ``static_index_``: the columns of X named as known inputs.

        Only estimators with a ``covariates`` (``static_covariates``)
        parameter have inputs; for the others, and for None, the attribute
        is absent.
        """
        for parameter, attribute in (("covariates", "covariate_index_"), ("static_covariates", "static_index_")):
            positions = input_columns(getattr(self, parameter, None), spec, parameter)
            if len(positions):
                setattr(self, attribute, positions)
            else:
                self.__dict__.pop(attribute, None)
        both = np.intersect1d(getattr(self, "covariate_index_", ()), getattr(self, "static_index_", ()))
        if len(both):
            raise input_error(
                "static_covariates",
                "columns not also named in covariates",
                f"{self.static_covariates!r}, sharing column position(s) {both.tolist()} with covariates",
                "Name a per-series constant in static_covariates only, a time-varying input in covariates only.",
            )
        if len(self._input_index) >= spec.n_features:
            raise input_error(
                "static_covariates",
                "some columns left as states to model",
                f"all {spec.n_features} value columns named as inputs",
                "Keep at least one measured variable out of covariates and static_covariates.",
            )

    @property
    def _input_index(self) -> np.ndarray:
        """Positions among X's value columns of every known input: the time-varying ones, then the static."""
        return np.concatenate([getattr(self, "covariate_index_", np.empty(0, np.int64)),
                               getattr(self, "static_index_", np.empty(0, np.int64))]).astype(np.int64)

    def _split_inputs(self, batch: SeriesBatch, argument: str = "X") -> SeriesBatch:
        """``batch`` with the known inputs (time-varying, then static) moved off its states."""
        return split_inputs(batch, getattr(self, "covariate_index_", None), argument,
                            static=getattr(self, "static_index_", None))

    @property
    def _n_inputs(self) -> int:
        """Known inputs the model reads: the ``covariates`` then the ``static_covariates`` columns."""
        return len(self._input_index)

    @property
    def _n_states(self) -> int:
        """Modelled state columns: the features seen at fit less the known inputs."""
        return self.n_features_in_ - self._n_inputs

    def _after_fit(self) -> None:
        """What a model does once a fit has succeeded (conformal models calibrate); nothing by default."""

    def _init_module(self, build: Callable[[], torch.nn.Module]) -> None:
        """Set ``module_`` to ``build()`` and start a fresh ``history_``, unless warm-starting a fitted module.

        Weights are drawn from ``random_state`` inside ``fork_rng``, so the
        global torch seed is never touched; the module ends on the fit's
        device and dtype either way.
        """
        if not self._keeps_fitted():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stream_seed(self._seed, "weights"))
                module = build()
            self.module_ = module
            self.history_ = History()
        self.module_.to(device=self.device_, dtype=self.dtype_)
        self._apply_thread_budget()

    def _build_module(self) -> torch.nn.Module:
        """A fresh module for this estimator, from its parameters and fitted attributes only.

        ``fit`` builds its module with it and :func:`dynlearn.load` rebuilds
        the module of a saved model with it, so it may read what
        ``_setup_fit`` records (``n_features_in_``, ...) but not the data.
        """
        raise NotImplementedError

    def _train(
        self, loss_fn: Any, train_data: dict[str, torch.Tensor], valid_data: dict[str, torch.Tensor] | None, **options: Any
    ) -> TrainState:
        """Run :func:`dynlearn.training.train` on ``module_`` with the estimator's optimisation settings.

        ``options`` override or add to them (a stage's ``max_epochs``,
        ``callbacks``, ``epochs_name``); the estimator's ``callbacks`` run
        after the internal ones, then the checkpoint. Each call is one
        training stage: with a checkpoint, stages the saved state has
        finished are skipped and the stage it was in resumes. Records
        ``n_epochs_`` and ``best_epoch_``, also when interrupted.
        """
        stage, resume = self._stage, self._resume
        self._stage += 1
        minibatches = self._generator("minibatches")
        callbacks = [*options.pop("callbacks", ()), *(self.callbacks or ())]
        checkpoint = self._checkpoint_spec()
        if checkpoint is not None:
            self._fingerprints.append(_fingerprint(train_data, valid_data))
            if resume is not None:
                self._check_resumed_data(resume, stage)
                if stage < resume["stage"]:
                    return TrainState(module=self.module_, history=self.history_, max_epochs=0, completed=True)
            callbacks.append(checkpoint.with_context(self._checkpoint_context(stage)))
        recorder = _KeepState()
        partial = bool(self.__dict__.get("_partial"))
        if partial:
            options = {**options, "max_epochs": 1, "patience": None, "optimizer": self._kept_optimizer()}
        batch_size = self._minibatch_size(train_data)
        if isinstance(self.batch_size, str):  # the thread rule now knows the rows of a step
            self._apply_thread_budget()
        settings = dict(
            valid_data=valid_data,
            max_epochs=self.max_epochs,
            batch_size=batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            optimizer=self._optimizer(),
            patience=self.patience,
            generator=minibatches,
            random_streams={name: g for name, g in self._streams.items() if g is not minibatches},
            verbose=self.verbose,
            history=self.history_,
            resume=resume if resume is not None and resume["stage"] == stage else None,
        )
        try:
            state = train(self.module_, loss_fn, train_data, **{**settings, **options, "callbacks": [recorder, *callbacks]})
        except KeyboardInterrupt:
            if recorder.state is not None:
                self._interrupted = True
                self.n_epochs_ = len(self.history_)
                self.best_epoch_ = recorder.state.best_epoch
            raise
        self.n_epochs_ = len(self.history_)
        self.best_epoch_ = state.best_epoch
        if partial:
            self._optimizer_state = copy.deepcopy(options["optimizer"].state_dict())
        return state

    # ---------------------------------------------------------- checkpoints
    def _check_callbacks(self) -> None:
        for callback in self.callbacks or ():
            if isinstance(callback, Checkpoint):
                raise input_error(
                    "callbacks", "Callback objects other than Checkpoint", repr(callback),
                    "Pass the checkpoint as checkpoint=..., where fit also resumes from it.",
                )
            if not isinstance(callback, Callback):
                raise input_error(
                    "callbacks", "a list of dynlearn.training.Callback objects", repr(callback),
                    "Subclass dynlearn.training.Callback and override its hooks.",
                )

    def _checkpoint_spec(self) -> Checkpoint | None:
        if self.checkpoint is None or isinstance(self.checkpoint, Checkpoint):
            return self.checkpoint
        return Checkpoint(self.checkpoint)

    def _checkpoint_parameters(self) -> dict[str, str]:
        """The parameters a checkpoint must match, as comparable text."""
        return {
            name: _canonical(value)
            for name, value in sorted(self.get_params(deep=False).items())
            if name not in _RESUMABLE_ACROSS
        }

    def _checkpoint_context(self, stage: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "estimator": type(self).__name__,
            "parameters": self._checkpoint_parameters(),
            "seed": self._seed,
            "series": self._series_print,
            "stage": stage,
            "data": list(self._fingerprints),
        }

    def _read_checkpoint(self, batch: SeriesBatch) -> dict[str, Any] | None:
        """The saved state a fresh fit resumes from (None: none, or a warm start of a fitted model).

        Refuses a state from another estimator or other parameters; the seed
        it was trained with is taken back, so ``random_state=None`` resumes too.
        """
        checkpoint = self._checkpoint_spec()
        if checkpoint is None:
            return None
        # The series as given, not only the training tensors: standardised, data in other units look the same.
        self._series_print = _fingerprint({"values": batch.values, "times": batch.times, "lengths": batch.lengths})
        if self._keeps_fitted():
            return None
        saved = checkpoint.read()
        if saved is None:
            return None
        if saved.get("format") != CHECKPOINT_FORMAT or saved.get("estimator") != type(self).__name__:
            raise input_error(
                "checkpoint",
                f"a checkpoint written by {type(self).__name__}.fit (format {CHECKPOINT_FORMAT})",
                f"{checkpoint.path}, written by {saved.get('estimator')!r} (format {saved.get('format')!r})",
                "Use another directory for each model, or delete the file to start afresh.",
            )
        ours, theirs = self._checkpoint_parameters(), saved["parameters"]
        differing = sorted(name for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name))
        if differing:
            received = ", ".join(f"{n}={theirs.get(n, '<absent>')} (now {ours.get(n, '<absent>')})" for n in differing)
            raise input_error(
                "checkpoint",
                "a checkpoint written by a fit with the same parameters",
                f"{checkpoint.path}, saved with {received}",
                "Fit with the saved parameters to resume, or use another directory (or delete the file) to "
                "start afresh; to train a fitted model further use warm_start=True.",
            )
        self._check_same_data(self._series_print, saved["series"])
        self._seed = int(saved["seed"])
        return saved

    def _check_resumed_data(self, saved: Mapping[str, Any], stage: int) -> None:
        if stage < len(saved["data"]):
            self._check_same_data(self._fingerprints[stage], saved["data"][stage])

    def _check_same_data(self, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
        if ours == theirs:
            return
        shapes = lambda prints: {k: tuple(v[0]) for k, v in prints.items()}  # noqa: E731
        if shapes(ours) != shapes(theirs):
            received = f"data of shapes {shapes(ours)}; the checkpoint's were {shapes(theirs)}"
        else:
            received = "data of the checkpoint's shapes but other values"
        raise input_error(
            "X",
            f"the data the checkpoint {self._checkpoint_spec().path} was written for",
            received,
            "Fit on the same data to resume, or use another checkpoint directory (or delete the file) to start afresh.",
        )

    def _check_learnable(self, batch: SeriesBatch) -> None:
        """Fail early on data without change over time and on malformed layer sizes."""
        _require_two_times(batch)
        for width in self.hidden_layer_sizes:
            if not isinstance(width, Integral) or width < 1:
                raise input_error(
                    "hidden_layer_sizes", "a tuple of positive ints", repr(self.hidden_layer_sizes), "E.g. (64, 64)."
                )

    def _check_solver(self) -> None:
        """Fail before any work when ``solver`` names no installed method."""
        ode_method(self.solver, "solver")

    def _fit_scaling(self, batch: "SeriesBatch | SeriesStream") -> None:
        """Scaling of values, inputs and time, and the observed range, from the training data (or a stream's summary)."""
        if isinstance(batch, SeriesStream):
            self._fit_scaling_from(batch.summary)
            return
        if self.standardize:
            self.mean_, self.scale_ = masked_mean_scale(batch.values, batch.mask)
            self.time_scale_ = _median_gap(batch)
        else:
            self.mean_ = np.zeros(batch.n_features)
            self.scale_ = np.ones(batch.n_features)
            self.time_scale_ = 1.0
        self.time_offset_ = float(batch.times[:, 0].min())
        if batch.inputs is not None:
            rows = np.broadcast_to(batch.row_mask[..., None], batch.inputs.shape)
            if self.standardize:
                self.covariate_mean_, self.covariate_scale_ = masked_mean_scale(batch.inputs, rows)
            else:
                self.covariate_mean_ = np.zeros(batch.inputs.shape[-1])
                self.covariate_scale_ = np.ones(batch.inputs.shape[-1])
        else:
            self.__dict__.pop("covariate_mean_", None)
            self.__dict__.pop("covariate_scale_", None)

    def _record_data_range(self, batch: SeriesBatch) -> None:
        """Set ``data_min_`` / ``data_max_``: each feature's observed range in user units."""
        observed = np.where(batch.mask, batch.values, np.nan)
        # Every feature is observed somewhere (_check_every_feature_observed), so no slice is all-NaN.
        self.data_min_ = np.nanmin(observed, axis=(0, 1))
        self.data_max_ = np.nanmax(observed, axis=(0, 1))

    # Advice closing ForecastRangeWarning's message; models with their own remedies (a guard, a training
    # horizon) name them.
    _range_advice = (
        "Forecast a shorter horizon, train on longer series or for more epochs, "
        "and check the forecasts on held-out data (score(X, horizon=...))."
    )

    def _note_forecast_range(self, values: np.ndarray) -> np.ndarray:
        """Warn (ForecastRangeWarning) when predictions lie far outside the range observed at fit; return them.

        ``values`` are predictions in user units with features last. A value
        counts as out of range when its distance outside the feature's
        ``[data_min_, data_max_]`` exceeds ``RANGE_FACTOR`` times the range's
        width (for a constant feature, its magnitude, or 1 when it is zero).
        Non-finite values count as infinitely far. Models fitted before the
        range was recorded are not checked.
        """
        if not hasattr(self, "data_min_") or np.size(values) == 0:
            return values
        low, high = self.data_min_, self.data_max_
        width = np.where(high > low, high - low, np.maximum(np.abs(low), np.abs(high)))
        width = np.where(width > 0, width, 1.0)
        flat = np.asarray(values, dtype=float).reshape(-1, len(low))
        beyond = np.maximum(low - flat, flat - high) / width
        beyond = np.where(np.isnan(flat), np.inf, beyond)
        row, feature = np.unravel_index(int(np.argmax(beyond)), beyond.shape)
        if beyond[row, feature] <= RANGE_FACTOR:
            return values
        names = getattr(self, "feature_names_in_", None)
        if names is not None and self._n_inputs:  # predictions hold the states only
            names = np.delete(names, self._input_index)
        name = repr(str(names[feature])) if names is not None else str(int(feature))
        warnings.warn(
            f"{type(self).__name__} predicts {flat[row, feature]:.4g} for feature {name}, "
            f"{beyond[row, feature]:.3g} times the width of its observed range "
            f"[{low[feature]:.4g}, {high[feature]:.4g}] outside it (the limit is {RANGE_FACTOR:g}): the learned "
            f"dynamics diverge where they were never trained, so these values are not a forecast. "
            f"{self._range_advice}",
            ForecastRangeWarning,
            stacklevel=_caller_level(),
        )
        return values

    def _check_input(
        self, X: Any, t: Any = None, *, time_argument: str = "t", need_times: bool = True
    ) -> SeriesBatch:
        """Validate data passed after fit against what fit saw.

        ``t`` holds X's own observation times (``time_argument`` names it in
        errors). With ``need_times``, an array or list without them is
        refused when fit's times were not the default ``0, 1, ...``: reading
        its rows at those times would be a guess.
        """
        check_is_fitted(self, self._fitted_attribute)
        batch = check_series(
            X,
            t,
            reference=self.input_spec_,
            owner=type(self).__name__,
            time_argument=time_argument,
            need_times=need_times,
        )
        return self._split_inputs(batch)

    def _simulation_inputs(
        self, covariates: Any, shape: tuple[int, int], static_covariates: Any = None, per_time_static: bool = False
    ) -> np.ndarray | None:
        """A free run's inputs, scaled, ``(n_series, n_times, n_inputs)`` (None for a model without inputs).

        ``covariates`` holds the time-varying inputs at every time,
        ``static_covariates`` each series' constants (with
        ``per_time_static``, one row per time instead: ``vector_field``'s
        points). Each is required when the model has such inputs, refused
        otherwise.
        """
        n_series, n_times = shape
        n_static = len(getattr(self, "static_index_", ()))
        n_varying = self._n_inputs - n_static
        parts = []
        if not n_varying:
            if covariates is not None:
                raise input_error(
                    "covariates", "None for a model fitted without covariates", f"shape {np.shape(covariates)}",
                    "Fit with covariates=[...] to drive the model by inputs, or drop the argument.",
                )
        else:
            expected = f"inputs of shape ({n_times}, {n_varying}) or ({n_series}, {n_times}, {n_varying})"
            if covariates is None:
                raise input_error(
                    "covariates", expected, "None",
                    f"Pass the input signal (covariates={self.covariates!r}) at every time of t, one column each.",
                )
            values = _finite_numbers(covariates, "covariates", expected)
            if values.ndim == 1 and n_varying == 1:
                values = values[:, None]
            if values.ndim == 2:
                values = values[None]
            if values.ndim != 3 or values.shape[1:] != (n_times, n_varying) or values.shape[0] not in (1, n_series):
                raise input_error("covariates", expected, f"shape {np.shape(covariates)}",
                                  "Give the inputs at every time of t, one column per covariate.")
            parts.append(np.broadcast_to(values, (n_series, n_times, n_varying)))
        if not n_static:
            if static_covariates is not None:
                raise input_error(
                    "static_covariates", "None for a model fitted without static_covariates",
                    f"shape {np.shape(static_covariates)}",
                    "Fit with static_covariates=[...] to give each series constants, or drop the argument.",
                )
        else:
            rows = n_times if per_time_static else n_series
            expected = f"constants of shape ({n_static},) or ({rows}, {n_static})"
            if static_covariates is None:
                raise input_error(
                    "static_covariates", expected, "None",
                    f"Pass each series' values of static_covariates={self.static_covariates!r}.",
                )
            values = _finite_numbers(static_covariates, "static_covariates", expected)
            values = values[None] if values.ndim == 1 else values
            if values.ndim != 2 or values.shape[1] != n_static or values.shape[0] not in (1, rows):
                raise input_error("static_covariates", expected, f"shape {np.shape(static_covariates)}",
                                  "Give one value per static covariate (per series, or one row shared by all).")
            values = values[None, :, :] if per_time_static else values[:, None, :]
            parts.append(np.broadcast_to(values, (n_series, n_times, n_static)))
        if not parts:
            return None
        return self._scale_inputs(np.concatenate(parts, axis=-1))

    # --------------------------------------------------------------- scaling
    def _scale_values(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean_) / self.scale_

    def _scale_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Known inputs on the model's scale (standardised like the states)."""
        return (inputs - self.covariate_mean_) / self.covariate_scale_

    def _unscale_values(self, values: np.ndarray) -> np.ndarray:
        return values * self.scale_ + self.mean_

    def _scale_times(self, times: np.ndarray) -> np.ndarray:
        return (times - self.time_offset_) / self.time_scale_

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=self.dtype_, device=self.device_)

    def _generator(self, name: str) -> torch.Generator:
        """Training's generator for random stream ``name`` of ``random_state``, saved in checkpoints and resumed."""
        generator = torch_stream(self._seed, name)
        if hasattr(self, "_streams"):
            self._streams[name] = generator
        return generator

    # ------------------------------------------------------------ examples
    def _window_index(self, batch: SeriesBatch, window_size: int | None,
                      longest: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training windows: ``window_size`` consecutive rows of one series, overlapping by half.

        Returns the series of each window ``(n_windows,)``, its row indices
        ``(n_windows, width)`` (rows past a series' end repeat its last row)
        and which of those slots are real rows ``(n_windows, width)``.
        ``longest`` (the longest series of a stream, for a chunk of it) sets
        the width and stride the whole data in memory would set.
        """
        longest = batch.max_len if longest is None else longest
        width = min(window_size or longest, longest)
        stride = max(1, width // 2)
        rows, series = [], []
        for i, n in enumerate(batch.lengths):
            if n < 2:
                continue
            starts = list(range(0, max(n - width, 0) + 1, stride))
            if starts[-1] + width < n:
                starts.append(n - width)
            for s in starts:
                rows.append(np.minimum(np.arange(s, s + width), n - 1))
                series.append(i)
        index = np.asarray(rows)
        series = np.asarray(series)
        real = np.arange(width)[None, :] < (batch.lengths[series, None] - index[:, :1])
        return series, index, real

    def _split_examples(
        self, examples: dict[str, np.ndarray], batch: SeriesBatch, held: np.ndarray | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Training and validation tensors from examples tagged by their ``"series"``.

        A ``validation_fraction`` of the series is held out; with too few
        series, the last examples of each series are held out instead.
        ``held`` (bool per series of ``batch``) names the held-out series
        instead, for a chunk of a stream; ``HOLD_OUT_IN_TIME`` holds out
        the last examples of each series, as data with too few series do.
        """
        series = examples.pop("series")
        rng = numpy_stream(self._seed, "split")
        valid = np.zeros(len(series), dtype=bool)
        in_time = isinstance(held, str) and held == HOLD_OUT_IN_TIME
        if held is None:
            self._held_series = None
        if held is not None and not in_time:
            valid = held[series]
        elif self.validation_fraction > 0:
            n_valid_series = int(round(self.validation_fraction * batch.n_series))
            if not in_time and n_valid_series >= 1 and batch.n_series - n_valid_series >= 1:
                held = rng.permutation(batch.n_series)[:n_valid_series]
                valid = np.isin(series, held)
                self._held_series = held  # whole series the model never trains on: conformal calibration data
            else:
                for i in np.unique(series):
                    where = np.flatnonzero(series == i)
                    k = int(round(self.validation_fraction * len(where)))
                    if 1 <= k < len(where):
                        valid[where[-k:]] = True
        to_tensors = lambda keep: {k: self._tensor(v[keep]) for k, v in examples.items()}  # noqa: E731
        return to_tensors(~valid), (to_tensors(valid) if valid.any() else None)

    # --------------------------------------------------------------- score
    # Latent models score how well their trajectories reconstruct whole series
    # (predict(X) at X's own times, every entry); the others one step ahead.
    _score_reconstructs = False

    def score(self, X: Any, y: Any = None, *, t: Any = None, horizon: Any = None) -> float:
        """R² of one-step-ahead predictions over X's observed entries.

        Each observation after the first of its series is predicted from the
        one before it; the coefficient of determination is averaged over
        features (scikit-learn's ``"uniform_average"``). Latent models
        (:class:`LatentODE`, :class:`LatentSDE`) instead score the
        reconstruction ``predict(X)`` of every observed entry from the
        posterior given the whole series: a measure of fit, not of
        forecasting skill (pass ``horizon`` for that).

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind.
        y : None
            Ignored.
        t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, as in ``fit``;
            required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``.
        horizon : int, float, Timedelta or str, default=None
            When given, the R² instead of forecasts of each series' last
            ``horizon`` (an int: observations; a float or Timedelta: a span
            of time) from the history before it, over the future's observed
            entries; see :func:`dynlearn.metrics.forecast_score`.

        Returns
        -------
        float
        """
        if horizon is not None:
            return forecast_score(self, X, horizon, t=t)
        batch = self._check_input(X, t)
        query = check_query_times(None, batch)
        predicted = self._predict_batch(batch, query)
        if self._score_reconstructs:
            return r2_score_masked(batch.values, predicted, batch.mask)
        mask = batch.mask.copy()
        mask[:, 0] = False
        if not mask.any():
            raise input_error("X", "series with at least two observation times", "single observations", "Pass longer series.")
        return r2_score_masked(batch.values, predicted, mask)

    def _predict_at(self, X: Any, t: Any, X_t: Any) -> Any:
        """``predict``'s common path: validate the history, read the query times, answer in the user's kind."""
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        return to_user_kind(self._predict_batch(batch, query), query, batch)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        """Predictions ``(n_series, n_queries, n_features)`` in user units; subclasses provide it."""
        raise NotImplementedError

    # -------------------------------------------------------------- saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write the estimator to a model file that :func:`dynlearn.load` reads back without running code.

        The file (a zip of ``model.json`` and ``weights.pt``) holds the
        parameters, the fitted attributes and the module's tensors. It is
        written to a temporary file first and renamed into place, so a
        failed write leaves an existing file at ``path`` untouched.

        Parameters
        ----------
        path : str or path-like
            Where to write, conventionally ending in ``.dlm``.

        Returns
        -------
        Path
            The path written.

        Raises
        ------
        ModelFileError
            If a parameter or attribute cannot be stored (e.g. ``random_state``
            is a ``RandomState`` instance; pass an int).
        """
        from .._persistence import save_model

        return save_model(self, path)

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if "module_" in state:
            # Tensors are stored on the CPU so a GPU-trained model unpickles anywhere.
            state = dict(state)
            state["module_"] = copy.deepcopy(state["module_"]).to("cpu")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # A model pickled before a hyperparameter existed gets that parameter's default, which keeps the
        # behaviour it was fitted with (new options default to the old behaviour), so get_params and clone work.
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and name not in self.__dict__ and parameter.default is not inspect.Parameter.empty:
                setattr(self, name, parameter.default)
        if "module_" in state:
            device = state.get("device_", torch.device("cpu"))
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            self.device_ = device
            self.module_ = self.module_.to(device)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags


def _under_thread_budget(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` run inside :func:`~dynlearn.training.thread_budget` with the estimator's thread count."""

    @functools.wraps(method)
    def run(self: SeriesModel, *args: Any, **kwargs: Any) -> Any:
        with thread_budget(self._thread_count()):
            return method(self, *args, **kwargs)

    run._under_thread_budget = True  # type: ignore[attr-defined]
    return run


# Models that carry one state across a whole series (ODE-RNN, Latent ODE) run on a clock on which the
# median series window spans this many units (the paper's toy clock, [0, 5]): on a clock of observation
# gaps a densely sampled series spans hundreds of units, the field must stay tiny, and long gaps (sparse
# shown points) blow up in training.
SERIES_WINDOW = 5.0


class _KeepState(Callback):
    """Keeps the training state, for what fit records after an interrupt."""

    def __init__(self) -> None:
        self.state: TrainState | None = None

    def on_train_begin(self, state: TrainState) -> None:
        self.state = state


def _fingerprint(*parts: Mapping[str, torch.Tensor | np.ndarray] | None) -> dict[str, list[Any]]:
    """Shape and SHA-256 of every array, to tell a checkpoint's data from other data."""
    prints: dict[str, list[Any]] = {}
    for prefix, part in zip(("train", "valid"), parts):
        for name, data in (part or {}).items():
            array = np.ascontiguousarray(data.detach().cpu().numpy() if torch.is_tensor(data) else data)
            prints[f"{prefix}.{name}"] = [list(array.shape), hashlib.sha256(array.tobytes()).hexdigest()]
    return prints


def _canonical(value: Any) -> str:
    """Text that compares equal for parameters that fit the same model."""
    if isinstance(value, np.random.RandomState):
        return "RandomState"  # the seed drawn from it is saved and taken back
    if isinstance(value, list):
        value = tuple(value)
    return repr(value)


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside dynlearn (the user's call)."""
    frame, level = inspect.currentframe(), 0
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return max(level, 1)


@dataclass(frozen=True)
class SeriesStream:
    """Training series read a chunk at a time from a Parquet dataset, with what one pass over them found.

    ``lengths`` and ``ids`` cover every series in the dataset's order (they
    stay in memory: a few bytes per series); ``read(k)`` gives chunk ``k``
    checked against ``spec`` with its known inputs split off.
    """

    source: ParquetSeries
    spec: Any
    summary: SeriesSummary
    prepare: Callable[[SeriesBatch], SeriesBatch]

    @property
    def lengths(self) -> np.ndarray:
        return self.source.lengths

    @property
    def n_series(self) -> int:
        return self.source.n_series

    def read(self, k: int) -> SeriesBatch:
        return self.prepare(self.source.read(k, reference=self.spec))


def _streaming_estimators() -> list[str]:
    """Names of dynlearn's estimators whose fit trains from a Parquet dataset (``_streams_parquet``)."""
    found, stack = set(), [SeriesModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls._streams_parquet and cls.__module__.startswith("dynlearn.estimators.") and not cls.__name__.startswith("_"):
            found.add(cls.__name__)
    return sorted(found)


def _check_every_feature_observed_in(summary: SeriesSummary, names: Any) -> None:
    """``_check_every_feature_observed`` for a streamed dataset (``names``: of the state columns, or None)."""
    never = np.flatnonzero(summary.values.count == 0)
    if len(never):
        which = [names[i] for i in never] if names is not None else [int(i) for i in never]
        raise input_error("X", "every feature observed at least once", f"no observed value (all NaN) of feature(s) "
                          f"{which[:10]}", "Drop those features, or fit on data where they are measured.")


def _check_every_feature_observed(batch: SeriesBatch) -> None:
    """Refuse training data with a feature that has no observed value: its dynamics would be made up."""
    never = np.flatnonzero(~batch.mask.any(axis=(0, 1)))
    if len(never):
        names = batch.spec.feature_names
        which = [names[i] for i in never] if names is not None else [int(i) for i in never]
        raise input_error(
            "X",
            "every feature observed at least once",
            f"no observed value (all NaN) of feature(s) {which[:10]}",
            "Drop those features, or fit on data where they are measured.",
        )


def _median_window(batch: "SeriesBatch | SeriesStream") -> float | None:
    """Median positive span from a series' first to its last observation time (None when there is none)."""
    if isinstance(batch, SeriesStream):
        return batch.summary.median_window
    spans = batch.times[np.arange(batch.n_series), batch.lengths - 1] - batch.times[:, 0]
    spans = spans[spans > 0]
    return float(np.median(spans)) if len(spans) else None


def _median_gap(batch: "SeriesBatch | SeriesStream") -> float:
    """Median positive gap between consecutive observation times (1.0 when there is none)."""
    if isinstance(batch, SeriesStream):
        return batch.summary.median_gap
    gaps = np.diff(batch.times, axis=1)[batch.row_mask[:, 1:]]
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else 1.0


def _anchor_rows(times: np.ndarray, lengths: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every (series, query): the latest row strictly before it (else the first row)."""
    series = np.repeat(np.arange(len(lengths)), queries.shape[1])
    anchors = np.empty(queries.size, dtype=np.int64)
    for i, n in enumerate(lengths):
        found = np.searchsorted(times[i, :n], queries[i], side="left") - 1
        anchors[i * queries.shape[1] : (i + 1) * queries.shape[1]] = np.clip(found, 0, n - 1)
    return series, anchors


@dataclass(frozen=True)
class _QueryGroups:
    """Queries gathered by (series, anchor, direction), each group one path through its queries in time order.

    The anchor of a query is the latest observation strictly before it (the
    first one for earlier queries, which run backwards). Slot 0 of a group's
    path is its anchor, slots ``1..`` its queries (forward groups in
    increasing time, backward ones in decreasing); padding repeats the last
    query. ``order``, ``group`` and ``position`` place query ``order[i]``
    (flat over ``(n_series, n_queries)``) at slot ``position[i] + 1`` of
    group ``group[i]``.
    """

    series: np.ndarray
    anchors: np.ndarray
    order: np.ndarray
    group: np.ndarray
    position: np.ndarray
    sizes: np.ndarray
    width: int

    def lay_out(self, at_anchor: np.ndarray, at_queries: np.ndarray) -> np.ndarray:
        """``(n_groups, width, ...)``: ``at_anchor`` per group in slot 0, the flat ``at_queries`` after it."""
        path = np.repeat(at_anchor[:, None], self.width, axis=1)
        path[self.group, self.position + 1] = at_queries[self.order]
        for g in np.flatnonzero(self.sizes + 1 < self.width):  # padding holds each group's last query
            path[g, self.sizes[g] + 1:] = path[g, self.sizes[g]]
        return path

    def gather(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Outputs ``(n_groups, width, ...)`` back at the queries, as ``shape + (...)``."""
        flat = np.empty((len(self.order),) + out.shape[2:], dtype=out.dtype)
        flat[self.order] = out[self.group, self.position + 1]
        return flat.reshape(shape + out.shape[2:])


def _query_groups(times: np.ndarray, lengths: np.ndarray, q_times: np.ndarray) -> _QueryGroups:
    """Group the queries ``(n_series, n_queries)`` by anchor and direction (see :class:`_QueryGroups`)."""
    series, anchors = _anchor_rows(times, lengths, q_times)
    flat = q_times.ravel()
    backward = flat < times[series, anchors]
    keys = (series * times.shape[1] + anchors) * 2 + backward
    order = np.lexsort((np.where(backward, -flat, flat), keys))
    new = np.r_[True, keys[order][1:] != keys[order][:-1]]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    position = np.arange(len(order)) - starts[group]
    first = order[starts]
    return _QueryGroups(
        series=series[first], anchors=anchors[first], order=order, group=group, position=position,
        sizes=np.bincount(group, minlength=len(starts)), width=int(position.max()) + 2,
    )  # fmt: skip


@dataclass(frozen=True)
class DrivenPaths:
    """Solves that reach every query of a model driven by known inputs, and where each query's answer lies.

    The queries grouped as in :class:`_QueryGroups` (one path per series,
    anchor and direction), with the inputs along each path: the anchor's
    and the queries' own, so a query never reads an input after its time.

    Attributes
    ----------
    groups : _QueryGroups
        The grouping; ``series`` and ``anchors`` are its per-path ones.
    times, inputs : ndarray of shape (n_paths, width) and (n_paths, width, n_inputs)
        Knots of each path (model clock) and the inputs there (model scale).
    lead : (ndarray, ndarray)
        Gap to the row before each anchor and the inputs there: the cubic
        reading's first backward difference.
    """

    groups: _QueryGroups
    times: np.ndarray
    inputs: np.ndarray
    lead: tuple[np.ndarray, np.ndarray]

    @property
    def series(self) -> np.ndarray:
        return self.groups.series

    @property
    def anchors(self) -> np.ndarray:
        return self.groups.anchors

    @classmethod
    def build(cls, times: np.ndarray, lengths: np.ndarray, inputs: np.ndarray, q_times: np.ndarray,
              q_inputs: np.ndarray) -> "DrivenPaths":
        """Paths from per-series ``times``/``inputs`` of the history and query ``q_times``/``q_inputs``.

        ``q_times`` is ``(n_series, n_queries)`` and ``q_inputs``
        ``(n_series * n_queries, n_inputs)``, both on the model's scales.
        """
        groups = _query_groups(times, lengths, q_times)
        g_series, g_anchor = groups.series, groups.anchors
        path_times = groups.lay_out(times[g_series, g_anchor], q_times.ravel())
        path_inputs = groups.lay_out(inputs[g_series, g_anchor], q_inputs)
        before = np.maximum(g_anchor - 1, 0)
        lead = (times[g_series, g_anchor] - times[g_series, before], inputs[g_series, before])
        return cls(groups, path_times, path_inputs, lead)

    def answers(self, out: np.ndarray) -> np.ndarray:
        """Each query's state ``(n_queries, n_out)``, in query order, from path solves ``(n_paths, width, n_out)``."""
        return self.groups.gather(out, (len(self.groups.order),))


def _finite_difference(values: np.ndarray, times: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-series time derivative by (second-order) finite differences."""
    velocity = np.zeros_like(values)
    for i, n in enumerate(lengths):
        if n >= 2:
            velocity[i, :n] = np.gradient(values[i, :n], times[i, :n], axis=0)
    return velocity


def _as_states(x: Any, width: int, argument: str, names: Any = None) -> np.ndarray:
    """States of shape (n, width) from ``x``; a labelled ``x`` (DataFrame columns, or a Series' index) is read by
    the state ``names`` the model was fitted on, in their order, not by position."""
    x = _by_state_names(x, width, argument, names)
    array = _as_numbers(x, argument, f"states of shape (n_series, {width})")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise input_error(argument, f"states of shape (n_series, {width})", f"shape {np.shape(x)}", "Pass one row per state.")
    if not np.isfinite(array).all():
        raise input_error(argument, "finite states", "NaN or inf", "Initial states must be fully known.")
    return array


def _by_state_names(x: Any, width: int, argument: str, names: Any) -> Any:
    """``x`` with its labelled states in the order of ``names``; unlabelled (default integer) states as given."""
    if names is None or len(names) != width or not isinstance(x, (pd.DataFrame, pd.Series)):
        return x
    labels = x.columns if isinstance(x, pd.DataFrame) else x.index
    if isinstance(labels, pd.RangeIndex) and len(labels) == width:  # no names: read by position
        return x
    found = {str(label): label for label in labels}
    missing = [str(name) for name in names if str(name) not in found]
    if missing:
        raise input_error(
            argument,
            f"the state columns {[str(n) for n in names]} the model was fitted on",
            f"labels {[str(label) for label in labels][:10]} (missing {missing})",
            "Name the states as at fit (they are read by name, in any order), or pass a plain array in that order.",
        )
    chosen = [found[str(name)] for name in names]
    return x[chosen] if isinstance(x, pd.DataFrame) else x.loc[chosen]


def _finite_numbers(values: Any, argument: str, expected: str) -> np.ndarray:
    """``values`` as floats, refusing NaN or inf: inputs are never filled in."""
    array = _as_numbers(values, argument, expected)
    if not np.isfinite(array).all():
        raise input_error(argument, "finite inputs at every time", "NaN or inf",
                          "Fill in the input signal; it is never filled for you.")
    return array


def _as_numbers(values: Any, argument: str, expected: str) -> np.ndarray:
    """``values`` as a float64 array, or an error naming ``argument`` for text, dates and other non-numbers."""
    if isinstance(values, (pd.DataFrame, pd.Series)):
        values = values.to_numpy()
    try:
        kind = np.asarray(values).dtype.kind
    except ValueError:  # ragged nesting: reported below as not numbers
        kind = None
    if kind in ("M", "m"):
        raise input_error(
            argument,
            f"numbers ({expected}) on the float clock of the training data",
            "datetime or timedelta values",
            "Pass numbers; for a model fitted on dates they are seconds since its first time "
            "(to forecast at dates, use predict).",
        )
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise input_error(
            argument, f"numbers ({expected})", f"{type(values).__name__} {_preview(values)}", "Convert them to floats."
        ) from None


def _point_times(t: Any, n_points: int, default: float) -> np.ndarray:
    """Times of ``n_points`` states for ``vector_field``-like methods: None (``default``), one time or one per point."""
    if t is None:
        return np.full(n_points, default)
    times = _as_numbers(t, "t", f"one time or {n_points} times, one per state")
    if times.size not in (1, n_points) or times.ndim > 1 or not np.isfinite(times).all():
        raise input_error(
            "t", f"one finite time or {n_points} finite times, one per state", f"{_preview(t)}", "Pass e.g. t=0.0."
        )
    return np.broadcast_to(times.reshape(-1), (n_points,))


def _preview(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 60 else text[:57] + "..."


def _sampling_seed(random_state: Any) -> int:
    """The base seed of one call's random draws, from its ``random_state`` argument (None, an int or a RandomState).

    The call's draws come from named streams of it (``dynlearn._random``), never from the int itself.
    """
    try:
        generator = check_random_state(random_state)
    except ValueError:
        raise input_error(
            "random_state",
            "None, an int in [0, 2**32 - 1] or a numpy RandomState",
            _preview(random_state),
            "Pass e.g. random_state=0.",
        ) from None
    return int(generator.randint(np.iinfo(np.int32).max))


def _output_times(t: Any, n_series: int) -> np.ndarray:
    """``simulate``'s output times, broadcast to ``(n_series, n_times)``."""
    expected = f"finite times of shape (n_times,) or ({n_series}, n_times)"
    t = _as_numbers(t, "t", expected)
    if t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != n_series) or t.shape[-1] < 1:
        raise input_error("t", expected, f"shape {t.shape}", "Pass the output times, starting at the time of x0.")
    if not np.isfinite(t).all():
        raise input_error(
            "t", expected, f"{int((~np.isfinite(t)).sum())} NaN or infinite time(s)", "Pass finite output times."
        )
    return np.broadcast_to(t, (n_series, t.shape[-1]))


def _require_two_times(batch: SeriesBatch, why: str = "Dynamics are learned from changes over time") -> None:
    """Refuse data in which no series has two observation times: nothing changes over time to learn from."""
    if batch.lengths.max() < 2:
        raise input_error("X", "at least one series with two or more observation times",
                          "one sample (a single time) per series", f"{why}; pass longer series.")  # fmt: skip


class DynamicsCost:
    """The weighted dynamics penalty of the training solves made for one loss.

    ``kinetic_weight * mean ∫ ‖f‖² dt + jacobian_weight * mean ∫ ‖∂f/∂z‖_F² dt``,
    means over the solved rows, integrals over each row's path in model
    time (see :class:`dynlearn.solvers.DynamicsPenalty`). A model's solve
    calls :meth:`wrap` for the field, start state and solve settings it
    integrates and :meth:`take` on the path; ``value`` then holds the sum
    of the penalties of every solve so wrapped, to add to the loss.
    """

    def __init__(self, kinetic_weight: float, jacobian_weight: float, probes: torch.Generator, repeats: int = 1):
        self.kinetic_weight = float(kinetic_weight)
        self.jacobian_weight = float(jacobian_weight)
        self.probes = probes
        self.repeats = repeats
        self.value: torch.Tensor | float = 0.0
        self._penalty: DynamicsPenalty | None = None

    @classmethod
    def for_fit(cls, estimator: "SeriesModel") -> "Callable[[], DynamicsCost] | None":
        """What makes each training loss's cost for ``estimator``'s weights; None when both weights are 0.

        Called once per ``fit``: the costs it makes draw their probes from
        one stream of ``random_state``, which moves on from batch to batch.
        """
        if not (estimator.kinetic_weight > 0 or estimator.jacobian_weight > 0):
            return None
        probes = estimator._generator("probes")
        return functools.partial(cls, estimator.kinetic_weight, estimator.jacobian_weight, probes)

    def wrap(
        self, field: Callable, y0: torch.Tensor, solve: dict[str, Any]
    ) -> tuple[DynamicsPenalty, torch.Tensor, dict[str, Any]]:
        """The augmented field, start state and solve settings for a solve of ``field`` from ``y0`` (batch, n_state).

        The ``batch`` rows are ``repeats`` copies of the minibatch's examples
        (several draws each), copy after copy: each row gets its own probe,
        drawn as a single process would draw it for the whole minibatch.
        """
        probe = None
        if self.jacobian_weight > 0:
            n_state, repeats = y0.shape[-1], self.repeats

            def draw(n: int) -> torch.Tensor:
                return torch.randn((repeats, n, n_state), generator=self.probes, dtype=y0.dtype)

            probe = draw_rows(draw, y0.shape[0] // repeats, dim=1).reshape(y0.shape).to(y0.device)
        self._penalty = DynamicsPenalty(field, y0.shape[-1], probe)
        options = self._penalty.solve_options(solve["method"], solve.get("options"))
        return self._penalty, self._penalty.initial_state(y0), {**solve, "options": options}

    def take(self, path: torch.Tensor, dim: int) -> torch.Tensor:
        """The states of a path solved from :meth:`wrap`'s start (time along ``dim``); its penalty goes to ``value``."""
        states, kinetic, jacobian = self._penalty.split(path, dim)
        self.value = self.value + self.kinetic_weight * kinetic.mean() + self.jacobian_weight * jacobian.mean()
        return states
