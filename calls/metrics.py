"""Figures every process adds to and the API reports: timer lateness, upload attempts, status
callbacks.

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

# Upper bounds (ms) of the histograms' buckets; past the last one is +Inf.
BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)
# The histograms kept in Redis: their hash (core/keys.py), name and help.
HISTOGRAMS = {
    keys.TIMER_LATENESS: (
        "mockcomms_timer_lateness_seconds",
        "How late timers fired: actual minus due transition time.",
    ),
    keys.CALLBACK_LATENCY: (
        "mockcomms_callback_delivery_seconds",
        "Status callbacks delivered (a 2xx): from the commit of their transition to the 2xx.",
    ),
}


def observe(pipe: Batch, histogram: str, values_ms: Iterable[float]) -> None:
    """Queue on `pipe` values (ms) for one of the HISTOGRAMS."""
    counts: dict[str, int] = {}
    total = 0.0
    for value in values_ms:
        index = bisect_left(BUCKETS_MS, value)
        bucket = str(BUCKETS_MS[index]) if index < len(BUCKETS_MS) else "+Inf"
        counts[bucket] = counts.get(bucket, 0) + 1
        total += value
    for bucket, count in counts.items():
        pipe.hincrby(histogram, bucket, count)
    if counts:
        pipe.hincrby(histogram, "count", sum(counts.values()))
        pipe.hincrbyfloat(histogram, "sum_ms", total)


def count(pipe: Batch | Client, name: str, amount: int = 1) -> Any:
    return pipe.hincrby(keys.COUNTERS, name, amount)


async def read(redis: Redis) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Each of the HISTOGRAMS' raw bucket counts (plus count and sum_ms), and the counters."""
    async with redis.pipeline(transaction=False) as pipe:
        for histogram in HISTOGRAMS:
            pipe.hgetall(histogram)
        pipe.hgetall(keys.COUNTERS)
        *histograms, counters = await pipe.execute()
    return (
        {
            name: {k.decode(): float(v) for k, v in raw.items()}
            for name, raw in zip(HISTOGRAMS, histograms, strict=True)
        },
        {k.decode(): int(v) for k, v in counters.items()},
    )


def histogram_family(histogram: str, raw: Mapping[str, float]) -> HistogramMetricFamily:
    """One of the HISTOGRAMS from `read`'s raw bucket counts, in seconds, buckets cumulative."""
    buckets, running = [], 0.0
    for bound in (*BUCKETS_MS, "+Inf"):
        running += raw.get(str(bound), 0)
        buckets.append(("+Inf" if bound == "+Inf" else floatToGoString(bound / 1000), running))
    name, text = HISTOGRAMS[histogram]
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=raw.get("sum_ms", 0) / 1000)
