"""The Twilio face's words: SIDs, statuses, dates, and callbacks the SDK's RequestValidator takes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from calls.callback_requests import Unsignable, callback_request
from calls.twilio import (
    STATUS_FILTERS,
    call_resource,
    callback_status,
    rfc2822,
    twilio_status,
)
from core.lifecycle import EndReason, Status
from core.sids import account_sid, call_id_of, call_sid

KEY_ID = str(uuid.uuid4())
CALL_ID = str(uuid.uuid4())
TOKEN = "mc_the-key-itself"
T0 = datetime(2026, 11, 23, 12, 0, 0, 250_000, tzinfo=UTC)


def test_sids_are_ac_and_ca_with_the_ids_in_32_hex_digits_and_read_back() -> None:
    assert account_sid(KEY_ID) == "AC" + uuid.UUID(KEY_ID).hex
    assert len(call_sid(CALL_ID)) == 34
    assert call_id_of(call_sid(CALL_ID)) == CALL_ID
    for not_a_sid in ("CA" + "0" * 31, "AC" + uuid.UUID(CALL_ID).hex, "CA" + "G" * 32, ""):
        assert call_id_of(not_a_sid) is None


@pytest.mark.parametrize(
    ("status", "end_reason", "twilio"),
    [
        (Status.QUEUED, None, "queued"),
        (Status.RINGING, None, "ringing"),
        (Status.UNANSWERED, None, "ringing"),
        (Status.ANSWERED, None, "in-progress"),
        (Status.ON_HOLD, None, "in-progress"),
        (Status.COMPLETED, EndReason.COMPLETED, "completed"),
        (Status.COMPLETED, EndReason.BUSY, "busy"),
        (Status.COMPLETED, EndReason.NO_ANSWER, "no-answer"),
        (Status.COMPLETED, EndReason.FAILED, "failed"),
        (Status.COMPLETED, EndReason.CANCELED, "canceled"),
    ],
)
def test_each_of_our_states_has_its_twilio_status_and_the_filter_finds_it(
    status: Status, end_reason: str | None, twilio: str
) -> None:
    assert twilio_status(status, end_reason) == twilio
    statuses, wanted_reason = STATUS_FILTERS[twilio]
    assert status in statuses
    assert wanted_reason == end_reason


def test_the_first_callback_says_initiated() -> None:
    assert callback_status(Status.QUEUED, None) == "initiated"
    assert callback_status(Status.ANSWERED, None) == "in-progress"


def row(**overrides: object) -> dict:
    return {
        "call_id": CALL_ID,
        "key_id": KEY_ID,
        "to_number": "+15555550100",
        "from_number": "+15005550006",
        "status": Status.COMPLETED,
        "end_reason": EndReason.COMPLETED,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=9),
        "started_at": T0,
        "answered_at": T0 + timedelta(seconds=2),
        "ended_at": T0 + timedelta(seconds=9, milliseconds=400),
    } | overrides


def test_a_call_resource_has_twilios_dates_duration_and_uris() -> None:
    body = call_resource(row())
    assert body["date_created"] == "Mon, 23 Nov 2026 12:00:00 +0000" == rfc2822(T0)
    assert body["duration"] == "7"
    assert body["status"] == "completed"
    assert (
        body["uri"] == f"/2010-04-01/Accounts/{account_sid(KEY_ID)}/Calls/{call_sid(CALL_ID)}.json"
    )
    assert body["subresource_uris"]["recordings"].endswith(f"{call_sid(CALL_ID)}/Recordings.json")
    going = call_resource(row(status=Status.RINGING, end_reason=None, ended_at=None))
    assert (going["duration"], going["end_time"]) == (None, None)
    busy = call_resource(row(end_reason=EndReason.BUSY, answered_at=None))
    assert (busy["status"], busy["duration"]) == ("busy", "0")


def claim(method: str, url: str = "http://127.0.0.1:8000/status?tenant=7", **overrides) -> dict:
    return (
        row()
        | {
            "delivery_id": str(uuid.uuid4()),
            "attempt": 1,
            "status_callback": url,
            "twilio": {"status_callback_method": method},
            "auth_token": TOKEN,
            "signing_secret": "whsec_unused",
            "seq": 4,
            "previous_status": "ANSWERED",
            "event": "call_ended",
            "flags": [],
            "ref": CALL_ID,
            "occurred_at": T0 + timedelta(seconds=9),
            "data": {"end_reason": "completed"},
            "sequence": 2,
        }
        | overrides
    )


def test_a_post_callback_is_a_form_that_the_sdks_validator_accepts() -> None:
    request = callback_request(claim("POST"), 1_795_000_000)
    assert request.method == "POST"
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    params = dict(parse_qsl(request.body.decode()))
    assert params["CallSid"] == call_sid(CALL_ID)
    assert params["AccountSid"] == account_sid(KEY_ID)
    assert (params["CallStatus"], params["CallDuration"], params["SequenceNumber"]) == (
        "completed",
        "7",
        "2",
    )
    assert params["Timestamp"] == "Mon, 23 Nov 2026 12:00:09 +0000"
    assert {"Direction", "ApiVersion", "CallbackSource", "From", "To"} <= set(params)
    validator = RequestValidator(TOKEN)
    signature = request.headers["X-Twilio-Signature"]
    url = str(request.url)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, params | {"CallStatus": "busy"}, signature)
    assert not RequestValidator("another-key").validate(url, params, signature)


def test_a_get_callback_carries_its_form_in_the_query_signed_with_it() -> None:
    request = callback_request(claim("GET"), 1_795_000_000)
    assert (request.method, request.body) == ("GET", None)
    url = str(request.url)
    assert url.startswith("http://127.0.0.1:8000/status?tenant=7&CallSid=")
    assert RequestValidator(TOKEN).validate(url, {}, request.headers["X-Twilio-Signature"])


def test_a_call_without_twilio_keeps_our_json_and_signature() -> None:
    request = callback_request(claim("POST", twilio=None), 1_795_000_000)
    assert request.headers["Content-Type"] == "application/json"
    assert "X-MockComms-Signature" in request.headers
    assert "X-Twilio-Signature" not in request.headers


def test_a_twilio_callback_without_a_kept_token_cannot_be_signed() -> None:
    with pytest.raises(Unsignable):
        callback_request(claim("POST", auth_token=None), 1_795_000_000)
