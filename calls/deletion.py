"""Deleting calls with everything kept of them (rows, recording files or objects, live views):
the retention purge's batches, and a key's own clean slate (`DELETE /calls`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from calls.recordings import Recordings
from calls.stores import Stores
from calls.transitions import Transitions
from core import keys
from core.errors import Conflict
from core.lifecycle import EndReason, Event
from db.counters import fetch_stored_calls
from db.purge import (
    count_active_calls_of_key,
    delete_calls,
    fetch_active_calls_of_key,
    fetch_ended_calls_of_key,
)

# Calls deleted, or ended, per statement.
BATCH = 500
# Calls one `DELETE /calls` deletes at most; `remaining` tells the caller to ask again.
MOST_PER_REQUEST = 10_000
# Passes at ending a key's active calls (`?force=true`): more than its caps allow, so a key
# creating calls as fast as they are ended cannot hold the request.
END_PASSES = 50


@dataclass(frozen=True, slots=True)
class Cleared:
    deleted: int
    ended: int
    remaining: int


class Deletion:
    def __init__(self, stores: Stores, recordings: Recordings) -> None:
        self._stores = stores
        self._recordings = recordings

    async def delete(self, rows: Sequence[asyncpg.Record]) -> int:
        """Delete the ended calls of `rows` (call_id, storage_key); returns how many. The files
        go first: if the rows went first and this process died, the files would be left with
        nothing pointing at them. A call whose file is gone but whose row is not (it was not
        ended after all, or the process died) is deleted by a later pass."""
        await self._recordings.discard([r["storage_key"] for r in rows if r["storage_key"]])
        call_ids = [r["call_id"] for r in rows]
        deleted = await delete_calls(self._stores.pool, call_ids)
        # Their live views would answer for up to an hour (calls/live.py): gone with them.
        await self._stores.redis.delete(*(keys.call_state(call_id) for call_id in call_ids))
        return deleted

    async def clear_key(self, key_id: str, transitions: Transitions, *, force: bool) -> Cleared:
        """A key's clean slate: its ended calls deleted with their history and recordings, up
        to MOST_PER_REQUEST. Conflict while it has active calls, unless `force` ends them first
        (`call_ended`, `canceled`: published, slots freed, callbacks sent as for any end)."""
        pool = self._stores.pool
        active = await count_active_calls_of_key(pool, key_id)
        if active and not force:
            raise Conflict(
                f"{active} of the key's calls are active: end them first, or delete with"
                " ?force=true (which ends them as canceled)"
            )
        ended = await self._end_active(key_id, transitions) if active else 0
        deleted = 0
        while deleted < MOST_PER_REQUEST:
            rows = await fetch_ended_calls_of_key(
                pool, key_id, min(BATCH, MOST_PER_REQUEST - deleted)
            )
            if not rows:
                break
            deleted += await self.delete(rows)
        return Cleared(deleted, ended, await fetch_stored_calls(pool, key_id))

    async def _end_active(self, key_id: str, transitions: Transitions) -> int:
        ended = 0
        for _ in range(END_PASSES):
            rows = await fetch_active_calls_of_key(self._stores.lookups, key_id, BATCH)
            if not rows:
                break
            now = datetime.now(UTC)
            decided = [
                transitions.decide(
                    row, Event.CALL_ENDED, occurred_at=now, end_reason=EndReason.CANCELED
                )
                for row in rows
            ]
            ended += len(await transitions.write(decided))
        return ended
