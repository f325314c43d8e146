"""The shapes a call takes outside: its live hash in Redis, its API body, its realtime message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from core.clock import from_ms, iso, to_ms

# How each column of a call row (db/calls.py CALL_COLUMNS) is kept in its live hash; seq is
# written by the live script itself. None is kept as an empty string.
_TEXT, _JSON, _TIME = "text", "json", "time"
_LIVE_COLUMNS = {
    "call_id": _TEXT,
    "key_id": _TEXT,
    "kind": _TEXT,
    "status": _TEXT,
    "from_number": _TEXT,
    "to_number": _TEXT,
    "metadata": _JSON,
    "flags": _JSON,
    "recording_url": _TEXT,
    "call_type": _TEXT,
    "queue_id": _TEXT,
    "agent_id": _TEXT,
    "end_reason": _TEXT,
    "created_at": _TIME,
    "updated_at": _TIME,
    "status_changed_at": _TIME,
    "started_at": _TIME,
    "routed_at": _TIME,
    "answered_at": _TIME,
    "held_at": _TIME,
    "ended_at": _TIME,
}


def live_fields(row: Mapping[str, Any]) -> dict[str, str]:
    """The live hash fields of a call row from PostgreSQL."""
    fields = {}
    for column, kind in _LIVE_COLUMNS.items():
        value = row[column]
        if value is None:
            fields[column] = ""
        elif kind == _JSON:
            fields[column] = orjson.dumps(list(value) if column == "flags" else value).decode()
        elif kind == _TIME:
            fields[column] = str(to_ms(value))
        else:
            fields[column] = value
    return fields


def call_from_live(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A live hash read back into the same mapping a PostgreSQL row gives."""
    raw = {k.decode(): v.decode() for k, v in fields.items()}
    call: dict[str, Any] = {"seq": int(raw.get("seq", "0"))}
    for column, kind in _LIVE_COLUMNS.items():
        value = raw.get(column, "")
        if value == "":
            call[column] = None
        elif kind == _JSON:
            call[column] = orjson.loads(value)
        elif kind == _TIME:
            call[column] = from_ms(int(value))
        else:
            call[column] = value
    return call


def absolute_url(url: str | None, base_url: str) -> str | None:
    """Recording URLs served by the API are stored as paths; give them the caller's base URL."""
    if url and url.startswith("/"):
        return base_url + url
    return url


def _identity(call: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every body of a call starts with."""
    return {
        "call_id": call["call_id"],
        "status": call["status"],
        "from": call["from_number"],
        "to": call["to_number"],
        "metadata": call["metadata"],
    }


def call_body(call: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """`GET /calls/{id}`."""
    return _identity(call) | {
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


def created_body(call: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """`POST /calls` 201: the original service's fields plus where to watch the call."""
    ws_base = "ws" + base_url.removeprefix("http")
    return _identity(call) | {
        "created_at": iso(call["created_at"]),
        "websocket_url": f"{ws_base}/ws?call_id={call['call_id']}",
        "stream_url": f"{base_url}/calls/{call['call_id']}/stream",
    }


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
        call_id=event["call_id"],
        seq=event["seq"],
        status=event["status"],
        previous_status=event["previous_status"],
        event=event["event"],
        flags=event["flags"],
        at=event["occurred_at"],
    )


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
