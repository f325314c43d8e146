"""Writes from concurrent requests go to PostgreSQL together: what arrives while earlier writes
are in flight shares the next statement and its commit.

Each request still waits for its own write to be committed and made visible (live view,
timers, publish) before it is answered. At a few requests a second every write goes alone and
at once; at thousands a second one statement carries dozens, and PostgreSQL's work per write,
most of it per statement and per commit, falls by half or more (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import asyncpg

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# At most this many statements of one batcher at once (each holds a pool connection).
IN_FLIGHT = 4
# At most this many items in one statement.
BATCH_MAX = 128
# Errors that belong to one item of a batch, not to PostgreSQL: a constraint one item breaks, a
# deadlock between two batches. The batch's items are then written one by one, so each gets
# its own outcome; any other error (PostgreSQL unreachable, shutting down) goes to all of them.
_ONE_ITEMS_FAULT = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.TransactionRollbackError,
)


class Batcher(Generic[Item, Outcome]):
    """Items submitted one at a time, written by `write` many at a time; `write` returns one
    outcome per item, in order."""

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[Outcome]]]) -> None:
        self._write = write
        self._waiting: deque[tuple[Item, asyncio.Future[Outcome]]] = deque()
        self._in_flight = 0
        # Tasks started that have not taken their first batch yet: one is enough.
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: Item) -> asyncio.Future[Outcome]:
        """Write `item` with the next batch; the future gives its outcome once written.
        Cancelling the future does not stop the write."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((item, future))
        if self._in_flight < IN_FLIGHT and not self._starting:
            self._in_flight += 1
            self._starting += 1
            # A context of its own: the batch's log lines name each item's request, not the
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
                    outcomes = await self._write_batch([item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        _settle(future, exc)
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    _settle(future, outcome)
        finally:
            self._in_flight -= 1

    async def _write_batch(self, items: list[Item]) -> list[Outcome | BaseException]:
        try:
            return list(await self._write(items))
        except _ONE_ITEMS_FAULT:
            if len(items) == 1:
                raise
            return await asyncio.gather(
                *(self._write_alone(item) for item in items), return_exceptions=True
            )

    async def _write_alone(self, item: Item) -> Outcome:
        (outcome,) = await self._write([item])
        return outcome

    async def aclose(self) -> None:
        """Wait for the writes in flight (their requests are waiting on them)."""
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
