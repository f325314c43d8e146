"""`GET /metrics`: the platform's counters as JSON, or as Prometheus text."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest

from api import appkeys
from api.handlers.common import json_response
from calls import metrics as shared_metrics
from core import keys
from core.clock import now_ms
from db.counters import fetch_counters

PROMETHEUS_TYPE = "text/plain; version=0.0.4"

_HELP = {
    "total_calls": ("counter", "Calls created since the platform started keeping records."),
    "active_calls": ("gauge", "Calls not yet COMPLETED."),
    "completed_calls": ("counter", "Calls that reached COMPLETED."),
    "current_cps": ("gauge", "Calls created in the last second."),
    "uploads_in_progress": ("gauge", "Recording uploads pending or running."),
    "uploads_completed": ("counter", "Recording uploads stored."),
    "uploads_failed": ("counter", "Recording uploads that failed after their last attempt."),
}


# Counters the workers keep in Redis (calls/metrics.py).
_SHARED_COUNTERS = {
    "upload_attempts": "Recording upload attempts made.",
    "upload_attempts_failed": "Upload attempts that failed (retried, or in uploads_failed).",
    "transitions": "Timed transitions applied by the workers.",
}


async def metrics(request: web.Request) -> web.Response:
    stores = request.app[appkeys.STORES]
    row = await fetch_counters(stores.pool)
    counters = {
        "total_calls": row["total_calls"],
        "active_calls": row["active_calls"],
        "completed_calls": row["total_calls"] - row["active_calls"],
        "current_cps": row["current_cps"],
        "uploads_in_progress": row["uploads_in_progress"],
        "uploads_completed": row["uploads_completed"],
    }
    wants_text = request.query.get("format") == "prometheus" or (
        "text/plain" in request.headers.get("Accept", "")
        and "application/json" not in request.headers.get("Accept", "")
    )
    if not wants_text:
        return json_response(counters)

    counters["uploads_failed"] = row["uploads_failed"]
    lines = []
    for name, value in counters.items():
        kind, text = _HELP[name]
        lines += [
            f"# HELP mockcomms_{name} {text}",
            f"# TYPE mockcomms_{name} {kind}",
            f"mockcomms_{name} {value}",
        ]
    now = now_ms()
    async with stores.redis.pipeline(transaction=False) as pipe:
        pipe.llen(f"rq:queue:{keys.TIMERS_QUEUE}")
        for kind in keys.TIMER_KINDS:
            pipe.zcard(keys.timers(kind))
            pipe.zcount(keys.timers(kind), "-inf", now)
        depth, *counts = await pipe.execute()
    lines += [
        "# HELP mockcomms_queue_depth Jobs waiting in the RQ queue.",
        "# TYPE mockcomms_queue_depth gauge",
        f'mockcomms_queue_depth{{queue="{keys.TIMERS_QUEUE}"}} {depth}',
        "# HELP mockcomms_timers_pending Timers set, by kind (adv: move a call on, upl: upload).",
        "# TYPE mockcomms_timers_pending gauge",
        *(
            f'mockcomms_timers_pending{{kind="{kind}"}} {counts[2 * i]}'
            for i, kind in enumerate(keys.TIMER_KINDS)
        ),
        "# HELP mockcomms_timers_overdue Timers past their due time not yet taken: the backlog.",
        "# TYPE mockcomms_timers_overdue gauge",
        *(
            f'mockcomms_timers_overdue{{kind="{kind}"}} {counts[2 * i + 1]}'
            for i, kind in enumerate(keys.TIMER_KINDS)
        ),
        "# HELP mockcomms_open_streams Realtime subscriptions open on this API process.",
        "# TYPE mockcomms_open_streams gauge",
        f"mockcomms_open_streams {request.app[appkeys.HUB].open_subscriptions}",
    ]
    lateness, shared = await shared_metrics.read(stores.redis)
    lines += shared_metrics.lateness_histogram_lines(lateness)
    for name, text in _SHARED_COUNTERS.items():
        lines += [
            f"# HELP mockcomms_{name}_total {text}",
            f"# TYPE mockcomms_{name}_total counter",
            f"mockcomms_{name}_total {shared.get(name, 0)}",
        ]
    body = "\n".join(lines) + "\n" + generate_latest(request.app[appkeys.REGISTRY]).decode()
    return web.Response(
        body=body.encode(),
        headers={"Content-Type": PROMETHEUS_TYPE + "; charset=utf-8"},
    )
