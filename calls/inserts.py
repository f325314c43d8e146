"""New calls from concurrent requests go to PostgreSQL together: the calls that arrive while
earlier inserts are in flight share the next statement and its commit.

Each request still waits for its own call to be committed and made visible (live view, timers,
publish) before it is answered. At a few calls a second every insert goes alone and at once; at
thousands a second one statement carries dozens, and PostgreSQL's work per call, most of it per
statement and per commit, falls by half or more (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from db.calls import NewCall, insert_calls

log = logging.getLogger(__name__)

# At most this many insert statements at once (each holds a pool connection).
IN_FLIGHT = 4
# At most this many calls in one statement.
BATCH_MAX = 128
# Errors that belong to one call of a batch, not to PostgreSQL: a constraint one call breaks, a
# deadlock between two batches. The batch's calls are then inserted one by one, so each gets
# its own outcome; any other error (PostgreSQL unreachable, shutting down) goes to all of them.
_ONE_CALLS_FAULT = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.TransactionRollbackError,
)

AfterCommit = Callable[[Sequence[Any]], Awaitable[None]]


class CallInserts:
    def __init__(self, pool: asyncpg.Pool, after_commit: AfterCommit) -> None:
        self._pool = pool
        self._after_commit = after_commit
        self._waiting: deque[tuple[NewCall, asyncio.Future[asyncpg.Record | None]]] = deque()
        self._in_flight = 0
        # Tasks started that have not taken their first batch yet: one is enough.
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, new: NewCall) -> asyncio.Future[asyncpg.Record | None]:
        """Insert `new` with the next batch. The future gives its row once it is committed and
        visible, or None when its call id or Idempotency-Key was taken. Cancelling the future
        does not stop the insert."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record | None] = loop.create_future()
        self._waiting.append((new, future))
        if self._in_flight < IN_FLIGHT and not self._starting:
            self._in_flight += 1
            self._starting += 1
            # A context of its own: the batch's log lines name each call's request, not the
            # request that happened to start the task.
            task = loop.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _drain(self) -> None:
        self._starting -= 1
        try:
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(BATCH_MAX, len(self._waiting)))]
                try:
                    outcomes = await self._insert([new for new, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        _settle(future, exc)
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    _settle(future, outcome)
        finally:
            self._in_flight -= 1

    async def _insert(self, new: list[NewCall]) -> list[asyncpg.Record | BaseException | None]:
        outcomes: list[asyncpg.Record | BaseException | None]
        try:
            outcomes = list(await insert_calls(self._pool, new))
        except _ONE_CALLS_FAULT:
            if len(new) == 1:
                raise
            outcomes = await asyncio.gather(
                *(self._insert_alone(one) for one in new), return_exceptions=True
            )
        created = [row for row in outcomes if isinstance(row, asyncpg.Record)]
        if created:
            try:
                await self._after_commit(created)
            except Exception:
                # Committed all the same: upkeep re-arms their timers, the outbox republishes.
                log.exception("making %d new calls visible failed", len(created))
        return outcomes

    async def _insert_alone(self, new: NewCall) -> asyncpg.Record | None:
        (row,) = await insert_calls(self._pool, [new])
        return row

    async def aclose(self) -> None:
        """Wait for the inserts in flight (their requests are waiting on them)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # its request went away
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
