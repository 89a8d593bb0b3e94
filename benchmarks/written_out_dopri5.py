"""Training iterations through dynlearn's written-out dopri5 against torchdiffeq's stepping of the same method.

Three ways to take one training iteration (forward solve, backward pass,
AdamW step) of a tanh MLP field on a batch of 2-d states reported at 16
times, rtol 1e-3, atol 1e-4 (dynlearn's defaults), timed round by round in
one process with one torch thread:

* ``odeint``: a hand-written loop around ``torchdiffeq.odeint``;
* ``written out``: ``dynlearn.solvers.solve_ode`` (the written-out steps);
* ``torchdiffeq stepping``: ``solve_ode`` with an option only torchdiffeq's
  solver object takes (``dtype``), which sends it through that object, as
  every dopri5 solve went before;
* ``fused step``: ``solve_ode`` of the same network as a
  ``dynlearn.nn.MLPVectorField``, whose steps run as one autograd node each
  with the backward pass written out (``dynlearn/solvers/_rk_mlp.py``), as
  the estimators' fields do. The other ways' field is a plain module, which
  ``solve_ode`` steps stage by stage.

All three start from the same weights and take the same iterations; the
evaluations per iteration are reported beside the times (equal unless the
float32 error estimate, which sits near rounding on easy steps, tips a step
one way). ``small``: hidden (32, 32), 16 series, where per-operation costs
dominate; ``large``: (256, 256), 256 series, where matrix products do.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_dopri5.py [--rounds 200]``. Writes
``benchmarks/results/written_out_dopri5/results.csv`` and ``report.md``. ``--fits N`` times whole default
fits instead, fused against stage by stage (``fits.csv``); ``--driven`` times training iterations of
NeuralODE and LatentODE fits driven by a known input, fused against stage by stage
(``driven_iterations.csv``, ``driven_report.md``), ``--second-order`` the same for
``NeuralODE(second_order=True)`` (``second_order_*``), and ``--fits N --driven`` whole driven fits
(``driven_fits.csv``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from harness import compare_iterations, write_rows
from torch import nn
from torchdiffeq import odeint

from dynlearn.nn import MLPVectorField
from dynlearn.solvers import count_evaluations, solve_ode

RESULTS = Path(__file__).resolve().parent / "results" / "written_out_dopri5"
SIZES = {"small": (32, 16), "large": (256, 256)}
WAYS = ("odeint", "written out", "torchdiffeq stepping", "fused step")
SOLVE = dict(rtol=1e-3, atol=1e-4)


class Field(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, 2))  # fmt: skip
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(y)


def _solve(way: str, field: Field, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if way == "odeint":
        return odeint(field, y0, t, method="dopri5", **SOLVE)
    options = {"dtype": torch.float64} if way == "torchdiffeq stepping" else None
    return solve_ode(field, y0, t, method="dopri5", options=options, **SOLVE)


def _iteration(way: str, start: dict, width: int, y0: torch.Tensor, t: torch.Tensor, target: torch.Tensor):
    """One training iteration of a fresh copy of the field (weights ``start``) solved ``way``: (loss, evaluations)."""
    model = MLPVectorField(2, (width, width)) if way == "fused step" else Field(width)
    model.load_state_dict(start)  # the same layers under the same names
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> tuple[float, int]:
        optimiser.zero_grad()
        model.calls = 0
        with count_evaluations() as counted:
            loss = (_solve(way, model, y0, t) - target).pow(2).mean()
        loss.backward()
        optimiser.step()
        return float(loss), model.calls if way == "odeint" else counted.nfe

    return step


def main(rounds: int) -> None:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = []
    for size, (width, batch) in SIZES.items():
        generator = torch.Generator().manual_seed(0)
        t = torch.linspace(0.0, 3.0, 16)
        y0 = torch.randn(batch, 2, generator=generator)
        rotation = torch.stack([torch.cos(t), torch.sin(t)], -1)  # targets: slowly decaying rotations of y0
        target = torch.exp(-0.1 * t)[:, None, None] * torch.stack(
            [y0[:, 0] * rotation[:, None, 0] - y0[:, 1] * rotation[:, None, 1],
             y0[:, 0] * rotation[:, None, 1] + y0[:, 1] * rotation[:, None, 0]], -1)  # fmt: skip
        torch.manual_seed(0)
        start = Field(width).state_dict()
        steps = {way: _iteration(way, start, width, y0, t, target) for way in WAYS}
        for row in compare_iterations(steps, rounds if size == "small" else max(5, rounds // 8), "odeint"):
            rows.append({"size": size, **row})
            print(rows[-1], flush=True)
    report = [
        "# Written-out dopri5 (stage by stage and fused) against torchdiffeq's stepping",
        "",
        f"One training iteration (solve, backward, AdamW) of a tanh MLP field, 16 output times, rtol 1e-3, atol 1e-4, "
        f"float32, one torch thread, rounds interleaved; 1-minute load average {load:.2f} at the start. "
        "small: hidden (32, 32), 16 series; large: (256, 256), 256 series. ratio: seconds ÷ the odeint loop's, "
        "median of per-round ratios (< 1: faster).",
        "",
        "| size | way | s per iteration | ratio to odeint | evaluations per iteration | loss after the last |",
        "|---|---|---:|---:|---:|---:|",
        *[f"| {r['size']} | {r['way']} | {r['seconds_per_iteration']:.5f} | {r['ratio_to_odeint']:.3f} | "
          f"{r['evaluations_per_iteration']:.0f} | {r['final_loss']:.4g} |" for r in rows],  # fmt: skip
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_dopri5.py --rounds {rounds}`",
    ]
    write_rows(RESULTS, rows, report=report)


def default_fits(rounds: int, driven: bool = False) -> None:
    """Default fits stepped fused and stage by stage, alternating, ``rounds`` fits each, one torch thread.

    Without ``driven``: a default ``NeuralODE`` (its field boxed,
    ``stabilize=True``) on damped oscillators, 20 epochs; writes
    ``fits.csv``. With ``driven``: a ``NeuralODE`` and a ``LatentODE`` with
    the known input ``u`` of forced oscillators (linear interpolation, the
    segment clock reading the input at every stage), 20 epochs each; writes
    ``driven_fits.csv``. Stage by stage is the same fit with
    ``MLPVectorField.mlp_layers`` made to return None, so that the solver
    evaluates the field stage by stage.
    """
    import time
    import warnings

    from dynlearn import LatentODE, NeuralODE
    from dynlearn.datasets import make_damped_oscillator, make_forced_oscillator

    torch.set_num_threads(1)
    if driven:
        frame = make_forced_oscillator(n_series=64, n_times=50, t_span=(0.0, 15.0), random_state=0)
        inputs = dict(covariates=["u"], covariate_interpolation="linear")
        models = {"NeuralODE": lambda: NeuralODE(max_epochs=20, random_state=0, n_threads=1, **inputs),
                  "LatentODE": lambda: LatentODE(max_epochs=20, random_state=0, n_threads=1, **inputs)}  # fmt: skip
    else:
        frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
        models = {"NeuralODE": lambda: NeuralODE(max_epochs=20, random_state=0, n_threads=1)}
    fused = MLPVectorField.mlp_layers
    rows = []
    try:
        for round_ in range(rounds):
            for name, build in models.items():
                for way in ("fused step", "stage by stage"):
                    MLPVectorField.mlp_layers = fused if way == "fused step" else (lambda self: None)
                    with warnings.catch_warnings(), count_evaluations() as counted:
                        warnings.simplefilter("ignore")
                        begun = time.perf_counter()
                        model = build().fit(frame)
                        seconds = time.perf_counter() - begun
                    rows.append({"round": round_, "model": name, "way": way, "fit_seconds": seconds,
                                 "epochs": len(model.history_), "evaluations": counted.nfe,
                                 "final_validation_loss": model.history_[-1].get("valid_loss")})  # fmt: skip
                    print(rows[-1], flush=True)
    finally:
        MLPVectorField.mlp_layers = fused
    write_rows(RESULTS, rows, "driven_fits.csv" if driven else "fits.csv")
    for name in models:
        for way in ("fused step", "stage by stage"):
            times = sorted(r["fit_seconds"] for r in rows if r["way"] == way and r["model"] == name)
            print(f"{name}, {way}: median fit {times[len(times) // 2]:.2f} s over {len(times)} fits")


def variant_iterations(rounds: int, second_order: bool = False) -> None:
    """Training iterations of driven (or second-order) fits, fused against stage by stage, interleaved, one
    torch thread.

    Driven: a ``NeuralODE`` (16-row windows) and a ``LatentODE`` with the
    known input ``u`` of forced oscillators (linear interpolation, read on
    the segment clock at every stage); ``second_order``: a
    ``NeuralODE(second_order=True)`` on damped oscillators. Each at the two
    sizes of ``speed_vs_peers`` (hidden (32, 32) on minibatches of 16, (256,
    256) on 256; the LatentODE's latent field at those widths). Both ways
    step the same model in turn; stage by stage is the field's
    ``mlp_layers`` made to return None. Writes ``driven_iterations.csv`` and
    ``driven_report.md`` (``second_order_*`` with ``second_order``).
    """
    import warnings

    from speed_vs_peers import SIZES as PEER_SIZES
    from speed_vs_peers import capture, dynlearn_side, ode_evaluations

    from dynlearn import LatentODE, NeuralODE
    from dynlearn.datasets import make_damped_oscillator, make_forced_oscillator
    from dynlearn.nn import SecondOrderField

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    if second_order:
        frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
        models = {"NeuralODE, second order": lambda hidden: NeuralODE(hidden_layer_sizes=hidden, window_size=16,
                                                                      second_order=True)}  # fmt: skip
        kind, name_of = SecondOrderField, "second_order"
    else:
        frame = make_forced_oscillator(n_series=64, n_times=50, t_span=(0.0, 15.0), random_state=0)
        inputs = dict(covariates=["u"], covariate_interpolation="linear")
        models = {
            "NeuralODE": lambda hidden: NeuralODE(hidden_layer_sizes=hidden, window_size=16, **inputs),
            "LatentODE": lambda hidden: LatentODE(ode_layer_sizes=hidden, **inputs),
        }
        kind, name_of = MLPVectorField, "driven"
    fused = kind.mlp_layers
    rows = []
    try:
        for name, build in models.items():
            for size, (hidden, batch) in PEER_SIZES.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    side = dynlearn_side(capture(build(hidden), frame), batch, ode_evaluations)

                def step(layers=None, side=side):
                    def run() -> tuple[float, int]:
                        kind.mlp_layers = layers or (lambda self: None)
                        with count_evaluations() as counted:
                            loss = side.iteration()
                        return loss, counted.nfe_forward

                    return run

                steps = {"fused step": step(fused), "stage by stage": step()}
                for row in compare_iterations(steps, rounds if size == "small" else max(5, rounds // 8),
                                              "stage by stage"):  # fmt: skip
                    rows.append({"model": name, "size": size, **row})
                    print(rows[-1], flush=True)
    finally:
        kind.mlp_layers = fused
    report = [
        f"# {'Second-order' if second_order else 'Driven'} fits: fused dopri5 steps against stage-by-stage stepping",
        "",
        f"Training iterations (solve, backward, AdamW) of {'second-order fits' if second_order else 'fits driven by a known input'}, float32, one torch thread, "
        f"rounds interleaved; 1-minute load average {load:.2f} at the start. ratio: seconds ÷ stage by stage's, "
        "median of per-round ratios (< 1: faster).",
        "",
        "| model | size | way | s per iteration | ratio | evaluations per iteration |",
        "|---|---|---|---:|---:|---:|",
        *[f"| {r['model']} | {r['size']} | {r['way']} | {r['seconds_per_iteration']:.5f} | "
          f"{r['ratio_to_stage_by_stage']:.3f} | {r['evaluations_per_iteration']:.0f} |" for r in rows],  # fmt: skip
        "",
        f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/written_out_dopri5.py "
        f"--{name_of.replace('_', '-')} --rounds {rounds}`",
    ]
    write_rows(RESULTS, rows, f"{name_of}_iterations.csv", report=report, report_name=f"{name_of}_report.md")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--fits", type=int, default=0, metavar="ROUNDS",
                        help="instead: default NeuralODE fits (20 epochs), fused against stage by stage, "
                        "ROUNDS of each, written to fits.csv")  # fmt: skip
    parser.add_argument("--driven", action="store_true",
                        help="NeuralODE and LatentODE driven by a known input: training iterations (or with --fits, "
                        "whole fits), fused against stage by stage")  # fmt: skip
    parser.add_argument("--second-order", action="store_true",
                        help="NeuralODE(second_order=True) training iterations, fused against stage by stage")
    arguments = parser.parse_args()
    if arguments.fits:
        default_fits(arguments.fits, arguments.driven)
    elif arguments.driven or arguments.second_order:
        variant_iterations(arguments.rounds, arguments.second_order)
    else:
        main(arguments.rounds)
