"""What several scenarios share: the request bodies, a wrk run beside its bare ceiling, the
`POST /calls` run of two scenarios, an open-loop run with its progress and CPU, and a run's
correctness check as a figure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import verify
from bench import wrk as wrk_runner
from bench.http import Client, Response, open_loop
from bench.session import Bench, cpu_line, slug

CALL_BODY = '{"from": "+14155550100", "to": "+14155550199", "metadata": {"bench": true}}'
EVENT_BODY = '{"event": "call_initiated", "type": "voice", "queue_id": "bench"}'


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


@dataclass
class PostCallsRun:
    secret: str
    key_id: str | None
    ceiling: float | None
    info: dict[str, Any]
    result: wrk_runner.WrkResult
    note: str  # what the figure says of the workers

    @property
    def answered(self) -> int:
        return self.result.requests - self.result.non_2xx


async def post_calls_wrk(b: Bench, scenario: str, clients: int, metric: str) -> PostCallsRun:
    """`POST /calls` from `clients` wrk connections (the workers held when the configuration
    says so), beside the bare app's run whose `metric` is the ceiling."""
    secret, key_id = await b.key(scenario.replace("_", "-"))
    script = wrk_runner.lua_script(
        "POST", "/calls", body=CALL_BODY, headers={"Authorization": f"Bearer {secret}"}
    )
    ceiling = await ceiling_wrk(b, f"POST {clients}c", script, clients, metric)
    info = b.detail(scenario)
    async with b.api_alone() as held:
        result = await b.wrk("POST /calls", b.base_url, script, clients, into=info)
    info["workers_held"] = held
    return PostCallsRun(secret, key_id, ceiling, info, result, b.workers_note(held))


async def open_loop_run(
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
    """Send `raw(i)` at `rate` for `duration_s` with a progress bar and the CPU shares; the
    run's summary (latency from each intended send time, statuses, failures)."""
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
        async with b.cpu(cpu, profile=slug(label) if profile else None):
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
    b.say(line + cpu_line(cpu))
    return summary


def add_throughput(
    b: Bench, key: str, result: wrk_runner.WrkResult, ceiling: float | None, note: str
) -> None:
    """A wrk run's answered requests per second as the figure `key`, beside its ceiling."""
    b.add(key, round(result.ok_per_s, 1), ceiling=ceiling, errors=result.errors, note=note)


def add_check(b: Bench, key: str, check: verify.CallCheck | None) -> None:
    """A run's verdict on its calls as the figure `key` (problems found, target 0)."""
    if check is None:
        return
    b.add(
        key,
        check.problems,
        note=f"{check.done:,}/{check.found:,} calls" + check.breakdown(),
    )
