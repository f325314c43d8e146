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
