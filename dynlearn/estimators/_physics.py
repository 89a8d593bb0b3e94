"""What the energy-based estimators share: phase-space coordinates, training modes, energy outputs."""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import Interval, StrOptions
from ..data import InputSpec, QueryTimes, SeriesBatch, check_query_times, check_series, to_user_kind
from ..exceptions import IntegrationError, input_error
from ..nn import ACTIVATIONS, INPUT_MATRICES
from ..solvers import CONTROL_INTERPOLATIONS, ControlPath, ode_method, solve_ode_irregular
from ._base import guarded_fit
from ._intervals import ConformalIntervals
from ._base import (
    SHARED_CONSTRAINTS,
    DrivenPaths,
    SeriesModel,
    _anchor_rows,
    _as_states,
    _finite_difference,
    _median_gap,
    _output_times,
)

# Rows integrated per solve at prediction time: bounds memory on big inputs.
_PREDICT_CHUNK = 4096

FIT_ON = ("auto", "derivatives", "trajectories")

PHASE_SPACE_CONSTRAINTS: dict[str, list[Any]] = {
    **SHARED_CONSTRAINTS,
    "hidden_layer_sizes": [tuple, list],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "positions": ["array-like", None],
    "fit_on": [StrOptions(set(FIT_ON))],
    "window_size": [Interval(Integral, 2, None, closed="left"), None],
    "step_size": [Interval(Real, 0, None, closed="neither"), None],
    "covariates": [list, tuple, str, Integral, None],
    "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
    "input_matrix": [StrOptions(set(INPUT_MATRICES))],
}


