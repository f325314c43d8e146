"""`callbacks`: status callbacks to a receiver of the bench's own (devstack/receiver.py). What a
`status_callback` adds to `POST /calls` (the p50 of requests with one beside those without, the
two alternating in one open-loop run), then calls with one created at a fixed rate end to end,
every transition's callback checked: received, in seq order per call, and how long after the
commit of its transition it came (both clocks are this machine's)."""

from __future__ import annotations

import asyncio
import time

import orjson

from bench import readback, verify
from bench.http import Response
from bench.scenarios.drive import CALL_BODY, open_loop_run
from bench.session import Bench
from bench.stats import percentile
from bench.targets import FULL
from devstack.receiver import Receiver

PATH = "/bench"


async def callbacks(b: Bench) -> None:
    """Status callbacks: their cost to POST /calls, and every one received end to end."""
    if not b.owns_database:
        b.say("  [yellow]callbacks: skipped (its check reads the platform's database)[/yellow]")
        return
    receiver = await Receiver().start()
    try:
        await _post_cost(b, receiver)
        await _end_to_end(b, receiver)
    finally:
        await receiver.stop()


def _body(receiver: Receiver | None) -> bytes:
    body = orjson.loads(CALL_BODY)
    if receiver is not None:
        body["status_callback"] = receiver.url(PATH)
    return orjson.dumps(body)


async def _post_cost(b: Bench, receiver: Receiver) -> None:
    """POST /calls, every other request with a status_callback: the p50 of each, one run."""
    rate, duration = b.load.callbacks_rate, b.load.duration_s
    secret, key_id = await b.key("callbacks-post")
    client = b.client(secret, 256)
    plain, called_back = (client.raw("POST", "/calls", _body(r)) for r in (None, receiver))
    latencies_ms: dict[bool, list[float]] = {False: [], True: []}
    ids: set[str] = set()

    def collect(i: int, response: Response | None, intended: float, done: float) -> None:
        if response is not None and response.status == 201:
            latencies_ms[i % 2 == 1].append((done - intended) * 1000)
            ids.add(orjson.loads(response.body)["call_id"])

    async with b.api_alone() as held:
        info = await open_loop_run(
            b,
            "POST /calls, every other with a status_callback",
            client,
            lambda i: called_back if i % 2 else plain,
            rate,
            duration,
            collect,
        )
    await client.close()
    p50 = {with_: percentile(sorted(values), 50) for with_, values in latencies_ms.items()}
    extra_ms = p50[True] - p50[False]
    detail = b.detail("callbacks")
    detail["post"] = info | {
        "p50_without_ms": round(p50[False], 3),
        "p50_with_ms": round(p50[True], 3),
        "workers_held": held,
    }
    b.add(
        "callback_post_p50_extra_ms",
        round(extra_ms, 3),
        errors=info["errors"],
        comparable=rate >= FULL.callbacks_rate and duration >= FULL.duration_s,
        note=f"p50 {p50[True]:.2f} ms with, {p50[False]:.2f} ms without, {rate:g}/s"
        + b.workers_note(held),
    )
    await b.drain_and_verify("callbacks", key_id, ids, len(ids))
    await _wait_delivered(b, key_id)


async def _end_to_end(b: Bench, receiver: Receiver) -> None:
    """Calls with a status callback at a fixed rate, each transition's callback checked."""
    rate, duration = b.load.callbacks_rate, b.load.e2e_duration_s
    secret, key_id = await b.key("callbacks-e2e")
    assert key_id is not None and b.system is not None and b.system.pool is not None
    first_received = len(receiver.received)
    client = b.client(secret, 256)
    raw = client.raw("POST", "/calls", _body(receiver))
    ids: set[str] = set()

    def collect(i: int, response: Response | None, intended: float, done: float) -> None:
        if response is not None and response.status == 201:
            ids.add(orjson.loads(response.body)["call_id"])

    info = await open_loop_run(
        b,
        "end to end with status callbacks: POST /calls",
        client,
        lambda i: raw,
        rate,
        duration,
        collect,
        extra=lambda: f"{len(receiver.received) - first_received:,} callbacks received",
    )
    await client.close()
    calls = await b.drain_and_verify("callbacks", key_id, ids, len(ids))
    waited_s = await _wait_delivered(b, key_id)
    pool = b.system.pool
    committed = await readback.callback_commits(pool, key_id)
    received = [
        (body["call_id"], body["seq"], request.at * 1000)
        for request in receiver.received[first_received:]
        if (body := request.json())["call_id"] in ids
    ]
    check = verify.judge_callbacks(committed, received)
    check.lost += await readback.transitions_without_callback(pool, key_id)
    summary = check.summary()
    b.detail("callbacks")["end_to_end"] = {
        "create": info,
        "calls": calls.summary() if calls is not None else None,
        "callbacks": summary,
        "callbacks_done_after_s": waited_s,
    }
    comparable = rate >= FULL.callbacks_rate and duration >= FULL.e2e_duration_s
    latency = summary.get("commit_to_receipt_ms", {})
    b.add(
        "callback_delivery_p99_ms",
        latency.get("p99"),
        errors=info["errors"],
        comparable=comparable,
        note=f"{check.delivered:,} callbacks, p50 {latency.get('p50', 0):.0f} ms,"
        f" max {latency.get('max', 0):.0f} ms; {rate:g} calls/s for {duration:g} s",
    )
    b.add(
        "callbacks_checked",
        check.problems + (calls.problems if calls is not None else 0),
        note=f"{check.delivered:,}/{check.expected:,} received, {check.lost} lost,"
        f" {check.out_of_order} out of order, {check.repeated} repeated"
        + (f"; e.g. {'; '.join(check.examples[:2])}" if check.examples else ""),
    )


async def _wait_delivered(b: Bench, key_id: str | None) -> float | None:
    """Wait until the key's callbacks are all delivered (or stopped, or spent); returns how long
    that took, None if not within the drain timeout."""
    assert b.system is not None and b.system.pool is not None
    started = time.monotonic()
    async with b.task("callbacks: being delivered", None) as task:
        while time.monotonic() - started < b.load.drain_timeout_s:
            left = await readback.open_callbacks(b.system.pool, key_id)
            b.progress.update(task, info=f"{left:,} to deliver")
            if not left:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.5)
    b.say(f"  [red]callbacks not all delivered within {b.load.drain_timeout_s:.0f} s[/red]")
    return None
