"""Datasets, in the manner of scikit-learn's ``datasets`` module.

- ``make_*``: simulators of physical, biological, chaotic and stochastic
  systems; pure functions of ``random_state`` returning the long frame users
  bring (``series_id``, ``time``, variables) and, on request, the truth.
- ``load_*``: small real data shipped inside the package.
- ``fetch_*``: real data downloaded once into a cache, verified by sha256.
"""

from ._catalogue import DatasetEntry, catalogue, dataset

# --- simulators (make_*) ---
from ._benchmarks import make_periodic, make_spirals
from ._forced import make_forced_oscillator
from ._hopper import make_hopper
from ._physical import make_double_pendulum, make_mass_spring, make_pendulum, make_two_body
from ._sim_dissipative import make_fitzhugh_nagumo, make_lorenz, make_lotka_volterra, make_van_der_pol
from ._simulate import make_damped_oscillator
from ._stochastic import make_geometric_brownian_motion, make_ou_process, make_stochastic_lorenz

# --- real data (load_*, fetch_*) ---
from ._activity import fetch_person_activity
from ._fetch import ChecksumError, DatasetNotFoundError, DownloadError, UnsafeArchiveError, get_data_home
from ._mocap import fetch_mocap6
from ._physionet import fetch_physionet2012
from ._real import fetch_real_pendulum, load_lynx_hare
from ._tanks import load_cascaded_tanks

__all__ = [
    "DatasetEntry",
    "catalogue",
    "dataset",
    # --- simulators ---
    "make_damped_oscillator",
    "make_double_pendulum",
    "make_fitzhugh_nagumo",
    "make_forced_oscillator",
    "make_geometric_brownian_motion",
    "make_hopper",
    "make_lorenz",
    "make_lotka_volterra",
    "make_mass_spring",
    "make_ou_process",
    "make_pendulum",
    "make_periodic",
    "make_spirals",
    "make_stochastic_lorenz",
    "make_two_body",
    "make_van_der_pol",
    # --- real data ---
    "ChecksumError",
    "DatasetNotFoundError",
    "DownloadError",
    "UnsafeArchiveError",
    "fetch_mocap6",
    "fetch_person_activity",
    "fetch_physionet2012",
    "fetch_real_pendulum",
    "get_data_home",
    "load_cascaded_tanks",
    "load_lynx_hare",
]
