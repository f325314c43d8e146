-- Ingested calls are bounded: a key's own cap on its active ones (NULL: the platform default,
-- MAX_ACTIVE_INGESTED_CALLS_PER_KEY), and upkeep ends one idle past INGESTED_CALL_TIMEOUT_S
-- with the end reason `timeout`.

ALTER TABLE api_keys
    ADD COLUMN max_active_ingested_calls integer CHECK (max_active_ingested_calls > 0);

ALTER TABLE calls DROP CONSTRAINT calls_end_reason_check;
ALTER TABLE calls ADD CONSTRAINT calls_end_reason_check
    CHECK (end_reason IN ('completed', 'abandoned', 'failed', 'canceled', 'timeout'));

-- Upkeep's search for idle ingested calls reads only these.
CREATE INDEX calls_ingested_active_idx ON calls (status_changed_at)
    WHERE status <> 'COMPLETED' AND kind = 'ingested';
