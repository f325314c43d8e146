"""Where recordings are kept: a local directory by default, an S3-compatible bucket when set."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import mimetypes
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from aiobotocore.client import AioBaseClient
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from core.settings import Settings


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A recording the API process serves itself, under `filename`."""

    path: Path
    filename: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """A recording the client fetches from the store itself, at a short-lived signed URL."""

    url: str


Location = LocalFile | Redirect


class RecordingStorage(Protocol):
    async def put(self, call_id: str, source: Path) -> str:
        """Store `source` as the call's recording; returns its storage key."""
        ...

    async def locate(self, storage_key: str, filename: str) -> Location | None:
        """Where the owner gets the recording at `storage_key`, or None when none is stored."""
        ...

    async def delete(self, storage_keys: list[str]) -> None:
        """Delete the recordings at `storage_keys`; one already gone is no error."""
        ...

    async def aclose(self) -> None:
        """Release what the storage holds open (clients, connections)."""
        ...


def object_name(call_id: str, source: Path) -> str:
    """The recording's name in its folder or prefix: the call id and the source's suffix.

    A call id that is not one plain name (a separator, a leading dot) is refused, so no key can
    point outside the storage's folder or prefix.
    """
    if not call_id or call_id.startswith(".") or "/" in call_id or "\\" in call_id:
        raise ValueError(f"refused recording name {call_id!r}")
    return f"{call_id}{source.suffix}"


def download_name(ref: str, storage_key: str) -> str:
    """The file name a recording is served under: the call's id (a UUID, or a sender's name of
    URL-safe characters, never a quote) and the stored suffix."""
    return ref + PurePosixPath(storage_key).suffix


def inline_disposition(filename: str) -> str:
    """The Content-Disposition a recording is served with, from either backend."""
    return f'inline; filename="{filename}"'


