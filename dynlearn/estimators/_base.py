"""What every dynlearn estimator shares: parameters, data entry, scaling, device, pickling."""

from __future__ import annotations

import copy
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import SeriesBatch, check_series, masked_mean_scale
from ..solvers import ode_method
from ..training import resolve_device, resolve_dtype

SHARED_CONSTRAINTS: dict[str, list[Any]] = {
    "solver": [str],
    "rtol": [Interval(Real, 0, None, closed="neither")],
    "atol": [Interval(Real, 0, None, closed="neither")],
    "adjoint": ["boolean"],
    "max_num_steps": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left"), None],
    "standardize": ["boolean"],
    "device": [str],
    "dtype": [StrOptions({"float32", "float64"})],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
}


class SeriesModel(BaseEstimator):
    """Base of dynlearn's estimators (not public).

    Subclasses declare their own ``__init__`` (scikit-learn reads parameters
    from its signature) and use the helpers below, so that every estimator
    enters data, scales it, seeds itself and pickles the same way.
    """

    _parameter_constraints: dict[str, list[Any]] = SHARED_CONSTRAINTS

    # ------------------------------------------------------------ fit setup
    def _setup_fit(self, X: Any, t: Any) -> SeriesBatch:
        """Validate parameters and data, record what fit saw, resolve device and seed."""
        self._validate_params()
        ode_method(self.solver, "solver")
        batch = check_series(X, t)
        spec = batch.spec
        self.input_spec_ = spec
        self.n_features_in_ = spec.n_features
        if spec.feature_names is not None:
            self.feature_names_in_ = np.asarray(spec.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.device_ = resolve_device(self.device)
        self.dtype_ = resolve_dtype(self.dtype)
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if not (self.warm_start and hasattr(self, "module_")):
            self._fit_scaling(batch)
        return batch

    def _fit_scaling(self, batch: SeriesBatch) -> None:
        if self.standardize:
            self.mean_, self.scale_ = masked_mean_scale(batch.values, batch.mask)
            gaps = np.diff(batch.times, axis=1)[batch.row_mask[:, 1:]]
            gaps = gaps[gaps > 0]
            self.time_scale_ = float(np.median(gaps)) if len(gaps) else 1.0
        else:
            self.mean_ = np.zeros(batch.n_features)
            self.scale_ = np.ones(batch.n_features)
            self.time_scale_ = 1.0
        self.time_offset_ = float(batch.times[:, 0].min())

    def _check_input(self, X: Any, t: Any = None) -> SeriesBatch:
        """Validate data passed after fit against what fit saw."""
        check_is_fitted(self, "module_")
        return check_series(X, t, reference=self.input_spec_, owner=type(self).__name__)

    # --------------------------------------------------------------- scaling
    def _scale_values(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean_) / self.scale_

    def _unscale_values(self, values: np.ndarray) -> np.ndarray:
        return values * self.scale_ + self.mean_

    def _scale_times(self, times: np.ndarray) -> np.ndarray:
        return (times - self.time_offset_) / self.time_scale_

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=self.dtype_, device=self.device_)

    def _generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self._seed + offset)

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
