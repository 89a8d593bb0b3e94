"""The Cascaded Tanks benchmark: the recipe's pieces learn the real tanks, and the report holds every member."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dynlearn import NeuralODE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import cascaded_tanks

TANKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cascaded_tanks" / "dataBenchmark.csv"
pytestmark = pytest.mark.skipif(not TANKS.is_file(), reason="the shared Cascaded Tanks file is absent")


@pytest.fixture(scope="module")
def records():
    frame = cascaded_tanks.load(str(TANKS))
    split = {name: frame[frame.series_id == name].reset_index(drop=True) for name in ("estimation", "validation")}
    return split["estimation"], split["validation"], float(split["estimation"]["y"].iloc[0])


@pytest.mark.slow
def test_a_short_run_of_the_recipe_simulates_the_validation_record(records):
    # The recipe's structure (hidden upper tank started by the encoder, windows reached by the curriculum,
    # Euler steps on the sampling grid, held input) with half the window, a fifth of the epochs and a
    # smaller field (0.358 and 0.422 V for seeds 0 and 1, 8-9 s): its free run of the unseen validation record
    # beats the best linear approximation (0.75 V) and the best constant (2.1 V).
    estimation, validation, start = records
    short = {**cascaded_tanks.RECIPE, "window_size": 64, "max_epochs": 200, "hidden_layer_sizes": (32, 32)}
    model = NeuralODE(**short, random_state=0, n_threads=1).fit(estimation)
    error = cascaded_tanks.rmse(model, validation, start)
    assert error < 0.75, error
    assert model.module_.hidden_init == "encoder" and model.augment_dim_ == 1


def test_the_benchmark_rows_are_the_members_and_their_averaged_simulation(records, tmp_path, monkeypatch):
    estimation, validation, start = records
    tiny = {"max_epochs": 2, "window_size": 8, "hidden_layer_sizes": (8,)}
    rows = cascaded_tanks.run("tiny", tiny, 2, str(TANKS))
    assert [row["seed"] for row in rows[:2]] != ["ensemble of 2"] * 2 and rows[-1]["seed"] == "ensemble of 2"
    # The ensemble's row is the free run of the members' mean, not the mean of their errors.
    from dynlearn import SeedEnsemble

    ensemble = SeedEnsemble(NeuralODE(**{**cascaded_tanks.RECIPE, **tiny}), n_members=2, random_state=0).fit(estimation)
    mean = np.mean([cascaded_tanks.free_run(m, validation, start) for m in ensemble.estimators_], axis=0)
    expected = float(np.sqrt(np.mean((mean - validation["y"].to_numpy()) ** 2)))
    assert rows[-1]["rmse_validation"] == pytest.approx(expected, rel=1e-6)
    assert [row["rmse_validation"] for row in rows[:2]] == pytest.approx(
        [cascaded_tanks.rmse(m, validation, start) for m in ensemble.estimators_], rel=1e-6)

    monkeypatch.setattr(cascaded_tanks, "OUT", tmp_path)
    fitted = cascaded_tanks.baselines(str(TANKS))
    cascaded_tanks.write(rows, fitted)
    report = (tmp_path / "report.md").read_text()
    assert "`tiny`" in report and "| best linear approximation | 0.75 |" in report
    # The baselines run in the same script: the ARX beats the mean level, as a linear model of tanks should.
    by_name = {name.split(",")[0].split(" (")[0]: value for name, value, _ in fitted}
    assert by_name["linear ARX"] < by_name["mean level of the estimation record"]
    assert f"{by_name['linear ARX']:.3f}" in report
    assert f"{rows[-1]['rmse_validation']:.3f}" in report
