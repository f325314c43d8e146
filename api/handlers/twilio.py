"""The Twilio face: Twilio's Calls API over our calls, under /2010-04-01/Accounts/{AccountSid}/,
for the official SDKs pointed at mock-comms. Every call here is made, moved and called back by
the same services as our own routes (calls/service.py, calls/control.py, calls/callbacks.py);
only the words differ (calls/twilio.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from api import appkeys
from api.handlers.common import json_response
from api.middlewares import rate_limit_headers
from api.twilio_requests import (
    INVALID_PARAMETER,
    UNSUPPORTED_FILTERS,
    CreateTwilioCall,
    ListTwilioCalls,
    UpdateTwilioCall,
    parse_form,
    read_form,
)
from calls.scenarios import Scenario
from calls.twilio import (
    MAGIC_FROM,
    MAGIC_TO,
    PREFIX,
    SCRIPTED_TO,
    STATUS_FILTERS,
    account_resource,
    call_resource,
    calls_uri,
    page,
)
from core.call_ids import CallRef
from core.errors import BadRequest, Conflict, NotFound
from core.lifecycle import Status
from core.sids import call_id_of
from db.calls import CallFilter, fetch_calls_page
from db.keys import ApiKey, hash_secret, keep_auth_token

# The status callback's host must be allowed: Twilio's code for a URL it cannot take.
INVALID_URL = 21205
INVALID_CALL_STATE = 21220


def _friendly_name(key: ApiKey) -> str:
    # Test keys may be named after their secret: a name that is the key is never shown.
    return key.account_sid if hash_secret(key.name) == key.key_hash else key.name


async def list_accounts(request: web.Request) -> web.Response:
    """`GET /2010-04-01/Accounts.json`: the caller's own account, so a client finds its SID."""
    key = appkeys.api_key(request)
    account = account_resource(key.id, _friendly_name(key), key.created_at)
    body = page(
        "accounts",
        [account],
        path=f"{PREFIX}/Accounts.json",
        query={},
        page_number=0,
        page_size=50,
        has_next=False,
    )
    return json_response(body)


async def get_account(request: web.Request) -> web.Response:
    """`GET /2010-04-01/Accounts/{AccountSid}.json` (the caller's; another is a 401)."""
    key = appkeys.api_key(request)
    return json_response(account_resource(key.id, _friendly_name(key), key.created_at))


async def create_call(request: web.Request) -> web.Response:
    """`POST .../Calls.json`: a simulated call, within the key's limits; a magic `To` or `From`
    of Twilio's test credentials is refused as Twilio refuses it, one of ours scripts the end."""
    key = appkeys.api_key(request)
    body: CreateTwilioCall = parse_form(CreateTwilioCall, await read_form(request))
    if body.url is None and body.twiml is None and body.application_sid is None:
        raise BadRequest(
            "Url parameter is required (or Twiml, or ApplicationSid). For more information,"
            " see http://www.twilio.com/docs/api/twiml",
            code=INVALID_URL,
        )
    refused = MAGIC_FROM.get(body.from_) or MAGIC_TO.get(body.to)
    if refused is not None:
        raise BadRequest(refused.message, code=refused.code)
    if body.status_callback is not None and not key.auth_token_kept:
        # Twilio signs callbacks with the Auth Token itself: the platform keeps it from here on
        # (docs/RELIABILITY.md, "The Twilio face's Auth Token").
        await keep_auth_token(request.app[appkeys.STORES].pool, key, request[appkeys.AUTH_TOKEN])
    outcome = SCRIPTED_TO.get(body.to)
    try:
        created = await request.app[appkeys.CALLS].create(
            key,
            from_number=body.from_,
            to_number=body.to,
            metadata={},
            scenario=None if outcome is None else Scenario(outcome=outcome),
            status_callback=body.status_callback,
            status_callback_events=None if body.status_callback is None else body.statuses(),
            twilio=body.kept(),
        )
    except BadRequest as exc:
        # The one refusal of a create: a StatusCallback host outside CALLBACK_ALLOWED_HOSTS.
        raise BadRequest(f"StatusCallback: {exc.message}", code=INVALID_URL) from None
    headers = {}
    if created.grant is not None:
        grant = created.grant
        headers = rate_limit_headers(grant.limit, grant.remaining, grant.reset_s, grant.policy)
    return json_response(call_resource(created.call), status=201, headers=headers)


