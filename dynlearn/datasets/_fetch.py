"""Download machinery of the ``fetch_*`` functions.

Files are downloaded once into a cache folder, kept only if they match a
pinned checksum, and moved under their final name in one atomic rename, so
the cache never holds a partial or unverified file under a name a later call
would trust. Every later call verifies the cached file again (cheaply, through
a stamp of its size, times and inode taken when it was last hashed), and
downloads or extraction of one entry take turns on a lock file, so concurrent
first calls from several processes all succeed. Archives are extracted without
letting any member escape the target folder, and re-extracted when the
extracted files no longer match the verified archive.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import http.client
import json
import os
import secrets
import shutil
import tarfile
import tempfile
import time
import urllib.request
import warnings
import zipfile
import zlib
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
# What reading a damaged archive raises (bad CRC, truncated stream, bad header).
_DAMAGED_ARCHIVE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


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
    any failure (network error, interruption, full disk, checksum mismatch)
    the temporary file is removed and the folder is left as it was.

    A cached file is verified again on every call: its size, modification
    time and inode are compared with a stamp ``<filename>.verified`` written
    when it was last hashed, and it is hashed again when they differ. A
    damaged file is downloaded afresh (with a warning), or refused with
    :class:`ChecksumError` when ``download_if_missing`` is False. The stamp
    guards against damage and edits, not against someone who rewrites it too.

    Concurrent calls for the same file, from threads or processes, take turns
    on a lock file ``.<filename>.lock`` beside it: the first downloads, the
    others then find the verified file. The lock file is removed on release.

    Parameters
    ----------
    remote : RemoteFile
        What to fetch.
    data_home : str or Path
        Folder the file is cached in; created when the download starts.
    download_if_missing : bool, default=True
        Download the file when it is not cached yet, or damaged; if False,
        raise instead.

    Returns
    -------
    Path
        The cached file, readable by everyone the umask allows (like any
        downloaded file).

    Raises
    ------
    DatasetNotFoundError
        If the file is not cached and ``download_if_missing`` is False.
    DownloadError
        If the download, or writing it to the cache, fails.
    ChecksumError
        If the downloaded bytes do not match the pinned checksum, or the
        cached file is damaged and ``download_if_missing`` is False.
    """
    folder = Path(data_home)
    target = folder / remote.filename
    if _stamp_matches(remote, target):
        return target
    _check_may_download(remote, target, download_if_missing)
    created = _missing_folders(folder)
    try:
        with _CacheLock(folder / f".{remote.filename}.lock"):
            _fetch_locked(remote, target, download_if_missing)
    except BaseException:
        _remove_empty(created)
        raise
    return target


