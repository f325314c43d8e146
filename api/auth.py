"""Who is calling: the API key from `Authorization: Bearer`, `X-API-Key` or `access_token=`."""

from __future__ import annotations

import hmac
from collections import OrderedDict

import asyncpg
from aiohttp import web

from core.clock import now_ms
from core.errors import Unauthorized
from db.keys import ApiKey, fetch_key_by_hash, hash_secret

# Distinct secrets remembered per process, known or not; bounded so random keys cannot grow it.
CACHE_SIZE = 10_000


def presented_secret(request: web.Request, *, allow_query: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.headers.get("X-API-Key"):
        return request.headers["X-API-Key"].strip()
    # Browsers cannot set headers on EventSource or WebSocket, so streams take it in the URL.
    if allow_query and request.query.get("access_token"):
        return request.query["access_token"]
    return None


class KeyResolver:
    """Looks keys up by hash, remembering answers for a few seconds (a disabled key stops
    working within `ttl_ms`)."""

    def __init__(self, pool: asyncpg.Pool, ttl_ms: int) -> None:
        self._pool = pool
        self._ttl_ms = ttl_ms
        self._cache: OrderedDict[bytes, tuple[ApiKey | None, int]] = OrderedDict()

    async def resolve(self, secret: str | None) -> ApiKey:
        if not secret:
            raise Unauthorized("Missing API key: send Authorization: Bearer <key>")
        digest = hash_secret(secret)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now_ms():
            key = cached[0]
        else:
            key = await fetch_key_by_hash(self._pool, digest)
            self._cache[digest] = (key, now_ms() + self._ttl_ms)
            self._cache.move_to_end(digest)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        # The lookup is by hash; compare the stored hash in constant time all the same.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise Unauthorized("Invalid API key")
        if not key.enabled:
            raise Unauthorized("API key is disabled")
        return key
