"""
Forecasting a real series: baseline, backtest, automatic choice, intervals
==========================================================================

A forecast is only worth its training if it beats doing nothing. This
tutorial forecasts a short real series, the Hudson's Bay Company lynx and
snowshoe-hare pelts of 1900–1920 (shipped with dynlearn), the way one
should forecast any real table:

1. hold out the end of the series, the last 20%, and never look at it
   until the very end;
2. measure the naive forecast (``LastValueForecaster``: every variable keeps
   its last observed value) on it — the floor to beat;
3. fit a ``NeuralODE`` by hand, with hidden state (the populations alone do
   not say where in the cycle they are) and training rollouts as long as
   the forecasts we want (``horizon``);
4. choose its settings by backtesting on the training part only:
   ``SeriesTimeSplit`` folds in time and ``make_forecast_scorer`` in
   scikit-learn's ``GridSearchCV``;
5. let ``AutoForecaster`` do all of this: it backtests a few candidate
   models and the naive one within a time budget, refits the best, and
   shows its leaderboard;
6. draw forecast intervals (``predict_interval``) against the held-out truth.

Errors are mean squared errors in (thousands of pelts)², and are also
given divided by the naive forecast's (below 1 beats it).

Run it with ``python tutorials/forecasting_real_series.py``; it writes PNG
figures to the current folder when matplotlib is installed.
``DYNLEARN_TUTORIAL_FAST=1`` trains briefly.
"""

# %%
import os
import warnings

import pandas as pd
from sklearn.model_selection import GridSearchCV

from dynlearn import AutoForecaster, LastValueForecaster, NeuralODE
from dynlearn.datasets import load_lynx_hare
from dynlearn.metrics import interval_coverage, make_forecast_scorer, mean_squared_error
from dynlearn.model_selection import SeriesTimeSplit

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the figures are optional
    plt = None

warnings.filterwarnings("ignore", category=UserWarning)  # short trainings warn about convergence
FAST = os.environ.get("DYNLEARN_TUTORIAL_FAST") == "1"
EPOCHS = 40 if FAST else 150

# %% [markdown]
# The data and the held-out future
# --------------------------------
#
# One series (``series_id`` 0), one row per year, two variables. The last
# 20% of the years (1917–1920) are held out: the history ends in 1916 and
# every model forecasts four years from it.

# %%
frame = load_lynx_hare().frame
n_test = int(round(0.2 * len(frame)))
train, test = frame.iloc[:-n_test], frame.iloc[-n_test:]
HORIZON = n_test  # observations (years) ahead
queries = test[["series_id", "time"]]
print(f"train {train['time'].min()}–{train['time'].max()}, held out {test['time'].min()}–{test['time'].max()}")


def held_out_mse(model):
    """MSE of a model's forecast of the held-out years from the training history."""
    return mean_squared_error(test, model.predict(train, t=queries))


# %% [markdown]
# The floor: the naive forecast
# -----------------------------
#

# %%
naive = LastValueForecaster().fit(train)
scores = {"last value": held_out_mse(naive)}
print(f"last value: held-out MSE {scores['last value']:.1f}")

# %% [markdown]
# A NeuralODE by hand
# -------------------
#
# Two observed variables give an autonomous ODE only a plane to move in; two
# hidden dimensions, started from delay coordinates (the previous
# observations), let it carry where the cycle is. ``horizon=4.0`` (years)
# makes its training rollouts four years long, as long as the forecasts.

# %%
node = NeuralODE(hidden_layer_sizes=(32, 32), augment_dim=2, hidden_init="delay", horizon=float(HORIZON),
                 max_epochs=EPOCHS, random_state=0)
node.fit(train)
scores["NeuralODE by hand"] = held_out_mse(node)
print(f"NeuralODE by hand: held-out MSE {scores['NeuralODE by hand']:.1f}")

