"""
Irregularly sampled series: ICU vital signs and forecasts with uncertainty
==========================================================================

Data that arrive at irregular times with gaps are where continuous-time
models earn their keep. An ODE-RNN (``ODERNN``) carries a hidden state that
follows a neural ODE between observations and jumps at each one; a latent
ODE (``LatentODE``) encodes a whole series into the initial state of a latent
ODE and decodes trajectories from it, with a posterior to sample from
(Rubanova, Chen & Duvenaud, "Latent ODEs for Irregularly-Sampled Time
Series", NeurIPS 2019). Neither needs a regular grid: each series is read at
its own times, and missing entries are masked, never filled in.

Two uses:

1. **PhysioNet 2012**: interpolate the vital signs of ICU patients from half
   of their measurement times, and predict in-hospital death from the whole
   48 hours.
2. **Periodic toy** of the paper: forecast sinusoids from the first half of
   their window with posterior samples of the latent ODE, drawn as a fan.

Run it with ``python tutorials/irregular_series.py``; it writes PNG figures to
the current folder. ``DYNLEARN_TUTORIAL_FAST=1`` trains briefly on less data.
PhysioNet set A is downloaded on first use; set ``DYNLEARN_PHYSIONET_PATH`` to
a local folder in the original layout (``set-a/`` with ``Outcomes-a.txt`` beside
it) to read that instead.
"""

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dynlearn import LatentODE, ODERNN, ODERNNClassifier
from dynlearn.datasets import fetch_physionet2012, make_periodic

FAST = os.environ.get("DYNLEARN_TUTORIAL_FAST") == "1"
N_RECORDS = 80 if FAST else 400
EPOCHS = 3 if FAST else 40
TOY_SERIES = 160 if FAST else 400
TOY_EPOCHS = 30 if FAST else 80
rng = np.random.default_rng(0)

# %% [markdown]
# Part 1: ICU records
# -------------------
#
# Each record holds up to 37 variables measured at their own times over the
# first 48 hours of an ICU stay. We keep five vital signs; a row exists when
# at least one of them was measured, and most rows have some of them missing.

# %%
VITALS = ["HR", "MAP", "SysABP", "DiasABP", "Temp"]
physionet = fetch_physionet2012(path=os.environ.get("DYNLEARN_PHYSIONET_PATH"))
icu = physionet.frame[["series_id", "time", *VITALS]].dropna(subset=VITALS, how="all")
records = icu["series_id"].unique()[:N_RECORDS]
icu = icu[icu["series_id"].isin(records)].reset_index(drop=True)
died = physionet.outcomes.loc[records, "In-hospital_death"].astype(int)
print(f"{len(records)} stays, {len(icu)} rows, {icu.groupby('series_id').size().median():.0f} rows per stay; "
      f"{died.sum()} died in hospital")
print("share of rows where each vital sign was measured:")
print(icu[VITALS].notna().mean().round(2).to_string())

# %% [markdown]
# Stays are split 80/20, stratified by outcome. From each held-out stay we
# keep a random half of its measurement times: the models condition on those
# and are asked for the values at all of them. A simple baseline carries each
# variable's latest kept value forward.

# %%
train_ids, test_ids = train_test_split(records, test_size=0.2, stratify=died.to_numpy(), random_state=0)
train = icu[icu["series_id"].isin(train_ids)].reset_index(drop=True)
test = icu[icu["series_id"].isin(test_ids)].reset_index(drop=True)
kept = rng.random(len(test)) < 0.5
kept[test.groupby("series_id").head(1).index] = True  # every stay keeps its first row
given = test[kept].reset_index(drop=True)
query = test[["series_id", "time"]]


def carry_forward(given: pd.DataFrame, query: pd.DataFrame) -> pd.DataFrame:
    """Each variable's latest given value at or before the query time (else the next one, else the training mean)."""
    out = query.sort_values("time").reset_index(drop=True)
    for name in VITALS:
        seen = given.loc[given[name].notna(), ["series_id", "time", name]].sort_values("time")
        before = pd.merge_asof(out[["series_id", "time"]], seen, on="time", by="series_id")[name]
        after = pd.merge_asof(out[["series_id", "time"]], seen, on="time", by="series_id", direction="forward")[name]
        out[name] = before.fillna(after).fillna(train[name].mean()).to_numpy()
    return out


