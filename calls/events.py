"""Posted lifecycle events: create ingested calls, move any call, dedupe by event_id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from calls.batches import Batcher
from calls.stores import Stores
from calls.transitions import Reported, Row, Transitions, event_data
from core import logs
from core.call_ids import CallRef, named_call_uuid
from core.errors import Conflict, NotFound, Unprocessable
from core.lifecycle import Event
from core.limiter import CallKind, EventRate, Limiter
from db import calls as db_calls
from db.calls import EventRead, NewCall, Transition
from db.keys import ApiKey

# Namespace of call ids made from (key, event_id) when a call_initiated names no call_id, so
# that a repeat of the same event finds the same call.
_CALL_IDS = uuid.UUID("6f1c1d0e-8a9b-4c59-9f3e-0b6a4b7c2d11")
# An event whose call moves on between read and write is read and tried again, this many times.
RACES_BEFORE_GIVING_UP = 20


@dataclass(frozen=True, slots=True)
class PostedEvent:
    """One event as the sender posted it, validated."""

    event: Event
    # The call's id as the sender knows it (core/call_ids.py).
    call_id: str | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None
    # call_initiated
    call_type: str = "voice"
    queue_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # later events
    agent_id: str | None = None
    end_reason: str | None = None
    reported: Reported = field(default_factory=Reported)


def same_event(
    earlier: Mapping[str, Any], call: Mapping[str, Any] | None, posted: PostedEvent
) -> Mapping[str, Any]:
    """`earlier`, the event stored under the posted event's id, if the posted one is the same
    event sent again; Unprocessable naming the first field that differs otherwise (an id reused
    for another event is the sender's mistake, not a repeat). `call` is the call a repeated
    call_initiated made; an `occurred_at` the repeat leaves out is not compared."""
    given: list[tuple[str, Any, Any]] = [("event", earlier["event"], posted.event)]
    if posted.occurred_at is not None:
        given.append(("occurred_at", earlier["occurred_at"], posted.occurred_at))
    if posted.event is Event.CALL_INITIATED:
        assert call is not None, "a call_initiated made the call"
        given += [
            ("type", call["call_type"], posted.call_type),
            ("queue_id", call["queue_id"], posted.queue_id),
            ("from", call["from_number"], posted.from_number),
            ("to", call["to_number"], posted.to_number),
            ("metadata", call["metadata"], posted.metadata),
        ]
    else:
        stored = dict(earlier["data"])
        reported = event_data(posted.reported, posted.agent_id, posted.end_reason)
        given += [(name, stored.get(name), reported.get(name)) for name in {*stored, *reported}]
    for name, before, now in sorted(given, key=lambda field: _FIELD_ORDER.get(field[0], 99)):
        if before != now:
            raise Unprocessable(
                f"event_id {posted.event_id!r} was already used for a different event:"
                f" its {name} differs"
            )
    return earlier


_FIELD_ORDER = {name: i for i, name in enumerate(("event", "occurred_at", "type", "queue_id"))}


@dataclass(frozen=True, slots=True)
class Ingested:
    event: Mapping[str, Any]
    # False when event_id matched an earlier event: nothing was written or published.
    created: bool


class EventService:
    def __init__(
        self,
        stores: Stores,
        transitions: Transitions,
        inserts: Batcher[NewCall, Row | None],
        writes: Batcher[Transition, Row | None],
        limiter: Limiter,
    ) -> None:
        self._stores = stores
        self._limiter = limiter
        self._transitions = transitions
        self._inserts = inserts
        self._writes = writes
        # Concurrent events' calls are read together too.
        self._reads: Batcher[EventRead, tuple[Row | None, int | None]] = Batcher(self._read)
        self._rate = EventRate(stores.mux)

    async def _read(self, reads: list[EventRead]) -> list[tuple[Row | None, int | None]]:
        return await db_calls.fetch_calls_for_events(self._stores.lookups, reads)

    async def ingest(self, key: ApiKey, posted: PostedEvent) -> Ingested:
        """Apply one posted event within the key's events-per-second allowance."""
        await self._rate.take(key.id, self._stores.settings.max_events_per_second_per_key)
        occurred_at = posted.occurred_at or datetime.now(UTC)
        if posted.event is Event.CALL_INITIATED:
            return await self._initiate(key, posted, occurred_at)

        call_id = posted.call_id
        assert call_id is not None, "the payload model requires call_id after call_initiated"
        pool = self._stores.pool
        # Optimistic: read the call (and any earlier copy of this event), decide, and write only
        # if the call is still at the seq read. A copy or a timer that got there first makes the
        # write a no-op, and the next read sees what it did. Two round trips, no transaction,
        # each shared with other requests' events.
        read = EventRead(CallRef(key.id, call_id), posted.event_id)
        for _ in range(RACES_BEFORE_GIVING_UP):
            call, earlier_seq = await self._reads.submit(read)
            if call is None:
                raise NotFound("Call not found")
            if earlier_seq is not None:
                assert posted.event_id is not None
                earlier = await db_calls.fetch_event_by_event_id(
                    pool, call["call_id"], posted.event_id
                )
                assert earlier is not None, "an event goes only with its call"
                return Ingested(same_event(earlier, None, posted), created=False)
            decided = self._transitions.decide_event(
                call,
                posted.event,
                occurred_at=occurred_at,
                reported=posted.reported,
                event_id=posted.event_id,
                agent_id=posted.agent_id,
                end_reason=posted.end_reason,
                dated_by_sender=posted.occurred_at is not None,
            )
            # Written with other requests' events; None: the call moved on, read it again.
            row = await self._writes.submit(decided)
            if row is not None:
                return Ingested(row, created=True)
        raise Conflict(
            f"Call {call_id} changed {RACES_BEFORE_GIVING_UP} times while this event was"
            " applied; retry it"
        )

    async def _initiate(self, key: ApiKey, posted: PostedEvent, occurred_at: datetime) -> Ingested:
        ref = posted.call_id
        if ref is not None:
            call_id = named_call_uuid(key.id, ref)
        elif posted.event_id:
            call_id = str(uuid.uuid5(_CALL_IDS, f"{key.id}:{posted.event_id}"))
        else:
            call_id = str(uuid.uuid4())
        settings = self._stores.settings
        taken = await self._limiter.acquire_ingested(
            key.id,
            call_id,
            key.max_active_ingested_calls or settings.max_active_ingested_calls_per_key,
        )
        # Committed and made visible together with other requests' new calls.
        inserted = self._inserts.submit(
            NewCall(
                call_id=call_id,
                key_id=key.id,
                kind="ingested",
                from_number=posted.from_number,
                to_number=posted.to_number,
                metadata=posted.metadata,
                call_type=posted.call_type,
                queue_id=posted.queue_id,
                started_at=occurred_at,
                event_id=posted.event_id,
                data={"type": posted.call_type, "queue_id": posted.queue_id},
                request_id=logs.request_id.get(),
                ref=ref,
            )
        )
        if taken:
            row = await self._limiter.keep_if_created(inserted, key.id, call_id, CallKind.INGESTED)
        else:
            row = await inserted
        if row is None:
            # The key has a call by that name already: a repeat of this event, or a conflict.
            named = CallRef(key.id, ref or call_id)
            if posted.event_id is not None:
                pool = self._stores.pool
                earlier = await db_calls.fetch_named_event(pool, named, posted.event_id)
                if earlier is not None:
                    call = await db_calls.fetch_call(pool, named)
                    return Ingested(same_event(earlier, call, posted), created=False)
            raise Conflict(f"Call {named.ref} already exists")
        return Ingested(row, created=True)

    async def history(
        self, call: CallRef, after_seq: int = 0, limit: int | None = None
    ) -> list[Mapping[str, Any]]:
        """The call's events after `after_seq` in order, at most `limit` of them; NotFound if
        the key has no such call."""
        found, events = await db_calls.fetch_history(self._stores.pool, call, after_seq, limit)
        if not found:
            raise NotFound("Call not found")
        return events
