"""The benchmark's own HTTP/1.1 client: lean keep-alive connections, a fixed-rate (open loop)
driver, a bounded-concurrency (closed loop) driver, and server-sent event streams.

It is a few hundred lines of asyncio protocol instead of aiohttp's client because on a 2-core
machine every microsecond the client spends is taken from the server it measures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.stats import percentile

# What one request is: method, path (after the base URL's own path), body or None.
RequestSpec = tuple[str, str, bytes | None]


class ResponseParser:
    """Incremental parser of HTTP/1.1 responses on one connection: the head, then a body by
    Content-Length, by chunks, or up to the connection's close."""

    def __init__(
        self,
        on_head: Callable[[int, dict[str, str]], None],
        on_body: Callable[[bytes], None],
        on_end: Callable[[], None],
    ) -> None:
        self._on_head, self._on_body, self._on_end = on_head, on_body, on_end
        self._buf = bytearray()
        self._state = "head"
        self._remaining = 0

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            state = self._state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                status = int(lines[0].split(" ", 2)[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if 100 <= status < 200:
                    continue
                self._on_head(status, headers)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self._state = "size"
                elif "content-length" in headers:
                    self._remaining = int(headers["content-length"])
                    self._state = "length"
                    if self._remaining == 0:
                        self._finish()
                elif status in (204, 304):
                    self._finish()
                else:
                    self._state = "close"
            elif state == "length":
                if not self._take_body():
                    return
                self._finish()
            elif state == "size":
                nl = buf.find(b"\r\n")
                if nl < 0:
                    return
                size = int(bytes(buf[:nl]).split(b";", 1)[0].strip() or b"0", 16)
                del buf[: nl + 2]
                if size:
                    self._remaining, self._state = size, "chunk"
                else:
                    self._state = "trailer"
            elif state == "chunk":
                if not self._take_body():
                    return
                self._state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self._state = "size"
            elif state == "trailer":
                nl = buf.find(b"\r\n")
                if nl < 0:
                    return
                del buf[: nl + 2]
                if nl == 0:
                    self._finish()
            else:  # "close": everything up to EOF is the body
                if buf:
                    self._on_body(bytes(buf))
                    buf.clear()
                return

    def _take_body(self) -> bool:
        """Pass on what has arrived of the `_remaining` body bytes; True once all have."""
        buf = self._buf
        if not buf:
            return False
        take = min(len(buf), self._remaining)
        self._on_body(bytes(buf[:take]))
        del buf[:take]
        self._remaining -= take
        return not self._remaining

    def eof(self) -> None:
        if self._state == "close":
            self._finish()

    def _finish(self) -> None:
        self._state = "head"
        self._on_end()


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class ConnectionClosed(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self._parser = ResponseParser(self._head, self._body, self._end)
        self._waiter: asyncio.Future[Response] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)

    def eof_received(self) -> bool:
        self._parser.eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionClosed(str(exc or "connection closed")))

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self._status, self._headers, self._chunks = status, headers, []

    def _body(self, piece: bytes) -> None:
        self._chunks.append(piece)

    def _end(self) -> None:
        if self._headers.get("connection", "").lower() == "close":
            self.alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Response(self._status, self._headers, b"".join(self._chunks)))

    async def send(self, raw: bytes) -> Response:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class Client:
    """Keep-alive connections to one server, at most `max_connections`; a request beyond them
    waits for a free one, and the wait counts in its latency."""

    def __init__(
        self, base_url: str, headers: dict[str, str] | None = None, max_connections: int = 64
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// base URLs are supported, not {base_url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        common = {"Host": host_header, "Connection": "keep-alive"} | (headers or {})
        self._head = "".join(f"{name}: {value}\r\n" for name, value in common.items())
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._all: set[_Connection] = set()

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """The bytes of one request (build them once when a request repeats)."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        length = ""
        if body is not None:
            length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n{self._head}{extra}{length}\r\n"
        return head.encode("latin-1") + (body or b"")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(conn)
        return conn

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.alive:
                return conn
            self._forget(conn)
        if self._open < self.max_connections:
            return await self._open_one()
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        conn = await waiter
        if conn is not None:
            return conn
        # A connection died: its slot is ours to open again.
        return await self._open_one()

    async def _open_one(self) -> _Connection:
        """Open a connection in a free slot; a failure frees the slot for the next waiter."""
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _release(self, conn: _Connection) -> None:
        if not conn.alive:
            self._forget(conn)
            conn.close()
            self._wake_one()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def send(self, raw: bytes) -> Response:
        conn = await self._acquire()
        try:
            return await conn.send(raw)
        except BaseException:
            conn.close()
            raise
        finally:
            self._release(conn)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return await self.send(self.raw(method, path, body, headers))

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        self._open = 0


# -- drivers --------------------------------------------------------------------------------


@dataclass
class Timings:
    """Latencies of one run (ms), with how many requests failed and how."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    # Connection errors and timeouts, by exception name.
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    # An example body per non-2xx status, to say what went wrong.
    examples: dict[int, str] = field(default_factory=dict)
    # How late the client itself sent (ms after the intended time): a busy client shows here.
    send_lag_ms: list[float] = field(default_factory=list)
    sent: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    def summary(self) -> dict[str, Any]:
        values = sorted(self.latencies_ms)
        lag = sorted(self.send_lag_ms)
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(self.failures),
            "error_examples": {str(k): v for k, v in self.examples.items()},
            "elapsed_s": round(self.elapsed_s, 3),
            "ok_per_s": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else None,
            "latency_ms": {
                "p50": round(percentile(values, 50), 2),
                "p90": round(percentile(values, 90), 2),
                "p99": round(percentile(values, 99), 2),
                "p999": round(percentile(values, 99.9), 2),
                "max": round(values[-1], 2) if values else math.nan,
            },
            "client_send_lag_ms": {
                "p99": round(percentile(lag, 99), 2),
                "max": round(lag[-1], 2) if lag else math.nan,
            },
        }


