-- For integrators' own tests: how a simulated call ends (end_reason no_answer, busy, failed as
-- well), and the plan a scenario made of a call (NULL for a call created without one).

ALTER TABLE calls DROP CONSTRAINT calls_end_reason_check;
ALTER TABLE calls ADD CONSTRAINT calls_end_reason_check
    CHECK (end_reason IN ('completed', 'no_answer', 'busy', 'failed', 'canceled', 'abandoned',
                          'timeout'));

-- calls/scenarios.py Plan: the call's outcome and every timing, chosen when it was created.
ALTER TABLE calls ADD COLUMN scenario jsonb;

-- Each key's signing secret for its status callbacks (`whsec_` and 64 hex digits, 244 random
-- bits). Unlike the API secret, of which only a hash is kept, it is stored as it is: the platform
-- signs with it. It lets no one call the API; it only proves a callback came from the platform.
-- Existing keys get one each; `python -m db keys rotate-signing-secret NAME` makes a new one.
ALTER TABLE api_keys ADD COLUMN signing_secret text NOT NULL
    DEFAULT ('whsec_' || replace(gen_random_uuid()::text, '-', '')
                      || replace(gen_random_uuid()::text, '-', ''));

-- Status callbacks: where a simulated call's transitions are POSTed, which statuses (NULL: all),
-- and when a receiver's 410 stopped them.
ALTER TABLE calls
    ADD COLUMN status_callback        text,
    ADD COLUMN status_callback_events text[],
    ADD COLUMN callbacks_stopped_at   timestamptz;

-- One delivery per transition of a call that has a status callback, written in the statement
-- that writes the transition (as its outbox entry is), and worked off in seq order per call by
-- the `cbk` timers (calls/callbacks.py). A delivery leaves the open states (pending, delivering)
-- once delivered (a 2xx), stopped (a 410, here or earlier) or failed (its attempts spent).
CREATE TABLE callback_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id         uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq             integer NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivering', 'delivered', 'stopped', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- When its transition was written: delivery latency counts from here.
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (call_id, seq)
);
-- A call's open deliveries in order: the first is the one to work off.
CREATE INDEX callback_deliveries_open_idx ON callback_deliveries (call_id, seq)
    WHERE status IN ('pending', 'delivering');
-- Upkeep's search for open deliveries whose timer or worker was lost.
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'delivering');

-- Every attempt at a delivery: what the receiver answered (or the error), and how long it took.
CREATE TABLE callback_attempts (
    delivery_id  uuid NOT NULL REFERENCES callback_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    latency_ms   double precision NOT NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
