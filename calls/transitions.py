"""The one place a call changes state: persist, then make it live, timed and published."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError

from calls.live import LiveState
from calls.stores import Stores
from calls.timers import Timers
from calls.views import message
from core import keys
from core.clock import now_ms, to_ms
from core.lifecycle import Status, timer_delay_ms
from db import calls as db_calls
from db.calls import Move

log = logging.getLogger(__name__)


class Transitions:
    """Applies moves with compare-and-set in PostgreSQL, then updates Redis for what moved."""

    def __init__(self, stores: Stores, rng: random.Random | None = None) -> None:
        self._stores = stores
        self._live = LiveState(stores.redis)
        self._rng = rng or random.Random()

    async def move(self, moves: Sequence[Move]) -> list[Mapping[str, Any]]:
        """Apply each move whose call is still where the move expects; returns the moved calls.

        A late timer, a duplicate job or a racing event finds the call moved on and is a no-op.
        """
        unique = list({m.call_id: m for m in moves}.values())
        rows = await db_calls.apply_moves(self._stores.pool, unique)
        if rows:
            await self.publish_committed(rows)
        return rows

    async def publish_committed(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Make committed states visible: live hash, next timer, limit lease, upload, message.

        Rows carry `previous_status` and `event` as well as the call's columns. PostgreSQL has
        them already, so a Redis failure here loses nothing: the scheduler's reconciliation
        re-arms timers and uploads and rewrites live state from PostgreSQL.
        """
        settings = self._stores.settings
        now = now_ms()
        try:
            async with self._stores.redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    call_id, status = row["call_id"], Status(row["status"])
                    await self._live.write(pipe, row)
                    previous = row["previous_status"]
                    if row["kind"] == "simulated" and previous is not None:
                        # The timer of the state left behind is stale now; tidy it away.
                        pipe.zrem(
                            keys.TIMERS, keys.advance_timer(call_id, row["seq"] - 1, previous)
                        )
                    if status is Status.COMPLETED:
                        pipe.zrem(keys.leases(row["key_id"]), call_id)
                        Timers.schedule(pipe, keys.upload_timer(call_id), now)
                    elif row["kind"] == "simulated":
                        delay = timer_delay_ms(status, settings, self._rng)
                        if delay is not None:
                            member = keys.advance_timer(call_id, row["seq"], status)
                            Timers.schedule(pipe, member, now + delay)
                    pipe.publish(keys.EVENTS_CHANNEL, envelope(row))
                await pipe.execute()
        except RedisError:
            log.exception("redis update after commit failed; reconciliation will repair it")


def envelope(row: Mapping[str, Any]) -> bytes:
    """The pub/sub payload: the realtime message plus the owning key, for routing only."""
    body = message(
        call_id=row["call_id"],
        seq=row["seq"],
        status=row["status"],
        previous_status=row["previous_status"],
        event=row["event"],
        flags=list(row["flags"]),
        at=row["status_changed_at"],
    )
    body["key_id"] = row["key_id"]
    return orjson.dumps(body)


def status_changed_ms(row: Mapping[str, Any]) -> int:
    return to_ms(row["status_changed_at"])
