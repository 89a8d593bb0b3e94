"""LagrangianNN: a learned L(q, q̇) whose Euler–Lagrange equations are the dynamics."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from ..nn import LagrangianField
from ._physics import PHASE_SPACE_CONSTRAINTS, PhaseSpaceModel


class LagrangianNN(PhaseSpaceModel):
    """Lagrangian neural network: learns ``L(q, q̇)`` from series of positions and velocities.

    A multilayer perceptron ``L`` defines the accelerations through the
    Euler–Lagrange equations, evaluated with ``torch.autograd``
    (Cranmer et al. 2020)::

        q̈ = (∇_q̇ ∇_q̇ᵀ L)⁻¹ [∇_q L − (∇_q ∇_q̇ᵀ L) q̇]

    solved with ``torch.linalg.solve``. Along the resulting flow the learned
    energy ``E = q̇ · ∂L/∂q̇ − L`` is conserved, whatever the weights. Unlike
    :class:`HamiltonianNN` it needs no momenta: the data are positions and
    their velocities, the quantities usually measured.

    The features split into positions ``q`` and velocities ``q̇``: by
    default the first half of the columns are positions and the second half
    their velocities, in the same order; ``positions`` / ``velocities`` name
    them otherwise. Velocities must be the time derivatives of the positions
    in the data's time units.

    **Training.** ``fit_on="derivatives"`` regresses the accelerations on
    central finite differences of the observed velocities of each series on
    its own times (on interior rows whose neighbours are observed), or on
    measured accelerations passed as ``fit(X, derivatives=dXdt)`` (the
    columns of ``dXdt`` under the velocities; those under the positions
    are not used);
    ``fit_on="trajectories"`` matches windows of ``window_size``
    observations through the integrator, like :class:`NeuralODE`, with
    second derivatives of ``L`` at every evaluation. ``"auto"`` matches
    derivatives (trajectories when no series has three consecutive observed
    rows): from a random ``L``, trajectory matching meets near-singular
    velocity Hessians whose huge accelerations stall the solver (on the
    pendulum it ran past the step limit in its first epoch). Once fitted,
    a few epochs of ``set_params(fit_on="trajectories",
    warm_start=True).fit(X)`` refine the model (on the pendulum, about 20
    times lower energy error along long rollouts) at many times the cost.

    **Scaling.** The Euler–Lagrange equations keep their form under any
    change of coordinates ``q = μ + a q̃`` and of time ``t = τ t̃``, provided
    the velocities follow: ``q̇ = (a / τ) dq̃/dt̃``. With ``standardize=True``
    positions are standardised per feature, velocities are scaled by
    ``a / τ`` without a shift, and ``τ`` is chosen so that scaled
    velocities are of order one: the inverse geometric mean over
    coordinates of (root-mean-square velocity / position spread), the
    time the motion takes to cross one spread. ``L`` is only determined up to a constant factor and a total
    time derivative, so :meth:`energy` is the learned energy up to a factor
    (possibly negative) and an additive constant; it is reported as
    ``Ẽ / τ`` and is zero at ``reference_state_`` (mean positions, zero
    velocities).

    Predictions condition on history: the value at a query time is
    integrated from the latest observation strictly before it.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(200, 200)
        Widths of the hidden layers of ``L``.
    activation : {"softplus", "tanh", "elu", "silu", "gelu", "relu"}, default="softplus"
        Must have a nonzero second derivative: the velocity Hessian of a
        ``"relu"`` network vanishes and is refused (see Raises).
    positions, velocities : list of str or int, default=None
        Feature columns (names for frames, or indices) of the positions and
        their velocities, in matching order (indices count all of X's
        columns). Give one and the other is the remaining columns other than
        the ``covariates``; give neither to split those in half.
    fit_on : {"auto", "derivatives", "trajectories"}, default="auto"
        Training target; see above.
    window_size : int or None, default=10
        Observations per training window when matching trajectories.
    step_size : float, default=None
        Largest step of fixed-step solvers (e.g. ``"rk4"``), in the time
        units of the data; None uses the median observation gap.
    solver : str, default="dopri5"
        Any name of :func:`dynlearn.solvers.available_ode_methods`.
    rtol, atol : float, default=1e-3, 1e-4
        Tolerances of adaptive solvers, on the standardised scale.
    adjoint : bool, default=False
        Backpropagate through trajectory solves with the adjoint method.
    max_num_steps : int, default=1000
        Step limit of each solve; past it :class:`~dynlearn.exceptions.IntegrationError`.
    max_epochs : int, default=200
        Most passes over the training data of the first stage; early stopping (``patience``) may end training
        sooner. With ``fit_on="auto"`` the trajectory stage after the derivative one adds ``max_epochs // 4``
        (``n_epochs_`` counts both).
    batch_size : int or "auto", default=64
        Examples per minibatch (rows for derivatives, windows for trajectories).
        ``"auto"`` chooses it at fit from the number of training examples,
        their size and the device (:func:`dynlearn.training.auto_batch_size`).
        ``batch_size_`` records the size trained with (the last stage's).
    learning_rate : float, default=1e-3
        Step size of the AdamW optimiser.
    weight_decay : float, default=0.0
        AdamW weight decay; it also keeps ``∂²L/∂q̇²`` away from singularity.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping; 0 monitors the training loss.
    patience : int or None, default=10
        Epochs without improvement before stopping; None trains all epochs.
    standardize : bool, default=True
        Structure-preserving scaling described above.
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
        Seeds weights and minibatch order; the global torch seed is untouched.
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
        Known inputs ``u(t)`` acting as generalised forces: the value
        columns of X (names for frames, indices for arrays) that are not
        coordinates, never forecast, and read between samples by
        ``covariate_interpolation``. The dynamics become
        ``M(q, q̇) q̈ = ∂L/∂q − (∂²L/∂q̇∂q) q̇ + B(q) u`` with ``M = ∂²L/∂q̇²``, with ``B`` learned (``input_matrix``);
        with ``u = 0`` the flow is the unforced one and conserves the
        learned energy. Inputs are scaled without a shift, so that zero
        stays no force. ``predict`` then needs a query frame holding the
        inputs at the query times, and ``simulate`` the input signal as
        ``covariates=``; :meth:`input_power` gives the power ``q̇ · B(q) u``
        they deliver. Inputs must be known at every row.
    covariate_interpolation : {"previous", "linear", "cubic"}, default="previous"
        How the inputs are read between their samples inside a solve:
        ``"previous"`` holds each sample until the next (a zero-order hold,
        as a digital controller applies it); ``"linear"`` joins samples by
        straight lines; ``"cubic"`` by Hermite cubics whose slopes are
        backward differences. None reads a sample after the time being
        integrated, so a prediction never depends on later inputs. It also
        sets which input the derivative stage pairs with each central
        difference (the row's own, or for ``"previous"`` the gap-weighted
        mean of the held inputs on both sides of the row).
    input_matrix : {"constant", "positions"}, default="constant"
        How the map ``B`` from inputs to generalised forces is learned:
        ``"constant"``, one matrix ``(n_coordinates, n_inputs)`` started at
        zero (actuators acting directly on the coordinates, such as the
        force on a mass or the torque at a joint); ``"positions"``, a
        multilayer perceptron of the positions with ``hidden_layer_sizes``
        (a lever arm that depends on the configuration). ``B`` never reads
        momenta or velocities, so the inputs cannot act as damping.

    Attributes
    ----------
    module_ : LagrangianField
        The trained ``L`` (on standardised coordinates and time).
    fit_on_ : {"derivatives", "trajectories"}
        The training target used.
    position_columns_, velocity_columns_ : ndarray of int
        Feature indices of the positions and velocities.
    n_coordinates_ : int
        Number of positions (half the features that are not inputs).
    energy_scale_ : float
        User units per unit of the internal energy: ``1 / τ``.
    reference_state_ : ndarray of shape (n_features,)
        The state at which :meth:`energy` is zero.
    history_ : History
        Per-epoch losses; ``history_.to_frame()`` tabulates them.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Defined when fitted on a DataFrame.
    n_epochs_ : int
        Epochs trained in the last ``fit``.
    training_time_ : float
        Seconds spent in the last ``fit``.
    mean_, scale_ : ndarray of shape (n_features,)
        Per-feature shift and scale (velocities coupled to positions).
    time_scale_ : float
        Time unit the model integrates in (see Scaling).
    data_min_, data_max_ : ndarray of shape (n_features,)
        Observed range of each feature at fit (user units), the reference
        of :class:`~dynlearn.exceptions.ForecastRangeWarning`.
    covariate_index_ : ndarray of int
        Positions of the ``covariates`` among X's value columns (absent
        without inputs).
    covariate_mean_, covariate_scale_ : ndarray of shape (n_inputs,)
        Scaling of the inputs: zeros and their root mean square at fit
        (absent without inputs).
    conformal_leads_, conformal_residuals_, conformal_lead_edges_ : ndarray
        Calibration of the split conformal forecast intervals of
        ``predict_interval`` and ``predict_quantiles`` (see ``calibrate``),
        made by ``fit`` on the series ``validation_fraction`` holds out;
        absent until the model is calibrated.

    Raises
    ------
    IntegrationError
        From ``fit``, ``predict``, ``simulate`` or ``vector_field`` when the
        learned ``∂²L/∂q̇²`` is singular or ill-conditioned at a state, so
        the accelerations are undetermined; the message says what to change.

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import LagrangianNN
    >>> t = np.linspace(0, 6, 40)
    >>> X = np.stack([np.cos(t), -np.sin(t)], axis=-1)  # q, dq/dt of a unit oscillator
    >>> model = LagrangianNN(hidden_layer_sizes=(32,), max_epochs=20, random_state=0).fit(X, t=t)
    >>> model.predict(X, t=[7.0, 8.0], X_t=t).shape, model.energy(X, X_t=t).shape
    ((2, 2), (40, 1))
    """

    _conjugate = "velocities"
    _auto_fit_on = ("derivatives",)
    _from_scratch_advice = (
        "Trajectory matching started from random weights here, whose velocity Hessian is often near singular: "
        "fit on derivatives first (fit_on='auto', the default), then refine with "
        "set_params(fit_on='trajectories', warm_start=True).fit(X)."
    )
    _parameter_constraints = {**PHASE_SPACE_CONSTRAINTS, "velocities": ["array-like", None]}

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (200, 200),
        activation: str = "softplus",
        positions: Sequence[Any] | None = None,
        velocities: Sequence[Any] | None = None,
        fit_on: str = "auto",
        window_size: int | None = 10,
        step_size: float | None = None,
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        max_epochs: int = 200,
        batch_size: int | str = 64,
        learning_rate: float = 1e-3,
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
        input_matrix: str = "constant",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.positions = positions
        self.velocities = velocities
        self.fit_on = fit_on
        self.window_size = window_size
        self.step_size = step_size
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
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
        self.input_matrix = input_matrix

    def _make_field(self, n_coordinates: int) -> nn.Module:
        return LagrangianField(n_coordinates, tuple(self.hidden_layer_sizes), self.activation, **self._field_inputs())

    def _couple_scales(self) -> None:
        q, v = self.position_columns_, self.velocity_columns_
        self.mean_, self.scale_ = self.mean_.copy(), self.scale_.copy()
        if self.standardize:
            # The clock that makes scaled speeds of order one: velocities cannot
            # be standardised on their own, so time absorbs their size.
            rates = np.hypot(self.scale_[v], self.mean_[v]) / self.scale_[q]
            self.time_scale_ = float(np.exp(-np.mean(np.log(rates))))
        # Velocities are derivatives of the scaled positions on the scaled
        # clock: scale a / τ and no shift.
        self.mean_[v] = 0.0
        self.scale_[v] = self.scale_[q] / self.time_scale_
        self.energy_scale_ = 1.0 / self.time_scale_

    def _trained_outputs(self) -> np.ndarray:
        # d[q]/dt is the velocity itself, fixed by the state: only the
        # accelerations depend on L.
        return np.arange(2 * self.n_coordinates_) >= self.n_coordinates_
