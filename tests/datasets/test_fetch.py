"""Download machinery: cache, pinned checksums, atomic writes, safe extraction; the network is mocked."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
import zipfile
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
from dynlearn.datasets import _activity, _physionet
from dynlearn.datasets._fetch import RemoteFile, extract_archive, fetch_archive, fetch_file
from dynlearn.datasets._mocap import MOCAP6_FILE
from dynlearn.datasets._real import PENDULUM_ARCHIVE

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
    assert sorted(snapshot(cache)) == ["demo", "demo/payload.bin", "other_dataset.csv"]


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
    assert cached == ["Outcomes-a.txt", "set-a", "set-a.tar.gz"]
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