class LocalStorage:
    """Files under `root`, keyed by their path relative to it (`recordings/<call id>.wav`).

    Every recording of one source has the same bytes, so the bytes are written once, as a blob
    under `.blobs/` named by their SHA-256, and each call's recording is a hard link to it: a
    file of its own name with no bytes copied (a fifth of the CPU of a copy and fsync per call,
    measured: docs/PERFORMANCE.md). Nothing writes to a stored recording, so sharing the bytes
    is safe. A blob at the file system's link limit is followed by a fresh copy; a file system
    without hard links gets a copy per call.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        # (source, its size and mtime) -> the generation and path of the blob linked to now.
        self._blobs: dict[tuple[Path, int, int], tuple[int, Path]] = {}
        self._blob_lock = threading.Lock()
        self._links = True
        self._syncs = _DirectorySyncs()

    async def put(self, call_id: str, source: Path) -> str:
        key = await asyncio.to_thread(self._put, call_id, source)
        # The database records the upload once this returns: the name must be on disk.
        await self._syncs.sync((self.root / key).parent)
        return key

    async def locate(self, storage_key: str, filename: str) -> Location | None:
        path = await asyncio.to_thread(self.path_of, storage_key)
        return LocalFile(path, filename) if path else None

    async def delete(self, storage_keys: list[str]) -> None:
        await asyncio.to_thread(self._delete, storage_keys)

    def _delete(self, storage_keys: list[str]) -> None:
        for key in storage_keys:
            path = self.path_of(key)  # only files under the root
            if path is not None:
                path.unlink(missing_ok=True)

    async def aclose(self) -> None:
        return None

    def path_of(self, storage_key: str) -> Path | None:
        """The stored file for `storage_key`; None when it is missing or outside the root."""
        path = (self.root / storage_key).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def _put(self, call_id: str, source: Path) -> str:
        key = f"recordings/{object_name(call_id, source)}"
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        while self._links:
            blob = self._blob(source)
            try:
                self._link(blob, target)
                return key
            except OSError as exc:
                if exc.errno == errno.EMLINK:
                    self._blob(source, full=blob)  # the next put links to a fresh copy
                elif exc.errno in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                    self._links = False  # no hard links on this file system: copy from now on
                else:
                    raise
        _write_whole(source, target)
        return key

    def _blob(self, source: Path, *, full: Path | None = None) -> Path:
        """The blob holding `source`'s bytes, written on first use. `full` says that blob has
        reached the link limit: the next generation (a fresh copy) takes its place."""
        stat = source.stat()
        ident = (source, stat.st_size, stat.st_mtime_ns)
        with self._blob_lock:
            current = self._blobs.get(ident)
            if current is None or (full is not None and current[1] == full):
                generation = 0 if current is None else current[0] + 1
                digest = hashlib.sha256(source.read_bytes()).hexdigest()
                blob = self.root / ".blobs" / f"{digest}.{generation}{source.suffix}"
                if not blob.exists():
                    blob.parent.mkdir(parents=True, exist_ok=True)
                    _write_whole(source, blob)
                current = self._blobs[ident] = (generation, blob)
            return current[1]

    @staticmethod
    def _link(blob: Path, target: Path) -> None:
        """Link `target` to `blob` atomically (a link beside it renamed over), durably."""
        partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        os.link(blob, partial)
        try:
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise


class _DirectorySyncs:
    """fsync of a directory, shared by the puts waiting for one: an fsync that starts after a
    put's rename makes that rename durable, so the puts of a batch share one fsync instead of
    paying one each (each forces a journal commit)."""

    def __init__(self) -> None:
        # Per directory: how many fsyncs were started, and the last one finished.
        self._counts: dict[Path, list[int]] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    async def sync(self, directory: Path) -> None:
        counts = self._counts.setdefault(directory, [0, 0])
        wanted = counts[0] + 1  # the first fsync to start from now on
        async with self._locks.setdefault(directory, asyncio.Lock()):
            if counts[1] >= wanted:
                return  # one that started after this put's rename has finished
            counts[0] += 1
            started = counts[0]
            await asyncio.to_thread(_fsync_directory, directory)
            counts[1] = started


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_whole(source: Path, target: Path) -> None:
    """Copy `source` to `target` through a uniquely named file beside it, renamed over once its
    bytes are on disk, so a reader never sees half a file and two writers never share one."""
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


# One attempt per put: Recordings owns retries and backoff (UPLOAD_MAX_ATTEMPTS counts real
# attempts, not botocore's hidden ones). Checksums only when an operation requires them, as
# several S3-compatible stores refuse the newer default checksum headers. SigV4 everywhere:
# botocore may presign with the deprecated SigV2 otherwise.
_S3_CONFIG = AioConfig(
    signature_version="s3v4",
    connect_timeout=5,
    read_timeout=30,
    retries={"mode": "standard", "total_max_attempts": 1},
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)


# The most keys one DeleteObjects request takes.
_S3_DELETE_MAX = 1_000


class S3Storage:
    """Objects in an S3-compatible bucket, keyed `<prefix><call id>.wav`.

    The client is opened on first use, on the loop of the process that uses it, and kept until
    `aclose`: one client (one connection pool) per process, not one per upload. Credentials are
    botocore's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles).

    `public_endpoint_url` is the store as the owners reach it, when that differs from where the
    platform reaches it (Compose: the processes reach MinIO as http://minio:9000, a client on
    the host at http://localhost:9000). A signed URL names its host, so the owners' one is
    signed for theirs, by a client of its own that only signs (no request goes through it).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "recordings/",
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        presign_ttl_s: int = 3600,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.region = region
        self.presign_ttl_s = presign_ttl_s
        # By endpoint: the platform's, and the owners' when it differs.
        self._clients: dict[str | None, AioBaseClient] = {}
        self._opening = asyncio.Lock()
        self._lifetime = contextlib.AsyncExitStack()

    async def put(self, call_id: str, source: Path) -> str:
        key = self.prefix + object_name(call_id, source)
        body = await asyncio.to_thread(source.read_bytes)
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        return key

    async def locate(self, storage_key: str, filename: str) -> Location | None:
        # Signing is local (no request to the store): the key comes from an uploaded row.
        s3 = await self._s3(self.public_endpoint_url or self.endpoint_url)
        url = await s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": storage_key,
                "ResponseContentDisposition": inline_disposition(filename),
            },
            ExpiresIn=self.presign_ttl_s,
        )
        return Redirect(url)

    async def delete(self, storage_keys: list[str]) -> None:
        s3 = await self._s3()
        for start in range(0, len(storage_keys), _S3_DELETE_MAX):
            batch = storage_keys[start : start + _S3_DELETE_MAX]
            await s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )

    async def aclose(self) -> None:
        async with self._opening:
            self._clients.clear()
            await self._lifetime.aclose()

    async def _s3(self, endpoint_url: str | None = None) -> AioBaseClient:
        """The client for `endpoint_url` (default: the platform's endpoint)."""
        endpoint_url = endpoint_url or self.endpoint_url
        client = self._clients.get(endpoint_url)
        if client is None:
            async with self._opening:
                client = self._clients.get(endpoint_url)
                if client is None:
                    client = self._clients[endpoint_url] = await self._lifetime.enter_async_context(
                        get_session().create_client(
                            "s3",
                            region_name=self.region,
                            endpoint_url=endpoint_url,
                            config=_S3_CONFIG,
                        )
                    )
        return client


def storage_for(settings: Settings) -> RecordingStorage:
    """S3 when S3_BUCKET is set, else the local RECORDINGS_DIR."""
    if settings.s3_bucket:
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            public_endpoint_url=settings.s3_public_endpoint_url or None,
            region=settings.s3_region,
            presign_ttl_s=settings.s3_presign_ttl_s,
        )
    return LocalStorage(settings.recordings_dir)
