"""Response bodies, as pydantic models: the OpenAPI document is generated from them (and from
the request models in api/request_models.py), and tests check real answers against them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.lifecycle import EndReason, Event, Status
from core.rules import Flag


class Error(BaseModel):
    """Every error: the reason phrase and what went wrong."""

    error: str = Field(examples=["Bad Request"])
    message: str = Field(examples=["Missing required fields: from, to"])


class Health(BaseModel):
    status: Literal["healthy"]
    timestamp: str
    uptime: float = Field(description="Seconds since this API process started.")


class Ready(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(examples=[{"postgres": "ok", "redis": "ok"}])


class Index(BaseModel):
    name: str
    description: str
    links: dict[str, str]


class Plan(BaseModel):
    """A scenario with every choice made (times in real ms)."""

    outcome: Literal["completed", "no_answer", "busy", "failed"]
    queue_ms: int = Field(description="QUEUED until RINGING.")
    ring_ms: int = Field(description="RINGING until answered or not.")
    talk_ms: int | None = Field(description="ANSWERED until COMPLETED, the hold included.")
    hold_ms: int = Field(description="The ON_HOLD within the talk; 0: none.")
    hold_after_ms: int = Field(description="The talk before the hold.")
    unanswered_ms: int | None = Field(description="UNANSWERED until COMPLETED.")
    fail_upload_attempts: int
    seed: int | None


# Shown only for a call created with them.
_SCENARIO = Field(default=None, description="Only for a call created with a scenario.")
_CALLBACK = Field(default=None, description="Only for a call created with a status callback.")
_TWILIO = Field(default=None, description="Only for a call created through the Twilio face.")


class TwilioRequest(BaseModel):
    """What a call created through the Twilio face asked for beyond our fields: kept, never run
    (no TwiML is fetched or executed)."""

    url: str | None
    method: Literal["GET", "POST"] | None
    twiml: str | None
    application_sid: str | None
    timeout: int | None
    status_callback_method: Literal["GET", "POST"] | None


class CreatedCall(BaseModel):
    call_id: str
    status: Status
    from_: str = Field(alias="from")
    to: str
    metadata: dict[str, Any]
    created_at: str
    websocket_url: str
    stream_url: str
    scenario: Plan | None = _SCENARIO
    status_callback: str | None = _CALLBACK
    status_callback_events: list[Status] | None = _CALLBACK
    twilio: TwilioRequest | None = _TWILIO


class Call(BaseModel):
    call_id: str
    status: Status
    from_: str | None = Field(alias="from")
    to: str | None
    metadata: dict[str, Any]
    type: Literal["voice", "video"]
    source: Literal["simulated", "ingested"]
    queue_id: str | None
    agent_id: str | None
    end_reason: EndReason | None
    flags: list[Flag]
    recording_url: str | None = Field(description="Served by the API to the call's owner.")
    created_at: str
    updated_at: str
    scenario: Plan | None = _SCENARIO
    status_callback: str | None = _CALLBACK
    status_callback_events: list[Status] | None = _CALLBACK
    twilio: TwilioRequest | None = _TWILIO


class CallPage(BaseModel):
    data: list[Call]
    total: int
    page: int
    limit: int = Field(description="The page size used (requests over 100 are served at 100).")
    totalPages: int


class Message(BaseModel):
    """One realtime message: SSE `data:`, a WebSocket frame, the key stream's `call` event."""

    call_id: str
    seq: int = Field(description="Position in the call's history; the SSE event id.")
    status: Status
    previous_status: Status | None
    event: Event
    flags: list[Flag] = Field(description="The call's flags after this event.")
    timestamp: str


class StatusUpdate(Message):
    """A transition as a status callback carries it (the body POSTed to `status_callback`), and
    as `advance` and `hangup` answer it."""

    end_reason: EndReason | None = Field(description="Why the call ended; null before COMPLETED.")


