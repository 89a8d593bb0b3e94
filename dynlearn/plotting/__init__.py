"""Plotting helpers; matplotlib (the ``plot`` extra) is imported only when a plot is drawn."""

from ._trajectories import plot_trajectories

__all__ = ["plot_trajectories"]
