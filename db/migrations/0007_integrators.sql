-- For integrators' own tests: how a simulated call ends (end_reason no_answer, busy, failed as
-- well), and the plan a scenario made of a call (NULL for a call created without one).

ALTER TABLE calls DROP CONSTRAINT calls_end_reason_check;
ALTER TABLE calls ADD CONSTRAINT calls_end_reason_check
    CHECK (end_reason IN ('completed', 'no_answer', 'busy', 'failed', 'canceled', 'abandoned',
                          'timeout'));

-- calls/scenarios.py Plan: the call's outcome and every timing, chosen when it was created.
ALTER TABLE calls ADD COLUMN scenario jsonb;