def fetch_archive(remote: RemoteFile, data_home: PathLike, entry: str, download_if_missing: bool = True) -> Path:
    """Path of ``entry``, a top-level member of the archive ``remote``, extracted into ``data_home``.

    The archive is fetched and verified as by :func:`fetch_file` and
    extracted with the checks of :func:`extract_archive`. A stamp
    ``<filename>.extracted`` beside it records the archive's sha256 and the
    size and modification time of every extracted file; when it is missing,
    unreadable, or no longer matches the verified archive or the files, the
    archive's entries are extracted again and replace the old ones. Download
    and extraction happen under the archive's lock, so concurrent first
    calls all succeed with one download. If extraction fails, an archive
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
        Download the archive when it is not cached yet, or damaged; if False,
        raise instead.

    Returns
    -------
    Path
        ``data_home / entry``.
    """
    folder = Path(data_home)
    target = folder / entry
    archive = folder / remote.filename
    stamp = _stamp_matches(remote, archive)
    if stamp is not None and _extraction_matches(archive, stamp["sha256"]) and target.exists():
        return target
    _check_may_download(remote, archive, download_if_missing)
    created = _missing_folders(folder)
    try:
        with _CacheLock(folder / f".{remote.filename}.lock"):
            stamp, downloaded_now = _fetch_locked(remote, archive, download_if_missing)
            if not _extraction_matches(archive, stamp["sha256"]):
                try:
                    _extract_into_cache(archive, folder, stamp["sha256"])
                except BaseException:
                    if downloaded_now:
                        archive.unlink(missing_ok=True)
                        _stamp_path(archive).unlink(missing_ok=True)
                    raise
    except BaseException:
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
        If ``archive`` is neither a zip nor a tar file, is damaged, or an
        entry exists.
    """
    return _extract(Path(archive), Path(folder), replace=False)


# ----------------------------------------------------------------- internals
def _check_may_download(remote: RemoteFile, target: Path, download_if_missing: bool) -> None:
    """:class:`DatasetNotFoundError` when ``target`` is absent and may not be downloaded."""
    if download_if_missing or target.exists():
        return
    raise DatasetNotFoundError(
        describe_problem(
            "download_if_missing",
            f"a cached copy of {remote.filename} in {str(target.parent)!r}",
            "download_if_missing=False and no cached copy",
            f"Pass download_if_missing=True to download it from {remote.url}, or pass path= with a local copy.",
        )
    )


def _fetch_locked(remote: RemoteFile, target: Path, download_if_missing: bool) -> tuple[dict, bool]:
    """Verify or download ``target`` while holding its lock: ``(its stamp, whether it was downloaded)``."""
    stamp = _stamp_matches(remote, target)
    if stamp is not None:
        return stamp, False
    if target.is_file():
        algorithm, expected = remote.checksum
        digests = _hash_file(target, algorithm)
        if digests[algorithm] == expected:
            return _write_stamp(remote, target, digests["sha256"]), False
        if not download_if_missing:
            raise ChecksumError(
                describe_problem(
                    f"cached file {str(target)!r}",
                    f"{algorithm} {expected}, the pinned checksum",
                    f"{algorithm} {digests[algorithm]} ({target.stat().st_size} bytes): the file is damaged or "
                    "was changed",
                    f"Delete it, or call again with download_if_missing=True to download it afresh from "
                    f"{remote.url}.",
                )
            )
        warnings.warn(
            f"The cached file {str(target)!r} does not match its pinned {algorithm} (damaged or changed); "
            f"downloading it again from {remote.url}.",
            stacklevel=3,
        )
    else:
        _check_may_download(remote, target, download_if_missing)
    sha256 = _download(remote, target)
    return _write_stamp(remote, target, sha256), True


def _download(remote: RemoteFile, target: Path) -> str:
    """Stream ``remote.url`` into a temporary file beside ``target``; rename it once verified; its sha256."""
    algorithm, expected = remote.checksum
    digests = {name: hashlib.new(name) for name in {algorithm, "sha256"}}
    try:
        handle, temporary = _create_temporary(target, ".part")
    except OSError as error:
        raise _disk_error(remote, target, error) from error
    try:
        try:
            _stream(remote, target, handle, digests)
        finally:
            os.close(handle)
        received = digests[algorithm].hexdigest()
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
        temporary.unlink(missing_ok=True)
        raise
    return digests["sha256"].hexdigest()


def _stream(remote: RemoteFile, target: Path, handle: int, digests: dict) -> None:
    """Copy the response into ``handle``, telling a failed connection from a failed write."""
    try:
        response = urllib.request.urlopen(remote.url, timeout=_TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException) as error:
        raise _network_error(remote, target, error) from error
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                raise _network_error(remote, target, error) from error
            if not chunk:
                break
            for digest in digests.values():
                digest.update(chunk)
            try:
                _write_all(handle, chunk)
            except OSError as error:
                raise _disk_error(remote, target, error) from error
    try:
        os.fsync(handle)  # some file systems report a full disk only here
    except OSError as error:
        raise _disk_error(remote, target, error) from error


def _network_error(remote: RemoteFile, target: Path, error: BaseException) -> DownloadError:
    return DownloadError(
        f"Downloading {remote.filename} from {remote.url} failed ({type(error).__name__}: {error}); "
        f"nothing was kept in {str(target.parent)!r}. Check the connection and try again, or "
        "download the file yourself and pass path=."
    )


def _disk_error(remote: RemoteFile, target: Path, error: OSError) -> DownloadError:
    return DownloadError(
        f"Writing {remote.filename} into {str(target.parent)!r} failed ({type(error).__name__}: {error}); "
        "nothing was kept there. Free some space (or fix the folder's permissions) and try again, "
        "or pass another data_home."
    )


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _create_temporary(target: Path, suffix: str) -> tuple[int, Path]:
    """A new hidden file beside ``target``, open for writing, with the permissions the umask gives new files.

    ``tempfile.mkstemp`` would make it readable by its owner only; a cache
    may be shared, so the file is created as ``open`` creates any file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def _write_atomically(target: Path, data: bytes) -> None:
    handle, temporary = _create_temporary(target, ".tmp")
    try:
        try:
            _write_all(handle, data)
        finally:
            os.close(handle)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _hash_file(path: Path, algorithm: str) -> dict[str, str]:
    """Hex digests of ``path``'s bytes: ``algorithm`` and sha256."""
    digests = {name: hashlib.new(name) for name in {algorithm, "sha256"}}
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


# A stamp records the file's identity when it was last hashed; ctime is in it
# because no user call can set it back after editing the bytes.
_IDENTITY = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")


def _identity(path: Path) -> dict[str, int]:
    info = path.stat()
    return {name: getattr(info, name) for name in _IDENTITY}


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _pin(remote: RemoteFile) -> str:
    algorithm, expected = remote.checksum
    return f"{algorithm}:{expected}"


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is absent or unreadable."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _stamp_matches(remote: RemoteFile, target: Path) -> dict | None:
    """``target``'s stamp when it vouches for the file as it is now and for the current pin, else None."""
    stamp = _read_json(_stamp_path(target))
    if stamp is None or stamp.get("pin") != _pin(remote) or not isinstance(stamp.get("sha256"), str):
        return None
    try:
        identity = _identity(target)
    except OSError:
        return None
    return stamp if stamp.get("identity") == identity else None


def _write_stamp(remote: RemoteFile, target: Path, sha256: str) -> dict:
    """Record that ``target``, as it is now, matched the pin; a cache that cannot be written goes without."""
    stamp = {"pin": _pin(remote), "sha256": sha256, "identity": _identity(target)}
    try:
        _write_atomically(_stamp_path(target), json.dumps(stamp).encode("utf-8"))
    except OSError:
        pass  # without a stamp the file is hashed on every call: slower, still checked
    return stamp


