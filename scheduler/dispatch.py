"""Starts the workers' draining jobs: while timers are due and no job waits in the queue, one
more is enqueued. Every scheduler does this, leader or not, so no scheduler's death pauses the
timers: a Redis claim (dispatch.lua) keeps two schedulers from starting a job each for the same
due timers, and a second job would cost no more than its check, since jobs take due timers
atomically.

The jobs take the due timers themselves (`worker.jobs`), a batch at a time, until none is due or
their time is up. So the size of a batch follows the load (a busy worker comes back to more),
RQ's own cost is paid per job rather than per timer, and a timer leaves Redis only milliseconds
before its transition is written: upkeep never mistakes a timer waiting in a queue for a lost
one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue

from core import keys
from core.clock import now_ms

# A job that runs longer than this is killed by RQ (its timers are resumed by upkeep).
JOB_TIMEOUT_S = 60
JOB_RESULT_TTL_S = 60
JOB_FAILURE_TTL_S = 24 * 3600
DRAIN_JOB = "worker.jobs.drain_timers"
# The dispatch claim's lifetime: it is released as soon as the job is in the queue, so this only
# bounds how long dispatching waits after a scheduler died holding it.
CLAIM_TTL_MS = 100

_DISPATCH = (Path(__file__).parent / "dispatch.lua").read_text()
_RELEASE = (Path(__file__).parent / "release.lua").read_text()


class Dispatcher:
    def __init__(self, redis: Redis, rq_connection: SyncRedis, token: str) -> None:
        """`token`: this scheduler's own, for the dispatch claim."""
        self._token = token
        self._queue = Queue(keys.TIMERS_QUEUE, connection=rq_connection)
        self._keys = [*(keys.timers(kind) for kind in keys.TIMER_KINDS), self._queue.key]
        self._keys.append(keys.DISPATCH_CLAIM)
        self._dispatch = redis.register_script(_DISPATCH)
        self._release = redis.register_script(_RELEASE)

    async def pass_once(self) -> tuple[bool, int | None]:
        """Start a job if timers are due, no job waits and no other scheduler is starting one;
        returns whether one was started and when the earliest timer not yet due falls due
        (None if none)."""
        start, next_due = await self._dispatch(
            keys=self._keys, args=[now_ms(), self._token, CLAIM_TTL_MS]
        )
        if start:
            try:
                await asyncio.to_thread(self._enqueue)
            finally:
                await self._release(keys=[keys.DISPATCH_CLAIM], args=[self._token])
        return bool(start), (int(next_due) if next_due >= 0 else None)

    def _enqueue(self) -> None:
        self._queue.enqueue_call(
            DRAIN_JOB,
            timeout=JOB_TIMEOUT_S,
            result_ttl=JOB_RESULT_TTL_S,
            failure_ttl=JOB_FAILURE_TTL_S,
        )
