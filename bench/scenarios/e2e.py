"""`e2e`: calls created at a fixed rate, each followed to COMPLETED with its recording: the
sustained rate, zero lost, and how late the timers fired (the platform's histogram, cross-checked
from PostgreSQL and the RQ jobs' own timestamps)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from bench import readback, verify
from bench.http import Response
from bench.scenarios.drive import CALL_BODY, add_check, open_loop_run
from bench.session import Bench
from bench.targets import FULL
from devstack.paths import ROOT


async def run_end_to_end(b: Bench, rate: float, duration: float, scenario: str) -> EndToEnd:
    """Create calls at `rate` for `duration` s, follow each to COMPLETED with its recording and
    check them all; the details go under `scenario`."""
    detail = b.detail(scenario)
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
                done_now[0], _ = await readback.count_done(b.system.pool, key_id)
            # The count reads every call of the key so far: every second, the benchmark's own
            # reads of PostgreSQL grew with the run (some 800,000 rows over 60 s at 500 calls/s).
            await asyncio.sleep(5)

    watcher = asyncio.create_task(watch())
    try:
        info = await open_loop_run(
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
    detail["create"] = info
    max_life_s = verify.max_lifetime_s(b.configuration.setting)
    if b.owns_database:
        check = await b.drain_and_verify(scenario, key_id, ids, len(ids))
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
            check, seen_after = await readback.verify_via_api(
                client,
                sorted(ids),
                b.load.drain_timeout_s,
                on_tick=lambda d, t: b.progress.update(task, completed=d),
            )
        detail["verification"] = check.summary()
        span_s = duration + (seen_after or b.load.drain_timeout_s)
        drain_s = seen_after
        b.say(f"  checked {check.found:,} calls through the API: {check.problems} problems")
    await client.close()
    per_s = verify.sustained_rate(check.done, duration, span_s, max_life_s)
    detail.update(
        {
            "offered_per_s": rate,
            "duration_s": duration,
            "span_first_create_to_last_recording_s": round(span_s, 3) if span_s else None,
            "drain_after_last_create_s": round(drain_s, 3) if drain_s is not None else None,
            "nominal_max_lifetime_s": round(max_life_s, 3),
        }
    )
    after = await b.lateness(secret)
    late = verify.lateness_figures(before, after)
    detail["timer_lateness"] = late
    commands_after = await b.command_counts()
    jobs = commands_after.get("rpush", 0) - commands_before.get("rpush", 0)
    if jobs and late["timers"]:
        # RQ puts each job's id on its queue with one RPUSH: timers per job shows the batching.
        detail["rq_jobs"] = jobs
        detail["timers_per_rq_job"] = round(late["timers"] / jobs, 2)
    return EndToEnd(
        rate, duration, per_s, info, check, drain_s, late, secret, key_id, sorted(ids), started_ms
    )


@dataclass
class EndToEnd:
    """One end-to-end run: the sustained rate, the check of its calls, timer lateness, and the
    CPU shares of the creating part (% of a core, by process)."""

    rate: float
    duration_s: float
    per_s: float
    info: dict[str, Any]
    check: verify.CallCheck
    drain_s: float | None
    late: dict[str, Any]
    secret: str
    key_id: str | None
    ids: list[str]
    started_ms: float

    @property
    def errors(self) -> int:
        return self.info["errors"] + self.check.problems

    @property
    def cpu(self) -> dict[str, float]:
        return self.info.get("cpu_pct_of_one_core", {})


async def end_to_end(b: Bench) -> None:
    """Calls created at a fixed rate, each followed to COMPLETED with its recording."""
    run = await run_end_to_end(b, b.load.e2e_rate, b.load.e2e_duration_s, "e2e")
    rate, duration, check, late = run.rate, run.duration_s, run.check, run.late
    drain_s, per_s, info, key_id, detail = (
        run.drain_s,
        run.per_s,
        run.info,
        run.key_id,
        b.detail("e2e"),
    )
    comparable = rate >= FULL.e2e_rate and duration >= FULL.e2e_duration_s
    b.add(
        "e2e_calls_per_s",
        round(per_s, 1),
        errors=info["errors"] + check.problems,
        comparable=comparable,
        note=f"offered {rate:g}/s for {duration:g} s"
        + (f", drain {drain_s:.2f} s" if drain_s is not None else ""),
    )
    add_check(b, "e2e_checked", check)
    if late["timers"]:
        bound = lambda ms: "> 10 s" if ms is None else f"≤ {ms:g} ms"  # noqa: E731
        b.say(
            f"  timer lateness over {late['timers']:,} timers: p99 {bound(late['p99_ms'])},"
            f" max {bound(late['max_ms'])}"
        )
    p99_ms, max_ms = verify.lateness_bounds(late)
    b.add(
        "timer_lateness_p99_ms",
        p99_ms,
        comparable=comparable,
        note=f"{late['timers']:,} timers",
    )
    b.add("timer_lateness_max_ms", max_ms, comparable=comparable)
    if b.owns_database and b.system is not None and b.system.redis is not None:
        await _rq_stages(b, run.started_ms, detail)
    if b.owns_database and key_id is not None:
        assert b.system is not None and b.system.pool is not None
        gaps = await readback.transition_gaps(b.system.pool, key_id)
        gap = verify.gap_overshoot(gaps, b.configuration.setting)
        detail["gap_beyond_longest_delay_ms"] = gap
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
    await _check_recordings_served(b, run.secret, run.ids[:5], detail)


async def _rq_stages(b: Bench, started_ms: float, detail: dict[str, Any]) -> None:
    """How long the run's RQ jobs waited for a worker and ran, per queue."""
    assert b.system is not None and b.system.redis is not None
    jobs = await readback.rq_job_timings(b.system.redis, since_ms=started_ms)
    detail["rq_job_stages"] = jobs
    for queue, stage in jobs.items():
        parts = [f"{stage['jobs']:,} jobs"]
        for name in ("waiting", "running"):
            if f"{name}_ms" in stage:
                ms = stage[f"{name}_ms"]
                parts.append(f"{name} p50 {ms['p50']:.0f} / p99 {ms['p99']:.0f} ms")
        b.say(f"  RQ {queue}: " + ", ".join(parts))


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
