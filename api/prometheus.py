"""The Prometheus side of `GET /metrics`: every figure as a prometheus_client metric family, each
from one of the sources below, written in the format the scraper asks for (Prometheus text, or
OpenMetrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api import appkeys
from calls import metrics as shared_metrics
from core import keys
from core.clock import now_ms
from db.counters import fetch_counters, figures_of
from scheduler.leader import read_lead

# The stores' counts (db/counters.py): name, whether it only grows, help. prometheus_client
# writes a counter `mockcomms_x` as `mockcomms_x_total`.
_COUNTS = {
    "total_calls": (True, "Calls created since the platform started keeping records."),
    "active_calls": (False, "Calls not yet COMPLETED."),
    "completed_calls": (True, "Calls that reached COMPLETED."),
    "current_cps": (False, "Calls created in the last second."),
    "uploads_in_progress": (False, "Recording uploads pending or running."),
    "uploads_completed": (True, "Recording uploads stored."),
    "uploads_failed": (True, "Recording uploads that failed after their last attempt."),
}

# Counters the workers keep in Redis (calls/metrics.py).
_SHARED_COUNTERS = {
    "upload_attempts": "Recording upload attempts made.",
    "upload_attempts_failed": "Upload attempts that failed (retried, or in uploads_failed).",
    "transitions": "Timed transitions applied by the workers.",
    "callback_attempts": "Status callback attempts made.",
    "callback_attempts_failed": "Status callback attempts that got no 2xx (retried, or spent).",
}
# How a status callback delivery ends (counters `callbacks_<outcome>` in Redis).
CALLBACK_OUTCOMES = ("delivered", "stopped", "failed")

# A source of figures: it reads what it needs (PostgreSQL, Redis, this process) and gives its
# families. An answer awaits every source before anything is written, so writing waits on
# nothing.
Source = Callable[[web.Application], Awaitable[list[Metric]]]


async def platform_counts(app: web.Application) -> list[Metric]:
    """The calls' and uploads' counters, kept in PostgreSQL as calls move."""
    figures = figures_of(await fetch_counters(app[appkeys.STORES].pool))
    return [
        (CounterMetricFamily if grows else GaugeMetricFamily)(
            f"mockcomms_{name}", text, value=figures[name]
        )
        for name, (grows, text) in _COUNTS.items()
    ]


async def queues_and_timers(app: web.Application) -> list[Metric]:
    """The RQ queue's depth and the timers set and overdue, by kind (Redis)."""
    now = now_ms()
    async with app[appkeys.STORES].redis.pipeline(transaction=False) as pipe:
        pipe.llen(f"rq:queue:{keys.TIMERS_QUEUE}")
        for kind in keys.TIMER_KINDS:
            pipe.zcard(keys.timers(kind))
            pipe.zcount(keys.timers(kind), "-inf", now)
        depth, *counts = await pipe.execute()
    queue = GaugeMetricFamily(
        "mockcomms_queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"]
    )
    queue.add_metric([keys.TIMERS_QUEUE], depth)
    return [
        queue,
        _by_kind(
            "mockcomms_timers_pending",
            "Timers set, by kind (adv: move a call on, upl: upload, cbk: status callback).",
            {kind: counts[2 * i] for i, kind in enumerate(keys.TIMER_KINDS)},
        ),
        _by_kind(
            "mockcomms_timers_overdue",
            "Timers past their due time not yet taken: the backlog.",
            {kind: counts[2 * i + 1] for i, kind in enumerate(keys.TIMER_KINDS)},
        ),
    ]


async def workers_figures(app: web.Application) -> list[Metric]:
    """What the workers count in Redis (calls/metrics.py): histograms and counters."""
    histograms, shared = await shared_metrics.read(app[appkeys.STORES].redis)
    families: list[Metric] = [
        shared_metrics.histogram_family(histogram, raw) for histogram, raw in histograms.items()
    ]
    families += [
        CounterMetricFamily(f"mockcomms_{name}", text, value=shared.get(name, 0))
        for name, text in _SHARED_COUNTERS.items()
    ]
    deliveries = CounterMetricFamily(
        "mockcomms_callback_deliveries",
        "Status callback deliveries ended, by outcome: delivered (a 2xx), stopped (a 410),"
        " failed (attempts spent; a requeued dead letter that fails again counts again).",
        labels=["outcome"],
    )
    for outcome in CALLBACK_OUTCOMES:
        deliveries.add_metric([outcome], shared.get(f"callbacks_{outcome}", 0))
    families.append(deliveries)
    return families


async def scheduler_lead(app: web.Application) -> list[Metric]:
    """Which scheduler leads upkeep, and when the lead last changed hands (Redis)."""
    lead = await read_lead(app[appkeys.STORES].redis)
    leader = GaugeMetricFamily(
        "mockcomms_scheduler_leader",
        "1 for the scheduler that leads upkeep, the retention purge and the live queue figures"
        " (none while the lead is vacant); every scheduler dispatches timers.",
        labels=["scheduler"],
    )
    if lead.holder is not None:
        leader.add_metric([lead.holder], 1)
    return [
        leader,
        GaugeMetricFamily(
            "mockcomms_scheduler_leader_changed_timestamp_seconds",
            "When the lead last changed hands (Unix time; 0 when never recorded).",
            value=(lead.changed_ms or 0) / 1000,
        ),
        CounterMetricFamily(
            "mockcomms_scheduler_leader_changes",
            "Times a scheduler took the lead (the first start counts).",
            value=lead.changes,
        ),
        GaugeMetricFamily(
            "mockcomms_scheduler_lead_vacant_seconds",
            "How long the lead was vacant before its holder took it (0 when unknown).",
            value=(lead.vacant_ms or 0) / 1000,
        ),
    ]


async def this_process(app: web.Application) -> list[Metric]:
    """This API process's own: its open streams and its request latency histogram."""
    streams = GaugeMetricFamily(
        "mockcomms_open_streams",
        "Realtime subscriptions open on this API process.",
        value=app[appkeys.HUB].open_subscriptions,
    )
    return [streams, *app[appkeys.REGISTRY].collect()]


SOURCES: tuple[Source, ...] = (
    platform_counts,
    queues_and_timers,
    workers_figures,
    scheduler_lead,
    this_process,
)


class Exposition(Collector):
    """The families of one answer, read before anything is written."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def read(app: web.Application) -> Exposition:
    """Every source's families, read concurrently."""
    read = await asyncio.gather(*(source(app) for source in SOURCES))
    return Exposition([family for families in read for family in families])


def _by_kind(name: str, text: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["kind"])
    for kind in keys.TIMER_KINDS:
        family.add_metric([kind], values[kind])
    return family


def render(collector: Collector, accept: str) -> tuple[bytes, str]:
    """`collector`'s families and their content type: OpenMetrics when `accept` names
    application/openmetrics-text, else Prometheus text (prometheus_client's negotiation)."""
    try:
        encoder, content_type = choose_encoder(accept)
    except TypeError:
        # A version it cannot compare (`version=x`): the text format every scraper reads.
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    return encoder(collector), content_type
