"""What a user with an input–output record would try first, for free-run simulation: the baselines to beat.

Every function fits on one estimation record ``(u, y)`` (equally spaced
samples, one input, one output) and simulates the output of another record
from its input alone, given only its first ``n_start`` measured outputs
(``n_start`` is the model's order: the past it needs to start; dynlearn's
estimators start from the first sample only). Nothing here sees the
simulated record's outputs past those.

- :func:`mean_output`: the estimation record's mean level, every sample
  (the naive answer: knows nothing of the input).
- :func:`arx_free_run`: a linear ARX model
  ``y_k = c + Σ_i a_i y_{k-i} + Σ_j b_j u_{k-j}`` fitted by least squares
  on one-step predictions, simulated on its own outputs. The orders
  ``(na, nb)`` are chosen by :func:`select_arx` on the *estimation* record's
  free-run error, as a user without the test data would choose them.
- :func:`sarimax_free_run`: statsmodels' SARIMAX with the input as an
  exogenous regressor (``order=(p, 0, q)``, chosen by AIC, on data centred
  by the estimation record's means), forecasting the
  whole record from its first samples (needs the ``bench`` extra).

Used by ``cascaded_tanks.py`` and ``forced_oscillator_inputs.py``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np


def rmse(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(measured)) ** 2)))


def mean_output(y_train: np.ndarray, u_test: np.ndarray) -> np.ndarray:
    return np.full(len(u_test), float(np.mean(y_train)))


def _regressors(y: np.ndarray, u: np.ndarray, na: int, nb: int, k: np.ndarray) -> np.ndarray:
    columns = [np.ones(len(k))]
    columns += [y[k - i] for i in range(1, na + 1)]
    columns += [u[k - j] for j in range(1, nb + 1)]
    return np.column_stack(columns)


def fit_arx(y: np.ndarray, u: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Least-squares ARX coefficients ``[c, a_1..a_na, b_1..b_nb]`` from one-step predictions."""
    start = max(na, nb, 1)
    k = np.arange(start, len(y))
    theta, *_ = np.linalg.lstsq(_regressors(y, u, na, nb, k), y[k], rcond=None)
    return theta


def simulate_arx(theta: np.ndarray, na: int, nb: int, y_start: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Free run of an ARX model over ``len(u)`` samples, its first ``len(y_start)`` outputs given."""
    start = max(na, nb, 1)
    y = np.empty(len(u))
    y[:start] = y_start[:start]
    c, a, b = theta[0], theta[1 : na + 1], theta[na + 1 :]
    for k in range(start, len(u)):
        y[k] = c + a @ y[k - na : k][::-1] + b @ u[k - nb : k][::-1]
        if not np.isfinite(y[k]) or abs(y[k]) > 1e6:  # an unstable fit: the free run diverges
            y[k:] = np.nan
            break
    return y


def select_arx(y: np.ndarray, u: np.ndarray, orders: range = range(1, 6)) -> tuple[int, int]:
    """The ``(na, nb)`` whose free run best simulates the estimation record itself."""
    best, choice = np.inf, (1, 1)
    for na, nb in itertools.product(orders, orders):
        theta = fit_arx(y, u, na, nb)
        error = rmse(simulate_arx(theta, na, nb, y, u), y)
        if np.isfinite(error) and error < best:
            best, choice = error, (na, nb)
    return choice


def arx_free_run(y_train: np.ndarray, u_train: np.ndarray, y_test: np.ndarray, u_test: np.ndarray,
                 orders: range = range(1, 6)) -> tuple[np.ndarray, dict]:
    na, nb = select_arx(y_train, u_train, orders)
    theta = fit_arx(y_train, u_train, na, nb)
    start = max(na, nb, 1)
    return simulate_arx(theta, na, nb, y_test[:start], u_test), {"na": na, "nb": nb, "n_start": start}


def sarimax_free_run(y_train: np.ndarray, u_train: np.ndarray, y_test: np.ndarray, u_test: np.ndarray,
                     orders: tuple[int, ...] = (1, 2, 3)) -> tuple[np.ndarray, dict]:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    # Centred on the estimation record's means instead of a trend term, so a record whose first samples
    # hold the input constant can still be applied.
    y_mean, u_mean = float(np.mean(y_train)), float(np.mean(u_train))
    best, chosen = None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the optimiser
        for p, q in itertools.product(orders, (0, 1)):
            fitted = SARIMAX(y_train - y_mean, exog=u_train - u_mean, order=(p, 0, q)).fit(disp=False)
            if best is None or fitted.aic < best.aic:
                best, chosen = fitted, (p, q)
        start = chosen[0]
        applied = best.apply(y_test[:start] - y_mean, exog=u_test[:start] - u_mean)
        rest = applied.forecast(steps=len(u_test) - start, exog=u_test[start:] - u_mean) + y_mean
    return np.concatenate([y_test[:start], np.asarray(rest)]), {"p": chosen[0], "q": chosen[1], "n_start": start}
