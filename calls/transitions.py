"""The one place a call changes state: decide (state machine and business rules), persist,
then make it live, timed and published."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from calls.live import LiveState
from calls.publisher import Outgoing, Publisher
from calls.scenarios import next_step, rest_ms
from calls.stores import Stores
from calls.timers import Timers
from calls.views import message_of
from core import keys, logs
from core.clock import iso, now_ms
from core.errors import Conflict, InvalidTransition, Unprocessable
from core.lifecycle import TARGET_OF, Event, Status, next_status
from core.limiter import CallKind, slot_set
from core.redis_mux import Batch
from core.rules import Durations, Thresholds, raised_flags
from db import calls as db_calls
from db.calls import Transition
from db.stats import Measures

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reported:
    """What an event's sender measured, in seconds (None where not given)."""

    routing_time: float | None = None
    wait_time: float | None = None
    hold_duration: float | None = None
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def event_data(
    reported: Reported, agent_id: str | None = None, end_reason: str | None = None
) -> dict[str, Any]:
    """What an event's history row keeps of what its sender said (`data`): the fields given."""
    return {
        name: value
        for name, value in (
            ("agent_id", agent_id),
            ("routing_time", reported.routing_time),
            ("wait_time", reported.wait_time),
            ("hold_duration", reported.hold_duration),
            ("end_reason", end_reason),
            ("duration", reported.duration),
        )
        if value is not None
    } | reported.extra


