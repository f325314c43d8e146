"""Per-key limits: calls (concurrency leases and a per-second window, in one script) and events."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from core import keys
from core.clock import now_ms
from core.errors import RateLimited
from core.redis_mux import Client

WINDOW_MS = 1_000
# A key is named in the lease holders' index at most this often per process (keys.py).
REGISTER_EVERY_MS = 1_000
_SCRIPT = (Path(__file__).parent / "limiter.lua").read_text()
_EVENT_SCRIPT = (Path(__file__).parent / "event_rate.lua").read_text()

_GRANTED, _TOO_MANY_ACTIVE, _TOO_FAST = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Grant:
    """A taken slot; limit/remaining/reset_s describe the per-second window for RateLimit-*."""

    limit: int
    remaining: int
    reset_s: int


class Limiter:
    def __init__(self, redis: Client) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_SCRIPT)
        self._registered_ms: dict[str, int] = {}

    async def acquire(self, key_id: str, call_id: str, max_active: int, max_cps: int) -> Grant:
        """Take a lease and a rate slot for `call_id`, or raise RateLimited having taken nothing."""
        now = now_ms()
        if now - self._registered_ms.get(key_id, -REGISTER_EVERY_MS) >= REGISTER_EVERY_MS:
            # Upkeep finds lease sets through this index (a separate key, not in the script,
            # which touches only this key's hash-tagged keys).
            await self._redis.zadd(keys.lease_holders(), {key_id: now})
            self._registered_ms[key_id] = now
        code, limit, remaining, reset_ms = await self._acquire(
            keys=[keys.leases(key_id), keys.rate_window(key_id)],
            args=[call_id, max_active, max_cps, WINDOW_MS],
        )
        reset_s = max(1, math.ceil(int(reset_ms) / 1000))
        if code != _GRANTED:
            # The original service's messages, word for word.
            message = {
                _TOO_MANY_ACTIVE: f"Maximum concurrent calls reached ({max_active})",
                _TOO_FAST: f"Calls per second limit exceeded ({max_cps})",
            }[code]
            raise RateLimited(message, limit=int(limit), remaining=0, reset_s=reset_s)
        return Grant(limit=int(limit), remaining=int(remaining), reset_s=reset_s)

    async def undo(self, key_id: str, call_id: str) -> None:
        """Give back both slots of a call that was never created (its insert failed)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.leases(key_id), call_id)
            pipe.zrem(keys.rate_window(key_id), call_id)
            await pipe.execute()


class EventRate:
    """How many events a key may post per second (fixed one-second windows)."""

    def __init__(self, redis: Client) -> None:
        self._count = redis.register_script(_EVENT_SCRIPT)

    async def take(self, key_id: str, per_second: int) -> Grant:
        """Count one event, or raise RateLimited having counted nothing."""
        second = now_ms() // 1000
        allowed, counted, _ttl_ms = await self._count(
            keys=[keys.event_window(key_id, second)], args=[per_second, 2 * WINDOW_MS]
        )
        # The window is the current second, so it always resets within one.
        if not allowed:
            raise RateLimited(
                f"Events per second limit exceeded ({per_second})",
                limit=per_second,
                remaining=0,
                reset_s=1,
            )
        return Grant(limit=per_second, remaining=per_second - int(counted), reset_s=1)
