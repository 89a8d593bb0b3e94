"""Datasets, in the manner of scikit-learn's ``datasets`` module.

- ``make_*``: simulators of physical, biological, chaotic and stochastic
  systems; pure functions of ``random_state`` returning the long frame users
  bring (``series_id``, ``time``, variables) and, on request, the truth.
- ``load_*``: small real data shipped inside the package.
- ``fetch_*``: real data downloaded once into a cache, verified by sha256.
"""

# --- simulators (make_*) ---
from ._simulate import make_damped_oscillator

# --- real data (load_*, fetch_*) ---

__all__ = [
    # --- simulators ---
    "make_damped_oscillator",
    # --- real data ---
]
