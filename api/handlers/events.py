"""`POST /events` and `GET /calls/{id}/events`: contact-centre events in, a call's history out."""

from __future__ import annotations

from aiohttp import web

from api import appkeys
from api.handlers.common import json_body, json_response, path_call
from api.request_models import HistoryPage, parse_query, posted_event
from calls.views import event_body


async def post_event(request: web.Request) -> web.Response:
    """201 with the stored event; 200 with the original when its event_id was seen before."""
    posted = posted_event(await json_body(request))
    ingested = await request.app[appkeys.EVENTS].ingest(appkeys.api_key(request), posted)
    return json_response(event_body(ingested.event), status=201 if ingested.created else 200)


async def call_events(request: web.Request) -> web.Response:
    """A page of the call's history, oldest first: `limit` events after `after_seq`."""
    call = path_call(request)
    page = parse_query(HistoryPage, request.query)
    # One more than the page, to know whether another follows.
    events = await request.app[appkeys.EVENTS].history(call, page.after_seq, page.limit + 1)
    more = len(events) > page.limit
    events = events[: page.limit]
    return json_response(
        {
            "call_id": call.ref,
            "data": [event_body(event) for event in events],
            "limit": page.limit,
            "next_after_seq": events[-1]["seq"] if more else None,
        }
    )
