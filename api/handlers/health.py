"""Liveness, readiness and the index: open to anyone."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from api import appkeys
from api.handlers.common import json_response
from core.clock import from_ms, iso, now_ms


async def index(request: web.Request) -> web.Response:
    return json_response(
        {
            "name": "mock-comms",
            "description": "A mock telephony platform: simulated calls, events, live streams.",
            "links": {
                "dashboard": "/dashboard",
                "docs": "/docs",
                "openapi": "/openapi.json",
                "health": "/health",
                "ready": "/ready",
                "calls": "/calls",
                "events": "/events",
                "stream": "/stream",
                "metrics": "/metrics",
            },
        }
    )


async def health(request: web.Request) -> web.Response:
    uptime = time.monotonic() - request.app[appkeys.STARTED_AT]
    return json_response(
        {"status": "healthy", "timestamp": iso(from_ms(now_ms())), "uptime": round(uptime, 3)}
    )


async def ready(request: web.Request) -> web.Response:
    """Both stores answer within a second: 200, else 503 naming the one that does not."""
    stores = request.app[appkeys.STORES]

    async def check(probe) -> str:
        try:
            await asyncio.wait_for(probe(), timeout=1.0)
            return "ok"
        except Exception as exc:  # any failure means "not ready"; say which
            return f"unavailable: {type(exc).__name__}"

    postgres, redis = await asyncio.gather(
        check(lambda: stores.pool.fetchval("SELECT 1")), check(stores.redis.ping)
    )
    ok = postgres == "ok" and redis == "ok"
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": {"postgres": postgres, "redis": redis},
    }
    return json_response(body, status=200 if ok else 503)
