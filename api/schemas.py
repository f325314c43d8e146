"""Request bodies, validated by pydantic; every refusal names the field and what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    Strict,
    StrictStr,
    ValidationError,
    field_validator,
)

from calls.events import PostedEvent
from calls.transitions import Reported
from core.call_ids import REF_RULE, parse_call_id
from core.errors import BadRequest, DomainError
from core.lifecycle import Event, Status
from core.rules import Flag

CallType = Literal["voice", "video"]


def _call_id(value: str) -> str:
    try:
        return parse_call_id(value)
    except DomainError:
        raise ValueError(f"must be {REF_RULE}") from None


# A call id: a UUID in any spelling (handed on in canonical form), or a sender's own id.
CallId = Annotated[StrictStr, AfterValidator(_call_id)]
_EVENT_NAMES = [event.value for event in Event]


def _iso_date_time(value: Any) -> Any:
    # pydantic would also take Unix seconds and a bare date; senders must say when, in full.
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", value):
        raise ValueError("must be an ISO 8601 date and time")
    return value


def _storable_time(value: datetime) -> datetime:
    # Years PostgreSQL and Python both hold, whatever the zone offset does to the instant.
    if not 1900 <= value.year <= 9000:
        raise ValueError("must be between the years 1900 and 9000")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_date_time), AfterValidator(_storable_time)]

# E.164's shape: a plus and up to 15 digits. The leading-zero rule is not enforced, because the
# original service's own examples (+0987654321) must keep working.
PhoneNumber = Annotated[StrictStr, Field(pattern=r"^\+[0-9]{2,15}$")]
# A queue or agent id.
Label = Annotated[StrictStr, Field(min_length=1, max_length=100)]


class CreateCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: PhoneNumber = Field(alias="from")
    to: PhoneNumber
    metadata: dict[str, Any] = Field(default_factory=dict)
    # The queue the call waits in, for its queue's statistics (none: in no queue's).
    queue_id: Label | None = None


MAX_PAGE_SIZE = 100


class ListCalls(BaseModel):
    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=1, ge=1, le=1_000_000)
    # Larger asks are served at the cap, and the answer's `limit` says so.
    limit: int = Field(default=20, ge=1)
    status: Status | None = None
    flag: Flag | None = None
    queue_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    type: CallType | None = None

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_PAGE_SIZE)


MAX_HISTORY_PAGE = 1_000


class HistoryPage(BaseModel):
    """`GET /calls/{id}/events`: a page of a call's history."""

    model_config = ConfigDict(extra="forbid")

    # Larger asks are served at the cap, and the answer's `limit` says so.
    limit: int = Field(default=100, ge=1)
    after_seq: int = Field(default=0, ge=0, le=2**31 - 1, description="Events after this seq.")

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_HISTORY_PAGE)


class _StatsWindow(BaseModel):
    """The window of a statistics route: a named one, or since/until (ISO 8601)."""

    model_config = ConfigDict(extra="forbid")

    window: Literal["15m", "1h", "24h"] | None = Field(
        default=None, description="The last 15 minutes, hour or day (default 1h)."
    )
    since: IsoDateTime | None = Field(default=None, description="Calls that started from then.")
    until: IsoDateTime | None = Field(
        default=None, description="... until then (default now); at most 31 days after since."
    )
    type: CallType | None = None

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without a zone is taken as UTC, as in posted events.
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


class QueueStatsQuery(_StatsWindow):
    """`GET /stats/queues`."""

    queue_id: Label | None = None
    after: Label | None = Field(
        default=None, description="The next page: queues after this queue_id (next_after)."
    )


class SeriesQuery(_StatsWindow):
    """`GET /stats/queues/{queue_id}/series`."""

    bucket: Literal["1m", "5m", "1h"] = "1m"


class AgentStatsQuery(_StatsWindow):
    """`GET /stats/agents`."""

    queue_id: Label | None = None
    after: Label | None = Field(
        default=None, description="The next page: agents after this agent_id (next_after)."
    )


# Events: one model per event type, told apart by `event`. Durations are seconds.
Seconds = Annotated[float, Strict(), Field(ge=0, le=10_000_000)]


class _PostedEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: CallId
    event_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    occurred_at: IsoDateTime | None = None


class CallInitiated(_PostedEvent):
    event: Literal["call_initiated"]
    # Optional here: the platform makes one (from event_id, when given, so a repeat finds it).
    call_id: CallId | None = None
    type: CallType
    queue_id: Label
    from_: PhoneNumber | None = Field(default=None, alias="from")
    to: PhoneNumber | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CallRouted(_PostedEvent):
    event: Literal["call_routed"]
    agent_id: Label
    routing_time: Seconds | None = None


