"""Download machinery of the ``fetch_*`` functions.

Files are downloaded once into a cache folder, kept only if they match a
pinned checksum, and moved under their final name in one atomic rename, so
the cache never holds a partial or unverified file under a name a later call
would trust. Archives are extracted without letting any member escape the
target folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Union

from ..exceptions import DynlearnError, describe_problem, input_error

PathLike = Union[str, os.PathLike]

DATA_HOME_VARIABLE = "DYNLEARN_DATA"
_DEFAULT_DATA_HOME = "~/dynlearn_data"
_CHUNK_BYTES = 1 << 20
_TIMEOUT_SECONDS = 60  # a server silent this long is treated as a failed download
# Python versions that have it also apply tarfile's own "data" filter, and
# without it 3.12-3.13 warn about the old, unsafe default.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class DatasetNotFoundError(DynlearnError, FileNotFoundError):
    """A dataset is neither cached nor at the given path, and may not be downloaded."""


class DownloadError(DynlearnError, OSError):
    """A download failed; nothing was kept under the file's final name."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its pinned checksum; it was discarded."""


class UnsafeArchiveError(DynlearnError, ValueError):
    """An archive member would land outside the target folder, or is a link or device."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its name in the cache, its address and its checksum.

    Parameters
    ----------
    filename : str
        Name of the file inside the dataset's cache folder (no folders).
    url : str
        Address it is downloaded from.
    sha256 : str or None
        Hex SHA-256 digest the download must have to be kept.
    md5 : str, default=None
        Hex MD5 digest, checked instead where no SHA-256 of the original file
        is published.
    """

    filename: str
    url: str
    sha256: str | None
    md5: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None and self.md5 is None:
            raise ValueError(f"RemoteFile {self.filename!r} needs a sha256 (or, failing that, an md5) to check.")
        if PurePosixPath(self.filename).name != self.filename or "\\" in self.filename:
            raise ValueError(f"RemoteFile filename must be a plain file name; got {self.filename!r}.")

    @property
    def checksum(self) -> tuple[str, str]:
        """``(algorithm, expected hex digest)``, SHA-256 when known."""
        if self.sha256 is not None:
            return "sha256", self.sha256.lower()
        return "md5", str(self.md5).lower()


def get_data_home(data_home: PathLike | None = None) -> Path:
    """Folder where fetched datasets are cached, created if missing.

    Parameters
    ----------
    data_home : str or Path, default=None
        The folder to use. By default, the ``DYNLEARN_DATA`` environment
        variable, or ``~/dynlearn_data`` when it is unset or empty.

    Returns
    -------
    Path
        The cache folder, with ``~`` expanded.

    Examples
    --------
    >>> import tempfile
    >>> from dynlearn.datasets import get_data_home
    >>> get_data_home(tempfile.mkdtemp()).is_dir()
    True
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_VARIABLE) or _DEFAULT_DATA_HOME
    folder = Path(data_home).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def local_path(path: PathLike) -> Path:
    """``path`` as a Path, or :class:`DatasetNotFoundError` when nothing is there."""
    candidate = Path(path).expanduser()
    if not candidate.exists():
        raise DatasetNotFoundError(
            describe_problem(
                "path",
                "an existing file or folder holding the dataset in its original layout",
                f"{str(candidate)!r}, which does not exist",
                "Check the path, or leave path=None to download the data.",
            )
        )
    return candidate


def dataset_source(
    remote: RemoteFile, folder: str, data_home: PathLike | None, download_if_missing: bool, path: PathLike | None
) -> Path:
    """The user's ``path`` when given, else ``remote`` downloaded once into ``folder`` of the data home."""
    if path is not None:
        return local_path(path)
    return fetch_file(remote, get_data_home(data_home) / folder, download_if_missing)


def file_in_folder(source: Path, filename: str) -> Path:
    """``source`` itself, or its ``filename`` when it is a folder; :class:`DatasetNotFoundError` if that is absent."""
    if not source.is_dir():
        return source
    if not (source / filename).is_file():
        raise DatasetNotFoundError(
            describe_problem(
                "path",
                f"a folder holding {filename}",
                f"{str(source)!r} without it",
                "Pass the file itself, or leave path=None to download it.",
            )
        )
    return source / filename


def fetch_file(remote: RemoteFile, data_home: PathLike, download_if_missing: bool = True) -> Path:
    """Path of ``remote`` in the folder ``data_home``, downloading it the first time.

    The download goes to a temporary file in the same folder, is checked
    against the pinned checksum, and only then renamed to its final name. On
    any failure (network error, interruption, checksum mismatch) the
    temporary file is removed and the folder is left as it was.

    Parameters
    ----------
    remote : RemoteFile
        What to fetch.
    data_home : str or Path
        Folder the file is cached in; created when the download starts.
    download_if_missing : bool, default=True
        Download the file when it is not cached yet; if False, raise instead.

    Returns
    -------
    Path
        The cached file.

    Raises
    ------
    DatasetNotFoundError
        If the file is not cached and ``download_if_missing`` is False.
    DownloadError
        If the download fails.
    ChecksumError
        If the downloaded bytes do not match the pinned checksum.
    """
    folder = Path(data_home)
    target = folder / remote.filename
    if target.is_file():
        return target
    if not download_if_missing:
        raise DatasetNotFoundError(
            describe_problem(
                "download_if_missing",
                f"a cached copy of {remote.filename} in {str(folder)!r}",
                "download_if_missing=False and no cached copy",
                f"Pass download_if_missing=True to download it from {remote.url}, "
                "or pass path= with a local copy.",
            )
        )
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _download(remote, target)
    except BaseException:
        _remove_empty(created)
        raise
    return target


