"""Request id, authentication and the one error format: `{"error": ..., "message": ...}`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from http import HTTPStatus

import asyncpg
import orjson
from aiohttp import web
from redis.exceptions import RedisError

from api import appkeys
from api.auth import STREAM_TOKEN, presented_secret
from api.handlers.common import Handler
from core import logs
from core.call_ids import parse_call_id
from core.errors import (
    BadRequest,
    Conflict,
    DomainError,
    NotFound,
    RateLimited,
    Unauthorized,
    Unprocessable,
)

log = logging.getLogger(__name__)

_STATUS: dict[type[DomainError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
    RateLimited: 429,
}
# Any other method a client sends is labelled "other", so it cannot grow the metric's series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The status label of a request whose client went away before any answer.
CLOSED = "closed"


def error_response(
    status: int, message: str, *, error: str | None = None, headers=None
) -> web.Response:
    body = orjson.dumps({"error": error or HTTPStatus(status).phrase, "message": message})
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def rate_limit_headers(
    limit: int, remaining: int, reset_s: int, policy: str | None = None
) -> dict[str, str]:
    """RateLimit-Limit/-Remaining/-Reset of one limit, and the policy of all that apply."""
    headers = {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset_s),
    }
    if policy is not None:
        headers["RateLimit-Policy"] = policy
    return headers


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer (errors, files, streams and WebSocket handshakes too): no browser may
    guess a type other than the one declared, so a JSON body holding a tenant's markup is never
    run as a page."""
    response.headers["X-Content-Type-Options"] = "nosniff"


async def remember_status(request: web.Request, response: web.StreamResponse) -> None:
    """The status an answer started with, for the latency histogram of a request whose handler
    never returns it (a stream the client closed)."""
    request[appkeys.RESPONSE_STATUS] = response.status


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the request (the caller's X-Request-ID, or a new id) for the answer, the logs and
    the work it starts; and time it for the latency histogram."""
    given = request.headers.get("X-Request-ID", "")
    rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request[appkeys.REQUEST_ID] = rid
    logs.request_id.set(rid)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        # The client went away and its handler was cancelled (handler_cancellation): a stream it
        # closed (the status it was answered with), or a request it gave up on before an answer.
        status = request.get(appkeys.RESPONSE_STATUS)
        _observe(request, f"{status // 100}xx" if status else CLOSED, started)
        raise
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
    _observe(request, f"{response.status // 100}xx", started)
    return response


def _observe(request: web.Request, status: str, started: float) -> None:
    """Add the request's time to the latency histogram, by method, route and status class."""
    route = request.match_info.route.resource
    labels = (
        request.method if request.method in _METHODS else "other",
        route.canonical if route is not None else "unmatched",
        status,
    )
    children = request.app[appkeys.REQUEST_SECONDS_BY_LABELS]
    histogram = children.get(labels)
    if histogram is None:
        # A few dozen at most: the route table's routes, known methods, five status classes
        # and CLOSED.
        histogram = children[labels] = request.app[appkeys.REQUEST_SECONDS].labels(*labels)
    histogram.observe(time.perf_counter() - started)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors, aiohttp's own HTTP errors and store outages to the JSON error shape."""
    try:
        return await handler(request)
    except RateLimited as exc:
        headers = rate_limit_headers(exc.limit, exc.remaining, exc.reset_s, exc.policy) | {
            "Retry-After": str(exc.reset_s)
        }
        return error_response(429, exc.message, error="Rate limit exceeded", headers=headers)
    except Unauthorized as exc:
        # RFC 6750: a 401 says which scheme the API takes.
        return error_response(
            401, exc.message, headers={"WWW-Authenticate": 'Bearer realm="mock-comms"'}
        )
    except DomainError as exc:
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        return error_response(status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[appkeys.SETTINGS].max_body_bytes
        return error_response(413, f"Request body is larger than the limit of {limit} bytes")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405, f"{request.method} is not allowed here; use {allowed}", headers={"Allow": allowed}
        )
    except web.HTTPNotFound:
        return error_response(404, f"No route for {request.method} {request.path}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status,
            exc.text or exc.reason,
            headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None,
        )
    except (
        asyncpg.PostgresConnectionError,
        # The server shutting down or starting up (57P01, 57P03, ...), and the client state a
        # connection cut mid-statement leaves behind.
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InternalClientError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
        ConnectionError,
        OSError,
    ) as exc:
        log.warning("PostgreSQL unavailable: %r", exc)
        return error_response(
            503, "PostgreSQL is unavailable; try again shortly", headers={"Retry-After": "1"}
        )
    except RedisError as exc:
        log.warning("Redis unavailable: %r", exc)
        return error_response(
            503, "Redis is unavailable; try again shortly", headers={"Retry-After": "1"}
        )
    except TimeoutError:
        log.warning("store timed out on %s %s", request.method, request.path)
        return error_response(
            503, "A store did not answer in time; try again shortly", headers={"Retry-After": "1"}
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "Internal error; the request id is in X-Request-ID")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the caller's key, except on public routes; unknown routes stay 404/405."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        raise match_info.http_exception
    route = request.app[appkeys.ROUTES].get(match_info.route)
    if route is None or route.public:
        # Not in the route table: a CORS preflight (api/cors.py), which carries no key.
        return await handler(request)
    secret = presented_secret(request, allow_query=route.query_token)
    keys = request.app[appkeys.KEYS]
    token = request.query.get(STREAM_TOKEN) if route.call_token else None
    if secret is None and token:
        # The same call id the handler reads (a 400 here if it cannot be one).
        raw_id = request.match_info.get("call_id") or request.query.get("call_id", "")
        request[appkeys.API_KEY] = await keys.resolve_stream_token(token, parse_call_id(raw_id))
    else:
        request[appkeys.API_KEY] = await keys.resolve(secret)
    return await handler(request)