class CallAnswered(_PostedEvent):
    event: Literal["call_answered"]
    wait_time: Seconds | None = None


class CallUnanswered(_PostedEvent):
    event: Literal["call_unanswered"]


class CallHold(_PostedEvent):
    event: Literal["call_hold"]
    hold_duration: Seconds | None = None


class CallResumed(_PostedEvent):
    event: Literal["call_resumed"]
    hold_duration: Seconds | None = None


class CallEnded(_PostedEvent):
    event: Literal["call_ended"]
    end_reason: Literal["completed", "abandoned", "failed", "canceled"]
    duration: Seconds | None = None


EventBody = Annotated[
    CallInitiated | CallRouted | CallAnswered | CallUnanswered | CallHold | CallResumed | CallEnded,
    Field(discriminator="event"),
]


class PostEvent(RootModel[EventBody]):
    pass


def posted_event(body: Any) -> PostedEvent:
    """Validate a posted event (snake_case or camelCase field names) into what the service takes."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    parsed = _validate(PostEvent, snake_case_keys(body)).root
    occurred_at = parsed.occurred_at
    if occurred_at is not None and occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
    common = {
        "event": Event(parsed.event),
        "call_id": parsed.call_id,
        "event_id": parsed.event_id,
        "occurred_at": occurred_at,
    }
    match parsed:
        case CallInitiated():
            return PostedEvent(
                **common,
                call_type=parsed.type,
                queue_id=parsed.queue_id,
                from_number=parsed.from_,
                to_number=parsed.to,
                metadata=parsed.metadata,
            )
        case CallRouted():
            return PostedEvent(
                **common,
                agent_id=parsed.agent_id,
                reported=Reported(routing_time=parsed.routing_time),
            )
        case CallAnswered():
            return PostedEvent(**common, reported=Reported(wait_time=parsed.wait_time))
        case CallHold() | CallResumed():
            return PostedEvent(**common, reported=Reported(hold_duration=parsed.hold_duration))
        case CallEnded():
            return PostedEvent(
                **common, end_reason=parsed.end_reason, reported=Reported(duration=parsed.duration)
            )
    return PostedEvent(**common)


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case_keys(body: dict[str, Any]) -> dict[str, Any]:
    """`callId` → `call_id` for the top-level fields; a field given in both spellings is a 400."""
    converted: dict[str, Any] = {}
    for name, value in body.items():
        snake = _CAMEL.sub(r"_\1", name).lower() if isinstance(name, str) else name
        if snake in converted:
            raise BadRequest(f"{snake} is given twice (as {snake} and in camelCase)")
        converted[snake] = value
    return converted


_HINTS = {
    "string_pattern_mismatch": "must be an E.164 phone number such as +14155550123",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "extra_forbidden": "is not a known field",
    "int_parsing": "must be a whole number",
    "float_type": "must be a number of seconds",
    "greater_than_equal": "is too small",
    "less_than_equal": "is too large",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long",
    "uuid_parsing": "must be a UUID",
    "uuid_type": "must be a UUID",
    "uuid_version": "must be a UUID",
    "datetime_from_date_parsing": "must be an ISO 8601 date and time",
    "datetime_parsing": "must be an ISO 8601 date and time",
    "datetime_type": "must be an ISO 8601 date and time",
}


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate `data` as `model` or raise BadRequest naming every missing or bad field."""
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return _validate(model, data)


def parse_query(model: type[BaseModel], query: Mapping[str, str]) -> Any:
    """Validate query parameters (the last of repeated ones wins) as `model`."""
    values = dict(query.items())
    for name, value in values.items():
        if "\x00" in value:
            raise BadRequest(f"{name} must not contain NUL characters")
    return _validate(model, values)


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        missing, bad = [], []
        for error in exc.errors():
            # A union's member name (the event type) is not a field the sender wrote.
            loc = [part for part in error["loc"] if part not in _EVENT_NAMES]
            field = ".".join(str(part) for part in loc) or "body"
            kind = error["type"]
            if kind == "missing":
                missing.append(field)
            elif kind == "union_tag_not_found":
                missing.append("event")
            elif kind == "union_tag_invalid":
                bad.append("event must be one of " + ", ".join(_EVENT_NAMES))
            elif kind == "value_error":
                bad.append(f"{field} {error['ctx']['error']}")
            elif kind in ("enum", "literal_error"):
                choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
                bad.append(f"{field} must be one of {', '.join(choices)}")
            else:
                bad.append(f"{field} {_HINTS.get(kind, error['msg'].lower())}")
        parts = []
        if missing:
            parts.append("Missing required fields: " + ", ".join(missing))
        parts.extend(bad)
        raise BadRequest("; ".join(parts)) from None
