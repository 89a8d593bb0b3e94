"""Training iterations of a latent SDE through dynlearn's written-out Euler–Maruyama against torchsde's stepping.

Three ways to take one training iteration (a logqp solve, backward pass,
AdamW step) of a latent SDE on 128 series reported at 50 times, Euler steps
of 0.25 (196 per solve, as in ``speed_vs_peers``'s LatentSDE rows), timed
round by round in one process with one torch thread:

* ``sdeint``: a hand-written loop around ``torchsde.sdeint(..., logqp=True)``
  with its default Brownian motion;
* ``written out``: ``dynlearn.solvers.solve_sde`` (the written-out steps,
  increments drawn in one call);
* ``torchsde stepping``: ``solve_sde`` with a torchsde method option (which
  Euler–Maruyama ignores), which sends the solve through ``torchsde.sdeint``
  with a seeded ``BrownianInterval``, as every SDE solve went before.

The latent SDE: a posterior drift MLP reading the state and the time, a
prior drift MLP, one sigmoid diffusion per latent dimension, a linear
decoder; the loss is the squared error of the decoded path plus the path KL
per observation. All three start from the same weights. ``small``: hidden
(32, 32); ``large``: (256, 256).

With ``--baseline PATH`` (a dynlearn checkout from before the written-out
steps), ``LatentSDE`` fits of this checkout and of the baseline are also
timed in interleaved subprocesses, median epoch seconds after the first.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_sde.py [--rounds 40] [--baseline PATH]``.
Writes ``benchmarks/results/written_out_sde/results.csv`` and ``report.md``.

``--fused ROUNDS`` times instead ``LatentSDE``'s own training iteration (as
``fit`` takes it, the minibatch of ``speed_vs_peers``' LatentSDE rows) with
its solve fused into one autograd node (``PosteriorLayers``, the default)
and step by step (the dynamics' ``posterior_layers`` returning None), same
weights, same process, one thread, rounds interleaved; writes ``fused.csv``
and ``fused.md``. With ``--driven`` too, the model is driven by a known
input (``covariates=["u"]``, linear interpolation, on
``make_forced_oscillator``): writes ``fused_driven.csv`` and
``fused_driven.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import torch
import torchsde
from harness import compare_iterations, write_rows
from irregular import TrainingCapture
from torch import nn

from dynlearn import LatentSDE
from dynlearn.datasets import make_damped_oscillator, make_forced_oscillator
from dynlearn.solvers import solve_sde
from dynlearn.training import adamw, train_step

RESULTS = Path(__file__).resolve().parent / "results" / "written_out_sde"
SIZES = {"small": (32, 32), "large": (256, 256)}
WAYS = ("sdeint", "written out", "torchsde stepping")
SERIES, LATENT, DT = 128, 4, 0.25
# torchsde's Euler method reads no options; passing one sends solve_sde through torchsde.sdeint.
THROUGH_TORCHSDE = {"through_torchsde": True}
EPOCH_SCRIPT = """
import json, statistics, torch
from dynlearn import LatentSDE
from dynlearn.datasets import make_damped_oscillator
torch.set_num_threads(1)
frame = make_damped_oscillator(n_series=128, n_times=50, random_state=0)
model = LatentSDE(kl_anneal_epochs=0, batch_size=32, dt=0.25, max_epochs={epochs}, patience=None, random_state=0,
                  n_threads=1).fit(frame)
