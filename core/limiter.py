"""Per-key limits: calls (slots of active calls, and a per-second window for simulated ones, in
one script) and events.

A key's active calls of each kind are a slot set in Redis (core/keys.py). A set Redis lost is
never taken for an empty one: the first request that finds it unknown restores it from
PostgreSQL, once the inserts Redis may have lost slots of have had time to commit, and only
then is a slot given.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from core import keys
from core.clock import now_ms
from core.errors import RateLimited
from core.redis_mux import Client

WINDOW_MS = 1_000
# A key is named in the lease holders' index at most this often per process (keys.py).
REGISTER_EVERY_MS = 1_000
_SCRIPT = (Path(__file__).parent / "limiter.lua").read_text()
_RESTORE = (Path(__file__).parent / "restore.lua").read_text()
_SINCE = (Path(__file__).parent / "limits_since.lua").read_text()
_EVENT_SCRIPT = (Path(__file__).parent / "event_rate.lua").read_text()

_GRANTED, _TOO_MANY_ACTIVE, _TOO_FAST, _UNKNOWN, _HELD = 0, 1, 2, 3, 4

T = TypeVar("T")


class CallKind(StrEnum):
    """The calls a key's slot sets count: each kind has its own set and limit."""

    SIMULATED = "simulated"
    INGESTED = "ingested"


def slot_set(kind: CallKind, key_id: str) -> str:
    return keys.leases(key_id) if kind is CallKind.SIMULATED else keys.ingested_slots(key_id)


# PostgreSQL's active calls of a key and kind: call id -> when its slot was taken (ms).
ActiveCalls = Callable[[str, CallKind], Awaitable[dict[str, int]]]


@dataclass(frozen=True, slots=True)
class Grant:
    """A taken slot; limit/remaining/reset_s describe the per-second window for RateLimit-*,
    `policy` both limits (RateLimit-Policy)."""

    limit: int
    remaining: int
    reset_s: int
    policy: str | None = None


def call_policy(max_active: int, max_cps: int) -> str:
    """The RateLimit-Policy header (IETF httpapi draft) of a key's two limits on new calls."""
    return f'"concurrency";q={max_active};qu="concurrent-requests", "cps";q={max_cps};w=1'


class TooManyActive(RateLimited):
    """The concurrency limit refused: `reset_s` is 1 until someone knows better (when the key's
    earliest call is due to end: calls/limits.py)."""


