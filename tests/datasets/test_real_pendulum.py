"""The Schmidt & Lipson real pendulum, read from local copies of the original files."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynlearn.data import check_series
from dynlearn.datasets import DatasetNotFoundError, fetch_real_pendulum
from dynlearn.exceptions import InputError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PENDULUM = SHARED_DATA / "lipson_pendulum_real"
pytestmark = pytest.mark.skipif(not PENDULUM.is_dir(), reason="shared real data folder is absent")


def test_real_zip_gives_angle_and_angular_velocity():
    data = fetch_real_pendulum(path=PENDULUM / "invar_datasets.zip")
    frame = data.frame
    tidy = pd.read_csv(PENDULUM / "real_pend_h_1.tidy.csv", float_precision="round_trip")  # exact on every pandas
    assert list(frame.columns) == ["series_id", "time", "q", "p"]
    assert frame.shape == (556, 4)
    np.testing.assert_array_equal(frame["q"], tidy["theta"])
    np.testing.assert_array_equal(frame["p"], tidy["omega"])
    np.testing.assert_array_equal(frame["time"], tidy["t"])
    assert frame["time"].iloc[0] == 5.0 and frame["time"].iloc[-1] == 99.5
    steps = np.diff(frame["time"]) * 6  # a 6 Hz grid with 12 frames missing
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert np.round(steps).sum() == 567 and (np.round(steps) > 1).sum() == 10
    assert data.feature_names == ["q", "p"] and "Schmidt" in data.description
    check_series(frame)


def test_text_file_folder_and_zip_agree(tmp_path):
    from_zip = fetch_real_pendulum(path=PENDULUM / "invar_datasets.zip").frame
    assert fetch_real_pendulum(path=PENDULUM / "real_pend_h_1.txt").frame.equals(from_zip)
    only_zip = tmp_path / "only_zip"
    only_zip.mkdir()
    shutil.copy(PENDULUM / "invar_datasets.zip", only_zip)
    assert fetch_real_pendulum(path=only_zip).frame.equals(from_zip)
    assert fetch_real_pendulum(path=PENDULUM).frame.equals(from_zip)


def test_path_problems_are_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        fetch_real_pendulum(path=tmp_path / "missing.zip")
    with pytest.raises(DatasetNotFoundError, match="real_pend_h_1.txt"):
        fetch_real_pendulum(path=tmp_path)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as bundle:
        bundle.writestr("pendulum_h_1.txt", "% o v\n0 1 2 3\n")
    with pytest.raises(InputError, match="real_pend_h_1.txt"):
        fetch_real_pendulum(path=tmp_path / "other.zip")
    (tmp_path / "three.txt").write_text("% o v\n0 1 2\n0 2 3\n")
    with pytest.raises(InputError, match="4 columns"):
        fetch_real_pendulum(path=tmp_path / "three.txt")
