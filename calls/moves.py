"""Moving simulated calls on when their timers fall due: the `adv` kind of timed work, and its
upkeep check (calls resting in a state past its longest timer, with no timer waiting)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis.exceptions import RedisError

from calls import metrics as shared_metrics
from calls.live import LiveState
from calls.scenarios import has_timer, longest_rest_ms
from calls.stores import Stores
from calls.timers import DueTimer, Timers
from calls.transitions import Transitions
from core import keys
from core.clock import now_ms, to_ms
from db import calls as db_calls

log = logging.getLogger(__name__)

# The figures the moves add to /metrics go to Redis at most this often (and when a job ends).
RECORD_EVERY_S = 0.25


class Moves:
    """Works off due `adv` timers in a worker process, and counts how late they fired."""

    def __init__(self, stores: Stores, transitions: Transitions) -> None:
        self._stores = stores
        self._transitions = transitions
        self._lateness_ms: list[int] = []
        self._moved = 0
        self._recorded_at = time.monotonic()

    async def work(self, due: Sequence[DueTimer]) -> None:
        """Move each call on from the state its timer was set in (one that moved on is
        skipped)."""
        moved = await self._transitions.fire([keys.parse_advance_timer(t.member) for t in due])
        now = now_ms()
        self._lateness_ms += [now - timer.due_ms for timer in due]
        self._moved += len(moved)
        if time.monotonic() - self._recorded_at >= RECORD_EVERY_S:
            await self.flush()

    async def flush(self) -> None:
        """Add the lateness and moves counted since the last time to the figures /metrics
        shows; losing them (Redis down) must not fail the job."""
        if self._lateness_ms:
            try:
                async with self._stores.mux.pipeline() as pipe:
                    shared_metrics.observe(pipe, keys.TIMER_LATENESS, self._lateness_ms)
                    shared_metrics.count(pipe, "transitions", self._moved)
                    await pipe.execute()
            except RedisError:
                log.warning("could not record timer lateness")
        self._lateness_ms, self._moved, self._recorded_at = [], 0, time.monotonic()


async def resume_moves(stores: Stores, limit: int) -> int:
    """Re-arm simulated calls that rest in a state past its longest timer with none waiting
    (Redis lost it, or a job took it and died before writing the move)."""
    settings = stores.settings
    grace = settings.reconcile_grace_ms
    rows = await db_calls.fetch_stale_active_calls(stores.pool, grace, limit)
    now = now_ms()
    overdue = [
        row
        for row in rows
        if has_timer(row)
        and now - to_ms(row["status_changed_at"]) > longest_rest_ms(row, settings) + grace
    ]
    members = [keys.advance_timer(row["call_id"], row["seq"], row["status"]) for row in overdue]
    waiting = await Timers(stores.redis).pending(members)
    lost = [
        (row, member)
        for row, member, wait in zip(overdue, members, waiting, strict=True)
        if not wait
    ]
    if lost:
        async with stores.redis.pipeline(transaction=False) as pipe:
            for row, member in lost:
                LiveState.write(pipe, row)
                Timers.schedule(pipe, member, now)
            await pipe.execute()
    return len(lost)
