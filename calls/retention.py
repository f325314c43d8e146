"""Deleting ended calls past RETENTION_DAYS: their rows, and their recordings' files or objects.

The leading scheduler runs it in a loop of its own, oldest calls first, a small batch per
statement, resting twice as long as each batch took: a purge of millions never holds locks or a
connection for long and takes at most a third of one, and the hot path (new calls, active ones)
never touches what it deletes.
"""

from __future__ import annotations

from calls.deletion import BATCH, Deletion
from calls.stores import Stores
from db.purge import (
    delete_old_minute_stats,
    delete_stats_of_deleted_keys,
    drop_emptied_keys,
    fetch_calls_of_deleted_keys,
    fetch_expired_calls,
)

# Rows of the queue statistics deleted per statement.
STATS_BATCH = 5_000


class Retention:
    def __init__(self, stores: Stores, deletion: Deletion) -> None:
        self._stores = stores
        self._deletion = deletion

    async def purge_batch(self) -> int:
        """Delete a batch: up to BATCH calls, the ended ones older than RETENTION_DAYS (0: keep
        them) oldest first, else those of deleted keys; else up to STATS_BATCH rows of the
        queue statistics, those of deleted keys and the minute rows older than RETENTION_DAYS
        (hour and day rows stay); else the rows of deleted keys left with nothing. Returns how
        many rows it deleted (0: nothing was left)."""
        pool = self._stores.pool
        retention_s = self._stores.settings.retention_days * 86_400
        rows = await fetch_expired_calls(pool, retention_s, BATCH) if retention_s else []
        if not rows:
            rows = await fetch_calls_of_deleted_keys(pool, BATCH)
        if rows:
            return await self._deletion.delete(rows)
        deleted = await delete_stats_of_deleted_keys(pool, STATS_BATCH)
        if not deleted and retention_s:
            deleted = await delete_old_minute_stats(pool, retention_s, STATS_BATCH)
        if not deleted:
            await drop_emptied_keys(pool)
        return deleted
