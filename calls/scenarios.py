"""A simulated call's course: its scenario (a scripted outcome and timings) made into a plan when
the call is created, the state its next timer moves it to, how long it rests in each state, and
how it ends (`end_reason`).

A call without a scenario takes its chances as it goes, as it always has (70% of rung calls
answered, delays drawn from the settings). A call with one has every choice made at creation,
from its `seed` when it has one, so the same scenario and seed give the same call run after run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from core.lifecycle import Event, Status, event_between, longest_delay_ms, timer_delay_ms
from core.settings import Settings


class Outcome(StrEnum):
    """How a simulated call ends: its `end_reason` on COMPLETED."""

    COMPLETED = "completed"  # answered, then hung up
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


# The end reasons of the platform's own ends besides the outcomes: a hang-up before an answer
# (`POST /calls/{id}/hangup`) and an ingested call that went idle (upkeep).
CANCELED = "canceled"
# A scripted timing's range, in ms (a simulated call holds its key's limit slot all its life).
MAX_SCENARIO_MS = 3_600_000
MAX_FAIL_UPLOAD_ATTEMPTS = 100
# The largest integer every JSON client reads exactly.
MAX_SEED = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Scenario:
    """What a client scripted (`POST /calls` `scenario`); None where it left the choice open."""

    outcome: Outcome | None = None
    ring_ms: int | None = None
    talk_ms: int | None = None
    hold_ms: int | None = None
    fail_upload_attempts: int = 0
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A scenario with every choice made: the call's whole course, in ms of real time."""

    outcome: Outcome
    # QUEUED until RINGING; RINGING until answered or not.
    queue_ms: int
    ring_ms: int
    # ANSWERED until COMPLETED, the hold included (answered calls only).
    talk_ms: int | None
    # The hold (0: none), and how long the call talks before it.
    hold_ms: int
    hold_after_ms: int
    # UNANSWERED until COMPLETED (unanswered calls only).
    unanswered_ms: int | None
    fail_upload_attempts: int
    seed: int | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Plan:
        return cls(**(dict(stored) | {"outcome": Outcome(stored["outcome"])}))


@dataclass(frozen=True, slots=True)
class Step:
    """A timed move: where the call goes, by which event, and on COMPLETED why it ended."""

    target: Status
    event: Event
    end_reason: str | None = None


def make_plan(scenario: Scenario, settings: Settings, rng: random.Random | None = None) -> Plan:
    """Make every choice `scenario` left open: from `seed` when given (so a seed always gives the
    same plan), else from `rng`. Every value is drawn, in one order, whether or not the scenario
    fixes it, so fixing one timing does not change the others a seed gives."""
    if scenario.seed is not None:
        rng = random.Random(scenario.seed)
    rng = rng or random.Random()
    queue_ms = timer_delay_ms(Status.QUEUED, settings, rng)
    drawn_outcome = draw_outcome(settings, rng)
    ring_ms = timer_delay_ms(Status.RINGING, settings, rng)
    talk_ms = timer_delay_ms(Status.ANSWERED, settings, rng)
    unanswered_ms = timer_delay_ms(Status.UNANSWERED, settings, rng)
    assert None not in (queue_ms, ring_ms, talk_ms, unanswered_ms), "timed states"

    outcome = scenario.outcome or drawn_outcome
    answered = outcome is Outcome.COMPLETED
    hold_ms = (scenario.hold_ms or 0) if answered else 0
    if answered:
        # A drawn talk is the talk around the hold; a scripted one includes it.
        talk_ms = scenario.talk_ms if scenario.talk_ms is not None else talk_ms + hold_ms
    return Plan(
        outcome=outcome,
        queue_ms=queue_ms,
        ring_ms=scenario.ring_ms if scenario.ring_ms is not None else ring_ms,
        talk_ms=talk_ms if answered else None,
        hold_ms=hold_ms,
        hold_after_ms=(talk_ms - hold_ms) // 2 if answered else 0,
        unanswered_ms=None if answered else unanswered_ms,
        fail_upload_attempts=scenario.fail_upload_attempts,
        seed=scenario.seed,
    )


