"""Request bodies, validated by pydantic; every refusal names the field and what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

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
    ValidationInfo,
    field_validator,
)

from calls.destinations import MAX_URL_LENGTH
from calls.events import PostedEvent
from calls.scenarios import (
    MAX_FAIL_UPLOAD_ATTEMPTS,
    MAX_SCENARIO_MS,
    MAX_SEED,
    Outcome,
    Scenario,
)
from calls.transitions import Reported
from core.call_ids import REF_RULE, parse_call_id
from core.errors import BadRequest, DomainError
from core.lifecycle import EndReason, Event, Status
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


ScenarioMs = Annotated[int, Strict(), Field(ge=0, le=MAX_SCENARIO_MS)]


class ScenarioBody(BaseModel):
    """A simulated call's scripted course; every field optional. Times are real milliseconds
    (TIME_SCALE does not apply to them)."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome | None = Field(
        default=None,
        description="How the call ends (its end_reason); unscripted: drawn as for any call.",
    )
    ring_ms: ScenarioMs | None = Field(default=None, description="RINGING until answered or not.")
    talk_ms: ScenarioMs | None = Field(
        default=None, description="ANSWERED until COMPLETED, the hold included (answered only)."
    )
    hold_ms: ScenarioMs | None = Field(
        default=None,
        description="An ON_HOLD this long in the middle of the talk (answered only; 0: none).",
    )
    fail_upload_attempts: Annotated[int, Strict(), Field(ge=0, le=MAX_FAIL_UPLOAD_ATTEMPTS)] = (
        Field(default=0, description="The recording upload's first attempts that fail.")
    )
    seed: Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)] | None = Field(
        default=None, description="Makes every choice left open the same, run after run."
    )

    @field_validator("talk_ms", "hold_ms")
    @classmethod
    def _answered_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        outcome = info.data.get("outcome")
        if value is not None and outcome not in (None, Outcome.COMPLETED):
            raise ValueError(f"applies only to an answered call, not to outcome {outcome}")
        return value

    @field_validator("hold_ms")
    @classmethod
    def _within_the_talk(cls, value: int | None, info: ValidationInfo) -> int | None:
        talk_ms = info.data.get("talk_ms")
        if value is not None and talk_ms is not None and value > talk_ms:
            raise ValueError(f"must not be longer than talk_ms ({talk_ms})")
        return value

    def scenario(self) -> Scenario:
        return Scenario(**self.model_dump())


class CreateCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: PhoneNumber = Field(alias="from")
    to: PhoneNumber
    metadata: dict[str, Any] = Field(default_factory=dict)
    scenario: ScenarioBody | None = None
    status_callback: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_LENGTH)] | None = (
        Field(
            default=None,
            description="An http(s) URL each transition of the call is POSTed to, signed; its"
            " host must be in CALLBACK_ALLOWED_HOSTS (by default: loopback only).",
        )
    )
    status_callback_events: (
        Annotated[list[Status], Field(min_length=1, max_length=2 * len(Status))] | None
    ) = Field(default=None, description="The statuses to call back (default: every one).")

    @field_validator("status_callback_events")
    @classmethod
    def _with_a_callback(cls, value: list[Status] | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("status_callback", "") is None:
            raise ValueError("needs a status_callback")
        return None if value is None else list(dict.fromkeys(value))

    # The queue the call waits in, for its queue's statistics (none: in no queue's).
    queue_id: Label | None = None


MAX_PAGE_SIZE = 100


class ListCalls(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    page: int = Field(default=1, ge=1, le=1_000_000)
    # Larger asks are served at the cap, and the answer's `limit` says so.
    limit: int = Field(default=20, ge=1)
    status: Status | None = None
    flag: Flag | None = None
    queue_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    type: CallType | None = None
    from_: PhoneNumber | None = Field(default=None, alias="from")
    to: PhoneNumber | None = None
    source: Literal["simulated", "ingested"] | None = None
    end_reason: EndReason | None = None
    created_after: IsoDateTime | None = None
    created_before: IsoDateTime | None = None
    sort: Literal["created_at", "-created_at"] = Field(
        default="-created_at", description="created_at: oldest first; -created_at: newest first."
    )

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_PAGE_SIZE)


class DeleteCalls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(
        default=False, description="End the key's active calls first (as canceled), not a 409."
    )


class MetricsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "prometheus"] | None = Field(
        default=None,
        description="prometheus: the exposition text (as Accept: text/plain); else by Accept.",
    )
    scope: Literal["platform", "key"] = Field(
        default="platform",
        description="key: the six counters of the caller's key alone (JSON only).",
    )


MAX_HISTORY_PAGE = 1_000
# Deliveries a page of a call's callbacks holds, each with its attempts (CALLBACK_MAX_ATTEMPTS).
MAX_DELIVERIES_PAGE = 100


class _SeqPage(BaseModel):
    """A page of what a call has per seq, `limit` after `after_seq`."""

    model_config = ConfigDict(extra="forbid")
    # The largest page served: larger asks are served at it, and the answer's `limit` says so.
    most: ClassVar[int]

    limit: int = Field(default=100, ge=1)
    after_seq: int = Field(default=0, ge=0, le=2**31 - 1, description="Start after this seq.")

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, cls.most)


class HistoryPage(_SeqPage):
    """`GET /calls/{id}/events`: a page of a call's history."""

    most = MAX_HISTORY_PAGE


class CallbackPage(_SeqPage):
    """`GET /calls/{id}/callbacks`: a page of a call's status callback deliveries."""

    most = MAX_DELIVERIES_PAGE


class Advance(BaseModel):
    """`POST /calls/{id}/advance`: where to take the call."""

    model_config = ConfigDict(extra="forbid")

    to: Status | None = Field(
        default=None,
        description="Run the call through every state up to this one (default: the next).",
    )


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


HINTS = {
    "string_pattern_mismatch": "must be an E.164 phone number such as +14155550123",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "extra_forbidden": "is not a known field",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
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
    """Validate query parameters (the last of repeated ones wins) as `model`; one it does not
    take is a 400 naming it (a misspelt filter must not list everything)."""
    values = dict(query.items())
    known = {field.alias or name for name, field in model.model_fields.items()}
    unknown = sorted(name for name in values if name not in known)
    if unknown:
        raise BadRequest(
            f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: "
            f"{', '.join(name[:64] for name in unknown)} (this route takes "
            f"{', '.join(sorted(known))})"
        )
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
                bad.append(f"{field} {HINTS.get(kind, error['msg'].lower())}")
        parts = []
        if missing:
            parts.append("Missing required fields: " + ", ".join(missing))
        parts.extend(bad)
        raise BadRequest("; ".join(parts)) from None
