"""Response bodies, as pydantic models: the OpenAPI document is generated from them (and from
the request models in api/schemas.py), and tests check real answers against them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.lifecycle import Event, Status
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


class CreatedCall(BaseModel):
    call_id: str
    status: Status
    from_: str = Field(alias="from")
    to: str
    metadata: dict[str, Any]
    created_at: str
    websocket_url: str
    stream_url: str


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
    end_reason: str | None
    flags: list[Flag]
    recording_url: str | None = Field(description="Served by the API to the call's owner.")
    created_at: str
    updated_at: str


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


EndReason = Literal["completed", "no_answer", "busy", "failed", "canceled", "abandoned", "timeout"]


class StatusUpdate(Message):
    """A transition as a status callback carries it (the body POSTed to `status_callback`), and
    as `advance` and `hangup` answer it."""

    end_reason: EndReason | None = Field(description="Why the call ended; null before COMPLETED.")


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


class Metrics(BaseModel):
    total_calls: int
    active_calls: int
    completed_calls: int
    current_cps: int
    uploads_in_progress: int
    uploads_completed: int
