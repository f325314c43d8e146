"""`python -m scheduler`: the timer pump, always; upkeep, the retention purge and the live queue
figures while this scheduler leads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time

from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from calls.stores import Stores, pools_of
from core.clock import now_ms
from core.instance import instance_name
from core.logs import setup_logging
from core.settings import Settings, get_settings
from scheduler.dispatch import Dispatcher
from scheduler.leader import Hold, LeaderLock
from scheduler.stats import StatsPublisher
from scheduler.upkeep import Upkeep

log = logging.getLogger("scheduler")


# Each step of a stop waits at most this long (see Scheduler.run).
STOP_STEP_S = 0.5


class Scheduler:
    def __init__(self, settings: Settings, stores: Stores) -> None:
        self._settings = settings
        self._stores = stores
        self._lock = LeaderLock(stores.redis, settings.scheduler_lock_ttl_ms, instance_name())
        rq_connection = SyncRedis.from_url(settings.redis_dsn)
        self._dispatcher = Dispatcher(stores.redis, rq_connection, self._lock.token)
        self._upkeep = Upkeep(stores, rq_connection)
        self._stats = StatsPublisher(stores)
        self._leading = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(job(), name=job.__name__)
            for job in (self._lead, self._pump, self._tend, self._purge, self._publish_stats)
        ]
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        # A stop must fit in the 2 s that process managers, Docker and systemd give before SIGKILL:
        # whatever has not ended by then is left behind and named.
        _, pending = await asyncio.wait(tasks, timeout=STOP_STEP_S)
        if pending:
            log.warning("stopping: %s did not end", ", ".join(t.get_name() for t in pending))
        with contextlib.suppress(RedisError, TimeoutError):
            await asyncio.wait_for(self._lock.release(), STOP_STEP_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._upkeep.aclose(), STOP_STEP_S)

    def stop(self) -> None:
        self._stopping.set()

    async def _lead(self) -> None:
        """Hold or seek the lead every third of its lock's lifetime; a change either way is said
        at WARNING, since an operator wants to see every failover."""
        name = self._lock.name
        while True:
            try:
                hold = await self._lock.hold()
            except RedisError as exc:
                if self._leading.is_set():
                    log.warning(
                        "lost the lead: cannot reach Redis to renew it (%s); standing by",
                        exc,
                        extra={"scheduler": name},
                    )
                    self._leading.clear()
                else:
                    log.warning("cannot reach Redis for the lead: %s", exc)
                hold = None
            if hold is not None and hold.leading:
                if hold.took:
                    _log_taken(name, hold)
                elif not self._leading.is_set():
                    # A renewal whose answer was lost (Redis timed out) still held the lock.
                    log.warning("leading again: Redis answers", extra={"scheduler": name})
                self._leading.set()
            elif hold is not None and self._leading.is_set():
                log.warning(
                    "lost the lead to %s; standing by",
                    hold.holder or "another scheduler",
                    extra={"scheduler": name, "leader": hold.holder},
                )
                self._leading.clear()
            await asyncio.sleep(self._lock.ttl_ms / 3000)

    async def _pump(self) -> None:
        """Start the workers' drain jobs, leader or not (scheduler/dispatch.py)."""
        poll_s = self._settings.scheduler_poll_ms / 1000
        while True:
            try:
                _, next_due = await self._dispatcher.pass_once()
            except Exception:
                log.exception("timer pass failed")
                await asyncio.sleep(1)
                continue
            # Wake for the next timer if it falls due before the next poll.
            until_next_s = (next_due - now_ms()) / 1000 if next_due is not None else poll_s
            await asyncio.sleep(min(poll_s, max(0.0, until_next_s)))

    async def _tend(self) -> None:
        interval_s = self._settings.reconcile_interval_ms / 1000
        while True:
            await self._leading.wait()
            try:
                await self._upkeep.run_once()
            except Exception:
                log.exception("upkeep pass failed")
            await asyncio.sleep(interval_s)

    async def _purge(self) -> None:
        """Delete the calls past RETENTION_DAYS, a batch at a time, resting twice as long as
        each batch took (so at most a third of one connection's time: the requests' writes come
        first), and a reconcile interval once none is left."""
        idle_s = self._settings.reconcile_interval_ms / 1000
        while True:
            await self._leading.wait()
            started = time.monotonic()
            try:
                purged = await self._upkeep.purge_batch()
            except Exception:
                log.exception("purge failed")
                purged = 0
            took_s = time.monotonic() - started
            await asyncio.sleep(max(2 * took_s, 0.01) if purged else idle_s)

    async def _publish_stats(self) -> None:
        interval_s = self._settings.stats_interval_ms / 1000
        while True:
            await self._leading.wait()
            try:
                await self._stats.run_once()
            except Exception:
                log.exception("publishing queue statistics failed")
            await asyncio.sleep(interval_s)


def _log_taken(name: str, hold: Hold) -> None:
    if hold.holder is None:
        before = "no earlier leader recorded"
    elif hold.vacant_ms is None:
        before = f"after {hold.holder}"
    else:
        before = f"after {hold.holder}; vacant {hold.vacant_ms / 1000:.2f} s"
        if hold.since_renewal_ms is not None:
            before += f", {hold.since_renewal_ms / 1000:.2f} s since its last renewal"
    log.warning(
        "took the lead (%s)",
        before,
        extra={
            "scheduler": name,
            "previous": hold.holder,
            "vacant_ms": hold.vacant_ms,
            "since_renewal_ms": hold.since_renewal_ms,
        },
    )


async def _main() -> None:
    settings = get_settings()
    stores = await Stores.open(settings, pools_of("scheduler", settings))
    scheduler = Scheduler(settings, stores)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.stop)
    try:
        await scheduler.run()
    finally:
        await stores.close(timeout_s=STOP_STEP_S)


def main() -> int:
    settings = get_settings()
    setup_logging("scheduler", settings.log_level)
    asyncio.run(_main())
    return 0


if __name__ == "__main__":
    sys.exit(main())
