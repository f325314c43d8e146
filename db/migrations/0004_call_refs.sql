-- A sender's own call ids belong to its key (core/call_ids.py): a call named by its sender keeps
-- the name here, and its primary key is a UUID derived from the key and the name. Calls whose id
-- the platform made keep NULL: their id is their name.

ALTER TABLE calls ADD COLUMN ref text;
