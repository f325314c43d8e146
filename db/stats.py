"""Queue statistics, kept as calls move (0008_queue_stats.sql): what each write adds, the fold
into minute, hour and day totals, the reads of a window, a series and the agents, and the
rebuild of it all from `calls` and `call_events`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core.rules import Flag
from core.settings import Settings
from db.pool import Executor

# Every figure a queue's rows keep, in the tables' column order; the flags' columns are named
# after core.rules.Flag.
FLAG_COLUMNS = tuple(flag.value for flag in Flag)
QUEUE_COLUMNS = (
    "offered",
    "answered",
    "answered_in_sl",
    "wait_ms",
    "abandoned",
    "short_abandoned",
    "handled",
    "handle_ms",
    "holds",
    "hold_ms",
    *FLAG_COLUMNS,
)
AGENT_COLUMNS = ("handled", "handle_ms", "holds", "hold_ms")
SPANS = ("minute", "hour", "day")
# What a call is in the "now" figures: waiting (not answered, not ended) or on hold.
WAITING = ("QUEUED", "RINGING", "UNANSWERED")


@dataclass(frozen=True, slots=True)
class Measures:
    """What the writes measure against: a wait within `service_level_ms` meets the service
    level, an abandon within `short_abandon_ms` is short; a simulated call's time is divided
    by `time_scale`, as the business rules judge it (calls/transitions.py)."""

    service_level_ms: int
    short_abandon_ms: int
    time_scale: float

    @classmethod
    def of(cls, settings: Settings) -> Measures:
        return cls(
            round(settings.service_level_s * 1000),
            round(settings.short_abandon_s * 1000),
            settings.time_scale,
        )


def _ms(interval: str, scale: str) -> str:
    """Whole milliseconds of an interval of a call (a row with `kind`), in simulated time for a
    simulated call; a sender whose clock runs backwards gets 0, not a negative time."""
    return (
        f"greatest(0, round(extract(epoch FROM {interval}) * 1000"
        f" / CASE WHEN kind = 'simulated' THEN {scale} ELSE 1 END))::bigint"
    )


def _sums(columns: Sequence[str], source: str = "") -> str:
    return ", ".join(f"sum({source}{column})::bigint AS {column}" for column in columns)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(columns)


# insert_calls' CTE: each new call in a queue is offered in the minute it started.
OFFERED = """
    INSERT INTO stats_deltas (api_key_id, queue_id, call_type, minute, offered)
    SELECT api_key_id, queue_id, call_type, date_trunc('minute', started_at, 'UTC'), count(*)
      FROM created WHERE queue_id IS NOT NULL
     GROUP BY 1, 2, 3, 4
"""


def transition_deltas(scale: str, service_level_ms: str, short_abandon_ms: str) -> str:
    """write_transitions' CTE: what the moved calls (`moved`: each call as moved, with its
    `previous_status`, `event`, `event_occurred_at` and `new_flags`) add to their queue's minute,
    given the parameters that hold the Measures. A call counts where it started, whenever its
    later events arrive."""
    return f"""
    INSERT INTO stats_deltas (api_key_id, queue_id, call_type, agent_id, minute,
                              {_names(QUEUE_COLUMNS[1:])})
    SELECT api_key_id, queue_id, call_type, agent_id, date_trunc('minute', started_at, 'UTC'),
           count(*) FILTER (WHERE answer),
           count(*) FILTER (WHERE answer AND wait_ms <= {service_level_ms}),
           coalesce(sum(wait_ms) FILTER (WHERE answer), 0),
           count(*) FILTER (WHERE abandon),
           count(*) FILTER (WHERE abandon AND life_ms <= {short_abandon_ms}),
           count(*) FILTER (WHERE handle),
           coalesce(sum(handle_ms) FILTER (WHERE handle), 0),
           count(hold_ms),
           coalesce(sum(hold_ms), 0),
           {", ".join(f"count(*) FILTER (WHERE '{f}' = ANY(new_flags))" for f in FLAG_COLUMNS)}
      FROM (SELECT m.*,
                   event = 'call_answered' AS answer,
                   event = 'call_ended' AND answered_at IS NULL
                       AND (end_reason = 'abandoned' OR kind = 'ingested') AS abandon,
                   event = 'call_ended' AND answered_at IS NOT NULL AS handle,
                   {_ms("answered_at - started_at", scale)} AS wait_ms,
                   {_ms("ended_at - started_at", scale)} AS life_ms,
                   {_ms("ended_at - answered_at", scale)} AS handle_ms,
                   CASE WHEN previous_status = 'ON_HOLD'
                        THEN {_ms("event_occurred_at - held_at", scale)} END AS hold_ms
              FROM moved m
             WHERE queue_id IS NOT NULL) AS m
     WHERE answer OR abandon OR handle OR hold_ms IS NOT NULL OR cardinality(new_flags) > 0
     GROUP BY 1, 2, 3, 4, 5
