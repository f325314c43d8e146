"""The Twilio face's requests: form bodies and queries in Twilio's parameter names, validated by
pydantic; a refusal names the parameter and carries Twilio's code for it (missing `To`: 21201,
a bad one: 21211, and so on). Parameters Twilio takes that the mock has no use for (Record,
MachineDetection, ...) are ignored, as Twilio ignores ones it does not know."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
)

from api.request_models import HINTS, PhoneNumber
from api.response_models import TwilioStatus
from calls.destinations import MAX_URL_LENGTH
from calls.twilio import EVENTS
from core.errors import BadRequest

# A parameter Twilio's Calls resource could take but the mock cannot (its own generic code).
INVALID_PARAMETER = 20001
# Twilio's limits on what a call keeps: its TwiML and its URLs.
MAX_TWIML = 4000
MAX_TWILIO_URL = 4000
MAX_TIMEOUT_S = 600
# Twilio's default and largest page.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000
# A list filter's text (a number) and a page token, at most.
MAX_FILTER = 64

# Each parameter's Twilio codes: (missing, bad).
CODES: dict[str, tuple[int, int]] = {
    "To": (21201, 21211),
    "From": (21213, 21212),
    "Url": (21205, 21205),
    "Method": (21209, 21209),
    "Twiml": (21205, INVALID_PARAMETER),
    "ApplicationSid": (21205, 21218),
    "StatusCallback": (INVALID_PARAMETER, 21205),
    "StatusCallbackMethod": (21209, 21209),
    "Timeout": (21208, 21208),
}


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Method = Annotated[Literal["GET", "POST"], BeforeValidator(_upper)]
TwilioEvent = Literal["initiated", "ringing", "answered", "completed"]
HttpUrl = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_TWILIO_URL, pattern=r"^https?://[^\s]+$")
]


class _Instructions(BaseModel):
    """What a call runs, in Twilio (a TwiML document at Url, or inline): kept, never run."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    url: HttpUrl | None = Field(default=None, alias="Url")
    method: Method | None = Field(default=None, alias="Method")
    twiml: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TWIML)] | None = Field(
        default=None, alias="Twiml"
    )


class CreateTwilioCall(_Instructions):
    """`POST /2010-04-01/Accounts/{AccountSid}/Calls.json`, form-encoded."""

    to: PhoneNumber = Field(alias="To")
    from_: PhoneNumber = Field(alias="From")
    application_sid: Annotated[StrictStr, Field(pattern=r"^AP[0-9a-fA-F]{32}$")] | None = Field(
        default=None, alias="ApplicationSid"
    )
    status_callback: (
        Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_LENGTH, pattern=r"^\S+$")]
        | None
    ) = Field(
        default=None,
        alias="StatusCallback",
        description="Where the call's status callbacks go, form-encoded as Twilio sends them and"
        " signed with X-Twilio-Signature; its host must be in CALLBACK_ALLOWED_HOSTS.",
    )
    status_callback_event: (
        Annotated[list[TwilioEvent], Field(max_length=2 * len(EVENTS))] | None
    ) = Field(
        default=None,
        alias="StatusCallbackEvent",
        description="Repeatable; default: completed only.",
    )
    status_callback_method: Method | None = Field(default=None, alias="StatusCallbackMethod")
    timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)] | None = Field(
        default=None, alias="Timeout", description="Seconds to ring: kept (the ring is simulated)."
    )

    def kept(self) -> dict[str, Any]:
        """What the call keeps of the request (calls.twilio, the Twilio column of the call)."""
        return {
            "url": self.url,
            "method": self.method,
            "twiml": self.twiml,
            "application_sid": self.application_sid,
            "timeout": self.timeout,
            "status_callback_method": self.status_callback_method or "POST",
        }

    def statuses(self) -> list[str]:
        """The statuses whose transitions are called back (Twilio's default: completed)."""
        events = self.status_callback_event or ["completed"]
        return [EVENTS[event].value for event in dict.fromkeys(events)]


class UpdateTwilioCall(_Instructions):
    """`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`: hang up (Status), or new
    instructions (kept as little as the first: not run)."""

    status: Literal["completed", "canceled"] | None = Field(default=None, alias="Status")


