"""Status callback signatures: how the platform signs a callback, and the check a receiver makes.
Standard library only, so a receiver may copy this file into its own code as it is.

    X-MockComms-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The HMAC key is the whole signing secret, `whsec_` included, as UTF-8. A receiver checks the
signature over the raw body as received (before any JSON parsing), compares in constant time,
and refuses a timestamp more than five minutes from its own clock, so a recorded callback cannot
be replayed later.

The Twilio face's callbacks are signed as Twilio signs them instead (`twilio_signature`), so the
Twilio SDKs' own RequestValidator checks them:

    X-Twilio-Signature: base64(HMAC-SHA1(auth token, url + every name and value, by name))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-MockComms-Signature"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
# How far a callback's timestamp may be from the receiver's clock, either way.
TOLERANCE_S = 300


class SignatureError(ValueError):
    """A callback whose signature does not verify: refuse it (answer 400 or 401)."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The v1 signature of `body` sent at `timestamp` (unix seconds), in hex."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The X-MockComms-Signature value for `body` sent at `timestamp`."""
    return f"t={timestamp},v1={sign(secret, body, timestamp)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check an X-MockComms-Signature `header` against the raw `body` received; returns the
    callback's timestamp, or raises SignatureError. Any one of several `v1=` entries may match
    (a header may carry more than one signature)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex signature>")
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise SignatureError(f"the timestamp is more than {tolerance_s:g} s from now")
    expected = sign(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches the body")
    return timestamp


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature of a request to `url` (the whole URL the receiver is sent to, its query
    included) with the form `params` of its body (none for a GET): the URL, then each parameter's
    name and value in the order of the names, HMAC-SHA1 with the Auth Token, in base64."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.digest(auth_token.encode(), signed.encode(), hashlib.sha1)
    return base64.b64encode(digest).decode()
