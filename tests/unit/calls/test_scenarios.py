"""A simulated call's course: unscripted chances, scenarios made into plans, the next timed state,
the rests between, and where an advance can take a call."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from calls.scenarios import (
    Outcome,
    Plan,
    Scenario,
    draw_outcome,
    has_timer,
    longest_rest_ms,
    make_plan,
    next_step,
    reachable,
    rest_after_timer_ms,
    rest_ms,
)
from core.lifecycle import Event, Status, event_between
from core.settings import Settings
from tests.unit.calls.rows import CREATED_AT, call_row


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


def unscripted(status: Status, **columns: Any) -> dict[str, Any]:
    return call_row(status=status.value, scenario=None, **columns)


def scripted(status: Status, scenario: Scenario, **columns: Any) -> dict[str, Any]:
    plan = make_plan(scenario, settings(), random.Random(1))
    return call_row(status=status.value, scenario=plan.as_json(), **columns)


# Unscripted calls: today's chances.


def test_about_seventy_percent_of_rung_calls_are_answered() -> None:
    config, rng = settings(), random.Random(20_240_601)

    targets = [next_step(unscripted(Status.RINGING), config, rng).target for _ in range(5_000)]

    assert set(targets) == {Status.ANSWERED, Status.UNANSWERED}
    assert 0.67 <= targets.count(Status.ANSWERED) / len(targets) <= 0.73


@pytest.mark.parametrize(("probability", "target"), [(0, Status.UNANSWERED), (1, Status.ANSWERED)])
def test_the_answer_probability_decides_every_rung_call_at_its_ends(
    probability: float, target: Status
) -> None:
    config, rng = settings(answer_probability=probability), random.Random(3)

    targets = {next_step(unscripted(Status.RINGING), config, rng).target for _ in range(1_000)}

    assert targets == {target}


@pytest.mark.parametrize(
    ("current", "target", "end_reason"),
    [
        (Status.QUEUED, Status.RINGING, None),
        (Status.ANSWERED, Status.COMPLETED, "completed"),
        (Status.UNANSWERED, Status.COMPLETED, "no_answer"),
    ],
)
def test_unscripted_states_that_do_not_draw_move_on_as_before(
    current: Status, target: Status, end_reason: str | None
) -> None:
    step = next_step(unscripted(current), settings(), random.Random(1))

    assert (step.target, step.end_reason) == (target, end_reason)
    assert step.event is event_between(current, target)


@pytest.mark.parametrize("current", [Status.ON_HOLD, Status.COMPLETED])
def test_an_unscripted_call_on_hold_or_completed_has_no_timed_move(current: Status) -> None:
    assert next_step(unscripted(current), settings(), random.Random(1)) is None


def test_busy_and_failed_shares_come_out_of_the_unanswered_calls() -> None:
    config = settings(answer_probability=0.5, busy_probability=0.2, failed_probability=0.1)
    rng = random.Random(5)

    reasons = Counter(
        next_step(unscripted(Status.UNANSWERED), config, rng).end_reason for _ in range(10_000)
    )

    # Of the unanswered half: busy 0.2 / 0.5, failed 0.1 / 0.5, no_answer the rest.
    assert 0.37 <= reasons["busy"] / 10_000 <= 0.43
    assert 0.17 <= reasons["failed"] / 10_000 <= 0.23
    assert 0.37 <= reasons["no_answer"] / 10_000 <= 0.43


def test_drawn_outcomes_keep_their_shares() -> None:
    config = settings(answer_probability=0.6, busy_probability=0.1, failed_probability=0.1)
    rng = random.Random(8)

    drawn = Counter(draw_outcome(config, rng) for _ in range(10_000))

    assert 0.57 <= drawn[Outcome.COMPLETED] / 10_000 <= 0.63
    assert 0.08 <= drawn[Outcome.BUSY] / 10_000 <= 0.12
    assert 0.08 <= drawn[Outcome.FAILED] / 10_000 <= 0.12
    assert 0.17 <= drawn[Outcome.NO_ANSWER] / 10_000 <= 0.23


def test_shares_adding_up_to_more_than_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        settings(answer_probability=0.7, busy_probability=0.2, failed_probability=0.2)


def test_every_unscripted_timed_step_is_a_move_of_the_state_machine() -> None:
    config, rng = settings(), random.Random(11)
    for current in (Status.QUEUED, Status.RINGING, Status.ANSWERED, Status.UNANSWERED):
        for _ in range(50):
            step = next_step(unscripted(current), config, rng)
            assert event_between(current, step.target) is step.event


# Scenarios made into plans.


def test_a_scripted_outcome_and_timings_are_taken_exactly() -> None:
    scenario = Scenario(outcome=Outcome.COMPLETED, ring_ms=1_234, talk_ms=5_000, hold_ms=2_000)

    plan = make_plan(scenario, settings(time_scale=0.01))

    assert (plan.outcome, plan.ring_ms, plan.talk_ms, plan.hold_ms) == (
        "completed",
        1_234,
        5_000,
        2_000,
    )
    assert plan.hold_after_ms == 1_500  # the hold sits in the middle of the talk
    assert plan.unanswered_ms is None


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    config = settings()

    first = make_plan(Scenario(seed=42), config)
    again = make_plan(Scenario(seed=42), config)
    other = make_plan(Scenario(seed=43), config)

    assert first == again
    assert other != first


def test_fixing_one_timing_leaves_the_others_a_seed_gives() -> None:
    config = settings()

    free = make_plan(Scenario(seed=7, outcome=Outcome.COMPLETED), config)
    fixed = make_plan(Scenario(seed=7, outcome=Outcome.COMPLETED, ring_ms=9), config)

    assert fixed.ring_ms == 9
    assert (fixed.queue_ms, fixed.talk_ms) == (free.queue_ms, free.talk_ms)


def test_drawn_timings_are_within_the_settings_after_the_time_scale() -> None:
    for seed in range(100):
        plan = make_plan(Scenario(seed=seed), settings(time_scale=0.1))
        assert 100 <= plan.queue_ms <= 200
        assert 300 <= plan.ring_ms <= 500
        if plan.outcome is Outcome.COMPLETED:
            assert 200 <= plan.talk_ms <= 400
        else:
            assert 100 <= plan.unanswered_ms <= 200


def test_a_hold_without_a_talk_is_added_to_the_drawn_talk() -> None:
    plan = make_plan(
        Scenario(seed=1, outcome=Outcome.COMPLETED, hold_ms=70_000), settings(time_scale=0.01)
    )

    assert 70_020 <= plan.talk_ms <= 70_040


def test_an_unanswered_outcome_has_no_talk_nor_hold() -> None:
    plan = make_plan(Scenario(outcome=Outcome.BUSY, ring_ms=10), settings())

    assert (plan.talk_ms, plan.hold_ms, plan.outcome) == (None, 0, "busy")
    assert plan.unanswered_ms is not None


def test_a_plan_survives_its_json() -> None:
    plan = make_plan(Scenario(seed=3, fail_upload_attempts=2), settings())

    assert Plan.from_json(plan.as_json()) == plan


# A scripted call's course.


def walk(call: dict[str, Any]) -> list[tuple[str, int | None, str | None]]:
    """Every state a scripted call passes through, how long it rests there, and its end."""
    config, rng = settings(), random.Random(0)
    course = []
    while True:
        course.append((call["status"], rest_ms(call, config, rng), call.get("end_reason")))
        step = next_step(call, config, rng)
        if step is None:
            return course
        held_at = CREATED_AT if step.target is Status.ON_HOLD else call["held_at"]
        call = call | {"status": step.target.value, "held_at": held_at}
        call["end_reason"] = step.end_reason


def test_a_scripted_answered_call_with_a_hold_follows_its_plan() -> None:
    scenario = Scenario(outcome=Outcome.COMPLETED, ring_ms=300, talk_ms=1_000, hold_ms=400)
    call = scripted(Status.QUEUED, scenario)
    queue_ms = call["scenario"]["queue_ms"]

    assert walk(call) == [
        ("QUEUED", queue_ms, None),
        ("RINGING", 300, None),
        ("ANSWERED", 300, None),
        ("ON_HOLD", 400, None),
        ("ANSWERED", 300, None),
        ("COMPLETED", None, "completed"),
    ]


@pytest.mark.parametrize("outcome", [Outcome.NO_ANSWER, Outcome.BUSY, Outcome.FAILED])
def test_a_scripted_unanswered_call_keeps_the_seed_statuses_and_ends_with_its_outcome(
    outcome: Outcome,
) -> None:
    call = scripted(Status.QUEUED, Scenario(outcome=outcome, ring_ms=20))

    course = walk(call)

    assert [status for status, _, _ in course] == ["QUEUED", "RINGING", "UNANSWERED", "COMPLETED"]
    assert course[1][1] == 20
    assert course[-1][2] == outcome


def test_a_scripted_hold_after_a_clients_own_hold_is_not_made_again() -> None:
    call = scripted(
        Status.ANSWERED,
        Scenario(outcome=Outcome.COMPLETED, talk_ms=1_000, hold_ms=400),
        held_at=CREATED_AT,
    )

    step = next_step(call, settings(), random.Random(1))

    assert (step.target, step.event) == (Status.COMPLETED, Event.CALL_ENDED)


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(outcome=Outcome.COMPLETED, ring_ms=300, talk_ms=1_000, hold_ms=400),
        Scenario(outcome=Outcome.COMPLETED, ring_ms=300, talk_ms=1_000),
        Scenario(outcome=Outcome.BUSY, ring_ms=20),
    ],
    ids=["with-a-hold", "answered", "busy"],
)
def test_a_scripted_calls_rest_after_each_timer_is_what_its_plan_leaves(
    scenario: Scenario,
) -> None:
    """What Retry-After counts on at the concurrency limit: exact for a scripted call."""
    config, rng = settings(), random.Random(0)
    call = scripted(Status.QUEUED, scenario)
    course = walk(call)
    states = []
    while True:
        states.append(call)
        step = next_step(call, config, rng)
        if step is None:
            break
        held_at = CREATED_AT if step.target is Status.ON_HOLD else call["held_at"]
        call = call | {"status": step.target.value, "held_at": held_at}

    for i, state in enumerate(states[:-1]):
        left = sum(rest for _, rest, _ in course[i + 1 :] if rest is not None)
        assert rest_after_timer_ms(state, config) == left, state["status"]


def test_an_unscripted_calls_rest_after_a_timer_is_the_shortest_the_settings_allow() -> None:
    config = settings(time_scale=0.5)
    shortest_end = min(config.talk_delay_min_ms, config.unanswered_delay_min_ms) // 2

    assert rest_after_timer_ms(unscripted(Status.QUEUED), config) == (
        config.answer_delay_min_ms // 2 + shortest_end
    )
    assert rest_after_timer_ms(unscripted(Status.RINGING), config) == shortest_end
    assert rest_after_timer_ms(unscripted(Status.ANSWERED), config) == 0


def test_upkeep_waits_a_scripted_rest_out_before_resuming_a_call() -> None:
    call = scripted(Status.RINGING, Scenario(ring_ms=3_000_000))

    assert longest_rest_ms(call, settings()) == 3_000_000
    assert longest_rest_ms(unscripted(Status.RINGING), settings(time_scale=0.01)) == 50


# Where an advance can go.


@pytest.mark.parametrize(
    ("current", "to", "expected"),
    [
        (Status.QUEUED, Status.RINGING, True),
        (Status.QUEUED, Status.ANSWERED, True),
        (Status.QUEUED, Status.UNANSWERED, True),
        (Status.QUEUED, Status.ON_HOLD, False),
        (Status.QUEUED, Status.QUEUED, False),
        (Status.RINGING, Status.RINGING, False),
        (Status.ANSWERED, Status.COMPLETED, True),
        (Status.ANSWERED, Status.UNANSWERED, False),
        (Status.UNANSWERED, Status.COMPLETED, True),
        (Status.COMPLETED, Status.COMPLETED, False),
    ],
)
def test_an_unscripted_call_can_be_advanced_to_a_state_still_ahead(
    current: Status, to: Status, expected: bool
) -> None:
    assert reachable(unscripted(current), to) is expected


def test_a_scripted_call_can_be_advanced_only_along_its_plan() -> None:
    no_answer = scripted(Status.RINGING, Scenario(outcome=Outcome.NO_ANSWER))
    held = scripted(Status.QUEUED, Scenario(outcome=Outcome.COMPLETED, talk_ms=10, hold_ms=5))

    assert not reachable(no_answer, Status.ANSWERED)
    assert reachable(no_answer, Status.UNANSWERED)
    assert reachable(held, Status.ON_HOLD)


def test_toward_settles_an_unscripted_calls_open_choice() -> None:
    config = settings(answer_probability=0)

    step = next_step(unscripted(Status.RINGING), config, random.Random(1), Status.ANSWERED)

    assert step.target is Status.ANSWERED


def test_toward_does_not_change_a_scripted_outcome() -> None:
    call = scripted(Status.RINGING, Scenario(outcome=Outcome.BUSY))

    step = next_step(call, settings(), random.Random(1), Status.ANSWERED)

    assert step.target is Status.UNANSWERED


def test_only_a_scripted_hold_is_left_on_a_timer() -> None:
    held = scripted(Status.ON_HOLD, Scenario(outcome=Outcome.COMPLETED, talk_ms=10, hold_ms=5))

    assert has_timer(held)
    assert not has_timer(unscripted(Status.ON_HOLD))
    assert not has_timer(unscripted(Status.COMPLETED))
    assert has_timer(unscripted(Status.UNANSWERED))
