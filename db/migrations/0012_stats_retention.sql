-- Queue statistics are kept per minute only as long as calls are (RETENTION_DAYS): the purge
-- deletes minute rows older than that, oldest first, by these indexes; hour and day rows stay
-- (60 and 1,440 times fewer). A deleted key's rows go before the key's own row.
CREATE INDEX queue_stats_minutes_idx ON queue_stats (starts_at) WHERE span = 'minute';
CREATE INDEX agent_stats_minutes_idx ON agent_stats (starts_at) WHERE span = 'minute';
