"""Call rows shaped like db/calls.py CALL_COLUMNS gives them, for the views and the live state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

CREATED_AT = datetime(2026, 11, 23, 12, 0, 0, 123_000, tzinfo=UTC)


def call_row(**overrides: Any) -> dict[str, Any]:
    """A simulated call, RINGING at seq 2; keyword arguments replace columns."""
    row: dict[str, Any] = {
        "call_id": "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01",
        "ref": "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01",
        "key_id": "7d1c9a60-5b2e-4c0f-8f3a-2e6b9d4a1c77",
        "kind": "simulated",
        "status": "RINGING",
        "seq": 2,
        "from_number": "+1234567890",
        "to_number": "+0987654321",
        "metadata": {"campaign": "spring", "attempt": 1, "tags": ["vip"]},
        "flags": [],
        "recording_url": None,
        "call_type": "voice",
        "queue_id": None,
        "agent_id": None,
        "end_reason": None,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT + timedelta(milliseconds=1_517),
        "status_changed_at": CREATED_AT + timedelta(milliseconds=1_517),
        "started_at": CREATED_AT,
        "routed_at": CREATED_AT + timedelta(milliseconds=1_517),
        "answered_at": None,
        "held_at": None,
        "ended_at": None,
        "last_event_at": CREATED_AT + timedelta(milliseconds=1_517),
    }
    row |= overrides
    if "call_id" in overrides and "ref" not in overrides:
        row["ref"] = row["call_id"]  # a call whose id the platform made
    return row
