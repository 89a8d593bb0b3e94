"""NeuralODE(solver="rk4") epochs with the written-out fixed steps against the segment clock, interleaved.

Autonomous fixed-step solves with one step per gap run as written-out steps
(``solvers._ode._solve_fixed_steps``); this script times the same fit with
that path switched off, round by round, one torch thread.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fixed_steps_written_out.py``
"""

import time, warnings, statistics, torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import dynlearn.solvers._ode as ode
from dynlearn import NeuralODE
from dynlearn.datasets import make_damped_oscillator
frame = make_damped_oscillator(n_series=64, n_times=50, random_state=0)
orig = ode._steps_once_per_gap
res = {"written-out": [], "segment clock": []}
for r in range(3):
    for label in res:
        ode._steps_once_per_gap = orig if label == "written-out" else (lambda *a: False)
        m = NeuralODE(hidden_layer_sizes=(32, 32), solver="rk4", max_epochs=8, patience=None, random_state=0, n_threads=1).fit(frame)
        res[label].append(statistics.median(m.history_.to_frame()["duration"].iloc[1:]))
        if r == 2: print(label, "valid loss", m.history_.to_frame()["valid_loss"].iloc[-1])
for k, v in res.items(): print(k, "median epoch s", round(statistics.median(v), 4), [round(x, 4) for x in v])
print("ratio", statistics.median(res["written-out"]) / statistics.median(res["segment clock"]))
