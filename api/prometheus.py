"""The Prometheus side of `GET /metrics`: every figure as a prometheus_client metric family,
written in the format the scraper asks for (Prometheus text, or OpenMetrics)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from calls import metrics as shared_metrics
from core import keys

# The stores' counts (db/metrics.py): name, whether it only grows, help. prometheus_client
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


@dataclass(frozen=True)
class Figures:
    """What one answer read, before any of it is written out."""

    # _COUNTS by name, from PostgreSQL.
    counts: Mapping[str, int]
    # Jobs waiting in the RQ queue of timers.
    queue_depth: int
    # Timers set, and those past their due time, by kind (keys.TIMER_KINDS).
    timers_pending: Mapping[str, int]
    timers_overdue: Mapping[str, int]
    # Realtime subscriptions open on this API process.
    open_streams: int
    # What calls.metrics.read returns: the raw histograms, by their Redis hash, and the workers'
    # counters.
    histograms: Mapping[str, Mapping[str, float]]
    shared: Mapping[str, int]


class Exposition(Collector):
    """The families of one answer: its figures, then this process's own metrics (request
    latency, from its registry). Everything was read before, so `collect` waits on nothing."""

    def __init__(self, figures: Figures, process: CollectorRegistry) -> None:
        self.figures = figures
        self.process = process

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        for name, (grows, text) in _COUNTS.items():
            family = CounterMetricFamily if grows else GaugeMetricFamily
            yield family(f"mockcomms_{name}", text, value=figures.counts[name])
        depth = GaugeMetricFamily(
            "mockcomms_queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"]
        )
        depth.add_metric([keys.TIMERS_QUEUE], figures.queue_depth)
        yield depth
        yield _by_kind(
            "mockcomms_timers_pending",
            "Timers set, by kind (adv: move a call on, upl: upload, cbk: status callback).",
            figures.timers_pending,
        )
        yield _by_kind(
            "mockcomms_timers_overdue",
            "Timers past their due time not yet taken: the backlog.",
            figures.timers_overdue,
        )
        yield GaugeMetricFamily(
            "mockcomms_open_streams",
            "Realtime subscriptions open on this API process.",
            value=figures.open_streams,
        )
        for histogram, raw in figures.histograms.items():
            yield shared_metrics.histogram_family(histogram, raw)
        for name, text in _SHARED_COUNTERS.items():
            yield CounterMetricFamily(f"mockcomms_{name}", text, value=figures.shared.get(name, 0))
        deliveries = CounterMetricFamily(
            "mockcomms_callback_deliveries",
            "Status callback deliveries ended, by outcome: delivered (a 2xx), stopped (a 410),"
            " failed (attempts spent; a requeued dead letter that fails again counts again).",
            labels=["outcome"],
        )
        for outcome in CALLBACK_OUTCOMES:
            deliveries.add_metric([outcome], figures.shared.get(f"callbacks_{outcome}", 0))
        yield deliveries
        yield from self.process.collect()


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