def draw_outcome(settings: Settings, rng: random.Random) -> Outcome:
    """An unscripted outcome: ANSWER_PROBABILITY completed, BUSY_PROBABILITY busy,
    FAILED_PROBABILITY failed, the rest no_answer."""
    draw = rng.random()
    for outcome, share in (
        (Outcome.COMPLETED, settings.answer_probability),
        (Outcome.BUSY, settings.busy_probability),
        (Outcome.FAILED, settings.failed_probability),
    ):
        if draw < share:
            return outcome
        draw -= share
    return Outcome.NO_ANSWER


def _draw_unanswered(settings: Settings, rng: random.Random) -> Outcome:
    """Why an unscripted call that was not answered ended: busy and failed in their shares of
    all calls (so the shares hold whatever the answer probability), the rest no_answer."""
    unanswered = 1.0 - settings.answer_probability
    if unanswered <= 0:
        return Outcome.NO_ANSWER
    draw = rng.random() * unanswered
    if draw < settings.busy_probability:
        return Outcome.BUSY
    if draw < settings.busy_probability + settings.failed_probability:
        return Outcome.FAILED
    return Outcome.NO_ANSWER


def plan_of(call: Mapping[str, Any]) -> Plan | None:
    """The plan of a call created with a scenario, else None."""
    stored = call.get("scenario")
    return Plan.from_json(stored) if stored else None


def next_step(
    call: Mapping[str, Any],
    settings: Settings,
    rng: random.Random,
    toward: Status | None = None,
) -> Step | None:
    """Where a simulated call's timer moves it from the state it is in; None where it waits
    for an event (an unscripted ON_HOLD) or has ended. `toward` (an advance's `to`) settles an
    unscripted call's open choice, answered or not, the way it asks."""
    plan = plan_of(call)
    status = Status(call["status"])
    match status:
        case Status.QUEUED:
            return _step(status, Status.RINGING)
        case Status.RINGING:
            if plan is not None:
                answered = plan.outcome is Outcome.COMPLETED
            elif toward in (Status.ANSWERED, Status.UNANSWERED):
                answered = toward is Status.ANSWERED
            else:
                answered = rng.random() < settings.answer_probability
            return _step(status, Status.ANSWERED if answered else Status.UNANSWERED)
        case Status.ANSWERED:
            if plan is not None and plan.hold_ms and call["held_at"] is None:
                return _step(status, Status.ON_HOLD)
            return _step(status, Status.COMPLETED, Outcome.COMPLETED)
        case Status.ON_HOLD:
            held = plan is not None and plan.hold_ms > 0
            return _step(status, Status.ANSWERED) if held else None
        case Status.UNANSWERED:
            if plan is not None and plan.outcome is not Outcome.COMPLETED:
                reason = plan.outcome
            else:
                reason = _draw_unanswered(settings, rng)
            return _step(status, Status.COMPLETED, reason)
    return None


def _step(current: Status, target: Status, end_reason: str | None = None) -> Step:
    event = event_between(current, target)
    assert event is not None, f"{current} -> {target} is a move of the state machine"
    return Step(target, event, end_reason)


def rest_ms(call: Mapping[str, Any], settings: Settings, rng: random.Random) -> int | None:
    """How long a simulated call rests in the state it has just entered before its timer fires;
    None where it waits for an event or has ended."""
    planned = _planned_rest_ms(call)
    if planned is not _UNPLANNED:
        return planned
    return timer_delay_ms(Status(call["status"]), settings, rng)


def longest_rest_ms(call: Mapping[str, Any], settings: Settings) -> int:
    """The longest a simulated call may rest in its state before its timer fires (upkeep
    resumes one resting longer)."""
    planned = _planned_rest_ms(call)
    if planned is not _UNPLANNED:
        return planned or 0
    return longest_delay_ms(Status(call["status"]), settings)


