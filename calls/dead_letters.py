"""Work whose attempts are spent (a status callback, a recording upload), left as a failed RQ job
named for its call on the `retries` queue: rq-dashboard lists it with why it failed, and
requeueing it there tries the work once more (worker/jobs.py `retry_spent`)."""

from __future__ import annotations

import asyncio

from redis import Redis as SyncRedis
from rq.job import Job
from rq.job_lifecycle import record_job_failure

from core import keys

RETRY_JOB = "worker.jobs.retry_spent"
# A dead letter stays in RQ's failed registry this long, then RQ drops it (the work's state, and
# every attempt, stay in PostgreSQL).
DEAD_LETTER_TTL_S = 7 * 24 * 3600
# A requeued dead letter's one attempt (a callback: CALLBACK_TIMEOUT_MS each) fits in this.
RETRY_TIMEOUT_S = 300
RETRY_RESULT_TTL_S = 3600


class RetryFailed(Exception):
    """A requeued dead letter's work failed again: its job fails, and is a dead letter again."""


class DeadLetters:
    def __init__(self, connection: SyncRedis) -> None:
        self._connection = connection

    async def add(self, kind: str, call_id: str, description: str, reason: str) -> None:
        """Leave the call's spent work of `kind` as a failed job (replacing one there already:
        one dead letter per call and kind, which retries all of it)."""
        await asyncio.to_thread(self._add, kind, call_id, description, reason)

    def _add(self, kind: str, call_id: str, description: str, reason: str) -> None:
        job = Job.create(
            RETRY_JOB,
            args=(kind, call_id),
            id=keys.dead_letter_id(kind, call_id),
            connection=self._connection,
            origin=keys.RETRIES_QUEUE,
            description=description,
            timeout=RETRY_TIMEOUT_S,
            result_ttl=RETRY_RESULT_TTL_S,
            failure_ttl=DEAD_LETTER_TTL_S,
        )
        with self._connection.pipeline() as pipe:
            record_job_failure(job, reason, pipe)
            pipe.execute()
