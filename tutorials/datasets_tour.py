"""
A tour of dynlearn's datasets
=============================

dynlearn ships three kinds of data, all returned as the long table
estimators take (``series_id``, ``time``, one column per variable):

- **simulated** (``make_*``): physical, biological, chaotic and stochastic
  systems, accurate and seeded, with optional noise, irregular sampling and
  missing values, and the ground truth on request;
- **bundled** (``load_*``): small real data inside the package;
- **downloaded** (``fetch_*``): real datasets fetched once into a cache and
  verified by checksum.

Run it with ``python tutorials/datasets_tour.py``; it writes PNG figures to the
current folder. ``DYNLEARN_TUTORIAL_FAST=1`` makes every dataset small.
PhysioNet 2012 set A (4000 ICU stays) is downloaded on first use; set
``DYNLEARN_PHYSIONET_PATH`` to a local folder in the original layout (``set-a/``
with ``Outcomes-a.txt`` beside it) to read that instead; likewise the CMU
motion capture file ``mocap6.mat`` (383 KB) and ``DYNLEARN_MOCAP6_PATH``.
"""

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dynlearn.datasets import (
    catalogue,
    fetch_mocap6,
    fetch_physionet2012,
    load_lynx_hare,
    make_double_pendulum,
    make_lorenz,
    make_lotka_volterra,
    make_ou_process,
    make_pendulum,
    make_periodic,
)

FAST = os.environ.get("DYNLEARN_TUTORIAL_FAST") == "1"
N_SERIES = 3 if FAST else 8

# %% [markdown]
# The catalogue
# -------------
#
# Every dataset has a name, a kind and a one-line summary; ``dynlearn datasets
# list`` prints the same table and ``dynlearn datasets info NAME`` the full card.

# %%
for entry in catalogue().values():
    print(f"{entry.name:26s} {entry.kind:10s} {entry.summary}")

# %% [markdown]
# Conservative systems: phase portraits
# -------------------------------------
#
# A pendulum's trajectories are level sets of its energy
# ``H = p²/(2 m l²) + m g l (1 − cos q)``. With ``return_truth=True`` the
# simulator also returns the noise-free states, the derivatives and the
# energy, which stays constant along each series.

# %%
pendulum, truth = make_pendulum(n_series=N_SERIES, n_times=200, t_span=(0, 10), return_truth=True, random_state=0)
drift = np.abs(truth.energy - truth.energy[:, :1]).max() / np.abs(truth.energy).max()
print(f"pendulum: {pendulum['series_id'].nunique()} series; largest relative energy drift {drift:.1e}")

double, _ = make_double_pendulum(n_series=2, n_times=400, t_span=(0, 10), return_truth=True, random_state=1)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for _, series in pendulum.groupby("series_id"):
    axes[0].plot(series["q"], series["p"], lw=1)
axes[0].set(title="pendulum: phase portrait", xlabel="angle q (rad)", ylabel="momentum p")
for _, series in double.groupby("series_id"):
    axes[1].plot(series["q1"], series["q2"], lw=0.8)
axes[1].set(title="double pendulum: the two angles", xlabel="q1 (rad)", ylabel="q2 (rad)")
fig.tight_layout()
fig.savefig("tour_conservative.png", dpi=100)

# %% [markdown]
# Predator and prey, simulated and real
# -------------------------------------
#
# Lotka–Volterra cycles beside the Hudson's Bay Company pelt records
# (1900–1920) that made them famous — the real series ships with dynlearn.

# %%
lotka = make_lotka_volterra(n_series=N_SERIES, n_times=200, t_span=(0, 15), random_state=0)
lynx_hare = load_lynx_hare().frame
print(lynx_hare.head())

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for _, series in lotka.groupby("series_id"):
    axes[0].plot(series["prey"], series["predator"], lw=1)
axes[0].set(title="Lotka–Volterra (simulated)", xlabel="prey", ylabel="predator")
axes[1].plot(lynx_hare["hare"], lynx_hare["lynx"], "o-")
for year, hare, lynx in lynx_hare[["time", "hare", "lynx"]].to_numpy()[::5]:
    axes[1].annotate(str(int(year)), (hare, lynx), fontsize=8)
