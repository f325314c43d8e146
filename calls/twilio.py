"""Our calls in Twilio's words (the Twilio face, api/handlers/twilio.py): its statuses, Call and
Account resources, pages and dates, the `To` and `From` numbers that script or refuse a call, and
the form a status callback carries. One lifecycle underneath: nothing here moves a call.

Statuses, ours (and the `end_reason` of an ended call) to Twilio's:

| ours | Twilio's |
|---|---|
| QUEUED | queued |
| RINGING, UNANSWERED | ringing (an unanswered call rings until it ends) |
| ANSWERED, ON_HOLD | in-progress |
| COMPLETED, end_reason completed | completed |
| COMPLETED, end_reason busy, no_answer, failed, canceled | busy, no-answer, failed, canceled |
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from calls.scenarios import Outcome
from core.lifecycle import EndReason, Status
from core.sids import account_sid, call_sid

API_VERSION = "2010-04-01"
PREFIX = f"/{API_VERSION}"
DIRECTION = "outbound-api"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

# Twilio's StatusCallbackEvent names, and the status each is the entry to.
EVENTS: dict[str, Status] = {
    "initiated": Status.QUEUED,
    "ringing": Status.RINGING,
    "answered": Status.ANSWERED,
    "completed": Status.COMPLETED,
}
# What Twilio calls back when a StatusCallback comes without StatusCallbackEvent.
DEFAULT_EVENTS = ("completed",)
STATUS_CALLBACK_METHODS = ("POST", "GET")

_ENDED: dict[str, str] = {
    EndReason.COMPLETED: "completed",
    EndReason.BUSY: "busy",
    EndReason.NO_ANSWER: "no-answer",
    EndReason.FAILED: "failed",
    EndReason.CANCELED: "canceled",
    # Ingested calls only, which the Twilio face does not show; mapped all the same.
    EndReason.ABANDONED: "canceled",
    EndReason.TIMEOUT: "failed",
}
_GOING: dict[str, str] = {
    Status.QUEUED: "queued",
    Status.RINGING: "ringing",
    Status.UNANSWERED: "ringing",
    Status.ANSWERED: "in-progress",
    Status.ON_HOLD: "in-progress",
}
# Twilio's `Status` filter of a list: (our statuses, end_reason of a COMPLETED call).
STATUS_FILTERS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "queued": ((Status.QUEUED,), None),
    "ringing": ((Status.RINGING, Status.UNANSWERED), None),
    "in-progress": ((Status.ANSWERED, Status.ON_HOLD), None),
    "completed": ((Status.COMPLETED,), EndReason.COMPLETED),
    "busy": ((Status.COMPLETED,), EndReason.BUSY),
    "no-answer": ((Status.COMPLETED,), EndReason.NO_ANSWER),
    "failed": ((Status.COMPLETED,), EndReason.FAILED),
    "canceled": ((Status.COMPLETED,), EndReason.CANCELED),
}


def twilio_status(status: str, end_reason: str | None) -> str:
    """A call's status in Twilio's words."""
    if status == Status.COMPLETED:
        return _ENDED.get(end_reason or EndReason.COMPLETED, "completed")
    return _GOING[status]


def callback_status(status: str, end_reason: str | None) -> str:
    """The CallStatus of the callback of a transition to `status`: as the Call resource says,
    but `initiated` for the call's first (Twilio's initiated event)."""
    return "initiated" if status == Status.QUEUED else twilio_status(status, end_reason)


# -- numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    """How Twilio refuses a call to or from a magic number of its test credentials."""

    code: int
    message: str


# The magic numbers of Twilio's test credentials, answered as Twilio documents them.
MAGIC_FROM: dict[str, Refused] = {
    "+15005550001": Refused(21212, "The 'From' number +15005550001 is not a valid phone number"),
}
MAGIC_TO: dict[str, Refused] = {
    "+15005550001": Refused(21217, "Phone number +15005550001 does not appear to be valid"),
    "+15005550002": Refused(21214, "'To' phone number +15005550002 cannot be reached"),
    "+15005550003": Refused(
        21215, "Account not authorized to call +15005550003: geo permissions do not allow it"
    ),
    "+15005550004": Refused(21216, "Call blocked: +15005550004 is blocked for this account"),
}
# Our own: a call to one of these ends as it says (the `scenario` outcome of POST /calls), in
# the fictional 555-01XX range so no real phone is ever named.
SCRIPTED_TO: dict[str, Outcome] = {
    "+15555550100": Outcome.COMPLETED,
    "+15555550101": Outcome.BUSY,
    "+15555550102": Outcome.NO_ANSWER,
    "+15555550103": Outcome.FAILED,
}


# -- resources -------------------------------------------------------------------------------


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date format: `Wed, 18 Aug 2010 20:01:40 +0000`."""
    if moment is None:
        return None
    return email.utils.format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def duration_s(call: Mapping[str, Any]) -> str | None:
    """A call's duration as Twilio gives it: whole seconds talked, as text, once it has ended
    ("0" for one never answered); None while it goes on."""
    if call["status"] != Status.COMPLETED:
        return None
    answered, ended = call["answered_at"], call["ended_at"]
    if answered is None or ended is None:
        return "0"
    return str(max(0, round((ended - answered).total_seconds())))


