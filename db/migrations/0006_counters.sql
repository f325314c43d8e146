-- The platform's counters, kept as calls move, so that /metrics and a key's call count read a
-- few rows whatever the size of `calls`. The statements that create, end or upload calls add
-- their changes as rows of counter_deltas (no shared row is updated on the hot path, so writers
-- never queue on one); upkeep folds the deltas into counter_totals, one row per key, every pass.
-- A figure is the sum of both, read in one snapshot with the rows it counts.

CREATE TABLE counter_deltas (
    id              bigserial PRIMARY KEY,
    api_key_id      uuid NOT NULL,
    calls_created   bigint NOT NULL DEFAULT 0,
    calls_completed bigint NOT NULL DEFAULT 0,
    -- Calls deleted (by their key, or past the retention period): the stored ones are
    -- calls_created - calls_removed.
    calls_removed   bigint NOT NULL DEFAULT 0,
    uploads_opened  bigint NOT NULL DEFAULT 0,
    uploads_stored  bigint NOT NULL DEFAULT 0,
    uploads_failed  bigint NOT NULL DEFAULT 0
);

CREATE TABLE counter_totals (
    api_key_id      uuid PRIMARY KEY,
    calls_created   bigint NOT NULL DEFAULT 0,
    calls_completed bigint NOT NULL DEFAULT 0,
    calls_removed   bigint NOT NULL DEFAULT 0,
    uploads_opened  bigint NOT NULL DEFAULT 0,
    uploads_stored  bigint NOT NULL DEFAULT 0,
    uploads_failed  bigint NOT NULL DEFAULT 0
);

-- What is there already, counted once.
INSERT INTO counter_totals (api_key_id, calls_created, calls_completed, uploads_opened,
                            uploads_stored, uploads_failed)
SELECT c.api_key_id, count(*), count(*) FILTER (WHERE c.status = 'COMPLETED'), count(r.call_id),
       count(*) FILTER (WHERE r.status = 'uploaded'), count(*) FILTER (WHERE r.status = 'failed')
  FROM calls c LEFT JOIN recordings r ON r.call_id = c.id
 GROUP BY c.api_key_id;
