"""The scenarios of scripts/bench: each drives one figure of issue 8 (and its bare ceiling, right
before it, so the two share the machine's mood), checks what it made, and records figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_verify as verify
import bench_wrk as wrk
import orjson
from bench_http import Client, Response, closed_loop, gather_limited, open_loop, open_stream
from bench_http import percentile as pct
from bench_profile import Profiler
from bench_system import ROOT, System, cpu_share, rss_bytes
from rich.console import Console
from rich.progress import Progress, TaskID

CALL_BODY = '{"from": "+14155550100", "to": "+14155550199", "metadata": {"bench": true}}'
EVENT_BODY = '{"event": "call_initiated", "type": "voice", "queue_id": "bench"}'
MIB = 1024 * 1024


@dataclass
class Figure:
    """One line of the result table (and of the JSON)."""

    key: str
    label: str
    value: float | None
    unit: str
    target: float | None = None
    # "min": the value must reach the target; "max": it must stay under it.
    kind: str = "min"
    ceiling: float | None = None
    errors: int = 0
    # False when the load differs from the (--quick): shown, not judged.
    comparable: bool = True
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None or not self.comparable:
            return None
        if self.value is None or self.errors:
            return False
        return self.value >= self.target if self.kind == "min" else self.value <= self.target

    @property
    def vs_ceiling(self) -> float | None:
        if self.ceiling is None or self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "target_kind": "at least" if self.kind == "min" else "at most",
            "ceiling": round(self.ceiling, 2) if self.ceiling is not None else None,
            "vs_ceiling": round(self.vs_ceiling, 4) if self.vs_ceiling is not None else None,
            "errors": self.errors,
            "comparable": self.comparable,
            "passed": self.passed,
            "note": self.note,
        }


@dataclass
class Bench:
    """What every scenario needs: options, the system under test, and where results go."""

    opts: Any
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

    async def key(self, purpose: str, **limits: int) -> tuple[str, str | None]:
        """A key for one scenario (a fresh one with huge limits on our own platform)."""
        if self.system is not None:
            key = await self.system.new_key(purpose, **limits)
            return key.secret, key.id
        assert self.shared_key is not None
        return self.shared_key, None

    def client(self, secret: str, max_connections: int = 64, base_url: str | None = None) -> Client:
        return Client(
            base_url or self.base_url,
            {"Authorization": f"Bearer {secret}"},
            max_connections=max_connections,
        )

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def detail(self, scenario: str) -> dict[str, Any]:
        return self.details.setdefault(scenario, {})

    @contextlib.asynccontextmanager
    async def api_alone(self) -> AsyncIterator[bool]:
        """Hold the workers (SIGSTOP) for the block, so an API figure is the API's own and not
        a share of two cores with the lifecycle of the calls it makes; the timers wait in Redis
        and the workers take them up afterwards (the scenario's check then sees every call
        complete). Yields whether they were held: not with --base-url, nor --lifecycle-during."""
        workers = [
            p.pid
            for name, p in (self.system.processes.items() if self.system else ())
            if name.startswith("worker") and p.pid
        ]
        hold = bool(workers) and not self.opts.lifecycle_during
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
                name: p.pid
                for name, p in self.system.processes.items()
                if name in ("api", "worker1", "scheduler") and p.pid
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
    ) -> wrk.WrkResult:
        duration_s = duration_s or self.opts.duration
        async with self.task(f"{name} ({connections} conns)", duration_s) as task:
            tick = lambda s: self.progress.update(task, completed=min(s, duration_s))  # noqa: E731
            cpu: dict[str, Any] = {}
            label = _slug(f"{name} {connections}c") if url == self.base_url else None
            async with self.cpu(cpu, profile=label):
                result = await wrk.run(
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
        self.say(line + _cpu_line(cpu))
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
                    row = await self.system.pool.fetchrow(
                        """
                        SELECT (SELECT count(*) FROM calls
                                 WHERE status <> 'COMPLETED' AND kind = 'simulated') AS active,
                               (SELECT count(*) FROM recordings
                                 WHERE status IN ('pending', 'uploading')) AS uploads
                        """
                    )
                    self.progress.update(
                        task, info=f"{row['active']} active, {row['uploads']} uploads"
                    )
                    if not row["active"] and not row["uploads"]:
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
            drained = await verify.wait_drained(pool, key_id, self.opts.drain_timeout, on_tick=tick)
        info["drained_after_s"] = round(drained, 2) if drained is not None else None
        check = verify.judge_rows(await verify.calls_of_key(pool, key_id), expected)
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
                else f"; [red]not drained within {self.opts.drain_timeout:.0f} s[/red]"
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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _cpu_line(cpu: dict[str, Any]) -> str:
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


# -- ceiling ---------------------------------------------------------------------------------


async def ceiling_wrk(
    b: Bench, name: str, script: str, connections: int, metric: str
) -> float | None:
    """The bare app's figure for the same wrk run (None with --no-ceiling)."""
    if b.ceiling is None:
        return None
    info: dict[str, Any] = {}
    result = await b.wrk(f"bare {name}", b.ceiling.bare_url, script, connections, into=info)
    b.ceilings[name] = info
    return result.ok_per_s if metric == "ok_per_s" else result.latency_ms.get("p99")


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class PostCallsRun:
    secret: str
    key_id: str | None
    ceiling: float | None
    info: dict[str, Any]
    result: wrk.WrkResult
    held: bool