def rmse_on_hidden(predicted: pd.DataFrame) -> pd.Series:
    """Root mean squared error per vital sign over the held-out rows the models did not see."""
    hidden = test[~kept].merge(predicted, on=["series_id", "time"], suffixes=("", "_hat"))
    return pd.Series({name: np.sqrt(np.nanmean((hidden[name] - hidden[f"{name}_hat"]) ** 2)) for name in VITALS})


# %% [markdown]
# ``ODERNN`` predicts a query from the state after the latest earlier
# observation, evolved to the query time; ``LatentODE`` decodes the posterior
# mean trajectory of each stay. Both are trained for interpolation: in every
# minibatch half of each series' rows are hidden from the encoder and must
# be reconstructed. The estimators standardise each variable and the time
# axis internally, and answer in the data's units.

# %%
common = dict(max_epochs=EPOCHS, patience=None, validation_fraction=0.0, random_state=0)
odernn = ODERNN(hidden_dim=16, ode_hidden_layer_sizes=(32,), observed_fraction=0.5, **common).fit(train)
latent = LatentODE(latent_dim=8, encoder_dim=16, encoder_layer_sizes=(32,), ode_layer_sizes=(32,), **common).fit(train)
errors = pd.DataFrame({
    "carry forward": rmse_on_hidden(carry_forward(given, query)),
    "ODERNN": rmse_on_hidden(odernn.predict(given, t=query)),
    "LatentODE": rmse_on_hidden(latent.predict(given, t=query)),
})
print(f"ODERNN {odernn.training_time_:.0f} s, LatentODE {latent.training_time_:.0f} s of training")
print("RMSE on the hidden rows (bpm, mmHg, °C):")
print(errors.round(2).to_string())

# %% [markdown]
# One held-out stay, hour by hour: the kept measurements (dots), the hidden
# ones (crosses) and both models' curves on a fine grid.

# %%
stay = given["series_id"].iloc[0]
grid = np.linspace(0, 48, 200)
curves = {name: model.predict(given[given["series_id"] == stay], t=grid) for name, model in
          [("ODERNN", odernn), ("LatentODE", latent)]}
fig, axes = plt.subplots(len(VITALS), 1, figsize=(9, 2.0 * len(VITALS)), sharex=True)
for ax, name in zip(axes, VITALS):
    shown, hidden = given[given["series_id"] == stay], test[(test["series_id"] == stay) & ~kept]
    ax.plot(shown["time"], shown[name], "k.", label="kept")
    ax.plot(hidden["time"], hidden[name], "C3x", label="hidden")
    for colour, (model_name, curve) in zip(("C0", "C2"), curves.items()):
        ax.plot(curve["time"], curve[name], colour, label=model_name)
    ax.set_ylabel(name)
axes[0].legend(loc="upper right", ncol=4)
axes[-1].set_xlabel("hours since ICU admission")
fig.suptitle(f"Stay {stay}: interpolating vital signs from half of the measurement times")
fig.tight_layout()
fig.savefig("irregular_icu_stay.png", dpi=100)

# %% [markdown]
# Mortality from the whole 48 hours
# ---------------------------------
#
# ``ODERNNClassifier`` reads each stay to its end and maps the final state to
# the probability of in-hospital death; labels are one per series (a pandas
# Series indexed by record id). ``LatentODE.transform`` gives the posterior
# mean of each stay's latent initial state, so the latent model feeds any
# scikit-learn classifier in a ``Pipeline``. With 80 held-out stays (a dozen
# deaths at most) the AUC is a rough figure: its standard error is about 0.05.