def _twilio_time(value: Any) -> Any:
    """`YYYY-MM-DD` (a day, UTC) or an ISO 8601 time (the SDKs send `...T12:00:00Z`)."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be YYYY-MM-DD or an ISO 8601 time")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be YYYY-MM-DD or an ISO 8601 time") from None
    if not 1900 <= moment.year <= 9000:
        raise ValueError("must be between the years 1900 and 9000")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


TwilioTime = Annotated[date | datetime, BeforeValidator(_twilio_time)]
Filter = Annotated[StrictStr, Field(min_length=1, max_length=MAX_FILTER)]


class ListTwilioCalls(BaseModel):
    """`GET /2010-04-01/Accounts/{AccountSid}/Calls.json`: newest first, a page at a time."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    to: Filter | None = Field(default=None, alias="To")
    from_: Filter | None = Field(default=None, alias="From")
    status: TwilioStatus | None = Field(default=None, alias="Status")
    start_time: TwilioTime | None = Field(default=None, alias="StartTime")
    start_time_after: TwilioTime | None = Field(
        default=None, alias="StartTime>", description="Started on or after (StartTime>=...)."
    )
    start_time_before: TwilioTime | None = Field(
        default=None, alias="StartTime<", description="Started on or before (StartTime<=...)."
    )
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, alias="PageSize")
    page: int = Field(default=0, ge=0, le=MAX_PAGE, alias="Page")
    page_token: Filter | None = Field(
        default=None, alias="PageToken", description="Ignored: pages go by Page."
    )

    @field_validator("page_size")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_PAGE_SIZE)

    def created_since(self) -> datetime | None:
        """Created at or after: StartTime> (a day from its start), or StartTime's day."""
        bound = self.start_time_after or self.start_time
        return None if bound is None else _start(bound)

    def created_before(self) -> datetime | None:
        """Created before: the end of StartTime<'s day (or its second), or of StartTime's."""
        bound = self.start_time_before or self.start_time
        if bound is None:
            return None
        if isinstance(bound, datetime):
            return bound + timedelta(seconds=1)
        return _start(bound) + timedelta(days=1)

    def filters(self) -> dict[str, str]:
        """The filters given, by Twilio's names, for the page URIs."""
        given = self.model_dump(by_alias=True, exclude={"page_size", "page", "page_token"})
        return {name: _text(value) for name, value in given.items() if value is not None}


# Filters of Twilio's that the mock does not apply: refused, never ignored (ignoring one would
# answer calls that do not match it).
UNSUPPORTED_FILTERS = ("ParentCallSid", "EndTime", "EndTime>", "EndTime<")


def _start(bound: date | datetime) -> datetime:
    if isinstance(bound, datetime):
        return bound
    return datetime(bound.year, bound.month, bound.day, tzinfo=UTC)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


# -- reading and validating --------------------------------------------------------------------

# The parameters a form may repeat, each value one item (or several, apart by spaces).
LISTS = frozenset({"StatusCallbackEvent"})


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The form body (application/x-www-form-urlencoded, as every Twilio SDK sends); a body
    of another type gives no parameters. Only text is taken."""
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception as exc:  # a body not in its Content-Encoding, bytes that are not UTF-8, ...
        raise BadRequest(f"Request body could not be read: {exc}", code=INVALID_PARAMETER) from None
    for name, value in form.items():
        if not isinstance(value, str):
            raise BadRequest(f"{name[:64]} must be text, not a file", code=INVALID_PARAMETER)
    return form  # type: ignore[return-value]


def parse_form(model: type[BaseModel], form: Mapping[str, str] | MultiDictProxy[str]) -> Any:
    """Validate a form (or a query) as `model`: a parameter given more than once counts once (the
    last), but for a list (StatusCallbackEvent, also given as one value of names and spaces)."""
    data: dict[str, Any] = {}
    for name in set(form.keys()):
        values = form.getall(name) if isinstance(form, MultiDictProxy) else [form[name]]
        for value in values:
            if "\x00" in value:
                raise BadRequest(
                    f"{name[:64]} must not contain NUL characters", code=INVALID_PARAMETER
                )
        data[name] = [p for v in values for p in v.split()] if name in LISTS else values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "body"
        missing, bad = CODES.get(name, (INVALID_PARAMETER, INVALID_PARAMETER))
        kind = error["type"]
        if kind == "missing":
            raise BadRequest(f"Missing required parameter {name}", code=missing) from None
        if kind in ("enum", "literal_error"):
            choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
            what = f"must be one of {', '.join(choices)}"
        elif kind == "value_error":
            what = str(error["ctx"]["error"])
        elif name in ("To", "From") and kind == "string_pattern_mismatch":
            given = str(error.get("input", ""))[:64]
            raise BadRequest(
                f"The '{name}' number {given} is not a valid phone number (E.164: +14155550123)",
                code=bad,
            ) from None
        elif kind == "string_pattern_mismatch":
            what = (
                "must be an http or https URL"
                if "Url" in name or "Callback" in name
                else ("is not valid")
            )
        else:
            what = HINTS.get(kind, error["msg"].lower())
        raise BadRequest(f"{name} {what}", code=bad) from None