async def _post_calls_wrk(b: Bench, scenario: str, clients: int, metric: str) -> PostCallsRun:
    """`POST /calls` from `clients` wrk connections, the workers held, beside the bare app's
    run whose `metric` is the ceiling."""
    secret, key_id = await b.key(scenario.replace("_", "-"))
    script = wrk.lua_script(
        "POST", "/calls", body=CALL_BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    ceiling = await ceiling_wrk(b, f"POST {clients}c", script, clients, metric)
    info = b.detail(scenario)
    async with b.api_alone() as held:
        result = await b.wrk("POST /calls", b.base_url, script, clients, into=info)
    info["workers_held"] = held
    return PostCallsRun(secret, key_id, ceiling, info, result, held)


async def post_calls(b: Bench) -> None:
    """POST /calls, 64 clients, closed loop (wrk): throughput."""
    run = await _post_calls_wrk(b, "post_calls", 64, "ok_per_s")
    result = run.result
    if result.errors:
        client = b.client(run.secret, 1)
        run.info["error_example"] = await b.sample_error(
            client, client.raw("POST", "/calls", CALL_BODY.encode())
        )
        await client.close()
    b.add(
        Figure(
            "post_calls_per_s",
            "POST /calls throughput, 64 clients",
            round(result.ok_per_s, 1),
            "/s",
            1500,
            ceiling=run.ceiling,
            errors=result.errors,
            note=f"{b.opts.duration:g} s" + (", workers held" if run.held else ""),
        )
    )
    answered = result.requests - result.non_2xx
    check = await b.drain_and_verify("post_calls", run.key_id, None, answered)
    _add_check(b, "post_calls_checked", "POST /calls run: calls completed once, recorded", check)


async def post_latency(b: Bench) -> None:
    """POST /calls latency: 16 clients closed loop (wrk)."""
    run = await _post_calls_wrk(b, "post_latency", 16, "p99")
    result = run.result
    b.add(
        Figure(
            "post_calls_p99_ms_16c",
            "POST /calls p99 latency, 16 clients",
            result.latency_ms.get("p99"),
            "ms",
            25,
            kind="max",
            ceiling=run.ceiling,
            errors=result.errors,
            note=f"{result.ok_per_s:,.0f}/s answered" + (", workers held" if run.held else ""),
        )
    )
    answered = result.requests - result.non_2xx
    check = await b.drain_and_verify("post_latency", run.key_id, None, answered)
    _add_check(b, "post_latency_checked", "16-client run: calls completed once, recorded", check)


async def _open_loop_run(
    b: Bench,
    label: str,
    client: Client,
    raw: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    on_response: Callable[[int, Response | None, float, float], None] | None = None,
    extra: Callable[[], str] | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    total = max(1, round(rate * duration_s))
    async with b.task(f"{label} ({rate:g}/s open loop)", total) as task:

        def tick(t: Any) -> None:
            info = f"{t.ok:,} ok"
            if t.errors and t.sent > t.ok:
                info += f", {len(t.latencies_ms) - t.ok} err"
            if extra is not None:
                info += ", " + extra()
            b.progress.update(task, completed=t.sent, info=info)

        cpu: dict[str, Any] = {}
        async with b.cpu(cpu, profile=_slug(label) if profile else None):
            timings = await open_loop(
                client, rate, duration_s, raw, on_response=on_response, on_tick=tick
            )
    summary = timings.summary() | cpu | {"offered_per_s": rate}
    lat = summary["latency_ms"]
    line = (
        f"  {label}: {timings.ok:,}/{timings.sent:,} ok, p50 {lat['p50']:.1f} ms,"
        f" p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
    )
    if timings.errors:
        failures = dict(timings.failures)
        line += f", [red]{timings.errors} errors[/red] {dict(timings.statuses)}"
        line += f" and no answer: {failures}" if failures else ""
    lag = summary["client_send_lag_ms"]["p99"]
    if lag > 5:
        line += f" [yellow](the client itself sent up to {lag:.0f} ms late at p99)[/yellow]"
    b.say(line + _cpu_line(cpu))
    return summary


async def open_loop_latency(b: Bench) -> None:
    """POST /calls at a fixed offered rate, latency from each intended send time."""
    rate, duration = b.opts.open_loop_rate, b.opts.duration
    secret, key_id = await b.key("open-loop")
    body = CALL_BODY.encode()
    ceiling = None
    if b.ceiling is not None:
        bare = b.client(secret, 256, b.ceiling.bare_url)
        raw = bare.raw("POST", "/calls", body)
        b.ceilings["POST open loop"] = await _open_loop_run(
            b, "bare POST", bare, lambda i: raw, rate, duration, profile=False
        )
        ceiling = b.ceilings["POST open loop"]["latency_ms"]["p99"]
        await bare.close()
    client = b.client(secret, 256)
    raw_call = client.raw("POST", "/calls", body)
    ids: set[str] = set()

    def collect(i: int, response: Response | None, intended: float, done: float) -> None:
        if response is not None and response.status == 201:
            ids.add(orjson.loads(response.body)["call_id"])

    async with b.api_alone() as held:
        info = await _open_loop_run(
            b, "POST /calls", client, lambda i: raw_call, rate, duration, collect
        )
    await client.close()
    b.detail("open_loop").update(info | {"workers_held": held})
    b.add(
        Figure(
            "post_calls_p99_ms_open_loop",
            f"POST /calls p99 latency, open loop {rate:g}/s",
            info["latency_ms"]["p99"],
            "ms",
            25,
            kind="max",
            ceiling=ceiling,
            errors=info["errors"],
            comparable=rate == 1000,
            note=f"max {info['latency_ms']['max']:.0f} ms" + (", workers held" if held else ""),
        )
    )
    check = await b.drain_and_verify("open_loop", key_id, ids, len(ids))
    _add_check(b, "open_loop_checked", "open-loop run: nothing lost, completed once", check)


async def get_call(b: Bench) -> None:
    """GET /calls/{id}, 64 clients (wrk), over existing calls."""
    secret, key_id = await b.key("get-call")
    count = 1000 if not b.opts.quick else 300
    client = b.client(secret, 32)
    body = CALL_BODY.encode()
    async with b.task(f"creating {count} calls to read", count) as task:
        answers = await closed_loop(
            client,
            count,
            32,
            lambda i: client.raw("POST", "/calls", body),
            on_done=lambda n: b.progress.update(task, completed=n),
        )
    ids = [orjson.loads(a.body)["call_id"] for a in answers if a is not None and a.status == 201]
    if not ids:
        raise RuntimeError("could not create any call to read: " + str(answers[:1]))
    await b.drain_and_verify("get_call", key_id, set(ids), len(ids))
    await client.close()
    paths = [f"/calls/{i}" for i in ids]
    script = wrk.lua_script("GET", paths, headers={"Authorization": f"Bearer {secret}"})
    ceiling = None
    if b.ceiling is not None:
        await _fill_bare_hashes(b, ids)
        ceiling = await ceiling_wrk(b, "GET 64c", script, 64, "ok_per_s")
    info = b.detail("get_call")
    result = await b.wrk("GET /calls/{id}", b.base_url, script, 64, into=info)
    b.add(
        Figure(
            "get_call_per_s",
            "GET /calls/{id} throughput, 64 clients",
            round(result.ok_per_s, 1),
            "/s",
            6000,
            ceiling=ceiling,
            errors=result.errors,
            note=f"{len(ids)} calls, p99 {result.latency_ms.get('p99', 0):.1f} ms",
        )
    )


async def _fill_bare_hashes(b: Bench, ids: list[str]) -> None:
    """The bare app reads `bare:call:<id>`: give it the platform's own live hashes when we can
    see them, else hashes of the same shape."""
    assert b.ceiling is not None and b.ceiling.redis is not None
    redis = b.ceiling.redis
    source = b.system.redis if b.owns_database and b.system else None
    template = {
        "call_id": ids[0],
        "key_id": "3f1e7a4c-0000-4000-8000-000000000000",
        "kind": "simulated",
        "status": "COMPLETED",
        "seq": "4",
        "from_number": "+14155550100",
        "to_number": "+14155550199",
        "metadata": '{"bench":true}',
        "flags": '["short_call"]',
        "recording_url": f"/calls/{ids[0]}/recording",
        "call_type": "voice",
        "queue_id": "",
        "agent_id": "",
        "end_reason": "",
    } | {
        f"{stage}_at": "1763900000000"
        for stage in (
            "created",
            "updated",
            "status_changed",
            "started",
            "routed",
            "answered",
            "ended",
        )
    }
    async with redis.pipeline(transaction=False) as pipe:
        for call_id in ids:
            fields = None
            if source is not None:
                fields = await source.hgetall(f"mc:call:{{{call_id}}}")
            pipe.hset(f"bare:call:{call_id}", mapping=fields or template)
        await pipe.execute()


async def post_events(b: Bench) -> None:
    """POST /events (call_initiated, each a new call), 64 clients (wrk)."""
    secret, key_id = await b.key("post-events")
    script = wrk.lua_script(
        "POST", "/events", body=EVENT_BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    ceiling = await ceiling_wrk(b, "POST 64c (events)", script, 64, "ok_per_s")
    info = b.detail("post_events")
    result = await b.wrk("POST /events", b.base_url, script, 64, into=info)
    if result.errors:
        client = b.client(secret, 1)
        info["error_example"] = await b.sample_error(
            client, client.raw("POST", "/events", EVENT_BODY.encode())
        )
        b.say(f"    e.g. {info['error_example']}")
        await client.close()
    b.add(
        Figure(
            "post_events_per_s",
            "POST /events throughput, 64 clients",
            round(result.ok_per_s, 1),
            "/s",
            2000,
            ceiling=ceiling,
            errors=result.errors,
            note=f"p99 {result.latency_ms.get('p99', 0):.1f} ms",
        )
    )
    if b.owns_database and key_id is not None:
        assert b.system is not None and b.system.pool is not None
        stored = await b.system.pool.fetchval(
            "SELECT count(*) FROM calls WHERE api_key_id = $1", key_id
        )
        answered = result.requests - result.non_2xx
        info["calls_stored"] = stored
        # wrk stops mid-request at the end, so a few more may be stored than were answered.
        problems = 0 if answered <= stored <= answered + 64 else abs(stored - answered)
        b.add(
            Figure(
                "post_events_checked",
                "POST /events run: answered events stored",
                problems,
                "problems",
                0,
                kind="max",
                note=f"{answered:,} answered, {stored:,} calls stored",
            )
        )


async def end_to_end(b: Bench) -> None:
    """Calls created at a fixed rate, each followed to COMPLETED with its recording."""
    rate, duration = b.opts.e2e_rate, b.opts.e2e_duration
    secret, key_id = await b.key("e2e")
    before = await b.lateness(secret)
    commands_before = await b.command_counts()
    started_ms = time.time() * 1000
    client = b.client(secret, 256)
    raw = client.raw("POST", "/calls", CALL_BODY.encode())
    ids: set[str] = set()
    done_now = [0]

    def collect(i: int, response: Response | None, intended: float, done: float) -> None:
        if response is not None and response.status == 201:
            ids.add(orjson.loads(response.body)["call_id"])

    async def watch() -> None:
        while b.owns_database and key_id is not None:
            assert b.system is not None and b.system.pool is not None
            with contextlib.suppress(Exception):
                done_now[0], _ = await verify.count_done(b.system.pool, key_id)
            # The count reads every call of the key so far: every second, the benchmark's own
            # reads of PostgreSQL grew with the run (some 800,000 rows over 60 s at 500 calls/s).
            await asyncio.sleep(5)

    watcher = asyncio.create_task(watch())
    try:
        info = await _open_loop_run(
            b,
            "end to end: POST /calls",
            client,
            lambda i: raw,
            rate,
            duration,
            collect,
            extra=lambda: f"{done_now[0]:,} completed+recorded",
        )
    finally:
        watcher.cancel()
    detail = b.detail("e2e")
    detail["create"] = info
    settings = b.system.settings if b.system else {}
    max_life_s = _max_lifetime_s(settings)
    if b.owns_database:
        check = await b.drain_and_verify("e2e", key_id, ids, len(ids))
        assert check is not None
        span_s = (
            (check.last_uploaded - check.first_created).total_seconds()
            if check.last_uploaded and check.first_created
            else None
        )
        drain_s = (
            (check.last_uploaded - check.last_created).total_seconds()
            if check.last_uploaded and check.last_created
            else None
        )
    else:
        async with b.task("end to end: checking calls through the API", len(ids)) as task:
            check, seen_after = await verify.verify_via_api(
                client,
                sorted(ids),
                b.opts.drain_timeout,
                on_tick=lambda d, t: b.progress.update(task, completed=d),
            )
        detail["verification"] = check.summary()
        span_s = duration + (seen_after or b.opts.drain_timeout)
        drain_s = seen_after
        b.say(f"  checked {check.found:,} calls through the API: {check.problems} problems")
    await client.close()
    # Sustained rate: calls done per second of the load, stretched by any backlog beyond the
    # longest a call can live when nothing waits.
    effective_s = max(duration, (span_s or duration) - max_life_s) if span_s else duration
    per_s = check.done / effective_s if effective_s else 0.0
    detail.update(
        {
            "offered_per_s": rate,
            "duration_s": duration,
            "span_first_create_to_last_recording_s": round(span_s, 3) if span_s else None,
            "drain_after_last_create_s": round(drain_s, 3) if drain_s is not None else None,
            "nominal_max_lifetime_s": round(max_life_s, 3),
        }
    )
    b.add(
        Figure(
            "e2e_calls_per_s",
            "calls created → completed with recording",
            round(per_s, 1),
            "/s",
            500,
            errors=info["errors"] + check.problems,
            comparable=rate >= 500 and duration >= 60,
            note=f"offered {rate:g}/s for {duration:g} s"
            + (f", drain {drain_s:.2f} s" if drain_s is not None else ""),
        )
    )
    _add_check(b, "e2e_checked", "end to end: zero lost, each completed once", check)
    after = await b.lateness(secret)
    late = verify.lateness_figures(before, after)
    detail["timer_lateness"] = late
    if late["timers"]:
        bound = lambda ms: "> 10 s" if ms is None else f"≤ {ms:g} ms"  # noqa: E731
        b.say(
            f"  timer lateness over {late['timers']:,} timers: p99 {bound(late['p99_ms'])},"
            f" max {bound(late['max_ms'])}"
        )
    commands_after = await b.command_counts()
    jobs = commands_after.get("rpush", 0) - commands_before.get("rpush", 0)
    if jobs and late["timers"]:
        # RQ puts each job's id on its queue with one RPUSH: timers per job shows the batching.
        detail["rq_jobs"] = jobs
        detail["timers_per_rq_job"] = round(late["timers"] / jobs, 2)
    comparable = rate >= 500 and duration >= 60
    b.add(
        Figure(
            "timer_lateness_p99_ms",
            "timer lateness p99 (bucket bound)",
            late["p99_ms"] if late["p99_ms"] is not None or not late["timers"] else float("inf"),
            "ms",
            50,
            kind="max",
            comparable=comparable,
            note=f"{late['timers']:,} timers",
        )
    )
    b.add(
        Figure(
            "timer_lateness_max_ms",
            "timer lateness max (bucket bound)",
            late["max_ms"] if not late.get("max_over_last_bucket") else float("inf"),
            "ms",
            250,
            kind="max",
            comparable=comparable,
        )
    )
    if b.owns_database and b.system is not None and b.system.redis is not None:
        jobs = await verify.rq_job_timings(b.system.redis, since_ms=started_ms)
        detail["rq_job_stages"] = jobs
        for queue, stage in jobs.items():
            parts = [f"{stage['jobs']:,} jobs"]
            for name in ("waiting", "running"):
                if f"{name}_ms" in stage:
                    ms = stage[f"{name}_ms"]
                    parts.append(
                        f"{name.replace('_', ' ')} p50 {ms['p50']:.0f} / p99 {ms['p99']:.0f} ms"
                    )
            b.say(f"  RQ {queue}: " + ", ".join(parts))
    if b.owns_database and key_id is not None:
        detail["gap_beyond_longest_delay_ms"] = await _gap_overshoot(b, key_id, settings)
        gap = detail["gap_beyond_longest_delay_ms"]
        if late["timers"] > gap["transitions"]:
            # Each timed transition is one timer; more fired means duplicates (no-op jobs).
            detail["timers_fired_beyond_transitions"] = late["timers"] - gap["transitions"]
            b.say(
                f"  [yellow]{late['timers']:,} timers fired for {gap['transitions']:,} timed"
                f" transitions: {late['timers'] - gap['transitions']:,} beyond one each[/yellow]"
            )
        b.say(
            f"  cross-check from PostgreSQL: {gap['transitions']:,} timed transitions came"
            f" {gap['p99']:.0f} ms (p99) / {gap['max']:.0f} ms (max) past their longest"
            f" possible delay; {gap['over']:,} came past it at all"
        )
    await _check_recordings_served(b, secret, sorted(ids)[:5], detail)


async def _gap_overshoot(b: Bench, key_id: str, settings: dict[str, str]) -> dict[str, Any]:
    """An estimate of timer lateness independent of the platform's own histogram: how far each
    timed transition came after the longest delay its stage allows (from call_events'
    occurred_at). A timer that fired on time shows 0 or less, so this is about a lower bound
    of lateness (give or take the previous transition's commit time)."""
    assert b.system is not None and b.system.pool is not None
    get = lambda name, default: float(settings.get(name, default))  # noqa: E731
    scale = get("TIME_SCALE", 1.0)
    longest_ms = {
        "QUEUED": get("RING_DELAY_MAX_MS", 2000) * scale,
        "RINGING": get("ANSWER_DELAY_MAX_MS", 5000) * scale,
        "ANSWERED": get("TALK_DELAY_MAX_MS", 4000) * scale,
        "UNANSWERED": get("UNANSWERED_DELAY_MAX_MS", 2000) * scale,
    }
    rows = await b.system.pool.fetch(
        """
        SELECT from_status, extract(epoch FROM occurred_at - lag(occurred_at)
                   OVER (PARTITION BY call_id ORDER BY seq)) * 1000 AS gap_ms
          FROM call_events
         WHERE call_id IN (SELECT id FROM calls WHERE api_key_id = $1 AND kind = 'simulated')
        """,
        key_id,
    )
    over = sorted(
        float(r["gap_ms"]) - longest_ms[r["from_status"]]
        for r in rows
        if r["gap_ms"] is not None and r["from_status"] in longest_ms
    )
    return {
        "transitions": len(over),
        "over": sum(1 for v in over if v > 0),
        "p99": round(max(0.0, pct(over, 99)), 1) if over else 0.0,
        "max": round(max(0.0, over[-1]), 1) if over else 0.0,
    }


def _max_lifetime_s(settings: dict[str, str]) -> float:
    """The longest a simulated call lives when no timer is late (ring, answer, talk)."""
    get = lambda name, default: float(settings.get(name, default))  # noqa: E731
    scale = get("TIME_SCALE", 1.0)
    worst_ms = get("RING_DELAY_MAX_MS", 2000) + get("ANSWER_DELAY_MAX_MS", 5000)
    worst_ms += max(get("TALK_DELAY_MAX_MS", 4000), get("UNANSWERED_DELAY_MAX_MS", 2000))
    return worst_ms * scale / 1000


async def _check_recordings_served(
    b: Bench, secret: str, ids: list[str], detail: dict[str, Any]
) -> None:
    """A few recording URLs must really serve the file."""
    client = b.client(secret, 4)
    expected = (ROOT / "assets" / "recording.wav").stat().st_size if b.system else None
    served = 0
    for call_id in ids:
        with contextlib.suppress(Exception):
            response = await client.request("GET", f"/calls/{call_id}/recording")
            if response.status == 200 and (expected is None or len(response.body) == expected):
                served += 1
            elif response.status in (301, 302, 303, 307):
                served += 1  # a signed URL elsewhere (S3): the redirect is the answer
    await client.close()
    detail["recordings_served"] = f"{served}/{len(ids)}"
    if served != len(ids):
        b.say(f"  [red]only {served} of {len(ids)} recording URLs served the file[/red]")


async def limits(b: Bench) -> None:
    """Keys with small limits driven past them, one limit at a time: every refusal is a 429 with
    the right message, and PostgreSQL shows the limit was never exceeded."""
    if not b.owns_database:
        b.say("  limits: skipped (needs the platform's database; run without --base-url)")
        return
    duration = 3 if b.opts.quick else 10
    problems = 0
    granted = sent = 0
    # Rate: 60/s offered to a 20/s key. Concurrency: 60/s offered to a key of 10 active calls,
    # while a call lives 0.3 s or more (TIME_SCALE 0.05): about 18 would be active.
    for phase, max_active, max_cps in (("rate", 1000, 20), ("concurrency", 10, 1000)):
        found, info = await _limits_phase(b, phase, max_active, max_cps, 60, duration)
        problems += found
        granted += info["granted"]
        sent += info["sent"]
    b.add(
        Figure(
            "limits_checked",
            "limits held (20/s key; 10-active key)",
            problems,
            "problems",
            0,
            kind="max",
            note=f"{granted} granted of {sent}",
        )
    )


async def _limits_phase(
    b: Bench, phase: str, max_active: int, max_cps: int, offered: float, duration: float
) -> tuple[int, dict[str, Any]]:
    assert b.system is not None and b.system.pool is not None and b.system.redis is not None
    secret, key_id = await b.key(f"limits-{phase}", max_concurrent=max_active, max_cps=max_cps)
    assert key_id is not None
    client = b.client(secret, 128)
    raw = client.raw("POST", "/calls", CALL_BODY.encode())
    too_many = f"Maximum concurrent calls reached ({max_active})"
    too_fast = f"Calls per second limit exceeded ({max_cps})"
    messages = {too_many: 0, too_fast: 0}
    wrong: list[str] = []

    def judge(i: int, response: Response | None, intended: float, done: float) -> None:
        if response is None:
            wrong.append("no answer")
        elif response.status == 429:
            message = orjson.loads(response.body).get("message")
            if message in messages:
                messages[message] += 1
            else:
                wrong.append(f"429 {message}")
        elif response.status != 201:
            wrong.append(f"{response.status} {response.body[:100]!r}")

    run = await _open_loop_run(
        b,
        f"limits ({phase}): POST /calls",
        client,
        lambda i: raw,
        offered,
        duration,
        judge,
        profile=False,
    )
    await client.close()
    await verify.wait_drained(b.system.pool, key_id, b.opts.drain_timeout)
    rows = await b.system.pool.fetch(
        "SELECT created_at, ended_at FROM calls WHERE api_key_id = $1 ORDER BY created_at", key_id
    )
    # A call's PostgreSQL lifetime (created_at to ended_at) lies within its limiter lease (taken
    # before the insert, given back after COMPLETED commits), so this count is exact.
    most_active = _max_overlap([(r["created_at"], r["ended_at"]) for r in rows])
    # PostgreSQL stamps a call a few ms after the limiter granted it: windows are shortened by
    # that much before counting.
    skew_s = 0.02
    created = [r["created_at"].timestamp() for r in rows]
    most_in_window = lo = 0
    for hi, t in enumerate(created):
        while created[lo] <= t - (1.0 - skew_s):
            lo += 1
        most_in_window = max(most_in_window, hi - lo + 1)
    leases = await b.system.redis.zcard(f"mc:key:{{{key_id}}}:leases")
    expected = too_fast if phase == "rate" else too_many
    problems = (
        len(wrong)
        + (most_active > max_active)
        + (most_in_window > max_cps)
        + (leases > 0)
        + (messages[expected] == 0)  # offered past the limit, it must have refused some
    )
    info = {
        "max_concurrent": max_active,
        "max_cps": max_cps,
        "offered_per_s": offered,
        "sent": run["sent"],
        "granted": run["statuses"].get("201", 0),
        "refusals": messages,
        "wrong_answers": wrong[:5],
        "most_active_at_once": most_active,
        "most_created_in_a_second": most_in_window,
        "leases_left_after": leases,
        "problems": problems,
    }
    b.detail("limits")[phase] = info
    colour = "green" if not problems else "red"
    b.say(
        f"  [{colour}]limits ({phase}): {info['granted']} granted; refused {messages};"
        f" at most {most_active} active (limit {max_active}), {most_in_window} created in a"
        f" second (limit {max_cps}), {leases} leases left[/{colour}]"
    )
    return problems, info


def _max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    points = []
    for start, end in intervals:
        points.append((start.timestamp(), 1))
        if end is not None:
            points.append((end.timestamp(), -1))
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
    running = best = 0
    for _, step in points:
        running += step
        best = max(best, running)
    return best


async def sse(b: Bench) -> None:
    """K streams open on one API process, each following its own call; one update per call
    posted at a fixed rate, each timed from its POST's intended send to its arrival."""
    streams_wanted, rate = b.opts.sse_streams, b.opts.sse_rate
    secret, _ = await b.key("sse")
    client = b.client(secret, 512)
    detail = b.detail("sse")
    api_pid = b.api_pid
    rss_peak = [0]
    rss_idle = rss_bytes(api_pid) if api_pid else None

    async def sample_rss() -> None:
        while api_pid:
            rss_peak[0] = max(rss_peak[0], rss_bytes(api_pid) or 0)
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_rss())
    try:
        async with b.task(f"sse: {streams_wanted:,} calls to follow", streams_wanted) as task:
            answers = await closed_loop(
                client,
                streams_wanted,
                64,
                lambda i: client.raw("POST", "/events", EVENT_BODY.encode()),
                on_done=lambda n: b.progress.update(task, completed=n),
            )
        ids = [orjson.loads(a.body)["call_id"] for a in answers if a and a.status == 201]
        received: list[list[int]] = [[] for _ in ids]
        arrived: list[float | None] = [None] * len(ids)

        def on_event_for(i: int) -> Callable[[dict[str, str], float], None]:
            def on_event(fields: dict[str, str], at: float) -> None:
                if fields.get("event") != "call" or "data" not in fields:
                    return
                seq = orjson.loads(fields["data"])["seq"]
                received[i].append(seq)
                if seq == 2 and arrived[i] is None:
                    arrived[i] = at

            return on_event

        streams = []
        open_idx: list[int] = []
        refused: dict[str, int] = {}
        async with b.task(f"sse: opening {len(ids):,} streams", len(ids)) as task:
            opened = [0]

            def opener(i: int) -> Callable[[], Awaitable[Any]]:
                async def go() -> Any:
                    result = await open_stream(client, f"/calls/{ids[i]}/stream", on_event_for(i))
                    opened[0] += 1
                    b.progress.update(task, completed=opened[0])
                    return result

                return go

            results = await gather_limited([opener(i) for i in range(len(ids))], 200)
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                refused[type(result).__name__] = refused.get(type(result).__name__, 0) + 1
                continue
            stream, status, body = result
            if status == 200:
                streams.append(stream)
                open_idx.append(i)
            else:
                reason = f"{status} {body[:80].decode(errors='replace')}"
                refused[reason] = refused.get(reason, 0) + 1
                stream.close()
        # Every stream's first message is the call's current state (seq 1).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not received[i] for i in open_idx):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        rss_open = rss_bytes(api_pid) if api_pid else None
        b.say(
            f"  sse: {len(streams):,} streams open"
            + (f", {sum(refused.values())} refused {refused}" if refused else "")
            + (
                f"; API RSS {rss_open / MIB:.0f} MiB (idle {rss_idle / MIB:.0f} MiB)"
                if rss_open and rss_idle
                else ""
            )
        )

        body_of = lambda i: orjson.dumps(  # noqa: E731
            {"event": "call_routed", "call_id": ids[i], "agent_id": "bench"}
        )
        intended: list[float] = [0.0] * len(ids)
        # Only an update whose POST was answered 201 is owed to its stream: one the client gave
        # up on (a timeout under overload) may never have been applied.
        applied: list[bool] = [False] * len(ids)

        def mark(i: int, response: Response | None, sent_at: float, done: float) -> None:
            intended[i] = sent_at
            applied[i] = response is not None and response.status == 201

        delivered = lambda: f"{sum(1 for a in arrived if a is not None):,} delivered"  # noqa: E731
        posting = await _open_loop_run(
            b,
            "sse: POST /events call_routed",
            client,
            lambda i: client.raw("POST", "/events", body_of(i)),
            rate,
            len(ids) / rate,
            mark,
            extra=delivered,
        )
        deadline = time.monotonic() + 10
        owed = [i for i in open_idx if applied[i]]
        while time.monotonic() < deadline and any(arrived[i] is None for i in owed):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        detail["posting"] = posting
        latencies = sorted(
            (arrived[i] - intended[i]) * 1000
            for i in open_idx
            if arrived[i] is not None and intended[i]
        )
        lost = sum(1 for i in owed if arrived[i] is None)
        disorder = sum(1 for r in received if r and r != sorted(set(r)))
        gaps = sum(1 for r in received if r and r[0] != 1)
        open_streams_metric = await _open_streams(b, secret)
        for stream in streams:
            stream.close()
        await asyncio.sleep(1.0 if b.opts.quick else 3.0)
        after_close = await _open_streams(b, secret)
    finally:
        sampler.cancel()
        await client.close()
    p99 = pct(latencies, 99)
    detail.update(
        {
            "streams_wanted": streams_wanted,
            "streams_open": len(streams),
            "refused": refused,
            "update_rate_per_s": rate,
            "delivery_ms": {
                "p50": round(pct(latencies, 50), 2),
                "p99": round(p99, 2),
                "max": round(latencies[-1], 2) if latencies else None,
            },
            "lost_updates": lost,
            "updates_not_answered": len(open_idx) - len(owed),
            "out_of_order_or_repeated": disorder,
            "first_message_not_seq_1": gaps,
            "api_rss_mib": {
                "idle": round(rss_idle / MIB, 1) if rss_idle else None,
                "streams_open": round(rss_open / MIB, 1) if rss_open else None,
                "peak": round(rss_peak[0] / MIB, 1) if rss_peak[0] else None,
            },
            "open_streams_metric": {"while_open": open_streams_metric, "after_close": after_close},
        }
    )
    comparable = streams_wanted >= 10_000
    b.say(
        f"  sse: delivered {len(latencies):,} updates: p50 {detail['delivery_ms']['p50']:.1f} ms,"
        f" p99 {p99:.1f} ms, max {detail['delivery_ms']['max'] or 0:.1f} ms; lost {lost},"
        f" out of order {disorder}; open-streams metric {open_streams_metric} → {after_close}"
        f" after closing"
    )
    b.add(
        Figure(
            "sse_streams_open",
            "open SSE streams, one API process",
            len(streams),
            "streams",
            10_000,
            errors=sum(refused.values()),
            comparable=comparable,
        )
    )
    b.add(
        Figure(
            "sse_delivery_p99_ms",
            "SSE update delivered, p99",
            round(p99, 2),
            "ms",
            100,
            kind="max",
            errors=lost + posting["errors"],
            comparable=comparable,
            note=f"{rate:g} updates/s"
            + (f", {posting['errors']:,} POSTs unanswered" if posting["errors"] else ""),
        )
    )
    if rss_peak[0]:
        b.add(
            Figure(
                "sse_api_rss_mib",
                "API RSS with the streams open (peak)",
                round(rss_peak[0] / MIB, 1),
                "MiB",
                1024,
                kind="max",
                comparable=comparable,
            )
        )
    problems = lost + disorder + gaps + (after_close not in (0, None))
    b.add(
        Figure(
            "sse_checked",
            "SSE: every update once, in order; streams freed",
            problems,
            "problems",
            0,
            kind="max",
        )
    )


async def _open_streams(b: Bench, secret: str) -> int | None:
    client = b.client(secret, 1)
    try:
        text = (await client.request("GET", "/metrics?format=prometheus")).body.decode()
        for line in text.splitlines():
            if line.startswith("mockcomms_open_streams "):
                return int(float(line.split()[1]))
    except Exception:
        return None
    finally:
        await client.close()
    return None


def _add_check(b: Bench, key: str, label: str, check: verify.CallCheck | None) -> None:
    if check is None:
        return
    b.add(
        Figure(
            key,
            label,
            check.problems,
            "problems",
            0,
            kind="max",
            note=f"{check.done:,}/{check.found:,} calls" + check.breakdown(),
        )
    )


SCENARIOS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "post_calls": post_calls,
    "post_latency": post_latency,
    "open_loop": open_loop_latency,
    "get_call": get_call,
    "post_events": post_events,
    "e2e": end_to_end,
    "limits": limits,
    "sse": sse,
}