def _extraction_stamp_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".extracted")


def _extraction_matches(archive: Path, sha256: str) -> bool:
    """Whether the entries beside ``archive`` are the ones extracted from the archive with this sha256."""
    stamp = _read_json(_extraction_stamp_path(archive))
    if stamp is None or stamp.get("archive_sha256") != sha256 or not isinstance(stamp.get("files"), list):
        return False
    try:
        return all(
            _extracted_identity(archive.parent / name) == [size, mtime] for name, size, mtime in stamp["files"]
        )
    except (OSError, TypeError, ValueError):
        return False


def _extracted_identity(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _extract_into_cache(archive: Path, folder: Path, sha256: str) -> None:
    """Extract ``archive`` into ``folder``, replacing its entries, and stamp the result."""
    stamp_path = _extraction_stamp_path(archive)
    # Removed first, so nobody trusts entries while they are being replaced.
    stamp_path.unlink(missing_ok=True)
    entries = _extract(archive, folder, replace=True)
    files = []
    for entry in entries:
        for path in [entry, *sorted(entry.rglob("*"))] if entry.is_dir() else [entry]:
            if path.is_file():
                files.append([path.relative_to(folder).as_posix(), *_extracted_identity(path)])
    stamp = {"archive_sha256": sha256, "entries": [entry.name for entry in entries], "files": files}
    try:
        _write_atomically(stamp_path, json.dumps(stamp).encode("utf-8"))
    except OSError:
        pass  # without a stamp the archive is extracted again on the next call


def _extract(archive: Path, folder: Path, replace: bool) -> list[Path]:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for name in bundle.namelist():
                    _check_member_name(archive, name)
                return _extract_atomically(folder, bundle.extractall, replace)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()
                for member in members:
                    _check_tar_member(archive, member)
                return _extract_atomically(
                    folder, lambda into: bundle.extractall(into, members=members, **_TAR_FILTER), replace
                )
    except _DAMAGED_ARCHIVE as error:
        raise input_error(
            "archive",
            "a readable zip or tar file",
            f"{str(archive)!r}, which is damaged ({type(error).__name__}: {error})",
            "Nothing was extracted. Obtain the archive again from its source.",
        ) from None
    raise input_error(
        "archive", "a zip or tar file", f"{str(archive)!r}, which is neither", "Pass the archive as distributed."
    )


class _CacheLock:
    """Exclusive lock on one cache entry, across threads and processes, through a lock file.

    The file is removed on release, so the cache holds no lock files between
    calls. Removing a lock file is safe because whoever locks it afterwards
    checks that the name still leads to the file it locked, and starts again
    if not. POSIX uses ``fcntl.flock``; Windows, ``msvcrt.locking``, where an
    open file cannot be removed, so the last holder's removal is skipped while
    another process has it open. A folder that cannot be written to is not
    locked: nothing can be downloaded into it anyway, and reading needs no lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: int | None = None

    def __enter__(self) -> _CacheLock:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                continue  # the folder was removed by a failed call in another process
            except OSError as error:
                if isinstance(error, PermissionError) or error.errno == errno.EROFS:
                    return self
                raise
            try:
                _lock(handle)
                if _still_named(handle, self.path):
                    self._handle = handle
                    return self
            except BaseException:
                os.close(handle)
                raise
            os.close(handle)

    def __exit__(self, *exc_info: object) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        if os.name == "nt":
            _unlock(handle)
            os.close(handle)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return
        # Removed while still held: a waiter then sees the name gone and retries.
        with contextlib.suppress(OSError):
            self.path.unlink()
        _unlock(handle)
        os.close(handle)


def _still_named(handle: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(handle: int) -> None:
        while True:
            try:
                msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(0.05)

    def _unlock(handle: int) -> None:
        os.lseek(handle, 0, os.SEEK_SET)
        msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_EX)

    def _unlock(handle: int) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)


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


def _extract_atomically(folder: Path, extract: Callable[[Path], object], replace: bool) -> list[Path]:
    """Extract into a staging folder inside ``folder``, then move each top-level entry into place whole.

    With ``replace``, entries of the same name already in ``folder`` are
    swapped out (each by two renames) and deleted; otherwise they are refused.
    """
    created = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extracting-"))
    try:
        extract(staging / "new")
        entries = sorted((staging / "new").iterdir()) if (staging / "new").is_dir() else []
        clashes = [entry.name for entry in entries if os.path.lexists(folder / entry.name)]
        if clashes and not replace:
            raise input_error(
                "folder",
                "no existing entries named like the archive's top-level entries",
                f"{clashes} already in {str(folder)!r}",
                "Remove them, or extract into another folder.",
            )
        (staging / "old").mkdir()
        for entry in entries:
            if entry.name in clashes:
                os.replace(folder / entry.name, staging / "old" / entry.name)
            os.replace(entry, folder / entry.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(staging)
    return [folder / entry.name for entry in entries]
