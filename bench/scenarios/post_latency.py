"""`post_latency`: POST /calls p99 latency from 16 wrk clients, then its calls checked."""

from __future__ import annotations

from bench.scenarios.drive import add_check, post_calls_wrk
from bench.session import Bench


async def post_latency(b: Bench) -> None:
    """POST /calls latency: 16 clients closed loop (wrk)."""
    run = await post_calls_wrk(b, "post_latency", 16, "p99")
    result = run.result
    b.add(
        "post_calls_p99_ms_16c",
        result.latency_ms.get("p99"),
        ceiling=run.ceiling,
        errors=result.errors,
        note=f"{result.ok_per_s:,.0f}/s answered" + run.note,
    )
    check = await b.drain_and_verify("post_latency", run.key_id, None, run.answered)
    add_check(b, "post_latency_checked", check)