class Transitions:
    def __init__(self, stores: Stores, rng: random.Random | None = None) -> None:
        self._stores = stores
        self._live = LiveState(stores.mux)
        self.publisher = Publisher(stores)
        settings = stores.settings
        self._thresholds = Thresholds(
            settings.wait_sla_s, settings.hold_limit_s, settings.short_call_s, settings.reroute_s
        )
        self._measures = Measures.of(settings)
        self._rng = rng or random.Random()
        # Where the status callbacks of committed transitions go: when set (a worker process,
        # which sends callbacks itself), they start at once; else their calls' timers are set.
        self.send_callbacks: Callable[[list[str]], Awaitable[None]] | None = None

    async def fire(self, timers: Sequence[keys.AdvanceTimer]) -> list[Row]:
        """Move on the calls whose timers fell due, each only if it is still in the state its
        timer was set in (the seq and the state both); the next state is decided here.

        A late timer, a duplicate job or a racing event finds the call moved on and is a no-op.
        """
        unique = list({t.call_id: t for t in timers}.values())
        if not unique:
            return []
        # No lock and no transaction: read, decide, then one statement writes each move only
        # if its call is still at the seq read (two round trips, where BEGIN, SELECT ... FOR
        # UPDATE, write and COMMIT took four). A call an event moved in between is left alone,
        # as its timer is stale by then.
        now = datetime.now(UTC)
        current = await db_calls.fetch_calls(self._stores.lookups, [t.call_id for t in unique])
        decided = [
            transition
            for t in unique
            if (row := current.get(t.call_id)) is not None
            and (row["seq"], row["status"]) == (t.seq, t.status)
            and (transition := self.decide_timed(row, occurred_at=now)) is not None
        ]
        return await self.write(decided)

    def decide_timed(
        self, call: Row, *, occurred_at: datetime, toward: Status | None = None
    ) -> Transition | None:
        """The move a simulated call's timer makes from the state it is in (calls/scenarios.py),
        or None where it waits for an event (ON_HOLD) or has ended. `toward`: see next_step."""
        step = next_step(call, self._stores.settings, self._rng, toward)
        if step is None:
            return None
        return self.decide(call, step.event, occurred_at=occurred_at, end_reason=step.end_reason)

    async def write(self, decided: list[Transition]) -> list[Row]:
        """Write transitions in one statement (compare-and-set) and make them visible; returns
        the calls moved (one that moved on since it was read is missing)."""
        if not decided:
            return []
        decided = sorted(decided, key=lambda t: t.call_id)  # as write_transitions says
        pool = self._stores.lookups
        try:
            rows = await db_calls.write_transitions(pool, decided, self._measures)
        except asyncpg.DeadlockDetectedError:
            # Two multi-row writes met in opposite orders (duplicate timers in two batches);
            # PostgreSQL undid this one. Its moves are still due: write them again.
            log.warning("deadlock writing %d moves; writing them again", len(decided))
            rows = await db_calls.write_transitions(pool, decided, self._measures)
        await self.after_commit(rows)
        return rows

    def decide_event(
        self,
        call: Row,
        event: Event,
        *,
        occurred_at: datetime,
        reported: Reported,
        event_id: str | None,
        agent_id: str | None = None,
        end_reason: str | None = None,
        dated_by_sender: bool = False,
    ) -> Row | None:
        """The transition a posted event makes on `call` as read, to write with
        `write_decided`; raises InvalidTransition, naming both states, when the state machine
        does not allow it, Conflict when the call's history is full, and Unprocessable when
        the sender dated it before the call's previous event (a time it did not give is the
        platform's, never before that event)."""
        last = call["last_event_at"]
        if last is not None and occurred_at < last:
            if dated_by_sender:
                raise Unprocessable(
                    f"occurred_at {iso(occurred_at)} is before the call's previous event, at"
                    f" {iso(last)}: a call's events come in time order"
                )
            occurred_at = last
        current = Status(call["status"])
        target = next_status(current, event)
        if target is None:
            raise InvalidTransition(current, TARGET_OF[event], event)
        most = self._stores.settings.max_events_per_call
        room = most - call["seq"]
        # The last place is kept for call_ended, so a call can always be ended.
        if room < 1 or (room == 1 and event is not Event.CALL_ENDED):
            raise Conflict(
                f"Call {call['ref']} has reached the limit of {most} events per call"
                " (MAX_EVENTS_PER_CALL); only call_ended may follow"
            )
        return self.decide(
            call,
            event,
            occurred_at=occurred_at,
            reported=reported,
            event_id=event_id,
            agent_id=agent_id,
            end_reason=end_reason,
        )

    async def insert(self, new: list[db_calls.NewCall]) -> list[Row | None]:
        """Insert new calls in one statement and make them visible; None where the call id or
        the Idempotency-Key was taken."""
        rows = await db_calls.insert_calls(self._stores.lookups, new)
        await self._make_visible([row for row in rows if row is not None])
        return rows

    async def write_decided(self, decided: list[Transition]) -> list[Row | None]:
        """Write transitions decided from posted events in one statement (compare-and-set) and
        make them visible; None where the call moved on since it was read (read it again). Of
        two for one call, only the first is tried: the second would meet the compare-and-set."""
        firsts: dict[str, Transition] = {}
        for transition in decided:
            firsts.setdefault(transition.call_id, transition)
        unique = sorted(firsts.values(), key=lambda t: t.call_id)  # as write_transitions says
        written = await db_calls.write_transitions(self._stores.lookups, unique, self._measures)
        await self._make_visible(written)
        moved = {row["call_id"]: row for row in written}
        return [moved.get(t.call_id) if firsts[t.call_id] is t else None for t in decided]

    async def _make_visible(self, rows: Sequence[Row]) -> None:
        try:
            await self.after_commit(rows)
        except Exception:
            # Committed all the same: upkeep re-arms their timers, the outbox republishes.
            log.exception("making %d committed changes visible failed", len(rows))

    def decide(
        self,
        call: Row,
        event: Event,
        *,
        occurred_at: datetime,
        reported: Reported | None = None,
        event_id: str | None = None,
        agent_id: str | None = None,
        end_reason: str | None = None,
    ) -> Transition:
        """The transition `event` makes on `call`, with the flags the business rules raise."""
        reported = reported or Reported()
        target = next_status(Status(call["status"]), event)
        assert target is not None, f"{event} from {call['status']} was checked by the caller"
        durations = self.durations(call, event, occurred_at, reported)
        raised = raised_flags(event, durations, self._thresholds)
        flags = sorted(set(call["flags"]) | raised)
        data = event_data(reported, agent_id, end_reason)
        return Transition(
            call_id=call["call_id"],
            from_seq=call["seq"],
            from_status=call["status"],
            to_status=target,
            event=event,
            flags=flags,
            raised_flags=sorted(raised),
            occurred_at=occurred_at,
            data=data,
            event_id=event_id,
            agent_id=agent_id,
            end_reason=end_reason,
            new_flags=sorted(raised - set(call["flags"])),
        )

    def durations(self, call: Row, event: Event, at: datetime, reported: Reported) -> Durations:
        """What the rules measure: the sender's own figures where given, else the call's
        recorded timestamps. A simulated call's time is divided by TIME_SCALE, so the rules
        judge it in the time of the world it simulates; but a call with a scenario lives in
        real time (its scripted times are real ms), and is judged so."""
        simulated = call["kind"] == "simulated" and call.get("scenario") is None
        scale = self._stores.settings.time_scale if simulated else 1.0

        def measured(given: float | None, since: str) -> float | None:
            if given is not None:
                return given
            start: datetime | None = call[since]
            if start is None:
                return None
            # Rounded to the microsecond the timestamps have, so 0.45 s at scale 0.015 is
            # exactly 30 s rather than 30.000000000000004 (which a "> 30" rule would flag).
            return round(max(0.0, (at - start).total_seconds()) / scale, 6)

        status = Status(call["status"])
        match event:
            case Event.CALL_ROUTED:
                return Durations(routing_s=measured(reported.routing_time, "started_at"))
            case Event.CALL_ANSWERED:
                return Durations(wait_s=measured(reported.wait_time, "started_at"))
            case Event.CALL_HOLD:
                # How long the hold will last is known only if the sender says so.
                return Durations(hold_s=reported.hold_duration)
            case Event.CALL_RESUMED:
                return Durations(hold_s=measured(reported.hold_duration, "held_at"))
            case Event.CALL_ENDED:
                answered = status in (Status.ANSWERED, Status.ON_HOLD)
                return Durations(
                    hold_s=measured(None, "held_at") if status is Status.ON_HOLD else None,
                    talk_s=measured(reported.duration, "answered_at") if answered else None,
                )
        return Durations()

    async def after_commit(self, rows: Sequence[Row]) -> None:
        """Make committed transitions visible: live hash, next timer, status callback, limit
        lease, upload, and publish them.

        PostgreSQL has them already, so a Redis failure here loses nothing: upkeep re-arms
        timers and uploads from PostgreSQL, and the outbox republishes.
        """
        if not rows:
            return
        for row in rows:
            log.info(
                "call %s: %s -> %s",
                row["call_id"],
                row["previous_status"] or "(new)",
                row["status"],
                extra={
                    "call_id": row["call_id"],
                    "seq": row["seq"],
                    "event": row["event"],
                    # The request at work now (an event), else the one that made the call.
                    "request_id": logs.request_id.get() or row["request_id"],
                },
            )
        outgoing = [Outgoing(row["key_id"], message_of(row), row["outbox_id"]) for row in rows]

        async def update_redis(pipe: Batch) -> None:
            await self._queue_redis_updates(pipe, rows)

        # One round trip for the updates and the publish; if it fails the publish is retried
        # alone, and what the updates missed upkeep repairs from PostgreSQL.
        await self.publisher.publish(outgoing, along=update_redis)
        if self.send_callbacks is not None:
            called_back = [row["call_id"] for row in rows if row.get("callback_queued")]
            if called_back:
                await self.send_callbacks(called_back)

    async def _queue_redis_updates(self, pipe: Batch, rows: Sequence[Row]) -> None:
        """Queue each moved call's live view, next timer, callback timer, lease release and
        upload on `pipe`."""
        settings = self._stores.settings
        now = now_ms()
        for row in rows:
            call_id, status = row["call_id"], Status(row["status"])
            self._live.write(pipe, row)
            if row["queue_id"] is not None:
                # Its queue's figures changed: the scheduler publishes them (scheduler/stats.py).
                pipe.sadd(keys.STATS_CHANGED, keys.changed_queue(row["key_id"], row["queue_id"]))
            previous = row["previous_status"]
            if row["kind"] == "simulated" and previous is not None:
                # The timer of the state left behind is stale now; tidy it away.
                Timers.cancel(pipe, keys.advance_timer(call_id, row["seq"] - 1, previous))
            if row.get("callback_queued") and self.send_callbacks is None:
                # A timer already set is for the call's first open delivery (or its retry):
                # this one waits behind it.
                Timers.schedule(pipe, keys.callback_timer(call_id), now, unless_set=True)
            if status is Status.COMPLETED:
                pipe.zrem(slot_set(CallKind(row["kind"]), row["key_id"]), call_id)
                Timers.schedule(pipe, keys.upload_timer(call_id), now)
            elif row["kind"] == "simulated":
                delay = rest_ms(row, settings, self._rng)
                if delay is not None:
                    member = keys.advance_timer(call_id, row["seq"], status)
                    Timers.schedule(pipe, member, now + delay)
