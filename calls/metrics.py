"""Figures every process adds to and the API reports: timer lateness, upload attempts.

They live in Redis, so the API's Prometheus text shows what the workers saw; a flushed Redis
starts them from zero again, as a restarted process would.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from redis.asyncio import Redis

from core import keys
from core.redis_mux import Batch, Client

# Upper bounds (ms) of the lateness histogram's buckets; past the last one is +Inf.
LATENESS_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)


def observe_lateness(pipe: Batch, lateness_ms: Iterable[float]) -> None:
    """Queue on `pipe` the lateness of fired timers (actual minus due time)."""
    counts: dict[str, int] = {}
    total = 0.0
    for value in lateness_ms:
        index = bisect_left(LATENESS_BUCKETS_MS, value)
        bucket = str(LATENESS_BUCKETS_MS[index]) if index < len(LATENESS_BUCKETS_MS) else "+Inf"
        counts[bucket] = counts.get(bucket, 0) + 1
        total += value
    for bucket, count in counts.items():
        pipe.hincrby(keys.TIMER_LATENESS, bucket, count)
    if counts:
        pipe.hincrby(keys.TIMER_LATENESS, "count", sum(counts.values()))
        pipe.hincrbyfloat(keys.TIMER_LATENESS, "sum_ms", total)


def count(pipe: Batch | Client, name: str, amount: int = 1) -> Any:
    return pipe.hincrby(keys.COUNTERS, name, amount)


async def read(redis: Redis) -> tuple[dict[str, float], dict[str, int]]:
    """The lateness histogram's raw bucket counts (plus count and sum_ms), and the counters."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.TIMER_LATENESS)
        pipe.hgetall(keys.COUNTERS)
        lateness, counters = await pipe.execute()
    return (
        {k.decode(): float(v) for k, v in lateness.items()},
        {k.decode(): int(v) for k, v in counters.items()},
    )


def lateness_histogram(raw: Mapping[str, float]) -> HistogramMetricFamily:
    """The lateness histogram from `read`'s raw bucket counts, in seconds, buckets cumulative."""
    buckets, running = [], 0.0
    for bound in (*LATENESS_BUCKETS_MS, "+Inf"):
        running += raw.get(str(bound), 0)
        buckets.append(("+Inf" if bound == "+Inf" else floatToGoString(bound / 1000), running))
    return HistogramMetricFamily(
        "mockcomms_timer_lateness_seconds",
        "How late timers fired: actual minus due transition time.",
        buckets=buckets,
        sum_value=raw.get("sum_ms", 0) / 1000,
    )
