"""Request bodies, validated by pydantic; every refusal names the field and what is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from core.errors import BadRequest
from core.lifecycle import Status

# E.164's shape: a plus and up to 15 digits. The leading-zero rule is not enforced, because the
# original service's own examples (+0987654321) must keep working.
PhoneNumber = Annotated[StrictStr, Field(pattern=r"^\+[0-9]{2,15}$")]


class CreateCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: PhoneNumber = Field(alias="from")
    to: PhoneNumber
    metadata: dict[str, Any] = Field(default_factory=dict)


MAX_PAGE_SIZE = 100


class ListCalls(BaseModel):
    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=1, ge=1, le=1_000_000)
    # Larger asks are served at the cap, and the answer's `limit` says so.
    limit: int = Field(default=20, ge=1)
    status: Status | None = None

    @field_validator("limit")
    @classmethod
    def _cap(cls, value: int) -> int:
        return min(value, MAX_PAGE_SIZE)


_HINTS = {
    "string_pattern_mismatch": "must be an E.164 phone number such as +14155550123",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "extra_forbidden": "is not a known field",
    "int_parsing": "must be a whole number",
    "greater_than_equal": "is too small",
    "less_than_equal": "is too large",
    "enum": "must be one of " + ", ".join(Status),
}


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate `data` as `model` or raise BadRequest naming every missing or bad field."""
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return _validate(model, data)


def parse_query(model: type[BaseModel], query: Mapping[str, str]) -> Any:
    """Validate query parameters (the last of repeated ones wins) as `model`."""
    return _validate(model, dict(query.items()))


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        missing, bad = [], []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "body"
            if error["type"] == "missing":
                missing.append(field)
            else:
                bad.append(f"{field} {_HINTS.get(error['type'], error['msg'].lower())}")
        parts = []
        if missing:
            parts.append("Missing required fields: " + ", ".join(missing))
        parts.extend(bad)
        raise BadRequest("; ".join(parts)) from None
