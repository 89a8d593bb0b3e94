"""Plotting draws observed points, predicted lines and bands."""

from __future__ import annotations

import matplotlib
import numpy as np

from dynlearn.plotting import plot_trajectories

matplotlib.use("Agg")


def test_plot_trajectories_draws_points_lines_and_bands(oscillator):
    frame, _ = oscillator
    shown = frame[frame["series_id"] < 2]
    fig = plot_trajectories(shown, shown, lower=shown.assign(q=shown["q"] - 0.1, p=shown["p"] - 0.1),
                            upper=shown.assign(q=shown["q"] + 0.1, p=shown["p"] + 0.1))
    assert [ax.get_title() for ax in fig.axes] == ["q", "p"]
    q_axis = fig.axes[0]
    assert len(q_axis.lines) == 4 and len(q_axis.collections) == 2  # 2 series x (points, line); 2 bands
    observed = q_axis.lines[0].get_ydata()
    assert len(observed) == shown[shown["series_id"] == 0]["q"].notna().sum()


def test_plot_trajectories_with_arrays_and_prediction_times():
    X = np.random.RandomState(0).normal(size=(2, 5, 1))
    fig = plot_trajectories(X, np.zeros((2, 3, 1)), t=np.arange(5.0), t_predicted=[5.0, 6.0, 7.0])
    assert list(fig.axes[0].lines[1].get_xdata()) == [5.0, 6.0, 7.0]