def account_uri(key_id: str) -> str:
    return f"{PREFIX}/Accounts/{account_sid(key_id)}"


def calls_uri(key_id: str) -> str:
    return f"{account_uri(key_id)}/Calls.json"


_SUBRESOURCES = (
    "notifications",
    "recordings",
    "payments",
    "events",
    "siprec",
    "streams",
    "transcriptions",
    "user_defined_message_subscriptions",
    "user_defined_messages",
)
_WORDS = {name: "".join(part.title() for part in name.split("_")) for name in _SUBRESOURCES}


def call_resource(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call (a row of db/calls.py CALL_COLUMNS, or its live view) as Twilio's Call resource."""
    sid = call_sid(call["call_id"])
    base = f"{account_uri(call['key_id'])}/Calls/{sid}"
    return {
        "sid": sid,
        "account_sid": account_sid(call["key_id"]),
        "parent_call_sid": None,
        "to": call["to_number"],
        "to_formatted": call["to_number"],
        "from": call["from_number"],
        "from_formatted": call["from_number"],
        "phone_number_sid": None,
        "status": twilio_status(call["status"], call["end_reason"]),
        "start_time": rfc2822(call["started_at"]),
        "end_time": rfc2822(call["ended_at"]),
        "duration": duration_s(call),
        "price": None,
        "price_unit": "USD",
        "direction": DIRECTION,
        "answered_by": None,
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "trunk_sid": None,
        "date_created": rfc2822(call["created_at"]),
        "date_updated": rfc2822(call["updated_at"]),
        "uri": f"{base}.json",
        "subresource_uris": {name: f"{base}/{_WORDS[name]}.json" for name in _SUBRESOURCES},
    }


def page(
    name: str,
    items: Sequence[dict[str, Any]],
    *,
    path: str,
    query: Mapping[str, str],
    page_number: int,
    page_size: int,
    has_next: bool,
) -> dict[str, Any]:
    """Twilio's page of `items` under `name` (`calls`, `accounts`): where it starts and ends in
    the whole list, and the URIs of this page, the first, the next and the previous (None where
    there is none), each with the same filters `query`."""

    def uri(number: int) -> str:
        return f"{path}?{urlencode({**query, 'PageSize': page_size, 'Page': number})}"

    start = page_number * page_size
    return {
        name: list(items),
        "page": page_number,
        "page_size": page_size,
        "start": start,
        "end": start + max(len(items) - 1, 0),
        "uri": uri(page_number),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page_number + 1) if has_next else None,
        "previous_page_uri": uri(page_number - 1) if page_number > 0 else None,
    }


def account_resource(key_id: str, friendly_name: str, created_at: datetime | None) -> dict:
    """A key as Twilio's Account resource. Its Auth Token (the key) is never in it."""
    sid = account_sid(key_id)
    return {
        "sid": sid,
        "owner_account_sid": sid,
        "friendly_name": friendly_name,
        "status": "active",
        "type": "Full",
        "auth_token": None,
        "date_created": rfc2822(created_at),
        "date_updated": rfc2822(created_at),
        "uri": f"{account_uri(key_id)}.json",
        "subresource_uris": {"calls": calls_uri(key_id)},
    }


# -- status callbacks ------------------------------------------------------------------------


def callback_params(claim: Mapping[str, Any]) -> dict[str, str]:
    """The form of a status callback of a call of the Twilio face, as Twilio sends it: the
    claimed delivery's transition (db/callbacks.py), its call and its place among the call's
    callbacks (`sequence`, from 0)."""
    end_reason = claim["data"].get("end_reason")
    params = {
        "CallSid": call_sid(claim["call_id"]),
        "AccountSid": account_sid(claim["key_id"]),
        "From": claim["from_number"] or "",
        "To": claim["to_number"] or "",
        "CallStatus": callback_status(claim["status"], end_reason),
        "Direction": DIRECTION,
        "ApiVersion": API_VERSION,
        "Timestamp": rfc2822(claim["occurred_at"]) or "",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": str(claim["sequence"]),
    }
    if claim["status"] == Status.COMPLETED:
        params["CallDuration"] = (
            duration_s(
                {"status": Status.COMPLETED} | {k: claim[k] for k in ("answered_at", "ended_at")}
            )
            or "0"
        )
    return params