# %% [markdown]
# Backtesting on the training part
# --------------------------------
#
# Settings are chosen on the training years only. ``SeriesTimeSplit`` cuts
# them into expanding-window folds: each fold fits on the years up to a cut
# and forecasts the next four; ``make_forecast_scorer`` scores exactly that
# forecast (negated MSE, so greater is better), and ``GridSearchCV`` does the
# rest — here it asks whether the hidden dimensions help. The held-out years
# stay unseen.

# %%
cv = SeriesTimeSplit(n_splits=3, horizon=HORIZON)
grid = {"augment_dim": [0, 2]}  # without hidden state, or with it
search = GridSearchCV(node, grid, cv=cv, scoring=make_forecast_scorer(horizon=HORIZON)).fit(train)
print("best settings by backtest:", search.best_params_, f"(backtest MSE {-search.best_score_:.1f})")
scores["NeuralODE, grid search"] = held_out_mse(search.best_estimator_)

# %% [markdown]
# AutoForecaster
# --------------
#
# ``AutoForecaster`` runs that backtest over a small set of candidates — the
# naive forecaster, two NeuralODEs with hidden state and horizon training,
# an ODE-RNN and a neural SDE (see ``AutoForecaster.default_candidates``) —
# within ``time_budget`` seconds, and refits the candidate with the lowest
# backtest error on all the training years. A model is chosen only if it
# beats the naive forecaster in the backtest. Its leaderboard says how each
# candidate did, how long it took, and whether it failed or was skipped for
# the budget.

# %%
auto = AutoForecaster(horizon=HORIZON, cv=3, time_budget=120, random_state=0)
if FAST:  # fewer epochs for a quick run; the same candidates
    defaults = AutoForecaster.default_candidates(horizon=float(HORIZON), random_state=0)
    auto.set_params(candidates={name: model.set_params(max_epochs=EPOCHS) if name != "last_value" else model
                                for name, model in defaults.items()})
auto.fit(train)
leaderboard = auto.leaderboard_
print(leaderboard[["candidate", "mean_error", "std_error", "mean_fit_time", "status"]].to_string(index=False))
print(f"chosen: {auto.best_name_}")
scores["AutoForecaster"] = held_out_mse(auto)

# %% [markdown]
# How they did on the held-out years
# ----------------------------------
#

# %%
summary = pd.DataFrame({"held-out MSE": scores})
summary["÷ naive"] = summary["held-out MSE"] / scores["last value"]
print(summary.round(3).to_string())
ratio = scores["AutoForecaster"] / scores["last value"]

# %% [markdown]
# Forecast intervals
# ------------------
#
# ``predict_interval`` gives central intervals around the forecast. The
# NeuralODE's are conformal: with one series it cannot hold a series out to
# calibrate them, so AutoForecaster calibrates them on its backtest
# forecasts, which no fold model had seen. With three folds of four years
# there are twelve residuals per variable, enough for a 90% interval and
# no more, so read them as rough. They are symmetric around the forecast, so
# for counts their lower ends can fall below zero.

# %%
levels = (0.5, 0.8, 0.9)
intervals = {level: auto.predict_interval(train, t=queries, coverage=level) for level in levels}
coverage = interval_coverage(test, *intervals[0.9])
print(f"held-out years inside the 90% intervals: {coverage:.0%}")

if plt is not None:
    forecast = auto.predict(train, t=queries)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, name in zip(axes, ["hare", "lynx"], strict=True):
        for level in sorted(levels, reverse=True):
            lower, upper = intervals[level]
            ax.fill_between(queries["time"], lower[name], upper[name], color="C0", alpha=0.18,
                            label=f"{level:.0%} interval")
        ax.plot(train["time"], train[name], "k.-", label="history")
        ax.plot(test["time"], test[name], "o", color="C3", label="held out")
        ax.plot(queries["time"], forecast[name], "C0-", label=f"forecast ({auto.best_name_})")
        ax.plot(queries["time"], naive.predict(train, t=queries)[name], "--", color="gray", label="last value")
        ax.set(title=name, xlabel="year", ylabel="thousands of pelts")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig("forecasting_fan.png", dpi=110)
