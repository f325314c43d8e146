"""Calls and their history: create, read, lock and move calls in batches with compare-and-set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.call_ids import CallRef, named_call_uuid
from core.rules import Flag
from db import stats
from db.counters import STORED_CALLS
from db.pool import Executor

# Every column a view of a call needs; the live state in Redis is built from the same row.
# `call_id` is the platform's id, `ref` the id the call's key knows it by (core/call_ids.py).
CALL_COLUMNS = """
    id::text AS call_id, coalesce(ref, id::text) AS ref, api_key_id::text AS key_id, kind,
    status, seq,
    from_number, to_number, metadata, flags, recording_url, call_type, queue_id, agent_id,
    end_reason, created_at, updated_at, status_changed_at, started_at, routed_at, answered_at,
    held_at, ended_at, request_id, last_event_at, scenario, status_callback,
    status_callback_events, twilio
"""


@dataclass(frozen=True, slots=True)
class Transition:
    """One decided move of a call, ready to write: the rules have run, the flags are known."""

    call_id: str
    from_seq: int
    from_status: str
    to_status: str
    event: str
    # The call's flags after this transition, and the ones it raised.
    flags: list[str]
    raised_flags: list[str]
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    agent_id: str | None = None
    end_reason: str | None = None
    # The raised flags the call did not have yet (its queue's statistics count calls per flag).
    new_flags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call to insert as QUEUED with its first event (seq 1)."""

    call_id: str
    key_id: str
    kind: str
    from_number: str | None
    to_number: str | None
    metadata: dict[str, Any]
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    call_type: str = "voice"
    queue_id: str | None = None
    # When the call began (an ingested call's occurred_at); now() when None.
    started_at: datetime | None = None
    event_id: str | None = None
    data: dict[str, Any] | None = None
    request_id: str | None = None
    # The sender's own name for the call (its call_id is then derived from it); None when the
    # platform made the id.
    ref: str | None = None
    # The plan its scenario made (calls/scenarios.py), for a call created with one.
    scenario: dict[str, Any] | None = None
    # Where its transitions are POSTed, and which statuses (None: all).
    status_callback: str | None = None
    status_callback_events: list[str] | None = None
    # What a call created through the Twilio face asked for (calls/twilio.py TwilioRequest).
    twilio: dict[str, Any] | None = None

    @property
    def namesake_id(self) -> str | None:
        """The other platform id a call of this key answering to the same name could have: the
        name itself when it is a UUID, or the id derived from the made id (see CallRef.ids)."""
        if self.ref is None:
            return named_call_uuid(self.key_id, self.call_id)
        ids = CallRef(self.key_id, self.ref).ids
        return ids[0] if len(ids) == 2 else None


# The status callback deliveries of the calls just written ({rows}, at seq {seq}): one for each
# transition of a call with a status callback (not stopped by a 410) to a status it asked for.
# A call of the Twilio face is told of each of Twilio's events once: its `answered` is the first
# ANSWERED, never a resume from hold ({resumed}: whether the row is one, RESUMED for moves).
CALLBACK_DELIVERIES = """
    INSERT INTO callback_deliveries (call_id, seq)
    SELECT id, {seq} FROM {rows}
     WHERE status_callback IS NOT NULL AND callbacks_stopped_at IS NULL
       AND (status_callback_events IS NULL OR status = ANY (status_callback_events))
       AND NOT (twilio IS NOT NULL AND {resumed})
    RETURNING call_id AS called_back_id
"""
RESUMED = "previous_status = 'ON_HOLD'"


