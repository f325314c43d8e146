"""Recording storage: the local directory's atomic, contained writes; S3 signing; the choice."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from calls import storage as storage_module
from calls.storage import LocalFile, LocalStorage, Redirect, S3Storage, storage_for
from core.settings import Settings

CALL_ID = "3f1c2a8e-5b7d-4e0f-9a61-2c4b8d0e7f13"
OTHER_ID = "9a0e6c1d-7f2b-4c83-b5e4-1d2f3a4b5c6d"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "recording.wav"
    path.parent.mkdir()
    path.write_bytes(b"RIFF" + bytes(range(256)) * 64)
    return path


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


async def test_local_put_stores_the_bytes_under_recordings_and_leaves_no_partial_file(
    local: LocalStorage, source: Path
) -> None:
    key = await local.put(CALL_ID, source)

    assert key == f"recordings/{CALL_ID}.wav"
    assert (local.root / key).read_bytes() == source.read_bytes()
    assert [p.name for p in (local.root / "recordings").iterdir()] == [f"{CALL_ID}.wav"]


async def test_local_recordings_of_one_source_share_its_bytes_written_once(
    local: LocalStorage, source: Path
) -> None:
    first = local.root / await local.put(CALL_ID, source)
    second = local.root / await local.put(OTHER_ID, source)

    assert first.stat().st_ino == second.stat().st_ino
    (blob,) = (local.root / ".blobs").iterdir()
    assert blob.stat().st_ino == first.stat().st_ino and blob.stat().st_nlink == 3


async def test_a_changed_source_gets_its_own_bytes(local: LocalStorage, source: Path) -> None:
    first = local.root / await local.put(CALL_ID, source)
    source.write_bytes(b"RIFF another recording")
    second = local.root / await local.put(OTHER_ID, source)

    assert first.read_bytes() != second.read_bytes() == b"RIFF another recording"


async def test_a_blob_at_the_link_limit_is_followed_by_a_fresh_copy(
    local: LocalStorage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = local.root / await local.put(CALL_ID, source)
    real_link = os.link

    def link(src: Path, dst: Path) -> None:
        if Path(src).stat().st_ino == first.stat().st_ino:
            raise OSError(errno.EMLINK, "Too many links")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    second = local.root / await local.put(OTHER_ID, source)

    assert second.read_bytes() == source.read_bytes()
    assert second.stat().st_ino != first.stat().st_ino
    assert len(list((local.root / ".blobs").iterdir())) == 2


async def test_without_hard_links_each_recording_is_a_copy(
    local: LocalStorage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: Path, dst: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    key = await local.put(CALL_ID, source)

    assert (local.root / key).read_bytes() == source.read_bytes()
    assert (local.root / key).stat().st_nlink == 1


async def test_local_put_that_fails_midway_leaves_the_previous_file_whole(
    local: LocalStorage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await local.put(CALL_ID, source)
    before = (local.root / key).read_bytes()

    def full_disk(src: Path, dst: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        await local.put(CALL_ID, source)

    assert (local.root / key).read_bytes() == before
    assert [p.name for p in (local.root / "recordings").iterdir()] == [f"{CALL_ID}.wav"]


async def test_a_copy_that_fails_midway_leaves_the_previous_file_whole(
    local: LocalStorage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local._links = False  # the copying path, as on a file system without hard links
    key = await local.put(CALL_ID, source)
    before = (local.root / key).read_bytes()

    def copy_half(src, dst, *args) -> None:
        dst.write(src.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", copy_half)
    with pytest.raises(OSError, match="disk full"):
        await local.put(CALL_ID, source)

    assert (local.root / key).read_bytes() == before
    assert [p.name for p in (local.root / "recordings").iterdir()] == [f"{CALL_ID}.wav"]


@pytest.mark.parametrize("call_id", ["../../escape", "../recordings", "a/b", "..", ".hidden", ""])
async def test_local_put_refuses_a_name_that_is_not_one_plain_file_name(
    local: LocalStorage, source: Path, tmp_path: Path, call_id: str
) -> None:
    with pytest.raises(ValueError, match="refused"):
        await local.put(call_id, source)

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [source]


async def test_local_locate_serves_a_stored_file_under_the_download_name(
    local: LocalStorage, source: Path
) -> None:
    key = await local.put(CALL_ID, source)

    assert await local.locate(key, f"{CALL_ID}.wav") == LocalFile(
        local.root / key, f"{CALL_ID}.wav"
    )


@pytest.mark.parametrize("key", ["../outside.wav", "recordings/../../outside.wav", "/etc/passwd"])
async def test_local_locate_refuses_a_key_outside_the_directory(
    local: LocalStorage, tmp_path: Path, key: str
) -> None:
    (tmp_path / "outside.wav").write_bytes(b"secret")
    local.root.mkdir()

    assert await local.locate(key, "x.wav") is None


async def test_local_locate_of_a_key_never_stored_is_none(local: LocalStorage) -> None:
    assert await local.locate(f"recordings/{CALL_ID}.wav", "x.wav") is None


async def test_s3_locate_signs_a_get_of_the_key_at_the_endpoint_without_calling_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Only these credentials: nothing from the shell or ~/.aws. Port 9 (discard) proves no call.
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    storage = S3Storage(
        "calls-bucket", endpoint_url="http://127.0.0.1:9", presign_ttl_s=120, region="eu-west-1"
    )
    try:
        found = await storage.locate(f"recordings/{CALL_ID}.wav", f"{CALL_ID}.wav")
    finally:
        await storage.aclose()

    assert isinstance(found, Redirect)
    url = urlsplit(found.url)
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:9")
    assert url.path == f"/calls-bucket/recordings/{CALL_ID}.wav"
    assert query["X-Amz-Expires"] == ["120"]
    assert "/eu-west-1/s3/" in query["X-Amz-Credential"][0]
    assert query["response-content-disposition"] == [f'inline; filename="{CALL_ID}.wav"']


async def test_s3_locate_signs_for_the_public_endpoint_when_one_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    # The platform reaches the store as minio:9000 (Compose); owners at the host's port.
    public = S3Storage(
        "calls-bucket",
        endpoint_url="http://minio:9000",
        public_endpoint_url="http://localhost:9000",
    )
    direct = S3Storage("calls-bucket", endpoint_url="http://localhost:9000")
    try:
        signed = await public.locate(f"recordings/{CALL_ID}.wav", f"{CALL_ID}.wav")
        expected = await direct.locate(f"recordings/{CALL_ID}.wav", f"{CALL_ID}.wav")
    finally:
        await public.aclose()
        await direct.aclose()

    assert isinstance(signed, Redirect) and isinstance(expected, Redirect)
    url = urlsplit(signed.url)
    assert (url.scheme, url.netloc) == ("http", "localhost:9000")
    # Signed for that host: what a client of the store at that address would sign (the
    # signatures match when made in the same second).
    query, wanted = parse_qs(url.query), parse_qs(urlsplit(expected.url).query)
    if query["X-Amz-Date"] == wanted["X-Amz-Date"]:
        assert query["X-Amz-Signature"] == wanted["X-Amz-Signature"]


def test_without_a_bucket_recordings_stay_in_the_local_directory() -> None:
    settings = Settings(_env_file=None, recordings_dir="/srv/recordings")

    storage = storage_for(settings)

    assert isinstance(storage, LocalStorage)
    assert storage.root == Path("/srv/recordings")


def test_a_bucket_chooses_s3_with_the_s3_settings() -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket="calls-bucket",
        s3_endpoint_url="http://minio:9000",
        s3_public_endpoint_url="http://localhost:9000",
        s3_region="eu-west-1",
        s3_prefix="prod/recordings/",
        s3_presign_ttl_s=600,
    )

    storage = storage_for(settings)

    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.endpoint_url, storage.region) == (
        "calls-bucket",
        "http://minio:9000",
        "eu-west-1",
    )
    assert (storage.prefix, storage.presign_ttl_s) == ("prod/recordings/", 600)
    assert storage.public_endpoint_url == "http://localhost:9000"


def test_an_empty_endpoint_means_aws_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET", "calls-bucket")
    monkeypatch.setenv("S3_ENDPOINT_URL", "")

    storage = storage_for(Settings(_env_file=None))

    assert isinstance(storage, S3Storage)
    assert storage.endpoint_url is None
    assert (storage.region, storage.prefix, storage.presign_ttl_s) == (
        "us-east-1",
        "recordings/",
        3600,
    )


async def test_concurrent_local_puts_share_directory_fsyncs_each_started_after_its_rename(
    local: LocalStorage, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What each directory fsync saw in the directory when it started: those names it made
    # durable. A put may return only once one of them holding its name has finished.
    synced: list[set[str]] = []
    real_fsync = storage_module._fsync_directory

    def fsync_seeing(directory: Path) -> None:
        seen = {p.name for p in directory.iterdir()}
        real_fsync(directory)
        synced.append(seen)

    monkeypatch.setattr(storage_module, "_fsync_directory", fsync_seeing)
    call_ids = [str(uuid.uuid4()) for _ in range(40)]

    async def put(call_id: str) -> None:
        key = await local.put(call_id, source)
        assert any(Path(key).name in seen for seen in synced), f"{key} returned before an fsync"

    await asyncio.gather(*(put(call_id) for call_id in call_ids))
    recordings = [seen for seen in synced if any(name.endswith(".wav") for name in seen)]
    assert 1 <= len(recordings) < len(call_ids) / 2, f"{len(recordings)} fsyncs for 40 puts"

    # A put after they all finished is made durable by an fsync of its own.
    before = len(synced)
    await put(str(uuid.uuid4()))
    assert len(synced) == before + 1
