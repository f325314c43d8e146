"""`POST /calls`, `GET /calls` and `GET /calls/{id}`: create, list and read calls; `advance` and
`hangup` move a simulated call by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from aiohttp import web

from api import appkeys
from api.auth import stream_token
from api.handlers.common import base_url, json_body, json_response, path_call
from api.middlewares import rate_limit_headers
from api.request_models import (
    Advance,
    CreateCall,
    DeleteCalls,
    ListCalls,
    parse_body,
    parse_query,
)
from calls.views import call_body, created_body, status_update
from core.clock import now_ms
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
        scenario=None if body.scenario is None else body.scenario.scenario(),
        status_callback=body.status_callback,
        status_callback_events=body.status_callback_events,
        queue_id=body.queue_id,
    )
    headers = {}
    if created.grant is not None:
        grant = created.grant
        headers = rate_limit_headers(grant.limit, grant.remaining, grant.reset_s, grant.policy)
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    ref = created.call["ref"]
    expires_s = now_ms() // 1000 + request.app[appkeys.SETTINGS].stream_token_ttl_s
    token = stream_token(appkeys.api_key(request), ref, expires_s)
    body = created_body(created.call, base_url(request), token)
    return json_response(body, status=201, headers=headers)


async def delete_calls(request: web.Request) -> web.Response:
    """`DELETE /calls`: the key's ended calls deleted with their history and recordings (a test
    suite's clean slate); 409 while calls are active, unless `?force=true` ends them first."""
    query: DeleteCalls = parse_query(DeleteCalls, request.query)
    app = request.app
    cleared = await app[appkeys.DELETION].clear_key(
        appkeys.api_key(request).id, app[appkeys.TRANSITIONS], force=query.force
    )
    return json_response(
        {"deleted": cleared.deleted, "ended": cleared.ended, "remaining": cleared.remaining}
    )


async def list_calls(request: web.Request) -> web.Response:
    """`GET /calls`: the key's calls, newest first, a page at a time."""
    query = parse_query(ListCalls, request.query)
    key = appkeys.api_key(request)
    rows, total = await fetch_calls_page(
        request.app[appkeys.STORES].pool,
        key.id,
        CallFilter(
            status=query.status,
            flag=query.flag,
            queue_id=query.queue_id,
            call_type=query.type,
            from_number=query.from_,
            to_number=query.to,
            kind=query.source,
            end_reason=query.end_reason,
            created_after=_utc(query.created_after),
            created_before=_utc(query.created_before),
        ),
        limit=query.limit,
        offset=(query.page - 1) * query.limit,
        newest_first=query.sort == "-created_at",
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


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is UTC (as in posted events)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


async def get_call(request: web.Request) -> web.Response:
    call = await request.app[appkeys.CALLS].get(path_call(request))
    return json_response(call_body(call, base_url(request)))


async def advance_call(request: web.Request) -> web.Response:
    """The call's next timed state now (`?to=`: every state up to that one); 200 with the last
    transition."""
    call = path_call(request)
    query: Advance = parse_query(Advance, request.query)
    moved = await request.app[appkeys.CONTROL].advance(call, query.to)
    return json_response(status_update(moved))


async def hang_up_call(request: web.Request) -> web.Response:
    """End the call now, as its caller hanging up; 200 with that transition."""
    moved = await request.app[appkeys.CONTROL].hang_up(path_call(request))
    return json_response(status_update(moved))
