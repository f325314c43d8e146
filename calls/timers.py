"""Due times of timed work (moving a call on, retrying an upload) in one Redis sorted set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from core import keys

_POP = (Path(__file__).parent / "timers.lua").read_text()


@dataclass(frozen=True, slots=True)
class DueTimer:
    member: str
    due_ms: int

    @property
    def kind(self) -> str:
        return self.member.split(":", 1)[0]


class Timers:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pop = redis.register_script(_POP)

    @staticmethod
    def schedule(pipe: Pipeline | Redis, member: str, due_ms: int) -> Any:
        """Set a timer (on a pipeline, or awaitable on a client); an existing one is moved."""
        return pipe.zadd(keys.TIMERS, {member: due_ms})

    async def pop_due(self, now_ms: int, limit: int) -> tuple[list[DueTimer], int | None]:
        """Take up to `limit` due timers; also returns the next due time, if any."""
        reply = await self._pop(keys=[keys.TIMERS], args=[now_ms, limit])
        next_due = int(float(reply[-1])) if reply[-1] is not None else None
        items = reply[:-1]
        due = [
            DueTimer(items[i].decode(), int(float(items[i + 1]))) for i in range(0, len(items), 2)
        ]
        return due, next_due

    async def pending(self, members: list[str]) -> list[bool]:
        """Whether each member has a timer waiting."""
        if not members:
            return []
        scores = await self._redis.zmscore(keys.TIMERS, members)
        return [score is not None for score in scores]
