"""The shapes a call takes outside: its live hash in Redis, its API body, its realtime message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from core.clock import from_ms, iso, to_ms


def live_fields(row: Mapping[str, Any]) -> dict[str, str]:
    """The live hash fields of a call row from PostgreSQL (seq is written by the live script)."""
    fields = {
        "call_id": row["call_id"],
        "key_id": row["key_id"],
        "kind": row["kind"],
        "status": row["status"],
        "from": row["from_number"] or "",
        "to": row["to_number"] or "",
        "metadata": orjson.dumps(row["metadata"]).decode(),
        "flags": orjson.dumps(list(row["flags"])).decode(),
        "created_at": str(to_ms(row["created_at"])),
        "updated_at": str(to_ms(row["updated_at"])),
        "status_changed_at": str(to_ms(row["status_changed_at"])),
    }
    if row["recording_url"]:
        fields["recording_url"] = row["recording_url"]
    return fields


def call_from_live(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A live hash read back into the same mapping a PostgreSQL row gives."""
    get = {k.decode(): v.decode() for k, v in fields.items()}.get
    return {
        "call_id": get("call_id"),
        "key_id": get("key_id"),
        "kind": get("kind"),
        "status": get("status"),
        "seq": int(get("seq", "0")),
        "from_number": get("from") or None,
        "to_number": get("to") or None,
        "metadata": orjson.loads(get("metadata", "{}")),
        "flags": orjson.loads(get("flags", "[]")),
        "recording_url": get("recording_url"),
        "created_at": from_ms(int(get("created_at", "0"))),
        "updated_at": from_ms(int(get("updated_at", "0"))),
        "status_changed_at": from_ms(int(get("status_changed_at", "0"))),
    }


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


def event_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """A call_events row as a realtime message."""
    return message(
        call_id=event["call_id"],
        seq=event["seq"],
        status=event["to_status"],
        previous_status=event["from_status"],
        event=event["event"],
        flags=event["flags"],
        at=event["occurred_at"],
    )