class PhaseSpaceModel(ConformalIntervals, SeriesModel):
    """Base of estimators whose state is positions plus a conjugate half (not public).

    A subclass names the conjugate half (``_conjugate``: ``"momenta"`` or
    ``"velocities"``, also its constructor argument), builds the energy
    field (``_make_field``), couples the scales of the two halves so the
    mechanics survive standardisation (``_couple_scales``), says which
    time derivatives its field is trained on (``_trained_outputs``) and
    which training stages ``fit_on="auto"`` runs (``_auto_fit_on``).

    Internally a state is ``[positions, conjugates]`` in the model's
    standardised units; ``_order`` maps user columns to that layout.

    Known inputs (``covariates``) are generalised forces ``B(q) u``: they
    are scaled without a shift, so ``u = 0`` is no force in both units and
    the unforced model conserves its energy.
    """

    _conjugate: str
    _auto_fit_on: tuple[str, ...]
    # Added to a failed solve's advice when trajectory matching starts from random weights (None: nothing to add).
    _from_scratch_advice: str | None = None

    # ----------------------------------------------------------- coordinates
    def _resolve_coordinates(self, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
        """Indices among the state columns of the positions and of the conjugate half, validated.

        ``spec`` describes the whole table seen at fit; ``positions`` and
        the conjugate argument name its columns (the ``covariates`` are
        not coordinates).
        """
        inputs = getattr(self, "covariate_index_", np.empty(0, dtype=np.int64))
        states = np.setdiff1d(np.arange(spec.n_features), inputs)
        conjugate = self._conjugate
        positions = self._columns(self.positions, spec, "positions")
        others = self._columns(getattr(self, conjugate), spec, conjugate)
        for argument, chosen in (("positions", positions), (conjugate, others)):
            if chosen is not None and np.intersect1d(chosen, inputs).size:
                raise input_error(
                    argument,
                    "state columns, none of them a covariate",
                    f"{chosen.tolist()}, of which {np.intersect1d(chosen, inputs).tolist()} are covariates",
                    "A known input is a force, not a coordinate: drop it from one of the two arguments.",
                )
        # From here on, indices count the state columns only.
        positions = None if positions is None else np.searchsorted(states, positions)
        others = None if others is None else np.searchsorted(states, others)
        n = len(states)
        if positions is None and others is None:
            if n % 2:
                raise input_error(
                    "X",
                    f"an even number of features (positions first, then {conjugate}) unless positions= and "
                    f"{conjugate}= say which columns are which",
                    f"{n} feature(s)",
                    f"Pass positions=[...] and {conjugate}=[...] (column names or indices), one per coordinate.",
                )
            return np.arange(n // 2), np.arange(n // 2, n)
        rest = lambda chosen: np.setdiff1d(np.arange(n), chosen)  # noqa: E731
        positions = rest(others) if positions is None else positions
        others = rest(positions) if others is None else others
        if len(positions) != len(others) or np.intersect1d(positions, others).size or len(positions) + len(others) != n:
            raise input_error(
                f"positions / {conjugate}",
                f"two disjoint sets of equally many columns that together cover all {n} features",
                f"positions {positions.tolist()} and {conjugate} {others.tolist()}",
                f"Give one {self._conjugate_singular} column per position column.",
            )
        return positions, others

    @staticmethod
    def _columns(chosen: Any, spec: InputSpec, argument: str) -> np.ndarray | None:
        """Feature indices of ``chosen`` (names or integer indices); None stays None."""
        if chosen is None:
            return None
        names = list(spec.feature_names or [])
        index = []
        for item in np.atleast_1d(np.asarray(chosen, dtype=object)):
            if isinstance(item, (Integral, np.integer)) and not isinstance(item, bool):
                found = int(item) if 0 <= item < spec.n_features else None
            else:
                found = names.index(str(item)) if str(item) in names else None
            if found is None:
                raise input_error(
                    argument,
                    f"column names of X ({names}) or indices below {spec.n_features}"
                    if names
                    else f"indices below {spec.n_features}",
                    repr(item),
                    "Name existing feature columns.",
                )
            index.append(found)
        if len(set(index)) != len(index) or not index:
            raise input_error(argument, "distinct columns, at least one", repr(chosen), "Drop the repeats.")
        return np.asarray(index)

    def _set_coordinates(self) -> None:
        positions, others = self._resolve_coordinates(self.input_spec_)
        self.position_columns_ = positions
        setattr(self, f"{self._conjugate_singular}_columns_", others)
        self.n_coordinates_ = len(positions)

    @property
    def _conjugate_singular(self) -> str:
        return {"momenta": "momentum", "velocities": "velocity"}[self._conjugate]

    @property
    def _order(self) -> np.ndarray:
        return np.concatenate([self.position_columns_, getattr(self, f"{self._conjugate_singular}_columns_")])

    # --------------------------------------------------------------- scaling
    def _fit_scaling(self, batch: SeriesBatch) -> None:
        super()._fit_scaling(batch)
        self._median_gap = _median_gap(batch)
        self._set_coordinates()
        self._couple_scales()
        self.reference_state_ = self._to_user(np.zeros(batch.n_features))
        if batch.inputs is not None:
            # Forces: a scale without a shift, so that u = 0 stays no force (the root mean square, 1 when zero).
            rows = batch.row_mask
            rms = np.sqrt(np.mean(batch.inputs[rows] ** 2, axis=0)) if self.standardize else np.ones(self._n_inputs)
            self.covariate_mean_ = np.zeros(self._n_inputs)
            self.covariate_scale_ = np.where(rms > 0, rms, 1.0)

    def _couple_scales(self) -> None:
        raise NotImplementedError

    def _to_internal(self, values: np.ndarray) -> np.ndarray:
        """User-unit states ``(..., n_features)`` to standardised ``[positions, conjugates]``."""
        return self._scale_values(values)[..., self._order]

    def _to_user(self, internal: np.ndarray) -> np.ndarray:
        values = np.empty_like(internal)
        values[..., self._order] = internal
        return self._unscale_values(values)

    def _internal(self, batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray]:
        """Standardised states (gaps filled by interpolation) and times."""
        return self._to_internal(batch.filled_values(self.mean_)), self._scale_times(batch.times)

    # -------------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None, derivatives: Any = None) -> "PhaseSpaceModel":
        """Learn the energy function from the series in ``X``.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind; NaN marks missing entries.
        y : None
            Ignored; present for pipeline compatibility.
        t : array-like, default=None
            Observation times for array inputs.
        derivatives : same kind and layout as X, default=None
            Measured time derivatives ``dX/dt`` at X's rows (same series,
            times and columns; NaN where unknown). When given, the
            derivative stage regresses on them instead of on finite
            differences, and ``fit_on="auto"`` trains on them alone (the
            protocol of Greydanus et al. 2019). In a pipeline pass it as
            ``fit(X, model__derivatives=...)``.

        Returns
        -------
        self
        """
        batch = self._setup_fit(X, t)
        self._check_learnable(batch)
        self._set_coordinates()
        measured = None if derivatives is None else self._measured_rates(batch, derivatives, t)
        stages = self._stages(batch, measured)
        self.fit_on_ = tuple(mode for mode, _, _ in stages)
        from_scratch = not self._keeps_fitted()
        self._init_module(self._build_module)
        for stage, (mode, examples, epochs) in enumerate(stages):
            train_data, valid_data = self._split_examples(examples, batch)
            try:
                self._train(
                    self._derivative_loss if mode == "derivatives" else self._trajectory_loss,
                    train_data,
                    valid_data,
                    max_epochs=epochs,
                    epochs_name="max_epochs" if epochs == self.max_epochs else f"max_epochs // 4 (the {mode} stage)",
                )
            except IntegrationError as error:
                if mode != "trajectories" or stage or not from_scratch or self._from_scratch_advice is None:
                    raise
                raise IntegrationError(f"{error} {self._from_scratch_advice}") from error
            # The records without a stage are this stage's (a resumed stage gets its earlier ones back unlabelled).
            for record in self.history_:
                record.setdefault("fit_on", mode)
        return self

    def _stages(
        self, batch: SeriesBatch, measured: dict[str, np.ndarray] | None = None
    ) -> list[tuple[str, dict[str, np.ndarray], int]]:
        """``(fit_on, examples, max_epochs)`` of each training stage, in order.

        ``"auto"`` runs the subclass's ``_auto_fit_on`` stages, or derivative
        matching alone when derivatives were measured. Trajectory matching
        after derivative matching refines the fit for a quarter of
        ``max_epochs``; without three consecutive observed rows anywhere
        (and no measured derivatives), only trajectories are matched.
        """
        if measured is not None:
            if self.fit_on == "trajectories":
                raise input_error(
                    "derivatives",
                    "None with fit_on='trajectories' (that mode matches observed states only)",
                    "measured derivatives",
                    "Use fit_on='auto' or 'derivatives' to train on them, or drop derivatives=.",
                )
            if not len(measured["series"]):
                raise input_error(
                    "derivatives",
                    "at least one known derivative on a fully observed row of X",
                    "none",
                    "Pass derivatives where X's rows are observed (NaN marks unknown entries).",
                )
            return [("derivatives", measured, self.max_epochs)]
        wanted = self._auto_fit_on if self.fit_on == "auto" else (self.fit_on,)
        derivatives = self._derivative_examples(batch) if "derivatives" in wanted else None
        if derivatives is None or not len(derivatives["series"]):
            if self.fit_on == "derivatives":
                raise input_error(
                    "fit_on",
                    "'derivatives' only for series with three consecutive observed rows (central differences)",
                    "no such rows",
                    "Use fit_on='trajectories' (or 'auto'), or pass longer, less gappy series.",
                )
            return [("trajectories", self._windows(batch), self.max_epochs)]
        stages = [("derivatives", derivatives, self.max_epochs)]
        if "trajectories" in wanted:
            stages.append(("trajectories", self._windows(batch), max(1, self.max_epochs // 4)))
        return stages

    def _derivative_examples(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """One example per interior row: the state and central-difference time derivatives.

        A target entry is kept where that feature is observed on the row and
        on both neighbours, so every difference is of observed values.
        """
        states, times = self._internal(batch)
        rates = _finite_difference(states, times, batch.lengths)
        seen = batch.mask[..., self._order]
        interior = np.zeros(batch.row_mask.shape, dtype=bool)
        interior[:, 1:-1] = np.arange(1, batch.max_len - 1)[None, :] < batch.lengths[:, None] - 1
        keep = np.zeros_like(seen)
        keep[:, 1:-1] = seen[:, :-2] & seen[:, 1:-1] & seen[:, 2:]
        keep &= interior[..., None] & self._trained_outputs()
        series, rows = np.nonzero(keep.any(axis=-1))
        examples = {"series": series, "x": states[series, rows], "rates": rates[series, rows], "mask": keep[series, rows]}
        if batch.inputs is not None:
            examples["u"] = self._difference_inputs(batch, times)[series, rows]
        return examples

    def _difference_inputs(self, batch: SeriesBatch, times: np.ndarray) -> np.ndarray:
        """The scaled inputs a central difference at each row reflects, ``(n_series, max_len, n_inputs)``.

        With inputs read linearly or by cubics the state is smooth and the
        difference estimates the field under the row's own input. A held
        input (``"previous"``) jumps at the row, and ``numpy.gradient``'s
        difference is then the field under the gap-weighted mean
        ``(h₊ u₋ + h₋ u)/(h₋ + h₊)`` of the held inputs on the two sides
        (the field is affine in the inputs).
        """
        inputs = self._scale_inputs(batch.inputs)
        if self.covariate_interpolation != "previous":
            return inputs
        mixed = inputs.copy()
        before, after = np.diff(times, axis=1)[:, :-1, None], np.diff(times, axis=1)[:, 1:, None]
        span = before + after
        weighted = (after * inputs[:, :-2] + before * inputs[:, 1:-1]) / np.where(span > 0, span, 1.0)
        mixed[:, 1:-1] = np.where(span > 0, weighted, inputs[:, 1:-1])
        return mixed

    def _measured_rates(self, batch: SeriesBatch, derivatives: Any, t: Any) -> dict[str, np.ndarray]:
        """Derivative-stage examples from user-measured ``dX/dt``, checked against X's layout.

        A target entry is kept where the derivative is known and X's row is
        fully observed (the field's input must be a measured state).
        """
        rates = check_series(derivatives, t, reference=self.input_spec_, argument="derivatives", owner=type(self).__name__)
        if hasattr(self, "covariate_index_"):  # the layout of X; what stands under the inputs is not used
            keep = np.setdiff1d(np.arange(rates.n_features), self.covariate_index_)
            rates = replace(rates, values=rates.values[..., keep], mask=rates.mask[..., keep])
        same_layout = (
            rates.n_series == batch.n_series
            and np.array_equal(rates.lengths, batch.lengths)
            and np.array_equal(np.asarray(rates.ids, dtype=object), np.asarray(batch.ids, dtype=object))
            and np.allclose(rates.times[batch.row_mask], batch.times[batch.row_mask])
        )
        if not same_layout:
            raise input_error(
                "derivatives",
                "the time derivatives of X at X's own rows: same series, times and columns",
                f"{rates.n_series} series with lengths {rates.lengths[:5].tolist()}... "
                f"(X: {batch.n_series} series with lengths {batch.lengths[:5].tolist()}...)",
                "Build derivatives with the same index (frames) or shape and t (arrays) as X.",
            )
        internal = (np.where(rates.mask, rates.values, 0.0) / self.scale_ * self.time_scale_)[..., self._order]
        keep = rates.mask[..., self._order] & batch.mask.all(axis=-1, keepdims=True) & self._trained_outputs()
        keep &= batch.row_mask[..., None]
        series, rows = np.nonzero(keep.any(axis=-1))
        states = self._to_internal(np.where(batch.mask, batch.values, 0.0))
        examples = {"series": series, "x": states[series, rows], "rates": internal[series, rows], "mask": keep[series, rows]}
        if batch.inputs is not None:  # measured rates are the field under the row's own input
            examples["u"] = self._scale_inputs(batch.inputs)[series, rows]
        return examples

    def _windows(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        states, times = self._internal(batch)
        observed = np.where(batch.mask, self._scale_values(batch.values), 0.0)[..., self._order]
        series, index, real = self._window_index(batch, self.window_size)
        windows = {
            "series": series,
            "times": times[series[:, None], index],
            "values": observed[series[:, None], index],
            "mask": batch.mask[..., self._order][series[:, None], index] & real[..., None],
            "x0": states[series, index[:, 0]],
        }
        if batch.inputs is not None:
            inputs = self._scale_inputs(batch.inputs)
            before = np.maximum(index[:, 0] - 1, 0)
            windows["inputs"] = inputs[series[:, None], index]
            windows["lead_gap"] = times[series, index[:, 0]] - times[series, before]
            windows["lead_inputs"] = inputs[series, before]
        return windows

    def _derivative_loss(self, module: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
        if hasattr(module, "derivative_loss"):  # a Hamiltonian field forms the loss and its gradient in one pass
            return module.derivative_loss(data["x"], data["rates"], data["mask"], data.get("u"))
        predicted = module(None, data["x"], *([data["u"]] if "u" in data else []))
        mask = data["mask"]
        return ((predicted - data["rates"]) ** 2 * mask).sum() / mask.sum().clamp_min(1)

    def _trajectory_loss(self, module: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
        control = self._control(data["times"], data.get("inputs"), data.get("lead_gap"), data.get("lead_inputs"))
        predicted = self._solve(module, data["x0"], data["times"], adjoint=self.adjoint, control=control)
        mask = data["mask"][:, 1:]
        return ((predicted[:, 1:] - data["values"][:, 1:]) ** 2 * mask).sum() / mask.sum().clamp_min(1)

    def _trained_outputs(self) -> np.ndarray:
        """Which internal time derivatives the derivative loss compares (all by default)."""
        return np.ones(2 * self.n_coordinates_, dtype=bool)

    def _make_field(self, n_coordinates: int) -> nn.Module:
        raise NotImplementedError

    def _build_module(self) -> nn.Module:
        return self._make_field(self.n_coordinates_)

    def _field_inputs(self) -> dict[str, Any]:
        """The field's input arguments: how many inputs, and how ``B`` is learned."""
        return {"n_inputs": self._n_inputs, "input_matrix": self.input_matrix}

    # ------------------------------------------------------------ integration
    def _control(self, times: torch.Tensor, inputs: torch.Tensor | None, lead_gap: torch.Tensor | None = None,
                 lead_inputs: torch.Tensor | None = None) -> ControlPath | None:
        """The inputs of each row as a path over its solve times (None without inputs)."""
        if inputs is None:
            return None
        lead = None if lead_gap is None else (lead_gap, lead_inputs)
        return ControlPath(times, inputs, self.covariate_interpolation, lead)

    def _solve(self, field: nn.Module, y0: torch.Tensor, times: torch.Tensor, *, adjoint: bool,
               control: ControlPath | None = None) -> torch.Tensor:
        """States ``(batch, n_times, 2 d)`` of ``field``'s flow from ``y0`` on each row's ``times``."""
        options = {} if ode_method(self.solver).adaptive else {"step_size": self._internal_step()}
        return solve_ode_irregular(
            field,
            y0,
            times,
            method=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=adjoint,
            options=options,
            max_num_steps=self.max_num_steps,
            control=control,
        )

    def _internal_step(self) -> float:
        """Largest step of fixed-step solvers on the internal clock."""
        step = self._median_gap if self.step_size is None else self.step_size
        return step / self.time_scale_

    def _integrate(self, x0: np.ndarray, times: np.ndarray, inputs: np.ndarray | None = None,
                   lead: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Integrate standardised states on internal times; returns (batch, n_times, 2 d).

        ``inputs`` ``(batch, n_times, n_inputs)`` are the scaled known inputs
        at ``times`` (``lead``: gap to and inputs at the row before, per
        row) for a model driven by them.
        """
        module = self.module_.eval()
        pieces = []
        with torch.no_grad():
            for start in range(0, len(x0), _PREDICT_CHUNK):
                part = slice(start, start + _PREDICT_CHUNK)
                t = self._tensor(times[part])
                control = None
                if inputs is not None:
                    part_lead = (None, None) if lead is None else (self._tensor(lead[0][part]), self._tensor(lead[1][part]))
                    control = self._control(t, self._tensor(inputs[part]), *part_lead)
                out = self._solve(module, self._tensor(x0[part]), t, adjoint=False, control=control)
                pieces.append(out.cpu().double().numpy())
        return np.concatenate(pieces)

    # --------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """State at query times, each integrated from the latest earlier observation.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times: shared ``(n_queries,)``, per series
            ``(n_series, n_queries)``, or a frame of (series, time) rows.
            None gives one-step-ahead predictions at X's own times. A model
            with ``covariates`` needs a frame that also holds the inputs at
            the query times; between the last observation and a query the
            inputs are read at every query time of that series in between.
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

    def _predict_internal(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        states, times = self._internal(batch)
        q_times = self._scale_times(query.times)
        if batch.inputs is not None:
            # Queries sharing an anchor are one solve through their times, reading the inputs given there.
            paths = DrivenPaths.build(times, batch.lengths, self._scale_inputs(batch.inputs), q_times,
                                      self._scale_inputs(query.inputs).reshape(q_times.size, -1))
            out = self._integrate(states[paths.series, paths.anchors], paths.times, paths.inputs, paths.lead)
            return paths.answers(out).reshape(query.times.shape + (-1,))
        series, anchors = _anchor_rows(times, batch.lengths, q_times)
        segments = np.stack([times[series, anchors], q_times.ravel()], axis=1)
        out = self._integrate(states[series, anchors], segments)
        return out[:, -1].reshape(query.times.shape + (-1,))

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        return self._note_forecast_range(self._to_user(self._predict_internal(batch, query)))

    def simulate(self, x0: Any, t: Any, *, covariates: Any = None) -> np.ndarray:
        """Integrate the learned dynamics from explicit initial states.

        For a model with ``covariates`` this is a free-run simulation: the
        states evolve under the given input signal (the generalised forces)
        alone, never corrected by observations. An input signal of zeros
        gives the unforced motion, which conserves :meth:`energy`.

        Parameters
        ----------
        x0 : array-like of shape (n_series, n_features) or (n_features,)
            Initial states (user units and column order) at ``t[..., 0]``;
            ``n_features`` counts the positions and their conjugates, not
            the inputs.
        t : array-like of shape (n_times,) or (n_series, n_times)
            Output times (float clock of the training data); the first is the
            time of ``x0``.
        covariates : array-like of shape (n_times, n_inputs) or (n_series, n_times, n_inputs), default=None
            The known inputs at the times ``t``, in the order of the
            ``covariates`` parameter, read between them by
            ``covariate_interpolation``; required when the model has
            inputs, refused otherwise.

        Returns
        -------
        ndarray of shape (n_series, n_times, n_features), or (n_times, n_features) for a 1-D x0
        """
        check_is_fitted(self, "module_")
        single = np.ndim(x0) == 1
        x0 = _as_states(x0, self._n_states, "x0", self._state_names())
        raw_times = _output_times(t, len(x0))
        inputs = self._simulation_inputs(covariates, raw_times.shape)
        internal = self._integrate(self._to_internal(x0), self._scale_times(raw_times), inputs)
        out = self._note_forecast_range(self._to_user(internal))
        return out[0] if single else out

    def vector_field(self, x: Any, *, covariates: Any = None) -> np.ndarray:
        """The learned time derivative ``dx/dt`` at states ``x``, in user units and column order.

        Parameters
        ----------
        x : array-like of shape (n_points, n_features)
            States, in user units and the column order of the training data
            (without the inputs).
        covariates : array-like of shape (n_points, n_inputs), default=None
            The known inputs at each state, for a model with ``covariates``
            (required there, refused otherwise).

        Returns
        -------
        ndarray of shape (n_points, n_features)
        """
        check_is_fitted(self, "module_")
        x = _as_states(x, self._n_states, "x", self._state_names())
        extra = self._point_inputs(covariates, len(x))
        with torch.no_grad():
            internal = self.module_.eval()(None, self._tensor(self._to_internal(x)), *extra).cpu().double().numpy()
        rates = np.empty_like(internal)
        rates[:, self._order] = internal
        return rates * self.scale_ / self.time_scale_

    def _point_inputs(self, covariates: Any, n_points: int) -> tuple[torch.Tensor, ...]:
        """The field's extra argument for inputs at ``n_points`` states: ``(u,)``, or ``()`` without inputs."""
        inputs = self._simulation_inputs(covariates, (1, n_points))
        return () if inputs is None else (self._tensor(inputs[0]),)

    # ---------------------------------------------------------------- energy
    def energy(self, X: Any, t: Any = None, *, X_t: Any = None) -> Any:
        """The learned energy along the series in ``X``, in the user's units.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind.
        t : array-like or DataFrame, default=None
            None evaluates the energy at X's own rows (missing entries filled
            by linear interpolation in time); otherwise at the states
            :meth:`predict` gives at these query times.
            The energy of fully observed rows needs no times, so an array of
            states may come without ``X_t`` then.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        Same kind as X, with a single column ``"energy"``
            Arrays get shape ``(n_series, n_times, 1)`` (``(n_times, 1)`` for
            one series). The energy is defined up to an additive constant;
            it is reported as zero at the state ``reference_state_``.
        """
        # The energy of fully observed rows is a function of their states alone; times matter for
        # queries and for filling gaps, and then an array must come with its own.
        batch = self._check_input(X, X_t, time_argument="X_t", need_times=False)
        if t is not None or not batch.mask[batch.row_mask].all():
            batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        states = self._internal(batch)[0] if t is None else self._predict_internal(batch, query)
        values = self._energy_of(states.reshape(-1, states.shape[-1])).reshape(states.shape[:-1] + (1,))
        return _one_column(values, "energy", query, batch)

    def input_power(self, X: Any, *, X_t: Any = None) -> Any:
        """The rate at which the known inputs change the learned energy, at X's rows, in the user's units.

        Along the learned flow ``dE/dt = q̇ · B(q) u``: the power of the
        generalised forces, positive where they feed the system. Integrated
        over time it is the work done, the change of :meth:`energy` (up to
        the integrator's error).

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            Series in any accepted kind, with their input columns; missing
            state entries are filled by linear interpolation in time.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``; they matter only to fill gaps, so fully
            observed arrays may come without them.

        Returns
        -------
        Same kind as X, with a single column ``"input_power"``
            Energy units of :meth:`energy` per time unit of the data.
            Arrays get shape ``(n_series, n_times, 1)``.
        """
        check_is_fitted(self, "module_")
        if not self._n_inputs:
            raise input_error(
                "covariates",
                "known inputs, for the power they deliver",
                "a model fitted without covariates (its energy is conserved: the power is zero)",
                "Fit with covariates=[...] naming the input columns.",
            )
        batch = self._check_input(X, X_t, time_argument="X_t", need_times=False)
        if not batch.mask[batch.row_mask].all():
            batch = self._check_input(X, X_t, time_argument="X_t")
        states = self._internal(batch)[0].reshape(-1, 2 * self.n_coordinates_)
        inputs = self._scale_inputs(batch.inputs).reshape(len(states), -1)
        with torch.no_grad():
            power = self.module_.eval().input_power(self._tensor(states), self._tensor(inputs)).cpu().double().numpy()
        values = (power * self.energy_scale_ / self.time_scale_).reshape(batch.values.shape[:2] + (1,))
        return _one_column(values, "input_power", check_query_times(None, batch), batch)

    def _energy_of(self, internal: np.ndarray) -> np.ndarray:
        """Energy in user units at standardised states ``(n, 2 d)``, zero at the internal origin."""
        module = self.module_.eval()
        states = self._tensor(np.vstack([np.zeros((1, internal.shape[1])), internal]))
        with torch.no_grad():
            values = module.energy(states).cpu().double().numpy()
        return (values[1:] - values[0]) * self.energy_scale_


def _one_column(values: np.ndarray, name: str, query: QueryTimes, batch: SeriesBatch) -> Any:
    """Per-row values ``(n_series, n_queries, 1)`` in the user's kind, as a column ``name``."""
    spec = replace(batch.spec, feature_names=(name,), column_labels=None)
    return to_user_kind(values, query, replace(batch, spec=spec))
