"""`GET /calls/{id}/callbacks`: a call's status callback deliveries, each with every attempt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from api import appkeys
from api.handlers.common import json_response, path_call
from api.request_models import CallbackPage, parse_query
from core.clock import iso
from core.errors import NotFound
from db.callbacks import fetch_callback_settings, fetch_deliveries


async def call_callbacks(request: web.Request) -> web.Response:
    """A page of the call's deliveries in seq order, `limit` of them after `after_seq`."""
    call = path_call(request)
    page = parse_query(CallbackPage, request.query)
    pool = request.app[appkeys.STORES].pool
    found = await fetch_callback_settings(pool, call)
    if found is None:
        raise NotFound("Call not found")
    # One more than the page, to know whether another follows.
    rows = await fetch_deliveries(pool, call, page.after_seq, page.limit + 1)
    deliveries: dict[str, dict[str, Any]] = {}
    for row in rows:
        delivery = deliveries.get(row["delivery_id"])
        if delivery is None:
            delivery = deliveries[row["delivery_id"]] = _delivery(row)
        if row["attempt"] is not None:
            delivery["attempts"].append(_attempt(row))
    data = list(deliveries.values())
    more = len(data) > page.limit
    data = data[: page.limit]
    stopped_at = found["callbacks_stopped_at"]
    return json_response(
        {
            "call_id": call.ref,
            "status_callback": found["status_callback"],
            "status_callback_events": found["status_callback_events"],
            "stopped_at": None if stopped_at is None else iso(stopped_at),
            "data": data,
            "limit": page.limit,
            "next_after_seq": data[-1]["seq"] if more else None,
        }
    )


def _delivery(row: Mapping[str, Any]) -> dict[str, Any]:
    pending = row["state"] == "pending"
    return {
        "delivery_id": row["delivery_id"],
        "seq": row["seq"],
        "status": row["status"],
        "state": row["state"],
        "committed_at": iso(row["created_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]) if pending else None,
        "delivered_at": None if row["delivered_at"] is None else iso(row["delivered_at"]),
        "last_error": row["last_error"],
        "attempts": [],
    }


def _attempt(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "status_code": row["status_code"],
        "error": row["error"],
        "latency_ms": round(row["latency_ms"], 3),
        "attempted_at": iso(row["attempted_at"]),
    }