class CallbackAttempt(BaseModel):
    attempt: int = Field(description="1, 2, ... as X-MockComms-Attempt said.")
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    error: str | None = Field(description="Why no answer came: a timeout, a connection error.")
    latency_ms: float = Field(description="From sending to the answer (or the error).")
    attempted_at: str


class CallbackDelivery(BaseModel):
    """One transition's status callback: its delivery and every attempt at it."""

    delivery_id: str = Field(description="X-MockComms-Delivery: the same for every attempt.")
    seq: int
    status: Status = Field(description="The status of the transition delivered.")
    state: Literal["pending", "delivering", "delivered", "stopped", "failed"] = Field(
        description="delivered: a 2xx; stopped: a 410 (here or earlier); failed: every attempt"
        " failed (a dead letter in rq-dashboard, queue retries)."
    )
    committed_at: str = Field(description="When the transition was committed.")
    next_attempt_at: str | None = Field(description="When it is tried next (pending only).")
    delivered_at: str | None
    last_error: str | None
    attempts: list[CallbackAttempt]


class CallbackLog(BaseModel):
    call_id: str
    status_callback: str | None
    status_callback_events: list[Status] | None = Field(description="null: every status.")
    stopped_at: str | None = Field(description="When a 410 stopped the call's callbacks.")
    data: list[CallbackDelivery]
    limit: int = Field(description="The page size used (requests over 100 are served at 100).")
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null on the last page."
    )


class StoredEvent(Message):
    event_id: str | None
    raised_flags: list[Flag] = Field(description="The flags this event raised.")
    data: dict[str, Any] = Field(description="What the sender reported with the event.")
    occurred_at: str
    received_at: str


class History(BaseModel):
    call_id: str
    data: list[StoredEvent]
    limit: int = Field(description="The page size used (requests over 1000 are served at 1000).")
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null on the last page."
    )


class DeletedCalls(BaseModel):
    """`DELETE /calls`: what the key's clean slate took."""

    deleted: int = Field(description="Ended calls deleted, with their history and recordings.")
    ended: int = Field(description="Active calls ended first (?force=true), as canceled.")
    remaining: int = Field(
        description=(
            "The key's calls still stored: more than a request deletes (10,000) is left for"
            " the next one."
        )
    )


class Metrics(BaseModel):
    total_calls: int
    active_calls: int
    completed_calls: int
    current_cps: int
    uploads_in_progress: int
    uploads_completed: int


class CallCounts(BaseModel):
    """`GET /stats/calls`: the key's calls now, as the dashboard's counters show them."""

    total: int = Field(description="Calls stored (ended ones are kept RETENTION_DAYS).")
    by_status: dict[Status, int] = Field(description="Every status, with 0 where none is.")
    breaches: int = Field(
        description="Calls flagged wait_sla_exceeded or hold_limit_exceeded, counted up to 10,000."
    )
    breaches_capped: bool = Field(description="True when there are more than `breaches`.")


class WindowFigures(BaseModel):
    """A queue's figures over a window (or one bucket of it): the calls that started in it."""

    offered: int = Field(description="Calls that entered the queue.")
    answered: int
    abandoned: int = Field(
        description="Ended before an answer: end_reason abandoned, or any such end of an"
        " ingested call."
    )
    short_abandoned: int = Field(description="Abandoned within SHORT_ABANDON_S.")
    service_level_pct: float | None = Field(
        description="Answered within service_level_s / (offered - short_abandoned), in %."
    )
    abandon_rate_pct: float | None = Field(description="abandoned / offered, in %.")
    asa_s: float | None = Field(description="Mean wait, initiated to answered, of answered calls.")
    aht_s: float | None = Field(
        description="Mean handle time, answered to ended (hold included), of answered calls"
        " that ended."
    )
    flags: dict[Flag, int] = Field(description="Calls that got each business-rule flag.")


