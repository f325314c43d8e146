"""The one state machine of a call, for simulated and ingested calls alike."""

from __future__ import annotations

import random
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings


class Status(StrEnum):
    QUEUED = "QUEUED"
    RINGING = "RINGING"
    ANSWERED = "ANSWERED"
    ON_HOLD = "ON_HOLD"
    UNANSWERED = "UNANSWERED"
    COMPLETED = "COMPLETED"


class Event(StrEnum):
    CALL_INITIATED = "call_initiated"
    CALL_ROUTED = "call_routed"
    CALL_ANSWERED = "call_answered"
    CALL_UNANSWERED = "call_unanswered"
    CALL_HOLD = "call_hold"
    CALL_RESUMED = "call_resumed"
    CALL_ENDED = "call_ended"


TERMINAL = Status.COMPLETED


class EndReason(StrEnum):
    """Why a call ended (`end_reason`): a simulated call's outcome (completed, no_answer, busy,
    failed) or hang-up (canceled), what an ingested call's sender said (completed, abandoned,
    failed, canceled), or the platform's `timeout` for an ingested call left idle."""

    COMPLETED = "completed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    CANCELED = "canceled"
    ABANDONED = "abandoned"
    TIMEOUT = "timeout"


# (from, event) -> to. call_ended is allowed from every state but COMPLETED.
_MOVES: dict[tuple[Status, Event], Status] = {
    (Status.QUEUED, Event.CALL_ROUTED): Status.RINGING,
    (Status.RINGING, Event.CALL_ANSWERED): Status.ANSWERED,
    (Status.RINGING, Event.CALL_UNANSWERED): Status.UNANSWERED,
    (Status.ANSWERED, Event.CALL_HOLD): Status.ON_HOLD,
    (Status.ON_HOLD, Event.CALL_RESUMED): Status.ANSWERED,
} | {(status, Event.CALL_ENDED): Status.COMPLETED for status in Status if status is not TERMINAL}

# Where each event takes a call; used to name both states when a move is refused.
TARGET_OF: dict[Event, Status] = {
    Event.CALL_INITIATED: Status.QUEUED,
    Event.CALL_ROUTED: Status.RINGING,
    Event.CALL_ANSWERED: Status.ANSWERED,
    Event.CALL_UNANSWERED: Status.UNANSWERED,
    Event.CALL_HOLD: Status.ON_HOLD,
    Event.CALL_RESUMED: Status.ANSWERED,
    Event.CALL_ENDED: Status.COMPLETED,
}

_EVENT_OF: dict[tuple[Status, Status], Event] = {(s, to): e for (s, e), to in _MOVES.items()}


def next_status(current: Status, event: Event) -> Status | None:
    """The state `event` moves a call in `current` to, or None when the move is not allowed."""
    return _MOVES.get((current, event))


def event_between(current: Status, target: Status) -> Event | None:
    """The event that moves a call from `current` to `target`, or None when there is none."""
    return _EVENT_OF.get((current, target))


# Delay ranges (settings field prefixes) of the states a simulated call leaves on a timer.
_TIMED: dict[Status, str] = {
    Status.QUEUED: "ring",
    Status.RINGING: "answer",
    Status.ANSWERED: "talk",
    Status.UNANSWERED: "unanswered",
}


def timer_delay_ms(
    current: Status, settings: Settings, rng: random.Random | None = None
) -> int | None:
    """Draw how long a simulated call rests in `current`, after the time scale.

    None where a simulated call waits for an event (ON_HOLD) or has ended.
    """
    stage = _TIMED.get(current)
    if stage is None:
        return None
    low, high = (
        getattr(settings, f"{stage}_delay_min_ms"),
        getattr(settings, f"{stage}_delay_max_ms"),
    )
    return settings.scaled_ms((rng or random).uniform(low, high))


def longest_delay_ms(current: Status, settings: Settings) -> int:
    """The longest a simulated call may rest in `current` before its timer fires."""
    stage = _TIMED.get(current)
    return settings.scaled_ms(getattr(settings, f"{stage}_delay_max_ms")) if stage else 0
