"""Upkeep from the system of record: resume calls and uploads whose timers were lost, and
reclaim or rebuild limit leases, so a flushed Redis or a killed worker loses nothing; and clear
dead workers from RQ's books."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime

from redis import Redis as SyncRedis

from calls.deletion import Deletion
from calls.limits import open_limiter
from calls.publisher import Outgoing, Publisher
from calls.recordings import Recordings
from calls.retention import Retention
from calls.stores import Stores
from calls.timed_work import KINDS
from calls.transitions import Transitions
from calls.views import message_of
from core import keys
from core.clock import now_ms
from core.lifecycle import Event
from core.limiter import CallKind, slot_set
from db import calls as db_calls
from db.counters import fold_counter_deltas
from db.outbox import fetch_unpublished
from db.stats import fold_stats_deltas
from scheduler.dead_workers import DeadWorkers

log = logging.getLogger(__name__)

# Rows looked at per pass; a backlog larger than this is worked off over several passes.
PASS_LIMIT = 1_000
# A key with no lease is dropped from the lease holders' index after this long without one.
HOLDER_IDLE_MS = 24 * 60 * 60 * 1000
# Removes a lease holder only if its latest acquire is still older than the cutoff.
_FORGET_HOLDER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(slots=True)
class UpkeepReport:
    # Timed work re-armed, by kind (calls/timed_work.py).
    resumed: dict[str, int] = field(default_factory=dict)
    updates_republished: int = 0
    leases_reclaimed: int = 0
    slot_sets_restored: int = 0
    idle_calls_ended: int = 0
    # Dead workers dropped from RQ's list, and their drain jobs deleted (nothing was lost).
    dead_workers_cleared: int = 0
    drain_jobs_deleted: int = 0


class Upkeep:
    def __init__(self, stores: Stores, rq_connection: SyncRedis | None = None) -> None:
        """`rq_connection`: RQ's (synchronous) client; by default a new one to REDIS_URL."""
        self._stores = stores
        self._dead_workers = DeadWorkers(
            rq_connection or SyncRedis.from_url(stores.settings.redis_dsn)
        )
        self._publisher = Publisher(stores)
        self._limiter = open_limiter(stores)
        self._transitions = Transitions(stores)
        self._recordings = Recordings(stores)
        self._retention = Retention(stores, Deletion(stores, self._recordings))
        self._forget_holder = stores.redis.register_script(_FORGET_HOLDER)

    async def run_once(self) -> UpkeepReport:
        report = UpkeepReport()
        for kind in KINDS:
            if resumed := await kind.resume(self._stores, PASS_LIMIT):
                report.resumed[kind.name] = resumed
        report.leases_reclaimed, report.slot_sets_restored = await self.mend_leases()
        report.idle_calls_ended = await self.end_idle_ingested()
        report.updates_republished = await self.drain_outbox()
        cleared = await asyncio.to_thread(self._dead_workers.clear)
        report.dead_workers_cleared, report.drain_jobs_deleted = cleared.workers, cleared.drain_jobs
        # Routine, not a repair: not in the report.
        await fold_counter_deltas(self._stores.pool)
        await fold_stats_deltas(self._stores.pool)
        if any(astuple(report)):
            log.info("upkeep: %s", report)
        return report

    async def purge_batch(self) -> int:
        """Delete a batch of the ended calls past RETENTION_DAYS (calls/retention.py)."""
        return await self._retention.purge_batch()

    async def aclose(self) -> None:
        """Release what upkeep holds open (the recordings' storage client)."""
        await self._recordings.aclose()

    async def drain_outbox(self) -> int:
        """Publish committed updates whose writer could not (Redis was down, the process died).
        Subscribers drop a seq they have seen, so one published twice does no harm."""
        rows = await fetch_unpublished(
            self._stores.pool, self._stores.settings.outbox_grace_ms, PASS_LIMIT
        )
        items = [Outgoing(row["key_id"], message_of(row), row["outbox_id"]) for row in rows]
        if items and await self._publisher.publish(items):
            await self._publisher.flush()
        return len(items)

    async def mend_leases(self) -> tuple[int, int]:
        """Drop slots of calls that ended (a worker died before releasing them) and restore
        the slot sets Redis lost. Returns (slots reclaimed, sets restored).

        The slot sets are found through the index of the keys that may hold slots
        (`keys.lease_holders`), not by walking the keyspace, whose size is every call's live
        state of the last hour: a SCAN of it every pass grew with the traffic. The index is
        seeded by one SCAN when it is missing (a new deployment, a Redis that lost it), and
        every key with an active call in PostgreSQL is put in it on each pass.

        A known slot set is kept exact by the limiter and the releases: only one that is not
        known is restored, and only once the limits have settled (core/limiter.py), so the
        inserts in flight when Redis lost it are counted. (Rebuilding every key's from a
        snapshot of the active calls put back the slot of any call that ended meanwhile, a
        phantom that held it until LEASE_CHECK_AFTER_MS reclaimed it.)"""
        redis, pool = self._stores.redis, self._stores.pool
        settings = self._stores.settings
        now = now_ms()
        cutoff = now - settings.lease_check_after_ms
        holders = await self._lease_holders()
        sets = [name for key_id in holders for name in keys.slot_sets(key_id)]
        async with redis.pipeline(transaction=False) as pipe:
            for name in sets:
                pipe.zrangebyscore(name, "-inf", cutoff)
            olds = await pipe.execute() if sets else []
        reclaimed = 0
        for name, old in zip(sets, olds, strict=True):
            if not old:
                continue
            ended = await db_calls.fetch_ended_among(pool, [m.decode() for m in old])
            if ended:
                reclaimed += await redis.zrem(name, *ended)
        await self._forget_idle_holders(holders, now - HOLDER_IDLE_MS)

        # Which sets are not known is read before the calls are: a call that ends after the
        # read below is then one whose set was already gone, a narrow window.
        pairs = [
            (key_id, CallKind(kind))
            for key_id, kind in await db_calls.fetch_keys_with_active_calls(pool)
        ]
        if not pairs:
            return reclaimed, 0
        async with redis.pipeline(transaction=False) as pipe:
            for key_id, kind in pairs:
                pipe.zscore(slot_set(kind, key_id), keys.SLOTS_KNOWN)
            # Every key with an active call is in the index, whatever the API processes did:
            # the index heals from PostgreSQL within a pass.
            pipe.zadd(keys.lease_holders(), dict.fromkeys({key_id for key_id, _ in pairs}, now))
            known = (await pipe.execute())[:-1]
        lost = [pair for pair, there in zip(pairs, known, strict=True) if there is None]
        if not lost or await self._limiter.settle_left_ms() > 0:
            return reclaimed, 0
        active = await db_calls.fetch_active_slots(pool, [(k, kind.value) for k, kind in lost])
        restored = await self._limiter.restore(
            {(kind, key_id): active[(key_id, kind.value)] for key_id, kind in lost}
        )
        return reclaimed, restored

    async def end_idle_ingested(self) -> int:
        """End the ingested calls that have had no event for INGESTED_CALL_TIMEOUT_S: a
        call_ended with the end reason `timeout`, stored, published and flagged like any end
        (so a sender that never ends its calls cannot hold their slots and live state for
        ever)."""
        settings = self._stores.settings
        rows = await db_calls.fetch_idle_ingested_calls(
            self._stores.pool, settings.ingested_call_timeout_s, PASS_LIMIT
        )
        if not rows:
            return 0
        now = datetime.now(UTC)
        decided = [
            self._transitions.decide(row, Event.CALL_ENDED, occurred_at=now, end_reason="timeout")
            for row in rows
        ]
        return len(await self._transitions.write(decided))

    async def _lease_holders(self) -> dict[str, float]:
        """The keys that may hold leases, with their latest acquire (ms); the index is seeded
        from a SCAN of the lease sets first if Redis does not have it."""
        redis = self._stores.redis
        index = keys.lease_holders()
        if await redis.zscore(index, keys.LEASE_HOLDERS_SEEDED) is None:
            found = {
                keys.key_id_of_leases(k.decode()): now_ms()
                async for k in redis.scan_iter(match=keys.lease_keys_pattern(), count=1_000)
            }
            async with redis.pipeline(transaction=False) as pipe:
                if found:
                    pipe.zadd(index, found)
                pipe.zadd(index, {keys.LEASE_HOLDERS_SEEDED: "+inf"})
                await pipe.execute()
            log.info("indexed the lease sets of %d keys", len(found))
        return {
            member.decode(): score
            for member, score in await redis.zrange(index, 0, -1, withscores=True)
            if member.decode() != keys.LEASE_HOLDERS_SEEDED
        }

    async def _forget_idle_holders(self, holders: dict[str, float], idle_before: int) -> None:
        """Drop from the index the keys holding no slot whose latest acquire was before
        `idle_before`; the script keeps one whose acquire came meanwhile."""
        idle = [key_id for key_id, score in holders.items() if score < idle_before]
        if not idle:
            return
        redis = self._stores.redis
        async with redis.pipeline(transaction=False) as pipe:
            for key_id in idle:
                for name in keys.slot_sets(key_id):
                    # Any member but SLOTS_KNOWN (scored +inf) is a slot.
                    pipe.zcount(name, "-inf", "(+inf")
            counts = await pipe.execute()
        per_key = len(keys.slot_sets(""))
        for i, key_id in enumerate(idle):
            if not any(counts[i * per_key : (i + 1) * per_key]):
                await self._forget_holder(keys=[keys.lease_holders()], args=[key_id, idle_before])
