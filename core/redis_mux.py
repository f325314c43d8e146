"""One multiplexed Redis connection for the request paths: every command of every coroutine goes
down the same socket, and the commands issued in one turn of the event loop leave in one write.

redis-py's asyncio client takes a pooled connection per command and pays for it: ~60 µs of CPU
per HMGET at 64 concurrent requests here, against ~4 µs for the same command sent this way
(docs/PERFORMANCE.md). Redis answers in order, so a queue of futures pairs replies with their
commands, and a cancelled caller's reply is read and dropped without disturbing the others.

The command methods (`hmget`, `zadd`, `eval`, `publish`, ...) are redis-py's own, building the
same arguments; only the transport is ours. Replies come back raw, as redis-py gives them with
`decode_responses=False` for the commands used on this client (no response callbacks run).
Pub/sub, blocking commands and transactions stay on redis-py's pooled client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import parse_url
from redis.commands.core import AsyncCoreCommands
from redis.exceptions import AuthenticationError, DataError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# A command that meets a dropped connection is sent again on a new one, this many times, after
# these pauses (as the pooled client's Retry does: a command may then run twice, which every
# caller here tolerates).
RETRY_PAUSES_S = (0.01, 0.05, 0.25)

_P = TypeVar("_P", bound=asyncio.Protocol)


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool) or arg is None:
        raise DataError(f"Invalid input of type {type(arg).__name__}: convert it to str first")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    if isinstance(arg, memoryview):
        return arg.tobytes()
    raise DataError(f"Invalid input of type {type(arg).__name__}")


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP; a command name of several words ("SCRIPT LOAD") is split."""
    words = [_encode(arg) for arg in args]
    if b" " in words[0]:
        words[:1] = words[0].split()
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


async def _replies(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The futures' results, errors in their place; one future is awaited without a gather."""
    if len(futures) == 1:
        try:
            return [await futures[0]]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*futures, return_exceptions=True)


