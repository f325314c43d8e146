"""Posted lifecycle events: each event in snake_case and camelCase, and every refusal named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.request_models import posted_event
from calls.events import PostedEvent
from calls.transitions import Reported
from core.errors import BadRequest
from core.lifecycle import Event

CALL_ID = "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01"
AT = "2026-11-23T12:00:00Z"
AT_UTC = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
EVENT_NAMES = (
    "call_initiated, call_routed, call_answered, call_unanswered, call_hold, call_resumed, "
    "call_ended"
)
NOT_A_NUMBER = "must be a number of seconds"


def refusal(body: Any) -> str:
    with pytest.raises(BadRequest) as refused:
        posted_event(body)
    return refused.value.message


def later(event: str, **fields: Any) -> dict[str, Any]:
    """A body for an event on an existing call."""
    return {"event": event, "call_id": CALL_ID} | fields


INITIATED = {"event": "call_initiated", "type": "voice", "queue_id": "sales"}

# (snake_case body, camelCase body, what the service takes), one per event.
EVERY_EVENT = [
    (
        {
            "event": "call_initiated",
            "call_id": CALL_ID,
            "event_id": "e-1",
            "occurred_at": AT,
            "type": "video",
            "queue_id": "sales",
            "from": "+14155550123",
            "to": "+442071234567",
            "metadata": {"crm": {"id": 7}},
        },
        {
            "event": "call_initiated",
            "callId": CALL_ID,
            "eventId": "e-1",
            "occurredAt": AT,
            "type": "video",
            "queueId": "sales",
            "from": "+14155550123",
            "to": "+442071234567",
            "metadata": {"crm": {"id": 7}},
        },
        PostedEvent(
            event=Event.CALL_INITIATED,
            call_id=CALL_ID,
            event_id="e-1",
            occurred_at=AT_UTC,
            call_type="video",
            queue_id="sales",
            from_number="+14155550123",
            to_number="+442071234567",
            metadata={"crm": {"id": 7}},
        ),
    ),
    (
        later("call_routed", event_id="e-2", occurred_at=AT, agent_id="agent-7", routing_time=4.5),
        {
            "event": "call_routed",
            "callId": CALL_ID,
            "eventId": "e-2",
            "occurredAt": AT,
            "agentId": "agent-7",
            "routingTime": 4.5,
        },
        PostedEvent(
            event=Event.CALL_ROUTED,
            call_id=CALL_ID,
            event_id="e-2",
            occurred_at=AT_UTC,
            agent_id="agent-7",
            reported=Reported(routing_time=4.5),
        ),
    ),
    (
        later("call_answered", wait_time=31),
        {"event": "call_answered", "callId": CALL_ID, "waitTime": 31},
        PostedEvent(event=Event.CALL_ANSWERED, call_id=CALL_ID, reported=Reported(wait_time=31)),
    ),
    (
        later("call_unanswered", event_id="e-4"),
        {"event": "call_unanswered", "callId": CALL_ID, "eventId": "e-4"},
        PostedEvent(event=Event.CALL_UNANSWERED, call_id=CALL_ID, event_id="e-4"),
    ),
    (
        later("call_hold", hold_duration=61),
        {"event": "call_hold", "callId": CALL_ID, "holdDuration": 61},
        PostedEvent(event=Event.CALL_HOLD, call_id=CALL_ID, reported=Reported(hold_duration=61)),
    ),
    (
        later("call_resumed", hold_duration=12.25),
        {"event": "call_resumed", "callId": CALL_ID, "holdDuration": 12.25},
        PostedEvent(
            event=Event.CALL_RESUMED, call_id=CALL_ID, reported=Reported(hold_duration=12.25)
        ),
    ),
    (
        later("call_ended", end_reason="completed", duration=125),
        {"event": "call_ended", "callId": CALL_ID, "endReason": "completed", "duration": 125},
        PostedEvent(
            event=Event.CALL_ENDED,
            call_id=CALL_ID,
            end_reason="completed",
            reported=Reported(duration=125),
        ),
    ),
]
EVENT_IDS = [snake["event"] for snake, _, _ in EVERY_EVENT]


@pytest.mark.parametrize(("snake", "camel", "expected"), EVERY_EVENT, ids=EVENT_IDS)
def test_every_event_parses_in_snake_case(
    snake: dict[str, Any], camel: dict[str, Any], expected: PostedEvent
) -> None:
    assert posted_event(snake) == expected


@pytest.mark.parametrize(("snake", "camel", "expected"), EVERY_EVENT, ids=EVENT_IDS)
def test_every_event_parses_in_camel_case(
    snake: dict[str, Any], camel: dict[str, Any], expected: PostedEvent
) -> None:
    assert posted_event(camel) == expected


def test_spellings_may_be_mixed_in_one_body() -> None:
    parsed = posted_event(
        {"event": "call_ended", "callId": CALL_ID, "end_reason": "failed", "eventId": "e-9"}
    )

    assert (parsed.call_id, parsed.end_reason, parsed.event_id) == (CALL_ID, "failed", "e-9")


def test_event_name_is_the_enum() -> None:
    assert posted_event(later("call_hold")).event is Event.CALL_HOLD


def test_call_id_in_another_uuid_spelling_is_handed_on_canonical() -> None:
    assert posted_event(later("call_hold", call_id=CALL_ID.upper())).call_id == CALL_ID


@pytest.mark.parametrize(
    "call_id", ["", "has space", "a/b", "x" * 129, "caf\u00e9", "a\nb", "{not-a-uuid}"]
)
def test_call_id_that_is_neither_a_uuid_nor_a_plain_id_is_refused(call_id: str) -> None:
    assert refusal(later("call_hold", call_id=call_id)) == (
        "call_id must be a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
    )


@pytest.mark.parametrize("call_id", ["call-1", "1700000000.123", "SIP:abc_DEF-9", "x" * 128])
def test_a_senders_own_call_id_is_taken_as_it_is(call_id: str) -> None:
    assert posted_event(later("call_hold", call_id=call_id)).call_id == call_id


def test_a_uuid_call_id_is_taken_in_canonical_form() -> None:
    given = "{0B6F4C3E2F4A4D9E9A573C1F1D2E8B01}"
    assert posted_event(later("call_hold", call_id=given)).call_id == (
        "0b6f4c3e-2f4a-4d9e-9a57-3c1f1d2e8b01"
    )


# call_id: optional on call_initiated only.


def test_call_initiated_without_call_id_leaves_it_to_the_platform() -> None:
    assert posted_event(INITIATED).call_id is None


@pytest.mark.parametrize(
    "body",
    [
        {"event": "call_routed", "agent_id": "a-1"},
        {"event": "call_answered"},
        {"event": "call_unanswered"},
        {"event": "call_hold"},
        {"event": "call_resumed"},
        {"event": "call_ended", "end_reason": "completed"},
    ],
    ids=lambda body: body["event"],
)
def test_every_later_event_needs_a_call_id(body: dict[str, Any]) -> None:
    assert refusal(body) == "Missing required fields: call_id"


# call_initiated


def test_call_initiated_needs_type_and_queue_id() -> None:
    assert refusal({"event": "call_initiated"}) == "Missing required fields: type, queue_id"


@pytest.mark.parametrize("call_type", ["voice", "video"])
def test_call_initiated_takes_voice_or_video(call_type: str) -> None:
    assert posted_event(INITIATED | {"type": call_type}).call_type == call_type


def test_call_initiated_refuses_another_type() -> None:
    assert refusal(INITIATED | {"type": "fax"}) == "type must be one of voice, video"


def test_call_initiated_refuses_an_empty_queue_id() -> None:
    assert refusal(INITIATED | {"queue_id": ""}) == "queue_id must not be empty"


def test_call_initiated_without_numbers_or_metadata_is_accepted() -> None:
    parsed = posted_event(INITIATED)

    assert (parsed.from_number, parsed.to_number, parsed.metadata) == (None, None, {})
    assert (parsed.call_type, parsed.queue_id) == ("voice", "sales")


def test_call_initiated_numbers_must_be_e164() -> None:
    assert refusal(INITIATED | {"from": "4155550123", "to": "+1"}) == (
        "from must be an E.164 phone number such as +14155550123; "
        "to must be an E.164 phone number such as +14155550123"
    )


def test_call_initiated_metadata_must_be_an_object() -> None:
    assert refusal(INITIATED | {"metadata": ["vip"]}) == "metadata must be a JSON object"


def test_call_initiated_python_name_from_underscore_is_not_a_field() -> None:
    assert refusal(INITIATED | {"from_": "+14155550123"}) == "from_ is not a known field"


# call_routed and call_ended


def test_call_routed_needs_an_agent_id() -> None:
    assert refusal(later("call_routed")) == "Missing required fields: agent_id"


def test_call_routed_refuses_an_empty_agent_id() -> None:
    assert refusal(later("call_routed", agent_id="")) == "agent_id must not be empty"


def test_call_ended_needs_an_end_reason() -> None:
    assert refusal(later("call_ended")) == "Missing required fields: end_reason"


@pytest.mark.parametrize("reason", ["completed", "abandoned", "failed", "canceled"])
def test_call_ended_takes_every_documented_reason(reason: str) -> None:
    assert posted_event(later("call_ended", end_reason=reason)).end_reason == reason


@pytest.mark.parametrize("reason", ["hung_up", "cancelled", "COMPLETED", ""])
def test_call_ended_refuses_another_reason(reason: str) -> None:
    assert refusal(later("call_ended", end_reason=reason)) == (
        "end_reason must be one of completed, abandoned, failed, canceled"
    )


# Durations: non-negative numbers of seconds.

DURATION_FIELDS = [
    ("call_routed", "routing_time", {"agent_id": "a-1"}),
    ("call_answered", "wait_time", {}),
    ("call_hold", "hold_duration", {}),
    ("call_resumed", "hold_duration", {}),
    ("call_ended", "duration", {"end_reason": "completed"}),
]
DURATION_IDS = [f"{event}.{name}" for event, name, _ in DURATION_FIELDS]


@pytest.mark.parametrize(("event", "name", "needed"), DURATION_FIELDS, ids=DURATION_IDS)
@pytest.mark.parametrize("value", [0, 5, 2.5])
def test_duration_takes_a_non_negative_number(
    event: str, name: str, needed: dict[str, Any], value: float
) -> None:
    reported = posted_event(later(event, **needed, **{name: value})).reported

    assert getattr(reported, name) == value
    assert isinstance(getattr(reported, name), float)


@pytest.mark.parametrize(("event", "name", "needed"), DURATION_FIELDS, ids=DURATION_IDS)
def test_duration_left_out_or_null_is_not_reported(
    event: str, name: str, needed: dict[str, Any]
) -> None:
    assert posted_event(later(event, **needed)).reported == Reported()
    assert posted_event(later(event, **needed, **{name: None})).reported == Reported()


@pytest.mark.parametrize(("event", "name", "needed"), DURATION_FIELDS, ids=DURATION_IDS)
@pytest.mark.parametrize("value", ["5", True, [5], {"s": 5}])
def test_duration_that_is_not_a_number_is_refused(
    event: str, name: str, needed: dict[str, Any], value: Any
) -> None:
    assert refusal(later(event, **needed, **{name: value})) == f"{name} {NOT_A_NUMBER}"


@pytest.mark.parametrize(("event", "name", "needed"), DURATION_FIELDS, ids=DURATION_IDS)
@pytest.mark.parametrize("value", [-1, -0.001])
def test_negative_duration_is_refused(
    event: str, name: str, needed: dict[str, Any], value: float
) -> None:
    assert refusal(later(event, **needed, **{name: value})) == f"{name} is too small"


def test_camel_case_duration_is_refused_under_its_snake_name() -> None:
    assert refusal(later("call_answered", waitTime="5")) == f"wait_time {NOT_A_NUMBER}"


# occurred_at: ISO 8601, a time without a zone taken as UTC.


def test_occurred_at_with_a_zone_keeps_its_instant() -> None:
    parsed = posted_event(later("call_hold", occurred_at="2026-11-23T14:00:00+02:00"))

    assert parsed.occurred_at == AT_UTC
    assert parsed.occurred_at.utcoffset() == timedelta(hours=2)


def test_occurred_at_without_a_zone_is_taken_as_utc() -> None:
    parsed = posted_event(later("call_hold", occurred_at="2026-11-23T12:00:00.250"))

    assert parsed.occurred_at == AT_UTC + timedelta(milliseconds=250)
    assert parsed.occurred_at.utcoffset() == timedelta(0)


def test_occurred_at_left_out_is_none() -> None:
    assert posted_event(later("call_hold")).occurred_at is None


@pytest.mark.parametrize("value", ["yesterday", "23/11/2026 12:00", "2026-13-01T00:00:00Z", ""])
def test_occurred_at_that_is_not_iso_8601_is_refused(value: str) -> None:
    assert refusal(later("call_hold", occurredAt=value)) == (
        "occurred_at must be an ISO 8601 date and time"
    )


@pytest.mark.parametrize(
    "value", [1_795_000_000, "1795000000", 30], ids=["seconds", "numeric-string", "small-number"]
)
def test_bug_occurred_at_as_a_unix_number_is_refused(value: Any) -> None:
    # BUG (api/request_models.py, _PostedEvent.occurred_at is a lax `datetime`): pydantic also takes
    # Unix seconds (or milliseconds), as a number or a numeric string, so `30` is accepted as
    # 1970-01-01T00:00:30Z and every duration measured from it collapses to 0; the contract
    # says occurred_at is ISO 8601.
    assert refusal(later("call_hold", occurred_at=value)) == (
        "occurred_at must be an ISO 8601 date and time"
    )


# event_id


def test_event_id_must_be_a_non_empty_string() -> None:
    assert refusal(later("call_hold", event_id="")) == "event_id must not be empty"
    assert refusal(later("call_hold", event_id=42)) == "event_id must be a string"


# Unknown and doubled fields


def test_unknown_field_is_refused() -> None:
    assert refusal(later("call_hold", priority="high")) == "priority is not a known field"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (later("call_answered", agent_id="a-1"), "agent_id"),
        (later("call_routed", agent_id="a-1", end_reason="completed"), "end_reason"),
        (later("call_hold", duration=5), "duration"),
        (later("call_ended", end_reason="completed", wait_time=5), "wait_time"),
        (INITIATED | {"agent_id": "a-1"}, "agent_id"),
    ],
)
def test_another_events_field_is_refused(body: dict[str, Any], field: str) -> None:
    assert refusal(body) == f"{field} is not a known field"


def test_field_given_in_both_spellings_is_refused() -> None:
    body = {"event": "call_hold", "call_id": CALL_ID, "callId": CALL_ID}

    assert refusal(body) == "call_id is given twice (as call_id and in camelCase)"


def test_field_given_in_both_spellings_is_refused_whichever_comes_first() -> None:
    body = {"event": "call_routed", "callId": CALL_ID, "agentId": "a-1", "agent_id": "a-1"}

    assert refusal(body) == "agent_id is given twice (as agent_id and in camelCase)"


# event


def test_missing_event_is_named() -> None:
    assert refusal({"call_id": CALL_ID, "wait_time": "oops"}) == "Missing required fields: event"


def test_empty_body_is_missing_event() -> None:
    assert refusal({}) == "Missing required fields: event"


@pytest.mark.parametrize("name", ["call_transferred", "CALL_ENDED", "", None, 3])
def test_unknown_event_names_the_allowed_ones(name: Any) -> None:
    assert refusal(later("x") | {"event": name}) == f"event must be one of {EVENT_NAMES}"


# Several faults in one refusal


def test_every_bad_field_of_call_initiated_is_named() -> None:
    body = {
        "event": "call_initiated",
        "type": "fax",
        "queueId": "",
        "from": "555",
        "to": 5,
        "metadata": [],
        "extra": 1,
    }

    assert refusal(body) == (
        "type must be one of voice, video; "
        "queue_id must not be empty; "
        "from must be an E.164 phone number such as +14155550123; "
        "to must be a string; "
        "metadata must be a JSON object; "
        "extra is not a known field"
    )


def test_every_bad_field_of_call_ended_is_named() -> None:
    body = {
        "event": "call_ended",
        "callId": "no pe",
        "endReason": "hung_up",
        "duration": "3",
        "occurredAt": "soon",
    }

    assert refusal(body) == (
        "call_id must be a UUID or 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'; "
        "occurred_at must be an ISO 8601 date and time; "
        "end_reason must be one of completed, abandoned, failed, canceled; "
        f"duration {NOT_A_NUMBER}"
    )


def test_missing_and_bad_fields_are_named_together() -> None:
    body = {"event": "call_routed", "routingTime": -2, "eventId": 7}

    assert refusal(body) == (
        "Missing required fields: call_id, agent_id; "
        "event_id must be a string; "
        "routing_time is too small"
    )


# The body itself


@pytest.mark.parametrize("body", [[later("call_hold")], "call_hold", None, 42, True])
def test_body_that_is_not_an_object_is_refused(body: Any) -> None:
    assert refusal(body) == "Request body must be a JSON object"


def test_naive_and_zoned_times_of_one_instant_parse_equal() -> None:
    naive = posted_event(later("call_hold", occurred_at="2026-11-23T12:00:00")).occurred_at
    zoned = posted_event(later("call_hold", occurred_at="2026-11-23T07:00:00-05:00")).occurred_at

    assert naive == zoned
    assert zoned is not None
    assert zoned.tzinfo is not None
    assert zoned.astimezone(UTC) == AT_UTC
