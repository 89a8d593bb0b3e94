"""The CMU mocap6 set, read from a local copy of the original MATLAB file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from dynlearn.data import check_series
from dynlearn.datasets import DatasetNotFoundError, fetch_mocap6
from dynlearn.exceptions import InputError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MOCAP = SHARED_DATA / "cmu_mocap6"
pytestmark = pytest.mark.skipif(not MOCAP.is_dir(), reason="shared real data folder is absent")
SEQUENCES = {"13_29": 382, "13_30": 205, "13_31": 251, "14_06": 446, "14_14": 387, "14_20": 387}


@pytest.fixture(scope="module")
def mocap():
    return fetch_mocap6(path=MOCAP / "mocap6.mat")


def test_six_sequences_at_ten_frames_per_second(mocap):
    frame = mocap.frame
    assert frame.shape == (2058, 14)
    assert list(frame.columns[:2]) == ["series_id", "time"] and list(frame.columns[2:]) == mocap.feature_names
    assert frame.groupby("series_id", sort=False).size().to_dict() == SEQUENCES
    for _, sequence in frame.groupby("series_id"):
        np.testing.assert_allclose(sequence["time"], np.arange(len(sequence)) / 10)
    assert mocap.feature_names[:2] == ["root.ty", "lowerback.rx"] and len(mocap.feature_names) == 12
    assert len(mocap.action_names) == 12 and mocap.action_names[0] == "JumpJack"
    assert "Fox" in mocap.description and "mocap.cs.cmu.edu" in mocap.description
    check_series(frame)


def test_values_and_actions_match_the_published_tables(mocap):
    """The flat export shipped beside the original file agrees row for row."""
    tidy = pd.read_csv(MOCAP / "mocap6_tidy.csv", dtype={"sequence": str})
    assert mocap.frame["series_id"].tolist() == tidy["sequence"].tolist()
    np.testing.assert_allclose(mocap.frame[mocap.feature_names], tidy[mocap.feature_names], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mocap.frame["time"], tidy["time_s"], atol=1e-12)
    assert mocap.target.tolist() == tidy["action"].tolist()
    assert (tidy["action_id"].to_numpy() - 1 == [mocap.action_names.index(a) for a in mocap.target]).all()


def test_folder_reads_like_the_file(mocap, tmp_path):
    assert fetch_mocap6(path=MOCAP).frame.equals(mocap.frame)
    shutil.copy(MOCAP / "mocap6.mat", tmp_path / "mocap6.mat")
    assert fetch_mocap6(path=tmp_path).frame.equals(mocap.frame)


def test_path_problems_are_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        fetch_mocap6(path=tmp_path / "missing.mat")
    with pytest.raises(DatasetNotFoundError, match="mocap6.mat"):
        fetch_mocap6(path=tmp_path)
    (tmp_path / "text.mat").write_text("sequence,time\n")
    with pytest.raises(InputError, match="loadmat cannot read"):
        fetch_mocap6(path=tmp_path / "text.mat")
    savemat(tmp_path / "other.mat", {"X": np.zeros((3, 2))})
    with pytest.raises(InputError, match=r"lacks \['DataBySeq'"):
        fetch_mocap6(path=tmp_path / "other.mat")
    sequence = {"X": np.zeros((3, 2)), "TrueZ": np.array([1, 2, 1]), "filename": "a", "framerate": 10}
    names = {"ChannelNames": np.array(["c1", "c2", "c3"], dtype=object), "ActionNames": np.array(["x", "y"], dtype=object)}
    savemat(tmp_path / "narrow.mat", {"DataBySeq": np.array([sequence]), **names})
    with pytest.raises(InputError, match="3 channels"):
        fetch_mocap6(path=tmp_path / "narrow.mat")
    sequence["X"], sequence["TrueZ"] = np.zeros((3, 3)), np.array([1, 3, 1])
    savemat(tmp_path / "labels.mat", {"DataBySeq": np.array([sequence]), **names})
    with pytest.raises(InputError, match=r"outside 1\.\.2"):
        fetch_mocap6(path=tmp_path / "labels.mat")
