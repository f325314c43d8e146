"""The shapes a call takes outside: its live hash in Redis, its API body, its realtime message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from core.clock import from_ms, iso, to_ms

# The columns of a call row (db/calls.py CALL_COLUMNS) its live view keeps, and which of them
# are times (kept as epoch ms). The view is one JSON value in the call's hash, beside its seq:
# one field to write and read instead of one per column.
_LIVE_COLUMNS = (
    "call_id",
    "ref",
    "key_id",
    "kind",
    "status",
    "from_number",
    "to_number",
    "metadata",
    "flags",
    "recording_url",
    "call_type",
    "queue_id",
    "agent_id",
    "end_reason",
)
# Columns only calls made for integrators' tests have (a scenario, a status callback, what a
# create through the Twilio face asked for): kept in the live view and shown in a call's bodies
# only when set, so other calls look as they always have.
_WHEN_SET = ("status_callback", "status_callback_events", "scenario", "twilio")
_LIVE_TIMES = (
    "created_at",
    "updated_at",
    "status_changed_at",
    "started_at",
    "routed_at",
    "answered_at",
    "held_at",
    "ended_at",
    "last_event_at",
)


def live_json(row: Mapping[str, Any]) -> bytes:
    """A call row from PostgreSQL as its live view."""
    view = {column: row[column] for column in _LIVE_COLUMNS}
    view["flags"] = list(view["flags"])
    view |= _set_columns(row)
    for column in _LIVE_TIMES:
        moment = row[column]
        view[column] = None if moment is None else to_ms(moment)
    return orjson.dumps(view)


def call_from_live(seq: bytes, view: bytes) -> dict[str, Any]:
    """A live view read back into the same mapping a PostgreSQL row gives."""
    call = orjson.loads(view)
    call["seq"] = int(seq)
    call.setdefault("ref", call["call_id"])  # a view written before calls had names
    for column in _LIVE_TIMES:
        ms = call.get(column)  # a view written before the column: None
        call[column] = None if ms is None else from_ms(ms)
    return call


def _set_columns(call: Mapping[str, Any]) -> dict[str, Any]:
    """The `_WHEN_SET` columns the call has."""
    return {column: value for column in _WHEN_SET if (value := call.get(column)) is not None}


def absolute_url(url: str | None, base_url: str) -> str | None:
    """Recording URLs served by the API are stored as paths; give them the caller's base URL."""
    if url and url.startswith("/"):
        return base_url + url
    return url


def _identity(call: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every body of a call starts with. A call's id outside is the one its key
    knows it by (`ref`, core/call_ids.py)."""
    return {
        "call_id": call["ref"],
        "status": call["status"],
        "from": call["from_number"],
        "to": call["to_number"],
        "metadata": call["metadata"],
    }


def call_body(call: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """`GET /calls/{id}`."""
    return (
        _identity(call)
        | {
            "type": call["call_type"],
            "source": call["kind"],
            "queue_id": call["queue_id"],
            "agent_id": call["agent_id"],
            "end_reason": call["end_reason"],
            "flags": list(call["flags"]),
            "recording_url": absolute_url(call["recording_url"], base_url),
            "created_at": iso(call["created_at"]),
            "updated_at": iso(call["updated_at"]),
        }
        | _set_columns(call)
    )


def created_body(call: Mapping[str, Any], base_url: str, stream_token: str) -> dict[str, Any]:
    """`POST /calls` 201: the original service's fields plus where to watch the call, URLs a
    browser can open as they are (they carry the call's stream token, never the key)."""
    ws_base = "ws" + base_url.removeprefix("http")
    return (
        _identity(call)
        | {
            "created_at": iso(call["created_at"]),
            "websocket_url": f"{ws_base}/ws?call_id={call['ref']}&token={stream_token}",
            "stream_url": f"{base_url}/calls/{call['ref']}/stream?token={stream_token}",
        }
        | _set_columns(call)
    )


def message(
    *,
    call_id: str,
    seq: int,
    status: str,
    previous_status: str | None,
    event: str,
    flags: list[str],
    at: datetime,
) -> dict[str, Any]:
    """The one realtime message shape, for SSE, WebSocket and pub/sub alike."""
    return {
        "call_id": call_id,
        "seq": seq,
        "status": status,
        "previous_status": previous_status,
        "event": event,
        "flags": list(flags),
        "timestamp": iso(at),
    }


def message_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """A history row, or a just-committed transition, as a realtime message."""
    return message(
        call_id=event["ref"],
        seq=event["seq"],
        status=event["status"],
        previous_status=event["previous_status"],
        event=event["event"],
        flags=event["flags"],
        at=event["occurred_at"],
    )


def status_update(event: Mapping[str, Any]) -> dict[str, Any]:
    """A transition as a status callback carries it, and as `advance` and `hangup` answer it:
    the realtime message plus why the call ended (null before COMPLETED)."""
    return message_of(event) | {"end_reason": event["data"].get("end_reason")}


def event_body(event: Mapping[str, Any]) -> dict[str, Any]:
    """A stored event as `POST /events` and `GET /calls/{id}/events` show it: the realtime
    message plus what the sender said and when it was received."""
    return message_of(event) | {
        "event_id": event["event_id"],
        "raised_flags": list(event["raised_flags"]),
        "data": event["data"],
        "occurred_at": iso(event["occurred_at"]),
        "received_at": iso(event["received_at"]),
    }
