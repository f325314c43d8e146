"""Recordings on S3: uploaded by the workers to moto's server, served to the owner by redirect."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiobotocore.session import get_session

from tests.integration.conftest import Api
from tests.integration.platform import ROOT, Platform, free_port

RECORDING = ROOT / "assets" / "recording.wav"
PREFIX = "it/recordings/"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@dataclass(frozen=True)
class S3Server:
    url: str

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        async with get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ) as s3:
            yield s3

    async def create_bucket(self, bucket: str) -> None:
        async with self.client() as s3:
            await s3.create_bucket(Bucket=bucket)

    async def keys(self, bucket: str) -> list[str]:
        async with self.client() as s3:
            listed = await s3.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def settings(self, bucket: str) -> dict[str, str]:
        """A platform's settings to keep its recordings in `bucket` of this server."""
        return {"S3_BUCKET": bucket, "S3_ENDPOINT_URL": self.url, "S3_PREFIX": PREFIX} | CREDENTIALS


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto in server mode: a real HTTP S3 on a free loopback port, for this module's tests."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while server.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"moto_server did not start (exit {server.poll()})")
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


@pytest.fixture
def bucket() -> str:
    return f"recordings-{uuid.uuid4().hex[:12]}"


async def recording_row(platform: Platform, call_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(platform.dsn)
    try:
        return await conn.fetchrow(
            "SELECT status, attempts, last_error FROM recordings WHERE call_id = $1", call_id
        )
    finally:
        await conn.close()


async def wait_row(
    platform: Platform, call_id: str, predicate: Callable[[asyncpg.Record], bool]
) -> asyncpg.Record:
    row = None
    for _ in range(200):
        row = await recording_row(platform, call_id)
        if row is not None and predicate(row):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"recording of {call_id} never matched; last seen {row}")


async def test_a_recording_is_stored_in_the_bucket_and_its_owner_is_redirected_to_it(
    moto: S3Server,
    bucket: str,
    platform_factory: Callable[..., Awaitable[Platform]],
    http: aiohttp.ClientSession,
) -> None:
    await moto.create_bucket(bucket)
    own = await platform_factory(moto.settings(bucket))
    owner = Api(http, own, await own.new_key(max_concurrent=10, max_cps=10))
    stranger = Api(http, own, await own.new_key())
    _, created, _ = await owner.create_call()
    call_id = created["call_id"]

    call = await owner.wait_recorded(call_id)

    assert call["recording_url"] == f"{own.base_url}/calls/{call_id}/recording"
    async with http.get(call["recording_url"], headers=owner.auth, allow_redirects=False) as sent:
        assert sent.status == 302
        assert sent.headers["Location"].startswith(f"{moto.url}/{bucket}/{PREFIX}{call_id}.wav?")
        assert sent.headers["Cache-Control"] == "no-store"
    async with http.get(call["recording_url"], headers=owner.auth) as response:
        assert response.status == 200
        assert [hop.status for hop in response.history] == [302]
        assert response.content_type == "audio/x-wav"
        assert response.headers["Content-Disposition"] == f'inline; filename="{call_id}.wav"'
        assert await response.read() == RECORDING.read_bytes()
    assert await moto.keys(bucket) == [f"{PREFIX}{call_id}.wav"]
    assert not list(own.recordings_dir.rglob("*.wav"))

    async with http.get(
        call["recording_url"], headers=stranger.auth, allow_redirects=False
    ) as response:
        assert response.status == 404
        assert "Location" not in response.headers


async def test_injected_upload_failures_are_retried_then_failed_without_touching_the_bucket(
    moto: S3Server,
    bucket: str,
    platform_factory: Callable[..., Awaitable[Platform]],
    http: aiohttp.ClientSession,
) -> None:
    await moto.create_bucket(bucket)
    own = await platform_factory(
        moto.settings(bucket) | {"UPLOAD_FAILURE_PROBABILITY": "1", "UPLOAD_MAX_ATTEMPTS": "3"}
    )
    api = Api(http, own, await own.new_key(max_concurrent=10, max_cps=10))
    _, created, _ = await api.create_call()

    row = await wait_row(own, created["call_id"], lambda r: r["status"] == "failed")

    assert row["attempts"] == 3
    assert "UPLOAD_FAILURE_PROBABILITY" in row["last_error"]
    assert await moto.keys(bucket) == []
    _, call, _ = await api.get_call(created["call_id"])
    assert call["recording_url"] is None


async def test_an_upload_the_store_refuses_is_retried_with_backoff_until_it_is_stored(
    moto: S3Server,
    bucket: str,
    platform_factory: Callable[..., Awaitable[Platform]],
    http: aiohttp.ClientSession,
) -> None:
    # The bucket does not exist yet: every attempt fails at S3 until it is created. Retries
    # start 200 ms apart after the time scale, time enough to see one fail.
    own = await platform_factory(
        moto.settings(bucket) | {"UPLOAD_BACKOFF_BASE_MS": "4000", "UPLOAD_MAX_ATTEMPTS": "10"}
    )
    api = Api(http, own, await own.new_key(max_concurrent=10, max_cps=10))
    _, created, _ = await api.create_call()

    refused = await wait_row(own, created["call_id"], lambda r: r["last_error"] is not None)
    assert "NoSuchBucket" in refused["last_error"]
    assert refused["status"] in ("pending", "uploading")
    await moto.create_bucket(bucket)
    await api.wait_recorded(created["call_id"], timeout=30)

    stored = await recording_row(own, created["call_id"])
    assert stored["status"] == "uploaded" and stored["attempts"] >= 2
    assert await moto.keys(bucket) == [f"{PREFIX}{created['call_id']}.wav"]


async def test_the_signed_url_names_the_stores_public_endpoint_when_it_differs(
    moto: S3Server,
    bucket: str,
    platform_factory: Callable[..., Awaitable[Platform]],
    http: aiohttp.ClientSession,
) -> None:
    # The platform reaches the store at 127.0.0.1 (Compose: minio:9000); its owners at
    # localhost (Compose: the host's published port).
    public = moto.url.replace("127.0.0.1", "localhost")
    await moto.create_bucket(bucket)
    own = await platform_factory(moto.settings(bucket) | {"S3_PUBLIC_ENDPOINT_URL": public})
    owner = Api(http, own, await own.new_key(max_concurrent=10, max_cps=10))
    _, created, _ = await owner.create_call()
    call = await owner.wait_recorded(created["call_id"])

    async with http.get(call["recording_url"], headers=owner.auth, allow_redirects=False) as sent:
        assert sent.status == 302
        location = sent.headers["Location"]
    assert location.startswith(f"{public}/{bucket}/{PREFIX}{created['call_id']}.wav?")
    assert "X-Amz-SignedHeaders=host" in location
    async with http.get(location) as response:
        assert response.status == 200
        assert await response.read() == RECORDING.read_bytes()
