-- Queue statistics, kept as calls move (db/stats.py): service level, abandonment, speed of answer
-- and handle time per key, queue and minute of the calls' start, and per agent. As with the
-- counters (0006), the statements that create and move calls add their changes as rows of
-- stats_deltas (never an update of a shared row on the hot path); upkeep folds them every pass
-- into queue_stats and agent_stats, each at three spans (a minute, an hour, a day, in UTC), so a
-- window of any length reads a few rows per queue. A figure is the sum of both tables, read in
-- one snapshot. Durations are whole milliseconds, so sums are exact.
--
-- Calls stored before this migration are counted by `python -m db stats rebuild`, which also
-- recounts everything from `calls` and `call_events` after SERVICE_LEVEL_S or SHORT_ABANDON_S
-- change.

CREATE TABLE stats_deltas (
    id                  bigserial PRIMARY KEY,
    api_key_id          uuid NOT NULL,
    queue_id            text NOT NULL,
    call_type           text NOT NULL,
    -- The call's agent when the change was made (NULL before it was routed).
    agent_id            text,
    -- The minute (UTC) the call started in: a call counts in the window its call_initiated
    -- occurred in, whenever its later events arrive.
    minute              timestamptz NOT NULL,
    offered             integer NOT NULL DEFAULT 0,
    answered            integer NOT NULL DEFAULT 0,
    answered_in_sl      integer NOT NULL DEFAULT 0,
    wait_ms             bigint NOT NULL DEFAULT 0,
    abandoned           integer NOT NULL DEFAULT 0,
    short_abandoned     integer NOT NULL DEFAULT 0,
    handled             integer NOT NULL DEFAULT 0,
    handle_ms           bigint NOT NULL DEFAULT 0,
    holds               integer NOT NULL DEFAULT 0,
    hold_ms             bigint NOT NULL DEFAULT 0,
    -- Calls that got each business-rule flag (core/rules.py), counted when it was first raised.
    wait_sla_exceeded   integer NOT NULL DEFAULT 0,
    hold_limit_exceeded integer NOT NULL DEFAULT 0,
    short_call          integer NOT NULL DEFAULT 0,
    rerouted            integer NOT NULL DEFAULT 0
);

CREATE TABLE queue_stats (
    api_key_id          uuid NOT NULL,
    queue_id            text NOT NULL,
    call_type           text NOT NULL,
    span                text NOT NULL CHECK (span IN ('minute', 'hour', 'day')),
    starts_at           timestamptz NOT NULL,
    offered             bigint NOT NULL DEFAULT 0,
    answered            bigint NOT NULL DEFAULT 0,
    answered_in_sl      bigint NOT NULL DEFAULT 0,
    wait_ms             bigint NOT NULL DEFAULT 0,
    abandoned           bigint NOT NULL DEFAULT 0,
    short_abandoned     bigint NOT NULL DEFAULT 0,
    handled             bigint NOT NULL DEFAULT 0,
    handle_ms           bigint NOT NULL DEFAULT 0,
    holds               bigint NOT NULL DEFAULT 0,
    hold_ms             bigint NOT NULL DEFAULT 0,
    wait_sla_exceeded   bigint NOT NULL DEFAULT 0,
    hold_limit_exceeded bigint NOT NULL DEFAULT 0,
    short_call          bigint NOT NULL DEFAULT 0,
    rerouted            bigint NOT NULL DEFAULT 0,
    -- One queue's series reads this in order.
    PRIMARY KEY (api_key_id, queue_id, span, starts_at, call_type)
);
-- A key's queues over a window read each span's range of this.
CREATE INDEX queue_stats_key_span_idx ON queue_stats (api_key_id, span, starts_at);

CREATE TABLE agent_stats (
    api_key_id uuid NOT NULL,
    agent_id   text NOT NULL,
    queue_id   text NOT NULL,
    call_type  text NOT NULL,
    span       text NOT NULL CHECK (span IN ('minute', 'hour', 'day')),
    starts_at  timestamptz NOT NULL,
    handled    bigint NOT NULL DEFAULT 0,
    handle_ms  bigint NOT NULL DEFAULT 0,
    holds      bigint NOT NULL DEFAULT 0,
    hold_ms    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, span, starts_at, agent_id, queue_id, call_type)
);
