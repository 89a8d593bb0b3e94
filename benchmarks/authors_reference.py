"""dynlearn's ODE-RNN and Latent ODE against the authors' own implementation, timed in the same run.

``irregular_speed_authors`` times one training iteration of the public code of
Rubanova, Chen & Duvenaud (NeurIPS 2019), github.com/YuliaRubanova/latent_ode,
on its toy periodic data, round by round with dynlearn's iteration at the same
sizes on the same toy data, each stepping through its training minibatches in
turn. That code is not part of
dynlearn and is not shipped with it: the benchmark reads it from a checkout
named by ``$DYNLEARN_AUTHORS_LATENT_ODE`` and is skipped without one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness import Context, Record, matrix_product_profile, median, register, time_interleaved
from irregular import (
    LATENT_SPEED, ODERNN_SPEED, ONE_EPOCH, SHARED_TRAIN_SERIES, SPEED_BATCH, EvaluationCounter, TrainingCapture,
    dynlearn_iteration, speed_minibatch,
)
from physics import torch_threads

AUTHORS_PATH_VARIABLE = "DYNLEARN_AUTHORS_LATENT_ODE"
# Torch intra-op threads for both implementations: 1 by default (see physics.single_thread); torch's own
# default is one per core, which is how a script that never sets it runs.
THREADS_VARIABLE = "DYNLEARN_AUTHORS_THREADS"
# The authors' toy runs train on 80% of 1,000 series (SHARED_TRAIN_SERIES): 16 minibatches of 50, stepped through
# in turn. dynlearn's iterations do the same: repeating one minibatch instead lets its latent ODE fit it until its
# dynamics stiffen (from 20 to about 220 latent evaluations per iteration in 20 rounds), which a real fit does not do.
# Iterations of the Latent ODE training curve after the timed rounds (five checkpoints).
CURVE_QUICK, CURVE_FULL = 160, 320
BENCHMARK = "irregular_speed_authors"

# run_models.py's argparse defaults, with the options of the toy periodic runs
# (`--niters 500 -n 1000 -s 50 -l 10 --dataset periodic --noise-weight 0.01`);
# `--latent-ode` or `--ode-rnn` picks the model.
AUTHORS_ARGS = dict(
    n=1000, niters=500, lr=1e-2, batch_size=50, viz=False, save="experiments/", load=None, random_seed=1991,
    dataset="periodic", sample_tp=50.0, cut_tp=None, quantization=0.1, latent_ode=False, z0_encoder="odernn",
    classic_rnn=False, rnn_cell="gru", input_decay=False, ode_rnn=False, rnn_vae=False, latents=10, rec_dims=20,
    rec_layers=1, gen_layers=1, units=100, gru_units=100, poisson=False, classif=False, linear_classif=False,
    extrap=False, timepoints=100, max_t=5.0, noise_weight=0.01,
)  # fmt: skip


def authors_modules(checkout: Path) -> types.SimpleNamespace:
    """The authors' modules, imported from ``checkout`` (the folder holding ``run_models.py`` and ``lib/``).

    Their dataset module imports the PhysioNet, activity and MuJoCo loaders,
    which import torchvision's ``download_url``; the periodic data download
    nothing, so where torchvision is not installed a stand-in that refuses to
    download takes its place.
    """
    if not (checkout / "run_models.py").is_file() or not (checkout / "lib").is_dir():
        raise FileNotFoundError(
            f"${AUTHORS_PATH_VARIABLE} is {str(checkout)!r}, which holds no run_models.py and lib/: point it at a "
            "checkout of github.com/YuliaRubanova/latent_ode."
        )
    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:
        def download_url(url, *args, **kwargs):
            raise RuntimeError(f"torchvision is not installed; cannot download {url}.")

        packages = ("torchvision", "torchvision.datasets", "torchvision.datasets.utils")
        stand_in = {name: types.ModuleType(name) for name in packages}
        stand_in["torchvision.datasets.utils"].download_url = download_url
        stand_in["torchvision"].datasets = stand_in["torchvision.datasets"]
        stand_in["torchvision.datasets"].utils = stand_in["torchvision.datasets.utils"]
        sys.modules.update(stand_in)
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    names = ("utils", "parse_datasets", "create_latent_ode_model", "ode_rnn", "ode_func", "diffeq_solver")
    modules = {name: importlib.import_module(f"lib.{name}") for name in names}
    return types.SimpleNamespace(**modules)


def authors_training(
    lib: types.SimpleNamespace, model: str, device: torch.device, frozen: bool = False
) -> tuple[Callable[[], float], list[float], dict[str, torch.nn.Module]]:
    """One iteration of run_models.py's training loop for ``model`` ("latent_ode" or "ode_rnn"), its fetch times
    and its ODE networks.

    Built as run_models.py builds it: seeds, ``parse_datasets``, the model
    (``create_LatentODE_model``, or the ODE-RNN wiring of the script), Adamax.
    Each call runs the loop body: learning-rate decay, KL coefficient, next
    batch from the training dataloader (their collate: 50 of each series'
    100 points kept for the encoder), ``compute_all_losses`` with 3 draws,
    backward, optimiser step. The second value collects each call's batch
    fetch time in seconds; the third names the networks of the recognition
    ODE (``encoder``) and of the latent ODE (``latent``). ``frozen`` steps
    at a learning rate of 0: the same work per iteration, the initial weights
    kept, so the solver work stays that of iteration 1.
    """
    from torch.distributions.normal import Normal

    args = argparse.Namespace(**{**AUTHORS_ARGS, model: True})
    torch.manual_seed(args.random_seed)
    np.random.seed(args.random_seed)
    data = lib.parse_datasets.parse_datasets(args, device)
    input_dim = data["input_dim"]
    obsrv_std = torch.Tensor([0.01]).to(device)
    z0_prior = Normal(torch.Tensor([0.0]).to(device), torch.Tensor([1.0]).to(device))
    if args.latent_ode:
        network = lib.create_latent_ode_model.create_LatentODE_model(
            args, input_dim, z0_prior, obsrv_std, device, classif_per_tp=False, n_labels=1
        )
    else:
        ode_func_net = lib.utils.create_net(
            args.latents, args.latents, n_layers=args.rec_layers, n_units=args.units, nonlinear=torch.nn.Tanh
        )
        rec_ode_func = lib.ode_func.ODEFunc(
            input_dim=input_dim, latent_dim=args.latents, ode_func_net=ode_func_net, device=device
        ).to(device)
        z0_diffeq_solver = lib.diffeq_solver.DiffeqSolver(
            input_dim, rec_ode_func, "euler", args.latents, odeint_rtol=1e-3, odeint_atol=1e-4, device=device
        )
        network = lib.ode_rnn.ODE_RNN(
            input_dim, args.latents, device=device, z0_diffeq_solver=z0_diffeq_solver, n_gru_units=args.gru_units,
            concat_mask=True, obsrv_std=obsrv_std, use_binary_classif=args.classif, classif_per_tp=False,
            n_labels=1, train_classif_w_reconstr=args.dataset == "physionet",
        ).to(device)  # fmt: skip
    if args.latent_ode:
        networks = {
            "encoder": network.encoder_z0.z0_diffeq_solver.ode_func.gradient_net,
            "latent": network.diffeq_solver.ode_func.gradient_net,
        }
    else:
        networks = {"encoder": network.ode_gru.z0_diffeq_solver.ode_func.gradient_net}
    optimizer = torch.optim.Adamax(network.parameters(), lr=args.lr)
    num_batches = data["n_train_batches"]
    fetch_seconds: list[float] = []
    itr = 0

    def iteration() -> float:
        nonlocal itr
        itr += 1
        optimizer.zero_grad()
        lib.utils.update_learning_rate(optimizer, decay_rate=0.999, lowest=args.lr / 10)
        if frozen:
            for group in optimizer.param_groups:
                group["lr"] = 0.0
        kl_coef = 0.0 if itr // num_batches < 10 else 1 - 0.99 ** (itr // num_batches - 10)
        begun = time.perf_counter()
        batch = lib.utils.get_next_batch(data["train_dataloader"])
        fetch_seconds.append(time.perf_counter() - begun)
        result = network.compute_all_losses(batch, n_traj_samples=3, kl_coef=kl_coef)
        result["loss"].backward()
        optimizer.step()
        return float(result["loss"].detach())

    return iteration, fetch_seconds, networks


def evaluations(name: str, when: str, candidates: dict, networks: dict) -> list[Record]:
    """Evaluations of each ODE network in one iteration of each candidate (an iteration run for the count)."""
    records = []
    for candidate, iteration in candidates.items():
        with EvaluationCounter(**networks[candidate]) as counter:
            iteration()
        records += [
            Record(BENCHMARK, f"{name}.nfe_{network}_{when}.{candidate}", count, "evaluations")
            for network, count in counter.counts.items()
        ]
    return records


def compare_with_authors(
    name: str, candidates: dict[str, Callable[[], Any]], networks: dict, fetch_seconds: list, context: Context
) -> list[Record]:
    """Seconds per iteration of ``authors`` and ``dynlearn`` (interleaved), the authors' also without the batch
    fetch, and their ratios.

    Both train as they are timed, and the work of an iteration changes as the
    weights do (the latent ODE's adaptive solver takes more or fewer steps):
    the ODE networks' evaluations are counted in one iteration before the
    timed rounds (``first``) and one after them (``last``). dynlearn's side
    has by then trained the epoch of the fit that captured its training
    state, the authors' side nothing, so ``first`` is not at equal training
    (``benchmarks/latent_evaluations.py`` traces both from iteration 1).
    """
    records = evaluations(name, "first", candidates, networks)
    seconds = time_interleaved(candidates, context)
    records += evaluations(name, "last", candidates, networks)
    rounds = len(seconds["dynlearn"])
    fetched = fetch_seconds[-rounds - 1 : -1]  # the timed rounds' fetches, before the last count's
    computed = [total - fetch for total, fetch in zip(seconds["authors"], fetched)]
    records += [
        Record(BENCHMARK, f"{name}.seconds_per_iteration.authors", median(seconds["authors"]), "s"),
        Record(BENCHMARK, f"{name}.seconds_per_iteration.authors_without_fetch", median(computed), "s"),
        Record(BENCHMARK, f"{name}.seconds_per_fetch.authors", median(fetched), "s"),
        Record(BENCHMARK, f"{name}.seconds_per_iteration.dynlearn", median(seconds["dynlearn"]), "s"),
    ]
    for label, theirs in (("authors", seconds["authors"]), ("authors_without_fetch", computed)):
        ratios = [their / our for their, our in zip(theirs, seconds["dynlearn"])]
        records.append(Record(BENCHMARK, f"{name}.speedup_dynlearn_over_{label}", median(ratios), "x"))
    records += matrix_product_seconds(name, candidates, median(seconds["authors"]))
    return records + [Record(BENCHMARK, f"{name}.rounds", rounds, "rounds")]


def matrix_product_seconds(
    name: str, candidates: dict[str, Callable[[], Any]], authors_seconds: float, iterations: int = 4
) -> list[Record]:
    """Seconds per iteration each candidate spends inside matrix products, and what that bounds.

    :func:`harness.matrix_product_profile` of each candidate.
    ``speedup_bound`` is ``authors_seconds`` over dynlearn's matrix-product
    seconds: the speedup dynlearn's iteration would reach if it did nothing
    but its matrix products, no elementwise work and no Python between them.
    """
    records, products = [], {}
    for candidate, figures in matrix_product_profile(candidates, iterations).items():
        products[candidate] = figures.product_seconds
        records += [
            Record(BENCHMARK, f"{name}.matrix_product_seconds_per_iteration.{candidate}", figures.product_seconds, "s"),
            Record(BENCHMARK, f"{name}.matrix_products_per_iteration.{candidate}", figures.products, "calls"),
            Record(BENCHMARK, f"{name}.torch_operators_per_iteration.{candidate}", figures.operators, "calls"),
        ]
    bound = authors_seconds / products["dynlearn"]
    return records + [Record(BENCHMARK, f"{name}.speedup_bound_matrix_products_only", bound, "x")]


def compare_at_initial_weights(
    name: str, candidates: dict[str, Callable[[], Any]], networks: dict, context: Context
) -> list[Record]:
    """Both candidates at their initial weights, stepped at a learning rate of 0, timed interleaved.

    An iteration's work then stays that of the first one: both codes' latent
    ODEs take 20 evaluations there, so this is the comparison at equal latent
    solver work that training drift blurs in :func:`compare_with_authors`
    (the recognition ODEs' counts are recorded beside it: 100 for the
    authors', fewer for dynlearn's, which steps once per observation gap).
    """
    records = evaluations(name, "initial", candidates, networks)
    seconds = time_interleaved(candidates, context)
    ratios = [their / our for their, our in zip(seconds["authors"], seconds["dynlearn"])]
    return records + [
        Record(BENCHMARK, f"{name}.initial.seconds_per_iteration.authors", median(seconds["authors"]), "s"),
        Record(BENCHMARK, f"{name}.initial.seconds_per_iteration.dynlearn", median(seconds["dynlearn"]), "s"),
        Record(BENCHMARK, f"{name}.initial.speedup_dynlearn_over_authors", median(ratios), "x"),
    ]


def latent_training_curve(
    name: str, candidates: dict[str, Callable[[], Any]], networks: dict, iterations: int, every: int
) -> list[Record]:
    """Both candidates trained on, round by round, for ``iterations`` more iterations; every ``every`` of them,
    each one's latent ODE evaluations in one iteration and the seconds of the next.

    A latent ODE's solver work grows as it learns the sinusoids (a dopri5
    solve of a few oscillations at rtol 1e-3 takes about a hundred
    evaluations), and the two codes learn at different rates: comparing
    their iterations at equal evaluation counts separates the cost per
    evaluation from the progress of training.
    """
    records = []
    for done in range(1, iterations + 1):
        for iteration in candidates.values():
            iteration()
        if done % every:
            continue
        for candidate, iteration in candidates.items():
            with EvaluationCounter(**networks[candidate]) as counter:
                iteration()
            begun = time.perf_counter()
            iteration()
            seconds = time.perf_counter() - begun
            prefix = f"{name}.curve.it{done:04d}"
            records += [
                Record(BENCHMARK, f"{prefix}.nfe_latent.{candidate}", counter.counts["latent"], "evaluations"),
                Record(BENCHMARK, f"{prefix}.seconds_per_iteration.{candidate}", seconds, "s"),
            ]
    return records


@register(
    BENCHMARK,
    "One training iteration of the authors' Latent ODE code (github.com/YuliaRubanova/latent_ode; not part of "
    "dynlearn and not shipped: read from the checkout named by $DYNLEARN_AUTHORS_LATENT_ODE, skipped without one) "
    "as its run_models.py loop runs it for `--niters 500 -n 1000 -s 50 -l 10 --dataset periodic --noise-weight "
    "0.01` with --ode-rnn or --latent-ode (batch 50, Adamax at 1e-2, 3 draws of z0): next batch from its "
    "dataloader (collate, 50 of each series' 100 points shown), compute_all_losses, backward, optimiser step; "
    "authors_without_fetch leaves out the batch fetch (seconds_per_fetch). Interleaved round by round with "
    "dynlearn's ODERNN / LatentODE iteration at the same sizes on the same toy data (800 training series with the "
    "paper's shared times, stepped through 50 at a time as both training loops do); one torch thread for both ($DYNLEARN_AUTHORS_THREADS sets another count). speedup = authors seconds / dynlearn seconds, median of per-round ratios. Both "
    "train while timed: nfe_*_first / nfe_*_last count each ODE network's evaluations in one iteration before and "
    "after the timed rounds. matrix_product_seconds: self time of the matrix-product operators per iteration (torch "
    "profiler, 4 iterations after the timed rounds); speedup_bound_matrix_products_only = authors seconds / dynlearn's "
    "matrix-product seconds, the speedup of an iteration that did nothing else. latent_ode.curve.itK: both Latent ODEs trained on, round by round, K iterations past "
    "the timed rounds (160 quick, 320 full, five checkpoints): latent evaluations in one iteration and the seconds of "
    "the next, to compare the two at equal solver work. *.initial.*: both at their initial weights, stepped at a "
    "learning rate of 0 (the work of iteration 1 every round: 20 latent evaluations each), timed interleaved.",
)
def irregular_speed_authors(context: Context) -> list[Record]:
    lib = authors_library()
    if lib is None:
        reason = SKIPPED
        print(f"  {reason}", flush=True)
        return [Record(BENCHMARK, "skipped", 1, reason)]
    threads = int(os.environ.get(THREADS_VARIABLE, "1"))
    return [Record(BENCHMARK, "torch_threads", threads, "threads"),
            *authors_comparisons(lib, context, threads, curve=True)]  # fmt: skip


SKIPPED = f"skipped: set {AUTHORS_PATH_VARIABLE} to a checkout of github.com/YuliaRubanova/latent_ode"


def authors_library() -> types.SimpleNamespace | None:
    """The authors' modules from the checkout ``$DYNLEARN_AUTHORS_LATENT_ODE`` names; None without one."""
    checkout = os.environ.get(AUTHORS_PATH_VARIABLE)
    return authors_modules(Path(checkout).expanduser().resolve()) if checkout else None