"""


def _upsert(table: str, keys: Sequence[str], columns: Sequence[str], source: str) -> str:
    """Add `source`'s rows (grouped by `keys`) into `table`'s totals, and when (`folded_at`: the
    retention purge keeps a minute row that long after its last change). New rows are written in
    the order a window reads them (key, span, start), so the rows of one span's range share
    pages: a rebuild would otherwise scatter them, and a 24-hour read fetch 7,000 pages."""
    return f"""
        INSERT INTO {table} AS t ({_names(keys)}, {_names(columns)})
        SELECT {_names(keys)}, {_sums(columns)} FROM {source} GROUP BY {_names(keys)}
         ORDER BY api_key_id, span, starts_at
        ON CONFLICT ({_names(keys)}) DO UPDATE
           SET {", ".join(f"{c} = t.{c} + excluded.{c}" for c in columns)}, folded_at = now()
    """


_QUEUE_KEYS = ("api_key_id", "queue_id", "span", "starts_at", "call_type")
_AGENT_KEYS = ("api_key_id", "span", "starts_at", "agent_id", "queue_id", "call_type")
# Each row of `source` once per span, at the start of the span it falls in.
_SPREAD = """
    SELECT r.*, s.span, date_trunc(s.span, r.minute, 'UTC') AS starts_at
      FROM {source} r CROSS JOIN unnest(ARRAY['minute', 'hour', 'day']) AS s(span)
"""
# What an agent's rows keep: changes of an agent's calls that an agent figure counts.
_AGENT_ROWS = "spread WHERE agent_id IS NOT NULL AND (handled > 0 OR holds > 0)"


async def fold_stats_deltas(conn: Executor) -> int:
    """Fold the deltas written so far into the minute, hour and day totals (upkeep, each
    pass); returns how many."""
    return await conn.fetchval(
        f"""
        WITH folded AS (
            DELETE FROM stats_deltas RETURNING *
        ), spread AS ({_SPREAD.format(source="folded")}
        ), queues AS ({_upsert("queue_stats", _QUEUE_KEYS, QUEUE_COLUMNS, "spread")}
        ), agents AS ({_upsert("agent_stats", _AGENT_KEYS, AGENT_COLUMNS, _AGENT_ROWS)}
        )
        SELECT count(*) FROM folded
        """
    )


@dataclass(frozen=True, slots=True)
class Range:
    """Rows of one span starting in [since, until)."""

    span: str
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which of a key's rows a read takes: its queues `queue_ids` (None: all), of `call_type`
    (None: both), after `after` (a queue or agent id, for the next page)."""

    queue_ids: Sequence[str] | None = None
    call_type: str | None = None
    after: str | None = None


def _conditions(where: StatsFilter, args: list, column: str = "queue_id") -> str:
    """The filter as SQL conditions on a row with `queue_id`, `call_type` and `column`,
    appending their arguments to `args`."""
    parts = []
    for value, condition in (
        (where.queue_ids, "queue_id = ANY({})"),
        (where.call_type, "call_type = {}"),
        (where.after, f"{column} > {{}}"),
    ):
        if value is not None:
            args.append(list(value) if isinstance(value, (list, tuple)) else value)
            parts.append(condition.format(f"${len(args)}"))
    return "".join(f" AND {part}" for part in parts)


def _window(
    table: str,
    group: str,
    columns: Sequence[str],
    ranges: Sequence[Range],
    args: list,
    filters: str,
) -> str:
    """`group` and `columns` of `table`'s rows of the key ($1) in `ranges`, and of the deltas
    of the same minutes. One SELECT per range, so that each is one range of the (key, span,
    start) index: joined with the ranges as a set, they were planned as a scan of every row
    of the key."""
    parts = []
    for r in ranges:
        args.extend([r.since, r.until])
        parts.append(
            f"""
            SELECT {group}, {_names(columns)} FROM {table}
             WHERE api_key_id = $1 AND span = '{r.span}'
               AND starts_at >= ${len(args) - 1} AND starts_at < ${len(args)} {filters}"""
        )
    args.extend([min(r.since for r in ranges), max(r.until for r in ranges)])
    parts.append(
        f"""
            SELECT {group}, {_names(columns)} FROM stats_deltas
             WHERE api_key_id = $1 AND minute >= ${len(args) - 1} AND minute < ${len(args)}
                   {filters}"""
    )
    return "\n UNION ALL ".join(parts)


