"""The shipped Hudson's Bay lynx–hare data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from dynlearn.data import check_series
from dynlearn.datasets import load_lynx_hare

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_lynx_hare_is_the_annual_series_1900_to_1920():
    data = load_lynx_hare()
    frame = data.frame
    assert list(frame.columns) == ["series_id", "time", "hare", "lynx"]
    assert frame["time"].tolist() == list(range(1900, 1921))
    assert (frame["series_id"] == 0).all()
    assert frame.loc[0, ["hare", "lynx"]].tolist() == [30.0, 4.0]
    assert frame.loc[20, ["hare", "lynx"]].tolist() == [24.7, 8.6]
    assert data.feature_names == ["hare", "lynx"]
    assert "Hudson's Bay" in data.description and "Carpenter" in data.description


def test_lynx_hare_passes_the_data_entry_point():
    batch = check_series(load_lynx_hare().frame)
    assert batch.values.shape == (1, 21, 2)
    assert np.all(batch.mask)


@pytest.mark.skipif(not (SHARED_DATA / "lynx_hare_hbc").is_dir(), reason="shared real data folder is absent")
def test_shipped_file_is_the_original_bytes():
    shipped = files("dynlearn.datasets").joinpath("data", "hudson-bay-lynx-hare.csv").read_bytes()
    assert shipped == (SHARED_DATA / "lynx_hare_hbc" / "hudson-bay-lynx-hare.csv").read_bytes()
