"""What several handlers need: the caller's base URL, the JSON body, the call a path names."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from api import appkeys
from core.call_ids import CallRef, parse_call_id
from core.errors import BadRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# How deep a JSON body may nest (metadata is the only place it can).
MAX_DEPTH = 32


def base_url(request: web.Request) -> str:
    configured = request.app[appkeys.SETTINGS].public_base_url
    return configured.rstrip("/") if configured else _origin(request.scheme, request.host)


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str) -> str:
    """What `request.url.origin()` gives, without building the request's URL each time."""
    return str(URL.build(scheme=scheme, authority=host).origin())


async def json_body(request: web.Request) -> Any:
    """The parsed JSON body; malformed JSON is a 400, an oversized body a 413."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception as exc:  # aiohttp's payload errors: a body not in its Content-Encoding, ...
        raise BadRequest(f"Request body could not be read: {exc}") from None
    if not raw.strip():
        raise BadRequest("Request body must be a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON: {exc.msg} at position {exc.pos}") from None
    _check_storable(body)
    return body


def _check_storable(body: Any) -> None:
    """Refuse what PostgreSQL cannot store, before it gets there: a NUL character (text and
    jsonb refuse U+0000) and nesting deeper than MAX_DEPTH."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"JSON is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            if "\x00" in value:
                raise BadRequest("JSON strings must not contain NUL characters (\\u0000)")
        elif isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def path_call(request: web.Request, name: str = "call_id") -> CallRef:
    """The caller's call named in the path (a 400 naming `name` if it cannot be a call id)."""
    return named_call(request, request.match_info[name], name)


def named_call(request: web.Request, raw: str, name: str = "call_id") -> CallRef:
    """The caller's call `raw` names."""
    return CallRef(appkeys.api_key(request).id, parse_call_id(raw, name))


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
