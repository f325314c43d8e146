"""`open_loop`: POST /calls sent at a fixed rate whatever the platform does, each request timed
from its intended send time; nothing it answered 201 may be lost."""

from __future__ import annotations

import orjson

from bench.http import Response
from bench.scenarios.drive import CALL_BODY, add_check, open_loop_run
from bench.session import Bench
from bench.targets import FULL


async def open_loop_latency(b: Bench) -> None:
    """POST /calls at a fixed offered rate, latency from each intended send time."""
    rate, duration = b.load.open_loop_rate, b.load.duration_s
    secret, key_id = await b.key("open-loop")
    body = CALL_BODY.encode()
    ceiling = None
    if b.ceiling is not None:
        bare = b.client(secret, 256, b.ceiling.bare_url)
        raw = bare.raw("POST", "/calls", body)
        b.ceilings["POST open loop"] = await open_loop_run(
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
        info = await open_loop_run(
            b, "POST /calls", client, lambda i: raw_call, rate, duration, collect
        )
    await client.close()
    b.detail("open_loop").update(info | {"workers_held": held})
    b.add(
        "post_calls_p99_ms_open_loop",
        info["latency_ms"]["p99"],
        ceiling=ceiling,
        errors=info["errors"],
        comparable=rate == FULL.open_loop_rate,
        note=f"{rate:g}/s, max {info['latency_ms']['max']:.0f} ms" + b.workers_note(held),
    )
    check = await b.drain_and_verify("open_loop", key_id, ids, len(ids))
    add_check(b, "open_loop_checked", check)
