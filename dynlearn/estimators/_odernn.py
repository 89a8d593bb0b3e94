"""ODERNN and ODERNNClassifier: a GRU state that follows a neural ODE between irregular observations."""

from __future__ import annotations

import warnings

from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import Interval, StrOptions
from .._random import stream_seed
from ..data import QueryTimes, SeriesBatch
from ..exceptions import input_error
from ..nn import ACTIVATIONS, ODERNNEncoder, make_mlp
from ..solvers import CONTROL_INTERPOLATIONS, ode_method
from ..training import LearningRateDecay
from ._base import SeriesStream, guarded_fit, partial_fit_method
from ._intervals import ConformalIntervals
from ._base import SERIES_WINDOW, SHARED_CONSTRAINTS, SeriesModel, _anchor_rows, _median_window, _require_two_times

# Series encoded together at prediction time: bounds memory on big inputs.
_PREDICT_SERIES_CHUNK = 512
# Default fixed steps per median series window (the paper's minimum step: the time span over 50).
_STEPS_PER_WINDOW = 50
# stabilize=True: the box the hidden state is kept in while evolved to a query time is the range of the
# states the encoder reached on the training data, widened by this share of its width on each side.
_STATE_MARGIN = 0.1

# Head input width per pooling, in hidden states.
_POOLED_WIDTH = {"last": 1, "last_mean": 2}

_MODEL_CONSTRAINTS: dict[str, list[Any]] = {
    "hidden_dim": [Interval(Integral, 1, None, closed="left")],
    "ode_hidden_layer_sizes": [tuple, list],
    "gru_hidden_size": [Interval(Integral, 1, None, closed="left"), None],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "step_size": [Interval(Real, 0, None, closed="neither"), None],
    "learning_rate_decay": [Interval(Real, 0, 1, closed="right")],
}


