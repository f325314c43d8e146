"""The app factory: settings, stores and the realtime hub wired with their lifetimes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from api import appkeys
from api.auth import KeyResolver
from api.middlewares import authenticate, errors, request_id
from api.realtime.hub import Hub
from api.routes import setup_routes
from calls.events import EventService
from calls.recordings import Recordings
from calls.service import CallService
from calls.stores import Stores
from calls.transitions import Transitions
from core.settings import Settings, get_settings


async def _stores(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    stores = await Stores.open(settings)
    app[appkeys.STORES] = stores
    app[appkeys.KEYS] = KeyResolver(stores.pool, settings.api_key_cache_ttl_ms)
    transitions = Transitions(stores)
    app[appkeys.TRANSITIONS] = transitions
    app[appkeys.CALLS] = CallService(stores, transitions)
    app[appkeys.EVENTS] = EventService(stores, transitions)
    app[appkeys.RECORDINGS] = Recordings(stores)
    yield
    await transitions.publisher.close()
    await stores.close()


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    hub = Hub(app[appkeys.STORES].redis, settings.stream_queue_size)
    await hub.start()
    app[appkeys.HUB] = hub
    yield
    await hub.stop()


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or get_settings()
    app = web.Application(
        middlewares=[request_id, errors, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.STARTED_AT] = time.monotonic()
    app.cleanup_ctx.extend([_stores, _hub])
    setup_routes(app)
    return app
