"""Contact-centre business rules: they flag a call, never block it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.lifecycle import Event


class Flag(StrEnum):
    WAIT_SLA_EXCEEDED = "wait_sla_exceeded"
    HOLD_LIMIT_EXCEEDED = "hold_limit_exceeded"
    SHORT_CALL = "short_call"
    REROUTED = "rerouted"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits in seconds: a wait or routing or hold longer than its limit is flagged, and so
    is a talk shorter than `short_call_s`."""

    wait_sla_s: float = 30
    hold_limit_s: float = 60
    short_call_s: float = 10
    reroute_s: float = 15


@dataclass(frozen=True, slots=True)
class Durations:
    """What an event measured, in seconds: from its own fields where the sender gave them,
    else from the call's recorded timestamps. None where it does not apply."""

    routing_s: float | None = None
    wait_s: float | None = None
    hold_s: float | None = None
    talk_s: float | None = None


def raised_flags(event: Event, durations: Durations, limits: Thresholds) -> set[Flag]:
    """The flags `event` raises, measured by `durations`."""
    flags: set[Flag] = set()
    if event is Event.CALL_ROUTED and _over(durations.routing_s, limits.reroute_s):
        flags.add(Flag.REROUTED)
    if event is Event.CALL_ANSWERED and _over(durations.wait_s, limits.wait_sla_s):
        flags.add(Flag.WAIT_SLA_EXCEEDED)
    if event in (Event.CALL_HOLD, Event.CALL_RESUMED, Event.CALL_ENDED) and _over(
        durations.hold_s, limits.hold_limit_s
    ):
        flags.add(Flag.HOLD_LIMIT_EXCEEDED)
    talk_s = durations.talk_s
    if event is Event.CALL_ENDED and talk_s is not None and talk_s < limits.short_call_s:
        flags.add(Flag.SHORT_CALL)
    return flags


def _over(value: float | None, limit: float) -> bool:
    return value is not None and value > limit
