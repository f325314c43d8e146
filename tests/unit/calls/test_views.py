"""The API bodies of a call."""

from __future__ import annotations

from calls.views import call_body, created_body
from tests.unit.calls.rows import call_row

CALL_ID = "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01"


def test_call_body_has_the_original_fields() -> None:
    body = call_body(call_row(flags=["held"]), "http://localhost:3000")

    assert body == {
        "call_id": CALL_ID,
        "status": "RINGING",
        "from": "+1234567890",
        "to": "+0987654321",
        "metadata": {"campaign": "spring", "attempt": 1, "tags": ["vip"]},
        "type": "voice",
        "source": "simulated",
        "queue_id": None,
        "agent_id": None,
        "end_reason": None,
        "flags": ["held"],
        "recording_url": None,
        "created_at": "2026-11-23T12:00:00.123Z",
        "updated_at": "2026-11-23T12:00:01.640Z",
    }


def test_call_body_makes_a_stored_recording_path_absolute() -> None:
    row = call_row(recording_url=f"/recordings/{CALL_ID}.wav")

    body = call_body(row, "https://api.example.com")

    assert body["recording_url"] == f"https://api.example.com/recordings/{CALL_ID}.wav"


def test_call_body_leaves_an_absolute_recording_url_untouched() -> None:
    row = call_row(recording_url=f"https://cdn.example.com/recordings/{CALL_ID}.wav")

    body = call_body(row, "https://api.example.com")

    assert body["recording_url"] == f"https://cdn.example.com/recordings/{CALL_ID}.wav"


def test_call_body_flags_are_a_list() -> None:
    assert call_body(call_row(flags=("held",)), "http://localhost:3000")["flags"] == ["held"]


def test_created_body_has_the_original_fields_and_where_to_watch() -> None:
    body = created_body(call_row(status="QUEUED", seq=1), "http://localhost:3000", "t.1.s")

    assert body == {
        "call_id": CALL_ID,
        "status": "QUEUED",
        "from": "+1234567890",
        "to": "+0987654321",
        "metadata": {"campaign": "spring", "attempt": 1, "tags": ["vip"]},
        "created_at": "2026-11-23T12:00:00.123Z",
        "websocket_url": f"ws://localhost:3000/ws?call_id={CALL_ID}&token=t.1.s",
        "stream_url": f"http://localhost:3000/calls/{CALL_ID}/stream?token=t.1.s",
    }


def test_created_body_websocket_url_is_secure_behind_https() -> None:
    body = created_body(call_row(status="QUEUED"), "https://api.example.com", "t.1.s")

    assert body["websocket_url"] == f"wss://api.example.com/ws?call_id={CALL_ID}&token=t.1.s"
    assert body["stream_url"] == f"https://api.example.com/calls/{CALL_ID}/stream?token=t.1.s"