async def insert_calls(conn: Executor, new: Sequence[NewCall]) -> list[asyncpg.Record | None]:
    """Insert calls with their first events, outbox entries and status callback deliveries,
    in one statement.

    Returns each call's row in the order given, or None where its call id, its key's
    `idempotency_key`, or its name among its key's calls is taken already (by an earlier call,
    or earlier in `new`: the first of several in one statement is the one inserted).
    """
    # Decided here rather than by the order PostgreSQL happens to insert in.
    firsts: dict[str, NewCall] = {}
    idempotency_keys: set[tuple[str, str]] = set()
    for c in new:
        if c.call_id in firsts:
            continue
        if c.idempotency_key is not None:
            if (c.key_id, c.idempotency_key) in idempotency_keys:
                continue
            idempotency_keys.add((c.key_id, c.idempotency_key))
        firsts[c.call_id] = c
    unique = list(firsts.values())
    if not unique:
        return []
    rows = await conn.fetch(
        f"""
        WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::bytea[], $9::text[], $10::text[],
                                 $11::timestamptz[], $12::text[], $13::text[], $14::text[],
                                 $15::text[], $16::uuid[], $17::text[], $18::text[],
                                 $19::text[], $20::text[])
                AS i(id, api_key_id, kind, from_number, to_number, metadata, idempotency_key,
                     request_hash, call_type, queue_id, started_at, event_id, data, request_id,
                     ref, namesake_id, scenario, status_callback, status_callback_events, twilio)
        ), created AS (
            INSERT INTO calls (id, api_key_id, kind, status, from_number, to_number, metadata,
                               idempotency_key, request_hash, call_type, queue_id, started_at,
                               last_event_at, request_id, ref, scenario, status_callback,
                               status_callback_events, twilio)
            SELECT id, api_key_id, kind, 'QUEUED', from_number, to_number, metadata::jsonb,
                   idempotency_key, request_hash, call_type, queue_id,
                   coalesce(started_at, now()), coalesce(started_at, now()), request_id, ref,
                   scenario::jsonb, status_callback, string_to_array(status_callback_events, ','),
                   twilio::jsonb
              FROM input
             WHERE NOT EXISTS (
                   SELECT 1 FROM calls c
                    WHERE c.id = input.namesake_id AND c.api_key_id = input.api_key_id
                      AND coalesce(c.ref, c.id::text) = coalesce(input.ref, input.id::text))
            ON CONFLICT DO NOTHING
            RETURNING *
        ), first_event AS (
            INSERT INTO call_events (call_id, seq, event, from_status, to_status, occurred_at,
                                     event_id, data, created_at)
            SELECT created.id, 1, 'call_initiated', NULL, created.status, created.started_at,
                   input.event_id, coalesce(input.data::jsonb, '{{}}'::jsonb), clock_timestamp()
              FROM created JOIN input ON input.id = created.id
         RETURNING call_id AS event_call_id, created_at AS received_at, event_id, data
        ), queued AS (
            INSERT INTO outbox (call_id, seq) SELECT id, 1 FROM created
         RETURNING id AS outbox_id, call_id AS outbox_call_id
        ), counted AS (
            INSERT INTO counter_deltas (api_key_id, calls_created)
            SELECT api_key_id, count(*) FROM created GROUP BY api_key_id
        ), called_back AS (
            {CALLBACK_DELIVERIES.format(rows="created", seq="1", resumed="false")}
        ), offered AS ({stats.OFFERED}
        )
        SELECT {CALL_COLUMNS}, NULL::text AS previous_status, 'call_initiated' AS event,
               started_at AS occurred_at, event_id, data, '{{}}'::text[] AS raised_flags,
               received_at, outbox_id, called_back_id IS NOT NULL AS callback_queued
          FROM created
          JOIN first_event ON event_call_id = id
          JOIN queued ON outbox_call_id = id
          LEFT JOIN called_back ON called_back_id = id
        """,
        [c.call_id for c in unique],
        [c.key_id for c in unique],
        [c.kind for c in unique],
        [c.from_number for c in unique],
        [c.to_number for c in unique],
        [orjson.dumps(c.metadata).decode() for c in unique],
        [c.idempotency_key for c in unique],
        [c.request_hash for c in unique],
        [c.call_type for c in unique],
        [c.queue_id for c in unique],
        [c.started_at for c in unique],
        [c.event_id for c in unique],
        [None if c.data is None else orjson.dumps(c.data).decode() for c in unique],
        [c.request_id for c in unique],
        [c.ref for c in unique],
        [c.namesake_id for c in unique],
        [None if c.scenario is None else orjson.dumps(c.scenario).decode() for c in unique],
        [c.status_callback for c in unique],
        [
            None if c.status_callback_events is None else ",".join(c.status_callback_events)
            for c in unique
        ],
        [None if c.twilio is None else orjson.dumps(c.twilio).decode() for c in unique],
    )
    by_id = {row["call_id"]: row for row in rows}
    return [by_id.get(c.call_id) if firsts.get(c.call_id) is c else None for c in new]


