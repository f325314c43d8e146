"""`python -m api`: serve the API on HOST:PORT."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

from api.access_log import AccessLogger
from api.app import create_app
from core.logs import setup_logging
from core.settings import get_settings


def main() -> int:
    settings = get_settings()
    setup_logging("api", settings.log_level)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop=uvloop.new_event_loop(),
        # Cancel a handler when its client goes away, so a closed stream is dropped at once
        # instead of at its next ping.
        handler_cancellation=True,
        access_log_class=AccessLogger,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
