"""`python -m worker`: one non-forking RQ worker on the timers queue (and requeued dead letters)."""

from __future__ import annotations

import logging
import sys
import time

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker

from core import keys
from core.logs import setup_logging
from core.settings import get_settings
from worker.liveness import Heartbeat
from worker.runtime import runtime

log = logging.getLogger("worker")

# Pause before starting again after Redis went away, doubling up to the cap.
RESTART_PAUSE_S = (0.5, 5.0)


def main() -> int:
    settings = get_settings()
    setup_logging("worker", settings.log_level)
    runtime()  # open the pools now, so a missing store fails the start, not the first job
    connection = Redis.from_url(settings.redis_dsn)
    # Due timers first; a requeued dead letter when none waits.
    queues = [
        Queue(name, connection=connection) for name in (keys.TIMERS_QUEUE, keys.RETRIES_QUEUE)
    ]
    pause_s, cap_s = RESTART_PAUSE_S
    heartbeat = Heartbeat(connection, settings.process_dead_after_ms)
    # RQ logs two lines per job at INFO (taken, done), half of all lines: below DEBUG it says
    # only what went wrong, and the jobs' own lines say what they did.
    rq_level = "DEBUG" if settings.log_level.upper() == "DEBUG" else "WARNING"
    while True:
        worker = None
        try:
            # Inside the try: the constructor talks to Redis, which may still be away.
            worker = SimpleWorker(queues, connection=connection)
            heartbeat.start(worker)
            worker.work(with_scheduler=False, logging_level=rq_level)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("lost Redis: %s", exc)
        finally:
            if worker is not None:
                heartbeat.stop(worker)
        if worker is not None and worker._shutdown_requested_date is not None:
            break  # asked to stop (SIGTERM, SIGINT)
        # RQ quits its loop when Redis drops under it (a restart, a failover) and logs why. The
        # work it held is resumed from PostgreSQL by the scheduler's upkeep; start again.
        log.warning("the RQ worker stopped on its own; starting again in %.1f s", pause_s)
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, cap_s)
    runtime().close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
