"""UCI person activity, from small files written in the exact original format."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from dynlearn.data import check_series
from dynlearn.datasets import DatasetNotFoundError, fetch_person_activity
from dynlearn.exceptions import InputError

ANKLE_LEFT, ANKLE_RIGHT, CHEST, BELT = "010-000-024-033", "010-000-030-096", "020-000-033-111", "020-000-032-221"
T0 = 633790226051280329  # .NET ticks of the first row of A01
T1 = 633790226400000000  # first row of B02


def line(sequence: str, tag: str, ticks: int, xyz: tuple[float, float, float], activity: str) -> str:
    return f"{sequence},{tag},{ticks},27.05.2009 14:03:25:127,{xyz[0]},{xyz[1]},{xyz[2]},{activity}\n"


LINES = [
    line("A01", ANKLE_LEFT, T0, (4.062931060791016, 1.8924342393875122, 0.5074254274368286), "walking"),
    line("A01", CHEST, T0, (4.1, 1.9, 1.3), "walking"),
    line("A01", ANKLE_RIGHT, T0 + 270_005, (4.2, 2.0, 0.4), "walking"),
    line("A01", BELT, T0 + 540_010, (4.3, 2.1, 1.0), "walking"),
    line("A01", ANKLE_LEFT, T0 + 810_015, (4.0, 2.0, 0.6), "sitting down"),
    line("A01", ANKLE_LEFT, T0 + 810_015, (4.2, 2.2, 0.8), "sitting down"),
    line("B02", BELT, T1, (1.0, 1.0, 1.0), "lying down"),
    line("B02", CHEST, T1 + 10**7, (1.5, 1.5, 0.2), "standing up from sitting on the ground"),
]


@pytest.fixture
def activity_file(tmp_path: Path) -> Path:
    path = tmp_path / "ConfLongDemo_JSI.txt"
    path.write_text("".join(LINES), newline="\n")
    return path


def test_one_row_per_sequence_and_timestamp(activity_file):
    data = fetch_person_activity(path=activity_file)
    frame = data.frame
    places = ["ankle_left", "ankle_right", "chest", "belt"]
    assert list(frame.columns) == ["series_id", "time", *[f"{p}_{a}" for p in places for a in "xyz"]]
    assert data.feature_names == list(frame.columns[2:])
    assert frame["series_id"].tolist() == ["A01"] * 4 + ["B02"] * 2
    np.testing.assert_array_equal(frame["time"], [0.0, 0.0270005, 0.054001, 0.0810015, 0.0, 1.0])
    assert all(frame[c].dtype == np.float64 for c in data.feature_names)
    first = frame.iloc[0]
    assert first["ankle_left_x"] == 4.062931060791016 and first["chest_z"] == 1.3
    assert np.isnan(first["ankle_right_x"]) and np.isnan(first["belt_y"])
    # the left ankle reported twice at one timestamp: averaged
    np.testing.assert_allclose(frame.loc[3, ["ankle_left_x", "ankle_left_y", "ankle_left_z"]], [4.1, 2.1, 0.7])
    assert frame.iloc[:, 2:].notna().sum().sum() == 3 * 7


def test_activity_labels_are_aligned_with_rows(activity_file):
    data = fetch_person_activity(path=activity_file)
    assert data.target.index.equals(data.frame.index)
    assert data.target.tolist() == ["walking"] * 3 + ["sitting down", "lying down",
                                                      "standing up from sitting on the ground"]  # fmt: skip
    assert data.target.name == "activity" and data.target.dtype == "category"
    assert data.tags[CHEST] == "chest"
    assert "Kaluža" in data.description


def test_frame_passes_the_data_entry_point(activity_file):
    batch = check_series(fetch_person_activity(path=activity_file).frame)
    assert batch.values.shape == (2, 4, 12)
    assert list(batch.ids) == ["A01", "B02"]


def test_folder_and_zip_read_like_the_file(activity_file, tmp_path):
    expected = fetch_person_activity(path=activity_file).frame
    assert fetch_person_activity(path=activity_file.parent).frame.equals(expected)
    archive = tmp_path / "localization+data+for+person+activity.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(activity_file, "data/ConfLongDemo_JSI.txt")
    assert fetch_person_activity(path=archive).frame.equals(expected)


@pytest.mark.parametrize(
    "content, message",
    [
        (LINES[0].replace(ANKLE_LEFT, "999-000-000-000"), "unknown tags"),
        (LINES[0].replace(",walking", ",walking,extra"), "8 comma-separated fields"),
        (LINES[0].replace(",walking", ""), "missing fields"),
        (LINES[0].replace(str(T0), "27.05.2009"), "8 comma-separated fields"),
    ],
    ids=["unknown tag", "extra field", "missing field", "bad timestamp"],
)
def test_files_not_in_the_original_format_are_refused(tmp_path, content, message):
    path = tmp_path / "ConfLongDemo_JSI.txt"
    path.write_text(LINES[1] + content)
    with pytest.raises(InputError, match=message):
        fetch_person_activity(path=path)


def test_missing_local_copies_are_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        fetch_person_activity(path=tmp_path / "nowhere.txt")
    with pytest.raises(DatasetNotFoundError, match="ConfLongDemo_JSI.txt"):
        fetch_person_activity(path=tmp_path)
