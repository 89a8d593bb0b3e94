"""Plots of observed series, predicted trajectories and predictive bands."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..data import check_series
from ..exceptions import input_error


def plot_trajectories(
    X: Any,
    predicted: Any = None,
    *,
    lower: Any = None,
    upper: Any = None,
    t: Any = None,
    t_predicted: Any = None,
    series: Sequence[int] | None = None,
    features: Sequence[int] | None = None,
    axes: Any = None,
) -> Any:
    """Plot observations as points and predictions as lines, one panel per feature.

    Parameters
    ----------
    X : DataFrame, ndarray or list of ndarray
        Observed series (any accepted kind); NaN entries are not drawn.
    predicted : same kinds, default=None
        Predicted trajectories for the same series (their own times), e.g.
        the output of ``model.predict(X, t=...)``.
    lower, upper : same kinds as ``predicted``, default=None
        A band drawn around the prediction (e.g. 5% and 95% quantiles).
    t : array-like, default=None
        Times of an array ``X``.
    t_predicted : array-like, default=None
        Times of array predictions and bands (default: ``t``).
    series : sequence of int, default=None
        Positions of the series to draw (default: the first five).
    features : sequence of int, default=None
        Features to draw (default: all).
    axes : sequence of matplotlib Axes, default=None
        One per drawn feature; created when None.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    observed = check_series(X, t, argument="X")
    series = list(range(min(observed.n_series, 5))) if series is None else list(series)
    features = list(range(observed.n_features)) if features is None else list(features)
    if axes is None:
        fig, axes = plt.subplots(1, len(features), figsize=(4.5 * len(features), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    if len(axes) != len(features):
        raise input_error("axes", f"{len(features)} axes, one per feature", f"{len(axes)}", "Pass matching axes.")
    t_curves = t if t_predicted is None else t_predicted
    curves = {name: _optional(value, t_curves, name) for name, value in (("predicted", predicted), ("lower", lower), ("upper", upper))}
    names = observed.spec.feature_names or [f"x{j}" for j in range(observed.n_features)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    decode = observed.spec.time_encoding.decode
    for ax, j in zip(axes, features):
        for k, i in enumerate(series):
            color = colors[k % len(colors)]
            n = observed.lengths[i]
            seen = observed.mask[i, :n, j]
            ax.plot(decode(observed.times[i, :n][seen]), observed.values[i, :n, j][seen], "o", ms=3, color=color,
                    label=f"{observed.ids[i]} observed")
            if curves["predicted"] is not None:
                times, values = _curve(curves["predicted"], i, j)
                ax.plot(decode(times), values, "-", color=color, label=f"{observed.ids[i]} predicted")
            if curves["lower"] is not None and curves["upper"] is not None:
                times, low = _curve(curves["lower"], i, j)
                _, high = _curve(curves["upper"], i, j)
                ax.fill_between(decode(times), low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(names[j])
        ax.set_xlabel("time")
    axes[0].legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def _optional(value: Any, t: Any, argument: str) -> Any:
    if value is None:
        return None
    return check_series(value, t if not hasattr(value, "columns") else None, argument=argument)


def _curve(batch: Any, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    n = batch.lengths[i]
    return batch.times[i, :n], batch.values[i, :n, j]
