"""One JSON line per request: method, path, status, duration and request id (never the query
string or headers, so no key or access_token reaches the log)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from api import appkeys
from core.logs import write_info


class AccessLogger(AbstractAccessLogger):
    @property
    def enabled(self) -> bool:
        """aiohttp asks once per connection: below INFO it neither times nor calls `log`."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        write_info(
            self.logger.name,
            "request",
            {
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
                "request_id": request.get(appkeys.REQUEST_ID),
                "remote": request.remote,
            },
        )
