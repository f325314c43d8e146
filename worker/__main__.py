"""`python -m worker`: one non-forking RQ worker on the transitions and uploads queues."""

from __future__ import annotations

import sys

from redis import Redis
from rq import Queue, SimpleWorker

from core import keys
from core.logs import setup_logging
from core.settings import get_settings
from worker.runtime import runtime


def main() -> int:
    settings = get_settings()
    setup_logging("worker", settings.log_level)
    runtime()  # open the pools now, so a missing store fails the start, not the first job
    connection = Redis.from_url(settings.redis_dsn)
    queues = [
        Queue(name, connection=connection) for name in (keys.TRANSITIONS_QUEUE, keys.UPLOADS_QUEUE)
    ]
    worker = SimpleWorker(queues, connection=connection)
    worker.work(with_scheduler=False, logging_level=settings.log_level)
    runtime().close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
