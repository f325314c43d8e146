"""Deleting ended calls past RETENTION_DAYS: their rows, and their recordings' files or objects.

The leading scheduler runs it in a loop of its own, oldest calls first, a small batch per
statement, resting twice as long as each batch took: a purge of millions never holds locks or a
connection for long and takes at most a third of one, and the hot path (new calls, active ones)
never touches what it deletes.
"""

from __future__ import annotations

from calls.deletion import BATCH, Deletion
from calls.stores import Stores
from db.purge import drop_emptied_keys, fetch_calls_of_deleted_keys, fetch_expired_calls


class Retention:
    def __init__(self, stores: Stores, deletion: Deletion) -> None:
        self._stores = stores
        self._deletion = deletion

    async def purge_batch(self) -> int:
        """Delete up to BATCH calls: the ended ones older than RETENTION_DAYS (0: keep them),
        oldest first, else those of deleted keys (whose rows go once they have none left);
        returns how many."""
        pool = self._stores.pool
        days = self._stores.settings.retention_days
        rows = await fetch_expired_calls(pool, days * 86_400, BATCH) if days else []
        if not rows:
            rows = await fetch_calls_of_deleted_keys(pool, BATCH)
        if not rows:
            await drop_emptied_keys(pool)
            return 0
        return await self._deletion.delete(rows)
