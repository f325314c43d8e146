"""The call state machine: its transition table and timer delays."""

from __future__ import annotations

import random

import pytest

from core.lifecycle import (
    Event,
    Status,
    event_between,
    longest_delay_ms,
    next_status,
    timer_delay_ms,
)
from core.settings import Settings

# The table as the service documents it: (from, event, to).
ALLOWED = [
    (Status.QUEUED, Event.CALL_ROUTED, Status.RINGING),
    (Status.RINGING, Event.CALL_ANSWERED, Status.ANSWERED),
    (Status.RINGING, Event.CALL_UNANSWERED, Status.UNANSWERED),
    (Status.ANSWERED, Event.CALL_HOLD, Status.ON_HOLD),
    (Status.ON_HOLD, Event.CALL_RESUMED, Status.ANSWERED),
    (Status.QUEUED, Event.CALL_ENDED, Status.COMPLETED),
    (Status.RINGING, Event.CALL_ENDED, Status.COMPLETED),
    (Status.ANSWERED, Event.CALL_ENDED, Status.COMPLETED),
    (Status.ON_HOLD, Event.CALL_ENDED, Status.COMPLETED),
    (Status.UNANSWERED, Event.CALL_ENDED, Status.COMPLETED),
]
NOT_ALLOWED = [
    (current, event)
    for current in Status
    for event in Event
    if (current, event) not in {(c, e) for c, e, _ in ALLOWED}
]
NON_TERMINAL = [s for s in Status if s is not Status.COMPLETED]

# Settings field prefix of each timed state's delay range.
TIMED_STAGES = {
    Status.QUEUED: "ring",
    Status.RINGING: "answer",
    Status.ANSWERED: "talk",
    Status.UNANSWERED: "unanswered",
}


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)


@pytest.mark.parametrize(("current", "event", "target"), ALLOWED)
def test_allowed_event_moves_call_to_its_target(
    current: Status, event: Event, target: Status
) -> None:
    assert next_status(current, event) is target


@pytest.mark.parametrize(("current", "event", "target"), ALLOWED)
def test_event_between_names_the_event_of_each_allowed_move(
    current: Status, event: Event, target: Status
) -> None:
    assert event_between(current, target) is event


@pytest.mark.parametrize(("current", "event"), NOT_ALLOWED)
def test_event_outside_the_table_moves_nothing(current: Status, event: Event) -> None:
    assert next_status(current, event) is None


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.QUEUED, Status.ANSWERED),
        (Status.QUEUED, Status.UNANSWERED),
        (Status.QUEUED, Status.ON_HOLD),
        (Status.RINGING, Status.ON_HOLD),
        (Status.RINGING, Status.QUEUED),
        (Status.UNANSWERED, Status.ANSWERED),
        (Status.ON_HOLD, Status.RINGING),
        (Status.ANSWERED, Status.UNANSWERED),
        (Status.ANSWERED, Status.ANSWERED),
    ],
)
def test_no_event_leads_between_unrelated_states(current: Status, target: Status) -> None:
    assert event_between(current, target) is None


@pytest.mark.parametrize("target", list(Status))
def test_completed_call_goes_nowhere(target: Status) -> None:
    assert event_between(Status.COMPLETED, target) is None


@pytest.mark.parametrize("event", list(Event))
def test_completed_call_accepts_no_event(event: Event) -> None:
    assert next_status(Status.COMPLETED, event) is None


def test_ringing_call_cannot_be_put_on_hold() -> None:
    assert next_status(Status.RINGING, Event.CALL_HOLD) is None


@pytest.mark.parametrize("current", NON_TERMINAL)
def test_call_ended_completes_a_call_from_every_non_terminal_state(current: Status) -> None:
    assert next_status(current, Event.CALL_ENDED) is Status.COMPLETED


@pytest.mark.parametrize("current", list(Status))
def test_call_initiated_is_not_a_move(current: Status) -> None:
    assert next_status(current, Event.CALL_INITIATED) is None


@pytest.mark.parametrize("time_scale", [1.0, 0.01, 0.05])
@pytest.mark.parametrize(("current", "stage"), list(TIMED_STAGES.items()))
def test_timer_delay_stays_within_the_stage_range_times_the_time_scale(
    current: Status, stage: str, time_scale: float
) -> None:
    config = settings(time_scale=time_scale)
    low = round(getattr(config, f"{stage}_delay_min_ms") * time_scale)
    high = round(getattr(config, f"{stage}_delay_max_ms") * time_scale)
    rng = random.Random(7)

    delays = [timer_delay_ms(current, config, rng) for _ in range(500)]

    assert all(isinstance(d, int) for d in delays)
    assert all(low <= d <= high for d in delays)
    # Drawn over the range, not pinned to one end of it.
    assert min(delays) < max(delays)


def test_timer_delay_follows_configured_range() -> None:
    config = settings(ring_delay_min_ms=100, ring_delay_max_ms=100, time_scale=0.5)

    assert timer_delay_ms(Status.QUEUED, config, random.Random(1)) == 50


def test_timer_delay_draws_without_a_given_rng() -> None:
    delay = timer_delay_ms(Status.RINGING, settings())

    assert delay is not None
    assert 3_000 <= delay <= 5_000


@pytest.mark.parametrize("current", [Status.ON_HOLD, Status.COMPLETED])
def test_no_timer_for_a_call_on_hold_or_completed(current: Status) -> None:
    assert timer_delay_ms(current, settings(), random.Random(1)) is None


@pytest.mark.parametrize(
    ("current", "longest_ms"),
    [
        (Status.QUEUED, 20),
        (Status.RINGING, 50),
        (Status.ANSWERED, 40),
        (Status.UNANSWERED, 20),
        (Status.ON_HOLD, 0),
        (Status.COMPLETED, 0),
    ],
)
def test_longest_delay_is_the_scaled_stage_maximum(current: Status, longest_ms: int) -> None:
    assert longest_delay_ms(current, settings(time_scale=0.01)) == longest_ms


def test_longest_delay_at_full_speed_is_the_configured_maximum() -> None:
    assert longest_delay_ms(Status.RINGING, settings()) == 5_000
