"""Who is calling: the API key from `Authorization: Bearer`, `X-API-Key` or `access_token=`,
or a call's stream token (`token=`, in the stream_url and websocket_url a create returns)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from core.clock import iso, now_ms
from core.errors import Unauthorized
from core.sids import is_account_sid
from db.keys import ApiKey, fetch_key_by_hash, fetch_key_by_id, hash_secret

# Keys remembered per process, and unknown secrets (kept apart, so a flood of made-up secrets
# cannot push the known keys out): each bounded, the oldest forgotten first.
CACHE_SIZE = 10_000
UNKNOWN_CACHE_SIZE = 10_000
# How long an unknown secret is remembered: long enough that repeating one costs PostgreSQL
# nothing, short enough that a key created just now works within it.
UNKNOWN_TTL_MS = 1_000


MISSING = "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"
TWILIO_MISSING = (
    "Missing credentials: send HTTP Basic AccountSid:AuthToken (the Auth Token is your API key)"
)
# Schemes a client may mean in an Authorization header: named back when it sends one (any
# other first word could be the key itself, which is never echoed).
_SCHEMES = {"basic", "digest", "token", "apikey", "api-key", "key", "bearer"}


# The query parameter of a call's stream token.
STREAM_TOKEN = "token"
_TOKEN_MAC_BYTES = 16
_LATEST_EXPIRY_S = 2**40  # far past any real expiry, short of what dates can hold


def stream_token(key: ApiKey, ref: str, expires_s: int) -> str:
    """A token that opens the streams of the call `key` knows as `ref` until `expires_s` (Unix
    seconds), for a browser's URLs in place of the key. Signed with the key's stored hash, so a
    deleted or disabled key's tokens die with it: `<key id>.<expiry>.<signature>`."""
    return f"{uuid.UUID(key.id).hex}.{expires_s}.{_signature(key, ref, expires_s)}"