async def fetch_calls(conn: Executor, call_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """The calls among `call_ids` that exist, by id."""
    rows = await conn.fetch(
        f"SELECT {CALL_COLUMNS} FROM calls WHERE id = ANY($1::uuid[])", list(call_ids)
    )
    return {row["call_id"]: row for row in rows}


# The call a key names: $1 its candidate ids, $2 the key, $3 the name (core/call_ids.py).
NAMED_CALL = "c.id = ANY($1::uuid[]) AND c.api_key_id = $2 AND coalesce(c.ref, c.id::text) = $3"


def named_call_args(call: CallRef) -> tuple[list[str], str, str]:
    """The arguments $1 to $3 of NAMED_CALL."""
    return call.ids, call.key_id, call.ref


@dataclass(frozen=True, slots=True)
class EventRead:
    """A posted event's call to read (as its key names it) and the event's id."""

    call: CallRef
    event_id: str | None


async def fetch_calls_for_events(
    conn: Executor, reads: Sequence[EventRead]
) -> list[tuple[asyncpg.Record | None, int | None]]:
    """For each posted event, in the order given: its call if the key has one by that name, and
    the seq of its earlier copy (an event of that call with the same event id) if there is one.
    One statement, one snapshot, for many events."""
    if not reads:
        return []
    ids = [r.call.ids for r in reads]
    rows = await conn.fetch(
        f"""
        SELECT asked.n, {CALL_COLUMNS},
               (SELECT e.seq FROM call_events e
                 WHERE e.call_id = calls.id AND e.event_id = asked.asked_event_id) AS earlier_seq
          FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
               WITH ORDINALITY
               AS asked(made_id, named_id, asked_key_id, asked_ref, asked_event_id, n)
          JOIN calls ON calls.id IN (asked.made_id, asked.named_id)
                    AND calls.api_key_id = asked.asked_key_id
                    AND coalesce(calls.ref, calls.id::text) = asked.asked_ref
        """,
        [found[0] if len(found) == 2 else None for found in ids],
        [found[-1] for found in ids],
        [r.call.key_id for r in reads],
        [r.call.ref for r in reads],
        [r.event_id for r in reads],
    )
    found = {row["n"]: row for row in rows}
    return [
        (row, row["earlier_seq"]) if (row := found.get(n)) is not None else (None, None)
        for n in range(1, len(reads) + 1)
    ]


async def write_transitions(
    conn: Executor, transitions: Sequence[Transition], measures: stats.Measures
) -> list[asyncpg.Record]:
    """Write decided transitions in one statement.

    Each bumps its call's seq only if the call is still at `from_seq` (compare-and-set: a call
    moved on since it was read is left alone and missing from the result), records the stage
    timestamp, appends a call_events row, an outbox entry and the call's status callback
    delivery if it has one, adds what it changes in its queue's statistics (stats_deltas,
    measured by `measures`), and on COMPLETED opens the call's recording upload and counts both
    (counter_deltas). Returns the moved calls with the event's fields, the outbox id and whether
    a callback delivery was queued (`callback_queued`).
    """
    if not transitions:
        return []
    return await conn.fetch(
        f"""
        WITH t AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::timestamptz[], $9::text[],
                                 $10::text[], $11::text[], $12::text[], $13::text[])
                AS t(call_id, from_seq, from_status, to_status, event, flags, raised,
                     occurred_at, data, event_id, agent_id, end_reason, new_flags)
        ), moved AS (
            UPDATE calls c
               SET status = t.to_status, seq = c.seq + 1,
                   flags = string_to_array(t.flags, ','),
                   updated_at = clock_timestamp(), status_changed_at = clock_timestamp(),
                   routed_at = CASE WHEN t.to_status = 'RINGING' THEN t.occurred_at
                                    ELSE c.routed_at END,
                   answered_at = CASE WHEN t.to_status = 'ANSWERED' AND c.answered_at IS NULL
                                      THEN t.occurred_at ELSE c.answered_at END,
                   held_at = CASE WHEN t.to_status = 'ON_HOLD' THEN t.occurred_at
                                  ELSE c.held_at END,
                   ended_at = CASE WHEN t.to_status = 'COMPLETED' THEN t.occurred_at
                                   ELSE c.ended_at END,
                   agent_id = coalesce(t.agent_id, c.agent_id),
                   end_reason = coalesce(t.end_reason, c.end_reason),
                   last_event_at = t.occurred_at
              FROM t
             WHERE c.id = t.call_id AND c.seq = t.from_seq
         RETURNING c.*, t.from_status AS previous_status, t.event,
                   t.occurred_at AS event_occurred_at, t.data::jsonb AS event_data,
                   t.event_id AS event_event_id, string_to_array(t.raised, ',') AS raised_flags,
                   string_to_array(t.new_flags, ',') AS new_flags
        ), logged AS (
            INSERT INTO call_events (call_id, seq, event, from_status, to_status, flags,
                                     raised_flags, data, occurred_at, event_id, created_at)
            SELECT id, seq, event, previous_status, status, flags, raised_flags, event_data,
                   event_occurred_at, event_event_id, clock_timestamp()
              FROM moved
         RETURNING call_id AS logged_call_id, created_at AS received_at
        ), uploads AS (
            INSERT INTO recordings (call_id) SELECT id FROM moved WHERE status = 'COMPLETED'
        ), queued AS (
            INSERT INTO outbox (call_id, seq) SELECT id, seq FROM moved
         RETURNING id AS outbox_id, call_id AS outbox_call_id
        ), counted AS (
            INSERT INTO counter_deltas (api_key_id, calls_completed, uploads_opened)
            SELECT api_key_id, count(*), count(*) FROM moved WHERE status = 'COMPLETED'
             GROUP BY api_key_id
        ), called_back AS (
            {CALLBACK_DELIVERIES.format(rows="moved", seq="seq", resumed=RESUMED)}
        ), measured AS ({stats.transition_deltas("$14::float8", "$15", "$16")}
        )
        SELECT {CALL_COLUMNS}, previous_status, event, event_occurred_at AS occurred_at,
               event_event_id AS event_id, event_data AS data, raised_flags, received_at,
               outbox_id, called_back_id IS NOT NULL AS callback_queued
          FROM moved
          JOIN queued ON outbox_call_id = id
          JOIN logged ON logged_call_id = id
          LEFT JOIN called_back ON called_back_id = id
        """,
        [t.call_id for t in transitions],
        [t.from_seq for t in transitions],
        [t.from_status for t in transitions],
        [t.to_status for t in transitions],
        [t.event for t in transitions],
        [",".join(t.flags) for t in transitions],
        [",".join(t.raised_flags) for t in transitions],
        [t.occurred_at for t in transitions],
        [orjson.dumps(t.data).decode() for t in transitions],
        [t.event_id for t in transitions],
        [t.agent_id for t in transitions],
        [t.end_reason for t in transitions],
        [",".join(t.new_flags) for t in transitions],
        measures.time_scale,
        measures.service_level_ms,
        measures.short_abandon_ms,
    )


async def fetch_call(conn: Executor, call: CallRef) -> asyncpg.Record | None:
    """The call its key names `call.ref`, if there is one."""
    return await conn.fetchrow(
        f"SELECT {CALL_COLUMNS} FROM calls c WHERE {NAMED_CALL}", *named_call_args(call)
    )


async def fetch_idempotent_call(
    conn: Executor, key_id: str, idempotency_key: str
) -> tuple[asyncpg.Record, bytes | None] | None:
    row = await conn.fetchrow(
        f"""
        SELECT {CALL_COLUMNS}, request_hash FROM calls
         WHERE api_key_id = $1 AND idempotency_key = $2
        """,
        key_id,
        idempotency_key,
    )
    return (row, row["request_hash"]) if row else None


# A history row as every reader needs it (API, streams, the outbox drain).
EVENT_COLUMNS = """
    e.call_id::text, coalesce(c.ref, c.id::text) AS ref, e.seq, e.event, e.event_id,
    e.from_status AS previous_status, e.to_status AS status, e.flags,
    e.raised_flags, e.data, e.occurred_at, e.created_at AS received_at,
    c.api_key_id::text AS key_id
"""


async def fetch_events(
    conn: Executor,
    call: CallRef,
    after_seq: int = 0,
    limit: int | None = None,
    before_seq: int | None = None,
    received_since: datetime | None = None,
) -> list[asyncpg.Record]:
    """The history of the call its key names `call.ref` (empty if there is none), in order:
    events after `after_seq` and before `before_seq`, committed at or after `received_since`,
    at most `limit` of them (None: no bound)."""
    return await conn.fetch(
        f"""
        SELECT {EVENT_COLUMNS}
          FROM calls c JOIN call_events e ON e.call_id = c.id
         WHERE {NAMED_CALL} AND e.seq > $4
           AND ($5::int IS NULL OR e.seq < $5)
           AND ($6::timestamptz IS NULL OR e.created_at >= $6)
         ORDER BY e.seq
         LIMIT $7
        """,
        *named_call_args(call),
        after_seq,
        before_seq,
        received_since,
        limit,
    )


async def fetch_history(
    conn: Executor, call: CallRef, after_seq: int = 0, limit: int | None = None
) -> tuple[bool, list[asyncpg.Record]]:
    """Whether the key has a call named `call.ref`, and that call's history after `after_seq`,
    in order, at most `limit` rows (None: all): one round trip."""
    rows = await conn.fetch(
        f"""
        SELECT {EVENT_COLUMNS}
          FROM calls c
          LEFT JOIN LATERAL (
              SELECT * FROM call_events
               WHERE call_events.call_id = c.id AND call_events.seq > $4
               ORDER BY call_events.seq
               LIMIT $5
          ) e ON true
         WHERE {NAMED_CALL}
         ORDER BY e.seq
        """,
        *named_call_args(call),
        after_seq,
        limit,
    )
    return bool(rows), [row for row in rows if row["seq"] is not None]


async def fetch_named_event(conn: Executor, call: CallRef, event_id: str) -> asyncpg.Record | None:
    """The event posted under `event_id` for the call its key names `call.ref`, if any."""
    return await conn.fetchrow(
        f"""
        SELECT {EVENT_COLUMNS}
          FROM calls c JOIN call_events e ON e.call_id = c.id
         WHERE {NAMED_CALL} AND e.event_id = $4
        """,
        *named_call_args(call),
        event_id,
    )


async def fetch_event_by_event_id(
    conn: Executor, call_id: str, event_id: str
) -> asyncpg.Record | None:
    """The event a sender posted under `event_id` for this call, if any."""
    return await conn.fetchrow(
        f"""
        SELECT {EVENT_COLUMNS}
          FROM call_events e JOIN calls c ON c.id = e.call_id
         WHERE e.call_id = $1 AND e.event_id = $2
        """,
        call_id,
        event_id,
    )


async def fetch_stale_active_calls(
    conn: Executor, older_than_ms: int, limit: int
) -> list[asyncpg.Record]:
    """Simulated calls that are not over and have not moved for `older_than_ms`."""
    return await conn.fetch(
        f"""
        SELECT {CALL_COLUMNS} FROM calls
         WHERE status <> 'COMPLETED' AND kind = 'simulated'
           AND status_changed_at < clock_timestamp() - make_interval(secs => $1::float8 / 1000)
         ORDER BY status_changed_at
         LIMIT $2
        """,
        older_than_ms,
        limit,
    )


async def fetch_idle_ingested_calls(
    conn: Executor, idle_s: int, limit: int
) -> list[asyncpg.Record]:
    """Ingested calls not over that have had no event for `idle_s` seconds."""
    return await conn.fetch(
        f"""
        SELECT {CALL_COLUMNS} FROM calls
         WHERE status <> 'COMPLETED' AND kind = 'ingested'
           AND status_changed_at < clock_timestamp() - make_interval(secs => $1::float8)
         ORDER BY status_changed_at
         LIMIT $2
        """,
        idle_s,
        limit,
    )


async def fetch_ended_among(conn: Executor, call_ids: Sequence[str]) -> set[str]:
    """Which of `call_ids` are COMPLETED or do not exist (their limit leases can go)."""
    rows = await conn.fetch(
        """
        SELECT id::text FROM unnest($1::uuid[]) AS ids(id)
         WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = ids.id AND c.status <> 'COMPLETED')
        """,
        list(call_ids),
    )
    return {row["id"] for row in rows}


async def fetch_keys_with_active_calls(conn: Executor) -> list[tuple[str, str]]:
    """The (key id, kind) pairs with active calls: the slot sets that must not be empty."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT api_key_id::text AS key_id, kind FROM calls WHERE status <> 'COMPLETED'
        """
    )
    return [(row["key_id"], row["kind"]) for row in rows]


