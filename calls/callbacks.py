"""Status callbacks: each transition of a call created with a `status_callback` POSTed to it as
JSON, signed, in seq order per call, at least once, every attempt logged; the `cbk` kind of timed
work, its upkeep check, and the retry of a requeued dead letter.

A call's deliveries are written with its transitions (db/calls.py) and go one at a time. Its one
`cbk` timer is set when a delivery is written and none is set; a worker claims the call's first
open delivery when it is due (a compare-and-set in PostgreSQL, so no two workers ever send one
call's callbacks at once), sends it, then goes straight on to the call's next one, or sets the
timer again for a retry. A later delivery of the call waits for the earlier one; other calls'
deliveries never do: each call's run is a task of its own, up to CALLBACK_CONCURRENCY per worker
process. A delivery whose attempts are spent is failed and left as a dead letter; the call's
later deliveries go on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from yarl import URL

from calls import metrics as shared_metrics
from calls.batches import Batcher
from calls.callback_requests import Unsignable, callback_request
from calls.dead_letters import DeadLetters, RetryFailed
from calls.destinations import Destinations, GuardedResolver, RefusedDestination
from calls.stores import Stores
from calls.timers import DueTimer, Timers
from core import keys
from core.backoff import backoff_ms
from core.clock import now_ms
from db import callbacks as db_callbacks
from db.callbacks import Attempt

log = logging.getLogger(__name__)

Row = Mapping[str, Any]

# A receiver's answer is read (so its connection can be kept) only when it says it is this
# small; a larger one is not read, and its connection is closed.
ANSWER_READ_MAX = 64 * 1024
# The figures callbacks add to /metrics go to Redis at most this often.
RECORD_EVERY_S = 0.25
# How long closing a worker waits for the callbacks in flight (upkeep resumes the others).
CLOSE_WAIT_S = 1.0
# When a call's first open delivery is in flight as a later one is written, the call's timer is
# set this far ahead, in case the sender looked for the later one just before it was committed.
RECHECK_MS = 1_000


class Callbacks:
    def __init__(
        self,
        stores: Stores,
        dead_letters: DeadLetters | None = None,
        rng: random.Random | None = None,
    ) -> None:
        settings = stores.settings
        self._stores = stores
        self._dead_letters = dead_letters
        self._destinations = Destinations(settings.callback_allowed_hosts)
        self._rng = rng or random.Random()
        # A place for each call whose callbacks are being sent: one task per call at a time.
        self._places = asyncio.Semaphore(settings.callback_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # Opened on first use, on the loop the callbacks are sent from.
        self._http: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        # Concurrent calls' finished attempts (and their next claims) share statements.
        self._finishes: Batcher[Attempt, Row | None] = Batcher(self._finish)
        self._figures = _Figures(stores)

    # -- the `cbk` kind: due timers in, callbacks out ----------------------------------------

    async def work(self, due: Sequence[DueTimer]) -> None:
        """Start sending the callbacks of the calls whose timers fell due. Returns once they are
        claimed, before they are sent, so one slow receiver holds up no other call; waits while
        every place is taken."""
        call_ids = list(dict.fromkeys(keys.timer_call_id(timer.member) for timer in due))
        for _ in call_ids:
            await self._places.acquire()
        await self._claim_and_send(call_ids)

    async def start(self, call_ids: list[str]) -> None:
        """Start sending the callbacks of transitions this process has just committed, as far
        as places are free; the others' timers are set (never a wait here: the moves that
        call this must not wait for a slow receiver)."""
        free = []
        for call_id in dict.fromkeys(call_ids):
            if self._places.locked():
                await self._arm(call_id, now_ms(), unless_set=True)
            else:
                await self._places.acquire()  # free: returns at once
                free.append(call_id)
        try:
            await self._claim_and_send(free)
        except Exception:
            # Committed all the same: their timers go off later (upkeep sets lost ones again).
            log.exception("starting the status callbacks of %d calls failed", len(free))
            for call_id in free:
                await self._arm(call_id, now_ms(), unless_set=True)

    async def _claim_and_send(self, call_ids: list[str]) -> None:
        """Claim each call's first open delivery and send it (then the call's next ones) in a
        task of its own. Takes over one place per call from the caller, and gives back those
        no task holds."""
        started = 0
        try:
            for row in await db_callbacks.claim_next(self._stores.lookups, call_ids):
                claim = await self._claimed_or_armed(row)
                if claim is not None:
                    self._spawn(self._send_in_order(claim))
                    started += 1
        finally:
            for _ in range(len(call_ids) - started):
                self._places.release()

    async def flush(self) -> None:
        await self._figures.record()

    async def _claimed_or_armed(self, row: Row) -> Row | None:
        """The delivery `row` claimed (claim_next, finish_attempts), or None: the call's first
        open delivery waits for its retry (its timer is set), or is in flight. Its sender then
        goes on to the next itself; but it may have looked for it just before the one that
        asked here was committed, so the call's timer is set too, a little later, unless set."""
        if row["delivery_id"] is not None:
            return row
        call_id, status = row["open_call_id"], row["open_status"]
        if status == "pending" and not row["halted"]:
            await self._arm(call_id, row["due_ms"])
        elif status == "delivering":
            await self._arm(call_id, now_ms() + RECHECK_MS, unless_set=True)
        return None

    async def _send_in_order(self, claim: Row) -> None:
        """Send the call's claimed callback, then each next one that is due, in seq order, until
        one must wait for a retry, is stopped by a 410, or none is left. Holds one place."""
        call_id = claim["call_id"]
        try:
            current: Row | None = claim
            while current is not None:
                finished = await self._finishes.submit(await self._attempt(current))
                if finished is None:
                    return  # claimed again since (its worker was thought lost): not ours now
                status = finished["finished_status"]
                if status == "pending":
                    await self._arm(call_id, finished["next_attempt_ms"])
                    return
                if status == "failed":
                    await self._leave_dead_letter(current)
                # Delivered or spent: the call's next (claimed with the finish, when due).
                has_next = status != "stopped" and finished["open_status"] is not None
                current = await self._claimed_or_armed(finished) if has_next else None
        except Exception:
            # Its deliveries stay open in PostgreSQL: upkeep sets the call's timer again.
            log.exception("sending the status callbacks of %s failed", call_id)
        finally:
            self._places.release()

    async def _arm(self, call_id: str, due_ms: int, *, unless_set: bool = False) -> None:
        try:
            await Timers.schedule(
                self._stores.mux, keys.callback_timer(call_id), due_ms, unless_set=unless_set
            )
        except RedisError:
            log.warning("could not set the callback timer of %s; upkeep will", call_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, attempts: list[Attempt]) -> list[Row | None]:
        rows = await db_callbacks.finish_attempts(self._stores.lookups, attempts)
        self._figures.count(attempts, rows)
        by_delivery = {row["finished_id"]: row for row in rows}
        return [by_delivery.pop(attempt.delivery_id, None) for attempt in attempts]

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, claim: Row, *, retry: bool = True) -> Attempt:
        """Send the claimed delivery once, in its call's format (calls/callback_requests.py);
        what the receiver answered, and what the delivery becomes: delivered (2xx), stopped
        (410), pending again (any other answer, a timeout, a connection error) while attempts
        are left and `retry`, else failed."""
        settings = self._stores.settings
        status_code: int | None = None
        error: str | None = None
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            request = callback_request(claim, int(time.time()))
            self._destinations.check_host(request.url.host or "")
            async with self._session().request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
            ) as answer:
                status_code = answer.status
                if answer.content_length is not None and answer.content_length <= ANSWER_READ_MAX:
                    await answer.read()
        except Unsignable as exc:
            error = f"not signed: {exc}"
        except TimeoutError:
            error = f"timeout: no answer within {settings.callback_timeout_ms} ms"
        except (aiohttp.ClientError, OSError) as exc:
            error = _describe(exc)
        latency_ms = (time.perf_counter() - started) * 1000
        attempt = claim["attempt"]
        retry_in_ms = 0.0
        if status_code is not None and 200 <= status_code < 300:
            outcome = "delivered"
        elif status_code == 410:
            outcome = "stopped"
        elif retry and attempt < settings.callback_max_attempts:
            outcome = "pending"
            base_ms = settings.callback_backoff_base_ms
            retry_in_ms = settings.scaled_ms(backoff_ms(attempt, base_ms, self._rng))
        else:
            outcome = "failed"
        return Attempt(
            delivery_id=claim["delivery_id"],
            attempt=attempt,
            status_code=status_code,
            error=error,
            latency_ms=latency_ms,
            attempted_at=attempted_at,
            outcome=outcome,
            retry_in_ms=retry_in_ms,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            settings = self._stores.settings
            self._resolver = GuardedResolver(self._destinations)
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=self._resolver, limit=settings.callback_concurrency
                ),
                timeout=aiohttp.ClientTimeout(total=settings.callback_timeout_ms / 1000),
                # No proxy from the environment: the allow-list is about where callbacks go.
                trust_env=False,
            )
        return self._http

    # -- spent deliveries --------------------------------------------------------------------

    async def _leave_dead_letter(self, claim: Row) -> None:
        if self._dead_letters is None:
            return
        host = URL(claim["status_callback"]).host
        description = f"status callbacks of call {claim['ref']} (key {claim['key_id']}) to {host}"
        reason = (
            f"The status callback of call {claim['ref']} at seq {claim['seq']} failed"
            f" {claim['attempt']} times (CALLBACK_MAX_ATTEMPTS); see GET /calls/{claim['ref']}"
            "/callbacks. Requeue this job to send the call's failed callbacks once more."
        )
        try:
            await self._dead_letters.add(keys.CALLBACK, claim["call_id"], description, reason)
        except RedisError:
            log.warning("could not leave the dead letter of %s's callbacks", claim["call_id"])

    async def retry(self, call_id: str) -> None:
        """A requeued dead letter: one more attempt at each of the call's failed deliveries, in
        seq order. Raises RetryFailed at the first that fails again (it stays failed, and the
        job is a dead letter again)."""
        pool = self._stores.lookups
        while (claim := await db_callbacks.claim_failed(pool, call_id)) is not None:
            attempt = await self._attempt(claim, retry=False)
            # The call's pending deliveries are not taken up here: their own timers and senders
            # go on with them, in order.
            rows = await db_callbacks.finish_attempts(pool, [attempt], claim_next=False)
            self._figures.count([attempt], rows)
            await self._figures.record()
            if not rows or rows[0]["finished_status"] == "failed":
                failure = attempt.error or f"HTTP {attempt.status_code}"
                raise RetryFailed(
                    f"the status callback of call {claim['ref']} at seq {claim['seq']} failed"
                    f" again (attempt {claim['attempt']}: {failure})"
                )
            if rows[0]["finished_status"] == "stopped":
                return

    async def aclose(self) -> None:
        """Wait a moment for the callbacks in flight, then close (upkeep resumes the rest)."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
        await self._finishes.aclose()
        await self._figures.record()
        if self._http is not None:
            await self._http.close()
        if self._resolver is not None:
            await self._resolver.close()


def _describe(exc: BaseException) -> str:
    """A failed attempt's error, as the delivery log shows it."""
    cause = getattr(exc, "os_error", None)
    if isinstance(exc, RefusedDestination) or isinstance(cause, RefusedDestination):
        return f"refused: {cause or exc}"
    return f"{type(exc).__name__}: {exc}"[:500]


