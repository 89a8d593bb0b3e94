"""The suite's models: every public estimator, discrete-depth counterparts, and a naive baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .._auto import AutoForecaster, LastValueForecaster
from ..estimators import (
    HamiltonianNN,
    LagrangianNN,
    LatentODE,
    LatentODEClassifier,
    LatentSDE,
    NeuralCDE,
    NeuralCDEClassifier,
    NeuralODE,
    NeuralSDE,
    ODERNN,
    ODERNNClassifier,
)
from ._measure import record_evaluation
from ._tasks import Task, TaskData, pick


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Parameters
    ----------
    name : str
        Row label and ``--only`` name.
    estimator : str or None
        The public dynlearn estimator it is built on (None for baselines
        outside dynlearn's estimators).
    family : str
        What kind of model it is, for the report ("continuous, adaptive",
        "discrete depth", "energy-based", "latent", "stochastic", "baseline").
    description : str
        One line for the report: settings and what they mean.
    build : callable ``(data, size, seed, device) -> estimator``
        A fresh, unfitted estimator for a task's data (``data.n_features``
        etc.); ``size`` is "tiny", "quick" or "full" (see :func:`pick`).
    applies : callable ``(task, data) -> str or None``
        None when the model applies to the task, else the reason it does not.
    rollout : bool
        Forecast by stepping ``simulate`` through the query times from the
        last observed state (the depth discrete models were trained with)
        instead of ``predict(history, t=queries)``.
    counts_evaluations : bool
        Whether its vector-field evaluations go through ``dynlearn.solvers``
        (or :func:`adams_bashforth2`), so that NFE is measured (0 is then a
        real zero: a model trained without solves).
    """

    name: str
    estimator: str | None
    family: str
    description: str
    build: Callable[[TaskData, str, int, str], Any]
    applies: Callable[[Task, TaskData], str | None] = lambda task, data: None
    rollout: bool = False
    counts_evaluations: bool = True


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to :data:`MODELS`; that is all a new model needs."""
    if spec.name in MODELS and not replace:
        raise ValueError(f"A model named {spec.name!r} is already registered; pass replace=True to swap it.")
    MODELS[spec.name] = spec
    return spec


def public_estimators() -> list[str]:
    """Names in ``dynlearn.__all__`` that are estimators with ``fit`` and ``predict``."""
    import dynlearn

    names = []
    for name in dynlearn.__all__:
        value = getattr(dynlearn, name)
        if isinstance(value, type) and all(callable(getattr(value, verb, None)) for verb in ("fit", "predict")):
            names.append(name)
    return names


# ------------------------------------------------------------- shared settings
def training(size: str, seed: int, device: str) -> dict[str, Any]:
    """Optimisation settings every neural model of the suite shares (estimator keyword arguments)."""
    return dict(
        max_epochs=pick(size, tiny=2, quick=20, full=400),
        patience=pick(size, tiny=None, quick=None, full=30),
        batch_size=64,
        learning_rate=pick(size, tiny=1e-2, quick=1e-2, full=3e-3),
        random_state=seed,
        device=device,
    )


def hidden(size: str) -> tuple[int, ...]:
    """Hidden layer widths of the suite's networks."""
    return pick(size, tiny=(8,), quick=(32, 32), full=(64, 64))


def energy_epochs(size: str) -> int:
    """Epochs of the energy-based models, whose derivative-matching epochs cost no solve."""
    return pick(size, tiny=4, quick=80, full=800)


def _needs_phase_space(task: Task, data: TaskData) -> str | None:
    if not task.phase_space:
        return (
            f"needs columns that are positions then their momenta/velocities; {task.name}'s "
            f"{data.n_features} variable(s) are not a phase space"
        )
    return None


# ------------------------------------------------------------ continuous depth
register_model(
    ModelSpec(
        "NeuralODE",
        "NeuralODE",
        "continuous, adaptive",
        "NeuralODE, dopri5 (rtol 1e-3, atol 1e-4) on each series' own times; 2 × 32 tanh (full: 2 × 64).",
        lambda data, size, seed, device: NeuralODE(hidden_layer_sizes=hidden(size), **training(size, seed, device)),
    )
)

register_model(
    ModelSpec(
        "ResNet",
        "NeuralODE",
        "discrete depth",
        "ResNet-style: NeuralODE with solver='euler', one forward-Euler step per observation gap "
        "(x_{k+1} = x_k + Δ_k f(x_k)); forecasts step through the query times.",
        lambda data, size, seed, device: NeuralODE(
            hidden_layer_sizes=hidden(size), solver="euler", **training(size, seed, device)
        ),
        rollout=True,
    )
)


