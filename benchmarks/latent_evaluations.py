"""Latent ODE evaluations per training iteration, from initialisation on, against the authors' code.

``irregular_speed_authors`` counted 296 latent-field evaluations per
iteration for dynlearn's LatentODE and 44 for the authors' code
(Rubanova et al. 2019, github.com/YuliaRubanova/latent_ode) on the toy
periodic data. This traces where the gap comes from: both models from
their first iteration, on the same 800 training series (the paper's 100
shared times on [0, 5], 50 shown to the encoder), at the paper's sizes
(``irregular.LATENT_SPEED``; dopri5 rtol 1e-3 atol 1e-4, Euler encoder,
3 draws of z0, batch 50). Every ``--every`` iterations: mean encoder and
latent evaluations per iteration over the window (forward passes only,
counted the same way on both sides, ``irregular.EvaluationCounter``), and
the training reconstruction MSE in the data's units (mean over the 3
draws, all 100 points, 50 of them shown to the encoder), so the two are
compared at equal accuracy as well as at equal iterations.

dynlearn's side starts from the weights ``fit`` builds (captured by a
callback before the first step) and steps as ``fit`` does (AdamW at the
estimator's rate, gradient norm clipped at 1, KL weight 0 as in the
first 10 epochs of both schedules), the latent field's parameters at
``ode_learning_rate_scale`` times the rate. Variants (``VARIANTS``):
``default``, the estimator's defaults (the field as ``make_mlp`` draws it:
torch's fan-in-scaled uniform layers, the last one's weights shrunk by 10,
trained at the shared rate); ``shared_rate``: the same, the rate named;
the others change one thing of ``shared_rate``:
``normal_field`` re-draws the field's linear layers from N(0, 0.1²) with
biases 0 (the scale the authors' code draws every layer at),
``small_last`` shrinks its last layer by a further 10, ``orthogonal_0.5``
re-draws its hidden layers orthogonal with gain 0.5, ``kinetic`` /
``kinetic_0.1`` / ``jacobian_0.1`` add those penalties, ``rtol_1e-2``
loosens the tolerances 10 times; ``field_rate_0.1`` / ``_0.3`` / ``_0.5``
set ``ode_learning_rate_scale``. The authors' side runs with
``$DYNLEARN_AUTHORS_LATENT_ODE`` set to a checkout of their code (not
shipped with dynlearn) and is left out without one.

    OMP_NUM_THREADS=1 DYNLEARN_AUTHORS_LATENT_ODE=/path/to/latent_ode PYTHONPATH=. \
        python benchmarks/latent_evaluations.py [--iterations 320 --every 40 --seeds 0 1]

writes ``results.csv`` and ``report.md`` in
``benchmarks/results/latent_evaluations/`` (or ``--out``). ``--spectra
1 40 120 240`` writes instead ``spectra.csv``: eigenvalues of the latent
field's Jacobian at states of one iteration's solves, dynlearn's
``--variants`` and the authors'. ``--panel --seeds 0 1`` writes
``panel.csv``: the held-out MSE of fits of ``--variants`` on ``latent_defaults``'
varied-sinusoid panel (the size ``tests/estimators/test_latent_ode_defaults.py``
uses). ``--driven`` writes ``driven.csv``: R² of short driven fits of
``--variants`` forecasting forced oscillators under held-out input signals
(the fit ``tests/estimators/test_covariates_latent.py`` checks).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from dynlearn import LastValueForecaster, LatentODE
from dynlearn.solvers import count_evaluations
from dynlearn.training import Callback, TrainState, train_step

import latent_defaults
from authors_reference import authors_library, authors_training
from irregular import (
    LATENT_SPEED, ONE_EPOCH, SHARED_TRAIN_SERIES, SPEED_BATCH, EvaluationCounter, consecutive_batches, speed_minibatch,
)  # fmt: skip

NAME = "latent_evaluations"
OUT = Path(__file__).resolve().parent / "results" / NAME
NORMAL_FIELD_STD = 0.1


class InitialModule(Callback):
    """A copy of the module, loss and training examples ``fit`` starts from (before its first step)."""

    def on_train_begin(self, state: TrainState) -> None:
        self.module = copy.deepcopy(state.module)
        self.loss_fn, self.train_data = state.loss_fn, state.train_data
        self.learning_rate = state.optimizer.defaults["lr"]


def normal_field(module: torch.nn.Module, seed: int) -> None:
    """The latent field's linear layers re-drawn from N(0, NORMAL_FIELD_STD²), biases 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.field.net.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, NORMAL_FIELD_STD, generator=generator)
                layer.bias.zero_()