async def fetch_queue_figures(
    conn: Executor,
    key_id: str,
    ranges: Sequence[Range],
    where: StatsFilter,
    *,
    time_scale: float,
    limit: int,
) -> list[asyncpg.Record]:
    """The key's queues that have calls in the window `ranges` cover or waiting or on hold
    now, in queue_id order, at most `limit` of them: each with the sums of its window's rows
    and its "now" figures (waiting_now, longest_wait_ms, on_hold_now). One snapshot."""
    args: list = [key_id]
    filters = _conditions(where, args)
    window = _window("queue_stats", "queue_id", QUEUE_COLUMNS, ranges, args, filters)
    args.extend([time_scale, limit])
    scale, most = f"${len(args) - 1}", f"${len(args)}"
    zeros = ", ".join(f"0 AS {column}" for column in QUEUE_COLUMNS)
    waiting = ", ".join(f"'{status}'" for status in WAITING)
    return await conn.fetch(
        f"""
        WITH now_figures AS (
            SELECT queue_id,
                   count(*) FILTER (WHERE status <> 'ON_HOLD') AS waiting_now,
                   max({_ms("clock_timestamp() - started_at", scale)})
                       FILTER (WHERE status <> 'ON_HOLD') AS longest_wait_ms,
                   count(*) FILTER (WHERE status = 'ON_HOLD') AS on_hold_now
              FROM calls
             WHERE api_key_id = $1 AND status IN ({waiting}, 'ON_HOLD')
               AND queue_id IS NOT NULL {filters}
             GROUP BY queue_id
        ), parts AS (
            {window}
            UNION ALL
            SELECT queue_id, {zeros} FROM now_figures
        )
        SELECT parts.queue_id, {_sums(QUEUE_COLUMNS, "parts.")},
               coalesce(max(n.waiting_now), 0) AS waiting_now,
               max(n.longest_wait_ms) AS longest_wait_ms,
               coalesce(max(n.on_hold_now), 0) AS on_hold_now
          FROM parts LEFT JOIN now_figures n ON n.queue_id = parts.queue_id
         GROUP BY parts.queue_id
         ORDER BY parts.queue_id
         LIMIT {most}
        """,
        *args,
    )


async def fetch_queue_series(
    conn: Executor,
    key_id: str,
    queue_id: str,
    span: str,
    since: datetime,
    until: datetime,
    bucket_s: int,
    call_type: str | None,
) -> list[asyncpg.Record]:
    """One queue's sums per bucket of `bucket_s` seconds in [since, until) (both on bucket
    bounds), from its rows of `span` (which divides the bucket) and the deltas; only buckets
    with rows, each with its `starts_at`."""
    args: list = [key_id]
    filters = _conditions(StatsFilter(queue_ids=[queue_id], call_type=call_type), args)
    args.extend([span, since, until, bucket_s])
    span_, since_, until_, bucket = (f"${len(args) - i}" for i in (3, 2, 1, 0))
    bucket_of = f"to_timestamp(floor(extract(epoch FROM {{0}}) / {bucket}) * {bucket})"
    return await conn.fetch(
        f"""
        SELECT starts_at, {_sums(QUEUE_COLUMNS)}
          FROM (SELECT {bucket_of.format("starts_at")} AS starts_at, {_names(QUEUE_COLUMNS)}
                  FROM queue_stats
                 WHERE api_key_id = $1 AND span = {span_}
                   AND starts_at >= {since_} AND starts_at < {until_} {filters}
                UNION ALL
                SELECT {bucket_of.format("minute")}, {_names(QUEUE_COLUMNS)}
                  FROM stats_deltas
                 WHERE api_key_id = $1 AND minute >= {since_} AND minute < {until_} {filters}
               ) AS rows
         GROUP BY starts_at
         ORDER BY starts_at
        """,
        *args,
    )


async def fetch_agent_figures(
    conn: Executor, key_id: str, ranges: Sequence[Range], where: StatsFilter, *, limit: int
) -> list[asyncpg.Record]:
    """The key's agents with handled calls or holds in the window, in agent_id order, at most
    `limit`: the sums of their rows."""
    args: list = [key_id]
    filters = _conditions(where, args, column="agent_id")
    window = _window("agent_stats", "agent_id", AGENT_COLUMNS, ranges, args, filters)
    args.append(limit)
    return await conn.fetch(
        f"""
        SELECT agent_id, {_sums(AGENT_COLUMNS)}
          FROM ({window}) AS parts
         WHERE agent_id IS NOT NULL
         GROUP BY agent_id
        HAVING sum(handled) > 0 OR sum(holds) > 0
         ORDER BY agent_id
         LIMIT ${len(args)}
        """,
        *args,
    )


