"""Workers that died (SIGKILL, a lost host) leave RQ's books within PROCESS_DEAD_AFTER_MS: dropped
from RQ's list of workers, and the drain job one was running deleted rather than failed.

Nothing a drain job held is lost when its worker dies: the timers it took are resumed by upkeep
from PostgreSQL. Left to RQ, the job would be moved to the failed registry as an
AbandonedJobError minutes later (when its registry entry expires), among the dead letters that
do need an operator (spent callbacks and uploads, queue `retries`), and the dead worker would stay
listed until its key expired. A dead worker's job of the `retries` queue (a requeued dead letter)
is left to RQ: it did need an operator, and may again.

A worker is dead when its heartbeat lapsed (worker/liveness.py).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Worker, worker_registration
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry

from core import keys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cleared:
    workers: int = 0
    drain_jobs: int = 0


class DeadWorkers:
    def __init__(self, connection: Redis) -> None:
        self._connection = connection
        self._queues = [
            Queue(name, connection=connection) for name in (keys.TIMERS_QUEUE, keys.RETRIES_QUEUE)
        ]

    def clear(self) -> Cleared:
        """Delete the drain jobs of dead workers and drop dead workers from RQ's lists (RQ's
        client is synchronous: run it in a thread)."""
        drain_jobs = self._delete_drain_jobs()
        listed = sorted(worker_registration.get_keys(connection=self._connection))
        dead = [key for key, alive in zip(listed, self._alive(listed), strict=True) if not alive]
        for key in dead:
            worker = Worker.find_by_key(key, connection=self._connection)
            if worker is not None:  # else RQ dropped it itself (its key had expired)
                worker_registration.unregister(worker)
            log.warning(
                "RQ worker %s has not renewed its heartbeat for PROCESS_DEAD_AFTER_MS: taken for"
                " dead and dropped from RQ's workers",
                key.removeprefix(Worker.redis_worker_namespace_prefix),
            )
        for queue in self._queues:
            worker_registration.clean_worker_registry(queue)  # the per-queue lists too
        return Cleared(len(dead), drain_jobs)

    def _delete_drain_jobs(self) -> int:
        registry = StartedJobRegistry(keys.TIMERS_QUEUE, connection=self._connection)
        # Without RQ's cleanup, which would fail the expired ones (AbandonedJobError).
        running = registry.get_job_ids(cleanup=False)
        jobs = []
        for job_id in running:
            # A job gone already leaves an entry RQ's cleanup drops without failing anything.
            with contextlib.suppress(NoSuchJobError):
                jobs.append(Job.fetch(job_id, connection=self._connection))
        names = [job.worker_name or "" for job in jobs]
        deleted = 0
        for job, alive in zip(jobs, self._alive_by_name(names), strict=True):
            if job.worker_name and not alive:
                job.delete()
                deleted += 1
                log.warning(
                    "deleted drain job %s of dead RQ worker %s: nothing is lost (upkeep resumes"
                    " the timers it held from PostgreSQL)",
                    job.id,
                    job.worker_name,
                )
        return deleted

    def _alive(self, worker_keys: list[str]) -> list[bool]:
        prefix = Worker.redis_worker_namespace_prefix
        return self._alive_by_name([key.removeprefix(prefix) for key in worker_keys])

    def _alive_by_name(self, names: list[str]) -> list[bool]:
        if not names:
            return []
        with self._connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(keys.worker_alive(name))
            return [bool(found) for found in pipe.execute()]
