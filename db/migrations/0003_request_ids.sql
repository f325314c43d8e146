-- The request that created a call, so the jobs that move it and upload its recording log under
-- the same id as the request did.

ALTER TABLE calls ADD COLUMN request_id text;
