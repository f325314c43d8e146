"""`POST /calls`, `GET /calls` and `GET /calls/{id}`: create, list and read calls."""

from __future__ import annotations

import math

from aiohttp import web

from api import appkeys
from api.handlers.common import base_url, json_body, json_response, path_call
from api.middlewares import rate_limit_headers
from api.schemas import CreateCall, ListCalls, parse_body, parse_query
from calls.views import call_body, created_body
from core.errors import BadRequest
from db.calls import CallFilter, fetch_calls_page

IDEMPOTENCY_KEY_MAX = 255


def _is_utf8(header: str) -> bool:
    # aiohttp hands on header bytes that are not UTF-8 as surrogate escapes.
    try:
        header.encode()
    except UnicodeEncodeError:
        return False
    return True


async def create_call(request: web.Request) -> web.Response:
    body: CreateCall = parse_body(CreateCall, await json_body(request))
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not (
        0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX and _is_utf8(idempotency_key)
    ):
        raise BadRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} UTF-8 characters")
    created = await request.app[appkeys.CALLS].create(
        appkeys.api_key(request),
        from_number=body.from_,
        to_number=body.to,
        metadata=body.metadata,
        idempotency_key=idempotency_key,
        queue_id=body.queue_id,
    )
    headers = {}
    if created.grant is not None:
        grant = created.grant
        headers = rate_limit_headers(grant.limit, grant.remaining, grant.reset_s)
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(created_body(created.call, base_url(request)), status=201, headers=headers)


async def list_calls(request: web.Request) -> web.Response:
    """`GET /calls`: the key's calls, newest first, a page at a time."""
    query = parse_query(ListCalls, request.query)
    key = appkeys.api_key(request)
    rows, total = await fetch_calls_page(
        request.app[appkeys.STORES].pool,
        key.id,
        CallFilter(
            status=query.status, flag=query.flag, queue_id=query.queue_id, call_type=query.type
        ),
        limit=query.limit,
        offset=(query.page - 1) * query.limit,
    )
    base = base_url(request)
    return json_response(
        {
            "data": [call_body(row, base) for row in rows],
            "total": total,
            "page": query.page,
            "limit": query.limit,
            "totalPages": math.ceil(total / query.limit),
        }
    )


async def get_call(request: web.Request) -> web.Response:
    call = await request.app[appkeys.CALLS].get(path_call(request))
    return json_response(call_body(call, base_url(request)))
