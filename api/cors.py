"""Browsers on other origins (`CORS_ORIGINS`): preflight answers, and the CORS headers on every
answer, through aiohttp-cors. Off by default: a page elsewhere reaches the API only when its
origin is named."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp_cors
from aiohttp import web

# What a page may send: the key (either form), a body, and the headers the API reads.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-API-Key",
    "Idempotency-Key",
    "X-Request-ID",
    "Last-Event-ID",
)
# What a page may read of an answer besides the simple headers: the request's id, when to try
# again and the limits.
EXPOSED_HEADERS = (
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Idempotent-Replayed",
)
# How long a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE_S = 600


def enable_cors(
    app: web.Application, origins: list[str], routes: Iterable[web.AbstractRoute]
) -> None:
    """Let pages from `origins` (`*`: any) call `routes`; nothing when there are none. The API
    takes keys in headers, never cookies, so no credentials are allowed."""
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=False,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in routes:
        cors.add(route)
    app.on_response_prepare.append(_vary_on_origin)


async def _vary_on_origin(request: web.Request, response: web.StreamResponse) -> None:
    # Answers differ by Origin (which one is echoed back): caches must keep them apart.
    response.headers.add("Vary", "Origin")
