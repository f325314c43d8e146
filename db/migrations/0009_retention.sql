-- Ended calls older than RETENTION_DAYS are deleted by upkeep, oldest first, in small batches.
-- Their age is the platform's (when it stored the end: status_changed_at), not the sender's
-- occurred_at, which may be any time: this index holds only ended calls, in that order.

CREATE INDEX calls_ended_idx ON calls (status_changed_at) WHERE status = 'COMPLETED';

-- A deleted key (`python -m db keys delete`) is refused at once and frees its name; its calls
-- are deleted by the same purge, and the key's row once none is left.
ALTER TABLE api_keys ADD COLUMN deleted_at timestamptz;

-- When the call's latest event happened (its occurred_at): a later event may not be dated before
-- it, so no duration is ever negative. NULL for calls of before this column (nothing to check).
ALTER TABLE calls ADD COLUMN last_event_at timestamptz;
