"""The live view of each call in Redis: written forward-only by seq, read by GET and streams."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calls.views import call_from_live, live_json
from core import keys
from core.redis_mux import Batch, Client

# Sent whole with EVAL (Redis caches it by its digest): an EVALSHA script in a redis-py pipeline
# costs a SCRIPT EXISTS round trip before every execute. Comment lines are not sent.
_SCRIPT = "\n".join(
    line
    for line in (Path(__file__).parent / "live.lua").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("--")
)
# How long an ended call stays in Redis; reads after that come from PostgreSQL.
ENDED_TTL_MS = 60 * 60 * 1000


class LiveState:
    def __init__(self, redis: Client) -> None:
        self._redis = redis

    @staticmethod
    def write(pipe: Batch, row: Mapping[str, Any]) -> None:
        """Queue on `pipe` the write of a call row from PostgreSQL, unless Redis has newer."""
        ttl_ms = ENDED_TTL_MS if row["status"] == "COMPLETED" else 0
        pipe.eval(
            _SCRIPT, 1, keys.call_state(row["call_id"]), row["seq"], ttl_ms, "call", live_json(row)
        )

    async def read(self, call_id: str) -> dict[str, Any] | None:
        seq, view = await self._redis.hmget(keys.call_state(call_id), "seq", "call")
        return call_from_live(seq, view) if view is not None else None
