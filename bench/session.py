"""What every scenario of the benchmark needs: the options, the configuration and system under
test, keys and clients, CPU accounting around a measurement, waiting for calls to finish and
checking them, and where the figures go."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress, TaskID

from bench import readback, verify
from bench import wrk as wrk_runner
from bench.configurations import Configuration
from bench.http import Client
from bench.procfs import cpu_share
from bench.pyspy import Profiler
from bench.system import System
from bench.targets import Figure, Load

# A key's secret, and its id when the key is of our own platform.
KeyPair = tuple[str, str | None]


@dataclass
class Bench:
    """What every scenario needs: options, the system under test, and where results go."""

    opts: Any
    load: Load
    configuration: Configuration
    console: Console
    progress: Progress
    base_url: str
    workdir: Path
    system: System | None = None  # the platform this run started (None with --base-url)
    ceiling: System | None = None  # where the bare app runs (the same System when ours)
    shared_key: str | None = None
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    ceilings: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def owns_database(self) -> bool:
        return self.system is not None and self.system.with_platform

    @property
    def api_pid(self) -> int | None:
        return self.system.api_pid if self.system else self.opts.api_pid

    async def key(self, purpose: str, **limits: int) -> KeyPair:
        """A key for one scenario (a fresh one with huge limits on our own platform)."""
        if self.system is not None:
            key = await self.system.new_key(purpose, **limits)
            return key.secret, key.id
        assert self.shared_key is not None
        return self.shared_key, None

    async def keys(
        self, purpose: str, *, events_per_s: float = 0, streams: int = 0
    ) -> list[KeyPair]:
        """Enough keys for a load that one key's caps would refuse: the configuration's
        MAX_EVENTS_PER_SECOND_PER_KEY and MAX_STREAMS_PER_KEY are settings, not a key's own
        limits, so a configuration at its defaults spreads the load over keys. One key (the
        given one) against --base-url."""
        if self.system is None:
            return [await self.key(purpose)]
        cap = self.configuration.int_setting
        count = max(
            1,
            math.ceil(events_per_s / cap("MAX_EVENTS_PER_SECOND_PER_KEY")),
            math.ceil(streams / cap("MAX_STREAMS_PER_KEY")),
        )
        names = [f"{purpose}-{i + 1}" for i in range(count)] if count > 1 else [purpose]
        return [await self.key(name) for name in names]

    def client(
        self, secret: str | None, max_connections: int = 64, base_url: str | None = None
    ) -> Client:
        """A client sending `secret` with every request (None: each request names its key)."""
        return Client(
            base_url or self.base_url,
            {"Authorization": f"Bearer {secret}"} if secret else {},
            max_connections=max_connections,
        )

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def add(self, key: str, value: float | None, **measured: Any) -> Figure:
        """Record the figure `key` (one of bench.targets.TARGETS) of this configuration."""
        figure = Figure(key, self.configuration.name, value, **measured)
        self.figures.append(figure)
        return figure

    def detail(self, scenario: str) -> dict[str, Any]:
        return self.details.setdefault(scenario, {})

    @contextlib.asynccontextmanager
    async def api_alone(self) -> AsyncIterator[bool]:
        """Hold the workers (SIGSTOP) for the block when the configuration says so, so an API
        figure is the API's own and not a share of two cores with the lifecycle of the calls it
        makes; the timers wait in Redis and the workers take them up afterwards (the scenario's
        check then sees every call complete). Yields whether they were held."""
        workers = self.system.worker_pids if self.system else []
        hold = bool(workers) and self.configuration.hold_workers
        if hold:
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
        try:
            yield hold
        finally:
            if hold:
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)

    def workers_note(self, held: bool) -> str:
        """What a POST /calls figure says of the workers (nothing for a platform not ours)."""
        if held:
            return ", workers held"
        return "" if self.system is None else ", workers running"

    @contextlib.asynccontextmanager
    async def task(self, description: str, total: float | None) -> AsyncIterator[TaskID]:
        task = self.progress.add_task(description, total=total, info="")
        try:
            yield task
        finally:
            self.progress.update(task, visible=False)

    @contextlib.asynccontextmanager
    async def cpu(self, into: dict[str, Any], profile: str | None = None) -> AsyncIterator[None]:
        """Record each process's CPU share (% of one core) over the block into `into`; with
        --profile and a `profile` label, py-spy samples the platform's processes meanwhile."""
        profiler = None
        if profile and self.opts.profile and self.system is not None:
            pids = {
                name: pid
                for name, pid in self.system.pids().items()
                if name in ("api", "worker1", "scheduler")
            }
            profiler = Profiler(pids, self.workdir / "profiles", profile)
            await profiler.start()
        before = await self.system.cpu_snapshot() if self.system else {}
        commands_before = await self.command_counts()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        kids_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        yield
        wall = time.monotonic() - started
        after = await self.system.cpu_snapshot() if self.system else {}
        shares = cpu_share(before, after, wall)
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = lambda a, b: (a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime) / wall * 100  # noqa: E731
        shares["bench client"] = round(used(self_after, self_before), 1)
        wrk_share = used(kids_after, kids_before)
        if wrk_share > 0.5:
            shares["wrk"] = round(wrk_share, 1)
        into["cpu_pct_of_one_core"] = shares
        commands_after = await self.command_counts()
        if commands_after:
            rates = {
                name: round((n - commands_before.get(name, 0)) / wall, 1)
                for name, n in commands_after.items()
            }
            top = sorted(rates.items(), key=lambda item: -item[1])[:15]
            into["redis_commands_per_s"] = {name: rate for name, rate in top if rate > 0}
        if profiler is not None:
            into["profile"] = await profiler.stop()

    async def command_counts(self) -> dict[str, int]:
        """Redis's count of each command so far (our own Redis only)."""
        if self.system is None or self.system.redis is None:
            return {}
        try:
            stats = await self.system.redis.info("commandstats")
        except Exception:
            return {}
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if isinstance(value, dict) and "calls" in value
        }

    async def wrk(
        self,
        name: str,
        url: str,
        script: str,
        connections: int,
        *,
        duration_s: float | None = None,
        into: dict[str, Any] | None = None,
    ) -> wrk_runner.WrkResult:
        duration_s = duration_s or self.load.duration_s
        async with self.task(f"{name} ({connections} conns)", duration_s) as task:
            tick = lambda s: self.progress.update(task, completed=min(s, duration_s))  # noqa: E731
            cpu: dict[str, Any] = {}
            label = slug(f"{name} {connections}c") if url == self.base_url else None
            async with self.cpu(cpu, profile=label):
                result = await wrk_runner.run(
                    url,
                    script,
                    self.workdir,
                    name.replace(" ", "_").replace("/", "_"),
                    connections=connections,
                    threads=2,
                    duration_s=duration_s,
                    on_tick=tick,
                )
        if into is not None:
            into.update(result.summary() | cpu)
        line = (
            f"  {name}: {result.ok_per_s:,.0f} ok/s, p50 {result.latency_ms.get('p50', 0):.1f} ms,"
            f" p99 {result.latency_ms.get('p99', 0):.1f} ms"
        )
        if result.errors:
            line += f", [red]{result.errors} errors[/red] ({result.non_2xx} non-2xx)"
        self.say(line + cpu_line(cpu))
        return result

    async def sample_error(self, client: Client, raw: bytes) -> str:
        """What one more such request answers, to say why requests failed."""
        with contextlib.suppress(Exception):
            response = await client.send(raw)
            return f"{response.status} {response.body[:200].decode(errors='replace')}"
        return "no answer"

    async def settle(self, scenario: str, timeout_s: float) -> None:
        """Wait until the simulated calls made so far are done, so the next scenario starts on
        a quiet platform; records how long that took (the backlog the scenario left)."""
        started = time.monotonic()
        async with self.task("settling: waiting for running calls to finish", None) as task:
            if self.owns_database:
                assert self.system is not None and self.system.pool is not None
                while time.monotonic() - started < timeout_s:
                    active, uploads = await readback.busy_counts(self.system.pool)
                    self.progress.update(task, info=f"{active} active, {uploads} uploads")
                    if not active and not uploads:
                        break
                    await asyncio.sleep(0.5)
            else:
                await self._settle_via_metrics(task, started, timeout_s)
        waited = time.monotonic() - started
        self.detail(scenario)["settled_before_s"] = round(waited, 2)
        if waited >= timeout_s:
            self.say(f"  [yellow]platform still busy after {timeout_s:.0f} s; going on[/yellow]")
        if self.owns_database:
            await self._vacuum_unless_autovacuum(scenario)

    async def _vacuum_unless_autovacuum(self, scenario: str) -> None:
        """A server with autovacuum off (this workplace's machines) never removes the dead rows
        of earlier scenarios nor gathers statistics: later scenarios would measure a table no
        deployment runs with. Do what autovacuum would, between scenarios."""
        assert self.system is not None and self.system.pool is not None
        if await self.system.pool.fetchval("SHOW autovacuum") == "on":
            return
        started = time.monotonic()
        async with self.task("PostgreSQL's autovacuum is off: VACUUM ANALYZE", None):
            await self.system.pool.execute("VACUUM (ANALYZE)")
        self.detail(scenario)["vacuumed_before_s"] = round(time.monotonic() - started, 2)

    async def _settle_via_metrics(self, task: TaskID, started: float, timeout_s: float) -> None:
        client = self.client(self.shared_key or "", 1)
        last: tuple[int, int] | None = None
        steady = 0
        try:
            while time.monotonic() - started < timeout_s:
                with contextlib.suppress(Exception):
                    body = orjson.loads((await client.request("GET", "/metrics")).body)
                    now = (body.get("active_calls", 0), body.get("uploads_in_progress", 0))
                    self.progress.update(task, info=f"{now[0]} active, {now[1]} uploads")
                    steady = steady + 1 if now == last and not now[1] else 0
                    last = now
                    if steady >= 4:
                        return
                await asyncio.sleep(0.5)
        finally:
            await client.close()

    async def drain_and_verify(
        self, scenario: str, key_id: str | None, expected: set[str] | None, answered: int
    ) -> verify.CallCheck | None:
        """On our own platform: wait for the key's calls to finish, then check them all."""
        if not self.owns_database or key_id is None:
            return None
        assert self.system is not None and self.system.pool is not None
        pool = self.system.pool
        info = self.detail(scenario)
        async with self.task(f"{scenario}: calls finishing", None) as task:
            tick = lambda d, t: self.progress.update(task, info=f"{d:,}/{t:,} done")  # noqa: E731
            drained = await readback.wait_drained(
                pool, key_id, self.load.drain_timeout_s, on_tick=tick
            )
        info["drained_after_s"] = round(drained, 2) if drained is not None else None
        check = verify.judge_rows(await readback.calls_of_key(pool, key_id), expected)
        info["verification"] = check.summary()
        if expected is None and check.found != answered:
            info["verification"]["answered_2xx"] = answered
        ok = check.problems == 0 and (expected is not None or check.found >= answered)
        colour = "green" if ok else "red"
        self.say(
            f"  [{colour}]checked {check.found:,} calls: {check.done:,} completed once with"
            f" recordings, {check.problems} problems[/{colour}]"
            + (f" (answered 2xx: {answered:,})" if expected is None else "")
            + (
                f"; drained {drained:.1f} s after the load"
                if drained is not None
                else f"; [red]not drained within {self.load.drain_timeout_s:.0f} s[/red]"
            )
            + ("" if not check.examples else f"\n    e.g. {'; '.join(check.examples[:3])}")
        )
        return check

    async def lateness(self, secret: str) -> dict[float, float]:
        client = self.client(secret, 1)
        try:
            response = await client.request("GET", "/metrics?format=prometheus")
            return verify.lateness_buckets(response.body.decode())
        except Exception:
            return {}
        finally:
            await client.close()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def cpu_line(cpu: dict[str, Any]) -> str:
    """The CPU shares of a measurement and, with --profile, where the time went."""
    shares = cpu.get("cpu_pct_of_one_core") or {}
    if not shares:
        return ""
    parts = ", ".join(f"{name} {value:.0f}%" for name, value in shares.items() if value >= 1)
    lines = [f"    [dim]cpu (% of a core): {parts}[/dim]"]
    for name, top in (cpu.get("profile") or {}).items():
        lines.append(f"    [dim]py-spy {name}, own time (% of busy samples):[/dim]")
        lines += [f"      [dim]{share:5.1f}%  {frame}[/dim]" for frame, share in top["own"][:6]]
        lines.append(f"    [dim]py-spy {name}, inclusive, the platform's code:[/dim]")
        lines += [
            f"      [dim]{share:5.1f}%  {frame}[/dim]" for frame, share in top["platform"][:6]
        ]
    return "\n" + "\n".join(lines)
