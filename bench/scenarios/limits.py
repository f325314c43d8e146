"""`limits`: keys with small limits driven past them, one limit at a time; every refusal must be
a 429 with the original message, and PostgreSQL and Redis must show the limit held."""

from __future__ import annotations

from typing import Any

import orjson

from bench import readback
from bench.http import Response
from bench.scenarios.drive import CALL_BODY, open_loop_run
from bench.session import Bench
from bench.verify import LimitsCheck, max_overlap, most_in_window
from core import keys

OFFERED_PER_S = 60
# PostgreSQL stamps a call a few ms after the limiter granted it: windows are shortened by that
# much before counting.
SKEW_S = 0.02


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
    # while a call lives 0.3 s or more (TIME_SCALE 0.05; 6 s or more at the default): more than
    # 10 would be active.
    for phase, max_active, max_cps in (("rate", 1000, 20), ("concurrency", 10, 1000)):
        found, info = await _limits_phase(b, phase, max_active, max_cps, duration)
        problems += found
        granted += info["granted"]
        sent += info["sent"]
    b.add("limits_checked", problems, note=f"{granted} granted of {sent}")


async def _limits_phase(
    b: Bench, phase: str, max_active: int, max_cps: int, duration: float
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

    run = await open_loop_run(
        b,
        f"limits ({phase}): POST /calls",
        client,
        lambda i: raw,
        OFFERED_PER_S,
        duration,
        judge,
        profile=False,
    )
    await client.close()
    await readback.wait_drained(b.system.pool, key_id, b.load.drain_timeout_s)
    lives = await readback.lifetimes(b.system.pool, key_id)
    check = LimitsCheck(
        max_active=max_active,
        max_cps=max_cps,
        wrong_answers=len(wrong),
        refusals_expected=messages[too_fast if phase == "rate" else too_many],
        # A call's PostgreSQL lifetime (created_at to ended_at) lies within its limiter lease
        # (taken before the insert, given back after COMPLETED commits), so this count is exact.
        most_active=max_overlap(lives),
        most_in_a_second=most_in_window([created.timestamp() for created, _ in lives], 1.0, SKEW_S),
        # Every slot but the member that marks the set as known (core/keys.py).
        leases_left=await b.system.redis.zcount(keys.leases(key_id), "-inf", "(+inf"),
    )
    info = {
        "max_concurrent": max_active,
        "max_cps": max_cps,
        "offered_per_s": OFFERED_PER_S,
        "sent": run["sent"],
        "granted": run["statuses"].get("201", 0),
        "refusals": messages,
        "wrong_answers": wrong[:5],
        "most_active_at_once": check.most_active,
        "most_created_in_a_second": check.most_in_a_second,
        "leases_left_after": check.leases_left,
        "problems": check.problems,
    }
    b.detail("limits")[phase] = info
    colour = "green" if not check.problems else "red"
    b.say(
        f"  [{colour}]limits ({phase}): {info['granted']} granted; refused {messages};"
        f" at most {check.most_active} active (limit {max_active}), {check.most_in_a_second}"
        f" created in a second (limit {max_cps}), {check.leases_left} leases left[/{colour}]"
    )
    return check.problems, info