class Limiter:
    def __init__(self, redis: Client, active_calls: ActiveCalls, settle_ms: int) -> None:
        """`active_calls` reads PostgreSQL to restore a slot set; `settle_ms`: how long after
        Redis lost the limits a restore waits for the inserts in flight then to commit."""
        self._redis = redis
        self._active_calls = active_calls
        self._settle_ms = settle_ms
        self._take_script = redis.register_script(_SCRIPT)
        self._restore_script = redis.register_script(_RESTORE)
        self._since_script = redis.register_script(_SINCE)
        self._registered_ms: dict[str, int] = {}
        # Restores under way in this process, one per slot set.
        self._restoring: dict[str, asyncio.Future[None]] = {}
        # Slots given back after their request went away mid-acquire.
        self._undoing: set[asyncio.Task[None]] = set()

    async def acquire(self, key_id: str, call_id: str, max_active: int, max_cps: int) -> Grant:
        """Take a slot and a rate slot for the simulated call `call_id`, or raise RateLimited
        having taken nothing."""
        code, limit, remaining, reset_ms = await self._take(
            CallKind.SIMULATED, key_id, call_id, max_active, max_cps
        )
        reset_s = max(1, math.ceil(int(reset_ms) / 1000))
        policy = call_policy(max_active, max_cps)
        # The original service's messages, word for word.
        if code == _TOO_MANY_ACTIVE:
            raise TooManyActive(
                f"Maximum concurrent calls reached ({max_active})",
                limit=max_active,
                remaining=0,
                reset_s=1,
                policy=policy,
            )
        if code == _TOO_FAST:
            # Until the oldest call of the last second leaves the window.
            raise RateLimited(
                f"Calls per second limit exceeded ({max_cps})",
                limit=max_cps,
                remaining=0,
                reset_s=reset_s,
                policy=policy,
            )
        # HELD: this very request's command, sent again after a dropped connection (simulated
        # call ids are new for each request): its slot, as if granted now.
        return Grant(limit=int(limit), remaining=int(remaining), reset_s=reset_s, policy=policy)

    async def acquire_ingested(self, key_id: str, call_id: str, max_active: int) -> bool:
        """Take a slot for the ingested call `call_id`, or raise RateLimited having taken
        nothing. False when the call holds its slot already (a repeated call_initiated of an
        active call): the slot is that call's, not this request's to give back."""
        code, *_ = await self._take(CallKind.INGESTED, key_id, call_id, max_active, 0)
        if code == _HELD:
            return False
        if code != _GRANTED:
            raise RateLimited(
                f"Maximum active ingested calls reached ({max_active}): end some with"
                " call_ended (MAX_ACTIVE_INGESTED_CALLS_PER_KEY)",
                limit=max_active,
                remaining=0,
                reset_s=1,
            )
        return True

    async def undo(self, key_id: str, call_id: str, kind: CallKind = CallKind.SIMULATED) -> None:
        """Give back the slots of a call that was never created (its insert failed)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(slot_set(kind, key_id), call_id)
            if kind is CallKind.SIMULATED:
                pipe.zrem(keys.rate_window(key_id), call_id)
            await pipe.execute()

    async def keep_if_created(
        self,
        created: asyncio.Future[T | None],
        key_id: str,
        call_id: str,
        kind: CallKind = CallKind.SIMULATED,
    ) -> T | None:
        """Await the insert of a call holding its slots (`created` gives its row, or None when
        nothing was created); the slots are given back unless the call was created, also when
        the request goes away meanwhile (the insert goes on, and is waited for)."""
        try:
            row = await asyncio.shield(created)
        except asyncio.CancelledError:
            created.add_done_callback(
                lambda done: self._undo_unless_created(done, kind, key_id, call_id)
            )
            raise
        except BaseException:
            await self.undo(key_id, call_id, kind)
            raise
        if row is None:
            await self.undo(key_id, call_id, kind)
        return row

    def _undo_unless_created(
        self, created: asyncio.Future[Any], kind: CallKind, key_id: str, call_id: str
    ) -> None:
        if not created.cancelled() and created.exception() is None and created.result():
            return
        self._undo_soon(kind, key_id, call_id)

    async def _take(
        self, kind: CallKind, key_id: str, call_id: str, max_active: int, max_cps: int
    ) -> list[int]:
        """Run the script, restoring the slot set first if it is not known. Its outcome always
        reaches an owner: if the request goes away while the script is in flight (Redis runs
        it all the same), a slot it took is given back."""
        taking = asyncio.ensure_future(self._take_known(kind, key_id, call_id, max_active, max_cps))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(lambda done: self._undo_if_taken(done, kind, key_id, call_id))
            raise

    def _undo_if_taken(
        self, done: asyncio.Future[list[int]], kind: CallKind, key_id: str, call_id: str
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        code = done.result()[0]
        # A simulated call's slot held already was taken by this request (see acquire).
        if code == _GRANTED or (code == _HELD and kind is CallKind.SIMULATED):
            self._undo_soon(kind, key_id, call_id)

    def _undo_soon(self, kind: CallKind, key_id: str, call_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.undo(key_id, call_id, kind))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _take_known(
        self, kind: CallKind, key_id: str, call_id: str, max_active: int, max_cps: int
    ) -> list[int]:
        now = now_ms()
        if now - self._registered_ms.get(key_id, -REGISTER_EVERY_MS) >= REGISTER_EVERY_MS:
            # Upkeep finds slot sets through this index (a separate key, not in the script,
            # which touches only this key's hash-tagged keys).
            await self._redis.zadd(keys.lease_holders(), {key_id: now})
            self._registered_ms[key_id] = now
        sets = [slot_set(kind, key_id)]
        if kind is CallKind.SIMULATED:
            sets.append(keys.rate_window(key_id))
        args = [call_id, max_active, max_cps, WINDOW_MS]
        reply = await self._take_script(keys=sets, args=args)
        if reply[0] == _UNKNOWN:
            await self._make_known(kind, key_id)
            reply = await self._take_script(keys=sets, args=args)
            if reply[0] == _UNKNOWN:  # Redis lost it again meanwhile
                raise RateLimited(
                    "Limits are being restored after Redis lost them; try again shortly",
                    limit=max_active,
                    remaining=0,
                    reset_s=1,
                )
        return [int(value) for value in reply]

    async def _make_known(self, kind: CallKind, key_id: str) -> None:
        """Restore a slot set from PostgreSQL, once per process however many ask at once."""
        name = slot_set(kind, key_id)
        restoring = self._restoring.get(name)
        if restoring is None:
            restoring = asyncio.ensure_future(self._restore_one(kind, key_id))
            self._restoring[name] = restoring
            restoring.add_done_callback(lambda _: self._restoring.pop(name, None))
        await asyncio.shield(restoring)

    async def _restore_one(self, kind: CallKind, key_id: str) -> None:
        wait_ms = await self.settle_left_ms()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        await self.restore({(kind, key_id): await self._active_calls(key_id, kind)})

    async def settle_left_ms(self) -> int:
        """How long until PostgreSQL's active calls can be trusted for the limits: 0 once this
        Redis has held them for `settle_ms` (a new or flushed Redis starts the clock)."""
        since, now = await self._since_script(keys=[keys.LIMITS_SINCE], args=[])
        return max(0, int(since) + self._settle_ms - int(now))

    async def restore(self, active: dict[tuple[CallKind, str], dict[str, int]]) -> int:
        """Make the slot sets of (kind, key id) known from their active calls (call id -> ms
        its slot was taken); a set known already is left alone. Returns how many were
        restored."""
        restored = 0
        for (kind, key_id), calls in active.items():
            args: list[object] = []
            for call_id, taken_ms in calls.items():
                args += [taken_ms, call_id]
            restored += int(await self._restore_script(keys=[slot_set(kind, key_id)], args=args))
        return restored

    async def aclose(self) -> None:
        """Wait for the slots being given back."""
        if self._undoing:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._undoing, return_exceptions=True)


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