history = model.history_.to_frame()
print(json.dumps([statistics.median(history["duration"].iloc[1:]), float(history["valid_loss"].iloc[-1])]))
"""


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers += [nn.Linear(a, b)] + ([nn.Tanh()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class LatentDynamics(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, hidden: tuple[int, ...]):
        super().__init__()
        self.posterior = mlp([LATENT + 1, *hidden, LATENT])
        self.prior = mlp([LATENT, *hidden, LATENT])
        self.w1 = nn.Parameter(0.1 * torch.randn(LATENT, 16))
        self.b1 = nn.Parameter(torch.zeros(LATENT, 16))
        self.w2 = nn.Parameter(0.1 * torch.randn(LATENT, 16))
        self.z0_mean = nn.Parameter(torch.zeros(SERIES, LATENT))
        self.decoder = nn.Linear(LATENT, 2)
        self.calls = 0

    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.posterior(torch.cat([z, t.expand(len(z), 1)], dim=-1))

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.prior(z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((torch.tanh(z.unsqueeze(-1) * self.w1 + self.b1) * self.w2).sum(-1)) + 1e-3


def _solve(way: str, model: LatentDynamics, z0: torch.Tensor, ts: torch.Tensor, seed: int):
    if way == "sdeint":
        return torchsde.sdeint(model, z0, ts, method="euler", dt=DT, logqp=True)
    options = THROUGH_TORCHSDE if way == "torchsde stepping" else None
    return solve_sde(model, z0, ts, method="euler", dt=DT, logqp=True, seed=seed, options=options)


def _targets(ts: torch.Tensor) -> torch.Tensor:
    """(n_times, series, 2): slowly decaying rotations of random starts."""
    start = torch.randn(SERIES, 2, generator=torch.Generator().manual_seed(0))
    angle = 0.3 * ts[:, None]
    rotated = torch.stack([start[:, 0] * angle.cos() - start[:, 1] * angle.sin(),
                           start[:, 0] * angle.sin() + start[:, 1] * angle.cos()], -1)  # fmt: skip
    return torch.exp(-0.02 * ts)[:, None, None] * rotated


def _iteration(way: str, start: dict, hidden: tuple[int, ...], ts: torch.Tensor, target: torch.Tensor):
    """One training iteration of a fresh copy of the model (weights ``start``) solved ``way``: (loss, evaluations).

    Each way draws its start states from its own generator of the same seed,
    and its Brownian paths from the iteration's number.
    """
    model = LatentDynamics(hidden)
    model.load_state_dict(start)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    noise = torch.Generator().manual_seed(1)
    done = [0]

    def step() -> tuple[float, int]:
        optimiser.zero_grad()
        model.calls = 0
        z0 = model.z0_mean + 0.1 * torch.randn(SERIES, LATENT, generator=noise)
        paths, log_ratio = _solve(way, model, z0, ts, seed=done[0])
        done[0] += 1
        loss = (model.decoder(paths) - target).pow(2).mean() + log_ratio.sum() / target[..., 0].numel()
        loss.backward()
        optimiser.step()
        return float(loss.detach()), model.calls

    return step


def iterations(rounds: int) -> list[dict]:
    ts = torch.arange(50.0)
    target = _targets(ts)
    rows = []
    for size, hidden in SIZES.items():
        torch.manual_seed(0)
        start = LatentDynamics(hidden).state_dict()
        steps = {way: _iteration(way, start, hidden, ts, target) for way in WAYS}
        for row in compare_iterations(steps, rounds if size == "small" else max(5, rounds // 4), "sdeint"):
            rows.append({"size": size, **row})
            print(rows[-1], flush=True)
    return rows


def fused_steps(hidden: tuple[int, ...], driven: bool = False) -> dict:
    """One ``LatentSDE`` training iteration per way, from the same captured weights and minibatch: (loss, steps).

    The steps are the drift evaluations of the iteration's solve: forward calls of the correction network step
    by step; the step starts the fused solve looks its context rows up for, fused.
    """
    frame = (make_forced_oscillator(n_series=SERIES, n_times=50, random_state=0) if driven
             else make_damped_oscillator(n_series=SERIES, n_times=50, random_state=0))  # fmt: skip
    seen = TrainingCapture()
    inputs = {"covariates": ["u"], "covariate_interpolation": "linear"} if driven else {}
    LatentSDE(hidden_layer_sizes=hidden, kl_anneal_epochs=0, batch_size=SERIES, dt=DT, callbacks=[seen], max_epochs=1,
              patience=None, validation_fraction=0.0, random_state=0, n_threads=1, device="cpu", **inputs).fit(frame)
    batch = {k: v[:SERIES] for k, v in seen.train_data.items()}
    steps = {}
    for way in ("fused", "step by step"):
        module = copy.deepcopy(seen.module)
        module.load_state_dict(seen.initial)
        module.train()
        dynamics, count = module.dynamics, [0]
        declared = type(dynamics).posterior_layers
        module.dynamics.correction.register_forward_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))

        def counting(dynamics=dynamics, declared=declared, count=count, way=way):
            layers = declared(dynamics) if way == "fused" else None
            if layers is None:
                return None

            def rows(starts, rows=layers.rows):
                count[0] += len(starts)
                return rows(starts)

            return dataclasses.replace(layers, rows=rows)

        dynamics.posterior_layers = counting
        optimiser = adamw(module.parameters(), lr=seen.learning_rate)

        def step(module=module, optimiser=optimiser, count=count) -> tuple[float, int]:
            count[0] = 0
            loss = train_step(module, seen.loss_fn, batch, optimiser, clip_grad_norm=1.0)
            return loss, count[0]

        steps[way] = step
    return steps


def fused(rounds: int, driven: bool = False) -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    for size, hidden in SIZES.items():
        torch.manual_seed(0)
        for row in compare_iterations(fused_steps(hidden, driven), rounds if size == "small" else max(5, rounds // 2),
                                      "step by step"):
            rows.append({"size": size, **row})
            print(rows[-1], flush=True)
    name = "fused_driven" if driven else "fused"
    write_rows(RESULTS, rows, f"{name}.csv")
    model = (f"LatentSDE(hidden_layer_sizes=..., kl_anneal_epochs=0, batch_size={SERIES}, dt={DT}"
             + (', covariates=["u"], covariate_interpolation="linear") on make_forced_oscillator' if driven
                else ") on make_damped_oscillator"))  # fmt: skip
    report = [
        "# LatentSDE iterations with the Euler–Maruyama solve fused into one autograd node"
        + (", driven by a known input" if driven else ""),
        "",
        (f"{model}({SERIES}, 50): one training iteration as fit takes it (train_step, AdamW, gradient "
         f"norm clipped at 1) on the same minibatch from the same weights, float32, one torch thread, rounds "
         f"interleaved; 1-minute load average {load:.2f} at the start. ratio: seconds ÷ the step-by-step solve's, "
         "median of per-round ratios (< 1: faster). Each way draws its own noise, so losses differ by noise (given the "
         "same noise they agree to rounding: tests/solvers/test_sde_fused_step.py)."),
        "",
        "| size | way | s per iteration | ratio to step by step | drift evaluations per iteration | loss after the last |",
        "|---|---|---:|---:|---:|---:|",
        *[(f"| {r['size']} | {r['way']} | {r['seconds_per_iteration']:.5f} | {r['ratio_to_step_by_step']:.3f} | "
           f"{r['evaluations_per_iteration']:.0f} | {r['final_loss']:.4g} |") for r in rows],
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_sde.py --fused {rounds}"
        + (" --driven`" if driven else "`"),
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


def epochs(baseline: Path, rounds: int, n_epochs: int) -> list[dict]:
    """LatentSDE fits of this checkout and of ``baseline`` in subprocesses, interleaved round by round."""
    here = Path(__file__).resolve().parent.parent
    checkouts = {"this checkout": here, "baseline": baseline.resolve()}
    found: dict[str, list[list[float]]] = {name: [] for name in checkouts}
    for _ in range(rounds):
        for name, root in checkouts.items():
            env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
            out = subprocess.run([sys.executable, "-c", EPOCH_SCRIPT.format(epochs=n_epochs)], env=env, cwd=root,
                                 capture_output=True, text=True, check=True)  # fmt: skip
            found[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(name, found[name][-1], flush=True)
    return [{"checkout": name, "rounds": rounds, "epochs": n_epochs,
             "median_epoch_seconds": statistics.median(r[0] for r in runs), "valid_loss": runs[-1][1]}
            for name, runs in found.items()]  # fmt: skip


def main(rounds: int, baseline: Path | None, fit_rounds: int, n_epochs: int) -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = iterations(rounds)
    fits = epochs(baseline, fit_rounds, n_epochs) if baseline is not None else []
    command = f"OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_sde.py --rounds {rounds}"
    report = [
        "# Written-out Euler–Maruyama against torchsde's stepping",
        "",
        (f"One training iteration (logqp solve, backward, AdamW) of a latent SDE on {SERIES} series, 50 output times, "
         f"Euler steps of {DT} (196 per solve), float32, one torch thread, rounds interleaved; 1-minute load average "
         f"{load:.2f} at the start. small: hidden (32, 32); large: (256, 256). ratio: seconds ÷ the sdeint loop's, "
         "median of per-round ratios (< 1: faster). Each way draws its own Brownian paths, so losses differ by noise."),
        "",
        "| size | way | s per iteration | ratio to sdeint | evaluations per iteration | loss after the last |",
        "|---|---|---:|---:|---:|---:|",
        *[(f"| {r['size']} | {r['way']} | {r['seconds_per_iteration']:.5f} | {r['ratio_to_sdeint']:.3f} | "
           f"{r['evaluations_per_iteration']:.0f} | {r['final_loss']:.4g} |") for r in rows],
    ]
    if fits:
        command += f" --baseline {baseline} --fit-rounds {fit_rounds} --epochs {n_epochs}"
        write_rows(RESULTS, fits, "fits.csv")
        report += [
            "",
            (f"LatentSDE(kl_anneal_epochs=0, batch_size=32, dt=0.25, random_state=0) on make_damped_oscillator(128, 50), "
             f"{n_epochs} epochs, {fit_rounds} interleaved rounds of subprocess fits, one torch thread; baseline: "
             f"`{baseline}`."),
            "",
            "| checkout | median epoch (s) | validation loss after the last epoch |",
            "|---|---:|---:|",
            *[f"| {f['checkout']} | {f['median_epoch_seconds']:.4f} | {f['valid_loss']:.5g} |" for f in fits],
            "",
            (f"This checkout ÷ baseline: {fits[0]['median_epoch_seconds'] / fits[1]['median_epoch_seconds']:.2f}x "
             "the epoch time (different Brownian draws for the same seed, so the losses differ by noise)."),
        ]
    report += ["", f"Command: `{command}`"]
    write_rows(RESULTS, rows, report=report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--baseline", type=Path, default=None, help="a dynlearn checkout to time LatentSDE fits against")
    parser.add_argument("--fit-rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fused", type=int, default=None, metavar="ROUNDS",
                        help="time LatentSDE iterations fused and step by step instead")
    parser.add_argument("--driven", action="store_true", help="with --fused: a LatentSDE driven by a known input")
    arguments = parser.parse_args()
    if arguments.fused is not None:
        fused(arguments.fused, arguments.driven)
    else:
        main(arguments.rounds, arguments.baseline, arguments.fit_rounds, arguments.epochs)