# %%
classifier = ODERNNClassifier(hidden_dim=16, ode_hidden_layer_sizes=(32,), **common)
classifier.fit(train, died.loc[train_ids])
pipeline = make_pipeline(
    LatentODE(latent_dim=8, encoder_dim=16, encoder_layer_sizes=(32,), ode_layer_sizes=(32,), **common),
    StandardScaler(),
    LogisticRegression(max_iter=1000),
)
# The pipeline's labels are one per series, in the order the series first appear in the frame.
pipeline.fit(train, died.loc[train["series_id"].unique()].to_numpy())
y_test = died.loc[test["series_id"].unique()].to_numpy()
auc = {
    "ODERNNClassifier": roc_auc_score(y_test, classifier.predict_proba(test)[:, 1]),
    "LatentODE + logistic regression": roc_auc_score(y_test, pipeline.predict_proba(test)[:, 1]),
}
for name, value in auc.items():
    print(f"test AUC, {name}: {value:.3f}")

# %% [markdown]
# Part 2: forecasting with posterior samples
# ------------------------------------------
#
# The paper's toy data: sinusoids with random frequencies and offsets, 100
# points on [0, 5] at times drawn once for all series. A ``LatentODE`` trained
# for extrapolation conditions on the first half of a window and decodes the
# second. Sampling the posterior of ``z0`` turns one forecast into a spread of
# them: where the data pin the trajectory down the samples agree; past the
# data they fan out. The posterior's spread is learned from the KL term of the
# bound, which training weighs by 0 for its first ``kl_warmup_epochs`` (10 by
# default) and then anneals towards 1; a run this short warms up for a sixth of its
# epochs and anneals quickly, so the prior has its say before it ends.

# %%
waves = make_periodic(n_series=TOY_SERIES, n_times=100, random_state=0)
train_waves = waves[waves["series_id"] < int(0.8 * TOY_SERIES)]
forecaster = LatentODE(task="extrapolation", observed_fraction=0.5, max_epochs=TOY_EPOCHS, patience=None,
                       kl_warmup_epochs=TOY_EPOCHS // 6, kl_anneal_rate=0.8, validation_fraction=0.0,
                       random_state=1).fit(train_waves)
print(f"LatentODE (extrapolation): {forecaster.n_epochs_} epochs, {forecaster.training_time_:.0f} s")

# Condition one held-out wave on half of the points of its first half.
wave = waves[waves["series_id"] == TOY_SERIES - 1]
early = wave[wave["time"] < 2.5]
seen = early.iloc[np.sort(rng.choice(len(early), len(early) // 2, replace=False))]
times = np.linspace(0, 5, 101)
draws = forecaster.sample(seen, t=times, n_samples=100, random_state=0)
band = draws.groupby("time")["y"].quantile([0.05, 0.5, 0.95]).unstack()
spread = draws.groupby("time")["y"].std()
spread_seen, spread_forecast = spread[spread.index < 2.5].mean(), spread[spread.index >= 2.5].mean()
print(f"posterior spread: {spread_seen:.3f} where conditioned, {spread_forecast:.3f} over the forecast")

fig, ax = plt.subplots(figsize=(9, 4))
ax.fill_between(band.index, band[0.05], band[0.95], color="C0", alpha=0.25, label="5–95% of 100 posterior samples")
ax.plot(band.index, band[0.5], "C0", label="median sample")
ax.plot(wave["time"], wave["y"], "k.", ms=3, alpha=0.4, label="all points (not given)")
ax.plot(seen["time"], seen["y"], "ko", ms=5, label="conditioned on")
ax.axvline(2.5, color="0.5", ls="--")
ax.set(title="Latent ODE forecast from the first half of a wave", xlabel="time", ylabel="y")
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
fig.savefig("irregular_forecast_fan.png", dpi=100)

# %% [markdown]
# Both parts use the same estimators the same way: long frames with missing
# entries in, frames in the same layout out, per-series times throughout.
# ``benchmarks/irregular.py`` runs the paper's full protocols (toy table and
# PhysioNet) and times training against a formulation on the union of each
# batch's times.
