"""Starts the workers' draining jobs: while timers are due and no job waits in the queue, one
more is enqueued.

The jobs take the due timers themselves (`worker.jobs`), a batch at a time, until none is due or
their time is up. So the size of a batch follows the load (a busy worker comes back to more),
RQ's own cost is paid per job rather than per timer, and a timer leaves Redis only milliseconds
before its transition is written: upkeep never mistakes a timer waiting in a queue for a lost
one.
"""

from __future__ import annotations

import asyncio

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


class Dispatcher:
    def __init__(self, redis: Redis, rq_connection: SyncRedis) -> None:
        self._redis = redis
        self._queue = Queue(keys.TIMERS_QUEUE, connection=rq_connection)

    async def pass_once(self) -> tuple[bool, int | None]:
        """Start a job if timers are due and no job waits; returns whether one was started and
        when the earliest timer not yet due falls due (None if none)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind in keys.TIMER_KINDS:
                pipe.zrange(keys.timers(kind), 0, 0, withscores=True)
            pipe.llen(self._queue.key)
            *firsts, waiting = await pipe.execute()
        now = now_ms()
        due_now = False
        next_due: int | None = None
        for first in firsts:
            if not first:
                continue
            due_ms = int(first[0][1])
            if due_ms <= now:
                due_now = True
            elif next_due is None or due_ms < next_due:
                next_due = due_ms
        start = due_now and not waiting
        if start:
            await asyncio.to_thread(self._enqueue)
        return start, next_due

    def _enqueue(self) -> None:
        self._queue.enqueue_call(
            DRAIN_JOB,
            timeout=JOB_TIMEOUT_S,
            result_ttl=JOB_RESULT_TTL_S,
            failure_ttl=JOB_FAILURE_TTL_S,
        )