async def has_queue(conn: Executor, key_id: str, queue_id: str) -> bool:
    """Whether the key has ever had a call in the queue."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM calls WHERE api_key_id = $1 AND queue_id = $2)",
        key_id,
        queue_id,
    )


async def fetch_totals(conn: Executor, key_id: str) -> list[asyncpg.Record]:
    """Every folded total of the key's queues and agents, in a stable order (what a rebuild
    must give again)."""
    queues = await conn.fetch(
        f"""
        SELECT queue_id, call_type, span, starts_at, {_names(QUEUE_COLUMNS)} FROM queue_stats
         WHERE api_key_id = $1 ORDER BY queue_id, call_type, span, starts_at
        """,
        key_id,
    )
    agents = await conn.fetch(
        f"""
        SELECT agent_id, queue_id, call_type, span, starts_at, {_names(AGENT_COLUMNS)}
          FROM agent_stats
         WHERE api_key_id = $1 ORDER BY agent_id, queue_id, call_type, span, starts_at
        """,
        key_id,
    )
    return [*queues, *agents]


async def rebuild_stats(conn: asyncpg.Connection, measures: Measures, key_id: str | None) -> int:
    """Count the statistics of the key's calls (None: every key's) again from `calls` and
    `call_events`, replacing what was kept; returns how many calls were counted.

    One transaction on one snapshot, with the totals locked against upkeep's fold: a call
    moved after the snapshot is not in it, and its delta, written after, is folded on top.
    The hot path only appends deltas, so it is never held up."""
    of_key = "" if key_id is None else "AND api_key_id = $4"
    args: list = [measures.time_scale, measures.service_level_ms, measures.short_abandon_ms]
    if key_id is not None:
        args.append(key_id)
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute("LOCK TABLE queue_stats, agent_stats IN SHARE ROW EXCLUSIVE MODE")
        for table in ("stats_deltas", "queue_stats", "agent_stats"):
            if key_id is None:
                await conn.execute(f"DELETE FROM {table}")
            else:
                await conn.execute(f"DELETE FROM {table} WHERE api_key_id = $1", key_id)
        return await conn.fetchval(
            f"""
            WITH held AS (
                SELECT e.call_id, count(*) AS holds,
                       sum({_ms("e.occurred_at - h.occurred_at", "$1::float8")}) AS hold_ms
                  FROM calls c
                  JOIN call_events e ON e.call_id = c.id AND e.from_status = 'ON_HOLD'
                  -- ON_HOLD is entered only by call_hold, the event just before.
                  JOIN call_events h ON h.call_id = e.call_id AND h.seq = e.seq - 1
                 WHERE c.queue_id IS NOT NULL {of_key}
                 GROUP BY e.call_id
            ), measured AS (
                SELECT c.*, answered_at IS NOT NULL AS answer,
                       status = 'COMPLETED' AND answered_at IS NULL
                           AND (end_reason = 'abandoned' OR kind = 'ingested') AS abandon,
                       status = 'COMPLETED' AND answered_at IS NOT NULL AS handle,
                       {_ms("answered_at - started_at", "$1::float8")} AS wait_ms,
                       {_ms("ended_at - started_at", "$1::float8")} AS life_ms,
                       {_ms("ended_at - answered_at", "$1::float8")} AS handle_ms
                  FROM calls c
                 WHERE queue_id IS NOT NULL {of_key}
            ), per_call AS (
                SELECT m.api_key_id, m.queue_id, m.call_type, m.agent_id,
                       date_trunc('minute', m.started_at, 'UTC') AS minute,
                       1 AS offered,
                       answer::int AS answered,
                       (answer AND wait_ms <= $2)::int AS answered_in_sl,
                       CASE WHEN answer THEN wait_ms ELSE 0 END AS wait_ms,
                       abandon::int AS abandoned,
                       (abandon AND life_ms <= $3)::int AS short_abandoned,
                       handle::int AS handled,
                       CASE WHEN handle THEN handle_ms ELSE 0 END AS handle_ms,
                       coalesce(held.holds, 0) AS holds,
                       coalesce(held.hold_ms, 0) AS hold_ms,
                       {", ".join(f"('{f}' = ANY(flags))::int AS {f}" for f in FLAG_COLUMNS)}
                  FROM measured m LEFT JOIN held ON held.call_id = m.id
            ), spread AS ({_SPREAD.format(source="per_call")}
            ), queues AS ({_upsert("queue_stats", _QUEUE_KEYS, QUEUE_COLUMNS, "spread")}
            ), agents AS ({_upsert("agent_stats", _AGENT_KEYS, AGENT_COLUMNS, _AGENT_ROWS)}
            )
            SELECT count(*) FROM per_call
            """,
            *args,
        )
