"""The Cascaded Tanks benchmark: a real two-tank system driven by a pump voltage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import input_error
from ._fetch import PathLike, RemoteFile, dataset_source, file_in_folder
from ._real import read_description

# The file as redistributed with the code of Forgione & Piga (2021); the sha256 pins its content.
TANKS_FILE = RemoteFile(
    filename="dataBenchmark.csv",
    url="https://raw.githubusercontent.com/forgi86/sysid-neural-continuous/master/examples/CTS/data/dataBenchmark.csv",
    sha256="ef2388ed822f3aef4aa80d6b0f2b466dd80b361786b3eafc7a2957c31ea323a7",
)
_COLUMNS = ("uEst", "uVal", "yEst", "yVal", "Ts")
RECORDS = {"estimation": ("uEst", "yEst"), "validation": ("uVal", "yVal")}


def load_cascaded_tanks(
    *, data_home: PathLike | None = None, download_if_missing: bool = True, path: PathLike | None = None
) -> Bunch:
    """The Cascaded Tanks system-identification benchmark (Schoukens et al., 2016).

    Two stacked tanks: the pump voltage ``u`` fills the upper tank, which
    drains into the lower one, whose level sensor gives ``y``; the upper
    tank's level is not measured, and it overflows at high levels. Two
    records of 1,024 samples every 4 s: ``"estimation"`` (to fit on) and
    ``"validation"`` (to simulate from its input alone). Downloaded once
    into the cache and checked against a pinned sha256.

    Parameters
    ----------
    data_home : str or Path, default=None
        Cache folder; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise :class:`DatasetNotFoundError` instead of downloading.
    path : str or Path, default=None
        A local ``dataBenchmark.csv`` or a folder holding it; used instead
        of the cache and never modified.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (2048, 4)
            Columns ``series_id`` (``"estimation"``, ``"validation"``),
            ``time`` (seconds from the start of each record), ``u`` (pump
            input, V) and ``y`` (lower tank level sensor, V).
        feature_names : list of str
            ``["u", "y"]``.
        input_names, output_names : list of str
            ``["u"]`` (known input) and ``["y"]`` (measured output).
        sampling_time : float
            4.0 seconds.
        description : str
            The dataset card: source, licence, citation, published results.

    Examples
    --------
    >>> from dynlearn.datasets import load_cascaded_tanks
    >>> load_cascaded_tanks().frame.shape  # doctest: +SKIP
    (2048, 4)
    """
    source = file_in_folder(dataset_source(TANKS_FILE, "cascaded_tanks", data_home, download_if_missing, path),
                            TANKS_FILE.filename)
    frame, sampling_time = _tanks_frame(source)
    return Bunch(frame=frame, feature_names=["u", "y"], input_names=["u"], output_names=["y"],
                 sampling_time=sampling_time, description=read_description("cascaded_tanks"))


def _tanks_frame(source: Path) -> tuple[pd.DataFrame, float]:
    try:
        table = pd.read_csv(io.BytesIO(source.read_bytes()))
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise input_error("path", "the benchmark's dataBenchmark.csv", f"{str(source)!r}, unreadable ({error})",
                          "Pass the original file, or leave path=None to download it.") from None
    absent = [c for c in _COLUMNS if c not in table.columns]
    if absent or len(table) == 0:
        raise input_error("path", f"a CSV with columns {list(_COLUMNS)}", f"{str(source)!r} with columns "
                          f"{list(table.columns)[:8]}", "Pass the original dataBenchmark.csv.")
    sampling_time = float(table["Ts"].iloc[0])
    times = np.arange(len(table)) * sampling_time
    records = [
        pd.DataFrame({ID_COLUMN: name, TIME_COLUMN: times, "u": table[u].to_numpy(dtype=float),
                      "y": table[y].to_numpy(dtype=float)})
        for name, (u, y) in RECORDS.items()
    ]
    return pd.concat(records, ignore_index=True), sampling_time
