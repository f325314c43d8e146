"""Due times of timed work (moving a call on, retrying an upload, sending a status callback): one
Redis sorted set per kind, scored by due time in epoch ms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import keys
from core.redis_mux import Batch, Client

# Sent whole with EVAL, so the takes of several kinds share one pipeline (a registered script in
# a redis-py pipeline costs a SCRIPT EXISTS round trip first).
_POP = (Path(__file__).parent / "timers.lua").read_text()


@dataclass(frozen=True, slots=True)
class DueTimer:
    member: str
    due_ms: int


class Timers:
    def __init__(self, redis: Client) -> None:
        self._redis = redis

    @staticmethod
    def schedule(
        pipe: Batch | Client, member: str, due_ms: int, *, unless_set: bool = False
    ) -> Any:
        """Set a timer (on a pipeline, or awaitable on a client); an existing one is moved,
        or with `unless_set` left as it is."""
        return pipe.zadd(keys.timers(keys.timer_kind(member)), {member: due_ms}, nx=unless_set)

    @staticmethod
    def cancel(pipe: Batch | Client, member: str) -> Any:
        """Drop a timer (on a pipeline, or awaitable on a client), if it is set."""
        return pipe.zrem(keys.timers(keys.timer_kind(member)), member)

    async def pop_due(
        self, now_ms: int, limit: int, kinds: Sequence[str] = keys.TIMER_KINDS
    ) -> dict[str, list[DueTimer]]:
        """Take up to `limit` timers of each of `kinds` due by `now_ms`, earliest first, in
        one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind in kinds:
                pipe.eval(_POP, 1, keys.timers(kind), now_ms, limit)
            replies = await pipe.execute()
        return {
            kind: [
                DueTimer(reply[i].decode(), int(float(reply[i + 1])))
                for i in range(0, len(reply), 2)
            ]
            for kind, reply in zip(kinds, replies, strict=True)
        }

    async def pending(self, members: Sequence[str]) -> list[bool]:
        """Whether each member has a timer waiting."""
        waiting = [False] * len(members)
        by_kind: dict[str, list[int]] = {}
        for i, member in enumerate(members):
            by_kind.setdefault(keys.timer_kind(member), []).append(i)
        for kind, indexes in by_kind.items():
            scores = await self._redis.zmscore(keys.timers(kind), [members[i] for i in indexes])
            for i, score in zip(indexes, scores, strict=True):
                waiting[i] = score is not None
        return waiting
