"""`python -m api`: serve the API on HOST:PORT."""

from __future__ import annotations

import gc
import sys

import uvloop
from aiohttp import web

from api.access_log import AccessLogger
from api.app import create_app
from core.logs import setup_logging
from core.settings import get_settings

# The cyclic collector's thresholds in the API process (Python's are 700, 10, 10). Reference
# counting frees nearly all of a request's objects; what the collector finds is rare, but each
# full pass walks every live object, and with 10,000 streams open that is a million of them: a
# 0.05-1.1 s stall of every request and stream, several times a minute (docs/PERFORMANCE.md).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what startup made lives as long as the process: never walk it again


def main() -> int:
    settings = get_settings()
    setup_logging("api", settings.log_level)
    tune_gc()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop=uvloop.new_event_loop(),
        # Cancel a handler when its client goes away, so a closed stream is dropped at once
        # instead of at its next ping.
        handler_cancellation=True,
        # A stop must fit in the 2 s that process managers, Docker and systemd give before
        # SIGKILL: the streams are ended first (app.py), and what is still running then is cut.
        shutdown_timeout=1.5,
        access_log_class=AccessLogger,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
