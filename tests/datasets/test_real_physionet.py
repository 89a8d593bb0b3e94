"""PhysioNet/CinC 2012 on the real 400-record slice of set A, checked against the raw files."""

from __future__ import annotations

import csv
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dynlearn.data import check_series
from dynlearn.datasets import DatasetNotFoundError, fetch_physionet2012
from dynlearn.datasets._physionet import TIME_SERIES
from dynlearn.exceptions import InputError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SLICE = SHARED_DATA / "physionet2012_seta_slice"
pytestmark = pytest.mark.skipif(not SLICE.is_dir(), reason="shared real data folder is absent")
DESCRIPTORS = {"Age", "Gender", "Height", "ICUType", "Weight"}


def read_raw(file: Path) -> tuple[dict[str, float], dict[tuple[float, str], list[float]]]:
    """Descriptors and observations of one record file, read line by line with the csv module."""
    with open(file, newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["Time", "Parameter", "Value"]
    descriptors: dict[str, float] = {}
    observations: dict[tuple[float, str], list[float]] = {}
    for stamp, parameter, value in lines[1:]:
        if parameter == "RecordID":
            continue
        if stamp == "00:00" and parameter in DESCRIPTORS and parameter not in descriptors:
            descriptors[parameter] = float(value)
            continue
        if float(value) == -1:
            continue
        hours, minutes = stamp.split(":")
        observations.setdefault((int(hours) + int(minutes) / 60, parameter), []).append(float(value))
    return descriptors, observations


@pytest.fixture(scope="module")
def physionet():
    return fetch_physionet2012("a", path=SLICE)


@pytest.fixture(scope="module")
def raw():
    return {int(f.stem): read_raw(f) for f in sorted((SLICE / "set-a").glob("*.txt"))}


def test_all_400_records_with_aligned_outcomes(physionet, raw):
    assert list(physionet.static.index) == sorted(raw)
    assert physionet.static.index.name == "RecordID"
    assert list(physionet.outcomes.index) == list(physionet.static.index)
    with open(SLICE / "Outcomes-a.txt", newline="") as handle:
        expected = {int(row["RecordID"]): row for row in csv.DictReader(handle)}
    for record_id, row in physionet.outcomes.iterrows():
        source = expected[record_id]
        assert row["In-hospital_death"] == int(source["In-hospital_death"])
        assert row["Survival"] == int(source["Survival"]) and row["SAPS-I"] == int(source["SAPS-I"])
    assert physionet.outcomes["In-hospital_death"].sum() == 52


def test_observation_counts_match_the_raw_files(physionet, raw):
    frame = physionet.frame
    assert list(frame.columns) == ["series_id", "time", *TIME_SERIES]
    counts = frame.set_index("series_id")[list(TIME_SERIES)].notna().groupby(level=0).sum().sum(axis=1)
    expected = {record_id: len(observations) for record_id, (_, observations) in raw.items()}
    assert counts.to_dict() == expected
    assert frame["time"].max() <= 48.0 and frame["time"].min() >= 0.0


def test_values_and_times_match_the_raw_files(physionet, raw):
    frame = physionet.frame.set_index(["series_id", "time"])
    for record_id in list(raw)[::40]:
        _, observations = raw[record_id]
        assert set(frame.loc[record_id].index) == {time for time, _ in observations}
        for (time, parameter), values in observations.items():
            assert frame.loc[(record_id, time), parameter] == pytest.approx(np.mean(values))


def test_repeated_values_at_one_time_are_averaged(physionet, raw):
    frame = physionet.frame.set_index(["series_id", "time"])
    repeated = [(r, key, v) for r, (_, obs) in raw.items() for key, v in obs.items() if len(v) > 1]
    assert repeated, "the slice holds repeated measurements"
    for record_id, (time, parameter), values in repeated[:50]:
        assert frame.loc[(record_id, time), parameter] == pytest.approx(np.mean(values))


def test_descriptors_with_missing_as_nan(physionet, raw):
    static = physionet.static
    assert list(static.columns) == ["Age", "Gender", "Height", "ICUType", "Weight"]
    for record_id, (descriptors, _) in raw.items():
        for name, value in descriptors.items():
            if value == -1:
                assert np.isnan(static.loc[record_id, name])
            else:
                assert static.loc[record_id, name] == value
    assert static["Height"].isna().sum() == sum(d["Height"] == -1 for d, _ in raw.values())


def test_frame_passes_the_data_entry_point(physionet):
    batch = check_series(physionet.frame)
    assert batch.values.shape[0] == 400 and batch.values.shape[2] == 37
    assert 0 < batch.mask.mean() < 0.2  # sparse, as ICU records are


def test_quantization_rounds_times_and_averages_values(physionet, raw):
    quantized = fetch_physionet2012("a", path=SLICE, quantization=0.1).frame
    steps = quantized["time"] / 0.1
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert not quantized.duplicated(["series_id", "time"]).any()
    assert len(quantized) < len(physionet.frame)
    record_id = int(quantized["series_id"].iloc[0])
    bins: dict[tuple[float, str], list[float]] = {}
    for (time, parameter), values in raw[record_id][1].items():
        bins.setdefault((round(np.round(time / 0.1) * 0.1, 9), parameter), []).extend(values)
    record = quantized[quantized["series_id"] == record_id].set_index("time")
    record.index = np.round(record.index, 9)
    for (time, parameter), values in bins.items():
        assert record.loc[time, parameter] == pytest.approx(np.mean(values))
    check_series(quantized)


def test_local_archive_reads_like_the_folder(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(SLICE / "Outcomes-a.txt", local)
    first = sorted((SLICE / "set-a").glob("*.txt"))[:3]
    with tarfile.open(local / "set-a.tar.gz", "w:gz") as bundle:
        for file in first:
            bundle.add(file, arcname=f"set-a/{file.name}")
    from_archive = fetch_physionet2012("a", path=local, data_home=tmp_path / "cache")
    (local / "set-a").mkdir()
    for file in first:
        shutil.copy(file, local / "set-a")
    from_folder = fetch_physionet2012("a", path=local)
    assert from_archive.frame.equals(from_folder.frame)
    assert list(from_archive.static.index) == [int(f.stem) for f in first]
    assert not (tmp_path / "cache").exists()  # a local path never touches the cache


def test_arguments_and_layout_problems_are_explained(tmp_path):
    with pytest.raises(InputError, match="subset"):
        fetch_physionet2012("d", path=SLICE)
    for quantization in (0, -0.1, float("nan"), "0.1"):
        with pytest.raises(InputError, match="quantization"):
            fetch_physionet2012("a", path=SLICE, quantization=quantization)
    with pytest.raises(DatasetNotFoundError, match="Outcomes-b.txt"):
        fetch_physionet2012("b", path=SLICE)
    (tmp_path / "set-a").mkdir()
    shutil.copy(SLICE / "Outcomes-a.txt", tmp_path)
    (tmp_path / "set-a" / "1.txt").write_text("Time,Parameter,Value\n00:00,Age,54\n")
    with pytest.raises(InputError, match="RecordID"):
        fetch_physionet2012("a", path=tmp_path)
    (tmp_path / "set-a" / "1.txt").write_text("Time,Parameter,Value\n00:00,RecordID,1\n00:05,Pulse,80\n")
    with pytest.raises(InputError, match="Pulse"):
        fetch_physionet2012("a", path=tmp_path)