async def fetch_active_slots(
    conn: Executor, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, int]]:
    """The active calls of each (key id, kind), call id -> creation time in ms (when its slot
    was taken, near enough), to restore their slot sets."""
    rows = await conn.fetch(
        """
        SELECT api_key_id::text AS key_id, kind, id::text AS call_id,
               (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
          FROM calls
         WHERE status <> 'COMPLETED'
           AND (api_key_id, kind) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))
        """,
        [key_id for key_id, _ in pairs],
        [kind for _, kind in pairs],
    )
    found: dict[tuple[str, str], dict[str, int]] = {pair: {} for pair in pairs}
    for row in rows:
        found[(row["key_id"], row["kind"])][row["call_id"]] = row["created_ms"]
    return found


async def fetch_latest_event(conn: Executor, call: CallRef) -> asyncpg.Record | None:
    """The latest history row of the call its key names `call.ref`: its state as a message."""
    return await conn.fetchrow(
        f"""
        SELECT {EVENT_COLUMNS}
          FROM calls c JOIN call_events e ON e.call_id = c.id AND e.seq = c.seq
         WHERE {NAMED_CALL}
        """,
        *named_call_args(call),
    )


@dataclass(frozen=True, slots=True)
class CallFilter:
    status: str | None = None
    # Any of these statuses (the Twilio face's `ringing` and `in-progress` are two of ours each).
    statuses: Sequence[str] | None = None
    flag: str | None = None
    queue_id: str | None = None
    call_type: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    kind: str | None = None
    end_reason: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Created at or after (the Twilio face's `StartTime>`, which includes its bound).
    created_since: datetime | None = None


async def fetch_calls_page(
    conn: Executor,
    key_id: str,
    where: CallFilter,
    *,
    limit: int,
    offset: int,
    newest_first: bool = True,
    with_total: bool = True,
) -> tuple[list[asyncpg.Record], int | None]:
    """One page of the key's calls, newest first, and how many match, in one round trip.

    Only the filters given become conditions, so each combination is its own statement with
    its own plan; the status, queue, type and flag filters each have an index that keeps the
    key's calls in creation order (see 0002_contact_centre.sql), and the count reads the same
    index; the others (numbers, source, end reason, creation times) read the key's calls in
    that order and keep the matching ones. Unfiltered, the count is the key's counter
    (0006_counters.sql): a few rows however many calls the key has. Without `with_total` none
    is counted (None).
    """
    conditions, args = ["api_key_id = $1"], [key_id]
    for value, condition in (
        (where.status, "status = {}"),
        (None if where.statuses is None else list(where.statuses), "status = ANY({}::text[])"),
        (where.queue_id, "queue_id IS NOT NULL AND queue_id = {}"),
        (where.call_type, "call_type = {}"),
        (where.from_number, "from_number = {}"),
        (where.to_number, "to_number = {}"),
        (where.kind, "kind = {}"),
        (where.end_reason, "end_reason = {}"),
        (where.created_after, "created_at > {}"),
        (where.created_before, "created_at < {}"),
        (where.created_since, "created_at >= {}"),
    ):
        if value is not None:
            args.append(value)
            conditions.append(condition.format(f"${len(args)}"))
    if where.flag is not None:
        # A literal, not a parameter, so the planner matches the flag's partial index; the
        # value is one of core.rules.Flag, never the caller's text.
        conditions.append(f"flags @> '{{{Flag(where.flag).value}}}'")
    matching = " AND ".join(conditions)
    order = "DESC" if newest_first else "ASC"
    if not with_total:
        count = "SELECT NULL::bigint AS n"
    elif len(conditions) > 1:
        count = f"SELECT count(*) AS n FROM calls WHERE {matching}"
    else:
        count = f"SELECT ({STORED_CALLS}) AS n"
    rows = await conn.fetch(
        f"""
        SELECT total.n AS total, page.*
          FROM ({count}) AS total
          LEFT JOIN LATERAL (
              SELECT {CALL_COLUMNS} FROM calls WHERE {matching}
               ORDER BY created_at {order}, id {order}
               LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}
          ) AS page ON true
        """,
        *args,
        limit,
        offset,
    )
    total = rows[0]["total"] if rows else (0 if with_total else None)
    return [row for row in rows if row["call_id"] is not None], total
