"""`python -m api`: serve the API on HOST:PORT."""

from __future__ import annotations

import logging
import sys

import uvloop
from aiohttp import web

from api.app import create_app
from core.settings import get_settings


def main() -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s api %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop=uvloop.new_event_loop(),
        # Cancel a handler when its client goes away, so a closed stream is dropped at once
        # instead of at its next ping.
        handler_cancellation=True,
        access_log_format='%a "%r" %s %b %Tfs rid=%{X-Request-ID}o',
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
