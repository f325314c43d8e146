"""`post_calls`: POST /calls throughput from 64 wrk clients, then every call it made checked."""

from __future__ import annotations

from bench.scenarios.drive import CALL_BODY, add_check, add_throughput, post_calls_wrk
from bench.session import Bench


async def post_calls(b: Bench) -> None:
    """POST /calls, 64 clients, closed loop (wrk): throughput."""
    run = await post_calls_wrk(b, "post_calls", 64, "ok_per_s")
    result = run.result
    if result.errors:
        client = b.client(run.secret, 1)
        run.info["error_example"] = await b.sample_error(
            client, client.raw("POST", "/calls", CALL_BODY.encode())
        )
        await client.close()
    add_throughput(
        b, "post_calls_per_s", result, run.ceiling, f"{b.load.duration_s:g} s" + run.note
    )
    check = await b.drain_and_verify("post_calls", run.key_id, None, run.answered)
    add_check(b, "post_calls_checked", check)
