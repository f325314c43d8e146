"""The job the scheduler starts: it takes due timers, a batch at a time, until none is due or its
time (`JOB_DRAIN_MS`) is up, so one RQ job carries as much as is due."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from calls import metrics as shared_metrics
from calls.timers import DueTimer
from calls.transitions import Move
from core import keys
from core.clock import now_ms
from core.lifecycle import Status, event_between, timed_target
from worker.runtime import runtime

log = logging.getLogger(__name__)


def drain_timers() -> dict[str, int]:
    """Work off the due timers of every kind: calls to move on, recordings to upload."""
    rt = runtime()
    return rt.run(_drain())


# The figures a job adds to /metrics go to Redis at most this often (and when it ends).
RECORD_EVERY_S = 0.25


@dataclass(slots=True)
class Figures:
    """Timer lateness and moves counted by a job since it last recorded them."""

    lateness_ms: list[int] = field(default_factory=list)
    moved: int = 0
    recorded_at: float = field(default_factory=time.monotonic)

    async def record(self) -> None:
        """Add them to the figures /metrics shows; losing them (Redis down) must not fail the
        job."""
        if self.lateness_ms:
            try:
                async with runtime().stores.mux.pipeline() as pipe:
                    shared_metrics.observe_lateness(pipe, self.lateness_ms)
                    shared_metrics.count(pipe, "transitions", self.moved)
                    await pipe.execute()
            except RedisError:
                log.warning("could not record timer lateness")
        self.lateness_ms, self.moved, self.recorded_at = [], 0, time.monotonic()


async def _drain() -> dict[str, int]:
    """Take due timers in batches until none is due or JOB_DRAIN_MS is up: moves and uploads
    each in a loop of their own, so neither waits for the other's batch (an upload waiting on
    storage does not hold up the moves). Returns how many of each kind were taken.

    A batch taken but not worked (the process dies, PostgreSQL is away) is not lost: upkeep
    finds its calls and uploads in PostgreSQL with no timer and sets them again.
    """
    rt = runtime()
    settings = rt.stores.settings
    deadline = time.monotonic() + settings.job_drain_ms / 1000
    figures = Figures()

    async def take(kind: str, work: Callable[[list[DueTimer]], Awaitable[None]]) -> int:
        taken = 0
        while True:
            due = (await rt.timers.pop_due(now_ms(), settings.job_batch_size, (kind,)))[kind]
            if not due:
                return taken
            taken += len(due)
            await work(due)
            if kind == keys.ADVANCE and time.monotonic() - figures.recorded_at >= RECORD_EVERY_S:
                await figures.record()
            if time.monotonic() >= deadline:
                return taken

    try:
        moved, uploaded = await asyncio.gather(
            take(keys.ADVANCE, lambda due: _advance(due, figures)), take(keys.UPLOAD, _upload)
        )
    finally:
        await figures.record()
    return {keys.ADVANCE: moved, keys.UPLOAD: uploaded}


async def _advance(due: list[DueTimer], figures: Figures) -> None:
    """Move each call from the state its timer was set in (a call that moved on is skipped)."""
    if not due:
        return
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
    figures.lateness_ms += [now - timer.due_ms for timer in due]
    figures.moved += len(moved)


async def _upload(due: list[DueTimer]) -> None:
    if due:
        await runtime().recordings.upload([timer.member.split(":", 1)[1] for timer in due])
