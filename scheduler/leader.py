"""The lead: one scheduler runs upkeep, the retention purge and the live queue figures
(scheduler/stats.py), the others stand by and take the lead when its lock lapses. Every
scheduler dispatches due timers whoever leads (dispatch.py).

The lead's record (core/keys.py `SCHEDULER_LEAD`) says who leads, since when, how often the
lead changed hands and how long it was vacant: the scheduler that takes it logs that, and
`/metrics` exports it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from core import keys

_LEAD = (Path(__file__).parent / "lead.lua").read_text()
_STEP_DOWN = (Path(__file__).parent / "step_down.lua").read_text()
_KEPT, _HELD_BY_ANOTHER, _TAKEN = 1, 0, 2


@dataclass(frozen=True, slots=True)
class Hold:
    """One attempt at the lead."""

    leading: bool
    # Taken just now (it was vacant).
    took: bool = False
    # Not leading: who leads. Took: who led before (None when none is recorded).
    holder: str | None = None
    # Took: how long none held the lead, and since the previous holder last renewed it, in ms
    # (None when Redis lost the record).
    vacant_ms: int | None = None
    since_renewal_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Lead:
    """The lead's record as /metrics exports it."""

    # Who leads now; None while the lead is vacant.
    holder: str | None
    # When the lead last changed hands (epoch ms), how often it has, and how long it was vacant
    # before the current (or last) holder took it; None when nothing is recorded.
    changed_ms: int | None
    changes: int
    vacant_ms: int | None


class LeaderLock:
    def __init__(self, redis: Redis, ttl_ms: int, name: str) -> None:
        """`name`: this scheduler's name in the logs and the metrics (core/instance.py)."""
        self.token = uuid.uuid4().hex
        self.ttl_ms = ttl_ms
        self.name = name
        self._lead = redis.register_script(_LEAD)
        self._step_down = redis.register_script(_STEP_DOWN)

    async def hold(self) -> Hold:
        """Keep the lead if it is ours, take it if it is vacant; say who leads otherwise."""
        reply = await self._lead(
            keys=[keys.SCHEDULER_LOCK, keys.SCHEDULER_LEAD],
            args=[self.token, self.ttl_ms, self.name],
        )
        code = int(reply[0])
        if code == _KEPT:
            return Hold(leading=True)
        if code == _HELD_BY_ANOTHER:
            return Hold(leading=False, holder=_name(reply[1]))
        assert code == _TAKEN, reply
        return Hold(
            leading=True,
            took=True,
            holder=_name(reply[1]),
            vacant_ms=_known(reply[2]),
            since_renewal_ms=_known(reply[3]),
        )

    async def release(self) -> None:
        """Give the lead up (a stop), if ours: a standby takes it at its next attempt."""
        await self._step_down(keys=[keys.SCHEDULER_LOCK, keys.SCHEDULER_LEAD], args=[self.token])


async def read_lead(redis: Redis) -> Lead:
    """Who leads now and when the lead last changed hands (for /metrics)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.SCHEDULER_LOCK)
        pipe.hgetall(keys.SCHEDULER_LEAD)
        token, raw = await pipe.execute()
    record = {k.decode(): v.decode() for k, v in raw.items()}
    # The record names the holder; the lock says whether it still holds the lead.
    leading = token is not None and token.decode() == record.get("token")
    return Lead(
        holder=record.get("holder") if leading else None,
        changed_ms=int(record["since_ms"]) if "since_ms" in record else None,
        changes=int(record.get("changes", 0)),
        vacant_ms=_known(record["vacant_ms"]) if "vacant_ms" in record else None,
    )


def _name(raw: bytes | str) -> str | None:
    name = raw.decode() if isinstance(raw, bytes) else raw
    return name or None


def _known(raw: bytes | str | int) -> int | None:
    value = int(raw)
    return value if value >= 0 else None
