"""`sse`: K streams open on one API process, each following its own call, and one update per
call posted at a fixed rate: how many streams open, how soon an update arrives, the API's
memory, and that every update arrives once and in order. A configuration whose streams or event
rate per key are settings at their defaults gets the streams spread over enough keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.http import Client, Response, closed_loop, gather_limited, open_stream
from bench.procfs import rss_bytes
from bench.scenarios.drive import EVENT_BODY, open_loop_run
from bench.session import Bench
from bench.stats import percentile
from bench.targets import FULL
from bench.verify import stream_faults

MIB = 1024 * 1024
# The calls to follow are created this many at a time; more per second than one key may post
# at the default MAX_EVENTS_PER_SECOND_PER_KEY, so the keys share them.
CREATE_CONCURRENCY = 64
CREATE_RATE_BOUND = 5_000


class Followed:
    """The calls the streams follow, the key each belongs to, and what each stream got."""

    def __init__(self, ids: list[str], auths: list[str]) -> None:
        self.ids = ids
        self.auths = auths  # the Authorization header of each call's key
        self.received: list[list[int]] = [[] for _ in ids]
        self.arrived: list[float | None] = [None] * len(ids)  # when seq 2 arrived
        self.intended: list[float] = [0.0] * len(ids)  # when its update was meant to be sent
        # Only an update whose POST was answered 201 is owed to its stream: one the client gave
        # up on (a timeout under overload) may never have been applied.
        self.applied: list[bool] = [False] * len(ids)

    def on_event_for(self, i: int) -> Callable[[dict[str, str], float], None]:
        def on_event(fields: dict[str, str], at: float) -> None:
            if fields.get("event") != "call" or "data" not in fields:
                return
            seq = orjson.loads(fields["data"])["seq"]
            self.received[i].append(seq)
            if seq == 2 and self.arrived[i] is None:
                self.arrived[i] = at

        return on_event

    def delivered(self) -> int:
        return sum(1 for a in self.arrived if a is not None)


async def sse(b: Bench) -> None:
    """K streams open on one API process, each following its own call; one update per call
    posted at a fixed rate, each timed from its POST's intended send to its arrival."""
    streams_wanted, rate = b.load.sse_streams, b.load.sse_rate
    pairs = await b.keys("sse", streams=streams_wanted, events_per_s=max(rate, CREATE_RATE_BOUND))
    auths = [f"Bearer {secret}" for secret, _ in pairs]
    client = b.client(None, 512)
    detail = b.detail("sse")
    detail["keys"] = len(pairs)
    api_pid = b.api_pid
    rss_peak = [0]
    rss_idle = rss_bytes(api_pid) if api_pid else None

    async def sample_rss() -> None:
        while api_pid:
            rss_peak[0] = max(rss_peak[0], rss_bytes(api_pid) or 0)
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_rss())
    try:
        calls = await _create_calls(b, client, auths, streams_wanted)
        streams, open_idx, refused = await _open_streams(b, client, calls)
        # Every stream's first message is the call's current state (seq 1).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not calls.received[i] for i in open_idx):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        rss_open = rss_bytes(api_pid) if api_pid else None
        b.say(
            f"  sse: {len(streams):,} streams open"
            + (f" over {len(pairs)} keys" if len(pairs) > 1 else "")
            + (f", {sum(refused.values())} refused {refused}" if refused else "")
            + (
                f"; API RSS {rss_open / MIB:.0f} MiB (idle {rss_idle / MIB:.0f} MiB)"
                if rss_open and rss_idle
                else ""
            )
        )
        posting = await _post_updates(b, client, calls, rate)
        deadline = time.monotonic() + 10
        owed = [i for i in open_idx if calls.applied[i]]
        while time.monotonic() < deadline and any(calls.arrived[i] is None for i in owed):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        detail["posting"] = posting
        latencies = sorted(
            (arrived - calls.intended[i]) * 1000
            for i in open_idx
            if (arrived := calls.arrived[i]) is not None and calls.intended[i]
        )
        lost = sum(1 for i in owed if calls.arrived[i] is None)
        disorder, gaps = stream_faults(calls.received)
        open_streams_metric = await _open_streams_metric(b, auths[0])
        for stream in streams:
            stream.close()
        await asyncio.sleep(1.0 if b.opts.quick else 3.0)
        after_close = await _open_streams_metric(b, auths[0])
    finally:
        sampler.cancel()
        await client.close()
    p99 = percentile(latencies, 99)
    detail.update(
        {
            "streams_wanted": streams_wanted,
            "streams_open": len(streams),
            "refused": refused,
            "update_rate_per_s": rate,
            "delivery_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(p99, 2),
                "max": round(latencies[-1], 2) if latencies else None,
            },
            "lost_updates": lost,
            "updates_not_answered": len(open_idx) - len(owed),
            "out_of_order_or_repeated": disorder,
            "first_message_not_seq_1": gaps,
            "api_rss_mib": {
                "idle": round(rss_idle / MIB, 1) if rss_idle else None,
                "streams_open": round(rss_open / MIB, 1) if rss_open else None,
                "peak": round(rss_peak[0] / MIB, 1) if rss_peak[0] else None,
            },
            "open_streams_metric": {"while_open": open_streams_metric, "after_close": after_close},
        }
    )
    comparable = streams_wanted >= FULL.sse_streams
    b.say(
        f"  sse: delivered {len(latencies):,} updates: p50 {detail['delivery_ms']['p50']:.1f} ms,"
        f" p99 {p99:.1f} ms, max {detail['delivery_ms']['max'] or 0:.1f} ms; lost {lost},"
        f" out of order {disorder}; open-streams metric {open_streams_metric} → {after_close}"
        f" after closing"
    )
    spread = f", {len(pairs)} keys" if len(pairs) > 1 else ""
    b.add(
        "sse_streams_open",
        len(streams),
        errors=sum(refused.values()),
        comparable=comparable,
        note=spread.lstrip(", "),
    )
    b.add(
        "sse_delivery_p99_ms",
        round(p99, 2),
        errors=lost + posting["errors"],
        comparable=comparable,
        note=f"{rate:g} updates/s"
        + (f", {posting['errors']:,} POSTs unanswered" if posting["errors"] else ""),
    )
    if rss_peak[0]:
        b.add("sse_api_rss_mib", round(rss_peak[0] / MIB, 1), comparable=comparable)
    problems = lost + disorder + gaps + (after_close not in (0, None))
    b.add("sse_checked", problems)


