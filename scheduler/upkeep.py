"""Upkeep from the system of record: resume calls and uploads whose timers were lost, and
reclaim or rebuild limit leases, so a flushed Redis or a killed worker loses nothing."""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import UTC, datetime

from calls.limits import open_limiter
from calls.live import LiveState
from calls.publisher import Outgoing, Publisher
from calls.stores import Stores
from calls.timers import Timers
from calls.transitions import Transitions
from calls.views import message_of
from core import keys
from core.clock import now_ms, to_ms
from core.lifecycle import Event, Status, longest_delay_ms
from core.limiter import CallKind, slot_set
from db import calls as db_calls
from db import recordings as db_recordings
from db.counters import fold_counter_deltas
from db.outbox import fetch_unpublished
from db.stats import fold_stats_deltas

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
    calls_resumed: int = 0
    uploads_resumed: int = 0
    updates_republished: int = 0
    leases_reclaimed: int = 0
    slot_sets_restored: int = 0
    idle_calls_ended: int = 0


class Upkeep:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._timers = Timers(stores.redis)
        self._live = LiveState(stores.redis)
        self._publisher = Publisher(stores)
        self._limiter = open_limiter(stores)
        self._transitions = Transitions(stores)
        self._forget_holder = stores.redis.register_script(_FORGET_HOLDER)

    async def run_once(self) -> UpkeepReport:
        report = UpkeepReport()
        report.calls_resumed = await self.resume_calls()
        report.uploads_resumed = await self.resume_uploads()
        report.leases_reclaimed, report.slot_sets_restored = await self.mend_leases()
        report.idle_calls_ended = await self.end_idle_ingested()
        report.updates_republished = await self.drain_outbox()
        # Routine, not a repair: not in the report.
        await fold_counter_deltas(self._stores.pool)
        await fold_stats_deltas(self._stores.pool)
        if any(astuple(report)):
            log.info("upkeep: %s", report)
        return report

    async def resume_calls(self) -> int:
        """Re-arm simulated calls that rest in a state past its longest timer with none waiting."""
        settings = self._stores.settings
        grace = settings.reconcile_grace_ms
        rows = await db_calls.fetch_stale_active_calls(self._stores.pool, grace, PASS_LIMIT)
        now = now_ms()
        overdue = [
            row
            for row in rows
            if row["status"] != Status.ON_HOLD
            and now - to_ms(row["status_changed_at"])
            > longest_delay_ms(Status(row["status"]), settings) + grace
        ]
        members = [keys.advance_timer(row["call_id"], row["seq"], row["status"]) for row in overdue]
        waiting = await self._timers.pending(members)
        lost = [
            (row, member)
            for row, member, wait in zip(overdue, members, waiting, strict=True)
            if not wait
        ]
        if lost:
            async with self._stores.redis.pipeline(transaction=False) as pipe:
                for row, member in lost:
                    self._live.write(pipe, row)
                    Timers.schedule(pipe, member, now)
                await pipe.execute()
        return len(lost)

    async def resume_uploads(self) -> int:
        """Re-arm uploads whose timer was lost, and attempts whose worker died."""
        settings = self._stores.settings
        grace = settings.reconcile_grace_ms
        rows = await db_recordings.fetch_stranded_uploads(
            self._stores.pool, grace, settings.upload_attempt_timeout_ms, PASS_LIMIT
        )
        if not rows:
            return 0
        members = [keys.upload_timer(row["call_id"]) for row in rows]
        waiting = await self._timers.pending(members)
        lost = [row for row, wait in zip(rows, waiting, strict=True) if not wait]
        await db_recordings.reopen_uploads(
            self._stores.pool, [row["call_id"] for row in lost if row["status"] == "uploading"]
        )
        now = now_ms()
        async with self._stores.redis.pipeline(transaction=False) as pipe:
            for row in lost:
                Timers.schedule(pipe, keys.upload_timer(row["call_id"]), now)
            await pipe.execute()
        return len(lost)

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
        return len(await self._transitions.write_decided(decided))

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