OnResponse = Callable[[int, Response | None, float, float], None]


async def open_loop(
    client: Client,
    rate_per_s: float,
    duration_s: float,
    make: Callable[[int], bytes],
    *,
    on_response: OnResponse | None = None,
    on_tick: Callable[[Timings], None] | None = None,
    timeout_s: float = 10.0,
    count: int | None = None,
) -> Timings:
    """Send `make(i)` at a fixed rate for `duration_s` (or `count` requests), whatever the
    server does; each latency runs from the request's intended send time, so a stalled server
    shows as latency instead of as fewer requests. `on_response(i, response or None, intended,
    done)` sees every answer."""
    loop = asyncio.get_running_loop()
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    clock = time.perf_counter
    timings = Timings()
    total = count if count is not None else max(1, round(rate_per_s * duration_s))
    interval = 1.0 / rate_per_s
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        response: Response | None = None
        try:
            async with asyncio.timeout(timeout_s):
                response = await client.send(make(i))
        except TimeoutError:
            timings.failures["timeout"] += 1
        except (OSError, ConnectionClosed) as exc:
            timings.failures[type(exc).__name__] += 1
        done = clock()
        timings.latencies_ms.append((done - intended) * 1000)
        if response is not None:
            timings.statuses[response.status] += 1
            if not 200 <= response.status < 300 and response.status not in timings.examples:
                timings.examples[response.status] = response.body[:300].decode("utf-8", "replace")
        if on_response is not None:
            on_response(i, response, intended, done)

    start = clock() + 0.02
    next_tick = start
    for i in range(total):
        intended = start + i * interval
        now = clock()
        if intended > now:
            await asyncio.sleep(intended - now)
            now = clock()
        timings.send_lag_ms.append((now - intended) * 1000)
        task = loop.create_task(one(i, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
        timings.sent += 1
        if on_tick is not None and now >= next_tick:
            on_tick(timings)
            next_tick = now + 0.25
    if pending:
        await asyncio.gather(*pending)
    timings.elapsed_s = clock() - start
    if on_tick is not None:
        on_tick(timings)
    return timings


async def closed_loop(
    client: Client,
    total: int,
    concurrency: int,
    make: Callable[[int], bytes],
    *,
    on_done: Callable[[int], None] | None = None,
    timeout_s: float = 30.0,
) -> list[Response | None]:
    """Send `total` requests, `concurrency` at a time; the answers in request order (None for a
    request that failed to get one)."""
    results: list[Response | None] = [None] * total
    next_index = 0
    finished = 0

    async def runner() -> None:
        nonlocal next_index, finished
        while next_index < total:
            i = next_index
            next_index += 1
            with contextlib.suppress(TimeoutError, OSError, ConnectionClosed):
                async with asyncio.timeout(timeout_s):
                    results[i] = await client.send(make(i))
            finished += 1
            if on_done is not None:
                on_done(finished)

    await asyncio.gather(*(runner() for _ in range(min(concurrency, total))))
    return results


# -- server-sent events ---------------------------------------------------------------------


class SseStream(asyncio.Protocol):
    """One server-sent event stream. `on_event(fields, received_at)` is called for each complete
    event, with the time.perf_counter() at which its last bytes arrived."""

    def __init__(self, on_event: Callable[[dict[str, str], float], None]) -> None:
        self._on_event = on_event
        self._parser = ResponseParser(self._head, self._body, self._end)
        self._text = ""
        self._fields: dict[str, str] = {}
        self._now = 0.0
        self.transport: asyncio.Transport | None = None
        self.status: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self.closed: asyncio.Future[None] | None = None
        self.error_body = b""
        self._status_code = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.status = loop.create_future()
        self.closed = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self._now = time.perf_counter()
        self._parser.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser.eof()
        if self.status is not None and not self.status.done():
            self.status.set_exception(ConnectionClosed(str(exc or "closed before answering")))
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self._status_code = status
        if status == 200 and self.status is not None and not self.status.done():
            self.status.set_result((status, headers))

    def _body(self, piece: bytes) -> None:
        if self._status_code != 200:
            self.error_body += piece
            return
        self._text += piece.decode("utf-8")
        while True:
            nl = self._text.find("\n")
            if nl < 0:
                return
            line = self._text[:nl].rstrip("\r")
            self._text = self._text[nl + 1 :]
            if not line:
                if self._fields:
                    fields, self._fields = self._fields, {}
                    self._on_event(fields, self._now)
                continue
            if line.startswith(":"):
                continue  # a comment (keep-alive ping)
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data" and "data" in self._fields:
                self._fields["data"] += "\n" + value
            else:
                self._fields[name] = value

    def _end(self) -> None:
        if self._status_code != 200 and self.status is not None and not self.status.done():
            self.status.set_result((self._status_code, {}))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_stream(
    client: Client,
    path: str,
    on_event: Callable[[dict[str, str], float], None],
    headers: dict[str, str] | None = None,
) -> tuple[SseStream, int, bytes]:
    """Open a stream at `path` (with `headers` beside the client's own); returns it with the
    answer's status (and body when not 200)."""
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: SseStream(on_event), client.host, client.port)
    assert stream.transport is not None and stream.status is not None
    asked = {"Accept": "text/event-stream"} | (headers or {})
    stream.transport.write(client.raw("GET", path, headers=asked))
    status, _ = await stream.status
    if status != 200 and stream.closed is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.shield(stream.closed)
    return stream, status, stream.error_body


async def gather_limited(coros: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run the coroutine factories at most `limit` at a time; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in coros), return_exceptions=True)
