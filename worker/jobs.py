"""The jobs of the workers: the one the scheduler starts, which takes due timers a batch at a time
until none is due or its time (`JOB_DRAIN_MS`) is up, so one RQ job carries as much as is due;
and a dead letter, requeued (calls/dead_letters.py)."""

from __future__ import annotations

import asyncio
import time

from calls.timed_work import BY_NAME, Handler
from core.clock import now_ms
from worker.runtime import runtime


def drain_timers() -> dict[str, int]:
    """Work off the due timers of every kind (calls/timed_work.py)."""
    rt = runtime()
    return rt.run(_drain())


async def _drain() -> dict[str, int]:
    """Take due timers in batches until none is due or JOB_DRAIN_MS is up, each kind in a loop
    of its own, so no kind waits for another's batch (an upload waiting on storage does not hold
    up the moves). Returns how many of each kind were taken.

    A batch taken but not worked (the process dies, PostgreSQL is away) is not lost: upkeep
    finds its work in PostgreSQL with no timer and sets it again.
    """
    rt = runtime()
    settings = rt.stores.settings
    deadline = time.monotonic() + settings.job_drain_ms / 1000

    async def take(kind: str, handler: Handler) -> int:
        taken = 0
        while True:
            due = (await rt.timers.pop_due(now_ms(), settings.job_batch_size, (kind,)))[kind]
            if not due:
                return taken
            taken += len(due)
            await handler.work(due)
            if time.monotonic() >= deadline:
                return taken

    handlers = rt.handlers
    try:
        taken = await asyncio.gather(*(take(kind, handler) for kind, handler in handlers.items()))
    finally:
        for handler in handlers.values():
            await handler.flush()
    return dict(zip(handlers, taken, strict=True))


def retry_spent(kind: str, call_id: str) -> None:
    """A dead letter requeued (rq-dashboard): try the call's spent work of `kind` once more.
    Raises RetryFailed if it fails again, so the job fails and is a dead letter again."""
    retry = BY_NAME[kind].retry
    assert retry is not None, f"work of kind {kind} is never spent"
    rt = runtime()
    rt.run(retry(rt, call_id))
