"""Energy models under known forces: HamiltonianNN and LagrangianNN forecasts of forced oscillators with and without inputs.

24 undamped series of ``make_forced_oscillator`` (``damping=0``: exactly a
forced Hamiltonian system, ``dp/dt = -q + u``; with unit mass ``p = dq/dt``,
so the same columns serve the Lagrangian model as positions and velocities),
60 samples over 15 time units, a different multisine force per series: fit
on 16, forecast the second half of the other 8 — under input signals never
seen in training — from their first half. Figures: R² and MSE of the
forecasts and fit seconds, for each ``covariate_interpolation``, for a
separable ``H`` on the leapfrog stepper, for the same model without the
input, and for the naive forecast (each state keeps its last value).

    OMP_NUM_THREADS=1 python benchmarks/forced_oscillator_energy_inputs.py

writes ``benchmarks/results/forced_oscillator_energy_inputs/report.md``.
"""

from __future__ import annotations

from pathlib import Path

from forced_oscillator_inputs import write_table

OUT = Path(__file__).resolve().parent / "results" / "forced_oscillator_energy_inputs"
MODEL = dict(hidden_layer_sizes=(32, 32), max_epochs=100, random_state=0, device="cpu", n_threads=1)


def main() -> None:
    from dynlearn import HamiltonianNN, LagrangianNN, LastValueForecaster
    from dynlearn.datasets import make_forced_oscillator

    frame = make_forced_oscillator(n_series=24, n_times=60, t_span=(0.0, 15.0), damping=0.0, random_state=0)
    runs = []
    for estimator in (HamiltonianNN, LagrangianNN):
        name = estimator.__name__
        runs += [(f"{name}, inputs, {i}", estimator, dict(MODEL, covariates=["u"], covariate_interpolation=i))
                 for i in ("previous", "linear", "cubic")]
        runs.append((f"{name}, no inputs", estimator, dict(MODEL)))
    runs.append(("HamiltonianNN separable, inputs, linear, leapfrog", HamiltonianNN,
                 dict(MODEL, covariates=["u"], covariate_interpolation="linear", separable=True, solver="leapfrog")))
    runs.append(("naive (last value)", LastValueForecaster, {}))
    write_table(frame, runs, "# Energy models forecasting under unseen forces (undamped forced oscillator)",
                "benchmarks/forced_oscillator_energy_inputs.py", OUT)


if __name__ == "__main__":
    main()
