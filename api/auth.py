"""Who is calling: the API key from `Authorization: Bearer`, `X-API-Key` or `access_token=`."""

from __future__ import annotations

import asyncio
import hmac
from collections import OrderedDict
from typing import Any

import asyncpg
from aiohttp import web

from core.clock import now_ms
from core.errors import Unauthorized
from db.keys import ApiKey, fetch_key_by_hash, hash_secret

# Keys remembered per process, and unknown secrets (kept apart, so a flood of made-up secrets
# cannot push the known keys out): each bounded, the oldest forgotten first.
CACHE_SIZE = 10_000
UNKNOWN_CACHE_SIZE = 10_000
# How long an unknown secret is remembered: long enough that repeating one costs PostgreSQL
# nothing, short enough that a key created just now works within it.
UNKNOWN_TTL_MS = 1_000


MISSING = "Missing API key: send Authorization: Bearer <key>, or X-API-Key: <key>"
# Schemes a client may mean in an Authorization header: named back when it sends one (any
# other first word could be the key itself, which is never echoed).
_SCHEMES = {"basic", "digest", "token", "apikey", "api-key", "key", "bearer"}


def presented_secret(request: web.Request, *, allow_query: bool) -> str | None:
    """The key the request presents, or None when it presents none at all; Unauthorized for an
    Authorization header of another form (saying which form is taken)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.headers.get("X-API-Key"):
        return request.headers["X-API-Key"].strip()
    # Browsers cannot set headers on EventSource or WebSocket, so streams take it in the URL.
    if allow_query and request.query.get("access_token"):
        return request.query["access_token"]
    if header.strip():
        given = f"'{scheme}'" if scheme.lower() in _SCHEMES else "a bare key"
        raise Unauthorized(
            f"Authorization must be 'Bearer <key>', not {given}: send Authorization: Bearer"
            " <key>, or X-API-Key: <key>"
        )
    return None


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

    async def resolve(self, secret: str | None) -> ApiKey:
        if not secret:
            raise Unauthorized(MISSING)
        digest = hash_secret(secret)
        key = await self._lookup(digest)
        # The lookup is by hash; compare the stored hash in constant time all the same.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise Unauthorized("Invalid API key")
        if not key.enabled:
            raise Unauthorized("API key is disabled")
        return key

    async def _lookup(self, digest: bytes) -> ApiKey | None:
        now = now_ms()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None and unknown_until > now:
            return None
        looking_up = self._looking_up.get(digest)
        if looking_up is None:
            looking_up = asyncio.ensure_future(fetch_key_by_hash(self._pool, digest))
            self._looking_up[digest] = looking_up
            looking_up.add_done_callback(lambda done: self._remember(digest, done))
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