def _signature(key: ApiKey, ref: str, expires_s: int) -> str:
    signed = f"stream:{key.id}:{ref}:{expires_s}".encode()
    digest = hmac.digest(key.key_hash, signed, "sha256")[:_TOKEN_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _token_parts(token: str) -> tuple[str, int, str]:
    """The key id, expiry and signature a token names; Unauthorized if it is not a token."""
    key_hex, _, rest = token.partition(".")
    expires, _, signature = rest.partition(".")
    try:
        key_id, expires_s = str(uuid.UUID(hex=key_hex)), int(expires)
    except ValueError:
        key_id, expires_s = "", 0
    if not (key_id and 0 < expires_s < _LATEST_EXPIRY_S and signature):
        raise Unauthorized("Invalid stream token")
    return key_id, expires_s, signature


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request presents: the key (None: none at all) and, with HTTP Basic (the Twilio
    face), the Account SID it names the key by."""

    secret: str | None
    account_sid: str | None = None


def presented_key(
    request: web.Request, *, allow_query: bool, allow_basic: bool = False
) -> Presented:
    """The key the request presents; Unauthorized for an Authorization header of another form
    (saying which form is taken). `allow_basic`: HTTP Basic `AccountSid:AuthToken` too (the
    Twilio face, whose Auth Token is the key)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return Presented(token.strip())
    if allow_basic and scheme.lower() == "basic" and token.strip():
        return _basic(token.strip())
    if request.headers.get("X-API-Key"):
        return Presented(request.headers["X-API-Key"].strip())
    # Browsers cannot set headers on EventSource or WebSocket, so streams take it in the URL.
    if allow_query and request.query.get("access_token"):
        return Presented(request.query["access_token"])
    if header.strip():
        given = f"'{scheme}'" if scheme.lower() in _SCHEMES else "a bare key"
        taken = "'Basic <AccountSid:AuthToken>', " if allow_basic else ""
        raise Unauthorized(
            f"Authorization must be {taken}'Bearer <key>', not {given}: send Authorization:"
            " Bearer <key>, or X-API-Key: <key>"
        )
    return Presented(None)


def _basic(encoded: str) -> Presented:
    """HTTP Basic credentials: an Account SID and its Auth Token (the key)."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError:
        raise Unauthorized("Basic credentials must be base64 of AccountSid:AuthToken") from None
    username, colon, password = decoded.partition(":")
    if not colon or not password:
        raise Unauthorized("Basic credentials must be AccountSid:AuthToken, the token not empty")
    if not is_account_sid(username):
        raise Unauthorized(
            "The Basic username must be your Account SID (AC and 32 hex digits: GET"
            " /2010-04-01/Accounts.json, or `python -m db keys list`)"
        )
    return Presented(password, username)


class KeyResolver:
    """Looks keys up by hash, remembering keys for `ttl_ms` and unknown secrets for a second.
    A change to a key (`python -m db keys`, published on Redis) is forgotten at once; `ttl_ms`
    bounds how long a change can go unseen when that message is lost. Concurrent lookups of
    one secret share one query."""

    def __init__(self, pool: asyncpg.Pool, ttl_ms: int) -> None:
        self._pool = pool
        self._ttl_ms = ttl_ms
        self._known: OrderedDict[bytes, tuple[ApiKey, int]] = OrderedDict()
        self._unknown: OrderedDict[bytes, int] = OrderedDict()
        self._looking_up: dict[bytes, asyncio.Future[ApiKey | None]] = {}

    async def resolve(self, secret: str | None, *, missing: str = MISSING) -> ApiKey:
        if not secret:
            raise Unauthorized(missing)
        digest = hash_secret(secret)
        key = await self._lookup(digest)
        # The lookup is by hash; compare the stored hash in constant time all the same.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise Unauthorized("Invalid API key")
        if not key.enabled:
            raise Unauthorized("API key is disabled")
        return key

    async def resolve_stream_token(self, token: str, ref: str) -> ApiKey:
        """The key whose stream token for the call `ref` this is; Unauthorized when it is
        expired, for another call, or its key is gone or disabled."""
        key_id, expires_s, signature = _token_parts(token)
        if expires_s * 1000 <= now_ms():
            expired = iso(datetime.fromtimestamp(expires_s, UTC))
            raise Unauthorized(
                f"Stream token expired at {expired}: read the call's stream with the API key"
                " (or access_token=)"
            )
        key = await self._lookup(
            b"id:" + key_id.encode(), lambda: fetch_key_by_id(self._pool, key_id)
        )
        if key is None or not hmac.compare_digest(
            signature.encode(), _signature(key, ref, expires_s).encode()
        ):
            raise Unauthorized("Invalid stream token: it opens only the streams of its own call")
        if not key.enabled:
            raise Unauthorized("API key is disabled")
        return key

    async def _lookup(
        self, cache_key: bytes, fetch: Callable[[], Awaitable[ApiKey | None]] | None = None
    ) -> ApiKey | None:
        """The key remembered under `cache_key` (its hash, or `id:` and its id), else fetched
        (by hash unless `fetch` says otherwise)."""
        now = now_ms()
        known = self._known.get(cache_key)
        if known is not None and known[1] > now:
            return known[0]
        unknown_until = self._unknown.get(cache_key)
        if unknown_until is not None and unknown_until > now:
            return None
        looking_up = self._looking_up.get(cache_key)
        if looking_up is None:
            fetching = fetch() if fetch else fetch_key_by_hash(self._pool, cache_key)
            looking_up = asyncio.ensure_future(fetching)
            self._looking_up[cache_key] = looking_up
            looking_up.add_done_callback(lambda done: self._remember(cache_key, done))
        return await asyncio.shield(looking_up)

    def _remember(self, digest: bytes, done: asyncio.Future[ApiKey | None]) -> None:
        self._looking_up.pop(digest, None)
        if done.cancelled() or done.exception() is not None:
            return
        key = done.result()
        now = now_ms()
        if key is None:
            _put(self._unknown, digest, now + UNKNOWN_TTL_MS, UNKNOWN_CACHE_SIZE)
        else:
            self._unknown.pop(digest, None)
            _put(self._known, digest, (key, now + self._ttl_ms), CACHE_SIZE)

    def forget(self, key_id: str) -> None:
        """Forget what is remembered of a key that changed, and every unknown secret (one may
        be the key's, created just now)."""
        for digest in [d for d, (key, _) in self._known.items() if key.id == key_id]:
            del self._known[digest]
        self._unknown.clear()


def _put(cache: OrderedDict[bytes, Any], digest: bytes, value: Any, size: int) -> None:
    cache[digest] = value
    cache.move_to_end(digest)
    while len(cache) > size:
        cache.popitem(last=False)