class _ODERNNModel(nn.Module):
    """ODE-RNN encoder, a decoder to observations and, for classifiers, a head to class scores."""

    def __init__(
        self,
        n_features: int,
        hidden_dim: int,
        ode_hidden: Sequence[int],
        activation: str,
        gru_hidden: int | None,
        decoder_hidden: Sequence[int],
        n_classes: int | None = None,
        head_hidden: Sequence[int] = (),
        pooling: str = "last",
        n_inputs: int = 0,
    ):
        super().__init__()
        self.encoder = ODERNNEncoder(n_features, hidden_dim, ode_hidden, activation, gru_hidden, n_inputs)
        self.decoder = make_mlp(hidden_dim, n_features, decoder_hidden, activation)
        self.pooling = pooling
        head_in = hidden_dim * _POOLED_WIDTH[pooling]
        self.head = make_mlp(head_in, n_classes, head_hidden, activation) if n_classes else None

    def pooled(self, states: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What the head reads: the final state, with ``"last_mean"`` also the mean state over each series' rows."""
        if self.pooling == "last":
            return final
        rows = torch.arange(states.shape[1], device=states.device)[None, :] < lengths[:, None]
        weight = rows.to(states.dtype)[..., None]
        mean = (states * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1)
        return torch.cat([final, mean], dim=-1)

    def decode_at(
        self,
        states: torch.Tensor,
        times: torch.Tensor,
        anchors: torch.Tensor,
        queries: torch.Tensor,
        solve: dict,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Observations at ``queries`` (B, Q), each from the state at row ``anchors`` (B, Q) evolved to it.

        ``bounds`` keeps the evolving state in a box (see :meth:`ODERNNEncoder.evolve`). ``inputs``, for a
        driven encoder: the known inputs at the rows of ``states`` (B, n_rows, n_inputs) and at the queries
        (B, Q, n_inputs), which must then be in time order per series (see :meth:`_decode_driven`).
        """
        if inputs is not None:
            return self._decode_driven(states, times, anchors, queries, solve, bounds, *inputs)
        batch, n_queries = queries.shape
        h = states.gather(1, anchors[..., None].expand(-1, -1, states.shape[-1]))
        gaps = queries - times.gather(1, anchors)
        h = self.encoder.evolve(h.reshape(batch * n_queries, -1), gaps.reshape(-1), solve=solve, bounds=bounds)
        return self.decoder(h).reshape(batch, n_queries, -1)

    def _decode_driven(self, states, times, anchors, queries, solve, bounds, row_inputs, query_inputs):
        """``decode_at`` under known inputs held between samples (zero-order hold).

        A query after its anchor is reached through the earlier queries of
        the same anchor, in time order: the input holds the anchor's value up
        to the first of them, then each query's own value up to the next, so
        the query frame's inputs drive the forecast and none after a query's
        time reaches it. A query before its anchor (before a series' first
        observation) is integrated back holding its own input.
        """
        n_queries = queries.shape[1]
        h_anchor = states.gather(1, anchors[..., None].expand(-1, -1, states.shape[-1]))
        t_anchor = times.gather(1, anchors)
        u_anchor = row_inputs.gather(1, anchors[..., None].expand(-1, -1, row_inputs.shape[-1]))
        out, h = [], None
        for q in range(n_queries):
            start_h, start_t, held = h_anchor[:, q], t_anchor[:, q], u_anchor[:, q]
            if q > 0:
                chain = ((anchors[:, q] == anchors[:, q - 1]) & (queries[:, q - 1] > t_anchor[:, q - 1])
                         & (queries[:, q] >= queries[:, q - 1]))
                start_h = torch.where(chain[:, None], h, start_h)
                start_t = torch.where(chain, queries[:, q - 1], start_t)
                held = torch.where(chain[:, None], query_inputs[:, q - 1], held)
            gaps = queries[:, q] - start_t
            held = torch.where((gaps < 0)[:, None], query_inputs[:, q], held)
            h = self.encoder.evolve(start_h, gaps, solve=solve, bounds=bounds, covariates=held)
            out.append(h)
        return self.decoder(torch.stack(out, dim=1))


def _unpack(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Padded tensors of a minibatch, trimmed to its longest series."""
    real = data["real"] > 0.5
    lengths = real.sum(dim=1)
    width = int(lengths.max())
    return (
        data["values"][:, :width],
        data["mask"][:, :width] > 0.5,
        data["times"][:, :width],
        real[:, :width],
        lengths,
    )


def _unpack_inputs(data: dict[str, torch.Tensor], width: int) -> torch.Tensor | None:
    """The known inputs of a minibatch trimmed like :func:`_unpack`'s tensors (None without inputs)."""
    inputs = data.get("inputs")
    return None if inputs is None else inputs[:, :width]


def _driven_before(module: _ODERNNModel, values, shown, times, lengths, inputs, solve) -> torch.Tensor:
    """Every row decoded from the state evolved to it, the encoder updating only on ``shown`` entries.

    With inputs every row is on the encoder's clock, hidden ones included:
    their inputs are known, and the state crossing them must read them.
    """
    _, _, before = module.encoder(values, shown, times, lengths, solve=solve, return_before=True, covariates=inputs)
    return module.decoder(before)


def _masked_mse(predicted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.to(predicted.dtype)
    return ((predicted - values) ** 2 * weight).sum() / weight.sum().clamp_min(1)


def _shown_rows(keep: torch.Tensor, *tensors: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each series' rows where ``keep`` holds, moved to the front in time order (padding repeats the last).

    Returns the packed tensors, their lengths, and for every original row the
    packed position of the latest shown row strictly before it (0 if none).
    """
    n_rows = keep.shape[1]
    index = torch.arange(n_rows, device=keep.device).expand_as(keep)
    order = torch.sort(torch.where(keep, index, index + n_rows), dim=1).indices
    lengths = keep.sum(dim=1)
    width = int(lengths.max())
    last = torch.minimum(torch.arange(width, device=keep.device)[None, :], (lengths - 1)[:, None])
    rows = order.gather(1, last)
    packed = [
        t.gather(1, rows.reshape(rows.shape + (1,) * (t.dim() - 2)).expand(rows.shape + t.shape[2:])) for t in tensors
    ]
    shown_before = keep.cumsum(dim=1) - keep.long()
    return packed, lengths, (shown_before - 1).clamp_min(0)


def _shown_and_predicted(
    module: _ODERNNModel,
    values: torch.Tensor,
    mask: torch.Tensor,
    times: torch.Tensor,
    keep: torch.Tensor,
    anchors: torch.Tensor | None,
    solve: dict,
) -> torch.Tensor:
    """Encode only the rows in ``keep``; decode every row from its anchor's state evolved to the row's time."""
    (p_values, p_mask, p_times), lengths, latest = _shown_rows(keep, values, mask, times)
    states, _ = module.encoder(p_values, p_mask, p_times, lengths, solve=solve)
    return module.decode_at(states, p_times, latest if anchors is None else anchors, times, solve)


def _interpolated(
    module: _ODERNNModel,
    values: torch.Tensor,
    mask: torch.Tensor,
    times: torch.Tensor,
    real: torch.Tensor,
    keep: torch.Tensor,
    solve: dict,
) -> torch.Tensor:
    """Encode only the rows in ``keep``; decode every row from the latest shown row strictly before it.

    The same predictions as :func:`_shown_and_predicted` with each row's
    latest earlier shown row as anchor, for less work: a shown row's state,
    evolved from the previous shown row to its time, is what the encoder
    computed just before updating on it (``return_before``), so only the
    hidden real rows are evolved here. Each hidden row's first step reads
    the field at its anchor's state where the encoder's Euler loop evaluated
    it (``return_velocity``), so only its later steps evaluate the field.
    """
    (p_values, p_mask, p_times), lengths, latest = _shown_rows(keep, values, mask, times)
    states, _, before, velocity = module.encoder(
        p_values, p_mask, p_times, lengths, solve=solve, return_before=True, return_velocity=True
    )
    batch, n_rows = keep.shape
    dim = states.shape[-1]
    position = (keep.cumsum(dim=1) - 1).clamp_min(0)  # packed index of each shown row
    h = before.gather(1, position[..., None].expand(-1, -1, dim)).reshape(batch * n_rows, dim)
    hidden = torch.nonzero((real & ~keep).reshape(-1)).squeeze(1)
    if hidden.numel():
        series, anchor = hidden // n_rows, latest.reshape(-1)[hidden]
        gaps = times.reshape(-1)[hidden] - p_times[series, anchor]
        start = None if velocity is None else velocity[series, anchor]  # the field there, evaluated by the encoder
        h = h.index_copy(0, hidden, module.encoder.evolve(states[series, anchor], gaps, solve=solve, velocity=start))
    return module.decoder(h).reshape(batch, n_rows, -1)


def _interpolation_loss(
    module: _ODERNNModel,
    data: dict[str, torch.Tensor],
    solve: dict,
    observed_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Every observation after the first, predicted from the latest earlier row shown to the encoder.

    A random ``1 - observed_fraction`` of each series' rows is hidden from
    the encoder, which runs over the shown rows only; every observed row
    after the first is then decoded from the state after the latest shown
    row strictly before it, evolved to the row's time (hidden rows are
    interpolated, shown rows predicted one step ahead), so no target informs
    its own prediction. Rows before the first shown one are predicted from
    the initial state evolved from the series' start (see :func:`_drawn_rows`).
    """
    values, mask, times, real, lengths = _unpack(data)
    keep, mask_shown = _drawn_rows(real, mask, observed_fraction, generator)
    inputs = _unpack_inputs(data, values.shape[1])
    if inputs is not None:
        predicted = _driven_before(module, values, mask_shown & keep[..., None], times, lengths, inputs, solve)
    else:
        predicted = _interpolated(module, values, mask_shown, times, real, keep, solve)
    return _masked_mse(predicted[:, 1:], values[:, 1:], mask[:, 1:])


def _drawn_rows(
    candidates: torch.Tensor, mask: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows shown to the encoder: each of ``candidates`` with probability ``fraction``, and the first row.

    The first row is always on the encoder's clock, so a series' state
    starts at the series' start as it does in ``predict``, but its values are
    drawn like any other row's: when they are hidden the state stays at its
    initial value there. (Showing the first values every time left rows
    before the first shown one untrained: with 10% of the toy sinusoids'
    points shown at test time, they had 3.5 times the error of the rest.)
    Returns the rows and the mask with the hidden first rows' entries off.
    """
    keep = candidates.clone()
    if fraction < 1:
        keep &= torch.rand(keep.shape, generator=generator).to(keep.device) < fraction
    shown = mask.clone()
    shown[:, 0] &= keep[:, :1]
    keep[:, 0] = True
    return keep, shown


def _extrapolation_loss(
    module: _ODERNNModel,
    data: dict[str, torch.Tensor],
    solve: dict,
    observed_fraction: float,
    split: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Observations after ``split`` of each series' window, forecast from what the encoder saw before it."""
    values, mask, times, real, lengths = _unpack(data)
    last_time = times.gather(1, (lengths - 1)[:, None])
    early = (times <= times[:, :1] + split * (last_time - times[:, :1])) & real
    condition, mask_shown = _drawn_rows(early, mask, observed_fraction, generator)
    index = torch.arange(times.shape[1], device=times.device).expand_as(times)
    anchor = torch.where(condition, index, torch.zeros_like(index)).max(dim=1, keepdim=True).values
    # Forecasts start from the last shown row (the packed rows end there).
    shown = (condition.sum(dim=1, keepdim=True) - 1).expand_as(index)
    inputs = _unpack_inputs(data, values.shape[1])
    if inputs is not None:
        predicted = _driven_before(module, values, mask_shown & condition[..., None], times, lengths, inputs, solve)
    else:
        predicted = _shown_and_predicted(module, values, mask_shown, times, condition, shown, solve)
    return _masked_mse(predicted, values, mask & (index > anchor)[..., None])


class _ODERNNBase(SeriesModel):
    """What ODERNN and ODERNNClassifier share: module, internal tensors, solve options."""

    def _check_sizes(self) -> None:
        for name in ("ode_hidden_layer_sizes", "decoder_hidden_layer_sizes", "head_hidden_layer_sizes"):
            sizes = getattr(self, name, ())
            if not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1 for w in sizes):
                raise input_error(name, "a tuple of positive ints", repr(sizes), "E.g. (64,).")

    def _check_interpolation(self) -> None:
        """Refuse input readings other than the hold that the steps between observations apply."""
        if self.covariates is not None and self.covariate_interpolation != "previous":
            name = type(self).__name__
            raise input_error(
                "covariate_interpolation",
                f"'previous' for {name} (each input holds its value from one sample to the next)",
                repr(self.covariate_interpolation),
                "Use covariate_interpolation='previous', or NeuralODE or LatentODE, which also read inputs "
                "'linear' or 'cubic'.",
            )

    def _build_module(self) -> _ODERNNModel:
        classes = getattr(self, "classes_", None)  # fitted by ODERNNClassifier only
        return _ODERNNModel(
            self._n_states,
            self.hidden_dim,
            tuple(self.ode_hidden_layer_sizes),
            self.activation,
            self.gru_hidden_size,
            tuple(getattr(self, "decoder_hidden_layer_sizes", ())),
            None if classes is None else len(classes),
            tuple(getattr(self, "head_hidden_layer_sizes", ())),
            getattr(self, "pooling", "last"),
            self._n_inputs,
        )

    def _train_decaying(self, loss_fn: Any, train_data: Any, valid_data: Any) -> None:
        """Train with the learning rate decaying per minibatch (``learning_rate_decay``)."""
        decay = LearningRateDecay(self.learning_rate, self.learning_rate_decay, self._steps_per_epoch(train_data))
        self._train(loss_fn, train_data, valid_data, callbacks=[decay])

    def _series_examples(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """One example per series, padded to the batch's longest (minibatches are trimmed to theirs)."""
        return {"series": np.arange(batch.n_series), **self._internal(batch)}

    def _fit_scaling(self, batch: SeriesBatch) -> None:
        super()._fit_scaling(batch)
        # The state is carried across the whole series, so the clock is set by a series' length, not by
        # the gap between samples (see SERIES_WINDOW). On the gap clock the toy sinusoids with 10% of their
        # points shown never trained (test MSE 0.51, the data's variance, after 500 epochs).
        window = _median_window(batch)
        if self.standardize and window is not None:
            self.time_scale_ = window / SERIES_WINDOW

    def _fit_step(self, batch: SeriesBatch) -> None:
        """The longest fixed step, in internal time units."""
        if self.step_size is not None:
            self.max_step_ = float(self.step_size) / self.time_scale_
            return
        # The paper's resolution: a fiftieth of the time span. Steps as long as the typical gap between
        # shown points (the earlier default) are five times that with 10% of the toy points shown, and
        # Euler steps that long cannot follow its oscillations: test MSE 0.12 against 0.061 after 100-150
        # epochs (make_periodic, 10% shown, 800 training series).
        window = _median_window(batch)
        self.max_step_ = window / self.time_scale_ / _STEPS_PER_WINDOW if window is not None else 1.0

    def _solve_options(self) -> dict[str, Any]:
        solve = dict(
            method=self.solver, rtol=self.rtol, atol=self.atol, adjoint=self.adjoint, max_num_steps=self.max_num_steps
        )
        if not ode_method(self.solver).adaptive:
            solve["options"] = {"step_size": self.max_step_}
        return solve

    def _internal(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """Standardised values (0 under the mask), mask, internal times, real rows and known inputs, per series."""
        internal = {
            "values": np.where(batch.mask, self._scale_values(batch.values), 0.0),
            "mask": batch.mask,
            "times": self._scale_times(batch.times),
            "real": batch.row_mask,
        }
        if batch.inputs is not None:
            internal["inputs"] = self._scale_inputs(batch.inputs)
        return internal

    def _encode_chunks(self, batch: SeriesBatch, return_before: bool = False):
        """Yield (series slice, internal tensors, forward states) for chunks of series, without gradients.

        With ``return_before`` the states are paired with the states just
        before each observation's update (the evolved ones).
        """
        solve = self._solve_options()
        solve["adjoint"] = False
        module = self.module_.eval()
        internal = self._internal(batch)
        with torch.no_grad():
            for start in range(0, batch.n_series, _PREDICT_SERIES_CHUNK):
                part = slice(start, start + _PREDICT_SERIES_CHUNK)
                lengths = batch.lengths[part]
                width = int(lengths.max())
                tensors = {k: self._tensor(v[part, :width]) for k, v in internal.items() if k != "real"}
                out = module.encoder(
                    tensors["values"],
                    tensors["mask"] > 0.5,
                    tensors["times"],
                    torch.as_tensor(lengths, device=self.device_),
                    solve=solve,
                    return_before=return_before,
                    covariates=tensors.get("inputs"),
                )
                states = (out[0], out[2]) if return_before else out[0]
                yield part, tensors, states, out[1], solve


_SHARED_DOC = """
    hidden_dim : int, default=20
        Size of the hidden state.
    ode_hidden_layer_sizes : tuple of int, default=(64,)
        Hidden widths of the vector field ``f`` of ``dh/dt = f(h)``.
    gru_hidden_size : int or None, default=None
        None uses :class:`torch.nn.GRUCell` for the updates at observations;
        an int uses the paper's GRU, whose gates are one-hidden-layer MLPs of
        that width.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
        Nonlinearity between the hidden layers of the networks.
    step_size : float or None, default=None
        Longest step of fixed-step solvers, in the data's time units; each
        gap is split into equal steps no longer than this, on each series'
        own clock. None: a fiftieth of the median series window (the
        resolution of the paper's implementation, which steps at a fiftieth
        of the time span). Ignored by adaptive solvers.
    solver : str, default="euler"
        Any name of :func:`dynlearn.solvers.available_ode_methods`.
        ``"euler"``, ``"midpoint"`` and ``"rk4"`` take their steps inline, a
        few tensor operations per step. The default, Euler steps no longer
        than a fiftieth of the series window, is the resolution of the
        paper's own implementation (one Euler step for gaps shorter than the
        time span over 50, Euler steps of that length through longer ones)
        at the lowest cost per training iteration; ``"rk4"`` costs about four times as much per
        step, and adaptive methods such as ``"dopri5"`` solve each gap to
        ``rtol``/``atol`` at several times the cost.
    rtol, atol : float, default=1e-3, 1e-4
        Tolerances of adaptive solvers, on the standardised scale.
    adjoint : bool, default=False
        Backpropagate through adaptive solves with the adjoint method.
    max_num_steps : int, default=1000
        Step limit of each solve; past it :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default={max_epochs}
        Most passes over the training data; early stopping (``patience``) may end training sooner.
    batch_size : int or "auto", default=50
        Series per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=1e-2
        Initial step size of the AdamW optimiser (see ``learning_rate_decay``).
    learning_rate_decay : float, default=0.999
        Factor applied to the learning rate after every minibatch, down to a
        tenth of ``learning_rate`` (the paper's schedule); 1 keeps it constant.
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default={validation_fraction}
        Share of series held out for early stopping; 0 monitors the training loss.
    patience : int or None, default={patience}
        Epochs without improvement of the monitored loss (validation, or
        training with ``validation_fraction=0``) before training stops; None
        trains ``max_epochs``.
    standardize : bool, default=True
        Scale each feature by its observed mean and standard deviation, and
        time so that the median series window spans five units, inside the
        estimator.
    device : str, default="auto"
        "auto" (a GPU when one is present), "cpu", "cuda" or "cuda:<index>".
    n_threads : int, "auto" or None, default="auto"
        torch's intra-op threads while ``fit``, ``predict`` and the other
        public methods run; the caller's setting is restored afterwards.
        "auto" uses one thread unless a step's largest matrix product
        (``batch_size`` rows through the largest weight matrix) reaches
        ``dynlearn.training.PARALLEL_WORK`` multiply-adds, then the free
        cores (see README); None leaves torch's setting alone. ``fit``
        records the count it trained with in ``n_threads_``.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the weights and of the computations: float32 is faster, float64 more precise.
    random_state : int, RandomState or None, default=None
        Seeds weights, minibatch order and the rows hidden in training.
    verbose : int, default=0
        Show a progress bar when positive.
    warm_start : bool, default=False
        Continue training the fitted module on the next ``fit``.
    checkpoint : str, os.PathLike or Checkpoint, default=None
        Directory where the training state is saved after every epoch
        (``Checkpoint(directory, every=k)``: every ``k`` epochs); a later
        ``fit`` with the same parameters and data resumes from it exactly,
        and one after a finished fit restores its result. See
        :class:`dynlearn.training.Checkpoint`.
    callbacks : list of Callback, default=None
        :class:`dynlearn.training.Callback` objects called during training
        after the estimator's own (e.g. ``StepDecay``, ``CSVLogger``). The
        objects themselves are called, not copies, so they can collect what
        they see.
"""


def _shared_doc(**defaults: Any) -> str:
    """The parameters both estimators share, with the defaults that differ between them filled in."""
    text = _SHARED_DOC
    for name, value in defaults.items():
        text = text.replace("{" + name + "}", str(value))
    return text.strip("\n").lstrip()


class ODERNN(ConformalIntervals, _ODERNNBase):
    """ODE-RNN for series observed at irregular times with missing entries.

    The model of Rubanova, Chen & Duvenaud, "Latent ODEs for
    Irregularly-Sampled Time Series", NeurIPS 2019. A hidden state ``h``
    follows ``dh/dt = f(h)`` (a neural ODE) between the observations of a
    series and is updated by a GRU at each one, from the observed values and
    the observation mask (a missing entry informs nothing); a decoder maps
    ``h`` to the observations. Each series runs on its own clock: the batch
    is processed observation index by observation index, every series
    crossing its own gap at once, not on the union of the batch's times.

    Predictions condition on the history in ``X``: the value at a query time
    is decoded from the state just after the latest observation strictly
    before it, evolved to the query time. Inside a series' window this
    interpolates; after its last observation it forecasts.
    ``predict(X)`` gives one-step-ahead predictions at X's own times and
    :meth:`score` is their R². With ``stabilize=True`` the evolving state is
    kept inside the box of states seen in training, so a forecast far ahead
    does not follow the learned field out to where it was never trained; a
    prediction farther than 10 times the observed range from it raises a
    :class:`~dynlearn.exceptions.ForecastRangeWarning`.

    Parameters
    ----------
    task : {"interpolation", "extrapolation"}, default="interpolation"
        Training objective. ``"interpolation"``: every observation after the
        first is predicted from the encoder's state at the latest earlier
        observation it was shown, with ``1 - observed_fraction`` of the rows
        hidden from the encoder in each minibatch. ``"extrapolation"``: the
        encoder is shown the part of each series up to ``extrapolation_split``
        of its time window and the rest is forecast from there.
    observed_fraction : float in (0, 1], default=0.8
        Share of each series' rows shown to the encoder in training (a fresh
        random draw per minibatch), as the subsampling of the paper's
        training; 1 shows every row. Each series' state still starts at its
        first row when that row's values are hidden, so the rows before the
        first shown value learn the typical course from a series' start,
        which is what ``predict`` gives for a series whose first values are
        missing.
    extrapolation_split : float in (0, 1), default=0.5
        For ``task="extrapolation"``: the share of each series' time window
        the encoder conditions on.
    decoder_hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the decoder from ``h`` to observations; ``()`` is linear.
    stabilize : bool, default=True
        Keep the hidden state, while it is evolved from an observation to a
        query time, inside the box of the states the encoder reached on the
        training data (``state_min_``, ``state_max_``; the range widened by
        a tenth of its width on each side): the state follows the learned
        flow inside the box and slides along its faces instead of leaving
        it. Long forecasts then stay within what the decoder maps from
        states it was trained on, instead of following the learned field
        where it never saw data. It changes predictions only where the
        state would leave the box; ``False`` evolves the state freely.
    covariates : list of str or int, str or None, default=None
        Columns of X that are known inputs ``u(t)`` driving the series, not
        forecast (names for frames, column indices for arrays). The GRU
        reads ``[values * mask, mask, u(t_i)]`` at each observation and the
        field becomes ``dh/dt = f(h, u)``; inputs must be known at every row
        (rows with missing values still carry theirs), and ``predict`` then
        needs a query frame holding the inputs at the query times, each
        query reached through the earlier queries' inputs in time order.
        Predictions hold the state columns only; see
        ``docs/user_guide/inputs.md``.
    covariate_interpolation : {"previous"}, default="previous"
        How the inputs are read between samples: held at the last sample
        (zero-order hold), which is what the fixed steps between
        observations do. ``"linear"`` and ``"cubic"`` (taken by
        :class:`NeuralODE`) are refused with an ``InputError``.
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
    {shared}

    Attributes
    ----------
    module_ : torch.nn.Module
        ``module_.encoder`` (:class:`dynlearn.nn.ODERNNEncoder`) and ``module_.decoder``.
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit``; defined when fitted on a DataFrame.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature standardisation (of the states, without the inputs).
    time_scale_ : float
        One internal time unit in the data's units: with ``standardize=True``
        the median series window spans five internal units.
    max_step_ : float
        Longest fixed step, in units of ``time_scale_``.
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units), the reference
        of :class:`~dynlearn.exceptions.ForecastRangeWarning`.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without covariates).
    static_index_ : ndarray of int
        Positions of the ``static_covariates`` among X's value columns
        (absent without them).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without covariates).
    state_min_, state_max_ : ndarray of shape (hidden_dim,)
        The box of ``stabilize``: the range of the hidden states reached on
        the training data, widened by a tenth of its width on each side.
    conformal_leads_, conformal_residuals_, conformal_lead_edges_ : ndarray
        Calibration of the split conformal forecast intervals of
        ``predict_interval`` and ``predict_quantiles`` (see ``calibrate``),
        made by ``fit`` on the series ``validation_fraction`` holds out;
        absent until the model is calibrated.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import ODERNN
    >>> t = np.linspace(0, 6, 30)
    >>> X = np.sin(t[None, :, None] + np.arange(4)[:, None, None])  # 4 series
    >>> X[:, ::3] = np.nan  # a third of the points missing
    >>> model = ODERNN(hidden_dim=8, max_epochs=3, random_state=0).fit(X, t=t)
    >>> model.predict(X, t=[6.5, 7.0], X_t=t).shape
    (4, 2, 1)
    """

    __doc__ = __doc__.replace("{shared}", _shared_doc(max_epochs=100, validation_fraction=0.1, patience=10))

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        **_MODEL_CONSTRAINTS,
        "task": [StrOptions({"interpolation", "extrapolation"})],
        "observed_fraction": [Interval(Real, 0, 1, closed="right")],
        "extrapolation_split": [Interval(Real, 0, 1, closed="neither")],
        "decoder_hidden_layer_sizes": [tuple, list],
        "stabilize": ["boolean"],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    _range_advice = (
        "Forecast a shorter horizon, keep stabilize=True, or train on forecasts (task='extrapolation')."
    )

    def __init__(
        self,
        task: str = "interpolation",
        observed_fraction: float = 0.8,
        extrapolation_split: float = 0.5,
        hidden_dim: int = 20,
        ode_hidden_layer_sizes: Sequence[int] = (64,),
        gru_hidden_size: int | None = None,
        decoder_hidden_layer_sizes: Sequence[int] = (),
        stabilize: bool = True,
        covariates: Sequence[Any] | str | None = None,
        covariate_interpolation: str = "previous",
        static_covariates: Sequence[Any] | str | None = None,
        activation: str = "tanh",
        step_size: float | None = None,
        solver: str = "euler",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 100,
        batch_size: int | str = 50,
        learning_rate: float = 1e-2,
        learning_rate_decay: float = 0.999,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        standardize: bool = True,
        device: str = "auto",
        n_threads: int | str | None = "auto",
        dtype: str = "float32",
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        checkpoint: Any = None,
        callbacks: Sequence[Any] | None = None,
    ):
        self.task = task
        self.observed_fraction = observed_fraction
        self.extrapolation_split = extrapolation_split
        self.hidden_dim = hidden_dim
        self.ode_hidden_layer_sizes = ode_hidden_layer_sizes
        self.gru_hidden_size = gru_hidden_size
        self.decoder_hidden_layer_sizes = decoder_hidden_layer_sizes
        self.stabilize = stabilize
        self.covariates = covariates
        self.covariate_interpolation = covariate_interpolation
        self.static_covariates = static_covariates
        self.activation = activation
        self.step_size = step_size
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.max_num_steps = max_num_steps
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.device = device
        self.n_threads = n_threads
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint = checkpoint
        self.callbacks = callbacks

    _streams_parquet = True

    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "ODERNN":
        """Learn the ODE-RNN from the series in ``X``.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            Series in any accepted kind; NaN marks missing entries. A Parquet
            dataset (a path, a ``pyarrow.dataset.Dataset`` or a
            :class:`~dynlearn.data.ParquetSeries`) is read a chunk of whole
            series at a time, as :meth:`NeuralODE.fit` reads it, holding out
            the same series as in memory (see the user guide, "Data larger
            than memory"). The conformal intervals are calibrated on the
            held-out series in memory only: after a streamed fit, call
            ``calibrate`` on series in memory to get them.
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        return self._fit(X, t)

    @partial_fit_method
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> "ODERNN":
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling, clock and step size from ``X``, fresh weights); later
        calls keep them, check ``X`` against the columns seen first, and
        continue training, optimiser state included, with the learning rate
        decayed over the epochs of all calls. Each call adds one record to
        ``history_`` and records the hidden-state box of ``stabilize`` anew;
        early stopping does not apply, and the weights after the epoch are
        kept.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            As for ``fit``: in memory, or a Parquet dataset read in chunks.
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.

        Returns
        -------
        self
        """
        return self._partial_fit(X, t)

    def _fit(self, X: Any, t: Any) -> "ODERNN":
        batch = self._setup_fit(X, t)
        self._check_sizes()
        self._check_interpolation()
        _require_two_times(batch)
        if not self._keeps_fitted():
            self._fit_step(batch)
        self._init_module(self._build_module)
        solve = self._solve_options()
        generator = self._generator("noise")
        fraction, split = self.observed_fraction, self.extrapolation_split
        valid_seed = stream_seed(self._seed, "validation")

        def loss_fn(module: _ODERNNModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            # Validation hides the same rows every epoch, so its loss is comparable across epochs.
            draws = generator if module.training else torch.Generator().manual_seed(valid_seed)
            if self.task == "extrapolation":
                return _extrapolation_loss(module, data, solve, fraction, split, draws)
            return _interpolation_loss(module, data, solve, fraction, draws)

        self._train_decaying(loss_fn, *self._split_data(batch, lambda chunk, *_: self._series_examples(chunk)))
        self._record_state_range(batch)
        return self

    def _record_state_range(self, data: "SeriesBatch | SeriesStream") -> None:
        """Set ``state_min_`` / ``state_max_``: the box of hidden states the trained encoder reaches on ``data``.

        Every state counts: the one after each observation's update and the
        one evolved to it before. The box is that range widened by
        ``_STATE_MARGIN`` of its width on each side. A stream is encoded a
        chunk at a time.
        """
        low = high = None
        chunks = (data.read(k) for k in range(data.source.n_chunks)) if isinstance(data, SeriesStream) else [data]
        for batch in chunks:
            for part, _, (states, before), _, _ in self._encode_chunks(batch, return_before=True):
                real = torch.arange(states.shape[1], device=states.device)[None, :] < torch.as_tensor(
                    batch.lengths[part], device=states.device)[:, None]
                seen = torch.cat([states[real], before[real]]).cpu().double().numpy()
                low = seen.min(axis=0) if low is None else np.minimum(low, seen.min(axis=0))
                high = seen.max(axis=0) if high is None else np.maximum(high, seen.max(axis=0))
        margin = _STATE_MARGIN * (high - low)
        self.state_min_, self.state_max_ = low - margin, high + margin

    def _state_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The hidden-state box of ``stabilize`` as tensors (None: guard off, or a model fitted without one)."""
        if not self.stabilize or not hasattr(self, "state_min_"):
            return None
        return self._tensor(self.state_min_), self._tensor(self.state_max_)

    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """Observations at query times, each from the state after the latest earlier observation.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, a list of 1-D arrays, or a frame of
            (series, time) rows. None gives one-step-ahead predictions at X's
            own times (the first row of each series is reconstructed).
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        Same kind as X
            Predictions in the user's units; for frames one row per query.
        """
        return self._predict_at(X, t, X_t)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        q_times = self._scale_times(query.times)
        out = np.empty(query.times.shape + (batch.n_features,))
        times = self._scale_times(batch.times)
        bounds = self._state_bounds()
        q_inputs = None if query.inputs is None else self._scale_inputs(query.inputs)
        for part, tensors, states, _, solve in self._encode_chunks(batch):
            queries = q_times[part]
            inputs = None if q_inputs is None else (tensors["inputs"], self._tensor(q_inputs[part]))
            # Anchors from float64 times: a query at an observation time must not see that observation.
            _, anchors = _anchor_rows(times[part, : states.shape[1]], batch.lengths[part], queries)
            predicted = self.module_.decode_at(
                states,
                tensors["times"],
                torch.as_tensor(anchors.reshape(queries.shape), device=self.device_),
                self._tensor(queries),
                solve,
                bounds,
                inputs,
            )
            out[part] = predicted.cpu().double().numpy()
        return self._note_forecast_range(self._unscale_values(out))


def _series_labels(y: Any, batch: SeriesBatch) -> np.ndarray:
    """One label per series of ``batch``: by id for a pandas Series and frame input, else by position."""
    if y is None:
        raise input_error(
            "y",
            "one label per series (the classifier requires y to be passed, but the target y is None)",
            "None",
            "Pass y of length n_series.",
        )
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series) and batch.spec.is_frame and batch.n_series > 0:
        if not y.index.is_unique:
            # One label per row of a long frame, indexed by series id (what cross-validation splitting rows gives).
            by_series = y.groupby(level=0, sort=False)
            if (by_series.nunique(dropna=False) > 1).any():
                raise input_error(
                    "y",
                    "one label per series",
                    "different labels on rows of the same series id",
                    "Give every row of a series the same label, or pass one label per series.",
                )
            y = by_series.first()
        missing = pd.Index(batch.ids).difference(y.index)
        if len(missing) == 0:
            return np.asarray(y.loc[batch.ids])
        if not (len(y) == batch.n_series and len(missing) == batch.n_series):
            raise input_error(
                "y",
                "a label for every series id of X",
                f"no label for ids {list(missing[:5])}",
                "Index y by the series ids of X, or pass labels in the order series first appear.",
            )
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        missing = pd.isna(labels)
        if labels.dtype.kind == "f":
            missing |= np.isinf(labels)
        if missing.any():
            raise input_error(
                "y",
                "a label for every series",
                f"{int(missing.sum())} missing or infinite label(s), the first at position {int(np.argmax(missing))}",
                "Drop the series without a label, or give them one.",
            )
        try:
            check_classification_targets(labels)
        except ValueError:  # scikit-learn's message does not name y
            raise input_error(
                "y",
                "class labels (ints, strings or whole-number floats), one per series",
                f"{type_of_target(labels)} values such as {labels[:3].tolist()}",
                "Pass class labels; for a continuous target use a forecaster instead of a classifier.",
            ) from None
    if labels.ndim != 1 or len(labels) != batch.n_series:
        raise input_error(
            "y",
            f"one label per series, shape ({batch.n_series},)",
            f"shape {labels.shape}",
            "A 2-D array X is one series (rows are times); pass a 3-D array (n_series, n_times, n_features), "
            "a list of series or a long frame, with one label per series.",
        )
    _warn_if_order_is_ambiguous(batch)
    return labels


def _warn_if_order_is_ambiguous(batch: SeriesBatch) -> None:
    """Labels given by position for a frame are the series' in order of first appearance: say so where that order
    is not the ids' sorted one (labels listed by sorted id, as ``groupby`` gives them, would be matched wrongly)."""
    if not batch.spec.is_frame or batch.n_series < 2:
        return
    ids = pd.Index(batch.ids)
    try:
        ordered = ids.is_monotonic_increasing
    except TypeError:  # ids of mixed types have no sorted order to confuse with
        return
    if not ordered:
        warnings.warn(
            f"y: labels given by position are matched to X's series in order of first appearance "
            f"({', '.join(map(repr, ids[:5].tolist()))}{', ...' if len(ids) > 5 else ''}), which is not the order of "
            "their sorted ids. "
            "Pass y as a pandas Series indexed by series id to match labels by id.",
            UserWarning,
            stacklevel=4,
        )



class _SeriesClassifier:
    """What the per-series classifiers share: label bookkeeping and the outputs built on ``_logits(X, t)``."""

    # Labels come with the series in memory: no Parquet stream, no partial_fit, even on a streaming model's base.
    _streams_parquet = False

    def _fit_classes(self, labels: np.ndarray, fresh: bool) -> np.ndarray:
        """Set ``classes_`` on a fresh fit (two classes at least); the class index of every label."""
        if fresh:
            classes = LabelEncoder().fit(labels).classes_
            if len(classes) < 2:
                raise input_error(
                    "y",
                    "labels of at least two classes",
                    f"only the class {classes[0]!r}",
                    "A classifier needs examples of two or more classes.",
                )
            self.classes_ = classes
        known = np.isin(labels, self.classes_)
        if not known.all():
            raise input_error(
                "y",
                f"labels among the classes of the first fit {list(self.classes_)}",
                f"new labels {list(np.unique(labels[~known]))[:5]}",
                "Refit without warm_start.",
            )
        return np.searchsorted(self.classes_, labels)

    def decision_function(self, X: Any, t: Any = None) -> np.ndarray:
        """Class scores (logits); for two classes the score of ``classes_[1]`` over ``classes_[0]``.

        Returns
        -------
        ndarray of shape (n_series,) for two classes, else (n_series, n_classes)
        """
        logits = self._logits(X, t)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any, t: Any = None) -> np.ndarray:
        """Class probabilities per series.

        Returns
        -------
        ndarray of shape (n_series, n_classes)
            Columns follow ``classes_``; rows the series of X in their order.
        """
        logits = self._logits(X, t)
        logits = logits - logits.max(axis=1, keepdims=True)
        probability = np.exp(logits)
        return probability / probability.sum(axis=1, keepdims=True)

    def predict(self, X: Any, t: Any = None) -> np.ndarray:
        """The most probable label of each series.

        Returns
        -------
        ndarray of shape (n_series,)
        """
        logits = self._logits(X, t)  # checks that the estimator is fitted before classes_ is read
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None, *, t: Any = None) -> float:
        """Accuracy of :meth:`predict` against ``y`` (aligned like in ``fit``)."""
        batch = self._check_input(X, t)
        return float(accuracy_score(_series_labels(y, batch), self.predict(X, t), sample_weight=sample_weight))

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


class ODERNNClassifier(_SeriesClassifier, ClassifierMixin, _ODERNNBase):
    """Per-series classification from an ODE-RNN's final state.

    The ODE-RNN (see :class:`ODERNN`) reads each series over its own
    irregular times, missing entries masked; its state after the last
    observation, by default beside the mean of its states over the series'
    rows (``pooling``), goes through a linear (or MLP) head to class scores,
    trained with cross-entropy. Optionally a reconstruction loss (each observation
    predicted one step ahead from the state before it) is added with weight
    ``reconstruction_weight``, the joint training of the paper.

    Labels: one per series, aligned with the series of ``X`` in the order
    :func:`dynlearn.data.check_series` gives them (rows of a 3-D array,
    items of a list, first appearance in a long frame). For frame input a
    pandas Series indexed by series id is aligned by id; it may also hold
    one label per row, indexed by each row's series id. Cross-validation
    splits rows of ``X``: with a 3-D array or a list those are series, so
    ``cross_val_score(clf, X, y, cv=5, scoring="roc_auc")`` works as is.
    For a long frame, ``cross_val_score`` with its default scoring (this
    estimator's accuracy) works with ``y`` as per-row labels indexed by
    series id and ``cv=GroupKFold(...)``, ``groups=<series id of each row>``;
    scikit-learn's named scorers compare ``y`` with the predictions row by
    row, so for those pass the series as a list or a 3-D array. A 2-D array
    is one series (rows are its times), as everywhere in dynlearn.

    The classifier's defaults differ from :class:`ODERNN`'s where small
    labelled sets demand it: ``max_epochs=200``, ``validation_fraction=0``
    and ``patience=None`` (every fit trains 200 epochs on every series).
    Labelled series are scarce in classification: a 10% validation split of
    40 series (4 series, as many as basic_motions has classes) takes training
    data and stops on noise (one seed stopped after a few epochs at 0.35
    accuracy), and stopping on a training loss that has not improved for 10
    epochs stopped gunpoint at epoch 77 with 0.52 training accuracy, where
    200 epochs reach 0.98 (test 0.89). With hundreds of series, pass
    ``validation_fraction=0.1, patience=10`` for early stopping on held-out
    series.

    Parameters
    ----------
    head_hidden_layer_sizes : tuple of int, default=()
        Hidden widths of the classification head; ``()`` is linear.
    pooling : {"last_mean", "last"}, default="last_mean"
        What the head reads. ``"last"``: the state after the last
        observation (the paper's classifier). ``"last_mean"``: that state
        concatenated with the mean of the states after every row of the
        series (width ``2 * hidden_dim``), so what happened early in a long
        series reaches the head directly. On the UCR/UEA sets of
        ``benchmarks/classifiers.py`` it raised accuracy on basic_motions
        from 0.925 and 0.90 (two seeds, no validation split) to 0.975 and 1.0.
    reconstruction_weight : float, default=1.0
        Weight of the one-step-ahead reconstruction loss (standardised
        units) added to the cross-entropy, as the paper's joint training; it
        costs almost nothing (the states are those of the same pass) and
        makes the state track the dynamics, which the label alone teaches
        slowly. 0 trains on the labels alone.
    covariates : list of str or int, str or None, default=None
        Columns of X that are known inputs ``u(t)`` driving each series
        (names for frames, column indices for arrays): the GRU reads
        ``[values * mask, mask, u(t_i)]`` at each row and the field is
        ``dh/dt = f(h, u)`` with ``u`` held from one row to the next, as in
        :class:`ODERNN`. A label that depends on how a series responds to
        its input (a damping, a gain) can then be read off the response
        rather than guessed from the states alone. Inputs must be known at
        every row, in ``fit`` and in every later call.
    covariate_interpolation : {"previous"}, default="previous"
        How the inputs are read between rows: held at the last one
        (zero-order hold), what the fixed steps between observations do.
        ``"linear"`` and ``"cubic"`` are refused with an ``InputError``.
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
    {shared}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of ``predict_proba``.
    module_ : torch.nn.Module
        ``module_.encoder``, ``module_.decoder`` and ``module_.head``.
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
    >>> from dynlearn import ODERNNClassifier
    >>> t = np.linspace(0, 6, 20)
    >>> freq = np.array([1.0, 1.0, 3.0, 3.0])
    >>> X = np.sin(freq[:, None, None] * t[None, :, None])
    >>> clf = ODERNNClassifier(hidden_dim=8, max_epochs=3, random_state=0).fit(X, ["slow", "slow", "fast", "fast"], t=t)
    >>> clf.predict_proba(X, t=t).shape
    (4, 2)
    """

    __doc__ = __doc__.replace("{shared}", _shared_doc(max_epochs=200, validation_fraction=0.0, patience=None))

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        **_MODEL_CONSTRAINTS,
        "head_hidden_layer_sizes": [tuple, list],
        "pooling": [StrOptions(set(_POOLED_WIDTH))],
        "reconstruction_weight": [Interval(Real, 0, None, closed="left")],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(
        self,
        hidden_dim: int = 20,
        ode_hidden_layer_sizes: Sequence[int] = (64,),
        gru_hidden_size: int | None = None,
        head_hidden_layer_sizes: Sequence[int] = (),
        pooling: str = "last_mean",
        reconstruction_weight: float = 1.0,
        activation: str = "tanh",
        step_size: float | None = None,
        solver: str = "euler",
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
        self.hidden_dim = hidden_dim
        self.ode_hidden_layer_sizes = ode_hidden_layer_sizes
        self.gru_hidden_size = gru_hidden_size
        self.head_hidden_layer_sizes = head_hidden_layer_sizes
        self.pooling = pooling
        self.reconstruction_weight = reconstruction_weight
        self.activation = activation
        self.step_size = step_size
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.max_num_steps = max_num_steps
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.device = device
        self.n_threads = n_threads
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpoint = checkpoint
        self.callbacks = callbacks
        self.covariates = covariates
        self.covariate_interpolation = covariate_interpolation
        self.static_covariates = static_covariates

    @guarded_fit
    def fit(self, X: Any, y: Any, *, t: Any = None) -> "ODERNNClassifier":
        """Learn to predict each series' label.

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
        self._check_sizes()
        self._check_interpolation()
        labels = _series_labels(y, batch)
        fresh = not (self.warm_start and hasattr(self, "module_"))
        codes = self._fit_classes(labels, fresh)
        if fresh:
            self._fit_step(batch)
        self._init_module(self._build_module)
        solve = self._solve_options()
        weight = float(self.reconstruction_weight)

        def loss_fn(module: _ODERNNModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            values, mask, times, real, lengths = _unpack(data)
            inputs = _unpack_inputs(data, values.shape[1])
            states, final, before = module.encoder(
                values, mask, times, lengths, solve=solve, return_before=True, covariates=inputs
            )
            logits = module.head(module.pooled(states, final, lengths))
            loss = nn.functional.cross_entropy(logits, data["label"].long())
            if weight > 0:
                loss = loss + weight * _masked_mse(module.decoder(before[:, 1:]), values[:, 1:], mask[:, 1:])
            return loss

        examples = {**self._series_examples(batch), "label": codes.astype(np.float64)}
        self._train_decaying(loss_fn, *self._split_examples(examples, batch))
        return self

    def _logits(self, X: Any, t: Any = None) -> np.ndarray:
        check_is_fitted(self, "module_")
        return self._batch_logits(self._check_input(X, t))

    def _batch_logits(self, batch: SeriesBatch) -> np.ndarray:
        """Class scores of every series of a checked batch, encoded in chunks without gradients."""
        pieces = []
        for part, _, states, final, _ in self._encode_chunks(batch):
            lengths = torch.as_tensor(batch.lengths[part], device=self.device_)
            pieces.append(self.module_.head(self.module_.pooled(states, final, lengths)).cpu().double().numpy())
        return np.concatenate(pieces)

