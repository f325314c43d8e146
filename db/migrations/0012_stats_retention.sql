-- Queue statistics are kept per minute only as long as calls are (RETENTION_DAYS), counted, as
-- calls are, from when the platform stored them: a minute row goes once no fold has touched it
-- for that long (an import of last year's calls keeps its minutes as long as its calls). Hour
-- and day rows stay (60 and 1,440 times fewer). A deleted key's rows go before the key's row.
ALTER TABLE queue_stats ADD COLUMN folded_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE agent_stats ADD COLUMN folded_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX queue_stats_minutes_idx ON queue_stats (folded_at) WHERE span = 'minute';
CREATE INDEX agent_stats_minutes_idx ON agent_stats (folded_at) WHERE span = 'minute';
