-- Contact-centre events: ingested calls, the timestamps business rules measure from, event ids
-- for deduplication, and the transactional outbox that makes every committed update publishable.

ALTER TABLE calls
    ADD COLUMN call_type   text NOT NULL DEFAULT 'voice' CHECK (call_type IN ('voice', 'video')),
    ADD COLUMN queue_id    text,
    ADD COLUMN agent_id    text,
    ADD COLUMN end_reason  text CHECK (end_reason IN ('completed', 'abandoned', 'failed', 'canceled')),
    -- When the call started (call_initiated's occurred_at) and entered each stage; the rules
    -- measure wait, routing, hold and talk time from these when an event does not say.
    ADD COLUMN started_at  timestamptz,
    ADD COLUMN routed_at   timestamptz,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN held_at     timestamptz,
    ADD COLUMN ended_at    timestamptz;

UPDATE calls SET started_at = created_at WHERE started_at IS NULL;
ALTER TABLE calls ALTER COLUMN started_at SET DEFAULT now(), ALTER COLUMN started_at SET NOT NULL;

-- Lists are newest first within one key; each filter has an index that yields its calls in
-- that order, so a page reads only its own rows however many calls match or do not.
CREATE INDEX calls_key_status_created_idx ON calls (api_key_id, status, created_at DESC, id DESC);
CREATE INDEX calls_key_queue_created_idx ON calls (api_key_id, queue_id, created_at DESC, id DESC)
    WHERE queue_id IS NOT NULL;
CREATE INDEX calls_key_type_created_idx ON calls (api_key_id, call_type, created_at DESC, id DESC);
-- One partial index per flag (the set is fixed by core/rules.py): each holds only its calls.
CREATE INDEX calls_key_wait_sla_idx ON calls (api_key_id, created_at DESC, id DESC)
    WHERE flags @> '{wait_sla_exceeded}';
CREATE INDEX calls_key_hold_limit_idx ON calls (api_key_id, created_at DESC, id DESC)
    WHERE flags @> '{hold_limit_exceeded}';
CREATE INDEX calls_key_short_call_idx ON calls (api_key_id, created_at DESC, id DESC)
    WHERE flags @> '{short_call}';
CREATE INDEX calls_key_rerouted_idx ON calls (api_key_id, created_at DESC, id DESC)
    WHERE flags @> '{rerouted}';

ALTER TABLE call_events
    ADD COLUMN event_id    text,
    -- flags: the call's flags after this event; raised_flags: the ones this event added.
    ADD COLUMN raised_flags text[] NOT NULL DEFAULT '{}';

CREATE UNIQUE INDEX call_events_event_id_idx ON call_events (call_id, event_id)
    WHERE event_id IS NOT NULL;

-- Every committed transition is written here in the same statement, and deleted once it has
-- been published; the scheduler republishes what stays behind (Redis down, process killed).
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    call_id    uuid NOT NULL,
    seq        integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