class _Line(asyncio.Protocol):
    """One connection: commands out in order, replies back to their futures in order."""

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._outgoing: list[bytes] = []
        self._timeout_s = timeout_s
        # When a reply last came (or the queue last started waiting): the watchdog's clock.
        self._progress = self._loop.time()
        self._failure: Exception | None = None
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = self._loop.create_future()

    @property
    def usable(self) -> bool:
        return self._failure is None and self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._watchdog = self._loop.call_later(self._timeout_s / 4, self._watch)

    def send(self, commands: list[bytes]) -> list[asyncio.Future[Any]]:
        if not self.usable:
            raise self._failure or RedisConnectionError("Redis connection is not open")
        if not self._waiting:
            self._progress = self._loop.time()
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.extend(commands)
        futures = [self._loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        return futures

    def _flush(self) -> None:
        if self._outgoing and self.usable:
            assert self._transport is not None
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                future = self._waiting.popleft()
                if future.done():  # its caller was cancelled; the reply is dropped
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(BaseParser.parse_error(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self._fail(RedisConnectionError(f"Redis protocol error: {exc!r}"))
            return
        self._progress = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis closed the connection: {exc or 'end of stream'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _watch(self) -> None:
        if self._waiting and self._loop.time() - self._progress > self._timeout_s:
            self._fail(RedisTimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))
            return
        self._watchdog = self._loop.call_later(self._timeout_s / 4, self._watch)

    def _fail(self, error: Exception) -> None:
        """Fail every waiting command with `error` and close; later sends raise it."""
        if self._failure is None:
            self._failure = error
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._failure)
        self._outgoing.clear()
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(RedisConnectionError("Redis connection closed by the client"))


class _Subscriber(asyncio.Protocol):
    """A connection in subscribed mode: each message's payload handed to its channel's handler
    as it is read, with no queue or task between them."""

    def __init__(self, handlers: dict[str, Callable[[bytes], None]]) -> None:
        loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._handlers = {channel.encode(): handler for channel, handler in handlers.items()}
        self._transport: asyncio.Transport | None = None
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[Exception] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def send(self, command: tuple[Any, ...]) -> None:
        assert self._transport is not None
        self._transport.write(pack(command))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, list) and reply[0] == b"message":
                    self._handlers[reply[1]](reply[2])
                elif isinstance(reply, list) and reply[0] == b"subscribe":
                    # One confirmation per channel, each with the count subscribed so far.
                    if reply[2] == len(self._handlers) and not self.subscribed.done():
                        self.subscribed.set_result(None)
                elif isinstance(reply, hiredis.ReplyError):
                    self._end(BaseParser.parse_error(str(reply)))
                # Anything else is an AUTH or SELECT answer: nothing to do.
        except hiredis.ProtocolError as exc:
            self._end(RedisConnectionError(f"Redis protocol error: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(RedisConnectionError(f"Redis closed the connection: {exc or 'end of stream'}"))

    def _end(self, error: Exception) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._end(RedisConnectionError("Redis connection closed by the client"))


class Script:
    """A Lua script run by its digest, loaded on the first NOSCRIPT (as redis-py's Script)."""

    def __init__(self, client: MultiplexedRedis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None) -> Any:
        keys, args = keys or [], args or []
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._client.script_load(self._script)
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)


class MultiplexedRedis(AsyncCoreCommands):
    """A Redis client over one shared connection, opened on first use and again after a drop."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._address = (host, port, path, tls)
        self._hello = [("AUTH", *filter(None, (username, password)))] if password else []
        if db:
            self._hello.append(("SELECT", db))
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._line: _Line | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MultiplexedRedis:
        parsed = parse_url(url)
        return cls(
            host=parsed.get("host", "localhost"),
            port=parsed.get("port", 6379),
            path=parsed.get("path"),
            db=int(parsed.get("db", 0) or 0),
            username=parsed.get("username"),
            password=parsed.get("password"),
            tls=url.startswith("rediss://"),
            **options,
        )

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        (reply,) = await self.run([pack(args)])
        return reply

    async def run(self, commands: list[bytes], *, raise_on_error: bool = True) -> list[Any]:
        """Send packed commands together and return their replies in order; the first error
        reply is raised (after all have come back) unless `raise_on_error` is False."""
        for pause_s in (*RETRY_PAUSES_S, None):
            line = self._line if self._line is not None and self._line.usable else None
            try:
                if line is None:
                    line = await self._connect()
                futures = line.send(commands)
                replies = await _replies(futures)
            except RedisConnectionError as exc:
                if pause_s is None or isinstance(exc, AuthenticationError):
                    raise
                await asyncio.sleep(pause_s)
                continue
            dropped = [r for r in replies if isinstance(r, RedisConnectionError)]
            if dropped and pause_s is not None:
                await asyncio.sleep(pause_s)
                continue
            if raise_on_error:
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
            return replies
        raise AssertionError("unreachable")

    async def listen(
        self,
        handlers: dict[str, Callable[[bytes], None]],
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        """Subscribe to the channels of `handlers` on a connection of its own and hand each
        message's payload to its channel's handler as it is read, until the connection is
        lost: that is raised."""
        subscriber = await self._open(lambda: _Subscriber(handlers))
        try:
            for command in [*self._hello, ("SUBSCRIBE", *handlers)]:
                subscriber.send(command)
            async with asyncio.timeout(self._timeout_s):
                await subscriber.subscribed
            if on_subscribed is not None:
                on_subscribed()
            raise await subscriber.lost
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not confirm the subscription: {exc!r}") from exc
        finally:
            subscriber.close()

    async def _open(self, protocol: Callable[[], _P]) -> _P:
        loop = asyncio.get_running_loop()
        host, port, path, tls = self._address
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if path:
                    _, opened = await loop.create_unix_connection(protocol, path)
                else:
                    context = ssl.create_default_context() if tls else None
                    _, opened = await loop.create_connection(protocol, host, port, ssl=context)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"Cannot connect to Redis: {exc!r}") from exc
        return opened

    async def _connect(self) -> _Line:
        async with self._connecting:
            if self._line is not None and self._line.usable:
                return self._line
            line = await self._open(lambda: _Line(self._timeout_s))
            if self._hello:
                # AUTH and SELECT: a refusal (a wrong password) is raised as Redis words it.
                for reply in await _replies(line.send([pack(c) for c in self._hello])):
                    if isinstance(reply, Exception):
                        line.close()
                        raise reply
            self._line = line
            return line

    def pipeline(self, transaction: bool = False) -> MultiplexedPipeline:
        if transaction:
            raise NotImplementedError("transactions go through the pooled redis-py client")
        return MultiplexedPipeline(self)

    def register_script(self, script: str) -> Script:  # type: ignore[override]
        return Script(self, script)

    async def aclose(self, timeout_s: float = 1.0) -> None:
        if self._line is not None:
            self._line.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._line.closed), timeout_s)
            self._line = None


class MultiplexedPipeline(AsyncCoreCommands):
    """Commands queued, then sent together by `execute` (no MULTI: not a transaction)."""

    def __init__(self, client: MultiplexedRedis) -> None:
        self._client = client
        self._commands: list[bytes] = []

    def execute_command(self, *args: Any, **options: Any) -> MultiplexedPipeline:  # type: ignore[override]
        self._commands.append(pack(args))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        return await self._client.run(commands, raise_on_error=raise_on_error)

    def __len__(self) -> int:
        return len(self._commands)

    async def __aenter__(self) -> MultiplexedPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._commands = []


# Either client, or either kind of pipeline: the code that queues commands takes both.
Client = Redis | MultiplexedRedis
Batch = Pipeline | MultiplexedPipeline
