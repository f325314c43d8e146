"""Deleting ended calls past RETENTION_DAYS: their rows, and their recordings' files or objects.

Upkeep runs it each pass, oldest calls first, a small batch per statement and a bounded time per
pass, so a purge of millions never holds locks or the disk for long: the hot path writes new
calls and moves active ones, which a purge never touches.
"""

from __future__ import annotations

import time

from calls.recordings import Recordings
from calls.stores import Stores
from core import keys
from db.purge import delete_calls, fetch_expired_calls

# Calls deleted per statement, and the most time one pass spends deleting.
PURGE_BATCH = 500
PURGE_BUDGET_S = 0.25


class Retention:
    def __init__(self, stores: Stores, recordings: Recordings) -> None:
        self._stores = stores
        self._recordings = recordings

    async def purge(self) -> int:
        """Delete ended calls older than RETENTION_DAYS (0: keep everything), within this
        pass's budget; returns how many."""
        days = self._stores.settings.retention_days
        if not days:
            return 0
        pool = self._stores.pool
        deadline = time.monotonic() + PURGE_BUDGET_S
        purged = 0
        while time.monotonic() < deadline:
            rows = await fetch_expired_calls(pool, days * 86_400, PURGE_BATCH)
            if not rows:
                break
            # The files first: if the rows went first and this process died, the files would
            # be left with nothing pointing at them. A call whose file is gone but whose row is
            # not is deleted by the next pass.
            await self._recordings.discard([r["storage_key"] for r in rows if r["storage_key"]])
            call_ids = [r["call_id"] for r in rows]
            purged += await delete_calls(pool, call_ids)
            # Their live views would answer for up to an hour (calls/live.py): gone with them.
            await self._stores.redis.delete(*(keys.call_state(call_id) for call_id in call_ids))
            if len(rows) < PURGE_BATCH:
                break
        return purged