async def list_calls(request: web.Request) -> web.Response:
    """`GET .../Calls.json`: the key's calls made to move on their own (not ingested ones),
    newest first, filtered by To, From, Status and StartTime (=, >=, <=)."""
    key = appkeys.api_key(request)
    for name in UNSUPPORTED_FILTERS:
        if name in request.query:
            message = f"{name} is a filter mock-comms does not apply"
            raise BadRequest(message, code=INVALID_PARAMETER)
    query: ListTwilioCalls = parse_form(ListTwilioCalls, request.query)
    statuses, end_reason = STATUS_FILTERS[query.status] if query.status else (None, None)
    rows, _ = await fetch_calls_page(
        request.app[appkeys.STORES].pool,
        key.id,
        CallFilter(
            statuses=statuses,
            end_reason=end_reason,
            from_number=query.from_,
            to_number=query.to,
            kind="simulated",
            created_since=query.created_since(),
            created_before=query.created_before(),
        ),
        # One more than the page, to know whether a next page exists without counting them all.
        limit=query.page_size + 1,
        offset=query.page * query.page_size,
        with_total=False,
    )
    body = page(
        "calls",
        [call_resource(row) for row in rows[: query.page_size]],
        path=calls_uri(key.id),
        query=query.filters(),
        page_number=query.page,
        page_size=query.page_size,
        has_next=len(rows) > query.page_size,
    )
    return json_response(body)


async def _call(request: web.Request) -> tuple[CallRef, Mapping[str, Any]]:
    """The caller's call the path's Call SID names (a simulated one), or Twilio's 20404."""
    call_id = call_id_of(request.match_info["call_sid"])
    missing = NotFound(f"The requested resource {request.path[:200]} was not found")
    if call_id is None:
        raise missing
    ref = CallRef(appkeys.api_key(request).id, call_id)
    try:
        call = await request.app[appkeys.CALLS].get(ref)
    except NotFound:
        raise missing from None
    if call["kind"] != "simulated":
        raise missing
    return ref, call


async def get_call(request: web.Request) -> web.Response:
    """`GET .../Calls/{CallSid}.json`."""
    _, call = await _call(request)
    return json_response(call_resource(call))


async def update_call(request: web.Request) -> web.Response:
    """`POST .../Calls/{CallSid}.json`: `Status=completed` hangs the call up whatever its state,
    `Status=canceled` only one not yet answered (an answered call goes on); a call that has
    ended is answered as it is. New `Url` or `Twiml` are taken as the first ones are (not run),
    but not for a call that has ended (21220, as Twilio)."""
    body: UpdateTwilioCall = parse_form(UpdateTwilioCall, await read_form(request))
    ref, call = await _call(request)
    ended = call["status"] == Status.COMPLETED
    if body.status is None:
        if ended and (body.url or body.twiml):
            raise BadRequest("Call is not in-progress. Cannot redirect.", code=INVALID_CALL_STATE)
        return json_response(call_resource(call))
    answered = call["status"] in (Status.ANSWERED, Status.ON_HOLD)
    if not ended and (body.status == "completed" or not answered):
        # One that ended meanwhile (a Conflict) is answered as it is now.
        with contextlib.suppress(Conflict):
            await request.app[appkeys.CONTROL].hang_up(ref)
        call = await request.app[appkeys.CALLS].get(ref)
    return json_response(call_resource(call))
