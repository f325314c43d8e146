"""What several handlers need: the caller's base URL, the JSON body, a UUID from the path."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from api import appkeys
from core.errors import BadRequest


def base_url(request: web.Request) -> str:
    configured = request.app[appkeys.SETTINGS].public_base_url
    return configured.rstrip("/") if configured else str(request.url.origin())


async def json_body(request: web.Request) -> Any:
    """The parsed JSON body; malformed JSON is a 400, an oversized body a 413."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("Request body must be a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON: {exc.msg} at position {exc.pos}") from None


def path_uuid(request: web.Request, name: str = "call_id") -> str:
    return as_uuid(request.match_info[name], name)


def as_uuid(raw: str, name: str) -> str:
    """`raw` in canonical UUID form, or a 400 naming the parameter."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest(f"{name} must be a UUID, got {raw[:64]!r}") from None


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
