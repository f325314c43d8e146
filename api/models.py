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