def authors_comparisons(lib: types.SimpleNamespace, context: Context, threads: int, curve: bool) -> list[Record]:
    """dynlearn's ODE-RNN and Latent ODE iterations timed round by round with the authors' (records of BENCHMARK).

    ``curve`` adds the Latent ODE training curve after the timed rounds.
    """
    from dynlearn import ODERNN, LatentODE

    frame = speed_minibatch("shared_times", SHARED_TRAIN_SERIES)
    records = []
    numpy_state = np.random.get_state()  # the authors' code seeds and draws from the global generators
    try:
        with torch_threads(threads), torch.random.fork_rng(devices=[]):
            for name, model, estimator, sizes in (
                ("odernn", "ode_rnn", ODERNN, ODERNN_SPEED), ("latent_ode", "latent_ode", LatentODE, LATENT_SPEED)
            ):
                authors, fetch_seconds, their_networks = authors_training(lib, model, context.device)
                seen = TrainingCapture()
                estimator(**sizes, **ONE_EPOCH, callbacks=[seen], device=context.device.type).fit(frame)
                our_networks = {"encoder": seen.module.encoder.field.net}
                if name == "latent_ode":
                    our_networks["latent"] = seen.module.field.net
                candidates = {"authors": authors, "dynlearn": dynlearn_iteration(seen, SPEED_BATCH)}
                networks = {"authors": their_networks, "dynlearn": our_networks}
                records += compare_with_authors(name, candidates, networks, fetch_seconds, context)
                still, _, their_still = authors_training(lib, model, context.device, frozen=True)
                ours = dynlearn_iteration(seen, SPEED_BATCH, frozen=True)
                our_still = {"encoder": ours.module.encoder.field.net}
                if name == "latent_ode":
                    our_still["latent"] = ours.module.field.net
                records += compare_at_initial_weights(name, {"authors": still, "dynlearn": ours},
                                                      {"authors": their_still, "dynlearn": our_still}, context)
                if curve and name == "latent_ode":
                    length = CURVE_QUICK if context.quick else CURVE_FULL
                    records += latent_training_curve(name, candidates, networks, length, length // 5)
    finally:
        np.random.set_state(numpy_state)
    return records
