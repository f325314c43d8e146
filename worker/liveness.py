"""This worker's heartbeat in Redis (core/keys.py `worker_alive`), renewed every third of
PROCESS_DEAD_AFTER_MS by a thread of its own, whatever RQ is doing: upkeep takes a worker whose
heartbeat lapsed for dead, drops it from RQ's list of workers and deletes its drain job
(scheduler/dead_workers.py)."""

from __future__ import annotations

import contextlib
import logging
import threading

from redis import Redis
from redis.exceptions import RedisError
from rq import worker_registration
from rq.worker import BaseWorker

from core import keys

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, connection: Redis, lifetime_ms: int) -> None:
        self._connection = connection
        self._lifetime_ms = lifetime_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: BaseWorker) -> None:
        """Beat for `worker` until `stop`; the first beat before RQ lists the worker, so upkeep
        never finds it listed with no heartbeat."""
        self._stop.clear()
        self._beat(worker, first=True)
        self._thread = threading.Thread(
            target=self._run, args=(worker,), name="worker-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self, worker: BaseWorker) -> None:
        """Stop beating; the heartbeat goes too (the worker stopped on its own)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with contextlib.suppress(RedisError):  # else it lapses on its own
            self._connection.delete(keys.worker_alive(worker.name))

    def _run(self, worker: BaseWorker) -> None:
        while not self._stop.wait(self._lifetime_ms / 3000):
            self._beat(worker)

    def _beat(self, worker: BaseWorker, *, first: bool = False) -> None:
        try:
            lapsed = (
                self._connection.set(
                    keys.worker_alive(worker.name), 1, px=self._lifetime_ms, get=True
                )
                is None
            )
            if lapsed and not first:
                # Taken for dead while it stalled (upkeep dropped it from RQ's workers): it is
                # alive, so it is listed again.
                log.warning("this worker's heartbeat had lapsed: listing it with RQ again")
                worker_registration.register(worker)
        except RedisError as exc:
            log.warning("could not renew this worker's heartbeat: %s", exc)
