"""The jobs the scheduler starts: each takes the due timers of its kind, a batch at a time, until
none is due or its time (`JOB_DRAIN_MS`) is up, so one RQ job carries as much as is due."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from calls import metrics as shared_metrics
from calls.timers import DueTimer
from calls.transitions import Move
from core import keys
from core.clock import now_ms
from core.lifecycle import Status, event_between, timed_target
from worker.runtime import runtime

log = logging.getLogger(__name__)


def advance_calls() -> dict[str, int]:
    """Move simulated calls on whose timers fell due."""
    rt = runtime()
    return rt.run(_drain(keys.ADVANCE, _advance))


def upload_recordings() -> dict[str, int]:
    """Upload the recordings of completed calls whose upload timers fell due."""
    rt = runtime()
    return rt.run(_drain(keys.UPLOAD, _upload))


async def _drain(kind: str, work: Callable[[list[DueTimer]], Awaitable[int]]) -> dict[str, int]:
    """Take due timers of `kind` in batches and `work` them; returns how many were taken and
    how many did something (the rest had been overtaken: a call moved on, an upload done).

    A batch taken but not worked (the process dies, PostgreSQL is away) is not lost: upkeep
    finds its calls and uploads in PostgreSQL with no timer and sets them again.
    """
    rt = runtime()
    settings = rt.stores.settings
    deadline = time.monotonic() + settings.job_drain_ms / 1000
    taken = done = 0
    while True:
        due = await rt.timers.pop_due(kind, now_ms(), settings.job_batch_size)
        if not due:
            break
        taken += len(due)
        done += await work(due)
        if time.monotonic() >= deadline:
            break
    return {"taken": taken, "done": done}


async def _advance(due: list[DueTimer]) -> int:
    """Move each call from the state its timer was set in (a call that moved on is skipped)."""
    rt = runtime()
    moves = []
    for timer in due:
        _, call_id, seq, status = timer.member.split(":")
        current = Status(status)
        target = timed_target(current, rt.stores.settings)
        if target is not None:
            moves.append(Move(call_id, int(seq), status, target, event_between(current, target)))
    moved = await rt.transitions.move(moves)
    now = now_ms()
    await _record([now - timer.due_ms for timer in due], len(moved))
    return len(moved)


async def _upload(due: list[DueTimer]) -> int:
    rt = runtime()
    counts = await rt.recordings.upload([timer.member.split(":", 1)[1] for timer in due])
    return sum(counts.values())


async def _record(lateness_ms: list[int], moved: int) -> None:
    """Add to the figures /metrics shows; losing them (Redis down) must not fail the job."""
    try:
        async with runtime().stores.redis.pipeline(transaction=False) as pipe:
            shared_metrics.observe_lateness(pipe, lateness_ms)
            shared_metrics.count(pipe, "transitions", moved)
            await pipe.execute()
    except RedisError:
        log.warning("could not record timer lateness")
