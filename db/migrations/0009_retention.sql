-- Ended calls older than RETENTION_DAYS are deleted by upkeep, oldest first, in small batches:
-- this index holds only ended calls, in the order they ended.

CREATE INDEX calls_ended_idx ON calls (ended_at) WHERE status = 'COMPLETED';
