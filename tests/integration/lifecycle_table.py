"""The realtime message's fields and DESIGN.md's lifecycle table, restated for the stream tests
(independently of core/lifecycle.py, so they check it rather than repeat it)."""

from __future__ import annotations

MESSAGE_FIELDS = {"call_id", "seq", "status", "previous_status", "event", "flags", "timestamp"}
# (previous_status, status) -> event, as DESIGN.md's lifecycle table has it.
MOVES = {
    (None, "QUEUED"): "call_initiated",
    ("QUEUED", "RINGING"): "call_routed",
    ("RINGING", "ANSWERED"): "call_answered",
    ("RINGING", "UNANSWERED"): "call_unanswered",
    ("ANSWERED", "ON_HOLD"): "call_hold",
    ("ON_HOLD", "ANSWERED"): "call_resumed",
} | {
    (status, "COMPLETED"): "call_ended"
    for status in ("QUEUED", "RINGING", "ANSWERED", "ON_HOLD", "UNANSWERED")
}