def small_last_layer(module: torch.nn.Module, seed: int) -> None:
    """The latent field's last layer shrunk by a further 10: weights 0.01 of torch's fan-in uniform draw."""
    with torch.no_grad():
        module.field.net[-1].weight.mul_(0.1)


def orthogonal_field(module: torch.nn.Module, seed: int) -> None:
    """The latent field's hidden layers re-drawn orthogonal with gain 0.5 (biases 0); the last layer kept."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layers = [layer for layer in module.field.net.modules() if isinstance(layer, torch.nn.Linear)]
        for layer in layers[:-1]:
            torch.nn.init.orthogonal_(layer.weight, gain=0.5, generator=generator)
            layer.bias.zero_()


# name: (estimator settings, re-draw of the latent field before the first step). The field variants name the
# shared rate (``ode_learning_rate_scale=1``, the default) so that they stay one change away from it.
SHARED = {"ode_learning_rate_scale": 1.0}
VARIANTS: dict[str, tuple[dict, Callable | None]] = {
    "default": ({}, None),
    "shared_rate": (SHARED, None),
    "normal_field": (SHARED, normal_field),
    "kinetic": ({**SHARED, "kinetic_weight": 1.0}, None),
    "kinetic_0.1": ({**SHARED, "kinetic_weight": 0.1}, None),
    "jacobian_0.1": ({**SHARED, "jacobian_weight": 0.1}, None),
    "small_last": (SHARED, small_last_layer),
    "orthogonal_0.5": (SHARED, orthogonal_field),
    "rtol_1e-2": ({**SHARED, "rtol": 1e-2, "atol": 1e-3}, None),
    "field_rate_0.1": ({"ode_learning_rate_scale": 0.1}, None),
    "field_rate_0.3": ({"ode_learning_rate_scale": 0.3}, None),
    "field_rate_0.5": ({"ode_learning_rate_scale": 0.5}, None),
}


def field_groups(module: torch.nn.Module, rate: float, scale: float) -> list[dict]:
    """AdamW parameter groups as ``fit`` builds them: the latent field's parameters at ``scale`` times ``rate``."""
    field = list(module.field.parameters())
    chosen = {id(p) for p in field}
    return [{"params": [p for p in module.parameters() if id(p) not in chosen], "lr": rate},
            {"params": field, "lr": rate * scale}]  # fmt: skip


def dynlearn_steps(variant: str, seed: int) -> Callable[[], tuple[int, int, float]]:
    """One training iteration of dynlearn's LatentODE per call: (encoder evaluations, latent evaluations, MSE)."""
    frame = speed_minibatch("shared_times", SHARED_TRAIN_SERIES)
    start = InitialModule()
    options, redraw = VARIANTS[variant]
    settings = {**LATENT_SPEED, **options}
    estimator = LatentODE(**settings, **{**ONE_EPOCH, "random_state": seed}, callbacks=[start]).fit(frame)
    module, scale = start.module, float(estimator.scale_[0])
    if redraw is not None:
        redraw(module, seed)
    batches = consecutive_batches(start.train_data, SPEED_BATCH)
    groups = field_groups(module, start.learning_rate, estimator.ode_learning_rate_scale)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    decoded: dict[str, torch.Tensor] = {}
    module.decoder.register_forward_hook(lambda _, inputs, output: decoded.__setitem__("output", output))
    calls = 0

    def step() -> tuple[int, int, float]:
        nonlocal calls
        batch = batches[calls % len(batches)]
        calls += 1
        module.train()
        with EvaluationCounter(encoder=module.encoder.field.net, latent=module.field.net) as counter:
            train_step(module, start.loss_fn, batch, optimizer, clip_grad_norm=1.0)
        draws = decoded["output"].detach().reshape(settings["n_samples_train"], len(batch["values"]), -1)
        mse = float(((draws - batch["values"][None, :, :, 0]) ** 2).mean()) * scale**2
        return counter.counts["encoder"], counter.counts["latent"], mse

    step.field = lambda states: module.field(torch.zeros(()), states)
    step.network = module.field.net
    return step