# ------------------------------------------------------------ linear multistep
def adams_bashforth2(field: nn.Module, y0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Unroll the two-step Adams–Bashforth formula over each row's own ``times``.

    With gaps ``h_k = t_{k+1} - t_k`` and ``f_k = f(t_k, y_k)``::

        y_1     = y_0 + h_0 f_0                                   (a forward-Euler start)
        y_{k+1} = y_k + h_k [(1 + r_k / 2) f_k - (r_k / 2) f_{k-1}],   r_k = h_k / h_{k-1}

    the variable-step form, second-order on uneven gaps (with equal gaps it
    is ``y_k + h (3 f_k - f_{k-1}) / 2``). It is the linear-multistep
    network of Lu et al. (LM-ResNet, 2018) with the coefficients of a
    consistent multistep method: one evaluation of ``f`` per gap, like a
    ResNet, but each update also uses the previous evaluation. A gap of zero
    (padding) holds the state; the step after it restarts with Euler.

    Parameters
    ----------
    field : module ``(t, y) -> dy/dt`` with ``t`` of shape (batch,)
    y0 : Tensor of shape (batch, dim)
    times : Tensor of shape (batch, n_times)

    Returns
    -------
    Tensor of shape (batch, n_times, dim)
    """
    states = [y0]
    previous: torch.Tensor | None = None
    gaps = times.diff(dim=1)
    for k in range(times.shape[1] - 1):
        h = gaps[:, k : k + 1]
        record_evaluation()
        current = field(times[:, k], states[-1])
        if previous is None:
            step = h * current
        else:
            before = gaps[:, k - 1 : k]
            ratio = torch.where(before != 0, h / torch.where(before != 0, before, torch.ones_like(before)), 0.0)
            step = h * ((1 + ratio / 2) * current - ratio / 2 * previous)
        states.append(states[-1] + step)
        previous = current
    return torch.stack(states, dim=1)


class _AdamsBashforthFlow(nn.Module):
    """NeuralODE's module with its flow replaced by :func:`adams_bashforth2` over the observation times."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def field(self) -> nn.Module:
        return self.model.field

    @property
    def augment_dim(self) -> int:
        return self.model.augment_dim

    def dynamics(self) -> nn.Module:
        return self.model.dynamics()

    def initial_state(self, x0: torch.Tensor, v0: torch.Tensor | None,
                      history: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.model.initial_state(x0, v0, history)

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return self.model.observe(state)

    def control(self, times: torch.Tensor, inputs: torch.Tensor | None, lead: Any = None) -> Any:
        return self.model.control(times, inputs, lead)

    def forward(self, y0: torch.Tensor, times: torch.Tensor, solve: dict[str, Any], control: Any = None) -> torch.Tensor:
        if control is not None:
            raise ValueError("the Adams-Bashforth flow of the linear-multistep model takes no known inputs")
        return adams_bashforth2(self.model.field, y0, times)


class LinearMultistepODE(NeuralODE):
    """NeuralODE trained and rolled out with a two-step Adams–Bashforth unrolling (LM-ResNet style).

    Everything (data entry, windows, scaling, training, ``predict``,
    ``simulate``) is :class:`~dynlearn.NeuralODE`'s; only the flow differs:
    :func:`adams_bashforth2` over the observation times instead of a
    solver. ``solver``, ``rtol``, ``atol`` and ``adjoint`` are unused
    (gradients flow directly through the unrolling). A prediction from one
    anchor to one query is a single step, hence forward Euler.
    """

    @property
    def module_(self) -> nn.Module:
        try:
            return self.__dict__["module_"]
        except KeyError:
            raise AttributeError("module_") from None

    @module_.setter
    def module_(self, module: nn.Module) -> None:
        # NeuralODE.fit builds its module and assigns it here: wrap its flow.
        if not isinstance(module, _AdamsBashforthFlow):
            module = _AdamsBashforthFlow(module)
        self.__dict__["module_"] = module


register_model(
    ModelSpec(
        "LM-ResNet",
        "NeuralODE",
        "discrete depth",
        "Linear-multistep network: NeuralODE whose flow is a two-step Adams–Bashforth unrolling over the "
        "observation gaps (one evaluation per gap, variable-step coefficients, Euler start); forecasts step "
        "through the query times.",
        lambda data, size, seed, device: LinearMultistepODE(
            hidden_layer_sizes=hidden(size), solver="euler", **training(size, seed, device)
        ),
        applies=lambda task, data: (
            "its Adams–Bashforth flow reads no known inputs (the task is driven by them)" if data.covariates else None
        ),
        rollout=True,
    )
)


# --------------------------------------------------------------- energy-based
register_model(
    ModelSpec(
        "HamiltonianNN",
        "HamiltonianNN",
        "energy-based",
        "HamiltonianNN, fit_on='auto' (central differences, then trajectory windows for a quarter of the "
        "epochs), dopri5; 2 × 32 tanh (full: 2 × 64).",
        lambda data, size, seed, device: HamiltonianNN(
            hidden_layer_sizes=hidden(size), **{**training(size, seed, device), "max_epochs": energy_epochs(size)}
        ),
        applies=_needs_phase_space,
    )
)

register_model(
    ModelSpec(
        "LagrangianNN",
        "LagrangianNN",
        "energy-based",
        "LagrangianNN, fit_on='auto' (central differences of the velocities only: no solves in training), "
        "dopri5 rollouts; 2 × 32 softplus (full: 2 × 64). Columns read as positions and velocities (for the "
        "mass-spring task p = m q̇ with m = 1).",
        lambda data, size, seed, device: LagrangianNN(
            hidden_layer_sizes=hidden(size), **{**training(size, seed, device), "max_epochs": energy_epochs(size)}
        ),
        applies=_needs_phase_space,
    )
)


# ----------------------------------------------------------------- stochastic
register_model(
    ModelSpec(
        "NeuralSDE",
        "NeuralSDE",
        "stochastic",
        "NeuralSDE: neural drift and diagonal diffusion fitted by the Gaussian transition likelihood (moment "
        "propagation, sub-steps ≤ half the median gap); forecasts are its predictive mean, CRPS and coverage "
        "come from sampled paths (Euler–Maruyama); 2 × 32 tanh (full: 2 × 64). Its training solves no ODE "
        "(no NFE).",
        # Sampling steps every gap of a path by its longest one's sub-steps: forecasts far past the history
        # need more than the default step limit.
        lambda data, size, seed, device: NeuralSDE(
            hidden_layer_sizes=hidden(size), max_num_steps=20_000, **training(size, seed, device)
        ),
        counts_evaluations=False,
    )
)


# ------------------------------------------------------- latent and recurrent
def _not_a_forecaster(task: Task, data: TaskData) -> str | None:
    return (
        "a classifier: it predicts one label per series (e.g. mortality) from the whole history; every "
        "task of the suite scores forecasts of the observed variables"
    )


register_model(
    ModelSpec(
        "ODERNN",
        "ODERNN",
        "recurrent, continuous",
        "ODERNN (Rubanova et al. 2019): a GRU updates a hidden state at each observation, a neural ODE (Euler "
        "on each series' own clock) evolves it between them; hidden 16, ODE 1 × 32 (full: 20, 1 × 64); "
        "trained to interpolate with 80% of rows shown. Its Euler steps are taken inline, outside "
        "dynlearn.solvers (no NFE counted).",
        lambda data, size, seed, device: ODERNN(
            hidden_dim=pick(size, tiny=8, quick=16, full=20),
            ode_hidden_layer_sizes=pick(size, tiny=(8,), quick=(32,), full=(64,)),
            **training(size, seed, device),
        ),
        counts_evaluations=False,
    )
)

register_model(
    ModelSpec(
        "ODERNNClassifier",
        "ODERNNClassifier",
        "recurrent, continuous",
        "ODERNNClassifier: the ODE-RNN encoder with a classification head (labels per series).",
        lambda data, size, seed, device: ODERNNClassifier(**training(size, seed, device)),
        applies=_not_a_forecaster,
    )
)

register_model(
    ModelSpec(
        "NeuralCDE",
        "NeuralCDE",
        "controlled, continuous",
        "NeuralCDE (Kidger et al. 2020): state driven by the cubic path of time and observations, "
        "dz = f(z) dX, rk4 one step per gap; reads 32 rows, then runs with the observed channels held; "
        "state 16, f 1 × 32 (full: 32, 1 × 64).",
        lambda data, size, seed, device: NeuralCDE(
            hidden_dim=pick(size, tiny=4, quick=16, full=32),
            hidden_layer_sizes=pick(size, tiny=(8,), quick=(32,), full=(64,)),
            **training(size, seed, device),
        ),
    )
)

register_model(
    ModelSpec(
        "NeuralCDEClassifier",
        "NeuralCDEClassifier",
        "controlled, continuous",
        "NeuralCDEClassifier: the CDE read over the whole series, linear head on its final state.",
        lambda data, size, seed, device: NeuralCDEClassifier(**training(size, seed, device)),
        applies=_not_a_forecaster,
    )
)

register_model(
    ModelSpec(
        "LatentODEClassifier",
        "LatentODEClassifier",
        "latent, continuous",
        "LatentODEClassifier: LatentODE with a head on z0 trained jointly (labels per series).",
        lambda data, size, seed, device: LatentODEClassifier(**training(size, seed, device)),
        applies=_not_a_forecaster,
    )
)

register_model(
    ModelSpec(
        "LatentODE",
        "LatentODE",
        "latent, continuous",
        "LatentODE (Rubanova et al. 2019): ODE-RNN encoder to q(z0 | history), latent neural ODE (dopri5), "
        "linear decoder; latent 6, layers 2 × 32 (full: latent 10, 2 × 64); forecasts are the decoded posterior "
        "mean, CRPS and coverage from posterior samples (noise-free trajectories: obs_std not added). NFE "
        "counts the latent dopri5 solves, not the encoder's inline Euler steps.",
        lambda data, size, seed, device: LatentODE(
            latent_dim=pick(size, tiny=3, quick=6, full=10),
            encoder_dim=pick(size, tiny=8, quick=16, full=20),
            encoder_layer_sizes=hidden(size),
            ode_layer_sizes=hidden(size),
            **training(size, seed, device),
        ),
    )
)

register_model(
    ModelSpec(
        "LatentSDE",
        "LatentSDE",
        "latent, stochastic",
        "LatentSDE (Li et al. 2020): posterior and prior latent SDEs with a learned diffusion, fitted by the "
        "ELBO; latent 4, 2 × 32, windows of 20 observations (full: 2 × 64, whole series); forecasts are the "
        "mean of its samples, CRPS and coverage from them. Its solves go through torchsde (no NFE counted).",
        lambda data, size, seed, device: LatentSDE(
            latent_dim=pick(size, tiny=2, quick=4, full=4),
            context_dim=pick(size, tiny=4, quick=8, full=16),
            hidden_layer_sizes=hidden(size),
            encoder_hidden_size=pick(size, tiny=8, quick=16, full=32),
            n_samples_predict=pick(size, tiny=4, quick=8, full=32),
            # Whole long series (the real pendulum) cost hundreds of SDE steps per example: quick runs use windows.
            window_size=pick(size, tiny=None, quick=20, full=None),
            **training(size, seed, device),
        ),
        counts_evaluations=False,
    )
)


# ------------------------------------------------------------------ baseline
register_model(
    ModelSpec(
        "LastValue",
        "LastValueForecaster",
        "baseline",
        "Naive persistence: the latest observed value of each variable (no training). A model that does "
        "not beat it has learned nothing useful for the task.",
        lambda data, size, seed, device: LastValueForecaster(),
        counts_evaluations=False,
    )
)


def _auto_candidates(size: str, seed: int, device: str) -> dict[str, Any]:
    """AutoForecaster's candidates at the suite's size: the naive forecaster and two NeuralODEs with hidden state."""
    common = dict(hidden_layer_sizes=hidden(size), **training(size, seed, device))
    return {
        "last_value": LastValueForecaster(),
        "node_delay": NeuralODE(augment_dim=2, hidden_init="delay", **common),
        "node_encoder": NeuralODE(augment_dim=4, hidden_init="encoder", **common),
    }


register_model(
    ModelSpec(
        "Auto",
        "AutoForecaster",
        "model selection",
        "AutoForecaster: backtests LastValue and two NeuralODEs with hidden state (delay coordinates; a GRU "
        "encoder) on 3 expanding-window folds of a fifth of the series' length, within 60 s (full: 600 s), "
        "and refits the one with the lowest forecast MSE.",
        lambda data, size, seed, device: AutoForecaster(
            candidates=_auto_candidates(size, seed, device), time_budget=pick(size, tiny=60, quick=60, full=600),
            cv=3, random_state=seed,
        ),
        counts_evaluations=False,
    )
)
