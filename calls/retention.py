"""Deleting ended calls past RETENTION_DAYS: their rows, and their recordings' files or objects.

The leading scheduler runs it in a loop of its own, oldest calls first, a small batch per
statement, resting twice as long as each batch took: a purge of millions never holds locks or a
connection for long and takes at most a third of one, and the hot path (new calls, active ones)
never touches what it deletes.
"""

from __future__ import annotations

from calls.recordings import Recordings
from calls.stores import Stores
from core import keys
from db.purge import (
    delete_calls,
    drop_emptied_keys,
    fetch_calls_of_deleted_keys,
    fetch_expired_calls,
)

# Calls deleted per statement.
PURGE_BATCH = 500


class Retention:
    def __init__(self, stores: Stores, recordings: Recordings) -> None:
        self._stores = stores
        self._recordings = recordings

    async def purge_batch(self) -> int:
        """Delete up to PURGE_BATCH calls: the ended ones older than RETENTION_DAYS (0: keep
        them), oldest first, else those of deleted keys (whose rows go once they have none
        left); returns how many."""
        pool = self._stores.pool
        days = self._stores.settings.retention_days
        rows = await fetch_expired_calls(pool, days * 86_400, PURGE_BATCH) if days else []
        if not rows:
            rows = await fetch_calls_of_deleted_keys(pool, PURGE_BATCH)
        if not rows:
            await drop_emptied_keys(pool)
            return 0
        # The files first: if the rows went first and this process died, the files would be
        # left with nothing pointing at them. A call whose file is gone but whose row is not
        # is deleted by the next batch.
        await self._recordings.discard([r["storage_key"] for r in rows if r["storage_key"]])
        call_ids = [r["call_id"] for r in rows]
        purged = await delete_calls(pool, call_ids)
        # Their live views would answer for up to an hour (calls/live.py): gone with them.
        await self._stores.redis.delete(*(keys.call_state(call_id) for call_id in call_ids))
        return purged
