"""Starts the workers' draining jobs: while timers of a kind are due and no job for them waits in
its queue, one more is enqueued.

The jobs take the due timers themselves (`worker.jobs`), in batches, until none is due or their
time is up. So the size of a batch follows the load (a busy worker comes back to more), RQ's own
cost is paid per job rather than per timer, and a timer leaves Redis only milliseconds before
its transition is written: upkeep never mistakes a timer waiting in a queue for a lost one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue

from core import keys
from core.clock import now_ms

log = logging.getLogger(__name__)

# A job that runs longer than this is killed by RQ (its timers are resumed by upkeep).
JOB_TIMEOUT_S = 60
JOB_RESULT_TTL_S = 60
JOB_FAILURE_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Drain:
    """The job that works off one kind of timer, and the queue it runs from."""

    kind: str
    queue: str
    func: str


DRAINS = (
    Drain(keys.ADVANCE, keys.TRANSITIONS_QUEUE, "worker.jobs.advance_calls"),
    Drain(keys.UPLOAD, keys.UPLOADS_QUEUE, "worker.jobs.upload_recordings"),
)


class Dispatcher:
    def __init__(self, redis: Redis, rq_connection: SyncRedis) -> None:
        self._redis = redis
        self._queues = {d.kind: Queue(d.queue, connection=rq_connection) for d in DRAINS}

    async def pass_once(self) -> tuple[int, int | None]:
        """Start a job for each kind with timers due and no job waiting; returns how many were
        started and when the earliest timer not yet due falls due (None if none)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for drain in DRAINS:
                pipe.zrange(keys.timers(drain.kind), 0, 0, withscores=True)
                pipe.llen(self._queues[drain.kind].key)
            replies = await pipe.execute()
        now = now_ms()
        start: list[Drain] = []
        next_due: int | None = None
        for drain, first, waiting in zip(DRAINS, replies[::2], replies[1::2], strict=True):
            if not first:
                continue
            due_ms = int(first[0][1])
            if due_ms <= now:
                if not waiting:
                    start.append(drain)
            elif next_due is None or due_ms < next_due:
                next_due = due_ms
        if start:
            await asyncio.to_thread(self._enqueue, start)
        return len(start), next_due

    def _enqueue(self, drains: list[Drain]) -> None:
        for drain in drains:
            self._queues[drain.kind].enqueue_call(
                drain.func,
                timeout=JOB_TIMEOUT_S,
                result_ttl=JOB_RESULT_TTL_S,
                failure_ttl=JOB_FAILURE_TTL_S,
            )
