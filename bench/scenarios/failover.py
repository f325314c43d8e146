"""`failover`: the multi-process layout of issue 20 (two API processes, three workers, two
schedulers, on one database and one Redis), calls created on both APIs at a fixed rate, and each
scheduler SIGKILLed in turn, the standby first, then the leader, each started again a second
later as a process manager would: how late the timers fired meanwhile, and that nothing was
lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from bench import verify
from bench.http import Response, Timings, open_loop
from bench.scenarios.drive import CALL_BODY, add_check
from bench.session import Bench, cpu_line
from bench.targets import FULL
from devstack.layout import Layout
from scheduler.leader import read_lead

LAYOUT = Layout(apis=2, workers=3, schedulers=2)
# A killed scheduler is started again this long after its death.
RESTART_AFTER_S = 1.0


async def failover(b: Bench) -> None:
    """Two APIs, three workers, two schedulers; each scheduler SIGKILLed in turn."""
    if b.system is None or b.system.redis is None:
        b.say("  [yellow]needs a platform of the bench's own: skipped with --base-url[/yellow]")
        return
    system, redis = b.system, b.system.redis
    rate, duration = b.load.failover_rate, b.load.failover_duration_s
    detail = b.detail("failover")
    detail |= {"layout": LAYOUT.describe(), "offered_per_s": rate, "duration_s": duration}
    async with system.laid_out(LAYOUT) as urls:
        b.say(f"  {LAYOUT.describe()} on one database and Redis; calls created on both APIs")
        secret, key_id = await b.key("failover")
        clients = [b.client(secret, 128, base_url=url) for url in urls]
        ids: set[str] = set()
        readings = [await _lateness(b, secret, urls[0])]
        kills: list[dict[str, Any]] = []

        def collect(i: int, response: Response | None, intended: float, done: float) -> None:
            if response is not None and response.status == 201:
                ids.add(orjson.loads(response.body)["call_id"])

        async def kill_in_turn() -> None:
            for leader in (False, True):
                await asyncio.sleep(duration / 3)
                readings.append(await _lateness(b, secret, urls[0]))
                kills.append(await _kill_scheduler(b, leading=leader))

        cpu: dict[str, Any] = {}
        total = round(rate * duration)
        async with b.task(f"failover: POST /calls ({rate:g}/s on 2 APIs)", total) as task:
            sent = [Timings(), Timings()]

            def tick(i: int) -> Any:
                def update(t: Timings) -> None:
                    sent[i] = t
                    b.progress.update(
                        task, completed=sum(s.sent for s in sent), info=f"{len(ids):,} created"
                    )

                return update

            async with b.cpu(cpu, profile="failover"):
                killing = asyncio.create_task(kill_in_turn())
                runs = await asyncio.gather(
                    *(
                        open_loop(
                            client,
                            rate / len(clients),
                            duration,
                            lambda i, c=client: c.raw("POST", "/calls", CALL_BODY.encode()),
                            on_response=collect,
                            on_tick=tick(n),
                        )
                        for n, client in enumerate(clients)
                    )
                )
                await killing
            # No wrk runs here: what the children's CPU counts is the killed schedulers'.
            cpu.get("cpu_pct_of_one_core", {}).pop("wrk", None)
        for client in clients:
            await client.close()
        errors = sum(run.errors for run in runs)
        detail["create"] = {url: run.summary() for url, run in zip(urls, runs, strict=True)}
        detail["cpu_pct_of_one_core"] = cpu.get("cpu_pct_of_one_core")
        detail["kills"] = kills
        b.say(
            f"  created {len(ids):,} of {sum(run.sent for run in runs):,} ({errors} errors);"
            + "".join(f" {_said(kill)};" for kill in kills)
            + cpu_line(cpu)
        )
        check = await b.drain_and_verify("failover", key_id, ids, len(ids))
        readings.append(await _lateness(b, secret, urls[0]))
        detail["lead_after"] = _lead_json(await read_lead(redis))

    phases = ("steady", "standby killed", "leader killed")
    detail["timer_lateness_by_phase"] = {
        name: verify.lateness_figures(before, after)
        for name, before, after in zip(phases, readings, readings[1:], strict=False)
    }
    late = verify.lateness_figures(readings[0], readings[-1])
    detail["timer_lateness"] = late
    _, max_ms = verify.lateness_bounds(late)
    comparable = rate >= FULL.failover_rate and duration >= FULL.failover_duration_s
    bound = lambda ms: "> 10 s" if ms is None else f"≤ {ms:g} ms"  # noqa: E731
    b.say(
        f"  timer lateness over {late['timers']:,} timers: max {bound(late['max_ms'])}; by phase: "
        + ", ".join(
            f"{name} {bound(figures['max_ms'])}"
            for name, figures in detail["timer_lateness_by_phase"].items()
        )
    )
    b.add(
        "failover_lateness_max_ms",
        max_ms,
        errors=errors,
        comparable=comparable,
        note=f"{LAYOUT.describe()}; {rate:g}/s for {duration:g} s; "
        + "; ".join(_said(kill) for kill in kills),
    )
    add_check(b, "failover_checked", check)


async def _lateness(b: Bench, secret: str, base_url: str) -> dict[float, float]:
    client = b.client(secret, 1, base_url=base_url)
    try:
        response = await client.request("GET", "/metrics?format=prometheus")
        return verify.lateness_buckets(response.body.decode())
    finally:
        await client.close()


async def _kill_scheduler(b: Bench, *, leading: bool) -> dict[str, Any]:
    """SIGKILL the scheduler that leads (or the one that does not), start it again a second
    later; says which it was and, for the leader, how long until another led."""
    assert b.system is not None and b.system.redis is not None
    system, redis = b.system, b.system.redis
    lead = await read_lead(redis)
    leader_pid = int(lead.holder.split(":")[1]) if lead.holder else None
    schedulers = {
        name: process
        for name, process in system.processes.items()
        if name.startswith("scheduler") and process.alive
    }
    name = next(
        (n for n, p in schedulers.items() if (p.pid == leader_pid) == leading),
        next(iter(schedulers)),
    )
    killed_at = time.monotonic()
    schedulers[name].kill()
    kill: dict[str, Any] = {"killed": name, "was_leading": schedulers[name].pid == leader_pid}
    await asyncio.sleep(RESTART_AFTER_S)
    system.restart(name)
    if kill["was_leading"]:
        # Upkeep's lead passes to the other (the timers never waited for it).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while True:
                    now = await read_lead(redis)
                    if now.holder not in (None, lead.holder):
                        break
                    await asyncio.sleep(0.05)
                kill["lead_taken_after_s"] = round(time.monotonic() - killed_at, 2)
                kill["lead"] = _lead_json(now)
    return kill


def _lead_json(lead: Any) -> dict[str, Any]:
    return {
        "holder": lead.holder,
        "changes": lead.changes,
        "vacant_ms": lead.vacant_ms,
    }


def _said(kill: dict[str, Any]) -> str:
    what = "the leading scheduler" if kill["was_leading"] else "the standby scheduler"
    text = f"{what} ({kill['killed']}) SIGKILLed"
    if "lead_taken_after_s" in kill:
        text += (
            f", the lead taken {kill['lead_taken_after_s']:.2f} s later"
            f" (vacant {kill['lead']['vacant_ms'] or 0} ms)"
        )
    return text
