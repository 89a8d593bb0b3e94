"""UCI Localization Data for Person Activity: positions of four body tags, with activity labels."""

from __future__ import annotations

import io
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import InputError, input_error
from ._fetch import PathLike, RemoteFile, dataset_source, file_in_folder
from ._real import read_description

# Tag id -> where it was worn, in the order of the UCI description.
TAGS = {
    "010-000-024-033": "ankle_left",
    "010-000-030-096": "ankle_right",
    "020-000-033-111": "chest",
    "020-000-032-221": "belt",
}
FEATURE_NAMES = [f"{place}_{axis}" for place in TAGS.values() for axis in "xyz"]
TICKS_PER_SECOND = 10**7  # .NET ticks are 100 ns

# No SHA-256 of this file is published; this MD5 is the one a public Latent
# ODE-based loader (adapted from rtqichen/time-series-datasets) checks the
# same URL against. No copy of the original file was at hand to compute a
# SHA-256 from, so none is pinned: pin one here once it is computed from a
# download that matches this MD5. Until then the cache stamp records the
# SHA-256 of the verified download beside the MD5 check.
ACTIVITY_FILE = RemoteFile(
    filename="ConfLongDemo_JSI.txt",
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00196/ConfLongDemo_JSI.txt",
    sha256=None,
    md5="280a677ae0d673ec9a50ada480d8a529",
)
_COLUMNS = ["sequence", "tag", "timestamp", "date", "x", "y", "z", "activity"]
_DTYPES = {"sequence": str, "tag": str, "timestamp": np.int64, "date": str, "x": float, "y": float, "z": float,
           "activity": str}  # fmt: skip


def fetch_person_activity(
    *, data_home: PathLike | None = None, download_if_missing: bool = True, path: PathLike | None = None
) -> Bunch:
    """UCI Localization Data for Person Activity (Kaluža et al., 2010).

    Five people, five recordings each (sequences ``A01`` … ``E05``), wore four
    radio tags (left ankle, right ankle, chest, belt) whose 3-D positions were
    recorded while they walked, sat, lay down, fell and got up. Tags report in
    turn, so at each time only some tags have a position: the series are
    irregular and partly observed. Used as the "human activity" task of Latent
    ODE (Rubanova et al., 2019). The file is downloaded once into the cache.

    Times are seconds since the first row of each sequence, computed exactly
    from the .NET tick timestamps (100 ns units); Latent ODE's 10 ms units are
    ``time * 100``. The file's date column repeats the timestamp at coarser
    resolution and is dropped.

    Parameters
    ----------
    data_home : str or Path, default=None
        Cache folder; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise :class:`DatasetNotFoundError` instead of downloading.
    path : str or Path, default=None
        A local ``ConfLongDemo_JSI.txt``, a folder holding it, or a zip with
        it; used instead of the cache and never modified.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (n_rows, 14)
            Columns ``series_id`` (the sequence, e.g. ``"A01"``), ``time``
            (seconds) and the 12 coordinates ``ankle_left_x`` …
            ``belt_z`` (metres); one row per sequence and timestamp, NaN for
            tags that did not report then. A tag that reported twice at one
            timestamp is averaged. Sorted by sequence, then time.
        target : Series of shape (n_rows,)
            The activity label of each row (categorical, e.g. ``"walking"``,
            ``"lying down"``), aligned with ``frame``'s index; the label of
            the first report at that timestamp.
        feature_names : list of str
            The 12 coordinate columns.
        tags : dict
            Tag id -> body location.
        description : str
            The dataset card: source, licence, citation.

    Examples
    --------
    >>> from dynlearn.datasets import fetch_person_activity
    >>> data = fetch_person_activity()  # doctest: +SKIP
    >>> data.frame.series_id.nunique()  # doctest: +SKIP
    25
    """
    source = dataset_source(ACTIVITY_FILE, "person_activity", data_home, download_if_missing, path)
    rows = _read_rows(source)
    frame, target = _activity_frame(rows, source)
    return Bunch(
        frame=frame,
        target=target,
        feature_names=list(FEATURE_NAMES),
        tags=dict(TAGS),
        description=read_description("person_activity"),
    )


def _read_rows(source: Path) -> pd.DataFrame:
    source = file_in_folder(source, ACTIVITY_FILE.filename)
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [n for n in archive.namelist() if PurePosixPath(n).name == ACTIVITY_FILE.filename]
            if not members:
                raise input_error(
                    "path",
                    f"a zip holding {ACTIVITY_FILE.filename}",
                    f"{str(source)!r} with members {archive.namelist()[:10]}",
                    "Pass the UCI download, or the text file itself.",
                )
            try:
                data = archive.read(members[0])
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                raise _format_error(source, f"a damaged zip ({type(error).__name__}: {error})") from None
            return _parse(io.BytesIO(data), source)
    return _parse(source, source)


def _parse(handle: Path | io.BytesIO, source: Path) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            # pandas only warns when it drops extra fields; a line with more
            # than 8 fields means the file is not in the original format.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            rows = pd.read_csv(handle, header=None, names=_COLUMNS, dtype=_DTYPES, index_col=False)
    except (ValueError, pd.errors.ParserWarning) as error:
        raise _format_error(source, str(error)) from None
    incomplete = rows.isna().any(axis=1)
    if incomplete.any():
        raise _format_error(source, f"{int(incomplete.sum())} line(s) with empty or missing fields")
    return rows


def _format_error(source: Path, problem: str) -> InputError:
    return input_error(
        "path",
        "lines of 8 comma-separated fields: sequence,tag,timestamp,date,x,y,z,activity",
        f"{str(source)!r}: {problem}",
        f"Pass the original {ACTIVITY_FILE.filename}.",
    )


def _activity_frame(rows: pd.DataFrame, source: Path) -> tuple[pd.DataFrame, pd.Series]:
    unknown = sorted(set(rows["tag"].unique()) - set(TAGS))
    if unknown:
        raise _format_error(source, f"unknown tags {unknown[:10]}; the tags are {list(TAGS)}")
    # Integer tick offsets group exactly; seconds are derived afterwards.
    start = rows.groupby("sequence")["timestamp"].transform("min")
    rows = rows.assign(ticks=rows["timestamp"] - start, place=rows["tag"].map(TAGS))
    keys = ["sequence", "ticks"]
    wide = rows.groupby([*keys, "place"], sort=True)[["x", "y", "z"]].mean().unstack("place")
    wide.columns = [f"{place}_{axis}" for axis, place in wide.columns]
    wide = wide.reindex(columns=FEATURE_NAMES)
    labels = rows.groupby(keys, sort=True)["activity"].first().reindex(wide.index)
    frame = wide.reset_index().rename(columns={"sequence": ID_COLUMN})
    frame.insert(1, TIME_COLUMN, frame.pop("ticks") / TICKS_PER_SECOND)
    target = pd.Series(pd.Categorical(labels.to_numpy()), index=frame.index, name="activity")
    return frame, target