async def _create_calls(b: Bench, client: Client, auths: list[str], count: int) -> Followed:
    """`count` ingested calls (call_initiated), the keys taking turns."""
    body = EVENT_BODY.encode()
    raws = [client.raw("POST", "/events", body, {"Authorization": auth}) for auth in auths]
    async with b.task(f"sse: {count:,} calls to follow", count) as task:
        answers = await closed_loop(
            client,
            count,
            CREATE_CONCURRENCY,
            lambda i: raws[i % len(raws)],
            on_done=lambda n: b.progress.update(task, completed=n),
        )
    made = [
        (orjson.loads(a.body)["call_id"], auths[i % len(auths)])
        for i, a in enumerate(answers)
        if a and a.status == 201
    ]
    return Followed([call_id for call_id, _ in made], [auth for _, auth in made])


async def _open_streams(
    b: Bench, client: Client, calls: Followed
) -> tuple[list[Any], list[int], dict[str, int]]:
    """A stream per call: (the streams open, the index of each one's call, refusals by kind)."""
    streams = []
    open_idx: list[int] = []
    refused: dict[str, int] = {}
    async with b.task(f"sse: opening {len(calls.ids):,} streams", len(calls.ids)) as task:
        opened = [0]

        def opener(i: int) -> Callable[[], Awaitable[Any]]:
            async def go() -> Any:
                result = await open_stream(
                    client,
                    f"/calls/{calls.ids[i]}/stream",
                    calls.on_event_for(i),
                    {"Authorization": calls.auths[i]},
                )
                opened[0] += 1
                b.progress.update(task, completed=opened[0])
                return result

            return go

        results = await gather_limited([opener(i) for i in range(len(calls.ids))], 200)
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            refused[type(result).__name__] = refused.get(type(result).__name__, 0) + 1
            continue
        stream, status, body = result
        if status == 200:
            streams.append(stream)
            open_idx.append(i)
        else:
            reason = f"{status} {body[:80].decode(errors='replace')}"
            refused[reason] = refused.get(reason, 0) + 1
            stream.close()
    return streams, open_idx, refused


async def _post_updates(b: Bench, client: Client, calls: Followed, rate: float) -> dict[str, Any]:
    """One `call_routed` per call, at `rate`, each timed from its intended send."""

    def raw(i: int) -> bytes:
        body = orjson.dumps({"event": "call_routed", "call_id": calls.ids[i], "agent_id": "bench"})
        return client.raw("POST", "/events", body, {"Authorization": calls.auths[i]})

    def mark(i: int, response: Response | None, sent_at: float, done: float) -> None:
        calls.intended[i] = sent_at
        calls.applied[i] = response is not None and response.status == 201

    return await open_loop_run(
        b,
        "sse: POST /events call_routed",
        client,
        raw,
        rate,
        len(calls.ids) / rate,
        mark,
        extra=lambda: f"{calls.delivered():,} delivered",
    )


async def _open_streams_metric(b: Bench, auth: str) -> int | None:
    """The API's own count of its open streams (mockcomms_open_streams)."""
    client = b.client(None, 1)
    try:
        response = await client.request(
            "GET", "/metrics?format=prometheus", headers={"Authorization": auth}
        )
        for line in response.body.decode().splitlines():
            if line.startswith("mockcomms_open_streams "):
                return int(float(line.split()[1]))
    except Exception:
        return None
    finally:
        await client.close()
    return None
