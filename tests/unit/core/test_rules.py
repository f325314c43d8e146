"""Business rules: each flag at its threshold's boundary, on its own events only."""

from __future__ import annotations

import pytest

from core.lifecycle import Event
from core.rules import Durations, Flag, Thresholds, raised_flags

DEFAULTS = Thresholds()
# Every duration well past its limit (talk well under): each event picks only its own.
ALL_BREACHED = Durations(routing_s=100, wait_s=100, hold_s=100, talk_s=1)
HOLD_EVENTS = [Event.CALL_HOLD, Event.CALL_RESUMED, Event.CALL_ENDED]


def flags_of(event: Event, durations: Durations, limits: Thresholds = DEFAULTS) -> set[Flag]:
    return raised_flags(event, durations, limits)


def test_default_thresholds_are_the_documented_ones() -> None:
    assert (DEFAULTS.wait_sla_s, DEFAULTS.hold_limit_s, DEFAULTS.short_call_s) == (30, 60, 10)
    assert DEFAULTS.reroute_s == 15


# Wait (QUEUED to ANSWERED): flagged when longer than 30 s.


@pytest.mark.parametrize("wait_s", [0, 29.999, 30])
def test_wait_up_to_thirty_seconds_raises_nothing(wait_s: float) -> None:
    assert flags_of(Event.CALL_ANSWERED, Durations(wait_s=wait_s)) == set()


@pytest.mark.parametrize("wait_s", [30.001, 31, 3_600])
def test_wait_over_thirty_seconds_raises_wait_sla_exceeded(wait_s: float) -> None:
    assert flags_of(Event.CALL_ANSWERED, Durations(wait_s=wait_s)) == {Flag.WAIT_SLA_EXCEEDED}


@pytest.mark.parametrize("event", [e for e in Event if e is not Event.CALL_ANSWERED])
def test_long_wait_is_flagged_on_call_answered_only(event: Event) -> None:
    assert flags_of(event, Durations(wait_s=31)) == set()


# A hold: flagged when longer than 60 s, on the events that can measure it.


@pytest.mark.parametrize("event", HOLD_EVENTS)
@pytest.mark.parametrize("hold_s", [0, 59.999, 60])
def test_hold_up_to_sixty_seconds_raises_nothing(event: Event, hold_s: float) -> None:
    assert flags_of(event, Durations(hold_s=hold_s)) == set()


@pytest.mark.parametrize("event", HOLD_EVENTS)
@pytest.mark.parametrize("hold_s", [60.001, 61])
def test_hold_over_sixty_seconds_raises_hold_limit_exceeded(event: Event, hold_s: float) -> None:
    assert flags_of(event, Durations(hold_s=hold_s)) == {Flag.HOLD_LIMIT_EXCEEDED}


@pytest.mark.parametrize("event", [e for e in Event if e not in HOLD_EVENTS])
def test_long_hold_is_not_flagged_on_other_events(event: Event) -> None:
    assert flags_of(event, Durations(hold_s=61)) == set()


# Talk: flagged when shorter than 10 s, when the call ends.


@pytest.mark.parametrize("talk_s", [10, 10.001, 600])
def test_talk_of_ten_seconds_or_more_raises_nothing(talk_s: float) -> None:
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=talk_s)) == set()


@pytest.mark.parametrize("talk_s", [0, 9, 9.999])
def test_talk_under_ten_seconds_raises_short_call(talk_s: float) -> None:
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=talk_s)) == {Flag.SHORT_CALL}


def test_call_ended_without_talk_time_is_not_a_short_call() -> None:
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=None)) == set()


@pytest.mark.parametrize("event", [e for e in Event if e is not Event.CALL_ENDED])
def test_short_talk_is_flagged_on_call_ended_only(event: Event) -> None:
    assert flags_of(event, Durations(talk_s=9)) == set()


# Routing: flagged when longer than 15 s.


@pytest.mark.parametrize("routing_s", [0, 14.999, 15])
def test_routing_up_to_fifteen_seconds_raises_nothing(routing_s: float) -> None:
    assert flags_of(Event.CALL_ROUTED, Durations(routing_s=routing_s)) == set()


@pytest.mark.parametrize("routing_s", [15.001, 16])
def test_routing_over_fifteen_seconds_raises_rerouted(routing_s: float) -> None:
    assert flags_of(Event.CALL_ROUTED, Durations(routing_s=routing_s)) == {Flag.REROUTED}


@pytest.mark.parametrize("event", [e for e in Event if e is not Event.CALL_ROUTED])
def test_long_routing_is_flagged_on_call_routed_only(event: Event) -> None:
    assert flags_of(event, Durations(routing_s=16)) == set()


# Each event raises only its own flags, whatever else the durations hold.


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event.CALL_INITIATED, set()),
        (Event.CALL_ROUTED, {Flag.REROUTED}),
        (Event.CALL_ANSWERED, {Flag.WAIT_SLA_EXCEEDED}),
        (Event.CALL_UNANSWERED, set()),
        (Event.CALL_HOLD, {Flag.HOLD_LIMIT_EXCEEDED}),
        (Event.CALL_RESUMED, {Flag.HOLD_LIMIT_EXCEEDED}),
        (Event.CALL_ENDED, {Flag.HOLD_LIMIT_EXCEEDED, Flag.SHORT_CALL}),
    ],
)
def test_each_event_raises_only_its_own_flags(event: Event, expected: set[Flag]) -> None:
    assert flags_of(event, ALL_BREACHED) == expected


@pytest.mark.parametrize("event", list(Event))
def test_no_durations_raise_nothing(event: Event) -> None:
    assert flags_of(event, Durations()) == set()


# Custom thresholds replace the defaults.

CUSTOM = Thresholds(wait_sla_s=5, hold_limit_s=120, short_call_s=2.5, reroute_s=0)


def test_custom_wait_threshold_is_honoured() -> None:
    assert flags_of(Event.CALL_ANSWERED, Durations(wait_s=5), CUSTOM) == set()
    assert flags_of(Event.CALL_ANSWERED, Durations(wait_s=5.5), CUSTOM) == {Flag.WAIT_SLA_EXCEEDED}


def test_custom_hold_threshold_is_honoured() -> None:
    # 61 s breaches the default limit but not a limit of 120 s.
    assert flags_of(Event.CALL_RESUMED, Durations(hold_s=61), CUSTOM) == set()
    assert flags_of(Event.CALL_RESUMED, Durations(hold_s=121), CUSTOM) == {Flag.HOLD_LIMIT_EXCEEDED}


def test_custom_short_call_threshold_is_honoured() -> None:
    # 9 s is short by default, but not against a limit of 2.5 s.
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=9), CUSTOM) == set()
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=2.5), CUSTOM) == set()
    assert flags_of(Event.CALL_ENDED, Durations(talk_s=2.4), CUSTOM) == {Flag.SHORT_CALL}


def test_custom_zero_reroute_threshold_flags_any_routing_time() -> None:
    assert flags_of(Event.CALL_ROUTED, Durations(routing_s=0), CUSTOM) == set()
    assert flags_of(Event.CALL_ROUTED, Durations(routing_s=0.001), CUSTOM) == {Flag.REROUTED}


def test_flags_are_the_documented_names() -> None:
    assert [flag.value for flag in Flag] == [
        "wait_sla_exceeded",
        "hold_limit_exceeded",
        "short_call",
        "rerouted",
    ]
