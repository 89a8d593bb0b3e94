"""Real measured data: the shipped lynx–hare counts and the fetched Schmidt & Lipson pendulum."""

from __future__ import annotations

import io
import zipfile
import zlib
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import describe_problem, input_error
from ._fetch import DatasetNotFoundError, PathLike, RemoteFile, dataset_source

LYNX_HARE_FILE = "hudson-bay-lynx-hare.csv"

# sha256 from the dataset card of the byte-for-byte copy of the archive (blob
# 90180d5 of Physics-aware-AI/Symplectic-ODENet); the URL pins that commit.
PENDULUM_ARCHIVE = RemoteFile(
    filename="invar_datasets.zip",
    url=(
        "https://raw.githubusercontent.com/Physics-aware-AI/Symplectic-ODENet/"
        "5e83faf93e8f4990e63821c49d0ce5926a96cc94/experiment-real/invar_datasets.zip"
    ),
    sha256="9794ee02f45403f87b739cc235a046bd424a73b8222067165f66463cef57be59",
)
PENDULUM_MEMBER = "real_pend_h_1.txt"


def read_description(name: str) -> str:
    """The dataset card ``name``.md shipped with the package."""
    return files("dynlearn.datasets").joinpath("data", "descr", f"{name}.md").read_text(encoding="utf-8")


def load_lynx_hare() -> Bunch:
    """Hudson's Bay Company snowshoe hare and lynx pelts, 1900–1920.

    The classic predator–prey series (Lotka–Volterra): pelts collected per
    year, in thousands, shipped with the package.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (21, 4)
            Columns ``series_id`` (0: one series), ``time`` (the year, int),
            ``hare`` and ``lynx`` (thousands of pelts).
        feature_names : list of str
            ``["hare", "lynx"]``.
        description : str
            The dataset card: source, licence, citation.

    Examples
    --------
    >>> from dynlearn.datasets import load_lynx_hare
    >>> load_lynx_hare().frame.shape
    (21, 4)
    """
    raw = files("dynlearn.datasets").joinpath("data", LYNX_HARE_FILE).read_bytes()
    table = pd.read_csv(io.BytesIO(raw), comment="#", skipinitialspace=True)
    frame = pd.DataFrame(
        {
            ID_COLUMN: np.zeros(len(table), dtype=np.int64),
            TIME_COLUMN: table["Year"].to_numpy(),
            "hare": table["Hare"].to_numpy(dtype=np.float64),
            "lynx": table["Lynx"].to_numpy(dtype=np.float64),
        }
    )
    return Bunch(frame=frame, feature_names=["hare", "lynx"], description=read_description("lynx_hare"))


def fetch_real_pendulum(
    *, data_home: PathLike | None = None, download_if_missing: bool = True, path: PathLike | None = None
) -> Bunch:
    """The real pendulum of Schmidt & Lipson (2009), motion-tracked.

    The "real pendulum" task of Hamiltonian Neural Networks (Greydanus et al.,
    2019): ``real_pend_h_1.txt`` from the supplementary archive
    ``invar_datasets.zip``, downloaded once into the cache.

    ``q`` is the measured angle θ (radians, unwrapped, so it may pass ±π) and
    ``p`` the angular velocity ω (rad/s) as the file gives it; they are the
    file's third and fourth columns, used unchanged as ``(q, p)`` by
    Greydanus et al. Their training targets ``dq/dt, dp/dt`` are finite
    differences of consecutive rows, which this loader leaves to the user.

    Parameters
    ----------
    data_home : str or Path, default=None
        Cache folder; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise :class:`DatasetNotFoundError` instead of downloading.
    path : str or Path, default=None
        A local ``invar_datasets.zip``, ``real_pend_h_1.txt``, or a folder
        holding either; used instead of the cache and never modified.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (556, 4)
            Columns ``series_id`` (the file's trial index, 0), ``time``
            (seconds, on a 1/6 s grid from 5.0 to 99.5 with 12 frames
            missing), ``q``, ``p``.
        feature_names : list of str
            ``["q", "p"]``.
        description : str
            The dataset card: source, licence, citation.

    Examples
    --------
    >>> from dynlearn.datasets import fetch_real_pendulum
    >>> fetch_real_pendulum().frame.shape  # doctest: +SKIP
    (556, 4)
    """
    source = dataset_source(PENDULUM_ARCHIVE, "lipson_pendulum", data_home, download_if_missing, path)
    frame = _pendulum_frame(_pendulum_text(source), source)
    return Bunch(frame=frame, feature_names=["q", "p"], description=read_description("real_pendulum"))


def _pendulum_text(source: Path) -> str:
    if source.is_dir():
        for name in (PENDULUM_MEMBER, PENDULUM_ARCHIVE.filename):
            if (source / name).is_file():
                return _pendulum_text(source / name)
        raise DatasetNotFoundError(
            describe_problem(
                "path",
                f"a folder holding {PENDULUM_MEMBER} or {PENDULUM_ARCHIVE.filename}",
                f"{str(source)!r} without either",
                "Pass the file itself, or leave path=None to download it.",
            )
        )
    try:
        if not zipfile.is_zipfile(source):
            return source.read_bytes().decode("ascii")
        with zipfile.ZipFile(source) as archive:
            if PENDULUM_MEMBER not in archive.namelist():
                raise input_error(
                    "path",
                    f"a zip holding {PENDULUM_MEMBER}",
                    f"{str(source)!r} with members {archive.namelist()[:10]}",
                    f"Pass the original {PENDULUM_ARCHIVE.filename}.",
                )
            return archive.read(PENDULUM_MEMBER).decode("ascii")
    except (UnicodeDecodeError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise input_error(
            "path",
            f"{PENDULUM_ARCHIVE.filename} or {PENDULUM_MEMBER}: ASCII text, zipped or not",
            f"{str(source)!r}, which is damaged or another file ({type(error).__name__}: {error})",
            f"Pass the original {PENDULUM_ARCHIVE.filename}, or leave path=None to download it.",
        ) from None


def _pendulum_frame(text: str, source: Path) -> pd.DataFrame:
    try:
        table = np.loadtxt(io.StringIO(text), comments="%", ndmin=2)
    except ValueError as error:
        raise input_error(
            "path", "whitespace-separated numbers after a '%' header", f"{str(source)!r} ({error})",
            f"Pass the original {PENDULUM_MEMBER}.",
        ) from None
    if table.shape[1] != 4:
        raise input_error(
            "path", "4 columns (trial, t, theta, omega)", f"{table.shape[1]} columns in {str(source)!r}",
            f"Pass the original {PENDULUM_MEMBER}.",
        )
    return pd.DataFrame(
        {ID_COLUMN: table[:, 0].astype(np.int64), TIME_COLUMN: table[:, 1], "q": table[:, 2], "p": table[:, 3]}
    )