def rest_after_timer_ms(call: Mapping[str, Any], settings: Settings) -> int:
    """The least time from the firing of the timer a simulated call waits on in its state until
    it completes: what its plan leaves of its course, else the shortest delays of the states
    after (answered or not). A key at its concurrency limit is told to retry then."""
    plan = plan_of(call)
    status = Status(call["status"])
    if plan is None:
        last = settings.scaled_ms(min(settings.talk_delay_min_ms, settings.unanswered_delay_min_ms))
        match status:
            case Status.QUEUED:
                return settings.scaled_ms(settings.answer_delay_min_ms) + last
            case Status.RINGING:
                return last
        return 0
    last_rest = plan.talk_ms if plan.talk_ms is not None else plan.unanswered_ms or 0
    match status:
        case Status.QUEUED:
            return plan.ring_ms + last_rest
        case Status.RINGING:
            return last_rest
        case Status.ANSWERED if plan.hold_ms and call["held_at"] is None:
            return last_rest - plan.hold_after_ms  # the hold, then the rest of the talk
        case Status.ON_HOLD if plan.hold_ms:
            return max(0, last_rest - plan.hold_after_ms - plan.hold_ms)
    return 0


_UNPLANNED: Any = object()


def _planned_rest_ms(call: Mapping[str, Any]) -> int | None:
    """The rest its plan gives the call's state, or _UNPLANNED when the plan says nothing of it
    (no plan, or a state a client's event took it to off its plan)."""
    plan = plan_of(call)
    if plan is None:
        return _UNPLANNED
    match Status(call["status"]):
        case Status.QUEUED:
            return plan.queue_ms
        case Status.RINGING:
            return plan.ring_ms
        case Status.ANSWERED if plan.talk_ms is not None:
            if not plan.hold_ms:
                return plan.talk_ms
            if call["held_at"] is None:
                return plan.hold_after_ms
            return max(0, plan.talk_ms - plan.hold_after_ms - plan.hold_ms)
        case Status.ON_HOLD:
            return plan.hold_ms or None
        case Status.UNANSWERED if plan.unanswered_ms is not None:
            return plan.unanswered_ms
        case Status.COMPLETED:
            return None
    return _UNPLANNED


def has_timer(call: Mapping[str, Any]) -> bool:
    """Whether a simulated call's state is left on a timer (not COMPLETED, nor ON_HOLD
    without a scripted hold: that waits for the client's call_resumed)."""
    match Status(call["status"]):
        case Status.COMPLETED:
            return False
        case Status.ON_HOLD:
            plan = plan_of(call)
            return plan is not None and plan.hold_ms > 0
    return True


def reachable(call: Mapping[str, Any], to: Status) -> bool:
    """Whether advancing a simulated call can take it to `to`: a state still ahead on its
    course (an unscripted call's open choice counts both ways; it holds only on a client's
    event, so ON_HOLD is never ahead of it)."""
    plan = plan_of(call)
    status = Status(call["status"])
    ahead: list[Status] = []
    if status is Status.QUEUED:
        ahead.append(Status.RINGING)
    if status in (Status.QUEUED, Status.RINGING):
        if plan is None:
            ahead += [Status.ANSWERED, Status.UNANSWERED]
        else:
            answered = plan.outcome is Outcome.COMPLETED
            ahead.append(Status.ANSWERED if answered else Status.UNANSWERED)
            if answered and plan.hold_ms:
                ahead.append(Status.ON_HOLD)
    elif status is Status.ANSWERED and plan is not None and plan.hold_ms:
        if call["held_at"] is None:
            ahead.append(Status.ON_HOLD)
    elif status is Status.ON_HOLD and plan is not None and plan.hold_ms:
        ahead.append(Status.ANSWERED)
    if status is not Status.COMPLETED:
        ahead.append(Status.COMPLETED)
    return to in ahead
