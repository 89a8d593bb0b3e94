"""CMU motion capture: the six exercise sequences of the "mocap6" set (Fox, Hughes, Sudderth & Jordan, 2014)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import input_error
from ._fetch import PathLike, RemoteFile, dataset_source, file_in_folder
from ._real import read_description

# The MATLAB file of github.com/michaelchughes/mocap6dataset; the URL pins the
# commit the dataset card names, the hash is of that file's bytes.
MOCAP6_FILE = RemoteFile(
    filename="mocap6.mat",
    url="https://raw.githubusercontent.com/michaelchughes/mocap6dataset/0fbfc4d2e13c55e30970aaebc73c90092679f4e1/mocap6.mat",
    sha256="475b3c4a23d241d185131d131939149df3928b1a18ea2394c25b5362b2e4efdf",
)
# What each sequence of the file's ``DataBySeq`` struct array must hold.
SEQUENCE_FIELDS = ("X", "TrueZ", "filename", "framerate")


def fetch_mocap6(
    *, data_home: PathLike | None = None, download_if_missing: bool = True, path: PathLike | None = None
) -> Bunch:
    """CMU motion capture: six exercise sequences of 12 joint channels at 10 fps, with action labels.

    The "mocap6" set of Fox, Hughes, Sudderth & Jordan (2014): sequences
    13_29, 13_30, 13_31, 14_06, 14_14 and 14_20 of subjects 13 and 14 of the
    CMU Graphics Lab Motion Capture Database, block-averaged from 120 to 10
    frames per second and centred, every frame labelled with one of 12
    exercises. ``mocap6.mat`` (383 KB) is
    downloaded once into the cache.

    Parameters
    ----------
    data_home : str or Path, default=None
        Cache folder; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise :class:`DatasetNotFoundError` instead of downloading.
    path : str or Path, default=None
        A local ``mocap6.mat``, or a folder holding it; used instead of the
        cache and never modified.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (2058, 14)
            Columns ``series_id`` (the sequence, e.g. ``"13_29"``), ``time``
            (seconds from the sequence's first frame, 0.1 s apart) and the
            12 channels of ``feature_names``.
        target : Series of shape (2058,)
            The action of each row of ``frame`` (one of ``action_names``).
        feature_names : list of str
            The channels, as the file names them: ``root.ty`` (a
            translation) and 11 joint angles (degrees), e.g.
            ``lowerback.rx``.
        action_names : list of str
            The 12 actions (``JumpJack``, ``Jog``, ``Squat``, ...).
        description : str
            The dataset card: source, licence, citation.

    Examples
    --------
    >>> from dynlearn.datasets import fetch_mocap6
    >>> fetch_mocap6().frame.shape  # doctest: +SKIP
    (2058, 14)
    """
    source = dataset_source(MOCAP6_FILE, "cmu_mocap6", data_home, download_if_missing, path)
    source = file_in_folder(source, MOCAP6_FILE.filename)
    frame, target, channels, actions = _mocap6_tables(_read_mat(source), source)
    return Bunch(
        frame=frame,
        target=target,
        feature_names=channels,
        action_names=actions,
        description=read_description("mocap6"),
    )


def _read_mat(source: Path) -> dict[str, Any]:
    """The MATLAB file's variables, or an error naming ``path`` when it is not one."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(source, squeeze_me=True, struct_as_record=False)
    except (MatReadError, ValueError, OSError, NotImplementedError) as error:  # v7.3 (HDF5) files: NotImplementedError
        raise input_error(
            "path",
            f"the MATLAB file {MOCAP6_FILE.filename} of the mocap6 dataset",
            f"{str(source)!r}, which scipy.io.loadmat cannot read ({error})",
            "Pass the original file, or leave path=None to download it.",
        ) from None


def _not_mocap6(source: Path, received: str) -> Exception:
    return input_error(
        "path",
        f"{MOCAP6_FILE.filename} with 'DataBySeq' (fields {', '.join(SEQUENCE_FIELDS)}), 'ChannelNames' and "
        "'ActionNames'",
        f"{str(source)!r}, {received}",
        "Pass the original file, or leave path=None to download it.",
    )


def _mocap6_tables(mat: dict[str, Any], source: Path) -> tuple[pd.DataFrame, pd.Series, list[str], list[str]]:
    """The long frame, the per-row actions, the channel and the action names of the file's variables."""
    missing = [name for name in ("DataBySeq", "ChannelNames", "ActionNames") if name not in mat]
    if missing:
        raise _not_mocap6(source, f"which lacks {missing}")
    channels = [str(name) for name in np.atleast_1d(mat["ChannelNames"])]
    actions = [str(name) for name in np.atleast_1d(mat["ActionNames"])]
    frames, labels = [], []
    for sequence in np.atleast_1d(mat["DataBySeq"]):
        fields = getattr(sequence, "_fieldnames", [])
        if any(field not in fields for field in SEQUENCE_FIELDS):
            raise _not_mocap6(source, f"whose sequences have the fields {fields}")
        values = np.atleast_2d(np.asarray(sequence.X, dtype=np.float64))
        codes = np.atleast_1d(np.asarray(sequence.TrueZ)).astype(np.int64)
        if values.shape[1] != len(channels) or len(codes) != len(values):
            raise _not_mocap6(
                source,
                f"whose sequence {sequence.filename!r} has {values.shape} values and {len(codes)} labels for "
                f"{len(channels)} channels",
            )
        if codes.min() < 1 or codes.max() > len(actions):
            raise _not_mocap6(source, f"whose sequence {sequence.filename!r} has labels outside 1..{len(actions)}")
        frame = pd.DataFrame(values, columns=channels)
        frame.insert(0, TIME_COLUMN, np.arange(len(values)) / float(sequence.framerate))
        frame.insert(0, ID_COLUMN, str(sequence.filename))
        frames.append(frame)
        labels.append(np.asarray(actions, dtype=object)[codes - 1])
    frame = pd.concat(frames, ignore_index=True)
    target = pd.Series(np.concatenate(labels), name="action")
    return frame, target, channels, actions
