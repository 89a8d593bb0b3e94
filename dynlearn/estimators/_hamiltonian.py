"""HamiltonianNN: a learned H(q, p) whose symplectic gradient is the vector field."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..exceptions import input_error
from ..nn import HamiltonianField
from ..solvers import ControlPath, available_symplectic_methods, solve_hamiltonian, symplectic_method
from ._physics import PHASE_SPACE_CONSTRAINTS, PhaseSpaceModel


class _StepperGradients:
    """``∂H/∂q`` and ``∂H/∂p`` as the two callables ``(q, p, t)`` symplectic steppers take.

    A separable ``H`` differentiates only the network each one needs. A
    general ``H`` yields both from one backward pass, and steppers ask for
    them one after the other at the same ``(q, p)``, so that pair is kept
    until another state arrives.
    """

    def __init__(self, field: HamiltonianField):
        self.field = field
        self.last: tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _pair(self, q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.last is None or self.last[0] is not q or self.last[1] is not p:
            self.last = (q, p, self.field.gradients(q, p))
        return self.last[2]

    def grad_q(self, q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.field.potential_gradient(q) if self.field.separable else self._pair(q, p)[0]

    def grad_p(self, q: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.field.kinetic_gradient(p) if self.field.separable else self._pair(q, p)[1]


class HamiltonianNN(PhaseSpaceModel):
    """Hamiltonian neural network: learns an energy ``H(q, p)`` from series.

    The vector field is the symplectic gradient of a multilayer perceptron
    ``H`` (Greydanus, Dzamba & Yosinski 2019)::

        dq/dt = ∂H/∂p,    dp/dt = -∂H/∂q

    computed with ``torch.autograd``. Whatever the weights, the flow
    conserves the learned ``H``, so rollouts neither spiral in nor out; with
    ``separable=True``, ``H = T(p) + V(q)`` is two networks and explicit
    symplectic steppers apply.

    The features split into positions ``q`` and momenta ``p``: by default
    the first half of the columns are positions and the second half their
    momenta, in the same order; ``positions`` / ``momenta`` name them
    otherwise. Every feature must be one or the other.

    **Training.** ``fit_on="derivatives"`` regresses the vector field on
    time derivatives estimated from the observed series by central finite
    differences of each series on its own times (``numpy.gradient``, on
    interior rows whose neighbours are observed) — or on measured
    derivatives passed as ``fit(X, derivatives=dXdt)``, which
    ``fit_on="auto"`` then uses alone. ``fit_on="trajectories"`` matches windows of
    ``window_size`` observations through the integrator, like
    :class:`NeuralODE`. ``"auto"`` does both: derivatives for
    ``max_epochs``, then trajectories for ``max_epochs // 4`` (trajectories
    alone when no series has three consecutive observed rows). On the ideal
    mass-spring task (25 series of 30 points with noise 0.1, ten seeds)
    this gave the lowest energy error along rollouts ten times longer than
    the data (median MSE 3.7e-4, against 4.5e-4 for trajectories alone and
    7.1e-4 for derivatives alone) in a third of the time of trajectories
    alone: differencing amplifies the noise, which derivative matching
    alone ends up fitting, while trajectory matching from a random start
    is slow.

    **Scaling.** Rescaling ``q`` and ``p`` by unrelated factors does not
    keep a flow Hamiltonian. With ``standardize=True`` each pair is
    shifted by its means and scaled as ``q = μ_q + a q̃``,
    ``p = μ_p + b p̃`` with ``a b = c`` equal for every pair (so that
    ``q̃`` and ``p̃`` share one spread), and time as ``t = τ t̃`` (the
    median observation gap). The scaled flow is then Hamiltonian with
    ``H̃ = (τ / c) H``; :meth:`energy` reports ``H = (c / τ) H̃`` in the
    user's units (those of ``q · p / t``), as ``energy_scale_`` records.

    Predictions condition on history: the value at a query time is
    integrated from the latest observation strictly before it (queries at
    or before a series' first observation integrate from that observation,
    backwards when needed).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(200, 200)
        Widths of the hidden layers of ``H`` (of ``T`` and of ``V`` when
        separable).
    activation : {"tanh", "softplus", "elu", "silu", "gelu", "relu"}, default="tanh"
        Must be smooth: the vector field is the network's gradient.
    separable : bool, default=False
        Learn ``H = T(p) + V(q)``.
    positions, momenta : list of str or int, default=None
        Feature columns (names for frames, or indices) holding the
        positions and their momenta, in matching order (indices count all
        of X's columns). Give one and the other is the remaining columns
        other than the ``covariates``; give neither to split those in half.
    fit_on : {"auto", "derivatives", "trajectories"}, default="auto"
        Training target; see above.
    window_size : int or None, default=10
        Observations per training window when matching trajectories.
    step_size : float, default=None
        Largest step of fixed-step solvers (``"rk4"``, the symplectic
        ones), in the time units of the data; None uses the median
        observation gap.
    solver : str, default="dopri5"
        Any name of :func:`dynlearn.solvers.available_ode_methods`, or a
        symplectic method of :func:`dynlearn.solvers.available_symplectic_methods`:
        ``"leapfrog"`` and ``"yoshida4"`` (explicit, need ``separable=True``)
        or ``"implicit_midpoint"`` (any ``H``). Symplectic solvers keep the
        energy error bounded over long rollouts; they backpropagate
        through their steps, so ``adjoint`` must be False with them.
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
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of series held out for early stopping (of each series' last
        examples when there are too few series); 0 monitors the training loss.
    patience : int or None, default=10
        Epochs without improvement before stopping; None trains all epochs.
    standardize : bool, default=True
        Structure-preserving scaling described above; predictions and
        energies are in the user's units either way.
    device : str, default="auto"
        "auto", "cpu", "cuda" or "cuda:<index>".
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
        ``dp/dt = -∂H/∂q + B(q) u``, with ``B`` learned (``input_matrix``);
        with ``u = 0`` the flow is the unforced one and conserves the
        learned energy. Inputs are scaled without a shift, so that zero
        stays no force. ``predict`` then needs a query frame holding the
        inputs at the query times, and ``simulate`` the input signal as
        ``covariates=``; :meth:`input_power` gives the power ``q̇ · B(q) u``
        they deliver. Inputs must be known at every row.
        With a symplectic ``solver`` every kick reads the inputs at its own
        time (a ``"previous"`` input is held over each gap, its force
        evaluated anew at each observation time); with inputs none of
        them conserves the energy any more, since the forces do work.
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
    module_ : HamiltonianField
        The trained ``H`` (on standardised coordinates and time).
    fit_on_ : {"derivatives", "trajectories"}
        The training target used.
    position_columns_, momentum_columns_ : ndarray of int
        Feature indices of the positions and momenta.
    n_coordinates_ : int
        Number of positions (half the features that are not inputs).
    energy_scale_ : float
        User energy units per unit of the internal ``H̃``: ``c / τ``.
    reference_state_ : ndarray of shape (n_features,)
        The state at which :meth:`energy` is zero (the observed means with
        ``standardize=True``, the origin otherwise).
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
        Per-feature shift and scale (coupled as described above).
    time_scale_ : float
        Time unit the model integrates in (median observation gap).
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

    Examples
    --------
    >>> import numpy as np
    >>> from dynlearn import HamiltonianNN
    >>> t = np.linspace(0, 6, 40)
    >>> X = np.stack([np.cos(t), -np.sin(t)], axis=-1)  # q, p of a unit oscillator
    >>> model = HamiltonianNN(hidden_layer_sizes=(32,), max_epochs=5, random_state=0).fit(X, t=t)
    >>> model.predict(X, t=[7.0, 8.0], X_t=t).shape, model.energy(X, X_t=t).shape
    ((2, 2), (40, 1))
    """

    _conjugate = "momenta"
    _auto_fit_on = ("derivatives", "trajectories")
    _parameter_constraints = {**PHASE_SPACE_CONSTRAINTS, "momenta": ["array-like", None], "separable": ["boolean"]}

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (200, 200),
        activation: str = "tanh",
        separable: bool = False,
        positions: Sequence[Any] | None = None,
        momenta: Sequence[Any] | None = None,
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
        self.separable = separable
        self.positions = positions
        self.momenta = momenta
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
        return HamiltonianField(
            n_coordinates, tuple(self.hidden_layer_sizes), self.activation, self.separable, **self._field_inputs()
        )

    def _couple_scales(self) -> None:
        q, p = self.position_columns_, self.momentum_columns_
        if self.standardize:
            # a_i b_i = c for every pair keeps the scaled flow Hamiltonian; c is
            # the geometric mean of the pairs' spread products, and a_i / b_i
            # equals the ratio of the pair's spreads, so q̃_i and p̃_i spread alike.
            spread_q, spread_p = self.scale_[q], self.scale_[p]
            common = float(np.exp(np.mean(np.log(spread_q * spread_p))))
            scale = self.scale_.copy()
            scale[q] = np.sqrt(common * spread_q / spread_p)
            scale[p] = np.sqrt(common * spread_p / spread_q)
            self.scale_ = scale
        self.energy_scale_ = float(self.scale_[q[0]] * self.scale_[p[0]] / self.time_scale_)

    # ---------------------------------------------------------------- solvers
    def _is_symplectic(self) -> bool:
        return isinstance(self.solver, str) and self.solver.lower() in available_symplectic_methods()

    def _check_solver(self) -> None:
        if not self._is_symplectic():
            super()._check_solver()
            return
        method = symplectic_method(self.solver, "solver").name
        if method != "implicit_midpoint" and not self.separable:
            raise input_error(
                "solver",
                f"a method for a general H(q, p) when separable=False; {method!r} needs H = T(p) + V(q)",
                repr(self.solver),
                "Use solver='implicit_midpoint', or separable=True to keep the explicit stepper.",
            )
        if self.adjoint:
            raise input_error(
                "adjoint",
                "False with a symplectic solver (they backpropagate through their own steps)",
                "True",
                "Set adjoint=False, or pick a torchdiffeq solver such as 'dopri5'.",
            )

    def _solve(self, field: nn.Module, y0: torch.Tensor, times: torch.Tensor, *, adjoint: bool,
               control: ControlPath | None = None) -> torch.Tensor:
        if not self._is_symplectic():
            return super()._solve(field, y0, times, adjoint=adjoint, control=control)
        gradients = _StepperGradients(field)
        q, p = solve_hamiltonian(
            gradients.grad_q,
            gradients.grad_p,
            *y0.split(self.n_coordinates_, dim=-1),
            times,
            method=self.solver,
            step_size=self._internal_step(),
            separable=self.separable,
            max_num_steps=self.max_num_steps,
            force=None if control is None else field.input_matrix.force,
            control=control,
        )
        return torch.cat([q, p], dim=-1)
