"""The jobs the scheduler hands to RQ: plain functions over batches of due work."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from calls import metrics as shared_metrics
from calls.transitions import Move
from core.clock import now_ms
from core.lifecycle import Status, event_between, timed_target
from worker.runtime import runtime

log = logging.getLogger(__name__)


def advance_calls(due: list[tuple[str, int, str, int]]) -> dict[str, int]:
    """Move simulated calls whose timers fell due: `(call id, seq and state the timer was set
    at, due ms)`.

    A call no longer at that seq has moved on (an event, a duplicate timer) and is skipped.
    """
    rt = runtime()
    moves = []
    for call_id, seq, status, _due_ms in due:
        current = Status(status)
        target = timed_target(current, rt.stores.settings)
        if target is not None:
            moves.append(Move(call_id, seq, status, target, event_between(current, target)))
    moved = rt.run(rt.transitions.move(moves))
    lateness_ms = [now_ms() - due_ms for *_, due_ms in due]
    rt.run(_record(lateness_ms, len(moved)))
    return {"due": len(due), "moved": len(moved), "max_late_ms": max(lateness_ms, default=0)}


async def _record(lateness_ms: list[int], moved: int) -> None:
    """Add to the figures /metrics shows; losing them (Redis down) must not fail the job."""
    try:
        async with runtime().stores.redis.pipeline(transaction=False) as pipe:
            shared_metrics.observe_lateness(pipe, lateness_ms)
            shared_metrics.count(pipe, "transitions", moved)
            await pipe.execute()
    except RedisError:
        log.warning("could not record timer lateness")


def upload_recordings(call_ids: list[str]) -> dict[str, int]:
    """Upload the recordings of completed calls whose upload timers fell due."""
    rt = runtime()
    return rt.run(rt.recordings.upload(call_ids))
