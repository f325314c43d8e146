"""The system one configuration of the benchmark runs on: a fresh database, a private
redis-server, the platform's processes (started one by one, or from the Procfile by the runner
scripts/run uses) and the bare ceiling app; stopped again whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.bare import CREATE_TABLE
from bench.configurations import PROCFILE_PROCESSES, Configuration
from bench.http import Client
from bench.procfs import cpu_seconds
from core.settings import Settings
from db.pool import with_database
from devstack import databases
from devstack.keys import Key, new_key
from devstack.layout import MODULES, Layout, start_layout, start_process
from devstack.ports import free_port
from devstack.processes import Process, children, command_line, descendants, parent_pid
from devstack.redis import RedisServer
from devstack.stores import redact

# Per-key limits of the benchmark's keys: large enough never to refuse.
HUGE_LIMIT = 1_000_000_000


@dataclass
class System:
    """Stores and processes this run started for one configuration, and how to reach them."""

    workdir: Path
    configuration: Configuration
    with_platform: bool = True
    database: str = field(default_factory=lambda: databases.scratch_name("mc_bench"))
    processes: dict[str, Process] = field(default_factory=dict)
    database_created: bool = False

    def __post_init__(self) -> None:
        self.server_dsn = databases.server_dsn(databases.LOCAL_SERVER_DSN)
        self.dsn = with_database(self.server_dsn, self.database)
        self.redis_server = RedisServer(self.workdir / "redis.log", "--maxclients", "20000")
        self.redis_url = self.redis_server.url()
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.bare_port = free_port()
        self.bare_url = f"http://127.0.0.1:{self.bare_port}"
        # The recordings are throwaway, so they go to the system's temp dir: on this workplace's
        # machines a file written under /work costs ~0.8 ms of CPU per 32 KB (0.1 ms under
        # /tmp on the same ext4), which would be measured as the workers' cost.
        self.recordings_dir = Path(tempfile.mkdtemp(prefix="mc-bench-recordings-"))
        self.env = self._environment()
        self.pool: asyncpg.Pool | None = None
        self.redis: Redis | None = None
        self._platform_pids: dict[str, int] = {}
        # Where the processes of a scenario's own layout log (laid_out).
        self._layout_workdir = self.workdir

    def _environment(self) -> dict[str, str]:
        """The processes' environment: ours without any setting of the platform (so that the
        configuration's own are all it gets), the configuration's settings, and where the
        stores and the recordings are; the venv's programs first on PATH, as scripts/run has."""
        settings = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env |= self.configuration.settings | {
            "DATABASE_URL": self.dsn,
            "REDIS_URL": self.redis_url,
            "RECORDINGS_DIR": str(self.recordings_dir),
        }
        if self.configuration.runner == "direct":
            env |= {"HOST": "127.0.0.1", "PORT": str(self.api_port), "PYTHONUNBUFFERED": "1"}
        return env

    # -- start and stop ---------------------------------------------------------------------

    async def start(self, say: Any = print) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        say(f"database {self.database} on {redact(self.server_dsn)}")
        await databases.create_database(self.server_dsn, self.database)
        self.database_created = True
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=3)
        await self.pool.execute(CREATE_TABLE)
        say(f"redis-server on port {self.redis_server.port}")
        self.processes["redis"] = self.redis_server.start()
        self.redis = Redis.from_url(self.redis_url)
        if not self.with_platform:
            return
        say(f"{self.configuration.name}: {self.configuration.describe()}; API on {self.base_url}")
        await self._start_platform()

    async def _start_platform(self) -> None:
        """The configuration's own processes: the runner, or the bench's layout of them."""
        if self.configuration.runner == "procfile":
            self._add("runner", self._runner_command())
        else:
            layout = Layout(workers=self.configuration.workers)
            self.processes |= start_layout(layout, self.env, self.workdir, [self.api_port])
        await self._wait_http(self.base_url + "/ready", self._main_process)
        await self._find_platform_pids()

    def _stop_platform(self) -> None:
        """Stop the platform's processes (the stores and the bare app stay)."""
        for name in reversed(list(self.processes)):
            if name not in ("redis", "bare"):
                # The runner gives its processes 5 s to stop before it kills them.
                self.processes.pop(name).stop(12 if name == "runner" else 5)
        self._platform_pids = {}

    @contextlib.asynccontextmanager
    async def laid_out(self, layout: Layout) -> AsyncIterator[list[str]]:
        """Run `layout` for the block instead of the configuration's own processes, on the same
        stores with the same settings, each process started by the bench whatever the
        configuration's runner (the Procfile runner stops every process when one ends, and a
        scenario kills some). Yields the API processes' base URLs; afterwards the layout's
        processes are stopped and the configuration's own started again."""
        self._stop_platform()
        ports = [free_port() for _ in range(layout.apis)]
        self._layout_workdir = self.workdir / "layout"
        self._layout_workdir.mkdir(parents=True, exist_ok=True)
        try:
            started = start_layout(layout, self.env, self._layout_workdir, ports)
            self.processes |= started
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            apis = [name for name, module in layout.members() if module == "api"]
            for url, name in zip(urls, apis, strict=True):
                await self._wait_http(url + "/ready", name)
            self._platform_pids = {name: p.pid for name, p in started.items() if p.pid}
            yield urls
        finally:
            self._stop_platform()
            await self._start_platform()

    def restart(self, name: str) -> Process:
        """Start a worker or scheduler of the running layout again under its name, as a process
        manager would after it died."""
        module = name.rstrip("0123456789")
        assert module in ("worker", "scheduler"), name
        old = self.processes.get(name)
        if old is not None:
            old.stop()
        process = start_process(name, module, self.env, self._layout_workdir)
        self.processes[name] = process
        if process.pid:
            self._platform_pids[name] = process.pid
        return process

    def _runner_command(self) -> list[str]:
        """scripts/run's own command (`python -m devstack.runner --port PORT ...`)."""
        return [
            sys.executable,
            "-m",
            "devstack.runner",
            "--port",
            str(self.api_port),
            *PROCFILE_PROCESSES,
        ]

    @property
    def _main_process(self) -> str:
        return "runner" if self.configuration.runner == "procfile" else "api"

    async def start_bare(self) -> None:
        if "bare" in self.processes:
            return
        self._add("bare", [sys.executable, "-m", "bench.bare"], {"BARE_PORT": str(self.bare_port)})
        await self._wait_http(self.bare_url + "/calls/none", "bare", ok=(200, 404))

    def _add(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        """A process that is not one of the platform's modules (the runner, the bare app)."""
        process = Process(name, args, self.env | (env or {}), self.workdir / f"{name}.log")
        self.processes[name] = process
        process.start()
        return process

    async def _wait_http(self, url: str, name: str, ok: tuple[int, ...] = (200,)) -> None:
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

    async def _find_platform_pids(self) -> None:
        """The pid of each platform process: ours when we started it, else found below the
        runner (its shells may still be starting the later ones when the API answers)."""
        if self.configuration.runner != "procfile":
            started = {"api", "scheduler"} | {
                f"worker{i + 1}" for i in range(self.configuration.workers)
            }
            self._platform_pids = {
                name: p.pid for name, p in self.processes.items() if p.pid and name in started
            }
            return
        runner = self.processes["runner"].pid
        assert runner is not None
        deadline = time.monotonic() + 15
        while True:
            found = platform_processes(descendants(runner))
            if all(any(n.startswith(m) for n in found) for m in MODULES):
                self._platform_pids = found
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the runner did not start {', '.join(MODULES)}:\n" + self.logs()
                )
            await asyncio.sleep(0.2)

    def logs(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.processes.values())

    async def stop(self) -> None:
        """Stop what this run started, in reverse order, and drop its database."""
        for name, process in reversed(list(self.processes.items())):
            if name != "redis":
                # The runner gives its processes 5 s to stop before it kills them.
                process.stop(12 if name == "runner" else 5)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        self.redis_server.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
        if self.database_created:
            await databases.drop_database(self.server_dsn, self.database)
        shutil.rmtree(self.recordings_dir, ignore_errors=True)

    def kill_all(self) -> None:
        """Last resort at interpreter exit: nothing we started may outlive us."""
        for process in self.processes.values():
            if process.alive and process.pid is not None:
                for pid in descendants(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.signal(signal.SIGKILL)

    # -- keys --------------------------------------------------------------------------------

    async def new_key(
        self, purpose: str, *, max_concurrent: int = HUGE_LIMIT, max_cps: int = HUGE_LIMIT
    ) -> Key:
        assert self.pool is not None
        return await new_key(
            self.pool, f"bench-{purpose}", max_concurrent=max_concurrent, max_cps=max_cps
        )

    # -- figures -----------------------------------------------------------------------------

    @property
    def api_pid(self) -> int | None:
        return self._platform_pids.get("api")

    @property
    def worker_pids(self) -> list[int]:
        return [pid for name, pid in self._platform_pids.items() if name.startswith("worker")]

    def pids(self) -> dict[str, int]:
        """Every process of ours by name: the platform's, the stores', the bare app's, and the
        runner's own (`runner:<pid>`, with any shell between it and a process)."""
        found = {name: p.pid for name, p in self.processes.items() if p.pid and p.alive}
        if "runner" in found:
            runner = found.pop("runner")
            platform = set(self._platform_pids.values())
            for pid in [runner, *descendants(runner)]:
                if pid not in platform:
                    found[f"runner:{pid}"] = pid
        return found | self._platform_pids

    async def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each process of ours and by every process of a PostgreSQL
        on this machine (backends, WAL writer, checkpointer: one figure for all of them)."""
        snapshot: dict[str, float] = {}
        for name, pid in self.pids().items():
            used = cpu_seconds(pid)
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


def platform_processes(pids: list[int]) -> dict[str, int]:
    """Which of `pids` run the platform's modules (`python -m api` and so on, not the shells
    that start them), named api, worker1, worker2, ..., scheduler."""
    found: dict[str, int] = {}
    workers = 0
    for pid in sorted(pids):
        try:
            argv = command_line(pid).split()
        except OSError:
            continue
        if len(argv) < 3 or not Path(argv[0]).name.startswith("python") or argv[1] != "-m":
            continue
        module = argv[2]
        if module == "worker":
            workers += 1
            found[f"worker{workers}"] = pid
        elif module in MODULES:
            found[module] = pid
    return found


def _origin(url: str) -> str:
    match = re.match(r"^(https?://[^/]+)", url)
    return match.group(1) if match else url