class _Figures:
    """What callbacks add to /metrics, kept in memory and written to Redis every
    RECORD_EVERY_S."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._counters: dict[str, int] = {}
        self._latency_ms: list[float] = []
        self._recording: asyncio.Task[None] | None = None

    def count(self, attempts: Sequence[Attempt], finished: Sequence[Row]) -> None:
        counters = self._counters
        counters["callback_attempts"] = counters.get("callback_attempts", 0) + len(attempts)
        failed = sum(1 for a in attempts if a.outcome != "delivered")
        counters["callback_attempts_failed"] = counters.get("callback_attempts_failed", 0) + failed
        for row in finished:
            status = row["finished_status"]
            if status in ("delivered", "stopped", "failed"):
                counters[f"callbacks_{status}"] = counters.get(f"callbacks_{status}", 0) + 1
            if status == "delivered":
                self._latency_ms.append(row["commit_to_delivery_ms"])
        if self._recording is None or self._recording.done():
            self._recording = asyncio.get_running_loop().create_task(self._record_soon())

    async def _record_soon(self) -> None:
        await asyncio.sleep(RECORD_EVERY_S)
        await self.record()

    async def record(self) -> None:
        """Add what was counted to the figures /metrics shows; losing them (Redis down) fails
        nothing."""
        counters, latency_ms = self._counters, self._latency_ms
        self._counters, self._latency_ms = {}, []
        if not counters and not latency_ms:
            return
        try:
            async with self._stores.mux.pipeline() as pipe:
                for name, amount in counters.items():
                    shared_metrics.count(pipe, name, amount)
                shared_metrics.observe(pipe, keys.CALLBACK_LATENCY, latency_ms)
                await pipe.execute()
        except RedisError:
            log.warning("could not record the status callbacks' figures")


async def resume_callbacks(stores: Stores, limit: int) -> int:
    """Upkeep: give back deliveries whose worker died mid-attempt (claimed longer ago than an
    attempt can take), and set again the timers of calls whose deliveries are overdue with none
    set (Redis lost it)."""
    settings = stores.settings
    lost_worker_ms = settings.callback_timeout_ms + settings.reconcile_grace_ms
    reopened = await db_callbacks.reopen_stranded(stores.pool, lost_worker_ms, limit)
    overdue = await db_callbacks.fetch_overdue_calls(
        stores.pool, settings.reconcile_grace_ms, limit
    )
    overdue = [call_id for call_id in overdue if call_id not in set(reopened)]
    members = [keys.callback_timer(call_id) for call_id in overdue]
    waiting = await Timers(stores.redis).pending(members)
    lost = reopened + [call_id for call_id, wait in zip(overdue, waiting, strict=True) if not wait]
    if lost:
        due_ms = now_ms()
        async with stores.redis.pipeline(transaction=False) as pipe:
            for call_id in lost:
                Timers.schedule(pipe, keys.callback_timer(call_id), due_ms)
            await pipe.execute()
    return len(lost)
