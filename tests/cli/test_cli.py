"""The command line: help, demo, fit/predict on files, datasets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from dynlearn.cli import main

matplotlib.use("Agg")


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "fit", "predict", "datasets"):
        assert command in text


def test_demo_fits_forecasts_and_writes_a_plot(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert main(["demo", "--max-epochs", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Forecast MSE" in text and "last-value baseline" in text
    assert out.stat().st_size > 10_000


def test_fit_then_predict_from_files(tmp_path, capsys):
    data = tmp_path / "data.csv"
    assert main(["datasets", "fetch", "damped_oscillator", "--out", str(data), "--param", "n_series=6",
                 "--param", "n_times=15", "--param", "random_state=0"]) == 0
    model = tmp_path / "model.pkl"
    assert main(["fit", str(data), "--out", str(model), "--param", "max_epochs=2", "--param", "hidden_layer_sizes=(8,)",
                 "--param", "device='cpu'"]) == 0
    out = tmp_path / "forecast.csv"
    assert main(["predict", str(model), str(data), "--horizon", "2", "--steps", "4", "--out", str(out)]) == 0
    forecast = pd.read_csv(out)
    assert list(forecast.columns) == ["series_id", "time", "q", "p"] and len(forecast) == 6 * 4
    assert main(["predict", str(model), str(data), "--times", "11,12", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 12


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    data = tmp_path / "bad.csv"
    pd.DataFrame({"series_id": [0, 0], "time": [0.0, 0.0], "x": [1.0, 2.0]}).to_csv(data, index=False)
    assert main(["fit", str(data), "--out", str(tmp_path / "m.pkl")]) == 1
    assert "duplicate" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--max-epochs", "0"], ["demo", "--max-epochs", "ten"]])
def test_counts_are_checked_as_options(argv, capsys):
    # The message names the option the user typed, not the estimator parameter behind it.
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code != 0
    err = capsys.readouterr().err
    assert "--max-epochs" in err and "at least 1" in err and "max_epochs" not in err


def test_datasets_list_info_and_fetch(capsys, tmp_path):
    from dynlearn.datasets import catalogue

    assert main(["datasets", "list"]) == 0
    listing = capsys.readouterr().out
    for name, entry in catalogue().items():
        assert name in listing and entry.kind in listing
    assert main(["datasets", "info", "lynx_hare"]) == 0
    assert "Hudson" in capsys.readouterr().out
    assert main(["datasets", "info", "lorenz"]) == 0
    assert "sigma" in capsys.readouterr().out.lower()
    out = tmp_path / "lynx.csv"
    assert main(["datasets", "fetch", "lynx_hare", "--out", str(out)]) == 0
    assert list(pd.read_csv(out).columns) == ["series_id", "time", "hare", "lynx"]
    assert main(["datasets", "info", "no_such_set"]) == 1
    assert "dynlearn datasets list" in capsys.readouterr().err


def test_bad_params_and_seeds_get_the_commands_own_errors(capsys, tmp_path):
    out = str(tmp_path / "lorenz.csv")
    # The table the command writes is the observed one: return_truth is Python's, not the command's.
    assert main(["datasets", "fetch", "lorenz", "--param", "n_series=2", "--param", "return_truth=True",
                 "--out", out]) == 1
    err = capsys.readouterr().err
    assert "unknown name 'return_truth'" in err and "n_series" in err and "return_truth," not in err
    assert main(["datasets", "fetch", "lynx_hare", "--param", "n_series=2"]) == 1
    assert "takes no --param" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:
        main(["demo", "--seed", "-1"])
    assert exit_code.value.code == 2
    assert "--seed: expected a whole number from 0 to 2**32 - 1; got -1" in capsys.readouterr().err


def test_datasets_fetch_offline_reads_a_local_copy_or_says_how(capsys, tmp_path):
    shared_data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    assert main(["datasets", "fetch", "real_pendulum", "--data-home", str(tmp_path), "--param",
                 "download_if_missing=False"]) == 1
    assert "path=" in capsys.readouterr().err
    if shared_data.exists():
        assert main(["datasets", "fetch", "physionet2012", "--path",
                     str(shared_data / "physionet2012_seta_slice")]) == 0
        assert "400 series" in capsys.readouterr().out


def test_python_dash_m_runs():
    done = subprocess.run([sys.executable, "-m", "dynlearn", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("dynlearn ")
