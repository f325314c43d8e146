"""Request id, authentication and the one error format: `{"error": ..., "message": ...}`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus

import asyncpg
import orjson
from aiohttp import web
from redis.exceptions import RedisError

from api import appkeys
from api.auth import STREAM_TOKEN, TWILIO_MISSING, presented_key
from api.handlers.common import Handler, json_response
from calls.twilio import MORE_INFO
from calls.twilio import PREFIX as TWILIO_PREFIX
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
from db.keys import ApiKey

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


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as the client is told of it, before its face gives it a shape: the status, what
    went wrong, our reason phrase (default: the status's), headers, and Twilio's code."""

    status: int
    message: str
    reason: str | None = None
    headers: dict[str, str] | None = None
    code: int | None = None


def _failure(request: web.Request, exc: Exception) -> Failure:
    """What a domain error, aiohttp's own HTTP error or a store outage tells the client."""
    match exc:
        case RateLimited():
            headers = rate_limit_headers(exc.limit, exc.remaining, exc.reset_s, exc.policy)
            headers["Retry-After"] = str(exc.reset_s)
            return Failure(429, exc.message, "Rate limit exceeded", headers, exc.code)
        case DomainError():
            status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
            return Failure(status, exc.message, code=exc.code)
        case web.HTTPRequestEntityTooLarge():
            limit = request.app[appkeys.SETTINGS].max_body_bytes
            return Failure(413, f"Request body is larger than the limit of {limit} bytes")
        case web.HTTPMethodNotAllowed():
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{request.method} is not allowed here; use {allowed}"
            return Failure(405, message, None, {"Allow": allowed})
        case web.HTTPNotFound():
            return Failure(404, f"No route for {request.method} {request.path}")
        case web.HTTPException():
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return Failure(exc.status, exc.text or exc.reason, None, allow)
        case TimeoutError():
            # Before OSError, of which it is one: a store that did not answer in time (either).
            log.warning("a store timed out on %s %s", request.method, request.path)
            message = "A store did not answer in time; try again shortly"
            return Failure(503, message, None, _RETRY_SOON)
        case (
            asyncpg.PostgresConnectionError()
            # The server shutting down or starting up (57P01, 57P03, ...), and the client state
            # a connection cut mid-statement leaves behind.
            | asyncpg.exceptions.OperatorInterventionError()
            | asyncpg.exceptions.InternalClientError()
            | asyncpg.InterfaceError()
            | asyncpg.CannotConnectNowError()
            | asyncpg.TooManyConnectionsError()
            | ConnectionError()
            | OSError()
        ):
            log.warning("PostgreSQL unavailable: %r", exc)
            return Failure(503, "PostgreSQL is unavailable; try again shortly", None, _RETRY_SOON)
        case RedisError():
            log.warning("Redis unavailable: %r", exc)
            return Failure(503, "Redis is unavailable; try again shortly", None, _RETRY_SOON)
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return Failure(500, "Internal error; the request id is in X-Request-ID")


_RETRY_SOON = {"Retry-After": "1"}


def _ours(failure: Failure) -> web.Response:
    headers = dict(failure.headers or {})
    if failure.status == 401:
        # RFC 6750: a 401 says which scheme the API takes.
        headers["WWW-Authenticate"] = 'Bearer realm="mock-comms"'
    return error_response(failure.status, failure.message, error=failure.reason, headers=headers)


# Twilio's codes of the errors that are not about one parameter; any other status is 20000 plus
# the status, as Twilio's own are (20404, 20429, 20500, 20503).
_TWILIO_CODES = {401: 20003, 405: 20004}


def _twilio(failure: Failure) -> web.Response:
    """Twilio's error shape: `{code, message, more_info, status}`."""
    code = failure.code or _TWILIO_CODES.get(failure.status, 20000 + failure.status)
    headers = dict(failure.headers or {})
    if failure.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="mock-comms", Bearer realm="mock-comms"'
    body = {
        "code": code,
        "message": failure.message,
        "more_info": MORE_INFO.format(code=code),
        "status": failure.status,
    }
    return json_response(body, status=failure.status, headers=headers)


def _is_twilio(request: web.Request) -> bool:
    """Whether the request is to the Twilio face: a route of it, or a path under its prefix
    (an unknown one, or a method it does not take, is answered in its words too)."""
    route = request.app[appkeys.ROUTES].get(request.match_info.route)
    if route is not None:
        return route.twilio
    return request.path.startswith(TWILIO_PREFIX + "/")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors, aiohttp's own HTTP errors and store outages to the error shape of the
    route's face: ours (`{"error", "message"}`), or Twilio's on the Twilio face."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        failure = _failure(request, exc)
    except Exception as exc:
        failure = _failure(request, exc)
    return _twilio(failure) if _is_twilio(request) else _ours(failure)


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
    presented = presented_key(request, allow_query=route.query_token, allow_basic=route.twilio)
    keys = request.app[appkeys.KEYS]
    token = request.query.get(STREAM_TOKEN) if route.call_token else None
    if presented.secret is None and token:
        # The same call id the handler reads (a 400 here if it cannot be one).
        raw_id = request.match_info.get("call_id") or request.query.get("call_id", "")
        request[appkeys.API_KEY] = await keys.resolve_stream_token(token, parse_call_id(raw_id))
    elif route.twilio:
        key = await keys.resolve(presented.secret or None, missing=TWILIO_MISSING)
        _check_account(key, presented.account_sid, match_info.get("account_sid"))
        request[appkeys.API_KEY] = key
        # Its Auth Token, which its Twilio callbacks are signed with (api/handlers/twilio.py).
        request[appkeys.AUTH_TOKEN] = presented.secret
    else:
        request[appkeys.API_KEY] = await keys.resolve(presented.secret)
    return await handler(request)


def _check_account(key: ApiKey, named: str | None, in_path: str | None) -> None:
    """The Account SID of the Basic credentials and of the path, where given, are the key's."""
    if named is not None and named != key.account_sid:
        raise Unauthorized("The Account SID does not match the Auth Token")
    if in_path is not None and in_path != key.account_sid:
        raise Unauthorized(f"The credentials are not those of account {in_path[:64]}")
