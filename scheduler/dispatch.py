"""Hands due timers to the RQ workers: one pass takes what is due and enqueues it in batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from rq import Queue

from calls.timers import DueTimer, Timers
from core import keys
from core.clock import now_ms
from core.settings import Settings

log = logging.getLogger(__name__)

# A job that runs longer than this is killed by RQ (and its calls resumed by reconciliation).
JOB_TIMEOUT_S = 60
JOB_RESULT_TTL_S = 60
JOB_FAILURE_TTL_S = 24 * 3600


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Dispatcher:
    def __init__(self, settings: Settings, redis: Redis, rq_connection: SyncRedis) -> None:
        self._settings = settings
        self._timers = Timers(redis)
        self._redis = redis
        self._transitions = Queue(keys.TRANSITIONS_QUEUE, connection=rq_connection)
        self._uploads = Queue(keys.UPLOADS_QUEUE, connection=rq_connection)

    async def pass_once(self) -> tuple[int, int | None]:
        """Enqueue what is due now; returns how many timers were taken and the next due time."""
        due, next_due = await self._timers.pop_due(now_ms(), self._settings.scheduler_batch_size)
        if due:
            try:
                await asyncio.to_thread(self._enqueue, due)
            except Exception:
                # Put them back so the next pass retries; reconciliation covers a crash here.
                async with self._redis.pipeline(transaction=False) as pipe:
                    for timer in due:
                        Timers.schedule(pipe, timer.member, timer.due_ms)
                    await pipe.execute()
                raise
        return len(due), next_due

    def _enqueue(self, due: list[DueTimer]) -> None:
        advance: list[tuple[str, int, str, int]] = []
        uploads: list[str] = []
        for timer in due:
            kind, _, rest = timer.member.partition(":")
            if kind == keys.ADVANCE:
                call_id, seq, status = rest.split(":")
                advance.append((call_id, int(seq), status, timer.due_ms))
            elif kind == keys.UPLOAD:
                uploads.append(rest)
            else:
                log.error("dropping timer of unknown kind: %s", timer.member)
        size = self._settings.job_batch_size
        for queue, func, batches in (
            (self._transitions, "worker.jobs.advance_calls", _chunks(advance, size)),
            (self._uploads, "worker.jobs.upload_recordings", _chunks(uploads, size)),
        ):
            if batches:
                queue.enqueue_many(
                    [
                        Queue.prepare_data(
                            func,
                            args=(list(batch),),
                            timeout=JOB_TIMEOUT_S,
                            result_ttl=JOB_RESULT_TTL_S,
                            failure_ttl=JOB_FAILURE_TTL_S,
                        )
                        for batch in batches
                    ]
                )
