"""The limiter as every process opens it (slot sets Redis lost are restored from PostgreSQL),
and when a key at its concurrency limit is due to have a slot again."""

from __future__ import annotations

from calls.live import LiveState
from calls.scenarios import rest_after_timer_ms
from calls.stores import Stores
from core import keys
from core.limiter import CallKind, Limiter
from db import calls as db_calls


def open_limiter(stores: Stores) -> Limiter:
    async def active_calls(key_id: str, kind: CallKind) -> dict[str, int]:
        found = await db_calls.fetch_active_slots(stores.pool, [(key_id, kind.value)])
        return found[(key_id, kind.value)]

    return Limiter(stores.mux, active_calls, stores.settings.limit_restore_settle_ms)


# The oldest of a key's calls looked at for when one ends (they are the likeliest to end first).
ENDS_LOOKED_AT = 50


async def first_end_ms(stores: Stores, key_id: str) -> int | None:
    """When (epoch ms) the key's earliest active simulated call is due to end at the soonest:
    its pending timer's due time, plus the least the rest of its course takes; None when
    no call of the key has a timer (on hold, or Redis does not know)."""
    mux = stores.mux
    slots = [
        member.decode()
        for member in await mux.zrange(keys.leases(key_id), 0, ENDS_LOOKED_AT)
        if member != keys.SLOTS_KNOWN.encode()
    ][:ENDS_LOOKED_AT]
    if not slots:
        return None
    live = LiveState(mux)
    calls = [await live.read(call_id) for call_id in slots]
    timed = [
        (call, keys.advance_timer(call["call_id"], call["seq"], call["status"]))
        for call in calls
        if call is not None
    ]
    if not timed:
        return None
    due = await mux.zmscore(keys.timers(keys.ADVANCE), [member for _, member in timed])
    ends = [
        int(float(at)) + rest_after_timer_ms(call, stores.settings)
        for (call, _), at in zip(timed, due, strict=True)
        if at is not None
    ]
    return min(ends) if ends else None
