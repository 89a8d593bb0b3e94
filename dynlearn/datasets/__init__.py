"""Datasets: simulators of physical systems (``make_*``)."""

from ._simulate import make_damped_oscillator

__all__ = ["make_damped_oscillator"]
