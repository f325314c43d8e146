"""`get_call`: GET /calls/{id} throughput from 64 wrk clients over calls made (and finished)
first; the bare ceiling reads the same live hashes."""

from __future__ import annotations

import orjson

from bench import wrk as wrk_runner
from bench.http import closed_loop
from bench.scenarios.drive import CALL_BODY, add_throughput, ceiling_wrk
from bench.session import Bench
from core import keys

# The shape of a finished call's live hash, for a bare ceiling that cannot see the platform's.
LIVE_HASH = {
    "key_id": "3f1e7a4c-0000-4000-8000-000000000000",
    "kind": "simulated",
    "status": "COMPLETED",
    "seq": "4",
    "from_number": "+14155550100",
    "to_number": "+14155550199",
    "metadata": '{"bench":true}',
    "flags": '["short_call"]',
    "call_type": "voice",
    "queue_id": "",
    "agent_id": "",
    "end_reason": "",
} | {
    f"{stage}_at": "1763900000000"
    for stage in ("created", "updated", "status_changed", "started", "routed", "answered", "ended")
}


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
    script = wrk_runner.lua_script("GET", paths, headers={"Authorization": f"Bearer {secret}"})
    ceiling = None
    if b.ceiling is not None:
        await _fill_bare_hashes(b, ids)
        ceiling = await ceiling_wrk(b, "GET 64c", script, 64, "ok_per_s")
    info = b.detail("get_call")
    result = await b.wrk("GET /calls/{id}", b.base_url, script, 64, into=info)
    note = f"{len(ids)} calls, p99 {result.latency_ms.get('p99', 0):.1f} ms"
    add_throughput(b, "get_call_per_s", result, ceiling, note)


async def _fill_bare_hashes(b: Bench, ids: list[str]) -> None:
    """The bare app reads `bare:call:<id>`: give it the platform's own live hashes when we can
    see them, else hashes of the same shape."""
    assert b.ceiling is not None and b.ceiling.redis is not None
    redis = b.ceiling.redis
    source = b.system.redis if b.owns_database and b.system else None
    async with redis.pipeline(transaction=False) as pipe:
        for call_id in ids:
            fields = None
            if source is not None:
                fields = await source.hgetall(keys.call_state(call_id))
            own = {"call_id": call_id, "recording_url": f"/calls/{call_id}/recording"}
            pipe.hset(f"bare:call:{call_id}", mapping=fields or LIVE_HASH | own)
        await pipe.execute()
