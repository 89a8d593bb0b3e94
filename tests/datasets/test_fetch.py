"""Download machinery: cache, pinned checksums, atomic writes, safe extraction; the network is mocked."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import stat
import tarfile
import time
import urllib.request
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dynlearn.data import check_series
from dynlearn.datasets import (
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    UnsafeArchiveError,
    fetch_mocap6,
    fetch_person_activity,
    fetch_physionet2012,
    fetch_real_pendulum,
    get_data_home,
)
from dynlearn.datasets import _activity, _fetch, _physionet, _real
from dynlearn.datasets._fetch import RemoteFile, extract_archive, fetch_archive, fetch_file
from dynlearn.datasets._mocap import MOCAP6_FILE
from dynlearn.datasets._real import PENDULUM_ARCHIVE
from dynlearn.exceptions import InputError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PAYLOAD = b"0123456789" * 1000
URL = "https://example.org/data/payload.bin"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes, None for folders."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


class FakeResponse(io.BytesIO):
    """A response that hands out a few bytes per read and can fail part-way."""

    def __init__(self, data: bytes, fail_after: int | None, error: BaseException, on_fail):
        super().__init__(data)
        self.fail_after, self.error, self.on_fail = fail_after, error, on_fail

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            self.on_fail()
            raise self.error
        return super().read(min(size, 256) if size > 0 else 256)


class FakeServer:
    """Stands in for ``urllib.request.urlopen``: serves bytes by URL and counts requests."""

    def __init__(self, files: dict[str, bytes], fail_after: int | None = None, error: BaseException | None = None):
        self.files, self.fail_after = files, fail_after
        self.error = error or ConnectionResetError("connection reset by peer")
        self.requests: list[str] = []
        self.seen_at_failure: dict[str, bytes | None] = {}
        self.watch: Path | None = None

    def __call__(self, url: str, timeout: float | None = None) -> FakeResponse:
        self.requests.append(url)
        return FakeResponse(self.files[url], self.fail_after, self.error, self._record)

    def _record(self) -> None:
        if self.watch is not None:
            self.seen_at_failure = snapshot(self.watch)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "other_dataset.csv").write_bytes(b"already here\n")
    return folder


def serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], **options) -> FakeServer:
    server = FakeServer(files, **options)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    return server


# ------------------------------------------------------------------ fetch_file
def test_downloads_once_then_reads_the_cache(monkeypatch, cache):
    server = serve(monkeypatch, {URL: PAYLOAD})
    remote = RemoteFile("payload.bin", URL, sha256(PAYLOAD))
    first = fetch_file(remote, cache / "demo")
    second = fetch_file(remote, cache / "demo")
    assert first == second == cache / "demo" / "payload.bin"
    assert first.read_bytes() == PAYLOAD
    assert server.requests == [URL]
    # The stamp of the verified file is all that is added; no lock or temporary file is left.
    assert sorted(snapshot(cache)) == ["demo", "demo/payload.bin", "demo/payload.bin.verified", "other_dataset.csv"]


def test_checksum_mismatch_discards_the_download(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD})
    before = snapshot(cache)
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        fetch_file(RemoteFile("payload.bin", URL, wrong), cache / "demo")
    message = str(caught.value)
    assert "payload.bin" in message and wrong in message and sha256(PAYLOAD) in message
    assert "path=" in message
    assert isinstance(caught.value, OSError)
    assert snapshot(cache) == before


def test_md5_is_checked_where_no_sha256_is_pinned(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD})
    with pytest.raises(ChecksumError, match="md5"):
        fetch_file(RemoteFile("payload.bin", URL, None, md5="0" * 32), cache)
    good = RemoteFile("payload.bin", URL, None, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert fetch_file(good, cache).read_bytes() == PAYLOAD


def test_download_cut_mid_stream_leaves_the_cache_as_it_was(monkeypatch, cache):
    server = serve(monkeypatch, {URL: PAYLOAD}, fail_after=len(PAYLOAD) // 2)
    server.watch = cache
    before = snapshot(cache)
    with pytest.raises(DownloadError, match="ConnectionResetError") as caught:
        fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache / "demo")
    assert isinstance(caught.value, OSError)
    # The failure really came mid-stream: half the bytes sat in a temporary file...
    partial = [data for name, data in server.seen_at_failure.items() if name.endswith(".part")]
    assert partial and 0 < len(partial[0]) < len(PAYLOAD)
    assert not (cache / "demo" / "payload.bin").exists()
    # ...which is gone, with the folder made for it.
    assert snapshot(cache) == before


def test_server_closing_early_is_a_checksum_error(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD[:100]})
    before = snapshot(cache)
    with pytest.raises(ChecksumError):
        fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache)
    assert snapshot(cache) == before


def test_interrupt_during_download_leaves_no_partial_file(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD}, fail_after=1000, error=KeyboardInterrupt())
    before = snapshot(cache)
    with pytest.raises(KeyboardInterrupt):
        fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache)
    assert snapshot(cache) == before


def test_download_if_missing_false_raises_a_clear_error(monkeypatch, cache):
    server = serve(monkeypatch, {URL: PAYLOAD})
    with pytest.raises(DatasetNotFoundError, match="download_if_missing=True") as caught:
        fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache, download_if_missing=False)
    assert isinstance(caught.value, FileNotFoundError)
    assert URL in str(caught.value) and "path=" in str(caught.value)
    assert server.requests == []


def test_fetchers_pass_download_if_missing_through(monkeypatch, cache):
    server = serve(monkeypatch, {})
    for fetch in (fetch_real_pendulum, fetch_person_activity, fetch_physionet2012, fetch_mocap6):
        with pytest.raises(DatasetNotFoundError):
            fetch(data_home=cache, download_if_missing=False)
    assert server.requests == []


def test_remote_file_needs_a_checksum_and_a_plain_name():
    with pytest.raises(ValueError, match="sha256"):
        RemoteFile("a.txt", URL, None)
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile("../a.txt", URL, "0" * 64)


# --------------------------------------------------------------- get_data_home
def test_data_home_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNLEARN_DATA", str(tmp_path / "from_env"))
    assert get_data_home() == tmp_path / "from_env"
    assert (tmp_path / "from_env").is_dir()
    assert get_data_home(tmp_path / "explicit") == tmp_path / "explicit"


def test_data_home_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DYNLEARN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_data_home() == tmp_path / "dynlearn_data"
    assert (tmp_path / "dynlearn_data").is_dir()


@pytest.mark.skipif(not (SHARED_DATA / "lipson_pendulum_real").is_dir(), reason="shared real data folder is absent")
def test_pendulum_download_matches_the_pinned_hash_and_uses_the_env_cache(monkeypatch, tmp_path):
    archive = (SHARED_DATA / "lipson_pendulum_real" / "invar_datasets.zip").read_bytes()
    server = serve(monkeypatch, {PENDULUM_ARCHIVE.url: archive})
    monkeypatch.setenv("DYNLEARN_DATA", str(tmp_path / "env_cache"))
    first = fetch_real_pendulum()
    second = fetch_real_pendulum(download_if_missing=False)
    assert len(server.requests) == 1
    assert (tmp_path / "env_cache" / "lipson_pendulum" / "invar_datasets.zip").read_bytes() == archive
    assert first.frame.equals(second.frame) and first.frame.shape == (556, 4)
    check_series(first.frame)


@pytest.mark.skipif(not (SHARED_DATA / "cmu_mocap6").is_dir(), reason="shared real data folder is absent")
def test_mocap6_download_matches_the_pinned_hash(monkeypatch, cache):
    original = (SHARED_DATA / "cmu_mocap6" / "mocap6.mat").read_bytes()
    server = serve(monkeypatch, {MOCAP6_FILE.url: original})
    first = fetch_mocap6(data_home=cache)
    second = fetch_mocap6(data_home=cache, download_if_missing=False)
    assert server.requests == [MOCAP6_FILE.url]
    assert (cache / "cmu_mocap6" / "mocap6.mat").read_bytes() == original
    assert first.frame.equals(second.frame) and first.frame.shape == (2058, 14)


# ------------------------------------------------------------------ archives
def zip_archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def tar_archive(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as bundle:
        for member in members:
            payload = data.get(member.name)
            if payload is not None:
                member.size = len(payload)
            bundle.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return path


def tar_file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


UNSAFE = {
    "zip parent": lambda p: zip_archive(p / "a.zip", {"ok.txt": b"fine", "../evil.txt": b"x"}),
    "zip absolute": lambda p: zip_archive(p / "a.zip", {"/tmp/evil.txt": b"x"}),
    "zip drive": lambda p: zip_archive(p / "a.zip", {"C:/evil.txt": b"x"}),
    "zip nested parent": lambda p: zip_archive(p / "a.zip", {"sub/../../evil.txt": b"x"}),
    "tar parent": lambda p: tar_archive(p / "a.tar.gz", [tar_file("ok.txt"), tar_file("../evil.txt")],
                                        {"ok.txt": b"fine", "../evil.txt": b"x"}),
    "tar absolute": lambda p: tar_archive(p / "a.tar.gz", [tar_file("/tmp/evil.txt")], {"/tmp/evil.txt": b"x"}),
    "tar symlink escaping": lambda p: tar_archive(
        p / "a.tar.gz", [tar_link("link", "../.."), tar_file("link/evil.txt")], {"link/evil.txt": b"x"}
    ),
    "tar hard link": lambda p: tar_archive(p / "a.tar.gz", [tar_link("passwd", "/etc/passwd", tarfile.LNKTYPE)]),
}  # fmt: skip


@pytest.mark.parametrize("build", UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, cache, build):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    archive = build(incoming)
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="Nothing was extracted"):
        extract_archive(archive, cache / "target")
    assert snapshot(tmp_path) == before


def test_safe_archives_extract_whole_entries(tmp_path, cache):
    archive = zip_archive(tmp_path / "a.zip", {"set/one.txt": b"1", "set/two.txt": b"2", "top.txt": b"t"})
    entries = extract_archive(archive, cache)
    assert sorted(e.name for e in entries) == ["set", "top.txt"]
    assert (cache / "set" / "two.txt").read_bytes() == b"2"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_extraction_refuses_to_overwrite(tmp_path, cache):
    archive = zip_archive(tmp_path / "a.zip", {"other_dataset.csv": b"new"})
    before = snapshot(cache)
    with pytest.raises(ValueError, match="already in"):
        extract_archive(archive, cache)
    assert snapshot(cache) == before


def test_unsafe_download_is_removed_again(monkeypatch, tmp_path, cache):
    archive = tar_archive(tmp_path / "evil.tar.gz", [tar_file("../evil.txt")], {"../evil.txt": b"x"}).read_bytes()
    serve(monkeypatch, {URL: archive})
    before = snapshot(cache)
    with pytest.raises(UnsafeArchiveError):
        fetch_archive(RemoteFile("evil.tar.gz", URL, sha256(archive)), cache / "demo", "set")
    assert snapshot(cache) == before
    assert not (tmp_path / "evil.txt").exists()


# ------------------------------------------------------- fetchers, end to end
RECORD = (
    b"Time,Parameter,Value\n00:00,RecordID,{id}\n00:00,Age,60\n00:00,Gender,1\n00:00,Height,-1\n"
    b"00:00,ICUType,3\n00:00,Weight,80\n00:30,HR,88\n01:00,HR,90\n01:00,Weight,79.5\n"
)
OUTCOMES = b"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n7,10,2,5,-1,0\n8,12,3,9,4,1\n"


def physionet_archive(tmp_path: Path, members: dict[str, bytes]) -> bytes:
    return tar_archive(tmp_path / "set-a.tar.gz", [tar_file(name) for name in members], members).read_bytes()


def pin_physionet(monkeypatch, archive: bytes) -> FakeServer:
    files = {"set-a.tar.gz": archive, "Outcomes-a.txt": OUTCOMES}
    remotes = {name: RemoteFile(name, f"https://example.org/{name}", sha256(data)) for name, data in files.items()}
    for name, remote in remotes.items():
        monkeypatch.setitem(_physionet.REMOTE_FILES, name, remote)
    return serve(monkeypatch, {remotes[name].url: data for name, data in files.items()})


def test_physionet_downloads_extracts_and_then_reads_the_cache(monkeypatch, tmp_path, cache):
    records = {f"set-a/{i}.txt": RECORD.replace(b"{id}", str(i).encode()) for i in (7, 8)}
    server = pin_physionet(monkeypatch, physionet_archive(tmp_path, records))
    first = fetch_physionet2012("a", data_home=cache)
    second = fetch_physionet2012("a", data_home=cache, download_if_missing=False)
    assert len(server.requests) == 2
    cached = sorted(p.name for p in (cache / "physionet2012").iterdir())
    assert cached == [
        "Outcomes-a.txt", "Outcomes-a.txt.verified", "set-a", "set-a.tar.gz", "set-a.tar.gz.extracted",
        "set-a.tar.gz.verified",
    ]  # fmt: skip
    assert first.frame.equals(second.frame)
    assert list(first.static.index) == [7, 8] and first.static["Height"].isna().all()
    assert first.outcomes.loc[8, "In-hospital_death"] == 1
    frame = first.frame.set_index(["series_id", "time"])
    assert frame.loc[(7, 1.0), "Weight"] == 79.5 and frame.loc[(7, 0.5), "HR"] == 88
    check_series(first.frame)


def test_physionet_unsafe_download_leaves_the_cache_as_it_was(monkeypatch, tmp_path, cache):
    archive = physionet_archive(tmp_path, {"set-a/7.txt": RECORD, "../escaped.txt": b"x"})
    pin_physionet(monkeypatch, archive)
    before = snapshot(cache)
    with pytest.raises(UnsafeArchiveError):
        fetch_physionet2012("a", data_home=cache)
    assert snapshot(cache) == before
    assert not (tmp_path / "escaped.txt").exists()


def test_physionet_local_unsafe_archive_is_refused(tmp_path, cache):
    local = tmp_path / "local"
    local.mkdir()
    (local / "Outcomes-a.txt").write_bytes(OUTCOMES)
    (local / "set-a.tar.gz").write_bytes(physionet_archive(tmp_path, {"set-a/7.txt": RECORD, "../x.txt": b"x"}))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError):
        fetch_physionet2012("a", data_home=cache, path=local)
    assert snapshot(tmp_path) == before


ACTIVITY_LINE = b"A01,010-000-024-033,633790226051280329,27.05.2009 14:03:25:127,4.06,1.89,0.50,walking\n"


def test_person_activity_checks_the_pinned_md5(monkeypatch, cache):
    serve(monkeypatch, {_activity.ACTIVITY_FILE.url: ACTIVITY_LINE})
    before = snapshot(cache)
    with pytest.raises(ChecksumError, match="md5 280a677ae0d673ec9a50ada480d8a529"):
        fetch_person_activity(data_home=cache)
    assert snapshot(cache) == before


def test_person_activity_downloads_into_the_cache(monkeypatch, cache):
    remote = RemoteFile("ConfLongDemo_JSI.txt", _activity.ACTIVITY_FILE.url, sha256(ACTIVITY_LINE))
    monkeypatch.setattr(_activity, "ACTIVITY_FILE", remote)
    server = serve(monkeypatch, {remote.url: ACTIVITY_LINE})
    data = fetch_person_activity(data_home=cache)
    fetch_person_activity(data_home=cache)
    assert len(server.requests) == 1
    assert (cache / "person_activity" / "ConfLongDemo_JSI.txt").read_bytes() == ACTIVITY_LINE
    assert data.frame.shape == (1, 14) and data.target.iloc[0] == "walking"


# ------------------------------------------------ the cache is verified on every hit
PENDULUM_TEXT = b"% trial t theta omega\n0 5.0 0.1 0.2\n0 5.1666666667 0.15 0.25\n0 5.3333333333 0.2 0.3\n"


def pin_pendulum(monkeypatch, tmp_path: Path) -> tuple[bytes, FakeServer]:
    """A small zip in the original layout, pinned and served in place of the real archive."""
    zipped = zip_archive(tmp_path / "invar_datasets.zip", {"real_pend_h_1.txt": PENDULUM_TEXT}).read_bytes()
    remote = RemoteFile("invar_datasets.zip", "https://example.org/invar_datasets.zip", sha256(zipped))
    monkeypatch.setattr(_real, "PENDULUM_ARCHIVE", remote)
    return zipped, serve(monkeypatch, {remote.url: zipped})


def flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    info, data = path.stat(), bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


CORRUPTIONS = {"flipped byte": flip_a_byte_keeping_size_and_mtime, "truncated": truncate, "random": random_bytes}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_damaged_cached_file_is_refused_or_downloaded_again(monkeypatch, tmp_path, cache, corrupt):
    zipped, server = pin_pendulum(monkeypatch, tmp_path)
    expected = fetch_real_pendulum(data_home=cache).frame
    cached = cache / "lipson_pendulum" / "invar_datasets.zip"
    corrupt(cached)
    damaged = cached.read_bytes()
    assert damaged != zipped
    # Not loaded, and no raw decode or zip error: a ChecksumError naming the file and what to do.
    with pytest.raises(ChecksumError) as caught:
        fetch_real_pendulum(data_home=cache, download_if_missing=False)
    message = str(caught.value)
    assert str(cached) in message and sha256(zipped) in message and sha256(damaged) in message
    assert "Delete it" in message and "download_if_missing=True" in message
    assert cached.read_bytes() == damaged and len(server.requests) == 1
    with pytest.warns(UserWarning, match="downloading it again"):
        again = fetch_real_pendulum(data_home=cache).frame
    assert again.equals(expected) and cached.read_bytes() == zipped and len(server.requests) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fetch_real_pendulum(data_home=cache, download_if_missing=False).frame.equals(expected)
    assert len(server.requests) == 2


def test_stamp_spares_hashing_until_the_file_changes(monkeypatch, cache):
    server = serve(monkeypatch, {URL: PAYLOAD})
    remote = RemoteFile("payload.bin", URL, sha256(PAYLOAD))
    hashed = []
    hash_file = _fetch._hash_file
    monkeypatch.setattr(_fetch, "_hash_file", lambda path, algorithm: hashed.append(path) or hash_file(path, algorithm))
    cached = fetch_file(remote, cache)  # hashed while downloading
    stamp = cache / "payload.bin.verified"
    assert json.loads(stamp.read_text())["sha256"] == sha256(PAYLOAD)
    fetch_file(remote, cache, download_if_missing=False)
    assert hashed == []
    os.utime(cached, ns=(0, 10**18))  # same bytes, new mtime: hashed once, then trusted again
    fetch_file(remote, cache, download_if_missing=False)
    fetch_file(remote, cache, download_if_missing=False)
    assert hashed == [cached]
    for broken in ("", "{not json", "[]", '{"pin": "sha256:0", "sha256": 1}'):
        stamp.write_text(broken)
        assert fetch_file(remote, cache, download_if_missing=False) == cached
    assert len(hashed) == 5 and server.requests == [URL]


def test_a_new_pin_distrusts_the_old_stamp(monkeypatch, cache):
    new = PAYLOAD + b"v2"
    server = serve(monkeypatch, {URL: new})
    (cache / "payload.bin").write_bytes(PAYLOAD)
    fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache, download_if_missing=False)
    assert server.requests == []
    with pytest.warns(UserWarning, match="downloading it again"):
        fetch_file(RemoteFile("payload.bin", URL, sha256(new)), cache)
    assert (cache / "payload.bin").read_bytes() == new and server.requests == [URL]


def test_md5_pinned_file_is_stamped_with_its_sha256(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD})
    remote = RemoteFile("payload.bin", URL, None, md5=hashlib.md5(PAYLOAD).hexdigest())
    fetch_file(remote, cache)
    stamp = json.loads((cache / "payload.bin.verified").read_text())
    assert stamp["sha256"] == sha256(PAYLOAD) and stamp["pin"] == f"md5:{remote.md5}"
    truncate(cache / "payload.bin")
    with pytest.raises(ChecksumError, match="md5"):
        fetch_file(remote, cache, download_if_missing=False)


def test_unwritable_cache_is_verified_without_lock_or_stamp(monkeypatch, cache):
    """A read-only cache (as shared by an administrator) still serves, and checks, its files."""
    serve(monkeypatch, {URL: PAYLOAD})
    remote = RemoteFile("payload.bin", URL, sha256(PAYLOAD))
    (cache / "payload.bin").write_bytes(PAYLOAD)
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).parent == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    assert fetch_file(remote, cache, download_if_missing=False) == cache / "payload.bin"
    assert not (cache / "payload.bin.verified").exists()
    truncate(cache / "payload.bin")
    with pytest.raises(ChecksumError):
        fetch_file(remote, cache, download_if_missing=False)


# ------------------------------------------------ extracted archives follow their archive
def physionet_records(ids) -> dict[str, bytes]:
    return {f"set-a/{i}.txt": RECORD.replace(b"{id}", str(i).encode()) for i in ids}


def edit_a_record(folder: Path) -> None:
    (folder / "set-a" / "7.txt").write_bytes(b"Time,Parameter,Value\n00:00,RecordID,7\n\xff\xfe")


def remove_a_record(folder: Path) -> None:
    (folder / "set-a" / "8.txt").unlink()


def write_stamp(text: str):
    return lambda folder: (folder / "set-a.tar.gz.extracted").write_text(text)


EXTRACTION_DAMAGE = {
    "edited member": edit_a_record,
    "removed member": remove_a_record,
    "stamp removed": lambda folder: (folder / "set-a.tar.gz.extracted").unlink(),
    "stamp garbage": write_stamp("\x00garbage"),
    "stamp of another archive": write_stamp('{"archive_sha256": "' + "0" * 64 + '", "files": []}'),
}


@pytest.mark.parametrize("damage", EXTRACTION_DAMAGE.values(), ids=EXTRACTION_DAMAGE.keys())
def test_extracted_entries_that_no_longer_match_are_extracted_again(monkeypatch, tmp_path, cache, damage):
    server = pin_physionet(monkeypatch, physionet_archive(tmp_path, physionet_records((7, 8))))
    first = fetch_physionet2012("a", data_home=cache)
    folder = cache / "physionet2012"
    (folder / "set-a" / "stray.txt").write_bytes(b"not from the archive")
    damage(folder)
    second = fetch_physionet2012("a", data_home=cache, download_if_missing=False)
    assert second.frame.equals(first.frame) and len(server.requests) == 2
    assert sorted(p.name for p in (folder / "set-a").iterdir()) == ["7.txt", "8.txt"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging folder or lock left


def test_a_changed_archive_is_downloaded_and_extracted_again(monkeypatch, tmp_path, cache):
    pin_physionet(monkeypatch, physionet_archive(tmp_path, physionet_records((7, 8))))
    assert list(fetch_physionet2012("a", data_home=cache).static.index) == [7, 8]
    server = pin_physionet(monkeypatch, physionet_archive(tmp_path, physionet_records((7, 8, 9))))
    with pytest.warns(UserWarning, match="set-a.tar.gz"):
        data = fetch_physionet2012("a", data_home=cache)
    assert list(data.static.index) == [7, 8, 9] and len(server.requests) == 1


def test_damaged_cached_archive_is_refused_without_download(monkeypatch, tmp_path, cache):
    server = pin_physionet(monkeypatch, physionet_archive(tmp_path, physionet_records((7, 8))))
    fetch_physionet2012("a", data_home=cache)
    truncate(cache / "physionet2012" / "set-a.tar.gz")
    with pytest.raises(ChecksumError, match="set-a.tar.gz"):
        fetch_physionet2012("a", data_home=cache, download_if_missing=False)
    assert len(server.requests) == 2


# ------------------------------------------------ concurrent first fetches
class SlowServer:
    """Serves files a few bytes at a time, logging when each request starts and ends (across processes)."""

    def __init__(self, files: dict[str, bytes], log: Path, delay: float, step: int):
        self.files, self.log, self.delay, self.step = files, log, delay, step

    def __call__(self, url: str, timeout: float | None = None):
        self._note("start")
        return SlowResponse(self.files[url], self)

    def _note(self, event: str) -> None:
        with open(self.log, "a") as handle:
            handle.write(f"{event} {os.getpid()} {time.time()}\n")


class SlowResponse(io.BytesIO):
    def __init__(self, data: bytes, server: SlowServer):
        super().__init__(data)
        self.server = server

    def read(self, size: int = -1) -> bytes:
        time.sleep(self.server.delay)
        chunk = super().read(self.server.step)
        if not chunk:
            self.server._note("end")
        return chunk


def entry_digests(entry: Path) -> dict[str, str]:
    return {p.relative_to(entry).as_posix(): sha256(p.read_bytes()) for p in sorted(entry.rglob("*")) if p.is_file()}


def fetch_in_child(remote: RemoteFile, folder: Path, barrier, results: Path) -> None:
    barrier.wait()
    with open(results.parent / "log", "a") as handle:
        handle.write(f"call {os.getpid()} {time.time()}\n")
    try:
        entry = fetch_archive(remote, folder, "set-a")
        outcome = {"ok": entry_digests(entry)}
    except Exception as error:  # reported to the parent, which fails the test with it
        outcome = {"error": f"{type(error).__name__}: {error}"}
    results.write_text(json.dumps(outcome))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_two_processes_fetching_the_same_archive_both_succeed(monkeypatch, tmp_path, cache):
    records = physionet_records(range(7, 47))
    archive = physionet_archive(tmp_path, records)  # about 700 bytes: 0.4 s at 32 bytes per 20 ms
    remote = RemoteFile("set-a.tar.gz", "https://example.org/set-a.tar.gz", sha256(archive))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(urllib.request, "urlopen", SlowServer({remote.url: archive}, work / "log", 0.02, 32))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    children = [
        context.Process(target=fetch_in_child, args=(remote, cache / "physionet2012", barrier, work / f"r{i}"))
        for i in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        if child.is_alive():  # hung on the lock: stop it so the failure is reported, not the hang
            child.terminate()
    assert [child.exitcode for child in children] == [0, 0]
    outcomes = [json.loads((work / f"r{i}").read_text()) for i in range(2)]
    expected = {name.removeprefix("set-a/"): sha256(data) for name, data in records.items()}
    assert outcomes == [{"ok": expected}] * 2
    events = [line.split() for line in (work / "log").read_text().splitlines()]
    calls = [float(t) for event, _, t in events if event == "call"]
    ends = [float(t) for event, _, t in events if event == "end"]
    # Both calls began before the one download ended: they really overlapped, and the lock made one wait.
    assert len(calls) == 2 and len(ends) == 1 and max(calls) < ends[0]
    assert [event for event, *_ in events].count("start") == 1
    folder = cache / "physionet2012"
    assert (folder / "set-a.tar.gz").read_bytes() == archive
    assert sorted(p.name for p in folder.iterdir()) == ["set-a", "set-a.tar.gz", "set-a.tar.gz.extracted",
                                                        "set-a.tar.gz.verified"]  # fmt: skip


def test_threads_fetching_the_same_file_share_one_download(monkeypatch, tmp_path, cache):
    log = tmp_path / "log"
    monkeypatch.setattr(urllib.request, "urlopen", SlowServer({URL: PAYLOAD[:2560]}, log, 0.005, 256))
    remote = RemoteFile("payload.bin", URL, sha256(PAYLOAD[:2560]))
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: fetch_file(remote, cache / "demo"), range(4)))
    assert paths == [cache / "demo" / "payload.bin"] * 4
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]
    assert sorted(p.name for p in (cache / "demo").iterdir()) == ["payload.bin", "payload.bin.verified"]


# ------------------------------------------------ permissions and a full disk
@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_cached_files_have_the_permissions_of_any_new_file(monkeypatch, tmp_path, cache, umask):
    pin_physionet(monkeypatch, physionet_archive(tmp_path, physionet_records((7, 8))))
    previous = os.umask(umask)
    try:
        fetch_physionet2012("a", data_home=cache)
    finally:
        os.umask(previous)
    folder = cache / "physionet2012"
    for name in ("set-a.tar.gz", "set-a.tar.gz.verified", "set-a.tar.gz.extracted", "Outcomes-a.txt"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name
    assert stat.S_IMODE((folder / "set-a" / "7.txt").stat().st_mode) & 0o040  # extracted: group-readable


def fail_writes_with_enospc(monkeypatch, suffix: str, after: int, watch: Path) -> dict:
    """Make ``os.write`` to new ``*suffix`` files fail with ENOSPC once ``after`` bytes are in."""
    real_open, real_write = os.open, os.write
    handles: dict[int, int] = {}
    seen: dict = {}

    def tracking_open(path, flags, *args, **kwargs):
        handle = real_open(path, flags, *args, **kwargs)
        if str(path).endswith(suffix):
            handles[handle] = 0
        return handle

    def filling_write(handle, data):
        if handle in handles and handles[handle] >= after:
            seen.update(snapshot(watch))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(handle, data)
        if handle in handles:
            handles[handle] += written
        return written

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "write", filling_write)
    return seen


def test_full_disk_during_download_leaves_no_partial_file(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD})
    before = snapshot(cache)
    seen = fail_writes_with_enospc(monkeypatch, ".part", len(PAYLOAD) // 2, cache)
    with pytest.raises(DownloadError, match="No space left on device") as caught:
        fetch_file(RemoteFile("payload.bin", URL, sha256(PAYLOAD)), cache / "demo")
    assert "Free some space" in str(caught.value) and "connection" not in str(caught.value)
    partial = [data for name, data in seen.items() if name.endswith(".part")]
    assert partial and 0 < len(partial[0]) < len(PAYLOAD)  # the disk really filled mid-download
    assert snapshot(cache) == before


def test_full_disk_when_stamping_keeps_the_verified_file(monkeypatch, cache):
    serve(monkeypatch, {URL: PAYLOAD})
    seen = fail_writes_with_enospc(monkeypatch, ".tmp", 0, cache)
    remote = RemoteFile("payload.bin", URL, sha256(PAYLOAD))
    assert fetch_file(remote, cache).read_bytes() == PAYLOAD
    assert seen and sorted(snapshot(cache)) == ["other_dataset.csv", "payload.bin"]  # no stamp, no temporary
    monkeypatch.undo()
    truncate(cache / "payload.bin")
    with pytest.raises(ChecksumError):  # unstamped, so hashed again: still checked
        fetch_file(remote, cache, download_if_missing=False)


# ------------------------------------------------ damaged local files: clear errors, never a raw decode error
def test_damaged_local_files_give_input_errors(tmp_path):
    (tmp_path / "real_pend_h_1.txt").write_bytes(random.Random(1).randbytes(300))
    with pytest.raises(InputError, match="damaged"):
        fetch_real_pendulum(path=tmp_path / "real_pend_h_1.txt")
    zipped = bytearray(zip_archive(tmp_path / "bad.zip", {"real_pend_h_1.txt": PENDULUM_TEXT}).read_bytes())
    zipped[40] ^= 0xFF  # inside the stored member: a CRC error on reading
    (tmp_path / "bad.zip").write_bytes(bytes(zipped))
    with pytest.raises(InputError, match="damaged"):
        fetch_real_pendulum(path=tmp_path / "bad.zip")
    activity = bytearray(zip_archive(tmp_path / "act.zip", {"ConfLongDemo_JSI.txt": ACTIVITY_LINE}).read_bytes())
    activity[45] ^= 0xFF
    (tmp_path / "act.zip").write_bytes(bytes(activity))
    with pytest.raises(InputError, match="damaged zip"):
        fetch_person_activity(path=tmp_path / "act.zip")
    (tmp_path / "act.txt").write_bytes(ACTIVITY_LINE[:30] + b"\xff\xfe\xfa" + ACTIVITY_LINE[30:])
    with pytest.raises(InputError):
        fetch_person_activity(path=tmp_path / "act.txt")


@pytest.mark.parametrize("part", ["record", "outcomes", "archive"])
def test_damaged_local_physionet_files_give_input_errors(tmp_path, part):
    local = tmp_path / "local"
    (local / "set-a").mkdir(parents=True)
    (local / "Outcomes-a.txt").write_bytes(OUTCOMES)
    for name, data in physionet_records((7, 8)).items():
        (local / name).write_bytes(data)
    if part == "record":
        edit_a_record(local)
    elif part == "outcomes":
        (local / "Outcomes-a.txt").write_bytes(random.Random(2).randbytes(200))
    else:
        shutil.rmtree(local / "set-a")
        archive = physionet_archive(tmp_path, physionet_records((7, 8)))
        (local / "set-a.tar.gz").write_bytes(archive[: len(archive) - 40])
    with pytest.raises(InputError):
        fetch_physionet2012("a", path=local)
