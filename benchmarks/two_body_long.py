"""One seed of HNN Table 1's two-body task at the published 10,000 full-batch steps.

The full ``hnn_table1`` run stops at 1,000 steps (a 10,000-step fit takes
about 15 minutes on one core). This runs the HamiltonianNN alone, seed 0,
at the published budget and prints its figures (raw units) as JSON::

    OMP_NUM_THREADS=1 python benchmarks/two_body_long.py
"""

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)

import physics  # noqa: E402

budget = physics.FULL
split = physics.two_body_split(0, budget)
models = physics.table1_models({"baseline": 60, "hnn": 10000}, 0, "cpu")
hnn = models["hnn"]
t0 = time.perf_counter()
hnn.fit(split.train, derivatives=split.train_rates)
fit = time.perf_counter() - t0
scores = physics.table1_scores(hnn, split)
scores["fit_time_s"] = fit
print(json.dumps(scores))