def authors_steps(lib: Any) -> Callable[[], tuple[int, int, float]]:
    """One iteration of the authors' training loop per call: (encoder evaluations, latent evaluations, MSE)."""
    baseline = sys.modules["lib.base_models"].VAE_Baseline
    losses, seen = baseline.compute_all_losses, {}

    def keeping_mse(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        result = losses(self, *args, **kwargs)
        seen["mse"] = float(result["mse"])
        return result

    baseline.compute_all_losses = keeping_mse  # their loss reports the MSE; the loop keeps only the loss
    iteration, _, networks = authors_training(lib, "latent_ode", torch.device("cpu"))

    def step() -> tuple[int, int, float]:
        with EvaluationCounter(**networks) as counter:
            iteration()
        return counter.counts["encoder"], counter.counts["latent"], seen["mse"]

    step.field = networks["latent"]
    step.network = networks["latent"]
    return step


class FieldStates(EvaluationCounter):
    """The states a network is evaluated at while active: the inputs of its first layer's products."""

    def __init__(self, network: torch.nn.Module, width: int):
        super().__init__(latent=network)
        self.width, self.states = width, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        position = self._PRODUCTS.get(func)
        if position is not None and len(args) > position and self.names.get(id(args[position])) == "latent":
            state = args[1 if func is torch.addmm else 0]
            if state.shape[-1] == self.width:
                self.states.append(state.detach().reshape(-1, self.width))
        return super().__torch_function__(func, types, args, kwargs)


def field_spectrum(step: Callable, width: int, n_states: int = 200) -> dict[str, float]:
    """Eigenvalues of the latent field's Jacobian at states of one iteration's solves (medians over states):
    the largest modulus, the largest imaginary part (rotation rate, rad per time unit) and largest real part."""
    with FieldStates(step.network, width) as seen:
        step()
    states = torch.cat(seen.states)
    chosen = states[torch.randperm(len(states), generator=torch.Generator().manual_seed(0))[:n_states]]
    values = [torch.linalg.eigvals(torch.autograd.functional.jacobian(step.field, y[None])[0, :, 0].double())
              for y in chosen]  # fmt: skip
    return {
        "jacobian_radius": float(np.median([v.abs().max() for v in values])),
        "jacobian_max_imaginary": float(np.median([v.imag.abs().max() for v in values])),
        "jacobian_max_real": float(np.median([v.real.max() for v in values])),
    }


def spectra(name: str, step: Callable, checkpoints: list[int]) -> list[dict]:
    rows, done = [], 0
    for checkpoint in checkpoints:
        while done < checkpoint - 1:
            step()
            done += 1
        rows.append(dict(model=name, iteration=checkpoint, **field_spectrum(step, LATENT_SPEED["latent_dim"])))
        done += 1
        print(f"  {name} it {checkpoint}: {rows[-1]}", flush=True)
    return rows


class Redraw(Callback):
    """A variant's re-draw of the latent field before the first step of ``fit``."""

    def __init__(self, redraw: Callable, seed: int):
        self.redraw, self.seed = redraw, seed

    def on_train_begin(self, state: TrainState) -> None:
        self.redraw(state.module, self.seed)


def panel_accuracy(seed: int, variant: str) -> dict[str, Any]:
    """A default LatentODE (or a variant of its latent field) on the varied-sinusoid panel of
    ``latent_defaults`` at the size its test uses: held-out interpolation MSE and evaluations per epoch."""
    train, given, hidden = latent_defaults.panel(seed=seed, n_series=200, n_held=40)
    keys = ["series_id", "time"]
    begun = time.perf_counter()
    with warnings.catch_warnings(), count_evaluations() as counted:
        warnings.simplefilter("ignore")
        options, redraw = VARIANTS[variant]
        callbacks = [] if redraw is None else [Redraw(redraw, seed)]
        model = LatentODE(**options, random_state=0, device="cpu", n_threads=1, callbacks=callbacks).fit(train)
    seconds = time.perf_counter() - begun
    truth = hidden["y"].to_numpy()
    predicted = model.predict(given, t=hidden[keys])["y"].to_numpy()
    last_value = LastValueForecaster().fit(given).predict(given, t=hidden[keys])["y"].to_numpy()
    return dict(panel_seed=seed, variant=variant, mse=float(np.mean((predicted - truth) ** 2)),
                last_value_mse=float(np.mean((last_value - truth) ** 2)), epochs=model.n_epochs_,
                evaluations_per_epoch=counted.nfe / model.n_epochs_, fit_seconds=seconds)  # fmt: skip


def driven_accuracy(seed: int, variant: str) -> dict[str, Any]:
    """A short driven fit (``tests/estimators/test_covariates_latent.py``'s: forced oscillators, 30 epochs, rk4,
    extrapolation) of a variant of the latent field: R² of forecasts under held-out input signals."""
    from dynlearn.datasets import make_forced_oscillator
    from dynlearn.metrics import r2_score

    frame = make_forced_oscillator(n_series=48, n_times=60, t_span=(0.0, 15.0), random_state=seed)
    train, test = frame[frame.series_id < 40], frame[frame.series_id >= 40]
    history, future = test[test.time <= 7.5], test[test.time > 7.5]
    options, _ = VARIANTS[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LatentODE(covariates=["u"], covariate_interpolation="linear", max_epochs=30, latent_dim=4,
                          encoder_dim=16, encoder_layer_sizes=(32,), ode_layer_sizes=(32,), solver="rk4",
                          task="extrapolation", refine_steps=0, batch_size=10, random_state=seed, n_threads=1,
                          **options).fit(train)  # fmt: skip
    predicted = model.predict(history, t=future[["series_id", "time", "u"]])
    truth = future[["series_id", "time", "q", "p"]]
    naive = LastValueForecaster().fit(history.drop(columns="u")).predict(history.drop(columns="u"),
                                                                         t=future[["series_id", "time"]])  # fmt: skip
    return dict(seed=seed, variant=variant, r2=float(r2_score(truth, predicted)),
                last_value_r2=float(r2_score(truth, naive)))  # fmt: skip


def trace(name: str, seed: int, step: Callable[[], tuple[int, int, float]], iterations: int, every: int) -> list[dict]:
    rows, window = [], []
    for done in range(1, iterations + 1):
        begun = time.perf_counter()
        window.append((*step(), time.perf_counter() - begun))
        if done == 1 or done % every == 0:
            encoder, latent, mse, seconds = np.mean(window, axis=0)
            rows.append(dict(model=name, seed=seed, iteration=done, nfe_encoder=encoder, nfe_latent=latent,
                             mse=mse, seconds_per_iteration=seconds))  # fmt: skip
            figures = f"latent {latent:.0f} encoder {encoder:.0f} mse {mse:.3f}"
            print(f"  {name} seed {seed} it {done}: {figures}", flush=True)
            window = []
    return rows


def markdown(frame: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def write(frame: pd.DataFrame, command: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    seeds = sorted(int(seed) for seed in frame.loc[frame["model"] != "authors", "seed"].unique())
    table = frame.pivot_table(index=["iteration"], columns="model", values=["nfe_latent", "mse"], aggfunc="mean")
    table.columns = [f"{value}.{model}" for value, model in table.columns]
    text = [
        "# Latent ODE evaluations per training iteration, dynlearn against the authors' code", "",
        f"Command: `{command}`, torch on one thread (OMP_NUM_THREADS=1). dynlearn seeds: {seeds} "
        "(the authors' code seeds itself: 1991). Each row: means over the iterations since the previous row "
        "(the first row: iteration 1 alone), averaged over seeds. nfe_*: forward evaluations of the latent "
        "field per iteration; mse: training reconstruction MSE in the data's units.", "",
        markdown(table.reset_index()), "",
        "Encoder evaluations per iteration: "
        + ", ".join(f"{m} {v:.0f}" for m, v in frame.groupby("model")["nfe_encoder"].mean().items()) + ".", "",
    ]  # fmt: skip
    (out / "report.md").write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=320)
    parser.add_argument("--every", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["default", "shared_rate"], choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--spectra", type=int, nargs="+", metavar="ITERATION",
                        help="instead: the latent field's Jacobian eigenvalues at these iterations (first seed, "
                        "--variants and the authors'), written to spectra.csv")  # fmt: skip
    parser.add_argument("--panel", action="store_true",
                        help="instead: fits of --variants on latent_defaults' panel (seeds --seeds), "
                        "written to panel.csv")  # fmt: skip
    parser.add_argument("--driven", action="store_true",
                        help="instead: short driven fits of --variants on forced oscillators (seeds --seeds), "
                        "written to driven.csv")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.driven:
        rows = [driven_accuracy(seed, variant) for seed in args.seeds for variant in args.variants]
        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out / "driven.csv", index=False)
        print(pd.DataFrame(rows).to_string())
        return 0
    if args.panel:
        rows = []
        for seed in args.seeds:
            for variant in args.variants:
                rows.append(panel_accuracy(seed, variant))
                print(rows[-1], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out / "panel.csv", index=False)
        print(pd.DataFrame(rows).to_string())
        return 0
    if args.spectra:
        rows = [row for variant in args.variants
                for row in spectra(f"dynlearn_{variant}", dynlearn_steps(variant, args.seeds[0]), args.spectra)]  # fmt: skip
        lib = authors_library()
        if lib is not None:
            rows += spectra("authors", authors_steps(lib), args.spectra)
        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out / "spectra.csv", index=False)
        return 0
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            rows += trace(f"dynlearn_{variant}", seed, dynlearn_steps(variant, seed), args.iterations, args.every)
    lib = authors_library()
    if lib is not None:
        rows += trace("authors", 1991, authors_steps(lib), args.iterations, args.every)
    command = "OMP_NUM_THREADS=1 python benchmarks/latent_evaluations.py " + shlex.join(argv or sys.argv[1:])
    write(pd.DataFrame(rows), command.strip(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
