"""Typed application keys for what the app factory opens once and handlers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from api.auth import KeyResolver
from api.realtime.hub import Hub
from calls.control import CallControl
from calls.deletion import Deletion
from calls.events import EventService
from calls.recordings import Recordings
from calls.service import CallService
from calls.stores import Stores
from calls.transitions import Transitions
from core.settings import Settings
from db.keys import ApiKey

SETTINGS = web.AppKey("settings", Settings)
STORES = web.AppKey("stores", Stores)
KEYS = web.AppKey("keys", KeyResolver)
CALLS = web.AppKey("calls", CallService)
CONTROL = web.AppKey("control", CallControl)
EVENTS = web.AppKey("events", EventService)
TRANSITIONS = web.AppKey("transitions", Transitions)
RECORDINGS = web.AppKey("recordings", Recordings)
DELETION = web.AppKey("deletion", Deletion)
HUB = web.AppKey("hub", Hub)
STARTED_AT = web.AppKey("started_at", float)
# This process's request latency histogram (method, route, status class).
REQUEST_SECONDS = web.AppKey("request_seconds", Histogram)
# Its series by label values, looked up once each (prometheus_client's `labels` takes a lock).
REQUEST_SECONDS_BY_LABELS = web.AppKey("request_seconds_by_labels", dict)
REGISTRY = web.AppKey("registry", CollectorRegistry)
# Each aiohttp route and the api.routes.Route that describes it (auth, docs).
ROUTES = web.AppKey("routes", dict)
# The OpenAPI document of those routes for a server URL (api/openapi.py), built by the app
# factory, so no handler imports the document's builder (which reads the route table).
OPENAPI: web.AppKey[Callable[[str], dict[str, Any]]] = web.AppKey("openapi")

# Per request: the caller's key, the request id, and the status its answer started with; on the
# Twilio face, the Auth Token the request presented (the key's secret: kept in memory for the
# request only, never logged).
API_KEY = "api_key"
REQUEST_ID = "request_id"
RESPONSE_STATUS = "response_status"
AUTH_TOKEN = "auth_token"


def api_key(request: web.Request) -> ApiKey:
    return request[API_KEY]
