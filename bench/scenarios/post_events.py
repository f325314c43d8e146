"""`post_events`: POST /events (`call_initiated`, a new call each) from 64 wrk clients; every
answered event must be stored. A configuration whose per-key event rate is a setting at its
default gets the load spread over enough keys."""

from __future__ import annotations

from bench import readback
from bench import wrk as wrk_runner
from bench.scenarios.drive import EVENT_BODY, add_throughput, ceiling_wrk
from bench.session import Bench
from bench.verify import events_stored_problems

# More events per second than this machine's bare ceiling answers (about 6,000/s), so that no
# key's cap is what the figure measures.
EVENTS_RATE_BOUND = 20_000
CLIENTS = 64


async def post_events(b: Bench) -> None:
    """POST /events (call_initiated, each a new call), 64 clients (wrk)."""
    pairs = await b.keys("post-events", events_per_s=EVENTS_RATE_BOUND)
    secrets = [f"Bearer {secret}" for secret, _ in pairs]
    script = wrk_runner.lua_script(
        "POST", "/events", body=EVENT_BODY, rotate=("Authorization", secrets)
    )
    ceiling = await ceiling_wrk(b, "POST 64c (events)", script, CLIENTS, "ok_per_s")
    info = b.detail("post_events")
    info["keys"] = len(pairs)
    result = await b.wrk("POST /events", b.base_url, script, CLIENTS, into=info)
    if result.errors:
        client = b.client(pairs[0][0], 1)
        info["error_example"] = await b.sample_error(
            client, client.raw("POST", "/events", EVENT_BODY.encode())
        )
        b.say(f"    e.g. {info['error_example']}")
        await client.close()
    spread = f", over {len(pairs)} keys" if len(pairs) > 1 else ""
    note = f"p99 {result.latency_ms.get('p99', 0):.1f} ms{spread}"
    add_throughput(b, "post_events_per_s", result, ceiling, note)
    key_ids = [key_id for _, key_id in pairs if key_id is not None]
    if b.owns_database and key_ids:
        assert b.system is not None and b.system.pool is not None
        stored = await readback.count_calls(b.system.pool, key_ids)
        answered = result.requests - result.non_2xx
        info["calls_stored"] = stored
        b.add(
            "post_events_checked",
            events_stored_problems(answered, stored, CLIENTS),
            note=f"{answered:,} answered, {stored:,} calls stored",
        )