def fetch_archive(remote: RemoteFile, data_home: PathLike, entry: str, download_if_missing: bool = True) -> Path:
    """Path of ``entry``, a top-level member of the archive ``remote``, extracted into ``data_home``.

    The archive is fetched with :func:`fetch_file` and extracted with
    :func:`extract_archive` the first time. If extraction fails, an archive
    downloaded by this call is removed again, so the cache is left as it was.

    Parameters
    ----------
    remote : RemoteFile
        The archive.
    data_home : str or Path
        Folder the archive is cached and extracted in.
    entry : str
        Top-level file or folder of the archive that the caller needs.
    download_if_missing : bool, default=True
        Download the archive when it is not cached yet; if False, raise instead.

    Returns
    -------
    Path
        ``data_home / entry``.
    """
    folder = Path(data_home)
    target = folder / entry
    if target.exists():
        return target
    created = _missing_folders(folder)
    archive = folder / remote.filename
    downloaded_now = not archive.is_file()
    fetch_file(remote, folder, download_if_missing)
    try:
        extract_archive(archive, folder)
    except BaseException:
        if downloaded_now:
            archive.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    if not target.exists():
        raise DatasetNotFoundError(
            describe_problem(
                f"archive {str(archive)!r}",
                f"a top-level entry {entry!r}",
                f"entries {sorted(p.name for p in folder.iterdir())}",
                f"Remove {archive.name} from the cache and fetch again.",
            )
        )
    return target


def extract_archive(archive: PathLike, folder: PathLike) -> list[Path]:
    """Extract a zip or tar archive into ``folder``, refusing unsafe members.

    Every member is checked before anything is written: absolute paths,
    ``..`` components, links and device files are refused. Members are
    extracted into a temporary folder inside ``folder`` and each top-level
    entry is then moved into place whole, so an interrupted extraction never
    leaves a partial entry under its final name.

    Parameters
    ----------
    archive : str or Path
        A ``.zip`` or (optionally compressed) ``.tar`` file.
    folder : str or Path
        Where the archive's top-level entries go; created if missing. None of
        them may exist there yet.

    Returns
    -------
    list of Path
        The extracted top-level entries.

    Raises
    ------
    UnsafeArchiveError
        If a member would land outside ``folder`` or is a link or device.
    InputError
        If ``archive`` is neither a zip nor a tar file, or an entry exists.
    """
    archive, folder = Path(archive), Path(folder)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                _check_member_name(archive, name)
            return _extract_atomically(folder, bundle.extractall)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            for member in members:
                _check_tar_member(archive, member)
            return _extract_atomically(folder, lambda into: bundle.extractall(into, members=members, **_TAR_FILTER))
    raise input_error(
        "archive", "a zip or tar file", f"{str(archive)!r}, which is neither", "Pass the archive as distributed."
    )


# ----------------------------------------------------------------- internals
def _download(remote: RemoteFile, target: Path) -> None:
    """Stream ``remote.url`` into a temporary file beside ``target``; rename it once verified."""
    algorithm, expected = remote.checksum
    digest = hashlib.new(algorithm)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(remote.url, timeout=_TIMEOUT_SECONDS) as response:
                    for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"Downloading {remote.filename} from {remote.url} failed ({type(error).__name__}: {error}); "
                    f"nothing was kept in {str(target.parent)!r}. Check the connection and try again, or "
                    "download the file yourself and pass path=."
                ) from error
        received = digest.hexdigest()
        if received != expected:
            raise ChecksumError(
                describe_problem(
                    f"{remote.filename} downloaded from {remote.url}",
                    f"{algorithm} {expected}",
                    f"{algorithm} {received}",
                    "The download was discarded. Try again; if it keeps failing the file has changed at its "
                    "source: download it yourself, check it, and pass its location as path=.",
                )
            )
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    return [p for p in (folder, *folder.parents) if not p.exists()]


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this call created (deepest first), stopping at one that is not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_member_name(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts:
        raise UnsafeArchiveError(
            describe_problem(
                f"member {name!r} of {str(archive)!r}",
                "a relative path that stays inside the extraction folder",
                "an absolute path or one with '..'",
                "Nothing was extracted. Do not trust this archive; obtain it again from its source.",
            )
        )


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    _check_member_name(archive, member.name)
    if not (member.isfile() or member.isdir()):
        # Links are refused outright: checking where a chain of links
        # resolves is easy to get wrong, and the datasets hold none.
        kind = f"a link to {member.linkname!r}" if member.issym() or member.islnk() else "a device or special file"
        raise UnsafeArchiveError(
            describe_problem(
                f"member {member.name!r} of {str(archive)!r}",
                "regular files and folders only",
                kind,
                "Nothing was extracted. Do not trust this archive; obtain it again from its source.",
            )
        )


def _extract_atomically(folder: Path, extract: Callable[[Path], object]) -> list[Path]:
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extracting-"))
    try:
        extract(staging)
        entries = sorted(staging.iterdir())
        clashes = [entry.name for entry in entries if (folder / entry.name).exists()]
        if clashes:
            raise input_error(
                "folder",
                "no existing entries named like the archive's top-level entries",
                f"{clashes} already in {str(folder)!r}",
                "Remove them, or extract into another folder.",
            )
        for entry in entries:
            os.replace(entry, folder / entry.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    staging.rmdir()
    return [folder / entry.name for entry in entries]
