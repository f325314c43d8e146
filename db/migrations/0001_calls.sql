-- The system of record: API keys, calls, their ordered history and their recordings.

CREATE TABLE api_keys (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL UNIQUE,
    -- SHA-256 of the secret; the secret itself is never stored.
    key_hash             bytea NOT NULL UNIQUE,
    key_prefix           text NOT NULL,
    -- NULL means "the platform default" (MAX_CONCURRENT_CALLS_PER_KEY / MAX_CPS_PER_KEY).
    max_concurrent_calls integer CHECK (max_concurrent_calls > 0),
    max_cps              integer CHECK (max_cps > 0),
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE calls (
    id                uuid PRIMARY KEY,
    api_key_id        uuid NOT NULL REFERENCES api_keys (id),
    -- simulated: moved by timers; ingested: moved only by posted events.
    kind              text NOT NULL CHECK (kind IN ('simulated', 'ingested')),
    from_number       text,
    to_number         text,
    status            text NOT NULL
        CHECK (status IN ('QUEUED', 'RINGING', 'ANSWERED', 'ON_HOLD', 'UNANSWERED', 'COMPLETED')),
    -- seq of the latest call_events row; every transition adds one.
    seq               integer NOT NULL DEFAULT 1,
    metadata          jsonb NOT NULL DEFAULT '{}',
    flags             text[] NOT NULL DEFAULT '{}',
    recording_url     text,
    idempotency_key   text,
    request_hash      bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (api_key_id, idempotency_key)
);

-- A key's calls newest first (id breaks ties, so pages are stable): lists read it in order.
CREATE INDEX calls_key_created_idx ON calls (api_key_id, created_at DESC, id DESC);
-- For "calls created in the last second" only. A BRIN index is tiny on an append-mostly time
-- column and, unlike a B-tree, cannot tempt the planner to walk every key's calls in time
-- order to find one key's page.
CREATE INDEX calls_created_brin ON calls USING brin (created_at);
-- Active calls are few; the scheduler's reconciliation and the active count read only these.
CREATE INDEX calls_active_idx ON calls (status_changed_at) WHERE status <> 'COMPLETED';

CREATE TABLE call_events (
    call_id     uuid NOT NULL REFERENCES calls (id),
    seq         integer NOT NULL,
    event       text NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    flags       text[] NOT NULL DEFAULT '{}',
    data        jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE recordings (
    call_id         uuid PRIMARY KEY REFERENCES calls (id),
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'uploading', 'uploaded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    storage_key     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX recordings_open_idx ON recordings (next_attempt_at)
    WHERE status IN ('pending', 'uploading');
CREATE INDEX recordings_status_idx ON recordings (status);
