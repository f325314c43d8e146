"""The app factory: settings, stores and the realtime hub wired with their lifetimes."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from api import appkeys
from api.auth import KeyResolver
from api.cors import enable_cors
from api.middlewares import (
    authenticate,
    errors,
    remember_status,
    request_id,
    security_headers,
)
from api.openapi import build_document
from api.realtime.hub import Hub
from api.realtime.stream_counts import StreamCounts
from api.routes import setup_routes
from calls.batches import Batcher
from calls.control import CallControl
from calls.deletion import Deletion
from calls.events import EventService
from calls.limits import open_limiter
from calls.recordings import Recordings
from calls.service import CallService
from calls.stores import Stores, pools_of
from calls.transitions import Transitions
from core.instance import instance_name
from core.settings import Settings, get_settings


async def _stores(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    # Its batchers' statements (new calls, event reads, event writes) find rows by key: a pool
    # of their own keeps their plans (calls/stores.py).
    stores = await Stores.open(settings, pools_of("api", settings))
    app[appkeys.STORES] = stores
    app[appkeys.KEYS] = KeyResolver(stores.pool, settings.api_key_cache_ttl_ms)
    transitions = Transitions(stores)
    app[appkeys.TRANSITIONS] = transitions
    # Concurrent requests' writes share statements: new calls (POST /calls and call_initiated
    # alike) in one batcher, posted events' transitions in another.
    inserts = Batcher(transitions.insert)
    writes = Batcher(transitions.write_decided)
    limiter = open_limiter(stores)
    # A new Redis starts the clock a restore of the limits waits on (core/limiter.py) now,
    # not at the first request.
    await limiter.settle_left_ms()
    app[appkeys.CALLS] = CallService(stores, inserts, limiter)
    app[appkeys.CONTROL] = CallControl(stores, transitions)
    app[appkeys.EVENTS] = EventService(stores, transitions, inserts, writes, limiter)
    yield
    await inserts.aclose()
    await writes.aclose()
    await limiter.aclose()
    await transitions.publisher.close()
    await stores.close()


async def _recordings(app: web.Application) -> AsyncIterator[None]:
    # The storage's client (S3) lives as long as the app: one connection pool per process.
    recordings = Recordings(app[appkeys.STORES])
    app[appkeys.RECORDINGS] = recordings
    app[appkeys.DELETION] = Deletion(app[appkeys.STORES], recordings)
    yield
    await recordings.aclose()


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    mux = app[appkeys.STORES].mux
    hub = Hub(
        mux,
        # Each key's streams counted across every API process (a dead one's share lapses).
        StreamCounts(
            mux, instance_name(), settings.max_streams_per_key, settings.process_dead_after_ms
        ),
        settings.stream_queue_size,
        # A key changed (python -m db keys): every API process forgets what it knew of it.
        on_key_change=app[appkeys.KEYS].forget,
    )
    await hub.start()
    app[appkeys.HUB] = hub
    yield
    await hub.stop()


async def _end_streams(app: web.Application) -> None:
    """On a stop (SIGINT, SIGTERM), before aiohttp waits for the requests in flight: streams
    would otherwise hold it until its shutdown timeout."""
    app[appkeys.HUB].close_all()


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or get_settings()
    app = web.Application(
        middlewares=[request_id, errors, authenticate],
        client_max_size=settings.max_body_bytes,
        # Long query strings reach validation (and its JSON 400) instead of the HTTP parser's
        # plain-text refusal at 8 KiB; past 32 KiB the parser still refuses them.
        handler_args={"max_line_size": 32 * 1024, "max_field_size": 32 * 1024},
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.STARTED_AT] = time.monotonic()
    registry = CollectorRegistry()
    app[appkeys.REGISTRY] = registry
    app[appkeys.REQUEST_SECONDS] = Histogram(
        "mockcomms_request_duration_seconds",
        "Time to answer a request, by method, route and status class (streams: their lifetime,"
        " closed by the client or not); `closed`: the client went away before an answer.",
        ["method", "route", "status"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        registry=registry,
    )
    app[appkeys.REQUEST_SECONDS_BY_LABELS] = {}
    app.on_response_prepare.extend([security_headers, remember_status])
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.extend([_stores, _recordings, _hub])
    setup_routes(app)
    routes = list(app[appkeys.ROUTES].values())
    # The same few server URLs ask for it again and again; a hostile Host header gets no more.
    app[appkeys.OPENAPI] = functools.lru_cache(maxsize=16)(
        functools.partial(build_document, routes)
    )
    enable_cors(app, settings.cors_origins, app[appkeys.ROUTES])
    return app