axes[1].set(title="Hudson's Bay pelts (real)", xlabel="hare (thousands)", ylabel="lynx (thousands)")
fig.tight_layout()
fig.savefig("tour_predator_prey.png", dpi=100)

# %% [markdown]
# Chaos, noise and irregular sampling
# -----------------------------------
#
# The Lorenz attractor; an Ornstein–Uhlenbeck process sampled exactly at
# irregular times; and the irregular sinusoids of the Latent ODE paper with
# half of the observations missing.

# %%
lorenz = make_lorenz(n_series=1, n_times=400 if FAST else 2000, t_span=(0, 20), random_state=0)
ou = make_ou_process(n_series=N_SERIES, n_times=60, irregular=True, random_state=0)
periodic = make_periodic(n_series=N_SERIES, missing_fraction=0.5, random_state=0)
print(f"periodic: {periodic['y'].isna().mean():.0%} of values missing")

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
axes[0].plot(lorenz["x"], lorenz["z"], lw=0.5)
axes[0].set(title="Lorenz attractor (x, z)", xlabel="x", ylabel="z")
for _, series in ou.groupby("series_id"):
    axes[1].plot(series["time"], series["x"], ".-", lw=0.8, ms=3)
axes[1].set(title="Ornstein–Uhlenbeck, irregular times", xlabel="time")
for _, series in periodic.groupby("series_id"):
    axes[2].plot(series["time"], series["y"], "o", ms=2)
axes[2].set(title="periodic toy (50% missing)", xlabel="time")
fig.tight_layout()
fig.savefig("tour_stochastic_chaotic.png", dpi=100)

# %% [markdown]
# Real irregular data: PhysioNet 2012
# -----------------------------------
#
# 48 hours of ICU measurements per patient: 37 variables, each measured at
# its own times. In the long table every row is a time at which something was
# measured, and most entries are missing — which is exactly what the data
# layer's mask is for.

# %%
physionet = fetch_physionet2012(path=os.environ.get("DYNLEARN_PHYSIONET_PATH"))
icu = physionet.frame
print(f"PhysioNet: {icu['series_id'].nunique()} stays, {len(icu)} time rows, "
      f"{icu.drop(columns=['series_id', 'time']).notna().mean().mean():.1%} of entries observed")
print(physionet.outcomes.head())

# the stay with the most blood-pressure readings (many stays have none)
busiest = icu.groupby("series_id")["MAP"].count().idxmax()
stay = icu[icu["series_id"] == busiest]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
for ax, variable in zip(axes, ["HR", "MAP", "Temp"]):
    seen = stay[variable].notna()
    ax.plot(stay["time"][seen], stay[variable][seen], "o-", ms=3)
    ax.set(title=f"stay {stay['series_id'].iloc[0]}: {variable}", xlabel="hours since admission")
fig.tight_layout()
fig.savefig("tour_physionet.png", dpi=100)

# %% [markdown]
# Real motion: CMU motion capture
# -------------------------------
#
# Two people doing exercises, 12 joint channels at 10 frames per second, each
# frame labelled with the exercise. One long frame again, with the labels in
# ``target``, row for row.

# %%
mocap = fetch_mocap6(path=os.environ.get("DYNLEARN_MOCAP6_PATH"))
motion = mocap.frame
print(f"mocap6: {motion['series_id'].nunique()} sequences, {len(motion)} frames, "
      f"{len(mocap.feature_names)} channels, actions: {', '.join(mocap.action_names[:4])}, ...")
first = motion["series_id"] == motion["series_id"].iloc[0]
fig, ax = plt.subplots(figsize=(12, 3.5))
for channel in ["rhumerus.rz", "lhumerus.rz", "rtibia.rx"]:
    ax.plot(motion.loc[first, "time"], motion.loc[first, channel], lw=1, label=channel)
actions = mocap.target[first]
changes = actions.ne(actions.shift())  # the first frame of each exercise
for start, action in zip(motion.loc[first, "time"][changes], actions[changes]):
    ax.axvline(start, color="grey", lw=0.5)
    ax.text(start, ax.get_ylim()[1], action, fontsize=7, va="top")
ax.set(title=f"sequence {motion['series_id'].iloc[0]}", xlabel="seconds", ylabel="degrees")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig("tour_mocap.png", dpi=100)
