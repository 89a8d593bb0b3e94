"""NeuralSDE: dx = f(x[, u, t]) dt + g(x[, u, t]) dW learned on the observed state by transition likelihood."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from scipy.special import ndtri
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

from .._compat import Interval, StrOptions
from .._random import stream_seed
from ..data import QueryTimes, SeriesBatch, check_query_times, to_user_kind
from ..exceptions import IntegrationError, input_error
from ..metrics import QUANTILE_LEVEL  # noqa: F401  (the level predict_quantiles writes)
from ..nn import ACTIVATIONS, jacobian_columns, make_mlp
from ..nn._moment_loss import moment_loss_node
from ..solvers import CONTROL_INTERPOLATIONS, ControlPath, sde_method, solve_sde_irregular
from ._base import (
    SHARED_CONSTRAINTS,
    DrivenPaths,
    SeriesModel,
    _anchor_rows,
    _as_states,
    _output_times,
    _point_times,
    _query_groups,
    _sampling_seed,
    guarded_fit,
    partial_fit_method,
)
from ._intervals import ForecastIntervals, sample_quantiles

# Rows propagated or simulated per call at prediction time: bounds memory on big inputs.
_PREDICT_CHUNK = 4096
_SAMPLE_CHUNK = 65536


class _SDEModel(nn.Module):
    """Neural drift and diffusion of an Itô SDE, with Gaussian moment propagation.

    ``f`` / ``g`` follow torchsde's interface (``t`` first) so the module is
    handed to the SDE solvers as it is; ``moments`` propagates a Gaussian
    through Euler–Maruyama sub-steps with a local linearisation of the drift.
    With ``n_inputs`` known inputs both networks also read ``u(t)``, passed
    as the third argument (``f(t, y, u)``, as a controlled solve calls it).
    """

    sde_type = "ito"

    def __init__(self, n_features: int, hidden: Sequence[int], activation: str, time_dependent: bool,
                 noise_type: str, floor: float, n_inputs: int = 0, interpolation: str = "previous"):
        super().__init__()
        self.n_features = n_features
        self.time_dependent = time_dependent
        self.noise_type = noise_type
        self.floor = floor
        self.n_inputs = n_inputs
        self.interpolation = interpolation
        width = n_features + int(time_dependent) + n_inputs
        self.drift_net = make_mlp(width, n_features, hidden, activation)
        self.diffusion_net = make_mlp(width, n_features, hidden, activation)

    def _inputs(self, y: torch.Tensor, t: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        parts = [y]
        if self.time_dependent:
            parts.append(t.to(y.dtype).reshape(-1, 1).expand(y.shape[0], 1))
        if getattr(self, "n_inputs", 0):
            if u is None:
                raise ValueError("u: expected the known inputs (batch, n_inputs) of a driven SDE; got None.")
            parts.append(u.to(y.dtype))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else y

    def drift(self, y: torch.Tensor, t: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.drift_net(self._inputs(y, t, u))

    def diffusion(self, y: torch.Tensor, t: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """Per-feature diffusion amplitudes (batch, d): softplus plus a floor, so always positive."""
        return F.softplus(self.diffusion_net(self._inputs(y, t, u))) + self.floor

    # torchsde's interface (a controlled solve passes the inputs third)
    def f(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.drift(y, t, u)

    def g(self, t: torch.Tensor, y: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        amplitude = self.diffusion(y, t, u)
        return amplitude if self.noise_type == "diagonal" else amplitude.unsqueeze(-1)

    def control(self, times: torch.Tensor, inputs: torch.Tensor | None,
                lead: tuple[torch.Tensor, torch.Tensor] | None = None) -> ControlPath | None:
        """The known inputs of each row as a path over its knot times (None without inputs)."""
        if not getattr(self, "n_inputs", 0):
            return None
        return ControlPath(times, inputs, self.interpolation, lead)

    def _drift_and_jacobian(self, y: torch.Tensor, t: torch.Tensor,
                            u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift (batch, d) and its Jacobian (batch, d, d), rows independent.

        The drift network's forward tangents along the state's inputs, written
        out (:func:`~dynlearn.nn.jacobian_columns`); the graph is kept when
        gradients are being recorded, for training.
        """
        return jacobian_columns(self.drift_net, self._inputs(y, t, u), self.n_features)

    def moments(self, x0: torch.Tensor, t0: torch.Tensor, gap: torch.Tensor, n_steps: int,
                covariance: bool = True, control: ControlPath | None = None, segment: int = 0,
                cov0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean (batch, d) and covariance (batch, d, d) of the state ``gap`` after ``x0``.

        Each row takes ``n_steps`` equal sub-steps ``h`` of its own gap:
        ``m ← m + h f(m)``, ``P ← A P Aᵀ + h g gᵀ`` with ``A = I + h ∂f/∂x(m)``
        (Euler–Maruyama with the drift linearised about the mean). For a
        linear drift and additive noise this is the exact transition as
        ``h → 0``; one sub-step is the Euler–Maruyama transition density.
        With a ``control``, sub-step ``k`` reads the inputs on its
        ``segment`` at fraction ``k / n_steps`` (its start, as Euler–Maruyama
        does). ``cov0`` is the covariance of ``x0`` (zero when None).

        From a known state (``cov0`` None) the first sub-step's ``A P Aᵀ``
        is zero, so that step takes the drift alone, without its Jacobian:
        with one sub-step per gap no Jacobian is formed at all.
        """
        h = (gap / n_steps)[:, None]
        mean, cov = x0, cov0  # cov None: a known state, zero covariance
        eye = torch.eye(self.n_features, dtype=x0.dtype, device=x0.device) if covariance else None
        index = None if control is None else torch.tensor(segment, device=x0.device)
        for k in range(n_steps):
            # The networks read the time only when time-dependent: each skipped operation is per sub-step.
            t = t0 + k * h[:, 0] if self.time_dependent and k else t0
            u = None if control is None else control.on_segment(index, torch.tensor(k / n_steps))
            if covariance and cov is not None:
                f, jacobian = self._drift_and_jacobian(mean, t, u)
            else:
                f = self.drift(mean, t, u)
            if covariance:
                g = self.diffusion(mean, t, u)
                noise = torch.diag_embed(g**2) if self.noise_type == "diagonal" else g[:, :, None] * g[:, None, :]
                noise = h[..., None] * noise
                if cov is None:
                    cov = noise
                else:
                    a = eye + h[..., None] * jacobian
                    cov = a @ cov @ a.transpose(1, 2) + noise
            mean = mean + h * f
        return mean, cov

    def transition_loss(self, x0: torch.Tensor, t0: torch.Tensor, gap: torch.Tensor, n_steps: int,
                        values: torch.Tensor, mask: torch.Tensor, control: ControlPath | None = None) -> torch.Tensor:
        """Negative log-likelihood per observed entry of ``values`` after ``gap`` under :meth:`moments`' Gaussian.

        While gradients are recorded for the weights only, a model whose
        networks are Linear layers between tanh, ReLU, softplus, ELU or SiLU
        activations (at least one hidden layer each) takes one autograd node
        that forms the loss and every weight's gradient in one pass
        (``dynlearn.nn._moment_loss``; the same values to rounding), with or
        without known inputs. Anything else, and a backward pass with
        ``create_graph=True``, takes the recorded operations.
        """
        def recorded() -> torch.Tensor:
            mean, cov = self.moments(x0, t0, gap, n_steps, control=control)
            return _gaussian_nll_per_entry(values, mask, mean, cov)

        if not self._node_may_apply(control, x0, t0, gap, values, mask):
            return recorded()
        columns = self._step_columns(x0, t0, gap, n_steps, control)
        if columns is not None and any(column.requires_grad for column in columns):
            return recorded()
        node = moment_loss_node(self.drift_net, self.diffusion_net, n_steps, self.noise_type != "diagonal",
                                self.floor, columns, x0, gap, values, mask, recorded)
        return recorded() if node is None else node

    def _step_columns(self, x0: torch.Tensor, t0: torch.Tensor, gap: torch.Tensor, n_steps: int,
                      control: ControlPath | None) -> list[torch.Tensor] | None:
        """What the networks read beside the state at each of :meth:`moments`' sub-steps (the time, the known
        inputs), as :meth:`_inputs` appends them; None when they read the state alone."""
        if not self.time_dependent and control is None:
            return None
        h = gap / n_steps
        inputs = None
        if control is not None:  # on segment 0 at fractions k / n_steps, the values moments reads one by one
            fractions = torch.tensor([k / n_steps for k in range(n_steps)])
            inputs = control.on_segments(torch.zeros(n_steps, dtype=torch.long, device=x0.device),
                                         fractions.to(x0.device)).to(x0.dtype)
        columns = []
        for k in range(n_steps):
            parts = [(t0 + k * h if k else t0).to(x0.dtype).reshape(-1, 1)] if self.time_dependent else []
            if inputs is not None:
                parts.append(inputs[k])
            columns.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
        return columns

    def _node_may_apply(self, control: ControlPath | None, *data: torch.Tensor) -> bool:
        """Whether :meth:`transition_loss`'s node computes what this model's methods would: gradients recorded for
        the weights only, and the methods the node writes out as this class defines them."""
        if not torch.is_grad_enabled() or (getattr(self, "n_inputs", 0) and control is None):
            return False
        if any(name in self.__dict__ for name in _NODE_METHODS):
            return False  # a method replaced on the instance: the loss is what it computes
        if any(getattr(type(self), name) is not getattr(_SDEModel, name) for name in _NODE_METHODS):
            return False
        return data[0].dim() == 2 and not any(tensor.requires_grad for tensor in data)


# What transition_loss's node computes in one pass, so a model that changes them takes its own.
_NODE_METHODS = ("moments", "drift", "diffusion", "_drift_and_jacobian", "_inputs")


def _gaussian_nll_per_entry(y: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor,
                            cov: torch.Tensor) -> torch.Tensor:
    """Negative log-density of the observed entries of each row under N(mean, cov), per observed entry.

    The marginal of a Gaussian over the observed entries ``o`` is
    ``N(mean_o, cov_oo)``; it is evaluated on the full matrix by replacing
    the rows and columns of missing entries with those of the identity and
    zeroing their residuals, which leaves the determinant and quadratic form
    of ``cov_oo``. Where every entry is observed that replacement is skipped
    (it changes nothing). Returns NaN when a covariance is not positive
    definite, which the training loop turns into an error.
    """
    residual = y - mean
    if bool(mask.all()):
        observed: torch.Tensor | int = mask.numel()
        entries: torch.Tensor | int = max(observed, 1)
    else:
        m = mask.to(cov.dtype)
        cov = cov * (m[:, :, None] * m[:, None, :]) + torch.diag_embed(1.0 - m)
        residual = residual * m
        observed = m.sum()
        entries = observed.clamp_min(1)
    try:
        chol = torch.linalg.cholesky(cov)
    except torch.linalg.LinAlgError:
        return cov.new_tensor(float("nan"))
    z = torch.linalg.solve_triangular(chol, residual.unsqueeze(-1), upper=False)
    # log det = 2 sum log diag(chol); each observed entry adds log(2 pi) / 2
    half_log_det = torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum()
    return ((z**2).sum() * 0.5 + half_log_det + observed * (0.5 * math.log(2 * math.pi))) / entries


class NeuralSDE(ForecastIntervals, SeriesModel):
    """Neural stochastic differential equation on the observed state.

    Learns the Itô SDE ``dx = f(x) dt + g(x) dW`` (or with ``t`` as an input
    too, and with known inputs ``u(t)``, ``covariates``, read by both),
    ``f`` and ``g`` multilayer perceptrons, ``g`` kept positive by a
    softplus plus ``diffusion_floor``. With ``noise_type="diagonal"`` each
    feature has its own Brownian motion; with ``"scalar"`` one Brownian
    motion drives every feature, with per-feature amplitudes.

    **Objective.** Maximum likelihood of the observed transitions: each
    observation is scored under the Gaussian transition density from the one
    before it, over that series' own (possibly irregular) gap. The density
    comes from moment propagation: the gap is split into equal sub-steps no
    longer than ``step_size`` and a mean and covariance are carried through
    Euler–Maruyama steps with the drift linearised about the mean
    (``m ← m + h f(m)``, ``P ← A P Aᵀ + h g gᵀ``, ``A = I + h ∂f/∂x``).
    With one sub-step this is the Euler–Maruyama likelihood; sub-steps make
    it accurate over long gaps (exact for linear drift and additive noise as
    the sub-steps shrink). Entries missing in the observed row are
    marginalised out (likelihood of the observed entries only); the starting
    row's missing entries are filled by linear interpolation in time, as for
    :class:`NeuralODE`. The product of transition densities is the exact
    likelihood of a fully observed Markov path.

    **Predictions** condition on the latest observation strictly before each
    query (the first observation for a query at it); queries after the last
    observation are forecasts from it. ``predict`` returns the mean of the
    predictive distribution from the same moment propagation (deterministic;
    ``return_std=True`` adds the standard deviation), ``predict_quantiles``
    Gaussian quantiles of it (or empirical quantiles of samples), and
    ``sample`` simulates paths with the SDE ``solver``; paths from one anchor
    through several queries are one path. ``predict(X)`` gives one-step-ahead
    predictions at X's own times and ``score`` their R².

    ``rtol``, ``atol`` and ``adjoint`` are not parameters: every solve is
    fixed-step and training backpropagates through the moment propagation,
    not through an SDE solve.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the hidden layers of the drift and of the diffusion network.
    activation : {"tanh", "relu", "softplus", "elu", "silu", "gelu"}, default="tanh"
        Nonlinearity between the hidden layers of the networks.
    time_dependent : bool, default=False
        Feed time to both networks.
    noise_type : {"diagonal", "scalar"}, default="diagonal"
        Diffusion structure: ``"diagonal"``, one independent noise per state component; ``"scalar"``, one Brownian motion shared by all components.
    diffusion_floor : float, default=1e-3
        Smallest diffusion amplitude, on the standardised scale.
    step_size : float, default=0.5
        Longest sub-step of the moment propagation and of the sampler, in
        model time units (the median observation gap when ``standardize``).
    solver : str, default="euler"
        SDE method for ``sample``: an Itô method of
        :func:`dynlearn.solvers.available_sde_methods` ("euler", "milstein",
        "srk").
    max_num_steps : int, default=1000
        Most sub-steps per propagation or per sampled gap; beyond it
        :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default=200
        Most passes over the training data; early stopping (``patience``) may end training sooner.
    batch_size : int or "auto", default=128
        Transitions per minibatch.
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=3e-3
        Step size of the AdamW optimiser.
    weight_decay : float, default=0.0
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping on their likelihood. The
        likelihood is flat near its optimum, so a small held-out share is a
        noisy stopping signal; with few series, 0 (train on all, monitor the
        training loss) recovers the coefficients better.
    patience : int or None, default=10
        Epochs without improvement before stopping; None trains all epochs.
    standardize : bool, default=True
        Scale features and time inside the estimator (see :class:`NeuralODE`).
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
        Seeds weights and minibatch order (``sample`` takes its own).
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
    covariates : list of str or int, str or None, default=None
        Known inputs ``u(t)``: the value columns of X (names for frames,
        column indices for arrays) that drive both drift and diffusion,
        ``dx = f(x, u(t)) dt + g(x, u(t)) dW``, and are not forecast. They
        must be known at every row of the history, and ``predict``,
        ``sample`` and the interval methods need them at the query times:
        pass ``t`` as a query frame holding them (the known future inputs).
        Outputs hold the other columns only. ``simulate`` takes the input
        signal as ``covariates=``.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the inputs are read between their samples, in the moment
        propagation and in sampled paths: ``"previous"`` holds each sample
        until the next (zero-order hold); ``"linear"`` joins samples by
        straight lines; ``"cubic"`` is a Hermite cubic with backward
        differences as slopes. None of them reads a sample after the time
        being integrated, so a prediction never depends on later inputs.
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
    module_ : torch.nn.Module
        ``module_.drift_net`` and ``module_.diffusion_net`` on the standardised scale.
    history_ : History
        Per-epoch losses (negative log-likelihood per observed entry).
    n_features_in_, feature_names_in_, n_epochs_, training_time_, mean_, scale_, time_scale_
        As for :class:`NeuralODE`.
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units), the reference
        of :class:`~dynlearn.exceptions.ForecastRangeWarning`.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without inputs).
    static_index_ : ndarray of int
        Positions of the ``static_covariates`` among X's value columns
        (absent without them).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Standardisation of the inputs (absent without inputs).

    Examples
    --------
    >>> from dynlearn import NeuralSDE
    >>> from dynlearn.datasets import make_ou_process
    >>> frame = make_ou_process(n_series=4, n_times=20, random_state=0)
    >>> model = NeuralSDE(hidden_layer_sizes=(8,), max_epochs=3, random_state=0).fit(frame)
    >>> model.sample(frame, t=[5.5, 6.0], n_samples=10, random_state=0).shape
    (80, 3)
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "hidden_layer_sizes": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "time_dependent": ["boolean"],
        "noise_type": [StrOptions({"diagonal", "scalar"})],
        "diffusion_floor": [Interval(Real, 0, None, closed="neither")],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "covariates": [list, tuple, str, None],
        "covariate_interpolation": [StrOptions(set(CONTROL_INTERPOLATIONS))],
        "static_covariates": [list, tuple, str, None],
    }

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        time_dependent: bool = False,
        noise_type: str = "diagonal",
        diffusion_floor: float = 1e-3,
        step_size: float = 0.5,
        solver: str = "euler",
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int | str = 128,
        learning_rate: float = 3e-3,
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
        covariates: Sequence[Any] | str | None = None,
        covariate_interpolation: str = "previous",
        static_covariates: Sequence[Any] | str | None = None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.time_dependent = time_dependent
        self.noise_type = noise_type
        self.diffusion_floor = diffusion_floor
        self.step_size = step_size
        self.solver = solver
        self.max_num_steps = max_num_steps
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
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

    def _check_solver(self) -> None:
        info = sde_method(self.solver, "solver")
        if "ito" not in info.sde_types or self.noise_type not in info.noise_types:
            raise input_error(
                "solver", f"an Itô SDE method for {self.noise_type} noise (e.g. 'euler', 'milstein', 'srk')",
                repr(self.solver), "NeuralSDE learns an Itô SDE; Stratonovich methods would change its meaning.",
            )

    _streams_parquet = True

    # ----------------------------------------------------------------- fit
    @guarded_fit
    def fit(self, X: Any, y: Any = None, *, t: Any = None) -> "NeuralSDE":
        """Learn drift and diffusion by maximum likelihood of the observed transitions.

        Parameters
        ----------
        X : DataFrame, ndarray, list of ndarray, path, pyarrow Dataset or ParquetSeries
            Series in any accepted kind; NaN marks missing entries. A Parquet
            dataset (a path, a ``pyarrow.dataset.Dataset`` or a
            :class:`~dynlearn.data.ParquetSeries`) is read a chunk of whole
            series at a time, as :meth:`NeuralODE.fit` reads it, holding out
            the same series (or, with too few series, the same last
            transitions of each) as in memory (see the user guide, "Data
            larger than memory").
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
    def partial_fit(self, X: Any, y: Any = None, *, t: Any = None) -> "NeuralSDE":
        """Train one epoch on the series in ``X``, going on from the current weights and scaling.

        The first call on an unfitted model sets up the model as ``fit``
        does (scaling from ``X``, fresh weights); later calls keep the
        scaling, check ``X`` against the columns seen first, and continue
        training on its transitions, optimiser state included. Each call
        adds one record to ``history_``; early stopping does not apply, and
        the weights after the epoch are kept.

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

    def _fit(self, X: Any, t: Any) -> "NeuralSDE":
        batch = self._setup_fit(X, t)
        self._check_learnable(batch)
        if isinstance(batch, SeriesBatch) and not len(_transition_rows(batch)[0]):
            raise input_error("X", "two consecutive rows with an observed entry in the second", "none",
                              "Pass series with at least two observed rows.")
        train_data, valid_data = self._split_data(batch, lambda chunk, *_: self._transitions(chunk))
        self._init_module(self._build_module)

        def loss_fn(module: _SDEModel, data: dict[str, torch.Tensor]) -> torch.Tensor:
            control = None
            if "inputs" in data:
                knots = torch.stack([data["t0"], data["t0"] + data["gap"]], dim=1)
                control = module.control(knots, data["inputs"], (data["lead_gap"], data["lead_inputs"]))
            return module.transition_loss(data["x0"], data["t0"], data["gap"], self._n_substeps(data["gap"]),
                                          data["values"], data["mask"], control=control)

        self._train(loss_fn, train_data, valid_data)
        return self

    def _build_module(self) -> _SDEModel:
        return _SDEModel(self._n_states, tuple(self.hidden_layer_sizes), self.activation,
                         self.time_dependent, self.noise_type, float(self.diffusion_floor),
                         n_inputs=self._n_inputs, interpolation=self.covariate_interpolation)

    def _n_substeps(self, gap: torch.Tensor | np.ndarray) -> int:
        longest = float(gap.max()) if len(gap) else 0.0
        n = max(1, math.ceil(longest / self.step_size - 1e-9))
        if n > self.max_num_steps:
            raise IntegrationError(
                f"A gap of {longest:.4g} model time units needs {n} sub-steps of step_size={self.step_size}, more "
                f"than max_num_steps={self.max_num_steps}. Raise step_size or max_num_steps, or query closer to "
                "the observations."
            )
        return n

    def _internal(self, batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised values with gaps filled, model times, and standardised observed values."""
        filled = self._scale_values(batch.filled_values(self.mean_))
        times = self._scale_times(batch.times)
        observed = np.where(batch.mask, self._scale_values(batch.values), 0.0)
        return filled, times, observed

    def _transitions(self, batch: SeriesBatch) -> dict[str, np.ndarray]:
        """Every pair of consecutive rows whose second row has an observed entry."""
        filled, times, observed = self._internal(batch)
        series, row = _transition_rows(batch)
        examples = {
            "series": series,
            "x0": filled[series, row - 1],
            "t0": times[series, row - 1],
            "gap": times[series, row] - times[series, row - 1],
            "values": observed[series, row],
            "mask": batch.mask[series, row],
        }
        if batch.inputs is not None:
            # The inputs at both ends of the transition, and at the row before it (the cubic's first slope).
            inputs = self._scale_inputs(batch.inputs)
            before = np.maximum(row - 2, 0)
            examples["inputs"] = inputs[series[:, None], np.stack([row - 1, row], axis=1)]
            examples["lead_gap"] = times[series, row - 1] - times[series, before]
            examples["lead_inputs"] = inputs[series, before]
        return examples

    # ------------------------------------------------------------- predict
    def predict(self, X: Any, t: Any = None, *, return_std: bool = False, X_t: Any = None) -> Any:
        """Mean of the predictive distribution at query times.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times (shared, per series, or a frame of query rows), at or
            after each series' first observation. None gives one-step-ahead
            predictions at X's own times.
        return_std : bool, default=False
            Also return the predictive standard deviation of each entry.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        mean : same kind as X
        std : same kind as X
            Only with ``return_std=True``.
        """
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        mean, var = self._query_moments(batch, query, covariance=return_std)
        if not return_std:
            return to_user_kind(mean, query, batch)
        return to_user_kind(mean, query, batch), to_user_kind(np.sqrt(var), query, batch)

    def _predict_batch(self, batch: SeriesBatch, query: QueryTimes) -> np.ndarray:
        return self._query_moments(batch, query, covariance=False)[0]

    def _quantile_batch(self, batch: SeriesBatch, query: QueryTimes, levels: np.ndarray, n_samples: Any,
                        random_state: Any) -> np.ndarray:
        """Gaussian quantiles of the moment propagation (``n_samples=None``), else quantiles of sampled paths."""
        if n_samples is None:
            mean, var = self._query_moments(batch, query, covariance=True)
            return mean[None] + np.sqrt(var)[None] * ndtri(levels)[:, None, None, None]
        paths = self._sample_batch(batch, query, _check_n_samples(n_samples), self._interval_seed(random_state))
        return sample_quantiles(paths, levels)

    def _query_moments(self, batch: SeriesBatch, query: QueryTimes,
                       covariance: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictive mean and variance (n_series, n_queries, n_features) in user units."""
        if batch.inputs is not None:
            return self._driven_moments(batch, query, covariance)
        filled, times, _ = self._internal(batch)
        q_times = self._scale_times(query.times)
        series, anchors = _anchor_rows(times, batch.lengths, q_times)
        start = times[series, anchors]
        gaps = q_times.ravel() - start
        _check_forward(gaps, query)
        n_steps = self._n_substeps(gaps)
        x0 = filled[series, anchors]
        module = self.module_.eval()
        means, variances = [], []
        with torch.no_grad():
            for first in range(0, len(x0), _PREDICT_CHUNK):
                part = slice(first, first + _PREDICT_CHUNK)
                mean, cov = module.moments(self._tensor(x0[part]), self._tensor(start[part]),
                                           self._tensor(gaps[part]), n_steps, covariance=covariance)
                means.append(mean.cpu().double().numpy())
                if covariance:
                    variances.append(torch.diagonal(cov, dim1=1, dim2=2).cpu().double().numpy())
        shape = query.times.shape + (-1,)
        mean = self._note_forecast_range(self._unscale_values(np.concatenate(means).reshape(shape)))
        var = np.concatenate(variances).reshape(shape) * self.scale_**2 if covariance else None
        return mean, var

    def _driven_moments(self, batch: SeriesBatch, query: QueryTimes,
                        covariance: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Moments of a model driven by known inputs, carried through each anchor's queries in time order.

        The inputs between the anchor and a query are those given at the
        query times in between (and at the anchor), so no query reads an
        input after its own time.
        """
        filled, times, _ = self._internal(batch)
        groups, grid, path_inputs, lead = self._forward_paths(batch, query, times)
        x0 = filled[groups.series, groups.anchors]
        width = grid.shape[1]
        steps = [self._n_substeps(grid[:, p + 1] - grid[:, p]) for p in range(width - 1)]
        n_features = x0.shape[1]
        # Slot 0 (the anchor) of each path is never read back: answers sit at the query slots.
        means = np.empty((len(x0), width, n_features))
        variances = np.empty((len(x0), width, n_features)) if covariance else None
        module = self.module_.eval()
        with torch.no_grad():
            for first in range(0, len(x0), _PREDICT_CHUNK):
                part = slice(first, first + _PREDICT_CHUNK)
                knots = self._tensor(grid[part])
                control = module.control(knots, self._tensor(path_inputs[part]),
                                         (self._tensor(lead[0][part]), self._tensor(lead[1][part])))
                mean, cov = self._tensor(x0[part]), None
                for p in range(width - 1):
                    mean, cov = module.moments(mean, knots[:, p], knots[:, p + 1] - knots[:, p], steps[p],
                                               covariance=covariance, control=control, segment=p, cov0=cov)
                    means[part, p + 1] = mean.cpu().double().numpy()
                    if covariance:
                        variances[part, p + 1] = torch.diagonal(cov, dim1=1, dim2=2).cpu().double().numpy()
        mean = self._note_forecast_range(self._unscale_values(groups.gather(means, query.times.shape)))
        if not covariance:
            return mean, None
        return mean, groups.gather(variances, query.times.shape) * self.scale_**2

    def _forward_paths(self, batch: SeriesBatch, query: QueryTimes, times: np.ndarray) -> tuple[Any, ...]:
        """The queries grouped into paths forward from their anchors, with the scaled inputs along them.

        Returns the grouping, each path's knots (anchor time, then its
        queries) and, for a model with inputs, the inputs at the knots and
        the cubic reading's lead (None otherwise). Queries before a series'
        first observation are refused: an SDE runs forwards.
        """
        q_times = self._scale_times(query.times)
        series, anchors = _anchor_rows(times, batch.lengths, q_times)
        _check_forward(q_times.ravel() - times[series, anchors], query)
        if batch.inputs is None:
            groups = _query_groups(times, batch.lengths, q_times)
            return groups, groups.lay_out(times[groups.series, groups.anchors], q_times.ravel()), None, None
        paths = DrivenPaths.build(times, batch.lengths, self._scale_inputs(batch.inputs), q_times,
                                  self._scale_inputs(query.inputs).reshape(q_times.size, -1))
        return paths.groups, paths.times, paths.inputs, paths.lead

    # -------------------------------------------------------------- sample
    def sample(self, X: Any, t: Any = None, n_samples: int = 100, random_state: Any = None, *, X_t: Any = None) -> Any:
        """Draw paths of the learned SDE from each series' latest observation before the queries.

        Parameters
        ----------
        X : DataFrame, ndarray or list of ndarray
            The history of each series to condition on.
        t : array-like or DataFrame, default=None
            Query times as for :meth:`predict`; None samples each observation
            of X from the one before it.
        n_samples : int, default=100
            Sample paths to draw per series.
        random_state : int, RandomState or None, default=None
            Seeds the Brownian paths: the same value gives the same samples.
        X_t : array-like or list of array-like, default=None
            Observation times of an array or list ``X``, with the same rules
            as ``fit``'s ``t``: shared ``(n_times,)``, per series
            ``(n_series, n_times)``, or one 1-D array per series of a list.
            Required when the estimator was fitted on a frame or on other
            times than ``0, 1, ..., n_times - 1``; must be None for a frame,
            which carries its times.

        Returns
        -------
        Same kind as X with a leading sample axis
            Arrays ``(n_samples, ...)``; frames gain an outer ``sample``
            index level; a ragged list becomes one list per sample.
        """
        batch = self._check_input(X, X_t, time_argument="X_t")
        query = check_query_times(t, batch)
        paths = self._sample_batch(batch, query, _check_n_samples(n_samples), _sampling_seed(random_state))
        return to_user_kind(paths, query, batch)

    def _sample_batch(self, batch: SeriesBatch, query: QueryTimes, n_samples: int, seed: int) -> np.ndarray:
        """Paths (n_samples, n_series, n_queries, n_features) in user units, drawn from the call's base ``seed``.

        Queries sharing an anchor (series, latest earlier observation) form
        one group, simulated as one path through its sorted query times.
        """
        filled, times, _ = self._internal(batch)
        groups, grid, path_inputs, lead = self._forward_paths(batch, query, times)
        n_groups, width = grid.shape
        x0 = filled[groups.series, groups.anchors]
        sampling = stream_seed(seed, "sampling")
        simulated = np.empty((n_groups, width, n_samples, batch.n_features))
        module = self.module_.eval()
        # The solver takes the same number of steps on every row of a solve, enough for its longest gap;
        # rows are solved in buckets of equal need so one long gap does not make every row fine-stepped.
        need = np.ceil(np.log2(np.maximum(np.diff(grid, axis=1).max(axis=1), 1e-300) / self.step_size) - 1e-12)
        need = np.maximum(need, 0).astype(np.int64)
        with torch.no_grad():
            for bucket in np.unique(need):
                members = np.flatnonzero(need == bucket)
                rows = np.tile(members, n_samples)
                draw = np.repeat(np.arange(n_samples), len(members))
                n_chunks = max(1, math.ceil(len(rows) / _SAMPLE_CHUNK))
                seeds = np.random.SeedSequence([sampling, int(bucket)]).generate_state(n_chunks)
                for c in range(n_chunks):
                    part = slice(c * _SAMPLE_CHUNK, (c + 1) * _SAMPLE_CHUNK)
                    knots = self._tensor(grid[rows[part]])
                    control = None
                    if path_inputs is not None:
                        control = module.control(knots, self._tensor(path_inputs[rows[part]]),
                                                 (self._tensor(lead[0][rows[part]]), self._tensor(lead[1][rows[part]])))
                    out = solve_sde_irregular(
                        module, self._tensor(x0[rows[part]]), knots, method=self.solver,
                        step_size=self.step_size, seed=int(seeds[c]), max_num_steps=self.max_num_steps,
                        control=control,
                    )
                    simulated[rows[part], :, draw[part]] = out.cpu().double().numpy()
        paths = np.moveaxis(groups.gather(simulated, query.times.shape), 2, 0)
        return self._note_forecast_range(self._unscale_values(paths))


    # ------------------------------------------------------------ simulate
    def simulate(self, x0: Any, t: Any, *, n_samples: int = 1, random_state: Any = None,
                 covariates: Any = None, static_covariates: Any = None) -> np.ndarray:
        """Simulate the learned SDE from explicit initial states.

        For a model with ``covariates`` this is a free-run simulation: the
        states evolve under the given input signal alone, never corrected by
        observations.

        Parameters
        ----------
        x0 : array-like of shape (n_series, n_features) or (n_features,)
            Initial states (user units) at ``t[..., 0]``; ``n_features``
            counts the modelled states, not the inputs.
        t : array-like of shape (n_times,) or (n_series, n_times)
            Non-decreasing output times on the training data's float clock;
            the first is the time of ``x0``.
        n_samples : int, default=1
            Sample paths to draw per series.
        random_state : int, RandomState or None, default=None
            Seeds the Brownian paths.
        covariates : array-like of shape (n_times, n_inputs) or (n_series, n_times, n_inputs), default=None
            The known inputs at the times ``t``, in the order of the
            ``covariates`` parameter, read between them by
            ``covariate_interpolation``; required when the model has
            inputs, refused otherwise.
        static_covariates : array-like of shape (n_static,) or (n_series, n_static), default=None
            Each series' values of the ``static_covariates`` columns;
            required when the model has them, refused otherwise.

        Returns
        -------
        ndarray of shape (n_samples, n_series, n_times, n_features)
            ``(n_samples, n_times, n_features)`` for a 1-D ``x0``.
        """
        check_is_fitted(self, "module_")
        single = np.ndim(x0) == 1
        states = _as_states(x0, self._n_states, "x0", self._state_names())
        raw_times = _output_times(t, len(states))
        times = self._scale_times(raw_times)
        inputs = self._simulation_inputs(covariates, raw_times.shape, static_covariates)
        if (np.diff(times, axis=1) < 0).any():
            raise input_error("t", "non-decreasing output times", "a decreasing step",
                              "An SDE is simulated forwards in time; sort the times.")
        n_samples = _check_n_samples(n_samples)
        seed = stream_seed(_sampling_seed(random_state), "sampling")
        rows = np.tile(np.arange(len(states)), n_samples)
        module = self.module_.eval()
        with torch.no_grad():
            knots = self._tensor(times[rows])
            control = None if inputs is None else module.control(knots, self._tensor(inputs[rows]))
            out = solve_sde_irregular(
                module, self._tensor(self._scale_values(states)[rows]), knots,
                method=self.solver, step_size=self.step_size, seed=seed, max_num_steps=self.max_num_steps,
                control=control,
            )
        paths = self._unscale_values(out.cpu().double().numpy()).reshape(n_samples, len(states), times.shape[1], -1)
        self._note_forecast_range(paths)
        return paths[:, 0] if single else paths

    def drift(self, x: Any, t: Any = None, *, covariates: Any = None, static_covariates: Any = None) -> np.ndarray:
        """The learned drift ``f`` at states ``x``, in user units per time unit.

        Parameters
        ----------
        x : array-like of shape (n_points, n_features)
            States, in user units.
        t : float or array-like of shape (n_points,), default=None
            Times, used by time-dependent models (default: the first time
            seen at fit).
        covariates : array-like of shape (n_points, n_inputs), default=None
            The known inputs at each state, for a model with ``covariates``
            (required there, refused otherwise).
        static_covariates : array-like of shape (n_static,) or (n_points, n_static), default=None
            The static covariates at each state, for a model with them.
        static_covariates : array-like of shape (n_static,) or (n_points, n_static), default=None
            The static covariates at each state, for a model with them.

        Returns
        -------
        ndarray of shape (n_points, n_features)
        """
        f, _ = self._coefficients(x, t, covariates, static_covariates)
        return f

    def diffusion(self, x: Any, t: Any = None, *, covariates: Any = None, static_covariates: Any = None) -> np.ndarray:
        """The learned diffusion amplitudes ``g`` at states ``x``, in user units.

        Per feature: the standard deviation of an increment over a short
        time ``h`` is ``g * sqrt(h)`` (for ``noise_type="scalar"`` one
        Brownian motion drives every feature).

        Parameters
        ----------
        x : array-like of shape (n_points, n_features)
            States, in user units.
        t : float or array-like of shape (n_points,), default=None
            Times, used by time-dependent models (default: the first time
            seen at fit).
        covariates : array-like of shape (n_points, n_inputs), default=None
            The known inputs at each state, for a model with ``covariates``
            (required there, refused otherwise).

        Returns
        -------
        ndarray of shape (n_points, n_features)
        """
        _, g = self._coefficients(x, t, covariates, static_covariates)
        return g

    def _coefficients(self, x: Any, t: Any, covariates: Any, static_covariates: Any = None) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "module_")
        states = _as_states(x, self._n_states, "x", self._state_names())
        times = _point_times(t, len(states), self.time_offset_)
        inputs = self._simulation_inputs(covariates, (1, len(states)), static_covariates, per_time_static=True)
        module = self.module_.eval()
        with torch.no_grad():
            y, s = self._tensor(self._scale_values(states)), self._tensor(self._scale_times(times))
            u = None if inputs is None else self._tensor(inputs[0])
            f = module.drift(y, s, u).cpu().double().numpy()
            g = module.diffusion(y, s, u).cpu().double().numpy()
        return f * self.scale_ / self.time_scale_, g * self.scale_ / np.sqrt(self.time_scale_)


def _check_n_samples(n_samples: Any) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
        raise input_error("n_samples", "a positive int", repr(n_samples), "Pass e.g. n_samples=100.")
    return int(n_samples)


def _check_forward(gaps: np.ndarray, query: QueryTimes) -> None:
    early = (gaps < 0) & query.mask.ravel()
    if early.any():
        raise input_error(
            "t", "query times at or after each series' first observation", f"{int(early.sum())} earlier queries",
            "An SDE is simulated forwards in time from an observation; drop queries before a series starts.",
        )


def _transition_rows(batch: SeriesBatch) -> tuple[np.ndarray, np.ndarray]:
    """Series and row of every row after the first with an observed entry: the end of a transition."""
    series, row = np.nonzero(batch.row_mask[:, 1:] & batch.mask[:, 1:].any(axis=2))
    return series, row + 1