class QueueFigures(WindowFigures):
    queue_id: str
    waiting_now: int = Field(description="Calls not answered and not ended now, whatever window.")
    longest_wait_s: float | None = Field(description="How long the oldest of them has waited.")
    on_hold_now: int


class _StatsAnswer(BaseModel):
    window: Literal["15m", "1h", "24h"] | None = Field(description="null for since/until.")
    since: str
    until: str


class QueueStats(_StatsAnswer):
    service_level_s: float
    service_level_target_pct: float
    data: list[QueueFigures]
    next_after: str | None = Field(description="Pass as after for the next page; null on the last.")


class SeriesPoint(WindowFigures):
    start: str = Field(description="The bucket's start; it holds the calls that started in it.")


class QueueSeries(_StatsAnswer):
    queue_id: str
    bucket: Literal["1m", "5m", "1h"]
    service_level_s: float
    service_level_target_pct: float
    data: list[SeriesPoint]


class AgentFigures(BaseModel):
    agent_id: str
    handled: int = Field(description="Answered calls of the agent's that ended.")
    aht_s: float | None
    holds: int
    hold_s: float = Field(description="Time on hold, holds that ended.")


class AgentStats(_StatsAnswer):
    data: list[AgentFigures]
    next_after: str | None


class StatsMessage(QueueFigures):
    """The key stream's `stats` event: a queue's figures over the last hour, sent at most once
    a second while they change."""

    window: Literal["1h"]
    since: str
    until: str
    service_level_s: float
    service_level_target_pct: float


# -- the Twilio face (/2010-04-01/...): Twilio's shapes ---------------------------------------

TwilioStatus = Literal[
    "queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"
]
_RFC2822 = Field(examples=["Wed, 18 Aug 2010 20:01:40 +0000"])


class TwilioError(BaseModel):
    """Every error of the Twilio face, as Twilio answers one."""

    code: int = Field(examples=[21211], description="Twilio's error code.")
    message: str = Field(examples=["The 'To' number 12345 is not a valid phone number."])
    more_info: str = Field(examples=["https://www.twilio.com/docs/errors/21211"])
    status: int = Field(examples=[400], description="The HTTP status, again.")


class TwilioCall(BaseModel):
    """A call as Twilio's Call resource."""

    sid: str = Field(pattern=r"^CA[0-9a-f]{32}$")
    account_sid: str = Field(pattern=r"^AC[0-9a-f]{32}$")
    parent_call_sid: None
    to: str | None
    to_formatted: str | None
    from_: str | None = Field(alias="from")
    from_formatted: str | None
    phone_number_sid: None
    status: TwilioStatus
    start_time: str | None = _RFC2822
    end_time: str | None = _RFC2822
    duration: str | None = Field(description="Whole seconds talked, once ended; null before.")
    price: None
    price_unit: str
    direction: Literal["outbound-api"]
    answered_by: None
    api_version: Literal["2010-04-01"]
    forwarded_from: None
    group_sid: None
    caller_name: None
    queue_time: str
    trunk_sid: None
    date_created: str = _RFC2822
    date_updated: str = _RFC2822
    uri: str
    subresource_uris: dict[str, str]


class _TwilioPage(BaseModel):
    page: int
    page_size: int
    start: int
    end: int
    uri: str
    first_page_uri: str
    next_page_uri: str | None
    previous_page_uri: str | None


class TwilioCallPage(_TwilioPage):
    calls: list[TwilioCall]


class TwilioAccount(BaseModel):
    """A key as Twilio's Account resource (never with its Auth Token)."""

    sid: str = Field(pattern=r"^AC[0-9a-f]{32}$")
    owner_account_sid: str
    friendly_name: str
    status: Literal["active"]
    type: Literal["Full"]
    auth_token: None
    date_created: str | None = _RFC2822
    date_updated: str | None = _RFC2822
    uri: str
    subresource_uris: dict[str, str]


class TwilioAccountPage(_TwilioPage):
    accounts: list[TwilioAccount]
