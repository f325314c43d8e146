"""What one attempt at a status callback sends, in the format its call asked for: our JSON,
signed with the key's signing secret (X-MockComms-Signature), or, for a call of the Twilio face,
Twilio's form, POST or GET, signed with the key's Auth Token (X-Twilio-Signature). The callback
engine (calls/callbacks.py) sends either the same way: one order, retry and log for both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from yarl import URL

from calls.signing import (
    SIGNATURE_HEADER,
    TWILIO_SIGNATURE_HEADER,
    signature_header,
    twilio_signature,
)
from calls.twilio import callback_params
from calls.views import status_update

DELIVERY_HEADER = "X-MockComms-Delivery"
ATTEMPT_HEADER = "X-MockComms-Attempt"
USER_AGENT = "mock-comms-callbacks/1.0"
# Twilio's own name for what X-MockComms-Delivery says: the same on every attempt at a delivery.
TWILIO_IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


class Unsignable(Exception):
    """A delivery that cannot be signed (its key's Auth Token is not kept): a failed attempt."""


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    method: str
    # Sent as it is (a yarl URL is never quoted again): a signature over it holds at the receiver.
    url: URL
    body: bytes | None
    headers: dict[str, str]


def callback_request(claim: Mapping[str, Any], now_s: int) -> CallbackRequest:
    """The request of one attempt at the claimed delivery (db/callbacks.py), made at `now_s`
    (unix seconds)."""
    headers = {
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: claim["delivery_id"],
        ATTEMPT_HEADER: str(claim["attempt"]),
    }
    twilio = claim["twilio"]
    if twilio is None:
        body = orjson.dumps(status_update(claim))
        headers["Content-Type"] = "application/json"
        headers[SIGNATURE_HEADER] = signature_header(claim["signing_secret"], body, now_s)
        return CallbackRequest("POST", URL(claim["status_callback"]), body, headers)

    token = claim["auth_token"]
    if token is None:
        raise Unsignable("the key's Auth Token is not kept (was the key deleted?)")
    params = callback_params(claim)
    headers[TWILIO_IDEMPOTENCY_HEADER] = claim["delivery_id"]
    url = URL(claim["status_callback"])
    if twilio.get("status_callback_method") == "GET":
        url = url.extend_query(params)
        headers[TWILIO_SIGNATURE_HEADER] = twilio_signature(token, str(url), {})
        return CallbackRequest("GET", url, None, headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
    headers[TWILIO_SIGNATURE_HEADER] = twilio_signature(token, str(url), params)
    return CallbackRequest("POST", url, urlencode(params).encode(), headers)
