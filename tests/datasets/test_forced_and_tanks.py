"""The forced oscillator simulator and the Cascaded Tanks loader: systems with a known input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynlearn.datasets import catalogue, load_cascaded_tanks, make_forced_oscillator
from dynlearn.exceptions import InputError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TANKS = SHARED_DATA / "cascaded_tanks" / "dataBenchmark.csv"


@pytest.mark.parametrize("signal", ["multisine", "steps"])
def test_forced_oscillator_frame_and_truth(signal):
    frame, truth = make_forced_oscillator(n_series=3, n_times=200, input=signal, random_state=1, return_truth=True)
    assert list(frame.columns) == ["series_id", "time", "q", "p", "u"]
    assert frame.equals(make_forced_oscillator(n_series=3, n_times=200, input=signal, random_state=1))
    np.testing.assert_array_equal(frame["u"].to_numpy(), truth.inputs.ravel())
    # Each series has its own input signal.
    assert not np.allclose(truth.inputs[0], truth.inputs[1])
    # The states follow dq/dt = p / m: the trapezoid rule over each gap matches the change of q.
    q, p, t = truth.states[..., 0], truth.states[..., 1], truth.times
    np.testing.assert_allclose(np.diff(q, axis=1), 0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(t, axis=1), atol=1e-3)


def test_step_inputs_are_held_from_observation_times():
    frame, truth = make_forced_oscillator(n_series=2, n_times=60, input="steps", irregular=True, random_state=0,
                                          return_truth=True)
    u = truth.inputs[0]
    switches = np.flatnonzero(np.diff(u))
    assert 1 <= len(switches) < len(u) - 1
    # Between observations the force is the value of the last observation (a zero-order hold).
    t = truth.times[0]
    middle = 0.5 * (t[:-1] + t[1:])
    np.testing.assert_array_equal(truth.input_function(0, middle), u[:-1])


def test_noise_gaps_and_irregular_times_touch_the_states_only():
    np.random.seed(0)
    frame, truth = make_forced_oscillator(n_series=5, n_times=30, noise=0.1, missing_fraction=0.3, irregular=True,
                                          random_state=2, return_truth=True)
    np.random.seed(1)  # the global seed is never read
    assert frame.equals(make_forced_oscillator(n_series=5, n_times=30, noise=0.1, missing_fraction=0.3,
                                               irregular=True, random_state=2))
    assert frame["u"].notna().all() and frame[["q", "p"]].isna().any().any()
    np.testing.assert_array_equal(frame["u"].to_numpy(), truth.inputs.ravel())  # the input is known exactly
    assert np.all(np.diff(truth.times, axis=1) > 0) and np.all(truth.times[:, 0] == 0.0)


def test_forced_oscillator_refuses_unknown_inputs():
    with pytest.raises(InputError, match="input"):
        make_forced_oscillator(input="chirp")


def test_both_are_in_the_catalogue():
    entries = catalogue()
    assert entries["forced_oscillator"].kind == "simulated"
    assert entries["cascaded_tanks"].kind == "download"
    assert "Schoukens" in entries["cascaded_tanks"].description()


def test_cascaded_tanks_reads_a_file_in_the_original_format(tmp_path):
    # The benchmark's layout: quoted headers, a trailing comma on every line, Ts on the first row only.
    lines = ['"uEst","uVal","yEst","yVal","Ts",', "3.2567,0.97619,5.205,4.9728,4,", "3.2466,0.99921,5.2154,4.9722,,",
             "3.2,1.1,5.3,4.9,,"]
    (tmp_path / "dataBenchmark.csv").write_text("\n".join(lines) + "\n")
    data = load_cascaded_tanks(path=tmp_path)
    frame = data.frame
    assert list(frame.columns) == ["series_id", "time", "u", "y"] and data.sampling_time == 4.0
    validation = frame[frame.series_id == "validation"]
    np.testing.assert_array_equal(validation.time, [0.0, 4.0, 8.0])
    np.testing.assert_array_equal(validation.u, [0.97619, 0.99921, 1.1])
    np.testing.assert_array_equal(validation.y, [4.9728, 4.9722, 4.9])
    (tmp_path / "dataBenchmark.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="path"):
        load_cascaded_tanks(path=tmp_path)


@pytest.mark.skipif(not TANKS.is_file(), reason="shared real data file is absent")
def test_cascaded_tanks_from_the_shared_file():
    data = load_cascaded_tanks(path=TANKS)
    frame = data.frame
    assert list(frame.columns) == ["series_id", "time", "u", "y"]
    assert frame.groupby("series_id").size().to_dict() == {"estimation": 1024, "validation": 1024}
    assert data.sampling_time == 4.0
    estimation = frame[frame.series_id == "estimation"]
    np.testing.assert_array_equal(estimation.time.to_numpy()[:3], [0.0, 4.0, 8.0])
    assert estimation.u.iloc[0] == 3.2567 and estimation.y.iloc[0] == 5.205
    assert frame[["u", "y"]].notna().all().all()
    assert load_cascaded_tanks(path=TANKS.parent).frame.equals(frame)  # a folder holding the file
